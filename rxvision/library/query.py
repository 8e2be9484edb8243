"""A search query: what a person read off a pill, checked, and how each field matches.

The field matches here are the soft part of the ranking (see :mod:`.search`); the same
rules run vectorised over the whole library in :mod:`.looks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import QueryError
from .facts import MAX_SIZE_MM
from .imprint_text import imprint_tokens
from .vocab import parse_colors, parse_shape

MAX_IMPRINT_CHARS = 64
MAX_NAME_CHARS = 100
# How much each field weighs in a hit's score (a weighted mean over the fields given).
WEIGHTS = {"imprint": 1.0, "color": 0.12, "shape": 0.08, "size": 0.06, "score": 0.04}
SIZE_FULL_MM, SIZE_HALF_MM = 1.0, 2.0  # within: full credit; within: half credit


@dataclass(frozen=True)
class Query:
    """A checked search query; build it with :func:`parse_query`."""

    imprint: tuple[str, ...] = ()
    colors: tuple[dict[str, float], ...] = ()
    shape: dict[str, float] | None = None
    size_mm: float | None = None
    score: int | None = None
    name: str = ""
    text: dict[str, str] = field(default_factory=dict)  # what was typed, for explanations


def parse_query(
    imprint: str | None = None,
    color: str | None = None,
    shape: str | None = None,
    size_mm: float | None = None,
    score: int | None = None,
    name: str | None = None,
) -> Query:
    """Check and normalise search fields.

    Raises:
        QueryError: nothing to search by, an imprint or name too long or without letters
            or digits, an unknown colour or shape, a size outside 1-60 mm, a score outside
            1-8.
    """
    text: dict[str, str] = {}
    tokens: tuple[str, ...] = ()
    if imprint is not None and imprint.strip():
        if len(imprint) > MAX_IMPRINT_CHARS:
            raise QueryError(
                f"imprint is {len(imprint)} characters; at most "
                f"{MAX_IMPRINT_CHARS} (type what is printed on the pill)"
            )
        tokens = imprint_tokens(imprint)
        if not tokens:
            raise QueryError(f"imprint {imprint!r} has no letters or digits")
        text["imprint"] = imprint.strip()
    colors: tuple[dict[str, float], ...] = ()
    if color is not None and color.strip():
        colors = tuple(parse_colors(color))
        text["color"] = color.strip()
    shape_weights = None
    if shape is not None and shape.strip():
        shape_weights = parse_shape(shape)
        text["shape"] = shape.strip()
    if size_mm is not None and not 1.0 <= size_mm <= MAX_SIZE_MM:
        raise QueryError(
            f"size {size_mm:g} mm is not a pill size; give the longest side "
            f"in millimetres (1 to {MAX_SIZE_MM:g})"
        )
    if score is not None and not 1 <= score <= 8:
        raise QueryError(
            f"score {score} is not a number of pill segments (1 = unscored, "
            "2-4 = halves to quarters)"
        )
    name = (name or "").strip()
    if len(name) > MAX_NAME_CHARS:
        raise QueryError(f"name is {len(name)} characters; at most {MAX_NAME_CHARS}")
    if name and not imprint_tokens(name):
        raise QueryError(f"name {name!r} has no letters or digits")
    if not (tokens or colors or shape_weights or size_mm is not None or score is not None or name):
        raise QueryError(
            "nothing to search by: give an imprint, colour, shape, size, score or name"
        )
    return Query(tokens, colors, shape_weights, size_mm, score, name, text)


def color_match(parts: tuple[dict[str, float], ...], colors: tuple[str, ...]) -> float:
    """Typed colours against a pill's, in [0, 1].

    0.8 x the mean over typed colours of their best weight on the pill, + 0.2 x the share
    of the pill's colours that some typed colour names (so "white" fits a white pill better
    than a white and blue capsule). 0 for a pill of unknown colour.
    """
    if not colors:
        return 0.0
    distinct = set(colors)
    per_part = sum(max(part.get(c, 0.0) for c in distinct) for part in parts) / len(parts)
    covered = sum(1 for c in distinct if any(part.get(c, 0.0) >= 0.5 for part in parts))
    return 0.8 * per_part + 0.2 * covered / len(distinct)


def size_match(typed: float, size: float | None) -> float:
    """1 within 1 mm, 0.5 within 2 mm, else 0 (and 0 for an unknown size)."""
    if size is None:
        return 0.0
    gap = abs(size - typed)
    return 1.0 if gap <= SIZE_FULL_MM else 0.5 if gap <= SIZE_HALF_MM else 0.0
