"""The imprint read off each pill crop, as evidence beside the photo's probabilities.

A model that finds the pills first (:mod:`.pipeline`) has each pill alone in a crop; the
imprint reader (:mod:`rxvision.imprint.reader`) reads its text, the matcher
(:class:`rxvision.imprint.match.ImprintIndex`) scores every label of the model by how well
the read explains its library imprint, and :func:`rxvision.imprint.fusion.fuse` combines
that with the calibrated photo log-probabilities. Labels the drug library has no facts for
get no evidence either way (their imprint is unknown, not absent). An empty read changes
nothing. Every answer says what was read and whether the imprint or the appearance decided.

Example:
    >>> evidence = ImprintEvidence.for_answers(identifier.labels, identifier.answers)
    >>> read = evidence.read(crop)
    >>> fused, info = evidence.apply(log_probs, [read])   # info["read"] == "M 411"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..imprint import (
    DEFAULT_READER,
    DEFAULT_WEIGHT,
    ImprintIndex,
    ImprintRead,
    fuse,
    fusion_decider,
    read_imprint,
)
from ..logmath import as_array
from .answers import Answers
from .identifier import IdentifierError

DETAIL_SIDE = (224, 640)  # the reader's crop: the pill's own pixels, within these bounds


class ImprintEvidence:
    """The labels' library imprints, indexed once; reads crops and fuses what they say."""

    def __init__(self, imprints: Sequence[str | None], reader: str = DEFAULT_READER,
                 weight: float = DEFAULT_WEIGHT):
        self.index = ImprintIndex([s or "" for s in imprints])
        self.known = np.array([s is not None for s in imprints])  # facts in the library
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
        if not weight >= 0:
            raise IdentifierError(f"imprint weight must be >= 0, got {weight}")
        return cls(imprints, reader, weight)

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

    def apply(self, log_probs: Any, reads: Sequence[ImprintRead]
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Calibrated photo log-probabilities (C,) + the pill's reads -> fused ones and
        what to tell the user: ``read`` (text, "" for nothing), ``decided_by``
        ("imprint" | "appearance"), ``changed`` (the imprint moved the top answer),
        ``reader`` and ``read_ms``."""
        llr = self.llr(reads)
        log_probs = as_array(log_probs)
        photo = log_probs.astype(np.float64)
        info: dict[str, Any] = {
            "read": " / ".join(t for t in (r.text() for r in reads) if t),
            "reader": reads[0].reader if reads else self.reader,
            "read_ms": round(sum(r.elapsed_ms for r in reads), 1),
            "decided_by": "appearance", "changed": False}
        if not np.any(llr) or len(photo) < 2:
            return log_probs, info
        decision = fusion_decider(photo, llr, self.weight)
        info.update(decided_by=decision.decided_by, changed=decision.changed)
        fused = fuse(photo, llr, self.weight).astype(log_probs.dtype)
        return fused, info
