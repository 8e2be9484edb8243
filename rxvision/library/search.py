"""Search the library by what a person can read off a pill: imprint, colour, shape, size.

Ranking, in two steps:

1. **Candidates** (numpy over an inverted index): every normalised imprint token of the
   query, the whole typed imprint run together, and their one-edit keys are read from
   ``imprint_postings`` (one row per key); each reference sharing keys gets their summed
   rarity (IDF), normalised, plus its soft-field score (:mod:`.looks`), and the best
   ``CANDIDATES`` go on. Two tokens within one edit always share a key, so a misread,
   missing or extra character still finds the pill. Without an imprint (or when no pill
   shares a key), the candidates are the best ``CANDIDATES`` of the whole library by the
   soft fields.
2. **Score** (Python, on the candidates): the imprint score pairs typed tokens with the
   pill's tokens (exact, or one edit apart for tokens of 2+ characters) in any order:
   ``TYPED_SHARE`` (0.75) x the share of typed characters explained + 0.25 x the share of
   the pill's characters typed (typing one side of a two-sided imprint costs a little, a
   wrong character costs more). The whole imprint run together is compared too, for
   misreads that move a letter/digit boundary ("M 4l1" for "M 411"). Colour, shape, size
   (within 1 mm; 2 mm at half credit) and score are soft: they add to the score and never
   remove a pill. The final score is the weighted mean (``query.WEIGHTS``) over the fields
   the query gave. A name, when given, is a filter (FTS5 over the names).

Example:
    >>> with open_library("library.sqlite") as lib:
    ...     for hit in search(lib, imprint="M 411", color="blue"):
    ...         print(hit.score, hit.facts.describe(), hit.explanation)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..imprint.edits import edit_distance
from .database import Library
from .errors import QueryError
from .facts import DrugFacts
from .imprint_text import edit_keys, imprint_tokens
from .looks import LookTable
from .query import WEIGHTS, Query, color_match, parse_query, size_match

CANDIDATES = 100  # references scored in Python per query
POSTINGS_BUDGET = 200_000  # imprint-key postings read per query, rarest keys first
MAX_LIMIT = 100
TYPED_SHARE = 0.75  # imprint score: typed characters explained vs the pill's typed


@dataclass(frozen=True)
class Hit:
    """One ranked reference pill with its facts and why it ranks where it does."""

    rank: int
    score: float
    reference_id: int
    facts: DrugFacts
    group_id: int | None
    image_path: Path | None
    explanation: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": round(self.score, 4),
            "reference_id": self.reference_id,
            "group_id": self.group_id,
            "image_path": str(self.image_path) if self.image_path else None,
            "explanation": list(self.explanation),
            "facts": self.facts.to_dict(),
        }


def search(
    library: Library,
    imprint: str | None = None,
    color: str | None = None,
    shape: str | None = None,
    size_mm: float | None = None,
    score: int | None = None,
    name: str | None = None,
    limit: int = 10,
) -> list[Hit]:
    """Rank the library's reference pills against what the user read off a pill.

    Args:
        library: an open library (:func:`~rxvision.library.database.open_library`).
        imprint: letters and digits on the pill, any separators, order or case.
        color: a colour or several ("blue", "GREEN, WHITE", "off-white").
        shape: "round", "oval", "capsule", ...
        size_mm: the longest side in millimetres.
        score: 1 = unscored, 2-4 = the number of segments.
        name: words of the drug's name, brand or labeler (a filter: only pills whose
            names hold every word, prefixes allowed).
        limit: how many hits to return (1-100).

    Returns:
        Hits, best first; equal scores in label order.

    Raises:
        QueryError: a malformed query (see :func:`parse_query`).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit {limit} is out of range (1 to {MAX_LIMIT})")
    query = parse_query(imprint, color, shape, size_mm, score, name)
    ids = _candidates(library, query)
    if not ids:
        return []
    rows = library.query(
        f"SELECT id, label, part, tokens, colors, shape, size_mm, score "
        f"FROM refs WHERE id IN ({', '.join('?' * len(ids))})",
        ids,
    )
    cands = [
        _Candidate(
            i, lab, part, tuple(t.split()), tuple(c.split(", ")) if c else (), sh or "", size, sc
        )
        for i, lab, part, t, c, sh, size, sc in rows
    ]
    ranked = sorted(
        ((_score(query, c), c) for c in cands),
        key=lambda t: (-t[0], t[1].label, t[1].part, t[1].id),
    )[:limit]
    refs = {r.id: r for r in library.fetch([c.id for _, c in ranked])}
    hits = []
    for rank, (s, c) in enumerate(ranked, 1):
        r = refs[c.id]
        hits.append(
            Hit(rank, s, r.id, r.facts, r.group_id, r.image_path, tuple(_explain(query, c)))
        )
    return hits


class _Candidate(NamedTuple):
    """The fields search scores, read straight from ``refs`` (no full facts)."""

    id: int
    label: str
    part: int
    tokens: tuple[str, ...]
    colors: tuple[str, ...]
    shape: str
    size_mm: float | None
    score: int | None


def warm(library: Library) -> None:
    """Load the in-memory colour/shape/size arrays now rather than on the first search.

    0.2-0.5 s at 100k references on the 2-core machine; a service calls it once at start.
    """
    library.cached("looks", LookTable.load)


def candidate_labels(library: Library, query: Query) -> list[str]:
    """The labels of the references worth scoring exactly for ``query`` (at most
    ``CANDIDATES`` references), without scoring them: what photo + typed facts reads."""
    ids = _candidates(library, query)
    if not ids:
        return []
    rows = library.query(
        f"SELECT DISTINCT label FROM refs WHERE id IN ({', '.join('?' * len(ids))})", ids
    )
    return [r[0] for r in rows]


def _candidates(library: Library, query: Query) -> list[int]:
    """Row ids worth scoring exactly, best first by a cheap proxy of the final score.

    With an imprint: the references sharing (rarity-weighted) imprint keys, ranked by that
    share plus the soft fields; without one (or when no reference shares a key), the whole
    library by the soft fields. A name restricts both to the references it matches.
    """
    table: LookTable = library.cached("looks", LookTable.load)
    n = len(table.shape)
    soft = table.soft(query)
    allowed = None
    if query.name:
        allowed = np.zeros(n + 1, dtype=bool)
        allowed[_name_matches(library, query.name)] = True
    if query.imprint:
        shared = _shared_keys(library, query.imprint, n)  # (N + 1,), index = ref id
        if allowed is not None:
            shared[~allowed] = 0.0
        ids = np.flatnonzero(shared)
        if len(ids):
            proxy = WEIGHTS["imprint"] * shared[ids] / shared[ids].max()
            if soft is not None:
                proxy = proxy + soft[ids - 1]
            return [int(i) for i in ids[_top(proxy, CANDIDATES)]]
        # no pill shares a key with the typed imprint: rank by the other fields
    if soft is None and allowed is None:
        return []
    if allowed is not None:
        ids = np.flatnonzero(allowed)
        values = soft[ids - 1] if soft is not None else np.zeros(len(ids))
        return [int(i) for i in ids[_top(values, CANDIDATES)]]
    assert soft is not None
    return [int(i) + 1 for i in _top(soft, CANDIDATES)]


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest values, ties going to the lower position."""
    if len(values) <= k:
        return np.lexsort((np.arange(len(values)), -values))
    kth = np.partition(values, len(values) - k)[len(values) - k]
    above = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)[: k - len(above)]
    pos = np.concatenate([above, tied])
    return pos[np.lexsort((pos, -values[pos]))]


def _shared_keys(library: Library, tokens: tuple[str, ...], n: int) -> np.ndarray:
    """Per reference id, the summed IDF of the imprint keys it shares with ``tokens``.

    Keys are read rarest first within ``POSTINGS_BUDGET`` postings: a key held by a large
    share of the library ("M", "1_") says little and would cost the most.
    """
    keys: set[str] = set()
    for token in (*tokens, "".join(tokens)):
        keys |= {token, *edit_keys(token)}
    rows = library.query(
        f"SELECT df, refs FROM imprint_postings WHERE key IN "
        f"({', '.join('?' * len(keys))}) ORDER BY df",
        sorted(keys),
    )
    shared = np.zeros(n + 1, dtype=np.float64)
    budget = POSTINGS_BUDGET
    for df, packed in rows:
        if budget < df and budget < POSTINGS_BUDGET:
            break
        shared[np.frombuffer(packed, dtype="<i4")] += library.key_weight(df)
        budget -= df
    return shared


def _name_matches(library: Library, name: str) -> np.ndarray:
    """Ids whose names (RxNorm name, generic, brand, labeler) hold every typed word."""
    words = imprint_tokens(name)
    match = "names : (" + " AND ".join(f'"{w}"*' for w in words) + ")"
    rows = library.query(
        "SELECT rowid FROM pill_text WHERE pill_text MATCH ? ORDER BY rowid", (match,)
    )
    return np.array([r[0] for r in rows], dtype=np.int64)


def _score(query: Query, c: _Candidate) -> float:
    """Weighted mean of the given fields' matches, in [0, 1]."""
    total, weight = 0.0, 0.0
    if query.imprint:
        total += WEIGHTS["imprint"] * imprint_match(query.imprint, c.tokens)[0]
        weight += WEIGHTS["imprint"]
    if query.colors:
        total += WEIGHTS["color"] * color_match(query.colors, c.colors)
        weight += WEIGHTS["color"]
    if query.shape is not None:
        total += WEIGHTS["shape"] * query.shape.get(c.shape, 0.0)
        weight += WEIGHTS["shape"]
    if query.size_mm is not None:
        total += WEIGHTS["size"] * size_match(query.size_mm, c.size_mm)
        weight += WEIGHTS["size"]
    if query.score is not None:
        total += WEIGHTS["score"] * float(c.score == query.score)
        weight += WEIGHTS["score"]
    return total / weight if weight else 1.0  # only a name: every candidate passed it


def _explain(query: Query, c: _Candidate) -> list[str]:
    """One line per field the query gave, saying how this pill matches it."""
    lines = [f"name matches typed {query.name}"] if query.name else []
    if query.imprint:
        lines.append(imprint_match(query.imprint, c.tokens, explain=True)[1])
    if query.colors:
        s = color_match(query.colors, c.colors)
        lines.append(
            f"colour {', '.join(c.colors) or 'unknown'} {_verdict(s)} typed {query.text['color']}"
        )
    if query.shape is not None:
        lines.append(
            f"shape {c.shape or 'unknown'} {_verdict(query.shape.get(c.shape, 0.0))} "
            f"typed {query.text['shape']}"
        )
    if query.size_mm is not None:
        lines.append(
            f"size unknown (typed {query.size_mm:g} mm)"
            if c.size_mm is None
            else f"size {c.size_mm:g} mm ({abs(c.size_mm - query.size_mm):g} mm from "
            f"typed {query.size_mm:g})"
        )
    if query.score is not None:
        lines.append(
            f"score {c.score if c.score is not None else 'unknown'} "
            f"{_verdict(float(c.score == query.score))} typed {query.score}"
        )
    return lines


def _verdict(s: float) -> str:
    return "matches" if s >= 0.99 else "near" if s >= 0.4 else "differs from"


def imprint_match(
    typed: tuple[str, ...], pill: tuple[str, ...], explain: bool = False
) -> tuple[float, str]:
    """How well typed imprint tokens match a pill's, in [0, 1] (and how, if ``explain``).

    Typed tokens pair with the pill's tokens in any order, each at most once; a pair one
    edit apart earns ``1 - 1/len`` of its characters. The score is
    ``TYPED_SHARE`` x (typed characters explained) + the rest x (pill characters typed).

    Example:
        >>> imprint_match(("3229", "LILLY"), ("LILLY", "3229", "40", "MG"))[0]
        0.923...
    """
    q, q_len, cq = _typed(typed)
    e = list(dict.fromkeys(pill))
    if not e:
        return 0.0, "imprint: this pill has none"
    pairs = [
        (sim * (len(q[i]) + len(b)), i, j, sim)
        for j, b in enumerate(e)
        for i, sim in _near(typed, b)
    ]
    if len(pairs) > 1:
        pairs.sort(reverse=True)
    match: dict[int, tuple[int, float]] = {}
    used_e: set[int] = set()
    typed_got = pill_got = 0.0
    for _, i, j, sim in pairs:
        if i not in match and j not in used_e:
            match[i] = (j, sim)
            used_e.add(j)
            typed_got += sim * len(q[i])
            pill_got += sim * len(e[j])
    token_score = TYPED_SHARE * typed_got / q_len + (1 - TYPED_SHARE) * pill_got / sum(map(len, e))
    # The whole imprint run together, for misreads that move a letter/digit boundary.
    ce = "".join(pill)
    d = edit_distance(cq, ce)
    run_score = 0.0 if d > 1 else 1.0 - d / max(len(cq), len(ce))
    best = max(token_score, run_score)
    if not explain:
        return best, ""
    shown = f"imprint {' '.join(pill)}: "
    if best == 1.0:
        return best, shown + "exact"
    if run_score > token_score:
        return best, shown + f"one character differs from the typed {' '.join(typed)}"
    near = [f"{q[i]}~{e[j]}" for i, (j, sim) in match.items() if sim < 1.0]
    missed = [q[i] for i in range(len(q)) if i not in match]
    untyped = [e[j] for j in range(len(e)) if j not in used_e]
    notes = [
        f"one character off: {', '.join(near)}" if near else "",
        f"typed but not on it: {' '.join(missed)}" if missed else "",
        f"on it but not typed: {' '.join(untyped)}" if untyped else "",
    ]
    return best, shown + "; ".join(n for n in notes if n)


@lru_cache(maxsize=1 << 16)
def _near(typed: tuple[str, ...], token: str) -> tuple[tuple[int, float], ...]:
    """(typed token index, similarity) of the typed tokens within one edit of ``token``.

    Exact: 1; one edit apart: ``1 - 1/len`` of the longer (0.5 for two characters; two
    different single characters are not near). Cached: candidates share many tokens.
    """
    out = []
    for i, a in enumerate(_typed(typed)[0]):
        d = edit_distance(a, token)
        if d == 0:
            out.append((i, 1.0))
        elif d == 1 and (len(a) > 1 or len(token) > 1):
            out.append((i, 1.0 - 1.0 / max(len(a), len(token))))
    return tuple(out)


@lru_cache(maxsize=256)
def _typed(typed: tuple[str, ...]) -> tuple[list[str], int, str]:
    """Distinct typed tokens, their total length and the imprint run together."""
    q = list(dict.fromkeys(typed))
    return q, sum(map(len, q)), "".join(typed)


def describe_hits(hits: list[Hit]) -> list[str]:
    """Readable lines for a hit list (the CLI's output)."""
    lines = []
    for h in hits:
        lines.append(
            f"{h.rank:>3}. {h.score:.3f}  {h.facts.ndc or h.facts.label}  {h.facts.describe()}"
        )
        lines.extend(f"       {w}" for w in h.explanation)
    return lines
