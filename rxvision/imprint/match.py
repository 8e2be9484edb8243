"""Score every library pill by how well the read tokens explain its imprint.

Text is normalised alike on both sides: upper case, separators (space ; - / . ,) split
tokens, and the characters OCR confuses on pills fold together (O->0, I and L->1, S->5,
B->8, Z->2, G->6), so "LCI 1789" and "1C1;1789" meet. A library imprint becomes a set of
tokens (both sides together, any order, duplicates once).

For a read token r and pill j, ``s_j(r)`` in [0, 1] says how well one of j's tokens
explains r: 1 for an equal token (or adjacent tokens run together: "100mg" for
"100;mg"); :data:`ONE_EDIT` for one misread, dropped or extra character or two swapped
neighbours (:func:`~rxvision.imprint.edits.edit_distance`; tokens of 3+
characters; :data:`ONE_EDIT_SHORT` for 2); :data:`SUBSTRING` when r (3+ characters) is a
run inside j's imprint written without separators (the detector joined or split words).

The evidence of r for j is the log-ratio of ``eps + s_j(r)`` to its mean over the
library, weighted by the read's confidence; ``eps`` (:data:`EPSILON`, by token length) is
the chance that r is OCR noise. So a token no pill explains moves nothing; a rare token
read exactly lifts the few pills that carry it by about ``log(1/eps)``; a common one
("M", "10") lifts many a little. A pill that leaves a read token unexplained loses
``log(eps / mean)`` for it (little unless most pills explain it), and each of its imprint
tokens that was not read costs :data:`MISSED_TOKEN` only (OCR misses are common). An
empty read is no evidence: all zeros. A pill without an imprint explains no token; when
nothing is read it gains ``absent_bonus`` (0 by default, so an empty read changes
nothing).

Lookups go through inverted indexes (exact token, one-deletion neighbours, character
trigrams of the joined imprint), so a read costs time in the number of candidate pills,
not the library size; the score itself is a few vector operations over N entries.

Example:
    >>> index = ImprintIndex(["M;411", "TEVA;5770", ""])
    >>> index.llr(["M", "411"])             # array of 3 log-likelihood ratios
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .edits import deletions, edit_distance

# A read token's chance of being OCR noise rather than part of the imprint, by its length:
# specks, score lines and edges are read as single characters ("1", "8", "I") far more
# often than as longer tokens, so a lone character lifts the pills that carry it less.
EPSILON = {1: 0.25, 2: 0.1}
EPSILON_LONG = 0.05  # 3+ characters
ONE_EDIT = 0.35  # s for one misread/missing/extra character (tokens of 3+ characters)
ONE_EDIT_SHORT = 0.15  # ... for 2-character tokens ("5S" against "55" is weak evidence)
SUBSTRING = 0.5  # s for a 3+ character run inside the imprint written without separators
MISSED_TOKEN = 0.1  # cost per imprint token not read (only when something was read)
MIN_CONFIDENCE = 0.3  # read tokens below this are ignored

CONFUSIONS = str.maketrans(
    {
        "O": "0",
        "I": "1",
        "L": "1",
        "S": "5",
        "B": "8",
        "Z": "2",
        "G": "6",
    }
)
_SEPARATORS = re.compile(r"[^0-9A-Z]+")

ReadTokens = Iterable[object] | object  # ImprintRead, ImprintTokens, str, (str, float)


def normalize_token(text: str) -> str:
    """Upper case, letters and digits only, OCR confusions folded: ``"lci"`` -> ``"1C1"``."""
    return _SEPARATORS.sub("", text.upper()).translate(CONFUSIONS)


def normalize_imprint(imprint: str) -> tuple[str, ...]:
    """The distinct normalised tokens of a library imprint (``;`` or any separator), sorted.

    >>> normalize_imprint("MYLAN;6440;MYLAN;6440")
    ('6440', 'MY1AN')
    """
    tokens = {normalize_token(t) for t in _SEPARATORS.split(imprint.upper())}
    return tuple(sorted(t for t in tokens if t))


def _adjacent_runs(imprint: str) -> dict[str, int]:
    """Runs of 2+ adjacent tokens written together, with how many tokens each covers."""
    parts = [normalize_token(p) for p in _SEPARATORS.split(imprint.upper())]
    parts = [p for p in parts if p]
    n = len(parts)
    return {"".join(parts[i:k]): k - i for i in range(n) for k in range(i + 2, n + 1)}


def _variants(text: str) -> list[str]:
    return [t for t in (normalize_token(p) for p in _SEPARATORS.split(text.upper())) if t]


def read_groups(read: ReadTokens, min_confidence: float = MIN_CONFIDENCE) -> list[ReadGroup]:
    """The read as groups of alternative normalised tokens with a confidence.

    ``read`` may be an ``ImprintRead``, ``ImprintToken`` objects, strings (confidence 1) or
    (text, confidence) pairs; a text with separators gives one group per part. A token
    read both ways up with close confidences ("900"/"006") is one group of both readings:
    it counts as whichever explains a pill better. Duplicates keep their best confidence.
    """
    items = getattr(read, "tokens", read)
    best: dict[tuple[str, ...], float] = {}
    for item in items:  # type: ignore[attr-defined]
        alternative: tuple[str, float] | None = None
        if isinstance(item, str):
            text, conf = item, 1.0
        elif isinstance(item, tuple):
            text, conf = item[0], float(item[1])
        else:  # an ImprintToken
            text, conf, alternative = item.text, float(item.confidence), item.alternative
        if conf < min_confidence:
            continue
        others = _variants(alternative[0]) if alternative else []
        for part in _variants(text):
            key = tuple(dict.fromkeys([part, *others]))
            best[key] = max(best.get(key, 0.0), min(conf, 1.0))
    return [ReadGroup(k, c) for k, c in best.items()]


@dataclass(frozen=True)
class ReadGroup:
    """Alternative normalised readings of one place on the pill, and their confidence."""

    variants: tuple[str, ...]
    confidence: float


class ImprintIndex:
    """Normalised imprints of N library entries with lookup indexes (build once, reuse).

    Args:
        imprints: one imprint string per library entry, tokens separated by ``;`` (or any
            separator); an empty string for a pill without an imprint.
    """

    def __init__(self, imprints: Sequence[str]) -> None:
        self.size = len(imprints)
        self.tokens: list[tuple[str, ...]] = [normalize_imprint(s) for s in imprints]
        self.joined: list[str] = [normalize_token(s) for s in imprints]
        # runs of 2+ adjacent tokens in the library's order: "100;mg" read as "100mg"
        runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for j, imprint in enumerate(imprints):
            for run, count in _adjacent_runs(imprint).items():
                runs[run].append((j, count))
        self._runs = {
            run: (np.array([j for j, _ in jc]), np.array([c for _, c in jc], dtype=np.float64))
            for run, jc in runs.items()
        }
        self.n_tokens = np.array([len(t) for t in self.tokens], dtype=np.float64)
        self.no_imprint = self.n_tokens == 0
        exact: dict[str, list[int]] = defaultdict(list)
        for j, toks in enumerate(self.tokens):
            for tok in toks:
                exact[tok].append(j)
        self._exact = {tok: np.array(js, dtype=np.int64) for tok, js in exact.items()}
        deletes: dict[str, set[str]] = defaultdict(set)
        for tok in self._exact:
            if len(tok) >= 2:
                for d in deletions(tok):
                    deletes[d].add(tok)
        self._deletes = dict(deletes)
        grams: dict[str, set[int]] = defaultdict(set)
        for j, text in enumerate(self.joined):
            for i in range(len(text) - 2):
                grams[text[i : i + 3]].add(j)
        self._trigrams = {g: np.array(sorted(js), dtype=np.int64) for g, js in grams.items()}

    def __len__(self) -> int:
        return self.size

    def explain(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """How well each entry explains one normalised read token.

        Returns:
            ``s`` (N,) in [0, 1] and ``covers`` (N,): how many of the entry's imprint tokens
            the read token accounts for (2+ for adjacent tokens run together).
        """
        s = np.zeros(self.size, dtype=np.float64)
        covers = np.zeros(self.size, dtype=np.float64)
        if len(token) >= 3:
            hits = self._substring_hits(token)
            s[hits] = SUBSTRING
            covers[hits] = 1.0
        if len(token) >= 2:
            near = set(self._deletes.get(token, ()))  # library token = read + 1 char
            for d in deletions(token):
                if d in self._exact and len(d) >= 2:  # library token = read - 1 char
                    near.add(d)
                near.update(self._deletes.get(d, ()))  # one substitution or swap
            weight = ONE_EDIT if len(token) >= 3 else ONE_EDIT_SHORT
            for tok in near:
                if edit_distance(tok, token) == 1:
                    js = self._exact[tok]
                    s[js] = np.maximum(s[js], weight)
                    covers[js] = np.maximum(covers[js], 1.0)
        if token in self._runs:
            js, counts = self._runs[token]
            s[js], covers[js] = 1.0, counts
        if token in self._exact:
            js = self._exact[token]
            s[js], covers[js] = 1.0, np.maximum(covers[js], 1.0)
        return s, covers

    def _substring_hits(self, token: str) -> np.ndarray:
        grams = [token[i : i + 3] for i in range(len(token) - 2)]
        arrays = [self._trigrams.get(g) for g in grams]
        if any(a is None for a in arrays):
            return np.zeros(0, dtype=np.int64)
        cand = arrays[0]
        for a in arrays[1:]:
            cand = np.intersect1d(cand, a, assume_unique=True)  # type: ignore[arg-type]
        return np.array([j for j in cand if token in self.joined[j]], dtype=np.int64)

    def llr(self, read: ReadTokens, absent_bonus: float = 0.0) -> np.ndarray:
        """Log-likelihood ratio (N,) of each entry given the read tokens (0 = no evidence).

        Args:
            read: an ``ImprintRead``, ``ImprintToken`` objects, strings or (text,
                confidence) pairs (see :func:`read_groups`); below :data:`MIN_CONFIDENCE`
                dropped.
            absent_bonus: added to entries without an imprint when nothing was read.

        Returns:
            float64 array (N,); all zeros for an empty read (plus ``absent_bonus`` on entries
            without an imprint, when given).
        """
        groups = read_groups(read)
        out = np.zeros(self.size, dtype=np.float64)
        if not groups:
            if absent_bonus:
                out[self.no_imprint] = absent_bonus
            return out
        matched = np.zeros(self.size, dtype=np.float64)
        for group in groups:
            s, covers = self.explain(group.variants[0])
            for other in group.variants[1:]:
                s2, covers2 = self.explain(other)
                better = s2 > s
                s, covers = np.where(better, s2, s), np.where(better, covers2, covers)
            noise = EPSILON.get(min(len(v) for v in group.variants), EPSILON_LONG)
            lik = noise + s
            out += group.confidence * (np.log(lik) - np.log(lik.mean()))
            matched += covers
        missed = np.clip(self.n_tokens - matched, 0.0, None)
        return out - MISSED_TOKEN * missed
