"""Read the imprint on a pill crop and score the library's pills by what was read."""

from .fusion import DEFAULT_WEIGHT, FusionDecision, fuse, fusion_decider, ranked_decision
from .match import ImprintIndex, ReadGroup, normalize_imprint, normalize_token, read_groups
from .reader import (
    DEFAULT_READER,
    READERS,
    ImprintRead,
    ImprintReaderError,
    ImprintToken,
    get_reader,
    read_imprint,
)

__all__ = [
    "DEFAULT_READER",
    "DEFAULT_WEIGHT",
    "READERS",
    "FusionDecision",
    "ImprintIndex",
    "ImprintRead",
    "ImprintReaderError",
    "ImprintToken",
    "ReadGroup",
    "fuse",
    "fusion_decider",
    "get_reader",
    "normalize_imprint",
    "normalize_token",
    "ranked_decision",
    "read_groups",
    "read_imprint",
]
