"""Finding the pill: where each pill lies in a photo, and the crop the classifier sees."""

from .locator import PillLocation, locate_pills, zoom_square, zoom_to_pills
from .transform import EvalTransform, ZoomResult

__all__ = ["EvalTransform", "PillLocation", "ZoomResult", "locate_pills", "zoom_square",
           "zoom_to_pills"]
