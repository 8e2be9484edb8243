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

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..logmath import as_array, log_softmax, logsumexp


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


# --- two regions of one photo --------------------------------------------------------------
# A photo can show two pills that are the same drug (the front and the back of two tablets
# from one bottle, as C3PI's references and the independent renderer's "both" photos do), or
# two different drugs. Fusing them as a front/back pair would be right in the first case and
# dangerous in the second, so the pair is weighed by how likely it is that both regions are
# the same pill. With a uniform prior over the C classes and calibrated p(y | region),
#
#     p(a, b | same) / p(a, b | different)  =  C * sum_y p(y | a) p(y | b)
#
# and a region's distribution becomes the mixture
#
#     p(y | a, b)  =  w * fused(y)  +  (1 - w) * p(y | a),   w = p(same | a, b)
#
# where fused is the product of the two (a sum of log-probabilities) at a temperature fitted
# on calibration photos: two regions of one photo share its light, blur and JPEG, so they
# are less independent than a front/back pair and their plain product is over-confident
# (benchmarks/fit_same_photo.py). Two different pills that look alike get a small w unless
# their distributions overlap; then the mixture keeps most of the region's own answer.


def same_pill_log_ratio(log_probs_a: Any, log_probs_b: Any) -> np.ndarray:
    """log of p(a, b | same pill) / p(a, b | different pills) (see above), per leading
    index of the (..., C) calibrated log-probabilities."""
    a, b = as_array(log_probs_a), as_array(log_probs_b)
    if a.shape != b.shape:
        raise ValueError(f"regions disagree on shape: {a.shape} vs {b.shape}")
    return np.log(a.shape[-1]) + logsumexp(a.astype(np.float64) + b, axis=-1)


def fuse_same_photo(log_probs_a: Any, log_probs_b: Any, temperature: float, prior: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Region a's log-probabilities (..., C) given region b of the same photo: the mixture
    above, with the two regions' product at ``temperature`` and ``prior`` = p(same) before
    looking; and w = p(same pill | a, b) (...,)."""
    if not temperature > 0 or not 0.0 < prior < 1.0:
        raise ValueError(f"need temperature > 0 and 0 < prior < 1, got {temperature}, {prior}")
    a, b = as_array(log_probs_a), as_array(log_probs_b)
    log_odds = same_pill_log_ratio(a, b) + np.log(prior / (1.0 - prior))
    log_w, log_not_w = -np.logaddexp(0.0, -log_odds), -np.logaddexp(0.0, log_odds)
    fused = log_softmax((a.astype(np.float64) + b) / temperature)
    mixed = np.logaddexp(log_w[..., None] + fused, log_not_w[..., None] + a)  # log(w f + (1-w) a)
    return mixed.astype(a.dtype), np.exp(log_w)


@dataclass(frozen=True)
class SamePhotoRule:
    """The card's rule for two sure regions of one photo (``identification.same_photo``:
    ``temperature`` of their product, ``prior`` p(same pill) before looking)."""

    temperature: float
    prior: float

    @classmethod
    def from_card(cls, identification: dict[str, Any]) -> SamePhotoRule | None:
        """The rule of a card's ``identification`` section; None when it has none (two
        regions are then answered alone, as before the rule existed).

        Raises:
            ValueError: a malformed entry (names the field and the value).
        """
        entry = identification.get("same_photo")
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise ValueError(f"identification.same_photo must be an object, got {entry!r}")
        try:
            rule = cls(float(entry["temperature"]), float(entry["prior"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"identification.same_photo needs numeric temperature and prior, "
                             f"got {entry!r}") from exc
        if not (np.isfinite(rule.temperature) and rule.temperature > 0
                and 0.0 < rule.prior < 1.0):
            raise ValueError(f"identification.same_photo needs temperature > 0 and "
                             f"0 < prior < 1, got {rule.temperature} and {rule.prior}")
        return rule

    def fuse(self, log_probs_a: Any, log_probs_b: Any) -> tuple[np.ndarray, np.ndarray]:
        """:func:`fuse_same_photo` with this rule."""
        return fuse_same_photo(log_probs_a, log_probs_b, self.temperature, self.prior)
