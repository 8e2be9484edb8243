"""The imprint read off each pill crop, as evidence beside the photo's probabilities.

A model that finds the pills first (:mod:`.pipeline`) has each pill alone in a crop; the
imprint reader (:mod:`rxvision.imprint.reader`) reads its text, the matcher
(:class:`rxvision.imprint.match.ImprintIndex`) scores every label of the model by how well
the read explains its library imprint, and :func:`rxvision.imprint.fusion.fuse` combines
that with the calibrated photo log-probabilities. Labels the drug library has no facts for
get no evidence either way (their imprint is unknown, not absent). An empty read changes
nothing. Every answer says what was read and whether the imprint or the appearance decided.

A read can leave the part of the imprint that tells pills apart unread: "TV" of "TV 7678"
fits TV 7677 just as well, so between those two the photo alone decides, and the photo is
least reliable between strength siblings that share colour and shape (the size, which
often tells them apart, a photo without a scale does not show). ``info["also_fits"]``
names the pills among the fused top candidates with the answer's colour and shape (when
the library has them) and another imprint, which the read supports about as well (a
likelihood ratio under :data:`UNSEPARATED_RATIO`); :meth:`ImprintEvidence.holds_back` then
asks the photo alone to clear the abstention threshold, as it must without any imprint.

Example:
    >>> evidence = ImprintEvidence.for_answers(identifier.labels, identifier.answers)
    >>> read = evidence.read(crop)
    >>> fused, info = evidence.apply(log_probs, [read])   # info["read"] == "M 411"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..imprint import (
    DEFAULT_READER,
    DEFAULT_WEIGHT,
    ImprintIndex,
    ImprintRead,
    ranked_decision,
    read_imprint,
)
from ..imprint.fusion import fused_rankings
from ..imprint.match import MIN_CONFIDENCE as EVIDENCE_CONFIDENCE
from ..library.facts import Look
from ..logmath import as_array
from .answers import Answers
from .identifier import IdentifierError

DETAIL_SIDE = (224, 640)  # the reader's crop: the pill's own pixels, within these bounds
# The read tells the answer from another pill only when it favours the answer by at least
# this likelihood ratio (after the weight); below it the two count as unseparated.
UNSEPARATED_RATIO = 2.0
ALSO_FITS_AMONG = 5  # ... looked for among this many fused top candidates


class ImprintEvidence:
    """The labels' library imprints, indexed once; reads crops and fuses what they say."""

    def __init__(self, imprints: Sequence[str | None], reader: str = DEFAULT_READER,
                 weight: float = DEFAULT_WEIGHT, labels: Sequence[str] | None = None,
                 looks: Sequence[Look | None] | None = None):
        """``labels`` name the entries in ``also_fits``; ``looks`` (colour set and shape,
        :attr:`DrugFacts.look`, None where unknown) limit it to pills that look like the
        answer."""
        self.index = ImprintIndex([s or "" for s in imprints])
        self.imprints = [s or "" for s in imprints]
        self.known = np.array([s is not None for s in imprints])  # facts in the library
        self.labels = list(labels) if labels is not None else [str(i) for i in
                                                                range(len(imprints))]
        self.looks = list(looks) if looks is not None else [None] * len(imprints)
        if len(self.labels) != len(imprints) or len(self.looks) != len(imprints):
            raise IdentifierError(f"{len(self.labels)} labels and {len(self.looks)} looks for "
                                  f"{len(imprints)} imprints")
        self.reader = reader
        self.weight = weight

    @classmethod
    def for_answers(cls, labels: Sequence[str], answers: Answers,
                    reader: str = DEFAULT_READER, weight: float = DEFAULT_WEIGHT
                    ) -> ImprintEvidence:
        """Imprints of ``labels`` from the model's drug library; ``weight`` tempers the
        imprint's evidence (the card's ``identification.imprint_weight`` when fitted).

        Raises:
            IdentifierError: the model has no drug library to read imprints from.
        """
        if answers.library is None:
            raise IdentifierError("reading the imprint needs the model's drug library: "
                                  + "; ".join(answers.notes))
        refs = answers.library.references_for(list(labels))
        imprints = [";".join(refs[lab][0].facts.imprint) if refs.get(lab) else None
                    for lab in labels]
        looks = [refs[lab][0].facts.look if refs.get(lab) else None for lab in labels]
        if not weight >= 0:
            raise IdentifierError(f"imprint weight must be >= 0, got {weight}")
        return cls(imprints, reader, weight, labels, looks)

    def read(self, crop: Image.Image) -> ImprintRead:
        """The imprint on one pill crop (at the photo's own detail; see DETAIL_SIDE)."""
        return read_imprint(crop, self.reader)

    def llr(self, reads: Sequence[ImprintRead]) -> np.ndarray:
        """Log-likelihood ratio per label (C,) of one pill's reads (front and back add up)."""
        out = np.zeros(self.index.size, dtype=np.float64)
        for read in reads:
            out += self.index.llr(read)
        out[~self.known] = 0.0
        return out

    def apply(self, log_probs: Any, reads: Sequence[ImprintRead],
              rerank: Callable[[np.ndarray], np.ndarray] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Calibrated photo log-probabilities (C,) + the pill's reads -> fused ones and
        what to tell the user: ``read`` (text, "" for nothing), ``decided_by``
        ("imprint" | "appearance"), ``changed`` (the imprint moved the top answer),
        ``reader``, ``read_ms``, ``also_fits`` (other pills the read does not tell apart
        from the answer: label and imprint, see :meth:`also_fits`) and ``photo_confidence``
        (the photo's own probability of the answer).

        ``rerank`` maps the fused log-probabilities to the ranking the answer will come from
        (typed colour and shape re-rank them after the imprint): ``decided_by``,
        ``changed``, ``also_fits`` and ``photo_confidence`` then describe that ranking's
        answer, while the returned log-probabilities stay the imprint-fused ones."""
        llr = self.llr(reads)
        log_probs = as_array(log_probs)
        photo = log_probs.astype(np.float64)
        info: dict[str, Any] = {
            # every token the matcher weighed (>= its MIN_CONFIDENCE), so that "nothing
            # legible" is said only when the read moved nothing
            "read": " / ".join(t for t in (r.text(EVIDENCE_CONFIDENCE) for r in reads) if t),
            "reader": reads[0].reader if reads else self.reader,
            "read_ms": round(sum(r.elapsed_ms for r in reads), 1),
            "decided_by": "appearance", "changed": False, "also_fits": [],
            "photo_confidence": float(np.exp(photo.max())) if len(photo) else 0.0}
        if not np.any(llr) or len(photo) < 2:
            return log_probs, info
        fused, ranked, without = fused_rankings(photo, llr, self.weight, rerank)
        decision = ranked_decision(photo, llr, self.weight, ranked, without)
        info.update(decided_by=decision.decided_by, changed=decision.changed,
                    also_fits=self.also_fits(ranked, llr),
                    photo_confidence=float(np.exp(photo[int(np.argmax(ranked))])))
        return fused.astype(log_probs.dtype), info

    def also_fits(self, fused: np.ndarray, llr: np.ndarray) -> list[dict[str, str]]:
        """Pills among the fused top :data:`ALSO_FITS_AMONG` with a known imprint other than
        the answer's (not the same pill's text), the answer's look where both are known,
        that the read favours the answer over by a likelihood ratio under
        :data:`UNSEPARATED_RATIO`: ``[{"label", "imprint"}]``."""
        order = np.argsort(-fused, kind="stable")[:ALSO_FITS_AMONG]
        top = int(order[0])
        if not self.known[top]:
            return []
        margin = np.log(UNSEPARATED_RATIO)
        look = self.looks[top]
        return [{"label": self.labels[j], "imprint": self.imprints[j]}
                for j in map(int, order[1:])
                if self.known[j] and self.index.tokens[j] != self.index.tokens[top]
                and (look is None or self.looks[j] is None or self.looks[j] == look)
                and self.weight * (llr[top] - llr[j]) < margin]

    def holds_back(self, info: dict[str, Any], abstain_threshold: float) -> bool:
        """Whether an answer must be "not sure" although its fused confidence clears the
        threshold: the read also fits another pill (``info["also_fits"]``) and the photo
        alone is below ``abstain_threshold``, so nothing reliable tells them apart."""
        return bool(info.get("also_fits")) and info["photo_confidence"] < abstain_threshold

