"""Look-alikes by appearance: for each pill, the other library pills the model sees as closest.

A classifier's final layer holds one row per pill (its weights, or the pill's prototype
after ``rxvision prototypes``). Two pills whose rows point the same way are the pills the
model finds hard to tell apart, which is what a user needs to check. The rows are centred
first (the mean row subtracted): the part every row shares says nothing about how one pill
differs from another. Nearness is the cosine of the centred rows.

The table is computed once per model, when the library file is built for it
(``rxvision library build --for-model`` or enrollment), and stored in the library file
(``lookalikes``) with the weights' SHA-256, so an answer costs one indexed read and a model
with other weights is not shown another model's neighbours. Members of a label's
identical-pill group are left out: they are the same pill, listed as such.

Example:
    >>> rows = model.get_classifier().weight.detach().numpy()  # (C, D)
    >>> write_library(facts, "library.sqlite", image_root=root,
    ...               appearance=Appearance(labels, rows, card["weights"]["sha256"]))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import LibraryError
from .facts import DrugFacts

STORED = 5  # neighbours kept per label in the file (answers show LOOKALIKES_SHOWN)
LOOKALIKES_SHOWN = 3
_CHUNK = 1024  # rows per similarity block: (1024, C) float32 at a time


@dataclass(frozen=True)
class Appearance:
    """A model's class rows, by label, and the fingerprint of the weights they came from."""

    labels: Sequence[str]
    rows: np.ndarray  # (C, D) float: one row per label, in ``labels`` order
    fingerprint: str  # SHA-256 of the model's weights file
    source: str = ""  # which model, for the library's meta table

    def __post_init__(self) -> None:
        if self.rows.ndim != 2 or len(self.rows) != len(self.labels):
            raise LibraryError(
                f"appearance rows {tuple(self.rows.shape)} do not match {len(self.labels)} labels"
            )
        if not np.isfinite(self.rows).all():
            raise LibraryError("appearance rows hold NaN or infinite values")


def nearest(
    appearance: Appearance,
    facts: Sequence[DrugFacts],
    group_ids: Sequence[int | None],
    k: int = STORED,
) -> Iterator[tuple[str, int, str, float]]:
    """``(label, rank, other label, cosine)`` for each library label the model knows.

    Only labels both in the library and in the model take part (a neighbour needs facts to
    be described). Labels sharing an identical-pill group with a label are not its
    neighbours. Ranks start at 1; ties go to the other label that comes first in the model.
    """
    in_library = {f.label for f in facts}
    keep = [i for i, label in enumerate(appearance.labels) if label in in_library]
    if len(keep) < 2:
        return
    labels = [appearance.labels[i] for i in keep]
    rows = centred_unit_rows(appearance.rows[keep]).astype(np.float32)  # (n, D)
    position = {label: i for i, label in enumerate(labels)}
    twins = _twin_positions(facts, group_ids, position)
    k = min(k, len(labels) - 1)
    for start in range(0, len(labels), _CHUNK):
        sim = rows[start : start + _CHUNK] @ rows.T  # (b, n)
        for r in range(len(sim)):
            i = start + r
            row = sim[r]
            row[i] = -np.inf
            row[list(twins.get(i, ()))] = -np.inf
            order = np.argsort(-row, kind="stable")[:k]
            for rank, j in enumerate(order, 1):
                if np.isfinite(row[j]):
                    yield labels[i], rank, labels[j], float(row[j])


def centred_unit_rows(rows: np.ndarray) -> np.ndarray:
    """Class rows (C, D) centred (the shared part says nothing about looks) and scaled to
    unit length, float64: their dot products are the cosines look-alikes are ranked by."""
    rows = rows.astype(np.float64)
    rows = rows - rows.mean(axis=0, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _twin_positions(
    facts: Sequence[DrugFacts], group_ids: Sequence[int | None], position: dict[str, int]
) -> dict[int, set[int]]:
    """Per label position, the positions of the labels sharing an identical-pill group."""
    members: dict[int, set[int]] = defaultdict(set)
    for f, g in zip(facts, group_ids, strict=True):
        if g is not None and f.label in position:
            members[g].add(position[f.label])
    out: dict[int, set[int]] = defaultdict(set)
    for group in members.values():
        for i in group:
            out[i] |= group - {i}
    return out
