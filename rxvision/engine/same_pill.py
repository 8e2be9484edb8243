"""Accuracy up to identical pills: a hit on any label of the true pill's group counts.

Repackagers and relabelers sell one tablet under several NDCs (docs/library.md, "Identical
pills"); no photograph can tell those labels apart, so strict NDC accuracy charges the model
for what only the package says. ``top1_same_pill`` / ``top5_same_pill`` count a prediction
as right when it is the true label or a member of the true label's identical-pill group in
the model's drug library. They are reported beside, never instead of, the strict figures.

Example:
    >>> twins = library_twins(Path("models/rxvision-c3pi-4k"))
    >>> same_pill_metrics(pred, labels, twins, group_by="mode")["top1_same_pill"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..library.database import LIBRARY_NAME, open_library
from ..library.groups import twin_labels
from .evaluate import Predictions, group_values


def library_twins(model_dir: Path) -> tuple[dict[str, frozenset[str]], str] | None:
    """The model library's label -> identical-pill twins, and the library's path; None
    when the model has no library."""
    path = model_dir / LIBRARY_NAME
    if not path.is_file():
        return None
    with open_library(path) as lib:
        return twin_labels(lib), str(lib.path)


def same_pill_hits(
    pred: Predictions, labels: list[str], twins: dict[str, frozenset[str]], k: int
) -> np.ndarray:
    """Per known sample: is the true label or one of its twins among the top ``k``? (K,)"""
    known = pred.known
    logits, targets = pred.logits[known], pred.targets[known]  # (K, C), (K,)
    if not len(targets):
        return np.zeros(0, dtype=bool)
    index = {label: i for i, label in enumerate(labels)}
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]  # (K, k)
    hits = np.zeros(len(targets), dtype=bool)
    for n, (target, row) in enumerate(zip(targets, top, strict=True)):
        ok = {int(target)} | {index[t] for t in twins.get(labels[target], ()) if t in index}
        hits[n] = any(int(j) in ok for j in row)
    return hits


def same_pill_metrics(
    pred: Predictions,
    labels: list[str],
    twins: dict[str, frozenset[str]],
    group_by: str | None = None,
) -> dict[str, Any]:
    """``top1_same_pill``, ``top5_same_pill`` overall and, with ``group_by``, per value."""
    top1 = same_pill_hits(pred, labels, twins, 1)
    top5 = same_pill_hits(pred, labels, twins, 5)

    def rates(mask: np.ndarray) -> dict[str, float | None]:
        n = int(mask.sum())
        return {
            "top1_same_pill": float(top1[mask].mean()) if n else None,
            "top5_same_pill": float(top5[mask].mean()) if n else None,
        }

    out: dict[str, Any] = rates(np.ones(len(top1), dtype=bool))
    grouped = {labels[int(t)] for t in pred.targets[pred.known] if labels[int(t)] in twins}
    out["labels_with_twins"] = len(grouped)
    if group_by is not None:
        values = np.asarray(group_values(pred, group_by))[pred.known]
        out["groups"] = {v: rates(values == v) for v in sorted(set(values.tolist()))}
    return out
