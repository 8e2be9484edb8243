"""Fusing the front and back photos of one pill into one ranking (product of experts).

Why a product: the imprint on the front and the score line or imprint on the back are
separate pieces of evidence about the same drug. If the two photos are independent given
the drug and the classes are equally likely a priori, Bayes' rule gives

    p(y | front, back)  ∝  p(y | front) · p(y | back) / p(y)  ∝  p(y | front) · p(y | back)

so the fused log-probabilities are the sum of the per-view calibrated log-probabilities,
renormalised. A side that cannot tell two drugs apart (a blank back) contributes a nearly
flat distribution and leaves the other side's ranking intact; a side that rules a drug out
vetoes it, which averaging probabilities would not. The views are not perfectly independent
(same pill, same light), so fused confidences can be somewhat over-confident; the pair
threshold is therefore the same abstention threshold, not a looser one.

The open-set score of a pair is the mean of the two views' scores: one unusual view (glare,
blur) should not by itself make a known pill unknown, nor one generic view (a blank white
back) make an unknown pill known.

Example:
    >>> fused = fuse_log_probs(log_softmax(logits_front / T), log_softmax(logits_back / T))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..logmath import as_array, log_softmax


def fuse_log_probs(*log_probs: Any) -> np.ndarray:
    """Normalised sum of per-view log-probabilities, each (..., C); returns (..., C)."""
    if len(log_probs) < 1:
        raise ValueError("need at least one view to fuse")
    views = [as_array(lp) for lp in log_probs]
    shapes = {v.shape for v in views}
    if len(shapes) != 1:
        raise ValueError(f"views disagree on shape: {sorted(shapes)}")
    return log_softmax(np.sum(views, axis=0))  # (..., C)


def fuse_ood_scores(*scores: float) -> float:
    """Open-set score of several views of one pill: their mean (see module docstring)."""
    if not scores:
        raise ValueError("need at least one view to fuse")
    return float(sum(scores) / len(scores))
