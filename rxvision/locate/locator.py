"""Find the pill in a phone photo and zoom to it, so that it fills the frame as in training.

A phone held at its closest focus distance still shows a 10 mm pill at a tenth of the
frame width or less. Letterboxed to 224 px, such a pill is 20 px across and its imprint is
gone (the bundled model's top-1 falls from 0.93 to 0.44 when pills take 15-35% of the
width instead of 30-85%, and to 0.01 at 8-18%: docs/identification.md). The photo itself
has the detail; it is lost in the resize. :func:`locate_pills` finds the pill (or the two
sides of one pill) on a downscaled copy, and :func:`zoom_to_pills` crops the full-
resolution photo to a square around it, in which the pills span about
:data:`TARGET_FILL` of the side, the middle of the training views' range.

The locator is classical and conservative. The background is a smooth surface fitted to the
photo's border (so gradients and uneven light are background too); pixels far from it form
the mask; its compact, solid regions that do not touch the border are pill
candidates. The photo is left as it is, and the reason recorded, whenever the answer is
not clear: no candidate, more than two similar ones (several pills or clutter), a large
region cut by the frame (a pill reaching the edge, a hand), or pills that already fill it.

Example:
    >>> loc = locate_pills(photo)
    >>> loc.box, loc.reason           # (x0, y0, x1, y1) in photo pixels, or None and why
    >>> model_input = zoom_to_pills(photo, loc)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .instances import solidity

WORK_SIDE = 320  # the locator works on a copy with this longer side
RING = 0.06  # the background is fitted to this outer fraction of the photo on each side
MIN_CONTRAST = 30.0  # RGB distance from the background that always counts as foreground
NOISE_MULTIPLIER = 6.0  # ... or this many robust deviations of the photo's own distances
EDGE = 3  # work pixels: a region this close to the frame counts as cut by it
MIN_AREA = 0.0008  # candidate area as a fraction of the photo: smaller is dust or noise
MIN_EXTENT = 0.06  # ... and its longer side as a fraction of the photo's shorter side
MIN_SOLIDITY = 0.8  # area / convex-hull area: pills are convex, texture and shadows not
SIDE_RATIO = 0.35  # regions at least this fraction of the largest are further pill sides
MAX_PILL_REGIONS = 2  # the two sides of one pill; more means several pills or clutter
SURROUND_MARGIN = 0.5  # the band checked around the pills, as a fraction of their extent
SURROUND_MULTIPLIER = 4.0  # the band's median distance may exceed the ring's typical one
MIN_SURROUND = 12.0  # ... by this many robust deviations, and may always reach this
# Zoom only when the pills span less than this of the shorter side: the smallest single
# side of a training view is 0.30 of the width, a whole one-side view 0.45.
ZOOM_BELOW = 0.35
TARGET_FILL = 0.65  # after zooming, the pills span this fraction of the crop's side


@dataclass(frozen=True)
class PillLocation:
    """Where the pill is, in photo pixels, and whether to zoom.

    ``box`` is the pills' bounding box (x0, y0, x1, y1) or None; ``fill`` its longer side
    over the photo's shorter side; ``zoom`` whether :func:`zoom_to_pills` crops; ``reason``
    says why not when it does not.
    """

    box: tuple[int, int, int, int] | None
    regions: int
    fill: float | None
    zoom: bool
    reason: str


def _background(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth background fitted to the photo's border ring, and the ring's residuals.

    Each channel is a quadratic surface in (x, y) fitted by least squares to the outer
    :data:`RING` of the photo, refitted once without the ring pixels that fit worst (a
    pill or finger reaching the edge). Uneven light and gradients become background; a
    pill in the middle, which the fit never sees, does not, however large it is.

    Returns:
        (background (h, w, 3) float32, RGB distances of the ring's pixels to it).
    """
    h, w, _ = rgb.shape
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32) if w > 1 else np.full(1, -0.5, np.float32)
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32) if h > 1 else np.full(1, -0.5, np.float32)
    band = max(2, round(RING * min(h, w)))
    ring = np.zeros((h, w), dtype=bool)
    ring[:band], ring[-band:], ring[:, :band], ring[:, -band:] = True, True, True, True
    ry, rx = np.nonzero(ring)
    x, y = xs[rx], ys[ry]
    a = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)  # (R, 6)
    values = rgb[ring].astype(np.float32)  # (R, 3)
    keep = np.ones(len(a), dtype=bool)
    for _ in range(2):
        fit = a[keep]
        coef = np.linalg.solve(fit.T @ fit + 1e-6 * np.eye(6), fit.T @ values[keep])  # (6, 3)
        residual = np.sqrt(((a @ coef - values) ** 2).sum(axis=1))
        keep = residual <= np.quantile(residual, 0.8)
    coef = coef.astype(np.float32)
    X, Y = xs[None, :, None], ys[:, None, None]  # the surface, evaluated separably: (h, w, 3)
    background = (coef[0] + coef[1] * X + coef[2] * Y + coef[3] * X * X + coef[4] * Y * Y
                  + coef[5] * X * Y)
    return background.astype(np.float32), residual[keep]


def _foreground(rgb: np.ndarray, work: WorkCopy | None = None
                ) -> tuple[np.ndarray, np.ndarray, float]:
    """Mask of pixels unlike the background (the photo at the locator's scale); ``work``:
    the :class:`WorkCopy` of ``rgb`` when the caller has one (its fit is reused).

    Returns:
        (mask (h, w), distance to the background (h, w), the largest distance a
        background pixel plausibly has: the ring's typical residual plus
        :data:`SURROUND_MULTIPLIER` robust deviations, at least :data:`MIN_SURROUND`).
    """
    work = work or WorkCopy(rgb, 1.0)
    ring_residual, distance = work.background()[1], work.distance()
    typical = float(np.median(ring_residual))
    spread = float(np.median(np.abs(ring_residual - typical))) * 1.4826
    mask = distance > max(MIN_CONTRAST, typical + NOISE_MULTIPLIER * spread)
    mask = ndimage.binary_opening(mask, iterations=2)  # texture specks, thin lines
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    return mask, distance, max(MIN_SURROUND, typical + SURROUND_MULTIPLIER * spread)


def _surrounded_by_background(distance: np.ndarray, pills: np.ndarray,
                              box: tuple[int, int, int, int], background_level: float) -> bool:
    """Whether the band around ``box`` (x0, y0, x1, y1; work pixels) looks like background.

    A faint pill whose imprint or score line alone passed the threshold would otherwise
    be "found" as a tiny region in the middle of a pill; around a whole pill lies the
    table, around a part of one lies more pill.
    """
    h, w = distance.shape
    x0, y0, x1, y1 = box
    margin = max(2, round(SURROUND_MARGIN * max(x1 - x0, y1 - y0)))
    band = np.zeros((h, w), dtype=bool)
    band[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = True
    band[y0:y1, x0:x1] = False
    band &= ~pills
    return bool(band.any()) and float(np.median(distance[band])) <= background_level


def work_copy(image: Image.Image) -> tuple[np.ndarray, float]:
    """The photo as an RGB array with its longer side at most :data:`WORK_SIDE`, and the
    scale from photo to work pixels (1.0 when it is not reduced)."""
    W, H = image.size
    scale = WORK_SIDE / max(W, H)
    work = image.convert("RGB")
    if scale < 1:
        factor = int(1 / scale)
        if factor >= 2:  # integer box reduction first: much faster on 12-megapixel photos
            work = work.reduce(factor)
        work = work.resize((max(1, round(W * scale)), max(1, round(H * scale))),
                           Image.Resampling.BOX)
    else:
        scale = 1.0
    return np.asarray(work), scale


@dataclass
class WorkCopy:
    """A photo at the locator's scale (:func:`work_copy`) and its fitted background,
    computed once for the photo check and the locator."""

    rgb: np.ndarray
    scale: float  # work pixels per pixel of the image it was made from
    _fit: tuple[np.ndarray, np.ndarray] | None = None
    _distance: np.ndarray | None = None

    @classmethod
    def of(cls, image: Image.Image) -> WorkCopy:
        return cls(*work_copy(image))

    def background(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_background` of :attr:`rgb` (cached)."""
        if self._fit is None:
            self._fit = _background(self.rgb)
        return self._fit

    def distance(self) -> np.ndarray:
        """Each pixel's RGB distance to the fitted background (h, w), cached."""
        if self._distance is None:
            diff = self.rgb.astype(np.float32) - self.background()[0]
            self._distance = np.sqrt((diff * diff).sum(axis=-1))
        return self._distance


def locate_pills(image: Image.Image, min_crop: float = 0, work: WorkCopy | None = None
                 ) -> PillLocation:
    """Find the pill (or both sides of one pill) in ``image``; see the module docstring.

    ``min_crop``: zoom only if the crop would be at least this many photo pixels across.
    Blowing up a smaller crop adds blur, not detail, and in low-resolution photos the
    locator's regions are least reliable (a pale pill's imprint passes for a small pill).
    ``work``: ``WorkCopy.of(image)`` when the caller has it already.
    """
    W, H = image.size
    work = work or WorkCopy.of(image)
    rgb, scale = work.rgb, work.scale
    h, w, _ = rgb.shape
    mask, distance, background_level = _foreground(rgb, work)
    labels, _ = ndimage.label(mask)
    candidates, at_border = [], 0  # (area, slices, label index)
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        region = labels[sl] == index
        area = int(region.sum())
        if (min(sl[0].start, sl[1].start) <= EDGE or sl[0].stop >= h - EDGE
                or sl[1].stop >= w - EDGE):
            at_border = max(at_border, area)  # cut off by the frame: not a whole pill
            continue
        extent = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) / min(h, w)
        if (area >= MIN_AREA * h * w and extent >= MIN_EXTENT
                and solidity(region, degenerate=0.0) >= MIN_SOLIDITY):  # a line: not a pill
            candidates.append((area, sl, index))
    if not candidates:
        return PillLocation(None, 0, None, False, "no pill-like region found")
    candidates.sort(key=lambda c: c[0], reverse=True)
    if at_border >= SIDE_RATIO * candidates[0][0]:
        # A pill that reaches the edge, a hand or a box: what lies inside may be a part.
        return PillLocation(None, 0, None, False, "a large region reaches the photo's edge")
    sides = [c for c in candidates if c[0] >= SIDE_RATIO * candidates[0][0]]
    if len(sides) > MAX_PILL_REGIONS:
        return PillLocation(None, len(sides), None, False,
                            f"{len(sides)} similar regions: several pills or clutter")
    work_box = (min(sl[1].start for _, sl, _ in sides), min(sl[0].start for _, sl, _ in sides),
                max(sl[1].stop for _, sl, _ in sides), max(sl[0].stop for _, sl, _ in sides))
    pills = np.isin(labels, [index for _, _, index in sides])
    if not _surrounded_by_background(distance, pills, work_box, background_level):
        return PillLocation(None, len(sides), None, False,
                            "the region is not surrounded by background (part of a pill?)")
    x0, y0, x1, y1 = (v / scale for v in work_box)
    box = (int(x0), int(y0), min(W, int(np.ceil(x1))), min(H, int(np.ceil(y1))))
    fill = max(box[2] - box[0], box[3] - box[1]) / min(W, H)
    if fill >= ZOOM_BELOW:
        return PillLocation(box, len(sides), fill, False, "pills already fill the frame")
    location = PillLocation(box, len(sides), fill, True, "zoomed")
    crop = zoom_square(location, (W, H))
    if crop[2] - crop[0] < min_crop:
        return PillLocation(box, len(sides), fill, False,
                            f"photo too small to zoom ({crop[2] - crop[0]} px crop)")
    return location


def zoom_square(location: PillLocation, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The square crop (x0, y0, x1, y1) that zooms to ``location`` in a photo of ``size``.

    Its side is the pills' longer extent over :data:`TARGET_FILL`, at most the photo's
    shorter side; it is centred on the pills and shifted to stay inside the photo.
    """
    if location.box is None:
        raise ValueError("no pill location to zoom to")
    W, H = size
    x0, y0, x1, y1 = location.box
    side = min(round(max(x1 - x0, y1 - y0) / TARGET_FILL), W, H)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(min(max(round(cx - side / 2), 0), W - side))
    top = int(min(max(round(cy - side / 2), 0), H - side))
    return left, top, left + side, top + side


def zoom_to_pills(image: Image.Image, location: PillLocation | None = None,
                  min_crop: int = 0) -> Image.Image:
    """``image`` cropped around its pills when :func:`locate_pills` says so, else as is."""
    location = location or locate_pills(image, min_crop)
    if not location.zoom:
        return image
    return image.crop(zoom_square(location, image.size))
