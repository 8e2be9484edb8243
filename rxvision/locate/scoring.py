"""Scores for pill finding: box IoU, one-to-one box matching, recall and mask IoU.

Example:
    >>> match = match_boxes(predicted, truth)          # boxes as (x0, y0, x1, y1)
    >>> match.recall(0.5), match.mean_iou()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = Sequence[float]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class BoxMatch:
    """Greedy one-to-one matching of predicted to true boxes, highest IoU first.

    ``ious[i]`` is the IoU of true box ``i`` with the prediction matched to it (0 when
    none was); ``predicted`` is how many boxes were predicted.
    """

    ious: list[float]
    predicted: int

    def hits(self, threshold: float = 0.5) -> int:
        return sum(iou >= threshold for iou in self.ious)

    def recall(self, threshold: float = 0.5) -> float:
        return self.hits(threshold) / len(self.ious) if self.ious else 1.0

    def precision(self, threshold: float = 0.5) -> float:
        return self.hits(threshold) / self.predicted if self.predicted else 1.0

    def mean_iou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else 1.0

    def __add__(self, other: BoxMatch) -> BoxMatch:
        return BoxMatch(self.ious + other.ious, self.predicted + other.predicted)


def match_boxes(predicted: Sequence[Box], truth: Sequence[Box]) -> BoxMatch:
    """Match each true box to at most one predicted box (and vice versa) by IoU."""
    pairs = sorted(
        ((box_iou(p, t), i, j) for i, t in enumerate(truth) for j, p in enumerate(predicted)),
        reverse=True,
    )
    ious = [0.0] * len(truth)
    used_t, used_p = set(), set()
    for iou, i, j in pairs:
        if iou <= 0:
            break
        if i in used_t or j in used_p:
            continue
        used_t.add(i)
        used_p.add(j)
        ious[i] = iou
    return BoxMatch(ious, len(predicted))


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Pixel IoU of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
