"""Independent renderer of phone-style pill photos: validation and reports only, never training."""

from .backgrounds import BACKGROUND_SOURCES
from .render import IndependentRenderer, RenderError, RenderParams
from .segment import SegmentError, cut_sides
from .writer import write_views

__all__ = [
    "BACKGROUND_SOURCES",
    "IndependentRenderer",
    "RenderError",
    "RenderParams",
    "SegmentError",
    "cut_sides",
    "write_views",
]
