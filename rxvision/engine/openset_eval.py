"""Open-set evaluation: known photos against photos of pills the model was never given.

``rxvision evaluate --data KNOWN --unknown D2`` runs the model once over each set
(:func:`~rxvision.engine.evaluate.predict`), then this module scores every photo with the
card's open-set score (see :mod:`rxvision.identify.openset`; higher = more likely unknown)
and measures:

- how well the score separates the two sets: AUROC, and the share of unknown photos let
  through at the threshold that keeps 95% of known photos (FPR at 95% TPR);
- the accuracy/coverage trade-off of thresholding that score: for a sweep of thresholds
  (and the card's own), the share of known photos still answered, top-1 on them, and the
  share of unknown photos rejected;
- the card's abstention rule as the pipeline applies it (answer only when the calibrated
  confidence reaches ``abstain_threshold``, for a pill weighed with its photo's other
  region the pill's own too, the score does not exceed ``ood_threshold`` and, for a crop
  model, the finder's gates pass): known photos answered, accuracy on them, unknown
  photos answered.

Example:
    >>> scores = score_predictions(pred_known, pred_unknown, T, "energy")
    >>> result["open_set"] = open_set_study(scores, card_thresholds(card, "energy"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..artifact import ArtifactError
from ..data import DatasetError, ImageSet
from ..identify.identifier import (
    DEFAULT_ABSTAIN_THRESHOLD,
    DEFAULT_OOD_METHOD,
    IdentifierError,
)
from ..identify.openset import (
    OOD_METHODS,
    class_centres_from_card,
    class_prototypes,
    fit_ood_threshold,
    ood_scores,
    open_set_metrics,
)
from .evaluate import Predictions, answerable, calibrated_temperature, predict
from .metrics import rows_of, softmax

if TYPE_CHECKING:  # the protocol lives with the backends; importing it loads onnxruntime
    from ..identify.backends import Backend

# Thresholds of the sweep, each keeping this share of known photos at or below it.
TPR_SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
HEADLINE_TPR = 0.95


@dataclass
class OpenSetScores:
    """Per-photo open-set scores and top-1 outcomes for both sets (arrays in data order)."""

    method: str
    known: np.ndarray  # (N,) scores of photos whose label the model knows
    unknown: np.ndarray  # (M,) scores of photos of pills the model does not know
    known_correct: np.ndarray  # (N,) bool, top-1 right
    # (N,) calibrated probability of the top answer; a pill weighed with its photo's other
    # region: the smaller of that and the pill's own (the pipeline's "alone" condition)
    known_confidence: np.ndarray
    unknown_confidence: np.ndarray  # (M,)
    # (N,), (M,) bool: the pipeline's finder gates let the photo be answered at all (a crop
    # model; None: no gates, every photo may be answered)
    known_answerable: np.ndarray | None = None
    unknown_answerable: np.ndarray | None = None


def card_thresholds(card: dict[str, Any], method: str | None = None) -> dict[str, Any]:
    """The Identifier's thresholds as the card sets them, for open-set score ``method``.

    Returns:
        ``{"ood_method", "abstain_threshold", "ood_threshold", "source"}``. As in
        :class:`~rxvision.identify.identifier.Identifier`, a card's ``ood_threshold`` only
        applies to the score it was fitted for (None otherwise: nothing is flagged), and
        the abstain threshold defaults to 0.5. ``source`` says which came from the card.
    """
    settings = card.get("identification") or {}
    card_method = settings.get("ood_method", DEFAULT_OOD_METHOD)
    method = method or card_method
    if method not in OOD_METHODS:
        raise ArtifactError(f"card identification.ood_method {method!r} is not one of "
                            f"{OOD_METHODS}")
    ood = settings.get("ood_threshold") if method == card_method else None
    return {
        "ood_method": method,
        "abstain_threshold": float(settings.get("abstain_threshold",
                                                DEFAULT_ABSTAIN_THRESHOLD)),
        "ood_threshold": None if ood is None else float(ood),
        "source": {"abstain_threshold": "card" if "abstain_threshold" in settings
                   else "default",
                   "ood_threshold": "card" if ood is not None else "none"},
    }


def _scores(pred: Predictions, mask: np.ndarray, method: str,
            prototypes: np.ndarray | None, class_centres: np.ndarray | None
            ) -> np.ndarray:
    emb = None
    if method == "cosine":
        if pred.embeddings is None:
            raise ValueError("the cosine score needs predictions made with embeddings=True")
        emb = pred.embeddings[mask]
    return ood_scores(pred.logits[mask], emb, prototypes, method, class_centres)


def score_predictions(
    known: Predictions,
    unknown: Predictions,
    temperature: float | np.ndarray,
    method: str = DEFAULT_OOD_METHOD,
    prototypes: np.ndarray | None = None,
    class_centres: np.ndarray | None = None,
    unknown_temperature: float | np.ndarray | None = None,
) -> OpenSetScores:
    """Open-set scores of the known set's known-label photos and the unknown set's others.

    Photos of ``known`` whose label the model lacks, and photos of ``unknown`` whose label
    it has, belong to neither side and are left out (count them with ``Predictions.known``).

    Args:
        known, unknown: :func:`~rxvision.engine.evaluate.predict` outputs of the two sets
            (with ``embeddings=True`` for ``cosine``).
        temperature: calibrated T, for the confidences the abstention rule reads: one,
            or one per photo of ``known`` (a size temperature).
        unknown_temperature: the same for the photos of ``unknown`` (default: ``temperature``,
            which must then be one number).
        method: an :data:`~rxvision.identify.openset.OOD_METHODS` name.
        prototypes: class prototypes (C, D) for ``cosine``.
        class_centres: per-class logit centres (C,) for ``centred_max_logit``.

    Raises:
        DatasetError: if either side has no photos.
    """
    k_mask, u_mask = known.known, ~unknown.known
    if not k_mask.any():
        raise DatasetError("no photo of --data has a label the model knows; the open-set "
                           "study needs known pills there")
    if not u_mask.any():
        raise DatasetError("every photo of --unknown has a label the model knows; --unknown "
                           "must show pills that are not in the model")
    if unknown_temperature is None:
        unknown_temperature = temperature
    k_probs = softmax(known.logits[k_mask], rows_of(temperature, k_mask))  # (N, C)
    u_probs = softmax(unknown.logits[u_mask], rows_of(unknown_temperature, u_mask))  # (M, C)
    return OpenSetScores(
        method=method,
        known=_scores(known, k_mask, method, prototypes, class_centres),
        unknown=_scores(unknown, u_mask, method, prototypes, class_centres),
        known_correct=k_probs.argmax(axis=1) == known.targets[k_mask],
        known_confidence=answer_confidence(known, k_mask, k_probs),
        unknown_confidence=answer_confidence(unknown, u_mask, u_probs),
    )


def answer_confidence(pred: Predictions, mask: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The confidence the answer rule reads for the photos ``mask`` selects (``probs``
    their calibrated probabilities): the top probability, and for a pill weighed with its
    photo's other region no more than the pill's own probability of that answer
    (``Predictions.alone_confidence``), as the pipeline answers."""
    confidence = probs.max(axis=1)
    if pred.alone_confidence is None:
        return confidence
    alone = pred.alone_confidence[mask]
    return np.where(np.isnan(alone), confidence, np.minimum(confidence, alone))


def finder_answerable(backend: Backend, pred: Predictions, mask: np.ndarray
                      ) -> np.ndarray | None:
    """For a crop model's predictions (with finder scores and pill sizes): which photos of
    ``mask`` the pipeline's gates let be answered (:func:`~.evaluate.answerable`); None
    for a whole-photo model."""
    from ..identify.pipeline import card_finder_gate

    if pred.finder_score is None or pred.pill_px is None:
        return None
    gate = card_finder_gate(backend.card, getattr(backend, "path", None))
    return answerable(gate, pred.finder_score[mask], pred.pill_px[mask])


def _at_threshold(s: OpenSetScores, threshold: float) -> dict[str, float | None]:
    accepted = s.known <= threshold  # the Identifier flags score > threshold as unknown
    return {
        "threshold": float(threshold),
        "known_coverage": float(accepted.mean()),
        "known_accuracy_on_accepted": (float(s.known_correct[accepted].mean())
                                       if accepted.any() else None),
        "unknown_rejected": float((s.unknown > threshold).mean()),
    }


def answered(conf: Any, score: Any, abstain_threshold: float,
             ood_threshold: float | None) -> Any:
    """The Identifier's answer rule, elementwise on arrays or tensors: a photo is answered
    when its calibrated confidence is at least ``abstain_threshold`` and (if there is an
    ``ood_threshold``) its open-set score is at most ``ood_threshold``."""
    ok = conf >= abstain_threshold
    return ok if ood_threshold is None else ok & (score <= ood_threshold)


def abstention(s: OpenSetScores, abstain_threshold: float, ood_threshold: float | None,
               ) -> dict[str, float | None]:
    """The Identifier's answer rule (:func:`answered`) on both sets: what is answered, and
    how well. Every answered unknown photo is a wrong answer."""
    k = answered(s.known_confidence, s.known, abstain_threshold, ood_threshold)
    u = answered(s.unknown_confidence, s.unknown, abstain_threshold, ood_threshold)
    if s.known_answerable is not None:  # the finder's gates (a crop model)
        k = k & s.known_answerable
    if s.unknown_answerable is not None:
        u = u & s.unknown_answerable
    n_answered = int(k.sum() + u.sum())
    return {
        "known_answered": float(k.mean()),
        "accuracy_on_answered": float(s.known_correct[k].mean()) if k.any() else None,
        "unknown_answered": float(u.mean()),
        # Precision of all answers when both sets are mixed in these proportions.
        "precision_with_unknowns": (float(s.known_correct[k].sum() / n_answered)
                                    if n_answered else None),
    }


def card_rule_on_known(backend: Backend, pred: Predictions) -> dict[str, Any] | None:
    """The card's answer rule on the known photos of one evaluation: the share answered
    and the share of those answers that are wrong (None when no photo is known).

    Uses the card's own open-set score and thresholds; a score that needs embeddings the
    predictions lack (``cosine``) is left out, and the rule then reads the confidence only
    (``ood_threshold`` None in the result says so). For a crop model (predictions with
    finder scores) the pipeline's gates hold too: no answer where the finder found
    nothing, found a pill under ``MIN_PILL_PX`` or scored it under the card's
    ``min_finder_score``; ``held_by_finder`` counts the answers they stopped. A photo
    whose pill was weighed with its other region is answered only when the pill alone is
    sure of the answer too (``Predictions.alone_confidence``), as the pipeline does.
    """
    from ..identify.pipeline import MIN_PILL_PX, card_finder_gate

    known = pred.known
    if not known.any():
        return None
    thresholds = card_thresholds(backend.card)
    method, ood = thresholds["ood_method"], thresholds["ood_threshold"]
    if ood is not None and method == "cosine" and pred.embeddings is None:
        ood = None
    scores = None
    if ood is not None:
        centres = class_centres(backend) if method == "centred_max_logit" else None
        scores = _scores(pred, known, method, None, centres)
    probs = softmax(pred.logits[known],
                    rows_of(calibrated_temperature(backend, pred), known))
    correct = probs.argmax(axis=1) == pred.targets[known]
    ok = answered(answer_confidence(pred, known, probs), scores if scores is not None else 0.0,
                  thresholds["abstain_threshold"], ood)
    gates: dict[str, Any] = {}
    can_answer = finder_answerable(backend, pred, known)
    if can_answer is not None:
        held = ok & ~can_answer
        ok = ok & ~held
        gates = {"min_finder_score": card_finder_gate(backend.card,
                                                      getattr(backend, "path", None)),
                 "min_pill_px": MIN_PILL_PX,
                 "held_by_finder": int(held.sum()),
                 "held_by_finder_wrong": int((held & ~correct).sum())}
    return {"abstain_threshold": thresholds["abstain_threshold"], "ood_method": method,
            "ood_threshold": ood, **gates, "known": int(known.sum()),
            "answered_count": int(ok.sum()), "wrong_count": int((ok & ~correct).sum()),
            "answered": float(ok.mean()),
            "wrong_of_answered": float((~correct[ok]).mean()) if ok.any() else None}


def open_set_study(s: OpenSetScores, thresholds: dict[str, Any],
                   sweep: tuple[float, ...] = TPR_SWEEP) -> dict[str, Any]:
    """The JSON-ready ``open_set`` section of ``rxvision evaluate --unknown``.

    Args:
        s: from :func:`score_predictions`.
        thresholds: from :func:`card_thresholds` (for ``s.method``).
        sweep: known-photo TPRs whose thresholds form the accuracy/coverage sweep.

    Returns:
        ``{"score", "auroc", "fpr_at_95_tpr", "threshold_at_95_tpr", "n_known",
        "n_unknown", "accuracy_coverage": [{"tpr", "threshold", "known_coverage",
        "known_accuracy_on_accepted", "unknown_rejected"}, ...], "abstention": {...}}``.
        The sweep is sorted by threshold; the card's threshold, if any, is one row with
        ``"tpr": "card"``.
    """
    head = open_set_metrics(s.known, s.unknown, tpr=HEADLINE_TPR)
    rows = [{"tpr": tpr, **_at_threshold(s, fit_ood_threshold(s.known, tpr))} for tpr in sweep]
    if thresholds.get("ood_threshold") is not None:
        rows.append({"tpr": "card", **_at_threshold(s, thresholds["ood_threshold"])})
    rows.sort(key=lambda r: r["threshold"])
    return {
        "score": s.method,
        "auroc": head["auroc"],
        "fpr_at_95_tpr": head["fpr_at_tpr"],
        "threshold_at_95_tpr": head["threshold"],
        "n_known": head["n_known"],
        "n_unknown": head["n_unknown"],
        "accuracy_coverage": rows,
        "abstention": {
            "abstain_threshold": thresholds["abstain_threshold"],
            "ood_threshold": thresholds.get("ood_threshold"),
            "source": thresholds.get("source", {}),
            **abstention(s, thresholds["abstain_threshold"], thresholds.get("ood_threshold")),
        },
    }


def coverage_curve(s: OpenSetScores) -> dict[str, np.ndarray]:
    """Every distinct threshold's trade-off, for plotting (arrays sorted by threshold).

    Returns:
        ``{"threshold", "known_coverage", "known_accuracy", "unknown_accepted"}``, where
        accepting means score <= threshold; accuracy is NaN where nothing is accepted.
    """
    thr = np.unique(np.r_[s.known, s.unknown])  # (T,) ascending
    k_sorted = np.sort(s.known)
    order = np.argsort(s.known, kind="stable")
    correct_cum = np.r_[0, np.cumsum(s.known_correct[order])]  # correct among i lowest
    n_k = np.searchsorted(k_sorted, thr, side="right")  # known accepted per threshold
    n_u = np.searchsorted(np.sort(s.unknown), thr, side="right")
    acc = np.where(n_k > 0, correct_cum[n_k] / np.maximum(n_k, 1), np.nan)
    return {"threshold": thr, "known_coverage": n_k / s.known.size, "known_accuracy": acc,
            "unknown_accepted": n_u / s.unknown.size}


def resolve_method(backend: Backend, method: str | None = None,
                   centres_in_card: bool = True) -> str:
    """The open-set score to use (``method`` or the card's), checked against the backend.

    Call it before the known pass: ``cosine`` needs ``predict(..., embeddings=True)``, and
    ``centred_max_logit`` the card's class centres (unless ``centres_in_card`` is False:
    ``rxvision calibrate`` fits them in the same run).
    """
    method = card_thresholds(backend.card, method)["ood_method"]
    if method == "cosine" and not isinstance(getattr(backend, "model", None), torch.nn.Module):
        raise IdentifierError("the cosine open-set score needs embeddings: use the torch "
                              "backend or another --ood-method")
    if method == "centred_max_logit" and centres_in_card:
        class_centres(backend)
    return method


def class_centres(backend: Backend) -> np.ndarray:
    """The card's per-class logit centres, or an IdentifierError saying how to get them."""
    try:
        return class_centres_from_card(backend.card, len(backend.card["labels"]))
    except ValueError as exc:
        raise IdentifierError(str(exc)) from exc


def evaluate_open_set(
    backend: Backend,
    known: Predictions,
    unknown_images: ImageSet,
    method: str | None = None,
    **predict_options: Any,
) -> tuple[OpenSetScores, dict[str, Any]]:
    """Run the model over ``unknown_images`` and compare with the known set's predictions.

    Args:
        backend: the model ``known`` came from.
        known: predictions on labelled photos of known pills (with embeddings for cosine).
        unknown_images: photos of pills the model does not know.
        method: open-set score; None uses the card's ``identification.ood_method``.
        **predict_options: ``batch_size``, ``workers``, ``progress`` for the one pass over
            ``unknown_images``.

    Returns:
        The scores (for plots) and the ``open_set`` JSON section (:func:`open_set_study`
        plus ``skipped_known_labels``: photos of ``unknown_images`` the model does know,
        left out).
    """
    thresholds = card_thresholds(backend.card, method)
    method = resolve_method(backend, method)
    prototypes = centres = None
    if method == "cosine":
        prototypes = class_prototypes(backend.model.get_classifier().weight)
    if method == "centred_max_logit":
        centres = class_centres(backend)
    pred = predict(backend, unknown_images, embeddings=method == "cosine", desc="unknown",
                   **predict_options)
    scores = score_predictions(known, pred, calibrated_temperature(backend, known), method,
                               prototypes, centres,
                               unknown_temperature=calibrated_temperature(backend, pred))
    scores.known_answerable = finder_answerable(backend, known, known.known)
    scores.unknown_answerable = finder_answerable(backend, pred, ~pred.known)
    study = open_set_study(scores, thresholds)
    study["skipped_known_labels"] = int(pred.known.sum())
    return scores, study
