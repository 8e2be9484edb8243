"""The normalised crop: one pill alone, at a fixed scale, on the C3PI studio grey.

C3PI reference photographs show each pill on flat neutral grey (sRGB 117, 117, 117, the
median border colour of the c3pi-1k photos). A pill found in a phone photo is cut out with
its mask (the edge softened by half a pixel), optionally turned so that its long axis is
horizontal, scaled so that its longer side spans ``fill`` of the output, and pasted in the
middle of a grey square. Whatever lay around the pill (a hand, a table, other pills) is
gone, and every pill has the same framing whatever its size in the photo.

Example:
    >>> region = segmenter.find(photo)[0]
    >>> crop = normalised_crop(photo, region, 224)            # 224 x 224 RGB
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from .segmenter import PillRegion

C3PI_GREY = (117, 117, 117)
DEFAULT_FILL = 0.8  # the pill's longer side over the crop's side


def principal_angle(mask: np.ndarray) -> float:
    """Angle in degrees (counter-clockwise) of a mask's long axis from the horizontal."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return 0.0
    cov = np.cov(np.stack([xs - xs.mean(), ys - ys.mean()]))
    values, vectors = np.linalg.eigh(cov)
    vx, vy = vectors[:, int(np.argmax(values))]
    return float(-math.degrees(math.atan2(vy, vx)))  # image y points down


def normalised_crop(
    image: Image.Image,
    region: PillRegion,
    size: int = 224,
    fill: float = DEFAULT_FILL,
    background: tuple[int, int, int] = C3PI_GREY,
    align: bool = False,
) -> Image.Image:
    """The pill of ``region`` alone on ``background``: an RGB image ``size`` x ``size``.

    Args:
        image: the photo ``region`` was found in (same size as given to ``find``).
        region: a pill from :meth:`rxvision.locate.Segmenter.find`.
        size: side of the square output, pixels.
        fill: the pill's longer side as a fraction of ``size`` (0 < fill <= 1).
        background: RGB colour around the pill.
        align: turn the pill so that its long axis is horizontal (the sign of the turn is
            arbitrary: a pill may come out upside down).

    Raises:
        ValueError: the region does not fit the image, or ``size``/``fill`` are out of range.
    """
    if size < 8 or not 0 < fill <= 1:
        raise ValueError(f"need size >= 8 and 0 < fill <= 1, got size={size}, fill={fill}")
    x0, y0, x1, y1 = region.box
    if not (0 <= x0 < x1 <= image.size[0] and 0 <= y0 < y1 <= image.size[1]):
        raise ValueError(
            f"pill box {region.box} lies outside the {image.size} image; "
            "pass the photo the region was found in"
        )
    if region.mask.shape != (y1 - y0, x1 - x0):
        raise ValueError(f"mask shape {region.mask.shape} does not fit box {region.box}")
    pill = image.convert("RGB").crop(region.box).convert("RGBA")
    alpha = Image.fromarray(region.mask.astype(np.uint8) * 255, "L")
    pill.putalpha(alpha.filter(ImageFilter.GaussianBlur(0.5)))
    if align:
        pill = pill.rotate(
            -principal_angle(region.mask), resample=Image.Resampling.BICUBIC, expand=True
        )
        bbox = pill.getchannel("A").point(lambda v: 255 if v > 127 else 0).getbbox()
        if bbox:
            pill = pill.crop(bbox)
    w, h = pill.size
    k = fill * size / max(w, h)
    pill = pill.resize(
        (max(1, round(w * k)), max(1, round(h * k))),
        Image.Resampling.BICUBIC if k > 1 else Image.Resampling.LANCZOS,
    )
    canvas = Image.new("RGBA", (size, size), (*background, 255))
    canvas.alpha_composite(pill, ((size - pill.size[0]) // 2, (size - pill.size[1]) // 2))
    return canvas.convert("RGB")
