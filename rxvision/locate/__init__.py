"""Finding the pill: where each pill lies in a photo, and the crop the classifier sees."""

import importlib
from typing import Any

from .locator import PillLocation, locate_pills, zoom_square, zoom_to_pills
from .transform import EvalTransform, ZoomResult

# The learned pill finder needs the network's layers (timm, torchvision): imported on first
# use, so identification with the classical locator (ONNX serving) never loads them.
_LAZY = {"C3PI_GREY": ".crop", "normalised_crop": ".crop", "PillRegion": ".segmenter",
         "Segmenter": ".segmenter"}

__all__ = ["C3PI_GREY", "EvalTransform", "PillLocation", "PillRegion", "Segmenter",
           "ZoomResult", "locate_pills", "normalised_crop", "zoom_square", "zoom_to_pills"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
