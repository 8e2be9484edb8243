"""Cut the pill sides out of a C3PI-style studio photograph.

A reference photo shows the front and back of one pill on a flat neutral-grey background
with millimetre rulers along the left and bottom edges. The background colour is estimated
from the image border, pixels that differ from it form the pill mask, and the two largest
connected regions (away from the rulers) are the two sides. When the pills cannot be
separated, the whole photo minus the ruler strips is used and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

# Fractions of width (left) and height (bottom) covered by the rulers in C3PI photos.
RULER_LEFT = 0.085
RULER_BOTTOM = 0.11
# Layers of backdrop-coloured outline peeled off a mask (see _peel_halo): the halo of the
# local-contrast test is at most 4 px wide; the rest reaches into wedges between sides.
HALO_PX = 12


@dataclass
class Cutout:
    """RGBA crops of each pill side (1 or 2) and whether segmentation succeeded."""

    sides: list[Image.Image]
    segmented: bool


def _background(rgb: np.ndarray) -> np.ndarray:
    h, w, _ = rgb.shape
    x0, y1 = int(w * RULER_LEFT) + 2, int(h * (1 - RULER_BOTTOM)) - 2
    border = np.concatenate([rgb[:4, x0:].reshape(-1, 3), rgb[:y1, -4:].reshape(-1, 3)])
    return np.median(border, axis=0)


def pill_mask(rgb: np.ndarray, threshold: float = 28.0) -> np.ndarray:
    """Boolean mask of pixels that are not studio background (rulers excluded)."""
    h, w, _ = rgb.shape
    bg = _background(rgb)
    diff = np.abs(rgb.astype(np.float32) - bg).sum(axis=2)
    # Local contrast catches grey pills whose colour is close to the background.
    gray = rgb.astype(np.float32).mean(axis=2)
    local = np.abs(gray - ndimage.uniform_filter(gray, 9))
    colour = diff > threshold
    mask = colour | (local > 10.0)
    # Pills often reach into the ruler strips: there keep only thick structures, which
    # drops the thin ruler line, ticks and digits without clipping the pill. Only the colour
    # test counts there: the local-contrast halo would thicken the ruler marks.
    strip = np.zeros_like(mask)
    strip[:, : int(w * RULER_LEFT) + 2] = True
    strip[int(h * (1 - RULER_BOTTOM)) - 2 :, :] = True
    thick = ndimage.binary_opening(colour, iterations=3)
    mask[strip] = thick[strip]
    mask = ndimage.binary_closing(mask, iterations=1)
    mask = ndimage.binary_fill_holes(mask)
    # Radius-4 opening: ruler digits and ticks next to a pill (rulers do not always sit
    # at the photo's edge) join it through the local-contrast halo; 2 left them as specks
    # on ~18% of sides, 4 on ~2%, and costs under 0.3% of the pill area.
    mask = ndimage.binary_opening(mask, iterations=4)
    return _peel_halo(mask, diff < threshold / 2)


def _peel_halo(mask: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """``mask`` without the band of studio backdrop around its outline.

    The local-contrast test marks pixels up to 4 px outside a pill's edge (its 9 px window
    reaches the pill), so the mask carried a ring of backdrop grey; where the two sides lie
    close, the ring joined them and the waist split left a wedge of backdrop on a side.
    Backdrop-coloured pixels on the outline are peeled off, one layer per step (at most
    ``HALO_PX``); a pill's own rim (shaded, outlined) is not backdrop-coloured and stops
    the peeling. A radius-1 opening then drops the 1 px spurs peeling can leave.
    """
    for _ in range(HALO_PX):
        outline = mask & ~ndimage.binary_erosion(mask)
        peel = outline & backdrop
        if not peel.any():
            break
        mask = mask & ~peel
    return ndimage.binary_opening(mask, iterations=1)


def _crop(rgb: np.ndarray, mask: np.ndarray) -> Image.Image:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    alpha = ndimage.gaussian_filter(mask[y0:y1, x0:x1].astype(np.float32), 0.8)
    rgba = np.dstack([rgb[y0:y1, x0:x1], np.clip(alpha * 255, 0, 255).astype(np.uint8)])
    return Image.fromarray(rgba, "RGBA")


def _split_at_waist(region: np.ndarray, ratio: float = 1.01) -> list[np.ndarray]:
    """Split one region holding two touching sides at the narrowest cut across its middle.

    Sides lie side by side or stacked; the mask's column (or row) profile dips where they
    meet. Every C3PI photo shows two sides, so by default (ratio > 1) one region is always
    split at the deeper waist; a lower ratio keeps regions without a clear waist whole.
    """
    best: tuple[float, int, int] | None = None
    for axis in (0, 1):  # axis 0: column sums -> vertical cut; axis 1: row sums
        profile = region.sum(axis=axis).astype(np.float32)
        idx = np.nonzero(profile)[0]
        lo, hi = idx.min(), idx.max()
        a, b = lo + int(0.3 * (hi - lo)), lo + int(0.7 * (hi - lo)) + 1
        if b - a < 3:
            continue
        cut = a + int(np.argmin(profile[a:b]))
        score = profile[cut] / max(profile.max(), 1.0)
        if score < ratio and (best is None or score < best[0]):
            best = (score, axis, cut)
    if best is None:
        return [region]
    _, axis, cut = best
    first = region.copy()
    if axis == 0:
        first[:, cut:] = False
    else:
        first[cut:, :] = False
    return [first, region & ~first]


def cut_out_sides(img: Image.Image, min_area: float = 0.02) -> Cutout:
    """Split a studio photo into RGBA crops of its pill sides (largest first)."""
    rgb = np.asarray(img.convert("RGB"))
    h, w, _ = rgb.shape
    mask = pill_mask(rgb)
    labels, n = ndimage.label(mask)
    areas = ndimage.sum(mask, labels, range(1, n + 1)) if n else np.array([])
    keep = [i + 1 for i in np.argsort(areas)[::-1] if areas[i] >= min_area * h * w][:2]
    if not keep or mask.mean() > 0.85:
        x0, y1 = int(w * RULER_LEFT) + 2, int(h * (1 - RULER_BOTTOM)) - 2
        full = np.zeros_like(mask)
        full[:y1, x0:] = True
        return Cutout([_crop(rgb, full)], segmented=False)
    if len(keep) == 1:
        region = labels == keep[0]
        parts = _split_at_waist(region)
        return Cutout([_crop(rgb, m) for m in parts], segmented=True)
    # Order sides left-to-right / top-to-bottom as photographed (front first).
    centres = [ndimage.center_of_mass(labels == k) for k in keep]
    keep = [k for _, k in sorted(zip(centres, keep, strict=True), key=lambda t: (t[0][1], t[0][0]))]
    return Cutout([_crop(rgb, labels == k) for k in keep], segmented=True)
