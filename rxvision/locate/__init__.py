"""Finding the pill: where each pill lies in a photo, and the crop the classifier sees."""

from .crop import C3PI_GREY, normalised_crop
from .locator import PillLocation, locate_pills, zoom_square, zoom_to_pills
from .segmenter import PillRegion, Segmenter
from .transform import EvalTransform, ZoomResult

__all__ = ["C3PI_GREY", "EvalTransform", "PillLocation", "PillRegion", "Segmenter",
           "ZoomResult", "locate_pills", "normalised_crop", "zoom_square", "zoom_to_pills"]
