"""Cut the pill sides out of a C3PI studio reference photo, independently of training.

A reference shows both sides of one pill on flat neutral grey, with millimetre rulers that
usually run along the left and bottom edges (sometimes inset). This module works in CIE Lab:

1. the background colour is the mode of a coarse Lab histogram of the photo's outer frame
   (no assumption about where exactly the rulers run; thin strokes never win the mode);
2. a pixel is "pill" when its colour distance (Delta E 1976) from that grey exceeds a
   threshold, or when it lies inside a closed outline of strong lightness edges (grey and
   white pills whose colour is close to the studio grey still have a crisp rim);
3. a morphological opening with a disc wider than any ruler stroke or digit removes the
   rulers, then holes (imprints) are filled and specks below a minimum area dropped;
4. two regions are the two sides; one region that holds both (touching sides) is split by
   2-means clustering of its pixel coordinates; more regions (a grey pill broken into rim
   arcs and imprint) are grouped into the two sides whose convex hulls cover least area;
5. a side that covers 80-90% of its convex hull (bites where the pill is as grey as the
   backdrop) is completed to the hull (pill faces are convex, or nearly so); one covering
   less is refused with :class:`SegmentError` rather than rendered with a wrong outline.

The training renderer has its own cut-out (``rxvision.data.cutout``); this one shares no
code or thresholds with it, so that validation does not inherit its mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull

from ..data.datasets import DatasetError
from .colour import srgb_to_lab


class SegmentError(DatasetError):
    """A reference photo holds no pill this module can cut out."""


@dataclass(frozen=True)
class SegmentParams:
    """Thresholds of the studio-photo cut-out (pixel sizes refer to a 300x225 photo)."""

    delta_e: float = 7.0  # colour distance from the studio grey that marks a pill
    edge: float = 9.0  # lightness gradient (L units per pixel) of a pill's rim
    ruler_radius: int = 4  # opening disc radius: ruler strokes and digits are thinner
    min_area: float = 0.004  # smallest fragment kept, as a fraction of the photo
    max_fragments: int = 8  # pieces of grey pills grouped into two sides (2^7 splits tried)
    solidity: float = 0.9  # a side covering less of its convex hull is completed to it
    min_solidity: float = 0.8  # ... and one covering less than this is refused


@dataclass
class Side:
    """One cut-out pill side: RGBA crop plus its outline in crop pixel coordinates."""

    image: Image.Image  # RGBA, alpha = coverage
    outline: np.ndarray  # (K, 2) float x, y: convex hull of the side's mask


def _studio_grey(lab: np.ndarray, frame: float = 0.08) -> np.ndarray:
    """Lab colour of the backdrop: the fullest 4-unit Lab bin of the photo's outer frame.

    The frame, not the whole photo: a large white capsule can cover more of the photo than
    the backdrop does, but pills rarely cover its edges.
    """
    h, w, _ = lab.shape
    dy, dx = max(1, int(h * frame)), max(1, int(w * frame))
    edge = np.concatenate(
        [
            lab[:dy].reshape(-1, 3),
            lab[-dy:].reshape(-1, 3),
            lab[:, :dx].reshape(-1, 3),
            lab[:, -dx:].reshape(-1, 3),
        ]
    )
    q = np.floor(edge / 4.0).astype(np.int32)
    keys, counts = np.unique(q, axis=0, return_counts=True)
    centre = (keys[np.argmax(counts)] + 0.5) * 4.0
    return edge[np.linalg.norm(edge - centre, axis=1) < 6.0].mean(axis=0)


def _disc(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def side_mask(rgb: np.ndarray, params: SegmentParams | None = None) -> np.ndarray:
    """Boolean (H, W) mask of the pill pixels of a studio photo, rulers removed."""
    p = params or SegmentParams()
    lab = srgb_to_lab(rgb)
    grey = _studio_grey(lab)
    colour = np.linalg.norm(lab - grey, axis=2) > p.delta_e
    light = ndimage.gaussian_filter(lab[..., 0], 1.0)
    rim = np.hypot(ndimage.sobel(light, 0), ndimage.sobel(light, 1)) / 8.0 > p.edge
    # A closed rim encloses its pill; filling it catches pills close to the studio grey.
    enclosed = ndimage.binary_fill_holes(ndimage.binary_closing(rim, _disc(2)))
    mask = ndimage.binary_fill_holes(colour | enclosed)
    mask = ndimage.binary_opening(mask, _disc(p.ruler_radius))
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    areas = ndimage.sum_labels(mask, labels, np.arange(1, n + 1))
    keep = np.flatnonzero(areas >= p.min_area * mask.size) + 1
    return np.isin(labels, keep)


def _two_means(coords: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Split (N, 2) coordinates into two clusters (k-means, k=2); returns 0/1 per point."""
    centred = coords - coords.mean(axis=0)
    # Start at the ends of the principal axis: the two sides lie along it.
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    proj = centred @ axis
    centres = np.stack([coords[np.argmin(proj)], coords[np.argmax(proj)]]).astype(np.float64)
    assign = np.zeros(len(coords), dtype=np.int64)
    for _ in range(iterations):
        d = ((coords[:, None, :] - centres[None]) ** 2).sum(axis=2)
        new = np.argmin(d, axis=1)
        if np.array_equal(new, assign) and _ > 0:
            break
        assign = new
        centres = np.stack([coords[assign == k].mean(axis=0) for k in (0, 1)])
    return assign


def _hull_area(points: np.ndarray) -> float:
    return float(ConvexHull(points).volume) if len(points) >= 3 else 0.0  # 2-D volume = area


def _group_fragments(labels: np.ndarray, n: int) -> list[np.ndarray]:
    """Two sides from n > 2 fragments: the split whose two convex hulls cover least area.

    Grey pills close to the backdrop grey break into pieces (rim arcs, imprint); pieces of
    one side lie inside that side's outline, so the right grouping has compact hulls.
    """
    pts = [np.argwhere(labels == k + 1)[:, ::-1].astype(np.float64) for k in range(n)]
    best: tuple[float, int] | None = None
    for bits in range(1, 2 ** (n - 1)):  # fragment n-1 always in group 0: no mirrored splits
        groups = [
            np.concatenate([pts[k] for k in range(n) if (bits >> k & 1) == g]) for g in (0, 1)
        ]
        area = _hull_area(groups[0]) + _hull_area(groups[1])
        if best is None or area < best[0]:
            best = (area, bits)
    assert best is not None
    return [np.isin(labels, [k + 1 for k in range(n) if (best[1] >> k & 1) == g]) for g in (0, 1)]


def _fill_hull(region: np.ndarray) -> np.ndarray:
    """The region's convex hull, rasterised (pixel centres inside the hull)."""
    ys, xs = np.nonzero(region)
    hull = ConvexHull(np.stack([xs, ys], 1).astype(np.float64))
    canvas = Image.new("L", (region.shape[1], region.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(
        [(float(x), float(y)) for x, y in hull.points[hull.vertices]], fill=1, outline=1
    )
    return np.asarray(canvas, dtype=bool)


def _regions(mask: np.ndarray, p: SegmentParams) -> list[np.ndarray]:
    labels, n = ndimage.label(mask)
    if n > p.max_fragments:  # keep the largest fragments; the rest are specks
        areas = ndimage.sum_labels(mask, labels, np.arange(1, n + 1))
        keep = np.argsort(areas)[::-1][: p.max_fragments] + 1
        labels = np.where(np.isin(labels, keep), np.searchsorted(np.sort(keep), labels) + 1, 0)
        n = p.max_fragments
    if n == 1:
        # Every C3PI reference shows two sides: one region means they touch.
        ys, xs = np.nonzero(mask)
        assign = _two_means(np.stack([xs, ys], axis=1).astype(np.float64))
        regions = []
        for k in (0, 1):
            half = np.zeros_like(mask)
            half[ys[assign == k], xs[assign == k]] = True
            regions.append(ndimage.binary_opening(half, _disc(1)))
    elif n == 2:
        regions = [labels == 1, labels == 2]
    else:
        regions = _group_fragments(labels, n)
    # Reading order: left to right, then top to bottom (front first, as photographed).
    centres = [ndimage.center_of_mass(r) for r in regions]
    return [
        r
        for _, r in sorted(
            zip(centres, regions, strict=True), key=lambda t: (round(t[0][1] / 40), t[0][0])
        )
    ]


def _hull(region: np.ndarray) -> np.ndarray:
    """Convex hull of a region's pixel squares, counter-clockwise (K, 2) x, y."""
    rim = region & ~ndimage.binary_erosion(region)
    ys, xs = np.nonzero(rim)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    hull = ConvexHull(corners.astype(np.float64))
    return corners[hull.vertices].astype(np.float64)  # qhull: counter-clockwise in 2-D


def cut_sides(image: Image.Image, params: SegmentParams | None = None) -> list[Side]:
    """RGBA cut-outs of the pill sides in a studio reference photo (1 or 2, reading order).

    Args:
        image: the reference photo (any PIL mode; converted to RGB).
        params: thresholds; the defaults suit C3PI's 300x225 photos.

    Raises:
        SegmentError: no region large enough to be a pill side.
    """
    p = params or SegmentParams()
    rgb = np.asarray(image.convert("RGB"))
    if rgb.shape[0] < 16 or rgb.shape[1] < 16:
        raise SegmentError(
            f"reference photo of {rgb.shape[1]}x{rgb.shape[0]} pixels is too "
            "small to hold a pill; use the C3PI studio photo (300x225)"
        )
    mask = side_mask(rgb, p)
    if not mask.any():
        raise SegmentError(
            "no pill found on the studio background (nothing differs from the "
            "backdrop grey by more than delta_e); is this a C3PI reference?"
        )
    sides = []
    for region in _regions(mask, p):
        solidity = region.sum() / max(_hull_area(np.argwhere(region).astype(np.float64)), 1.0)
        if solidity < p.min_solidity:
            raise SegmentError(
                f"a pill side covers only {solidity:.0%} of its outline: parts "
                "of it are as grey as the studio backdrop, so it cannot be cut "
                "out reliably"
            )
        if solidity < p.solidity:
            # Bites where the pill is as grey as the backdrop: complete the side to its
            # convex hull (pill faces are convex, bar a few shapes such as hearts).
            region = _fill_hull(region)
        ys, xs = np.nonzero(region)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        # Coverage alpha: the mask eroded by half a pixel's blur, so the studio grey at the
        # rim does not show as a halo on a dark table.
        soft = ndimage.gaussian_filter(region[y0:y1, x0:x1].astype(np.float32), 0.7)
        alpha = np.clip((soft - 0.25) / 0.5, 0.0, 1.0)
        rgba = np.dstack([rgb[y0:y1, x0:x1], (alpha * 255).round().astype(np.uint8)])
        sides.append(Side(Image.fromarray(rgba, "RGBA"), _hull(region[y0:y1, x0:x1])))
    return sides
