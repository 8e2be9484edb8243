"""What a person typed about a pill, as evidence for each label: a likelihood per label.

A photo gives ``p(label | photo)``; what the user read off the pill (imprint, colour,
shape, size, score) is more evidence. Treating the typed fields as independent given the
pill, each field's likelihood is

    L_f(typed | label) = floor_f + (1 - floor_f) * match_f ** sharpness_f

where ``match_f`` in [0, 1] is the library search's match of that field (:mod:`.search`,
:mod:`.query`: imprint tokens with one-edit tolerance, colour words with near colours,
shape, size within 1-2 mm, score), and ``L = prod_f L_f``. The floor keeps a typed fact
that matches nothing from ruling a label out: imprints are misread and colours are named
differently, so a mismatch is strong evidence against a label, never proof. The imprint
match is raised to the fourth power (``sharpness`` 4): a one-character-off imprint (match
about 0.8) keeps about 40% of the weight of an exact one, because most people type what
they read right, and an imprint that shares only a token with the typed one (a labeler's
"93", match about 0.4) about 2%, not the 15% that squaring gave it: on calibration photos
that 15% let the photo's confidently wrong favourite outweigh the exact imprint typed in
all 55 misses looked at (session 28). A label with several reference photographs (parts, a
former imprint) takes its best one.

The constants were set by hand from these arguments, not fitted: no data of what people
type exists here. The imprint's floor was 0.05 until session 21; on calibration photos
(pills in no measurement set; docs/identification.md) 0.01 put the right pill first for 5-7
points more photos with the exact or a one-off imprint typed, and another pill's imprint
typed still led to no wrong answer (it did at 0.002). The imprint's sharpness was 2 until
session 28 (docs/library.md, "Session 28"). :mod:`rxvision.identify.answers`
combines these likelihoods with the photo's probabilities.

Example:
    >>> ev = label_evidence(lib, parse_query(imprint="M 411", color="blue"), ["00378-..."])
    >>> ev["00378-..."].likelihood, ev["00378-..."].explanation(query)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .database import Library
from .query import Query, color_match, size_match
from .search import _Candidate, _explain, imprint_match

FLOOR = {"imprint": 0.01, "color": 0.2, "shape": 0.2, "size": 0.2, "score": 0.3}
SHARPNESS = {"imprint": 4.0, "color": 1.0, "shape": 1.0, "size": 1.0, "score": 1.0}


@dataclass(frozen=True)
class LabelEvidence:
    """How well one label's reference pill matches the typed facts."""

    likelihood: float  # L(typed | label), in [prod of floors, 1]
    matches: dict[str, float]  # field -> match in [0, 1]
    reference: _Candidate  # the label's best-matching reference pill

    def explanation(self, query: Query) -> list[str]:
        """One line per typed field: how this pill matches it (made only when shown)."""
        return _explain(query, self.reference)


def typed_fields(query: Query) -> list[str]:
    """The fields a query gives that count as evidence (a name is a filter, not one)."""
    fields = []
    if query.imprint:
        fields.append("imprint")
    if query.colors:
        fields.append("color")
    if query.shape is not None:
        fields.append("shape")
    if query.size_mm is not None:
        fields.append("size")
    if query.score is not None:
        fields.append("score")
    return fields


def field_likelihood(field: str, match: float) -> float:
    """``floor + (1 - floor) * match ** sharpness`` for one field."""
    return FLOOR[field] + (1.0 - FLOOR[field]) * max(0.0, min(1.0, match)) ** SHARPNESS[field]


def floor_likelihood(query: Query) -> float:
    """L for a pill that matches none of the typed fields."""
    return math.prod(FLOOR[f] for f in typed_fields(query))


def neutral_likelihood(query: Query) -> float:
    """L for a label without facts: halfway between a full match and the floor, per field."""
    return math.prod((1.0 + FLOOR[f]) / 2 for f in typed_fields(query))


def field_matches(query: Query, c: _Candidate) -> dict[str, float]:
    """Each typed field's match with one reference pill, in [0, 1]."""
    out: dict[str, float] = {}
    if query.imprint:
        out["imprint"] = imprint_match(query.imprint, c.tokens)[0]
    if query.colors:
        out["color"] = color_match(query.colors, c.colors)
    if query.shape is not None:
        out["shape"] = query.shape.get(c.shape, 0.0)
    if query.size_mm is not None:
        out["size"] = size_match(query.size_mm, c.size_mm)
    if query.score is not None:
        out["score"] = float(c.score == query.score)
    return out


def label_evidence(
    library: Library, query: Query, labels: Sequence[str]
) -> dict[str, LabelEvidence]:
    """The typed facts' likelihood for each of ``labels`` that the library holds.

    Labels the library lacks are absent from the answer (the caller decides what an
    unknown label's likelihood is: :func:`neutral_likelihood`).
    """
    distinct = list(dict.fromkeys(labels))
    out: dict[str, LabelEvidence] = {}
    for start in range(0, len(distinct), 500):
        part = distinct[start : start + 500]
        rows = library.query(
            "SELECT id, label, part, tokens, colors, shape, size_mm, score FROM refs "
            f"WHERE label IN ({', '.join('?' * len(part))}) ORDER BY label, part, id",
            part,
        )
        for i, lab, prt, tokens, colors, shape, size, score in rows:
            c = _Candidate(
                i,
                lab,
                prt,
                tuple(tokens.split()),
                tuple(colors.split(", ")) if colors else (),
                shape or "",
                size,
                score,
            )
            matches = field_matches(query, c)
            likelihood = math.prod(field_likelihood(f, m) for f, m in matches.items())
            best = out.get(lab)
            if best is None or likelihood > best.likelihood:
                out[lab] = LabelEvidence(likelihood, matches, c)
    return out
