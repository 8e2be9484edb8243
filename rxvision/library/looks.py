"""Every reference's colour, shape, size and score as arrays: soft scores in one pass.

Search needs the soft score (colour, shape, size, score) of many references at once: to
re-rank the imprint candidates before the exact scoring, and to rank the whole library when
no imprint was typed. SQL would scan every row per query; these arrays (about 20 bytes a
reference: 1.2 MB at 100k) are read once per open library and scored with numpy in about a
millisecond. Colour is scored once per distinct colour set (:func:`.query.color_match`;
c3pi-4k has about 130 sets) and looked up; size follows :func:`.query.size_match`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .database import Library, LibraryError
from .query import SIZE_FULL_MM, SIZE_HALF_MM, WEIGHTS, Query, color_match
from .vocab import SHAPES

_SHAPE_INDEX = {s: i for i, s in enumerate(SHAPES)}


@dataclass(frozen=True)
class LookTable:
    """Per-reference arrays, row ``i`` holding reference id ``i + 1``."""

    color_sets: tuple[tuple[str, ...], ...]  # the distinct colour sets in the library
    color_set: np.ndarray  # (N,) int32: each reference's colour set, an index into those
    shape: np.ndarray  # (N,) int16, -1 when unknown
    size_mm: np.ndarray  # (N,) float32, NaN when unknown
    score: np.ndarray  # (N,) int16, -1 when unknown

    @classmethod
    def load(cls, library: Library) -> LookTable:
        rows = library.query("SELECT id, colors, shape, size_mm, score FROM refs ORDER BY id")
        n = len(rows)
        if n and rows[-1][0] != n:
            raise LibraryError(f"{library.path}: reference ids are not 1..{n}; rebuild it")
        sets: dict[tuple[str, ...], int] = {}
        color_set = np.zeros(n, dtype=np.int32)
        shape = np.full(n, -1, dtype=np.int16)
        size = np.full(n, np.nan, dtype=np.float32)
        score = np.full(n, -1, dtype=np.int16)
        for i, (_, cols, shp, mm, sc) in enumerate(rows):
            key = tuple(sorted({c for c in (cols or "").split(", ") if c}))
            color_set[i] = sets.setdefault(key, len(sets))
            shape[i] = _SHAPE_INDEX.get(shp or "", -1)
            if mm is not None:
                size[i] = mm
            if sc is not None:
                score[i] = sc
        return cls(tuple(sets), color_set, shape, size, score)

    def soft(self, query: Query) -> np.ndarray | None:
        """Weighted sum of the soft fields' matches per reference, (N,); None if none given."""
        if not (
            query.colors or query.shape or query.size_mm is not None or query.score is not None
        ):
            return None
        total = np.zeros(len(self.shape), dtype=np.float32)
        if query.colors:
            # a handful of distinct colour sets: score each once, then look them up
            per_set = np.array(
                [color_match(query.colors, c) for c in self.color_sets], dtype=np.float32
            )
            total += WEIGHTS["color"] * per_set[self.color_set]
        if query.shape:
            w = np.zeros(len(SHAPES) + 1, dtype=np.float32)  # the last: unknown (-1)
            for s, weight in query.shape.items():
                w[_SHAPE_INDEX[s]] = weight
            total += WEIGHTS["shape"] * w[self.shape]
        if query.size_mm is not None:
            gap = np.abs(self.size_mm - query.size_mm)  # NaN compares False: no credit
            total += WEIGHTS["size"] * np.where(
                gap <= SIZE_FULL_MM, 1.0, np.where(gap <= SIZE_HALF_MM, 0.5, 0.0)
            )
        if query.score is not None:
            total += WEIGHTS["score"] * (self.score == query.score)
        return total
