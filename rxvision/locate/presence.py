"""Is there a pill to identify? A photo check that runs before any answer is given.

A classifier answers every photo with some pill: a plain red picture got "ok" at 0.906
from the bundled model. :func:`check_photo` looks at the photo itself first and asks for a
retake, naming the cause, when there is nothing the model should answer about:

- ``"photo too dark"``: even the brightest 1% of pixels are dark in every channel;
- ``"overexposed"``: most pixels are clipped white;
- ``"no pill found in the photo"``: no pixel stands out from a plain colour, or nothing
  stands out from the smooth background surface fitted to the photo's border (the same fit
  as :mod:`.locator`) as a solid region: solid colours, gradients, uneven light, text,
  an empty table;
- ``"too blurred"``: the sharpest edges are soft compared with the photo's contrast;
- ``"pill too small"``: what stands out spans only a few dozen pixels of the photo.

The check is conservative by design: its thresholds sit well beyond every real photo
measured (24 sample photos, 1,000 C3PI references, 267 phone photos of pills, none asked
for a retake; see docs/service.md). It does not tell a pill from other objects
(a hand, a coin): what stands out goes to the model, whose open-set score judges it.

Example:
    >>> check_photo(Image.new("RGB", (224, 224), (200, 10, 10))).retake
    'no pill found in the photo'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from .locator import MIN_AREA, WorkCopy

NO_PILL = "no pill found in the photo"
TOO_DARK = "photo too dark"
OVEREXPOSED = "overexposed"
BLURRED = "too blurred"
TOO_SMALL = "pill too small"
RETAKE_CAUSES = (NO_PILL, TOO_DARK, OVEREXPOSED, BLURRED, TOO_SMALL)

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
DARK_P99 = 50.0  # 99th percentile of each pixel's brightest channel below this: too dark
CLIPPED = 250  # a pixel whose every channel is at least this is clipped white
MAX_CLIPPED = 0.5  # ... more than this fraction of them: overexposed (real: <= 0.002)
FLAT_RANGE = 8.0  # every channel's 0.5-99.5 percentile range below this: one plain colour
STAND_OUT = 30.0  # RGB distance from the fitted background that counts as standing out
# The sharpest edges (99.5th percentile of the gradient, per pixel of the locator's copy)
# over the luminance range: below this, too blurred. Real photos: >= 0.076; a sample photo
# blurred with sigma = 2.5% of its longer side: 0.039-0.053.
MIN_SHARPNESS = 0.045
MIN_PILL_PIXELS = 40  # the largest standing-out region must span this many photo pixels


@dataclass(frozen=True)
class PhotoCheck:
    """The photo check's verdict: ``retake`` is None (go on) or the cause to show."""

    retake: str | None
    measures: dict[str, float] = field(default_factory=dict)


def _regions(work: WorkCopy) -> tuple[int, int, np.ndarray, list[int]]:
    """Solid regions standing out from the fitted background: (count, longest side in
    work pixels of the largest, the label image, the labels of those regions)."""
    h, w, _ = work.rgb.shape
    mask = ndimage.binary_opening(work.distance() > STAND_OUT, iterations=2)  # specks, strokes
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    labels, count = ndimage.label(mask)
    if not count:
        return 0, 0, labels, []
    areas = ndimage.sum(mask, labels, range(1, count + 1))
    big = [i for i, a in enumerate(areas) if a >= MIN_AREA * h * w]
    if not big:
        return 0, 0, labels, []
    largest = max(big, key=lambda i: areas[i])
    sl = ndimage.find_objects(labels)[largest]
    return (len(big), max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), labels,
            [i + 1 for i in big])


def _sharpness(lum: np.ndarray, luma_range: float, labels: np.ndarray, keep: list[int]
               ) -> float:
    """How steep the photo's edges are, over its luminance range: the 99.5th percentile
    of the gradient over the whole photo, or, if that is low, its 90th percentile along
    the regions' outlines (a small pill on a plain table has too few edge pixels for the
    first). A sharp edge rises over 1-2 pixels (0.15 and more); a blurred one over many."""
    smooth = ndimage.gaussian_filter(lum, 0.7)
    gradient = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)) / 8.0
    steepest = float(np.percentile(gradient, 99.5)) / max(luma_range, 1.0)
    if steepest >= MIN_SHARPNESS:
        return steepest  # the outlines cannot lower it: no need to look along them
    regions = np.isin(labels, keep)
    band = (ndimage.binary_dilation(regions, iterations=2)
            & ~ndimage.binary_erosion(regions, iterations=2))
    if band.any():
        steepest = max(steepest, float(np.percentile(gradient[band], 90))
                       / max(luma_range, 1.0))
    return steepest


def check_photo(image: Image.Image, pixel_scale: float = 1.0,
                work: WorkCopy | None = None) -> PhotoCheck:
    """Whether ``image`` (RGB) can be identified, or which retake to ask for.

    ``pixel_scale``: photo pixels per pixel of ``image`` when it is a reduced decode of
    the photo (a JPEG decoded at 1/4 scale: 4.0), so sizes are judged in photo pixels.
    ``work``: ``WorkCopy.of(image)``, shared with the locator (one background fit).
    """
    work = work or WorkCopy.of(image)
    rgb, scale = work.rgb, work.scale / pixel_scale
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    brightest = float(np.percentile(np.maximum(np.maximum(r, g), b), 99))
    clipped = float((np.minimum(np.minimum(r, g), b) >= CLIPPED).mean())
    low, high = np.percentile(rgb.reshape(-1, 3), [0.5, 99.5], axis=0)  # (3,) each
    spread = float((high - low).max())
    measures = {"p99_brightest_channel": round(brightest, 2), "clipped": round(clipped, 4),
                "colour_range": round(spread, 2)}
    if brightest < DARK_P99:
        return PhotoCheck(TOO_DARK, measures)
    if clipped > MAX_CLIPPED:
        return PhotoCheck(OVEREXPOSED, measures)
    if spread < FLAT_RANGE or min(rgb.shape[:2]) < 8:
        return PhotoCheck(NO_PILL, measures)
    count, extent, labels, keep = _regions(work)
    measures.update(regions=count, largest_px=round(extent / scale, 1))
    if not count:
        return PhotoCheck(NO_PILL, measures)
    lum = rgb.astype(np.float32) @ LUMA  # (h, w)
    low, high = np.percentile(lum, [0.5, 99.5])
    sharpness = _sharpness(lum, float(high - low), labels, keep)
    measures["sharpness"] = round(sharpness, 4)
    if sharpness < MIN_SHARPNESS:
        return PhotoCheck(BLURRED, measures)
    if extent / scale < MIN_PILL_PIXELS:
        return PhotoCheck(TOO_SMALL, measures)
    return PhotoCheck(None, measures)
