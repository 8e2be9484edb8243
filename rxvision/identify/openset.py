"""Open-set scores: how unlike every known pill an image looks, and thresholds on them.

Every score is oriented the same way: **higher means more likely unknown**.

- ``energy`` (default): ``-logsumexp(logits)`` (Liu et al., 2020). Uses all logits, needs
  nothing but the logits, so it works with every backend.
- ``max_logit``: ``-max(logits)`` (Vaze et al., 2022: a good closed-set classifier is a
  good open-set one).
- ``centred_max_logit``: ``-(max(logits) - m_c)`` with ``c`` the top class and ``m_c`` the
  mean logit class ``c`` gives photos of its own pill (:func:`fit_class_centres`, stored by
  ``rxvision calibrate`` as ``calibration.own_logit_means``). Some pills (plain white
  rounds, blank backs) never reach the logits others do, so one threshold on the raw
  maximum flags their photos as unknown; centring on each class's own level removes that.
  Needs only the logits, so it works with every backend.
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
from typing import Any

import numpy as np

from ..logmath import as_array, log_softmax, logsumexp

OOD_METHODS = ("energy", "max_logit", "centred_max_logit", "cosine")


def unit_rows(x: Any) -> np.ndarray:
    """Rows of ``x`` (N, D) scaled to unit length (a zero row stays zero)."""
    x = as_array(x)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def class_prototypes(classifier_weight: Any) -> np.ndarray:
    """L2-normalised rows (C, D) of a final Linear layer's weight (C, D)."""
    return unit_rows(classifier_weight)


def ood_scores(
    logits: Any,
    embeddings: Any | None = None,
    prototypes: Any | None = None,
    method: str = "energy",
    class_centres: Any | None = None,
) -> np.ndarray:
    """Unknown-ness score per row, higher = more likely not a known pill.

    Args:
        logits: raw (uncalibrated) logits (B, C).
        embeddings: pre-logit embeddings (B, D); required for ``cosine``.
        prototypes: normalised class prototypes (C, D); required for ``cosine``.
        method: one of :data:`OOD_METHODS`.
        class_centres: each class's mean own-photo logit (C,); required for
            ``centred_max_logit`` (:func:`fit_class_centres`).

    Returns:
        float32 array (B,). Inputs may be NumPy arrays or CPU torch tensors.
    """
    logits = as_array(logits)
    if method == "energy":
        return -logsumexp(logits, axis=1)
    if method == "max_logit":
        return -logits.max(axis=1)
    if method == "centred_max_logit":
        if class_centres is None:
            raise ValueError("the centred_max_logit score needs per-class logit centres: run "
                             "`rxvision calibrate` (it stores calibration.own_logit_means)")
        centres = as_array(class_centres)
        if centres.shape != (logits.shape[1],):
            raise ValueError(f"{centres.size} class centres for {logits.shape[1]} classes; "
                             "rerun `rxvision calibrate` on this model")
        index = logits.argmax(axis=1)
        return -(logits[np.arange(len(logits)), index] - centres[index])
    if method == "cosine":
        if embeddings is None or prototypes is None:
            raise ValueError("the cosine OOD score needs embeddings and class prototypes "
                             "(torch backend)")
        cos = unit_rows(embeddings) @ as_array(prototypes).T  # (B, C)
        return 1.0 - cos.max(axis=1)
    raise ValueError(f"unknown OOD method {method!r}; choose one of {OOD_METHODS}")


def fit_class_centres(logits: Any, targets: Any) -> tuple[np.ndarray, dict[str, float | int]]:
    """Each class's mean logit on photos of its own pill, shrunk towards the overall mean.

    With ``n_c`` photos of class ``c`` whose own logits sum to ``S_c``, the centre is
    ``(S_c + k·g) / (n_c + k)``: ``g`` is the mean own logit over all photos and ``k`` the
    empirical-Bayes prior weight ``k = within / between``, the variance of one photo's own
    logit about its class mean over the variance of the class means themselves (both
    estimated here, the second corrected for the noise in a mean of ``n_c`` photos). Few or
    noisy photos pull a centre to ``g``; classes without photos get ``g``. No unknown pill
    is involved in the fit.

    Args:
        logits: raw logits (N, C) of labelled views of the model's own pills.
        targets: class index per view (N,); -1 (labels the model lacks) are ignored.

    Returns:
        (centres (C,), ``{"prior_views": k, "grand_mean": g, "classes_with_views",
        "within_var", "between_var"}``).

    Raises:
        ValueError: no class has two or more views (the within-class spread is unknown).
    """
    logits = as_array(logits, np.float64)
    targets = as_array(targets, np.int64)
    keep = targets >= 0
    logits, targets = logits[keep], targets[keep]
    num_classes = logits.shape[1]
    own = logits[np.arange(len(targets)), targets]
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    sums = np.bincount(targets, weights=own, minlength=num_classes)
    seen = counts > 0
    multi = counts >= 2
    if not multi.any():
        raise ValueError("class centres need at least two views of some class (one view per "
                         "class cannot separate a class's level from photo-to-photo noise)")
    means = np.divide(sums, counts, out=np.zeros(num_classes), where=seen)
    in_multi = multi[targets]
    dev = own[in_multi] - means[targets[in_multi]]
    within = float((dev ** 2).sum() / (counts[multi].sum() - multi.sum()))
    between = float(means[seen].var() - within * (1.0 / counts[seen]).mean())
    between = max(between, 1e-12)
    prior = within / between
    grand = float(own.mean())
    centres = (sums + prior * grand) / (counts + prior)
    return centres, {"prior_views": prior, "grand_mean": grand,
                     "classes_with_views": int(seen.sum()), "within_var": within,
                     "between_var": between}


def class_centres_from_card(card: dict[str, Any], num_classes: int) -> np.ndarray:
    """``calibration.own_logit_means`` as a (C,) array, checked against the label count.

    Raises:
        ValueError: the card has none, or as many as a different number of classes.
    """
    values = (card.get("calibration") or {}).get("own_logit_means")
    if values is None:
        raise ValueError("the centred_max_logit score needs calibration.own_logit_means: run "
                         "`rxvision calibrate` on views of the model's own pills")
    centres = np.asarray(values, dtype=np.float32)
    if centres.shape != (num_classes,):
        raise ValueError(f"card calibration.own_logit_means has {centres.size} values for "
                         f"{num_classes} classes; rerun `rxvision calibrate`")
    return centres


def fit_ood_threshold(known_scores: Any, tpr: float = 0.95) -> float:
    """Threshold that keeps a fraction ``tpr`` of *known* images at or below it.

    Images scoring above the threshold are flagged unknown; so about ``1 - tpr`` of known
    images are wrongly flagged, and the rest of the separation is up to the score.
    """
    scores = np.sort(as_array(known_scores, np.float64).ravel())
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


def open_set_metrics(known_scores: Any, unknown_scores: Any, tpr: float = 0.95
                     ) -> dict[str, float | int]:
    """Known-vs-unknown separation: AUROC, and the unknown pills let through at ``tpr``.

    Returns:
        ``{"auroc", "threshold", "tpr", "fpr_at_tpr", "n_known", "n_unknown"}``, where
        ``fpr_at_tpr`` is the fraction of unknown images scoring at or below the threshold
        that keeps ``tpr`` of known images (lower is better).
    """
    known = as_array(known_scores, np.float64).ravel()
    unknown = as_array(unknown_scores, np.float64).ravel()
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
    logits: Any,
    targets: Any,
    temperature: float | np.ndarray = 1.0,
    method: str = "energy",
    embeddings: Any | None = None,
    prototypes: Any | None = None,
    tpr: float = 0.95,
    target_accuracy: float = 0.95,
    abstain_threshold: float | None = None,
    class_centres: Any | None = None,
) -> dict[str, float | int | str | None]:
    """Card-ready ``identification`` thresholds from validation views of *known* pills.

    Args:
        logits: raw logits (N, C) of labelled validation views.
        targets: class index per view (N,); views with -1 (unknown labels) are ignored.
        temperature: the card's calibrated temperature (abstention uses calibrated
            probabilities): one, or one per view (N,) (a size temperature).
        method, embeddings, prototypes, class_centres: the open-set score, see
            :func:`ood_scores`.
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
    logits = as_array(logits)
    targets = as_array(targets, np.int64)
    known = targets >= 0
    if not bool(known.any()):
        raise ValueError("no validation views of known labels to fit thresholds on")
    logits, targets = logits[known], targets[known]
    emb = None if embeddings is None else as_array(embeddings)[known]
    if np.ndim(temperature):  # one per view
        temperature = as_array(temperature, np.float64)[known][:, None]
    probs = np.exp(log_softmax(logits / temperature, axis=1))
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    scores = ood_scores(logits, emb, prototypes, method, class_centres)
    correct = predicted == targets
    if abstain_threshold is None:
        abstain = fit_abstain_threshold(confidence, correct, target_accuracy)
    elif 0.0 <= abstain_threshold <= 1.0:
        abstain = float(abstain_threshold)
    else:
        raise ValueError(f"abstain threshold must be in [0, 1], got {abstain_threshold}")
    ood_threshold = fit_ood_threshold(scores, tpr)
    # The Identifier's rule: answer only if confident enough and not flagged unknown.
    answered = (confidence >= abstain) & (scores <= ood_threshold)
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
