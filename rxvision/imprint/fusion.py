"""Combine the photo's calibrated class probabilities with the imprint evidence.

``log p_fused = log p_photo + w * llr``, renormalised over the N library entries: Bayes'
rule with the imprint read as a second, conditionally independent observation, its
log-likelihood ratio tempered by ``w`` (the matcher's ratios come from fixed constants,
not a fitted model, so ``w`` is the knob to fit on held-out views; :data:`DEFAULT_WEIGHT`
1.0 is the untempered rule until then). An all-zero ``llr`` (nothing read) leaves the
photo's distribution exactly as it was.

:func:`fusion_decider` says which term put the fused top-1 ahead of its runner-up: the
fused margin splits exactly into an appearance part and an imprint part.

Example:
    >>> fused = fuse(photo_log_probs, index.llr(read))
    >>> fusion_decider(photo_log_probs, index.llr(read)).decided_by   # "imprint"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..logmath import log_softmax

DEFAULT_WEIGHT = 1.0  # untempered; fit on held-out views before relying on it


def fuse(
    photo_log_probs: np.ndarray, imprint_llr: np.ndarray, weight: float = DEFAULT_WEIGHT
) -> np.ndarray:
    """Fused, normalised log-probabilities.

    Args:
        photo_log_probs: (N,) or (B, N) calibrated log-probabilities from the photo.
        imprint_llr: (N,) or (B, N) imprint log-likelihood ratios (``ImprintIndex.llr``).
        weight: ``w``; 0 returns the photo's distribution (renormalised).

    Returns:
        float64 array of the broadcast shape, each row's exp summing to 1.

    Raises:
        ValueError: the class counts differ, or a value is NaN.
    """
    photo = np.asarray(photo_log_probs, dtype=np.float64)
    llr = np.asarray(imprint_llr, dtype=np.float64)
    if photo.shape[-1] != llr.shape[-1]:
        raise ValueError(
            f"photo has {photo.shape[-1]} classes but the imprint vector {llr.shape[-1]}: "
            "build the ImprintIndex over the same library entries, in the same order"
        )
    if np.isnan(photo).any() or np.isnan(llr).any():
        raise ValueError("NaN in the photo log-probabilities or the imprint vector")
    return log_softmax(photo + weight * llr)


@dataclass(frozen=True)
class FusionDecision:
    """Who decided the fused answer.

    ``photo_top``/``fused_top`` are entry indices; ``runner_up`` the fused second;
    ``appearance_margin`` + ``imprint_margin`` = the fused log-probability margin of
    ``fused_top`` over ``runner_up``; ``decided_by`` is ``"imprint"`` when the imprint
    changed the top-1 or supplied most of the margin, ``"appearance"`` otherwise (always,
    when nothing was read).
    """

    photo_top: int
    fused_top: int
    runner_up: int
    appearance_margin: float
    imprint_margin: float
    decided_by: str

    @property
    def changed(self) -> bool:
        """Whether the imprint moved the top-1 away from the photo's."""
        return self.photo_top != self.fused_top


def fusion_decider(
    photo_log_probs: np.ndarray,
    imprint_llr: np.ndarray,
    weight: float = DEFAULT_WEIGHT,
    rerank: Callable[[np.ndarray], np.ndarray] | None = None,
) -> FusionDecision:
    """Split the fused top-1's margin into its appearance and imprint parts (1-D inputs).

    ``rerank`` maps log-probabilities to the ranking the answer comes from (facts the user
    typed re-rank after the imprint): the decision then concerns that ranking's top-1, and
    ``photo_top`` is what the re-ranked photo alone would answer. The two margins then
    leave out the re-ranking's own share of the final margin.
    """
    photo = np.asarray(photo_log_probs, dtype=np.float64)
    llr = np.asarray(imprint_llr, dtype=np.float64)
    if photo.ndim != 1 or photo.shape != llr.shape or photo.size < 2:
        raise ValueError(
            f"fusion_decider needs two (N,) vectors with N >= 2, got {photo.shape} and {llr.shape}"
        )
    _, ranked, without = fused_rankings(photo, llr, weight, rerank)
    return ranked_decision(photo, llr, weight, ranked, without)


def fused_rankings(
    photo: np.ndarray,
    llr: np.ndarray,
    weight: float,
    rerank: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The imprint-fused log-probabilities, the ranking the answer comes from (re-ranked if
    ``rerank`` is given) and the same ranking without the imprint (float64, 1-D)."""
    fused = fuse(photo, llr, weight)
    if rerank is None:
        return fused, fused, photo
    return (fused, np.asarray(rerank(fused), dtype=np.float64),
            np.asarray(rerank(photo), dtype=np.float64))


def ranked_decision(photo: np.ndarray, llr: np.ndarray, weight: float, ranked: np.ndarray,
                    without: np.ndarray) -> FusionDecision:
    """:func:`fusion_decider` from rankings already computed: ``ranked`` the one the answer
    comes from (fused, then re-ranked if at all), ``without`` the same ranking without the
    imprint (1-D float64 inputs, shapes checked by the caller)."""
    first, second = np.argsort(-np.asarray(ranked), kind="stable")[:2]
    appearance = float(photo[first] - photo[second])
    imprint = float(weight * (llr[first] - llr[second]))
    photo_top = int(np.argmax(without))
    if not np.any(llr) or weight == 0:
        decided = "appearance"
    elif photo_top != int(first) or imprint > appearance:
        decided = "imprint"
    else:
        decided = "appearance"
    return FusionDecision(photo_top, int(first), int(second), appearance, imprint, decided)
