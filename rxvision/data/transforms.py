"""Letterboxing and the preprocessing card's keys, shared by training and evaluation.

Images are letterboxed (aspect kept, padded with the mean colour) to ``input_size``. The
transform that applies a whole card (zoom to the pill, letterbox, normalise) is
:class:`rxvision.locate.EvalTransform`: it needs the pill locator, which sits above data.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

ZOOM_MODES = ("auto", "off")
ZOOM_FOR_NEW_MODELS = "auto"  # what save_artifact writes for a new model


def card_zoom(preprocessing: dict[str, Any]) -> str:
    """A card's ``preprocessing.zoom``; cards written before the key existed mean "off"."""
    return preprocessing.get("zoom", "off")

_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def fill_colour(mean: list[float]) -> tuple[int, int, int]:
    """Letterbox fill: the normalisation mean as 0-255 RGB (normalises to zero)."""
    r, g, b = (round(m * 255) for m in mean)
    return (r, g, b)


def letterbox(img: Image.Image, size: tuple[int, int], fill: tuple[int, int, int],
              interpolation: str = "bicubic") -> Image.Image:
    """Resize ``img`` to fit (height, width) ``size`` keeping its aspect, pad with ``fill``."""
    h, w = size
    scale = min(w / img.width, h / img.height)
    nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"unknown interpolation {interpolation!r} in the preprocessing card; "
                         f"expected one of {sorted(_INTERPOLATION)}")
    resized = img.resize((nw, nh), _INTERPOLATION[interpolation])
    canvas = Image.new("RGB", (w, h), fill)
    canvas.paste(resized, ((w - nw) // 2, (h - nh) // 2))
    return canvas
