"""Classification metrics on predicted probabilities: pure NumPy functions.

Every function takes ``probs`` (N, C) rows summing to 1 and ``targets`` (N,) class indices in
``[0, C)``; callers drop samples whose label the model does not know before calling them.
Conventions, each cross-checked against scikit-learn in ``tests/test_metrics.py``:

- top-k: a hit if the target is among the k most probable classes (k capped at C).
- F1: scikit-learn's default label set, i.e. the classes that occur in the targets *or* the
  predictions; macro is their unweighted mean, weighted uses target support as weights.
- ROC AUC: one-vs-rest per class that occurs in the targets (and is not every target),
  averaged without weights. With fewer than two classes present it is undefined: ``None``.
- NLL: mean of ``-log p[target]``, with probabilities floored at 1e-12.
- ECE: 15 equal-width confidence bins over (0, 1]; sum over bins of
  ``|accuracy - mean confidence| * fraction of samples``. On a few hundred samples it is
  biased upward: ``ece_if_calibrated`` says what a perfectly calibrated model with the same
  confidences would score at that N (consistency resampling, Broecker & Smith 2007).
- Brier: mean over samples of ``sum_c (p_c - onehot_c)^2`` (ranges 0..2).
- accuracy at coverage q: accuracy on the ``ceil(q * N)`` most confident samples.

Example:
    >>> probs = softmax(logits, temperature=1.5)
    >>> compute_metrics(probs, targets, labels)["top1"]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

ECE_BINS = 15
COVERAGES = (0.5, 0.8, 0.9, 1.0)
PROB_FLOOR = 1e-12
HEADLINE_KEYS = ("n", "top1", "top5", "f1_macro", "f1_weighted", "roc_auc_macro", "nll", "ece",
                 "ece_if_calibrated", "brier", "accuracy_at_coverage")
ECE_DRAWS = 1000


def softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64 (numerically stable);
    ``temperature`` is one number or one per row (N,)."""
    t = np.asarray(temperature, dtype=np.float64)
    if t.ndim > 1 or (t.ndim == 1 and len(t) != len(logits)) or not (t > 0).all():
        raise ValueError(f"temperature must be positive, one number or one per row, got "
                         f"{temperature}")
    z = np.asarray(logits, dtype=np.float64) / (t[:, None] if t.ndim == 1 else t)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def rows_of(temperature: float | np.ndarray, mask: np.ndarray) -> float | np.ndarray:
    """The temperatures of the rows ``mask`` selects (one number stays one number)."""
    return temperature[mask] if isinstance(temperature, np.ndarray) else temperature


def describe_temperature(temperature: float | np.ndarray) -> str:
    """"1.09", or "0.875-1.36 by pill size (median 1.02)" for one per row."""
    if not isinstance(temperature, np.ndarray):
        return f"{temperature:.4g}"
    if temperature.size == 0:
        return "n/a"
    return (f"{temperature.min():.3g}-{temperature.max():.3g} by pill size "
            f"(median {np.median(temperature):.3g})")


def _check(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if probs.ndim != 2 or targets.ndim != 1 or len(probs) != len(targets):
        raise ValueError(f"expected probs (N, C) and targets (N,), got {probs.shape} and "
                         f"{targets.shape}")
    if len(targets) and (targets.min() < 0 or targets.max() >= probs.shape[1]):
        raise ValueError(f"targets must lie in [0, {probs.shape[1]}); drop unknown labels first")
    return probs, targets


def topk_accuracy(probs: np.ndarray, targets: np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose target is among the ``k`` most probable classes."""
    probs, targets = _check(probs, targets)
    k = min(k, probs.shape[1])
    # Rank of the target in a stable descending sort: classes scoring higher, plus tied
    # classes with a lower index, come first; so top-1 agrees with argmax on ties.
    target_score = probs[np.arange(len(targets)), targets][:, None]
    earlier = np.arange(probs.shape[1])[None, :] < targets[:, None]
    rank = (probs > target_score).sum(axis=1) + ((probs == target_score) & earlier).sum(axis=1)
    return float((rank < k).mean())


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets), np.asarray(preds)), 1)
    return cm


def precision_recall_support(
    targets: np.ndarray, preds: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class: precision, recall, F1, support (true count), predicted count.

    Undefined ratios (no predictions, no support) are 0, like ``zero_division=0``.
    """
    targets, preds = np.asarray(targets), np.asarray(preds)
    tp = np.bincount(targets[targets == preds], minlength=num_classes).astype(np.float64)
    support = np.bincount(targets, minlength=num_classes)
    predicted = np.bincount(preds, minlength=num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return precision, recall, f1, support, predicted


def f1_scores(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(macro F1, support-weighted F1) over the classes seen in targets or predictions."""
    _, _, f1, support, predicted = precision_recall_support(targets, preds, num_classes)
    seen = (support > 0) | (predicted > 0)
    if not seen.any():
        return float("nan"), float("nan")
    macro = float(f1[seen].mean())
    weighted = float((f1 * support).sum() / support.sum())
    return macro, weighted


def roc_auc_ovr(probs: np.ndarray, targets: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC over classes present in ``targets``; None if undefined.

    Uses the rank (Mann-Whitney) form with average ranks for ties, which equals the area
    under the empirical ROC curve.
    """
    probs, targets = _check(probs, targets)
    n = len(targets)
    present = np.unique(targets)
    if len(present) < 2:
        return None  # every sample has the same class: no negatives for it, AUC undefined
    scores = probs[:, present]  # (N, P)
    ranks = rankdata(scores, axis=0)  # average ranks handle tied scores
    positive = targets[:, None] == present[None, :]  # (N, P)
    n_pos = positive.sum(axis=0).astype(np.float64)
    n_neg = n - n_pos
    rank_sum = (ranks * positive).sum(axis=0)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(auc.mean())


def nll(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of the targets."""
    probs, targets = _check(probs, targets)
    p = probs[np.arange(len(targets)), targets]
    return float(-np.log(np.maximum(p, PROB_FLOOR)).mean())


def _confidence_bin(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Each confidence's bin: ``b`` holds ``(b / n_bins, (b + 1) / n_bins]``, bin 0 also 0."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)


def calibration_bins(
    probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, np.ndarray]:
    """Reliability-diagram data: per equal-width confidence bin, count, accuracy, confidence.

    Bin ``b`` holds confidences in ``(b / n_bins, (b + 1) / n_bins]`` (the first bin also
    takes 0). Empty bins have accuracy and confidence NaN.
    """
    probs, targets = _check(probs, targets)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = _confidence_bin(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    return {"edges": edges, "count": count, "accuracy": acc, "confidence": mean_conf}


def ece(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 confidence."""
    bins = calibration_bins(probs, targets, n_bins)
    n = bins["count"].sum()
    filled = bins["count"] > 0
    gap = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((gap * bins["count"][filled]).sum() / n)


def _calibrated_draws(conf: np.ndarray, n_bins: int, draws: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right answers per confidence bin when each sample is right with probability equal to
    its confidence: ``(right (draws, n_bins), count (n_bins,), confidence sum (n_bins,))``."""
    idx = _confidence_bin(conf, n_bins)
    member = np.zeros((len(conf), n_bins))
    member[np.arange(len(conf)), idx] = 1.0
    rng = np.random.default_rng(seed)
    right = [(rng.random((min(100, draws - start), len(conf))) < conf) @ member
             for start in range(0, draws, 100)]  # 100 draws at a time bounds the memory
    return (np.concatenate(right), member.sum(axis=0),
            np.bincount(idx, weights=conf, minlength=n_bins))


def ece_if_calibrated(probs: np.ndarray, n_bins: int = ECE_BINS, draws: int = ECE_DRAWS,
                      seed: int = 0) -> dict[str, float]:
    """The ECE a perfectly calibrated model with these top-1 confidences would score on this
    many samples: each sample is drawn right with probability equal to its confidence,
    ``draws`` times (consistency resampling, Broecker & Smith 2007). ECE is biased upward on
    small sets (with 400 samples of middling confidence about 0.05 from chance alone), so a
    measured ECE near ``mean`` (or under ``p95``) is what calibration can give at that N.

    Returns ``{"mean", "p95"}`` of the drawn ECEs (seeded: the same inputs, the same figures).
    """
    conf = np.asarray(probs, dtype=np.float64).max(axis=1)
    right, _, conf_sum = _calibrated_draws(conf, n_bins, draws, seed)
    drawn = np.abs(right - conf_sum).sum(axis=1) / max(len(conf), 1)
    return {"mean": float(drawn.mean()), "p95": float(np.percentile(drawn, 95))}


def consistency_bands(probs: np.ndarray, n_bins: int = ECE_BINS, draws: int = ECE_DRAWS,
                      seed: int = 0, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Per confidence bin, the range of accuracy a perfectly calibrated model with these
    confidences shows in ``level`` of draws (the reliability diagram's consistency bars,
    Broecker & Smith 2007): ``(low, high)``, NaN for empty bins."""
    conf = np.asarray(probs, dtype=np.float64).max(axis=1)
    right, count, _ = _calibrated_draws(conf, n_bins, draws, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = right / count
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(accuracy, [tail, 100 - tail], axis=0)
    empty = count == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def brier(probs: np.ndarray, targets: np.ndarray) -> float:
    """Multiclass Brier score: mean over samples of the squared distance to the one-hot."""
    probs, targets = _check(probs, targets)
    sq = (probs**2).sum(axis=1)
    p_true = probs[np.arange(len(targets)), targets]
    # sum_c (p_c - y_c)^2 = sum_c p_c^2 - 2 p_true + 1, without building the one-hot matrix
    return float((sq - 2 * p_true + 1).mean())


def coverage_curve(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, accuracy) when accepting the k most confident samples, k = 1..N."""
    probs, targets = _check(probs, targets)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    order = np.argsort(-conf, kind="stable")
    hits = np.cumsum(correct[order])
    k = np.arange(1, len(targets) + 1)
    return k / len(targets), hits / k


def accuracy_at_coverage(
    probs: np.ndarray, targets: np.ndarray, coverages: tuple[float, ...] = COVERAGES
) -> dict[str, float]:
    """Accuracy on the most confident ``ceil(q * N)`` samples, keyed by ``str(q)``."""
    cov, acc = coverage_curve(probs, targets)
    n = len(cov)
    return {str(q): float(acc[max(1, math.ceil(q * n - 1e-9)) - 1]) for q in coverages}


def most_confused(
    targets: np.ndarray, preds: np.ndarray, labels: list[str], top: int = 20
) -> list[dict[str, Any]]:
    """The ``top`` most frequent (true, predicted) mistakes, most frequent first."""
    targets, preds = np.asarray(targets), np.asarray(preds)
    wrong = targets != preds
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([targets[wrong], preds[wrong]], axis=1), axis=0,
                              return_counts=True)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -counts))[:top]
    return [{"true": labels[pairs[i, 0]], "predicted": labels[pairs[i, 1]],
             "count": int(counts[i])} for i in order]


def per_class_table(probs: np.ndarray, targets: np.ndarray,
                    labels: list[str]) -> list[dict[str, Any]]:
    """Per class with support or predictions: precision, recall, F1, support, top-1 hits."""
    probs, targets = _check(probs, targets)
    preds = probs.argmax(axis=1)
    precision, recall, f1, support, predicted = precision_recall_support(
        targets, preds, len(labels))
    rows = []
    for c in np.flatnonzero((support > 0) | (predicted > 0)):
        rows.append({"label": labels[c], "precision": float(precision[c]),
                     "recall": float(recall[c]), "f1": float(f1[c]),
                     "support": int(support[c]), "predicted": int(predicted[c])})
    return rows


def empty_metrics() -> dict[str, Any]:
    """Headline metrics of an empty set: n = 0 and every value None."""
    out: dict[str, Any] = dict.fromkeys(HEADLINE_KEYS)
    out["n"] = 0
    out["accuracy_at_coverage"] = {str(q): None for q in COVERAGES}
    return out


def compute_metrics(probs: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Headline metrics for one set of predictions.

    Args:
        probs: (N, C) calibrated probabilities, ``C == len(labels)``.
        targets: (N,) class indices into ``labels`` (no unknown labels).
        labels: the model's class names.

    Returns:
        ``{n, top1, top5, f1_macro, f1_weighted, roc_auc_macro, nll, ece, brier,
        accuracy_at_coverage: {"0.5", "0.8", "0.9", "1.0"}}``; ``roc_auc_macro`` is None
        when fewer than two classes occur; everything is None when N = 0.
    """
    probs, targets = _check(probs, targets)
    if probs.shape[1] != len(labels):
        raise ValueError(f"probs have {probs.shape[1]} columns for {len(labels)} labels")
    if len(targets) == 0:
        return empty_metrics()
    preds = probs.argmax(axis=1)
    f1_macro, f1_weighted = f1_scores(targets, preds, len(labels))
    return {
        "n": len(targets),
        "top1": topk_accuracy(probs, targets, 1),
        "top5": topk_accuracy(probs, targets, 5),
        "f1_macro": f1_macro,
        "f1_weighted": f1_weighted,
        "roc_auc_macro": roc_auc_ovr(probs, targets),
        "nll": nll(probs, targets),
        "ece": ece(probs, targets),
        "ece_if_calibrated": ece_if_calibrated(probs),
        "brier": brier(probs, targets),
        "accuracy_at_coverage": accuracy_at_coverage(probs, targets),
    }
