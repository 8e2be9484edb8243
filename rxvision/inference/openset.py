"""Open-set scores: how unlike every known pill an image looks, and thresholds on them.

Every score is oriented the same way: **higher means more likely unknown**.

- ``energy`` (default): ``-logsumexp(logits)`` (Liu et al., 2020). Uses all logits, needs
  nothing but the logits, so it works with every backend.
- ``max_logit``: ``-max(logits)`` (Vaze et al., 2022: a good closed-set classifier is a
  good open-set one).
- ``cosine``: ``1 - max_c cos(embedding, prototype_c)`` with the 512-d pre-logit embedding
  and prototypes = L2-normalised rows of the final Linear layer. Enrollment imprints new
  rows as scaled prototypes, so enrolled pills get prototypes for free. Needs embeddings,
  hence the torch backend.

Thresholds are fitted on *known* validation views only (:func:`fit_ood_threshold`: keep a
chosen fraction, e.g. 95%, of known views below it) because unknown pills are by definition
not available when the model is shipped.

Example:
    >>> s = ood_scores(logits, method="energy")          # (B,)
    >>> t = fit_ood_threshold(s_known_val, tpr=0.95)
    >>> unknown = s > t
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

OOD_METHODS = ("energy", "max_logit", "cosine")


def class_prototypes(classifier_weight: Tensor) -> Tensor:
    """L2-normalised rows (C, D) of a final Linear layer's weight (C, D)."""
    return F.normalize(classifier_weight.detach().float(), dim=1)


def ood_scores(
    logits: Tensor,
    embeddings: Tensor | None = None,
    prototypes: Tensor | None = None,
    method: str = "energy",
) -> Tensor:
    """Unknown-ness score per row, higher = more likely not a known pill.

    Args:
        logits: raw (uncalibrated) logits (B, C).
        embeddings: pre-logit embeddings (B, D); required for ``cosine``.
        prototypes: normalised class prototypes (C, D); required for ``cosine``.
        method: one of :data:`OOD_METHODS`.

    Returns:
        Float tensor (B,).
    """
    logits = logits.float()
    if method == "energy":
        return -torch.logsumexp(logits, dim=1)
    if method == "max_logit":
        return -logits.max(dim=1).values
    if method == "cosine":
        if embeddings is None or prototypes is None:
            raise ValueError("the cosine OOD score needs embeddings and class prototypes "
                             "(torch backend)")
        cos = F.normalize(embeddings.float(), dim=1) @ prototypes.float().T  # (B, C)
        return 1.0 - cos.max(dim=1).values
    raise ValueError(f"unknown OOD method {method!r}; choose one of {OOD_METHODS}")


def fit_ood_threshold(known_scores: np.ndarray | Tensor, tpr: float = 0.95) -> float:
    """Threshold that keeps a fraction ``tpr`` of *known* images at or below it.

    Images scoring above the threshold are flagged unknown; so about ``1 - tpr`` of known
    images are wrongly flagged, and the rest of the separation is up to the score.
    """
    scores = np.sort(np.asarray(known_scores, dtype=np.float64).ravel())
    if scores.size == 0:
        raise ValueError("cannot fit an OOD threshold on zero known images")
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    # The smallest score with at least ceil(tpr * N) known scores <= it.
    k = max(1, math.ceil(tpr * scores.size))
    return float(scores[k - 1])


def fit_abstain_threshold(
    confidences: np.ndarray, correct: np.ndarray, target_accuracy: float = 0.95
) -> float:
    """Smallest confidence threshold whose accepted answers reach ``target_accuracy``.

    Answers with confidence below the threshold abstain; the threshold is chosen to keep
    as many answers as possible (maximum coverage) at the target accuracy.

    Raises:
        ValueError: if no threshold reaches the target on these images.
    """
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    if conf.size == 0 or conf.size != ok.size:
        raise ValueError(f"need equal, non-empty confidences and correct flags "
                         f"({conf.size} vs {ok.size})")
    order = np.argsort(-conf, kind="stable")
    conf, ok = conf[order], ok[order]
    accuracy = np.cumsum(ok) / np.arange(1, ok.size + 1)  # accuracy of the i+1 most confident
    # A threshold equal to conf[i] accepts every answer with confidence >= conf[i], i.e.
    # all ties as well: only positions at the end of a tie group are valid cut points.
    last_of_group = np.r_[conf[1:] != conf[:-1], True]
    valid = np.nonzero(last_of_group & (accuracy >= target_accuracy))[0]
    if valid.size == 0:
        raise ValueError(f"no confidence threshold reaches {target_accuracy:.1%} accuracy "
                         f"(best: {accuracy.max():.1%} on the most confident answers)")
    return float(conf[valid.max()])


def binary_auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """AUROC of telling unknown (positive) from known images by score (higher = unknown)."""
    from sklearn.metrics import roc_auc_score

    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unknown = np.asarray(unknown_scores, dtype=np.float64).ravel()
    if known.size == 0 or unknown.size == 0:
        raise ValueError("AUROC needs at least one known and one unknown image")
    y = np.r_[np.zeros(known.size), np.ones(unknown.size)]
    return float(roc_auc_score(y, np.r_[known, unknown]))


def open_set_metrics(known_scores: np.ndarray | Tensor, unknown_scores: np.ndarray | Tensor,
                     tpr: float = 0.95) -> dict[str, float | int]:
    """Known-vs-unknown separation: AUROC, and the unknown pills let through at ``tpr``.

    Returns:
        ``{"auroc", "threshold", "tpr", "fpr_at_tpr", "n_known", "n_unknown"}``, where
        ``fpr_at_tpr`` is the fraction of unknown images scoring at or below the threshold
        that keeps ``tpr`` of known images (lower is better).
    """
    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unknown = np.asarray(unknown_scores, dtype=np.float64).ravel()
    threshold = fit_ood_threshold(known, tpr)
    return {
        "auroc": binary_auroc(known, unknown),
        "threshold": threshold,
        "tpr": tpr,
        "fpr_at_tpr": float((unknown <= threshold).mean()),
        "n_known": int(known.size),
        "n_unknown": int(unknown.size),
    }


def fit_thresholds(
    logits: np.ndarray | Tensor,
    targets: np.ndarray | Tensor,
    temperature: float = 1.0,
    method: str = "energy",
    embeddings: np.ndarray | Tensor | None = None,
    prototypes: Tensor | None = None,
    tpr: float = 0.95,
    target_accuracy: float = 0.95,
    abstain_threshold: float | None = None,
) -> dict[str, float | int | str | None]:
    """Card-ready ``identification`` thresholds from validation views of *known* pills.

    Args:
        logits: raw logits (N, C) of labelled validation views.
        targets: class index per view (N,); views with -1 (unknown labels) are ignored.
        temperature: the card's calibrated temperature (abstention uses calibrated
            probabilities).
        method, embeddings, prototypes: the open-set score, see :func:`ood_scores`.
        tpr: fraction of known views that must stay below the OOD threshold.
        target_accuracy: accuracy required of the answers that are not abstained on.
        abstain_threshold: use this fixed confidence threshold instead of fitting one
            (``target_accuracy`` is then ignored and stored as None).

    Returns:
        ``{"abstain_threshold", "abstain_rule" ("target_accuracy" | "fixed"),
        "ood_method", "ood_threshold", "tpr", "target_accuracy", "n", "answered",
        "accuracy_on_answered"}``, the last two measured on these views with both
        thresholds applied; store it with ``update_card(run, identification=...)``.

    Example:
        >>> fit = fit_thresholds(pred.logits, pred.targets, temperature=art.temperature)
        >>> update_card("runs/x", identification=fit)
    """
    logits = torch.as_tensor(logits).float()
    targets = torch.as_tensor(targets).long()
    known = targets >= 0
    if not bool(known.any()):
        raise ValueError("no validation views of known labels to fit thresholds on")
    logits, targets = logits[known], targets[known]
    emb = None if embeddings is None else torch.as_tensor(embeddings).float()[known]
    probs = torch.softmax(logits / temperature, dim=1)
    confidence, predicted = probs.max(dim=1)
    scores = ood_scores(logits, emb, prototypes, method).numpy()
    correct = (predicted == targets).numpy()
    if abstain_threshold is None:
        abstain = fit_abstain_threshold(confidence.numpy(), correct, target_accuracy)
    elif 0.0 <= abstain_threshold <= 1.0:
        abstain = float(abstain_threshold)
    else:
        raise ValueError(f"abstain threshold must be in [0, 1], got {abstain_threshold}")
    ood_threshold = fit_ood_threshold(scores, tpr)
    # The Identifier's rule: answer only if confident enough and not flagged unknown.
    answered = (confidence.numpy() >= abstain) & (scores <= ood_threshold)
    return {
        "abstain_threshold": abstain,
        "abstain_rule": "target_accuracy" if abstain_threshold is None else "fixed",
        "ood_method": method,
        "ood_threshold": ood_threshold,
        "tpr": tpr,
        "target_accuracy": target_accuracy if abstain_threshold is None else None,
        "n": int(known.sum()),
        "answered": float(answered.mean()),
        "accuracy_on_answered": float(correct[answered].mean()) if answered.any() else None,
    }
