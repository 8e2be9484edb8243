"""Answers that name the drug: facts, look-alikes, identical pills, and what the user typed.

The Identifier ranks labels (NDC codes); this layer, right above its decision step, turns
each candidate into what a person can use, from the drug library shipped inside the model
artifact (``library.sqlite`` beside ``card.json``, see docs/library.md):

- **facts**: name, strength, form, labeler, imprint, colour, shape, size, score, NDC,
  RxCUI, DEA schedule (``is_controlled``) and a DailyMed link;
- **look-alikes**: the ``LOOKALIKES_SHOWN`` nearest other library pills by the model's class
  rows (stored in the library for these weights, :mod:`rxvision.library.appearance`),
  each with what tells it apart (:func:`~rxvision.library.lookalike.lookalike_note`);
- **the same pill**: the other labels of its identical-pill group ("the same pill is sold
  as: ...").

Without a library the candidates keep the card's ``label_metadata`` and
``Identification.facts_source`` says ``"card"``.

**Photo plus typed facts** (:meth:`Answers.fuse`): with what the user read off the pill,

    log p(label | photo, typed) = a * log p(label | photo) + log L(typed | label) - log Z

with ``a`` the photo's weight (1 unless the card fitted a lower ``typed_photo_power`` for a
typed imprint, see the Identifier), ``L`` from :mod:`rxvision.library.evidence` (a floor
per field: a mismatch is strong evidence, never proof) and ``Z`` renormalising over every
label. ``L`` is computed exactly for the photo's ``SHORTLIST`` most probable labels and for
the library search's candidates for the typed facts (the about 100 references its imprint
index finds); every other library label gets the floor (nothing typed matched it, as far as
the imprint index can tell) and a label without facts a neutral value. When the best fused
candidate's ``L`` is below ``CONTRADICTION`` (for instance an imprint that matches none of
the likely pills), the typed facts contradict the photo: the answer is "not sure", and the
library's best hits for the typed facts alone are offered.

Example:
    >>> answers = Answers.for_model(labels, card, Path("models/rxvision-c3pi-4k"))
    >>> fused, typed = answers.fuse(log_probs, TypedFacts.parse(imprint="M 411"))
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..library.appearance import LOOKALIKES_SHOWN
from ..library.database import LIBRARY_NAME, Library, Reference, open_library
from ..library.errors import LibraryError
from ..library.evidence import (
    LabelEvidence,
    floor_likelihood,
    label_evidence,
    neutral_likelihood,
)
from ..library.lookalike import lookalike_note, same_pill_note
from ..library.query import Query, parse_query
from ..library.search import candidate_labels, search
from ..logmath import as_array, log_softmax, top_k

if TYPE_CHECKING:
    from .identifier import Identification

SHORTLIST = 50  # photo candidates whose typed-fact likelihood is computed exactly
CONTRADICTION = 0.1  # best fused candidate's L below this: the typed facts contradict
OFFERED_HITS = 5  # library hits offered when the typed facts contradict the photo
# ... chosen among the search's first OFFERED_POOL, ordered by text score plus the card's
# identification.offered_photo_weight times the photo's log-probability (floored at
# OFFERED_PHOTO_FLOOR, so pills the photo rules out all weigh alike); equal keys in the
# photo's order. Weight 0 (a card without it): text order, the photo breaking ties.
OFFERED_POOL = 50
OFFERED_PHOTO_FLOOR = -50.0
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class TypedFacts:
    """What the user read off the pill. Build it with :meth:`parse` (checked)."""

    imprint: str | None = None
    color: str | None = None
    shape: str | None = None

    @classmethod
    def parse(
        cls, imprint: str | None = None, color: str | None = None, shape: str | None = None
    ) -> TypedFacts | None:
        """Checked typed facts, or None when nothing was typed.

        Raises:
            QueryError: an imprint without letters or digits or over 64 characters, an
                unknown colour or shape word (the message lists the known ones).
        """
        clean = [v.strip() if v and v.strip() else None for v in (imprint, color, shape)]
        if not any(clean):
            return None
        facts = cls(*clean)
        facts.query()  # raises QueryError on a malformed field
        return facts

    def query(self) -> Query:
        return parse_query(self.imprint, self.color, self.shape)

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}

    def describe(self) -> str:
        parts = [f"imprint '{self.imprint}'" if self.imprint else "", self.color or "",
                 self.shape or ""]
        return ", ".join(p for p in parts if p)


@dataclass
class TypedFusion:
    """What :meth:`Answers.fuse` did, for :meth:`Answers.attach` to report."""

    typed: TypedFacts
    query: Query
    photo_log_probs: np.ndarray  # (C,) calibrated, before the typed facts
    log_likelihood: np.ndarray  # (C,) log L(typed | label)
    evidence: dict[str, LabelEvidence]  # the labels scored exactly
    photo_power: float = 1.0  # the photo's log-probabilities were multiplied by it


class Answers:
    """Facts, look-alikes, identical pills and typed-fact fusion for one model's labels."""

    def __init__(self, labels: list[str], library: Library | None, notes: list[str],
                 lookalikes: bool = True):
        self.labels = labels
        self.library = library
        self.notes = notes  # why facts or look-alikes are missing, for the CLI to show
        self.show_lookalikes = lookalikes and library is not None
        self._index = {label: i for i, label in enumerate(labels)}
        self._lock = threading.Lock()
        self._blocks: dict[str, dict[str, Any]] = {}
        self._in_library: np.ndarray | None = None
        self.offered_photo_weight = 0.0  # the Identifier sets the card's fitted weight
        if library is not None:
            known = set(library.labels())
            self._in_library = np.array([label in known for label in labels], dtype=bool)

    @property
    def source(self) -> str:
        """``"library"`` when answers carry the library's facts, else ``"card"``."""
        return "library" if self.library is not None else "card"

    @classmethod
    def for_model(cls, labels: list[str], card: dict[str, Any], path: Path | None,
                  library: str | Path | bool | None = None) -> Answers:
        """Open the model's library: ``library`` None -> ``path/library.sqlite`` when it
        exists; False -> none; a path -> that library file (or folder holding one).

        Raises:
            LibraryError: a library given or found that is missing, corrupt or not one.
        """
        if library is False:
            return cls(labels, None, ["drug library turned off: answers show the model "
                                      "card's label metadata"])
        if library is None or library is True:
            inside = path / LIBRARY_NAME if path is not None else None
            if inside is None or not inside.is_file():
                return cls(labels, None, [
                    f"this model has no drug library ({LIBRARY_NAME} beside card.json): "
                    "answers show the model card's label metadata; build one with "
                    "`rxvision library build MANIFEST --for-model MODEL`"])
            library = inside
        lib = open_library(library)
        notes, weights = [], _weights_sha(card)
        lookalikes = lib.lookalikes_fingerprint is not None
        if not lookalikes:
            notes.append(f"{lib.path} holds no look-alike table for this model: rebuild it "
                         "with `rxvision library build MANIFEST --for-model MODEL`")
        elif weights is not None and lib.lookalikes_fingerprint != weights:
            lookalikes = False
            notes.append(f"the look-alikes in {lib.path} were computed for other weights "
                         f"({lib.lookalikes_fingerprint[:12]}, this model "
                         f"{weights[:12]}): not shown; rebuild with `rxvision library build "
                         "MANIFEST --for-model MODEL`")
        missing = len(set(labels) - set(lib.labels()))
        if missing:
            notes.append(f"{missing} of the model's {len(labels)} labels have no facts in "
                         f"{lib.path}: those answers show the card's label metadata")
        return cls(labels, lib, notes, lookalikes)

    # --- photo + typed facts -------------------------------------------------------------
    def fuse(self, log_probs: Any, typed: TypedFacts, photo_power: float = 1.0
             ) -> tuple[np.ndarray, TypedFusion]:
        """Calibrated log-probabilities (C,) and typed facts -> fused log-probabilities (C,).

        ``photo_power`` (0 < power <= 1) weighs the photo against what was typed: its
        log-probabilities are multiplied by it before the typed facts' are added (a tempered
        product of experts). Below 1 a typed imprint can overrule a photo that is
        confidently wrong; the card fits it with the answer threshold it goes with
        (:class:`rxvision.identify.identifier.Identifier`, ``typed_photo_power``).

        Raises:
            LibraryError: the model has no library to read the labels' facts from.
            ValueError: ``photo_power`` is outside (0, 1].
        """
        if not 0.0 < photo_power <= 1.0:
            raise ValueError(f"photo_power must be in (0, 1], got {photo_power}")
        lib = self._require_library()
        assert self._in_library is not None
        query = typed.query()
        log_probs = as_array(log_probs)
        lp = log_probs.astype(np.float64)
        shortlist = top_k(lp, SHORTLIST)[1].tolist()
        # The pills the imprint index finds for the typed facts, however unlikely the photo
        # makes them (the search's candidate step, ~100 references).
        found = [self._index[lab] for lab in candidate_labels(lib, query) if lab in self._index]
        scored = list(dict.fromkeys(shortlist + found))
        evidence = label_evidence(lib, query, [self.labels[i] for i in scored])
        log_l = np.where(self._in_library, math.log(floor_likelihood(query)),
                         math.log(neutral_likelihood(query)))
        exact = [(i, evidence[self.labels[i]].likelihood) for i in scored
                 if self.labels[i] in evidence]
        if exact:
            at, values = zip(*exact, strict=True)
            log_l[list(at)] = np.log(np.asarray(values, dtype=np.float64))
        fused = log_softmax(photo_power * lp + log_l).astype(log_probs.dtype)
        return fused, TypedFusion(typed, query, log_probs, log_l, evidence, photo_power)

    def _require_library(self) -> Library:
        if self.library is None:
            raise LibraryError("typed facts (imprint, colour, shape) need the model's drug "
                             f"library ({LIBRARY_NAME} beside card.json); build one with "
                             "`rxvision library build MANIFEST --for-model MODEL`")
        return self.library

    # --- attaching facts -----------------------------------------------------------------
    def attach(self, result: Identification, fusion: TypedFusion | None = None) -> bool:
        """Add facts, look-alikes and identical pills to each candidate of ``result``.

        Returns:
            True when typed facts were given and contradict every likely candidate (the
            caller answers "not sure").
        """
        result.facts_source = self.source
        if self.library is not None:
            blocks = self._blocks_for([c.label for c in result.candidates])
            for cand in result.candidates:
                block = blocks.get(cand.label)
                if block is not None:
                    cand.facts = block["facts"]
                    cand.lookalikes = block["lookalikes"]
                    cand.same_pill = block["same_pill"]
                    cand.same_pill_note = block["same_pill_note"]
        if fusion is None:
            return False
        for cand in result.candidates:
            i = self._index[cand.label]
            ev = fusion.evidence.get(cand.label)
            cand.typed_match = {
                "likelihood": round(math.exp(float(fusion.log_likelihood[i])), 6),
                "photo_probability": round(math.exp(float(fusion.photo_log_probs[i])), 6),
                "explanation": ev.explanation(fusion.query) if ev else [
                    "no drug facts for this pill: typed facts neither for nor against it"
                    if cand.facts is None else "matches none of the typed facts"],
            }
        top = result.candidates[0]
        top_l = top.typed_match["likelihood"] if top.typed_match else 1.0
        contradicted = top.facts is not None and top_l < CONTRADICTION
        note = (f"the typed facts ({fusion.typed.describe()}) match none of the likely "
                "pills; library pills that match them are listed under library_hits"
                if contradicted else
                f"photo and typed facts ({fusion.typed.describe()}) combined")
        result.typed = {"fields": fusion.typed.to_dict(), "contradicted": contradicted,
                        "top_likelihood": top_l, "threshold": CONTRADICTION,
                        "photo_power": fusion.photo_power, "note": note}
        result.library_hits = self.offered_hits(fusion) if contradicted else []
        return contradicted

    def offered_hits(self, fusion: TypedFusion) -> list[dict[str, Any]]:
        """The library pills to offer when typed facts contradict the photo: the search's
        best text matches, each weighed by the photo (``offered_photo_weight`` per unit of
        log-probability, fitted on calibration photos by
        ``benchmarks/fit_offered_order.py``), and pills that come out equal (several
        imprints one character from a typo) in the order the photo prefers them, not by
        label."""
        typed = fusion.typed
        hits = search(self._require_library(), imprint=typed.imprint, color=typed.color,
                      shape=typed.shape, limit=OFFERED_POOL)
        photo = fusion.photo_log_probs

        def photo_lp(label: str) -> float:
            i = self._index.get(label)
            return float(photo[i]) if i is not None else -math.inf

        weight = self.offered_photo_weight

        def order(hit: Any) -> tuple[float, float]:
            lp = photo_lp(hit.facts.label)
            return -(hit.score + weight * max(lp, OFFERED_PHOTO_FLOOR)), -lp

        hits.sort(key=order)  # stable: search order last
        return [{**_hit_dict(h), "rank": k} for k, h in enumerate(hits[:OFFERED_HITS], 1)]

    def _blocks_for(self, labels: list[str]) -> dict[str, dict[str, Any]]:
        """Per label: facts, look-alikes and identical pills (computed once, then cached)."""
        with self._lock:
            have = {lab: self._blocks[lab] for lab in labels if lab in self._blocks}
        todo = [lab for lab in labels if lab not in have]
        if todo:
            made = self._make_blocks(todo)
            with self._lock:
                if len(self._blocks) > _CACHE_SIZE:
                    self._blocks.clear()
                self._blocks.update(made)
            have.update(made)
        return have

    def _make_blocks(self, labels: list[str]) -> dict[str, dict[str, Any]]:
        lib = self.library
        assert lib is not None
        refs = lib.references_for(labels)
        near = (lib.lookalikes(list(refs), LOOKALIKES_SHOWN) if self.show_lookalikes else {})
        others = lib.references_for([o for pairs in near.values() for o, _ in pairs])
        group_ids = sorted({r.group_id for rs in refs.values() for r in rs
                            if r.group_id is not None})
        members = lib.group_members(group_ids)
        out = {}
        for label, rs in refs.items():
            facts = rs[0].facts
            groups = {r.group_id for r in rs if r.group_id is not None}
            twins = _distinct([m for m in members
                               if m.group_id in groups and m.facts.label != label])
            out[label] = {
                "facts": facts.to_dict(),
                "same_pill": [_short(m.facts) for m in twins],
                "same_pill_note": same_pill_note(facts, [m.facts for m in twins]),
                "lookalikes": [
                    {**_short(others[o][0].facts), "similarity": round(sim, 4),
                     "note": lookalike_note(facts, others[o][0].facts)}
                    for o, sim in near.get(label, []) if o in others
                ],
            }
        return out

    def close(self) -> None:
        if self.library is not None:
            self.library.close()


def _weights_sha(card: dict[str, Any]) -> str | None:
    """SHA-256 of the weights the model's class rows come from (exports: their source's)."""
    weights = card.get("weights") or {}
    source = (card.get("export") or {}).get("source") or {}
    return weights.get("sha256") or source.get("weights_sha256")


def _distinct(refs: list[Reference]) -> list[Reference]:
    """One reference per label, in order."""
    seen: set[str] = set()
    out = []
    for r in refs:
        if r.facts.label not in seen:
            seen.add(r.facts.label)
            out.append(r)
    return out


def _short(facts: Any) -> dict[str, Any]:
    """The few facts that name another pill in a list."""
    return {"label": facts.label, "ndc": facts.ndc, "drug": facts.drug,
            "labeler": facts.labeler, "description": facts.describe(),
            "is_controlled": facts.is_controlled, "dea_schedule": facts.dea_schedule}


def _hit_dict(hit: Any) -> dict[str, Any]:
    """A search hit for an answer (no server file paths)."""
    return {"rank": hit.rank, "score": round(hit.score, 4), "label": hit.facts.label,
            "explanation": list(hit.explanation), "facts": hit.facts.to_dict()}
