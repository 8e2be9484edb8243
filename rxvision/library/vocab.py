"""Colour and shape words: NLM's coded values, the words people use for them, near misses.

NLM codes a pill's colour and shape with a closed list (SPL ``SPLCOLOR``/``SPLSHAPE``).
People name colours differently ("tan", "off-white", "light blue") and see them
differently under a lamp, so a word maps to one or more coded values with a weight, and
coded values that are often confused count half. Search uses these weights as soft
filters; facts parsing uses them to read a manifest's colour and shape columns.
"""

from __future__ import annotations

import re

from .errors import QueryError

COLORS = (
    "BLACK",
    "BLUE",
    "BROWN",
    "GRAY",
    "GREEN",
    "ORANGE",
    "PINK",
    "PURPLE",
    "RED",
    "TURQUOISE",
    "WHITE",
    "YELLOW",
)
SHAPES = (
    "BULLET",
    "CAPSULE",
    "CLOVER",
    "DIAMOND",
    "DOUBLE CIRCLE",
    "FREEFORM",
    "GEAR",
    "HEPTAGON",
    "HEXAGON",
    "OCTAGON",
    "OVAL",
    "PENTAGON",
    "RECTANGLE",
    "ROUND",
    "SEMI-CIRCLE",
    "SQUARE",
    "TEAR",
    "TRAPEZOID",
    "TRIANGLE",
)

# A word -> {coded value: weight}; the first value is the word's meaning when reading facts.
_COLOR_WORDS: dict[str, dict[str, float]] = {
    "grey": {"GRAY": 1.0},
    "silver": {"GRAY": 1.0},
    "off white": {"WHITE": 1.0},
    "offwhite": {"WHITE": 1.0},
    "cream": {"WHITE": 1.0, "YELLOW": 0.5},
    "ivory": {"WHITE": 1.0},
    "beige": {"WHITE": 1.0, "BROWN": 0.5, "YELLOW": 0.5},
    "clear": {"WHITE": 0.5},
    "tan": {"BROWN": 1.0, "YELLOW": 0.5, "ORANGE": 0.5},
    "violet": {"PURPLE": 1.0},
    "lavender": {"PURPLE": 1.0, "PINK": 0.5},
    "lilac": {"PURPLE": 1.0, "PINK": 0.5},
    "mauve": {"PURPLE": 1.0, "PINK": 0.5},
    "aqua": {"TURQUOISE": 1.0, "BLUE": 0.5, "GREEN": 0.5},
    "teal": {"TURQUOISE": 1.0, "GREEN": 0.5, "BLUE": 0.5},
    "cyan": {"TURQUOISE": 1.0, "BLUE": 0.5},
    "navy": {"BLUE": 1.0},
    "peach": {"ORANGE": 1.0, "PINK": 0.5},
    "salmon": {"PINK": 1.0, "ORANGE": 0.5},
    "coral": {"PINK": 1.0, "ORANGE": 0.5},
    "gold": {"YELLOW": 1.0, "ORANGE": 0.5},
    "mustard": {"YELLOW": 1.0, "BROWN": 0.5},
    "maroon": {"RED": 1.0, "BROWN": 0.5},
    "burgundy": {"RED": 1.0, "PURPLE": 0.5},
    "rust": {"ORANGE": 1.0, "BROWN": 0.5},
    "magenta": {"PINK": 1.0, "PURPLE": 0.5},
    "fuchsia": {"PINK": 1.0, "PURPLE": 0.5},
    "rose": {"PINK": 1.0},
    "lime": {"GREEN": 1.0, "YELLOW": 0.5},
}
# Coded colours often confused with each other in photos and by eye.
_NEAR_COLORS = {
    "WHITE": ("GRAY",),
    "GRAY": ("WHITE", "BLACK"),
    "BLACK": ("GRAY",),
    "YELLOW": ("ORANGE",),
    "ORANGE": ("YELLOW", "PINK", "RED", "BROWN"),
    "PINK": ("RED", "ORANGE", "PURPLE"),
    "RED": ("PINK", "ORANGE", "BROWN"),
    "BROWN": ("ORANGE", "RED"),
    "PURPLE": ("PINK", "BLUE"),
    "BLUE": ("TURQUOISE", "PURPLE"),
    "TURQUOISE": ("BLUE", "GREEN"),
    "GREEN": ("TURQUOISE",),
}
_SHAPE_WORDS: dict[str, dict[str, float]] = {
    "circle": {"ROUND": 1.0},
    "circular": {"ROUND": 1.0},
    "disc": {"ROUND": 1.0},
    "disk": {"ROUND": 1.0},
    "oblong": {"OVAL": 1.0, "CAPSULE": 0.5},
    "elliptical": {"OVAL": 1.0},
    "ellipse": {"OVAL": 1.0},
    "egg": {"OVAL": 1.0},
    "caplet": {"CAPSULE": 1.0, "OVAL": 0.5},
    "capsule shaped": {"CAPSULE": 1.0},
    "triangular": {"TRIANGLE": 1.0},
    "rectangular": {"RECTANGLE": 1.0},
    "teardrop": {"TEAR": 1.0},
    "half moon": {"SEMI-CIRCLE": 1.0},
    "semicircle": {"SEMI-CIRCLE": 1.0},
    "semi circle": {"SEMI-CIRCLE": 1.0},
    "five sided": {"PENTAGON": 1.0},
    "5 sided": {"PENTAGON": 1.0},
    "six sided": {"HEXAGON": 1.0},
    "6 sided": {"HEXAGON": 1.0},
    "eight sided": {"OCTAGON": 1.0},
    "8 sided": {"OCTAGON": 1.0},
    "irregular": {"FREEFORM": 1.0},
    "free form": {"FREEFORM": 1.0},
}
_NEAR_SHAPES = {
    "OVAL": ("CAPSULE", "TEAR", "ROUND"),
    "CAPSULE": ("OVAL", "BULLET", "RECTANGLE"),
    "ROUND": ("OVAL", "DOUBLE CIRCLE", "OCTAGON"),
    "DOUBLE CIRCLE": ("ROUND",),
    "RECTANGLE": ("SQUARE", "CAPSULE"),
    "SQUARE": ("RECTANGLE", "DIAMOND"),
    "DIAMOND": ("SQUARE",),
    "PENTAGON": ("HEXAGON",),
    "HEXAGON": ("PENTAGON", "OCTAGON"),
    "OCTAGON": ("HEXAGON", "ROUND"),
    "TEAR": ("OVAL",),
    "BULLET": ("CAPSULE",),
    "TRIANGLE": ("SEMI-CIRCLE",),
    "SEMI-CIRCLE": ("TRIANGLE",),
}
_MODIFIERS = {"light", "dark", "pale", "bright", "deep", "pastel", "medium"}
_SPLIT = re.compile(r"\s*(?:,|/|&|\+|;|\band\b|\bwith\b)\s*")


def _clean(word: str) -> str:
    word = re.sub(r"[-_]", " ", word.strip().lower())
    return re.sub(r"\s+", " ", word)


def _weights(
    word: str,
    coded: tuple[str, ...],
    words: dict[str, dict[str, float]],
    near: dict[str, tuple[str, ...]],
) -> dict[str, float] | None:
    """``word`` as {coded value: weight}, near misses at half weight; None if unknown."""
    w = _clean(word)
    parts = [p for p in w.split(" ") if p not in _MODIFIERS]
    for candidate in (w, " ".join(parts)):
        direct = {candidate.upper(): 1.0} if candidate.upper() in coded else words.get(candidate)
        if direct:
            out = dict(direct)
            for value, weight in direct.items():
                for other in near.get(value, ()):
                    out[other] = max(out.get(other, 0.0), 0.5 * weight)
            return out
    return None


def parse_colors(text: str) -> list[dict[str, float]]:
    """Split a colour description into parts, each {coded colour: weight}.

    Example:
        >>> parse_colors("light blue/white")[0]["BLUE"]
        1.0

    Raises:
        QueryError: a part is not a colour this library knows.
    """
    parts = [p for p in _SPLIT.split(text) if p.strip()]
    if not parts:
        raise QueryError(f"colour {text!r} names no colour")
    out = []
    for part in parts:
        weights = _weights(part, COLORS, _COLOR_WORDS, _NEAR_COLORS)
        if weights is None:
            raise QueryError(
                f"unknown colour {part!r}; use one of {', '.join(COLORS)} "
                f"(or a common word such as {', '.join(sorted(_COLOR_WORDS)[:6])})"
            )
        out.append(weights)
    return out


def parse_shape(text: str) -> dict[str, float]:
    """A shape word as {coded shape: weight}, near shapes at half weight.

    Raises:
        QueryError: not a shape this library knows.
    """
    weights = _weights(text, SHAPES, _SHAPE_WORDS, _NEAR_SHAPES)
    if weights is None:
        raise QueryError(f"unknown shape {text!r}; use one of {', '.join(SHAPES)}")
    return weights


def coded_colors(text: str) -> tuple[str, ...]:
    """A manifest's colour cell ("GREEN, WHITE", "grey") as coded colours, in order.

    Raises:
        QueryError: a part is not a known colour (callers re-raise naming row and column).
    """
    if not text.strip():
        return ()
    return tuple(max(p, key=p.__getitem__) for p in parse_colors(text))


def coded_shape(text: str) -> str:
    """A manifest's shape cell as a coded shape ("" when empty)."""
    if not text.strip():
        return ""
    weights = parse_shape(text)
    return max(weights, key=weights.__getitem__)
