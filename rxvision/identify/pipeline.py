"""Find the pill first: photo in, one answer per pill out.

A classifier trained on normalised crops (``augment.framing: crop``) never sees a photo's
background or framing: the pill finder (:class:`rxvision.locate.Segmenter`) returns a mask
and box per pill, :func:`rxvision.locate.normalised_crop` cuts each pill out onto the C3PI
studio grey at a fixed scale, and the :class:`~.identifier.Identifier` classifies the
crops in one batch.

A model artifact carries its pill finder in a ``segmenter/`` folder beside ``card.json``;
another one can be named explicitly. A crop model without a finder is an error, never a
silent fall back to whole photos. The finder runs on the classifier's backend: PyTorch
with ``--backend torch``, its checked ``model.onnx`` with ``--backend onnx`` (an export
carries both), so serving an export never imports torch.

Example:
    >>> pipeline = PillPipeline.load("runs/crop-model")
    >>> answer = pipeline.identify("photo.jpg")
    >>> [(p.box, p.identification.top.label) for p in answer.pills], answer.retake
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..imprint import DEFAULT_WEIGHT, ImprintRead
from ..locate import EvalTransform, PillRegion, Segmenter, normalised_crop
from ..locate.crop import DEFAULT_FILL
from ..locate.presence import NO_PILL, TOO_SMALL, check_photo
from ..locate.segmenter import SEGMENTER_DIR, most_pill_like_regions, pill_likeness
from ..locate.transform import load_reduced
from .answers import Answers, TypedFacts
from .fusion import fuse_log_probs, fuse_ood_scores
from .identifier import (
    MESSAGE_UNSURE,
    Identification,
    Identifier,
    IdentifierError,
    ImageInput,
    ask_for_retake,
    source_name,
)
from .imprint_evidence import DETAIL_SIDE, ImprintEvidence

DEFAULT_MAX_PILLS = 8
# A pill spanning fewer photo pixels than this holds too little detail to name: a crop
# enlarges it ~5x (a 36 px pill to the crop's 180 px). Ask to move closer instead.
MIN_PILL_PX = 36
# "The pill" of a photo that shows one (evaluation, each side of a front/back pair) is
# chosen among the finder's PICK_AMONG most pill-like regions by pill-likeness times the
# classifier's confidence in it (pick_the_pill): the pattern of a tablecloth or the grain of
# granite can look more like a pill to the finder than the pill does, but not to the
# classifier. Chosen on calibration renders (session 26, docs/locate.md): 0.580 -> 0.597
# top-1 at 512 px, 0.617 -> 0.627 at 1024 px, no wrong answer added; 3 or 4 gained nothing.
PICK_AMONG = 2
# Typed facts on a photo of two sure regions describe them both only when the photo makes
# it more likely than not that the two are one pill (SamePhotoRule's p(same pill)).
TYPED_SAME_PILL = 0.5


def model_framing(card: dict[str, Any]) -> str:
    """What a model was trained to see: ``"photo"`` or ``"crop"`` (its config's framing)."""
    return card.get("config", {}).get("augment", {}).get("framing", "photo")


def find_segmenter(model_path: Path | None, segmenter: str | Path | None = None) -> Path:
    """The pill finder to use: ``segmenter`` if given, else the artifact's own.

    Raises:
        IdentifierError: none given and the artifact has none.
    """
    if segmenter is not None:
        return Path(segmenter)
    own = model_path / SEGMENTER_DIR if model_path is not None else None
    if own is None or not own.is_dir():
        raise IdentifierError(
            f"this model classifies pill crops and needs a pill finder: {own or 'its folder'} "
            f"holds none; pass a segmenter (e.g. --segmenter models/rxvision-segmenter)")
    return own


@dataclass
class PillAnswer:
    """One pill found in a photo and what it is."""

    box: list[int]  # (x0, y0, x1, y1) in photo pixels
    finder_score: float  # the segmenter's mean foreground probability over the pill
    identification: Identification

    def to_dict(self) -> dict[str, Any]:
        return {"box": self.box, "finder_score": self.finder_score,
                **self.identification.to_dict()}


@dataclass
class PhotoAnswer:
    """Every pill of one photo, or why the photo must be retaken."""

    pills: list[PillAnswer]
    retake: str | None = None  # e.g. "no pill found in the photo"; None when pills were found
    timings_ms: dict[str, float] = field(default_factory=dict)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "retake": self.retake, "timings_ms": self.timings_ms,
                "pills": [p.to_dict() for p in self.pills]}


@dataclass
class FoundPill:
    """A pill the finder found: where (photo pixels), how sure, and its normalised crop
    (and, for the imprint reader, the same crop at the photo's own detail)."""

    box: list[int]
    finder_score: float
    crop: Image.Image = field(repr=False)
    detail: Image.Image | None = field(default=None, repr=False)
    # The longer side of the pill's box in the decoded photo: the detail the crop was made
    # from, which the size temperature reads (a large JPEG is decoded reduced).
    detail_px: float = 0.0
    likeness: float = 0.0  # how much it looks like "the pill" of the photo (pill_likeness)
    # Its place among the photo's PICK_AMONG most pill-like regions (0 first), else None:
    # the first two are the candidates for "the pill" and for weighing as one (same_photo).
    rank: int | None = None


@dataclass
class FoundPills:
    """A decoded photo, the photo check's verdict and the pills found in it."""

    image: Image.Image = field(repr=False)
    scale: float  # photo pixels per decoded pixel (a large JPEG is decoded reduced)
    retake: str | None  # why no answer can be given (photo check, or no pill found)
    pills: list[FoundPill] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)


class CropTransform:
    """Photo -> model inputs of its PICK_AMONG most pill-like regions: the transform a crop
    model is evaluated with (one labelled pill per photo; the evaluation picks one of them
    with :func:`pick_the_pill` once they are classified). A photo where nothing is found is
    letterboxed whole, so that it still counts (and most likely counts as wrong)."""

    def __init__(self, segmenter: Segmenter, preprocessing: dict[str, Any],
                 segmenter_path: Path | None = None):
        self.segmenter = segmenter
        self.segmenter_path = segmenter_path
        self.inner = EvalTransform(preprocessing, zoom="off")
        self.size = min(self.inner.size)

    def crops(self, img: Image.Image) -> list[tuple[Image.Image, PillRegion | None]]:
        """The normalised crops of the most pill-like regions, most first (the whole photo
        and None when nothing was found)."""
        regions = most_pill_like_regions(self.segmenter.find(img), PICK_AMONG)
        return [(normalised_crop(img, r, self.size), r) for r in regions] or [(img, None)]

    def crop(self, img: Image.Image) -> tuple[Image.Image, PillRegion | None]:
        """The crop of the most pill-like region by the finder alone."""
        return self.crops(img)[0]

    def __call__(self, img: Image.Image) -> tuple[Any, ...]:
        """For evaluation's data loader, per candidate region (PICK_AMONG rows; a photo
        with fewer repeats its first with likeness 0, so it is never picked): the crops as
        normalised torch tensors (K, 3, H, W), the pills' sizes (:func:`region_px`), the
        finder's scores (both 0.0 when nothing was found: what the size and finder gates
        read) and their pill-likeness (what :func:`pick_the_pill` weighs)."""
        import torch

        found = self.crops(img)
        rows = [(self.inner(c), region_px(r), float(r.score), pill_likeness(r))
                if r is not None else (self.inner(c), 0.0, 0.0, 1.0) for c, r in found]
        rows += [(*rows[0][:3], 0.0)] * (PICK_AMONG - len(rows))
        x, px, score, likeness = zip(*rows, strict=True)
        return (torch.stack(x), torch.tensor(px, dtype=torch.float64),
                torch.tensor(score, dtype=torch.float64),
                torch.tensor(likeness, dtype=torch.float64))


def pick_the_pill(likeness: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
    """Which candidate region is "the pill" of each photo: (..., K) pill-likeness and
    (..., K, C) calibrated log-probabilities -> (...,) the index of the region with the
    largest pill-likeness times the classifier's top probability (see PICK_AMONG)."""
    confidence = np.exp(np.max(np.asarray(log_probs, dtype=np.float64), axis=-1))
    return np.argmax(np.asarray(likeness, dtype=np.float64) * confidence, axis=-1)


class PillPipeline:
    """Segmenter + normalised crop + Identifier (see the module docstring)."""

    def __init__(self, identifier: Identifier, segmenter: Segmenter,
                 max_pills: int = DEFAULT_MAX_PILLS, min_pill_px: int = MIN_PILL_PX,
                 imprint: ImprintEvidence | None = None, min_finder_score: float = 0.0):
        if max_pills < 1:
            raise IdentifierError(f"max_pills must be >= 1, got {max_pills}")
        if min_pill_px < 1:
            raise IdentifierError(f"min_pill_px must be >= 1, got {min_pill_px}")
        if not 0.0 <= min_finder_score < 1.0:
            raise IdentifierError(f"min_finder_score must be in [0, 1), got {min_finder_score}")
        self.identifier = identifier
        self.segmenter = segmenter
        self.max_pills = max_pills
        self.min_pill_px = min_pill_px
        self.imprint = imprint  # None: the imprint is not read
        # The finder gate: a region whose finder score is below it may be no pill at all (a
        # patch of palm), so it is never answered, only "not sure" (the card's
        # identification.min_finder_score, benchmarks/fit_finder_gate.py; 0: no gate).
        self.min_finder_score = min_finder_score
        self.transform = EvalTransform(identifier.preprocessing, zoom="off")
        self.crop_size = min(self.transform.size)

    @classmethod
    def load(cls, model: str | Path | None = None, segmenter: str | Path | None = None,
             max_pills: int = DEFAULT_MAX_PILLS, imprint: bool = False,
             **identifier_options: Any) -> PillPipeline:
        """The Identifier of ``model`` (None: bundled) with its own or the given finder."""
        return cls.around(Identifier.load(model, **identifier_options), segmenter, max_pills,
                          imprint)

    @classmethod
    def around(cls, identifier: Identifier, segmenter: str | Path | None = None,
               max_pills: int = DEFAULT_MAX_PILLS, imprint: bool = False,
               finder_threads: int | None = None) -> PillPipeline:
        """A pipeline around a loaded Identifier, with its artifact's or the given finder;
        ``imprint``: read each pill's imprint and fuse it (needs the model's drug library);
        ``finder_threads``: the ONNX finder's intra-op threads (the service runs one per
        decoding thread).
        """
        settings = identifier.card.get("identification") or {}
        weight = settings.get("imprint_weight", DEFAULT_WEIGHT)
        gate = card_finder_gate(identifier.card, identifier.path)
        evidence = (ImprintEvidence.for_answers(identifier.labels, identifier.answers,
                                                weight=float(weight)) if imprint else None)
        finder = Segmenter.load(find_segmenter(identifier.path, segmenter),
                                backend=segmenter_backend(identifier.backend),
                                threads=finder_threads)
        return cls(identifier, finder, max_pills, imprint=evidence, min_finder_score=gate)

    def doubts(self, pill: FoundPill) -> bool:
        """Whether the finder is not sure the region is a pill (under the finder gate)."""
        return pill.finder_score < self.min_finder_score

    def gate(self, result: Identification, *pills: FoundPill) -> None:
        """Hold back an answer about a region the finder is not sure is a pill."""
        if not result.abstain and any(self.doubts(p) for p in pills):
            result.abstain, result.message = True, MESSAGE_UNSURE

    def decode(self, image: ImageInput, name: str | None = None) -> tuple[Image.Image, float]:
        """The photo, a large JPEG decoded at a reduced scale (the finder works at 320 px
        and a crop needs ~180 px of pill); and photo pixels per decoded pixel."""
        if not isinstance(image, str | Path | bytes):
            return self.identifier.decode(image, name), 1.0
        img, full = load_reduced(image, self.identifier.max_pixels, name)
        return img, full[0] / img.width

    def find(self, image: ImageInput, name: str | None = None, max_pills: int | None = None
             ) -> FoundPills:
        """Decode, check the photo, find its pills and crop each (no classifier yet)."""
        t0 = time.perf_counter()
        img, scale = self.decode(image, name)
        t1 = time.perf_counter()
        found = FoundPills(img, scale, check_photo(img, scale).retake)
        found.timings_ms["decode"] = ms(t1 - t0)
        if found.retake is not None:
            return found
        regions = self.segmenter.find(img)
        limit = max_pills or self.max_pills
        # One pill asked for (a front/back pair): the candidates evaluation weighs, most
        # pill-like first; the caller picks one once they are classified (the_pill).
        candidates = most_pill_like_regions(regions, PICK_AMONG)
        rank = {id(r): k for k, r in enumerate(candidates)}
        regions = candidates if limit == 1 else regions[:limit]
        found.pills = [FoundPill([round(v * scale) for v in r.box], round(r.score, 4),
                                 normalised_crop(img, r, self.crop_size),
                                 self._detail(img, r), region_px(r), pill_likeness(r),
                                 rank.get(id(r)))
                       for r in regions]
        if not found.pills:
            found.retake = NO_PILL
        found.timings_ms["find"] = ms(time.perf_counter() - t1)
        return found

    def _detail(self, img: Image.Image, region: PillRegion) -> Image.Image | None:
        """The pill at its own pixels (within DETAIL_SIDE) for the imprint reader."""
        if self.imprint is None:
            return None
        x0, y0, x1, y1 = region.box
        lo, hi = DETAIL_SIDE
        side = min(hi, max(lo, round(max(x1 - x0, y1 - y0) / DEFAULT_FILL)))
        return normalised_crop(img, region, side)

    def read_imprints(self, pills: list[FoundPill]) -> list[ImprintRead | None]:
        """Each pill's imprint read (None per pill when the imprint is not read)."""
        if self.imprint is None:
            return [None] * len(pills)
        return [self.imprint.read(p.detail or p.crop) for p in pills]

    def inputs(self, pills: list[FoundPill]) -> np.ndarray:
        """The classifier's normalised input (n, 3, H, W) for the pills' crops."""
        return self.transform.normalize(np.stack([self.transform.array(p.crop)
                                                  for p in pills]))

    def classify(self, pills: list[FoundPill]) -> tuple[np.ndarray, np.ndarray]:
        """The pills' calibrated log-probabilities (n, C), each at its own size, and their
        open-set scores (n,): one forward pass over their crops."""
        logits, emb = self.identifier.forward(self.inputs(pills))
        return (self.identifier.log_probs(logits, pill_sizes(pills)),
                self.identifier.ood(logits, emb))

    def decide(self, log_probs: Any, ood_score: float, reads: list[ImprintRead | None],
               topk: int, typed: TypedFacts | None = None, *,
               pills: Sequence[FoundPill], alone: Any = None) -> Identification:
        """:meth:`Identifier.decide` on the photo's log-probabilities fused with the
        pill's imprint reads (one, or front and back). An answer the read does not tell
        apart from another pill (``imprint["also_fits"]``) is "not sure" unless the photo
        alone clears the abstention threshold or the user typed the imprint; so is an
        answer about ``pills`` (the regions the row was cut from) the finder doubts
        (:meth:`gate`; ``()`` leaves the gate to the caller); so is an answer weighed with
        the photo's other pill that this pill alone (``alone``: its own log-probabilities)
        is not sure of (:func:`sure_on_its_own`)."""
        info = None
        typed_imprint = typed is not None and typed.imprint is not None  # the user read it
        if self.imprint is not None:
            # typed colour/shape re-rank after the imprint: check the answer they give
            rerank = (partial(typed_ranking, self.identifier.answers, typed)
                      if typed is not None and not typed_imprint else None)
            log_probs, info = self.imprint.apply(log_probs, [r for r in reads if r], rerank)
        result = self.identifier.decide(log_probs, ood_score, topk, typed)
        result.imprint = info
        if (info is not None and self.imprint is not None and not result.abstain
                and not typed_imprint
                and self.imprint.holds_back(info, self.identifier.abstain_threshold)):
            result.abstain, result.message = True, MESSAGE_UNSURE  # see ImprintEvidence
        self.gate(result, *pills)
        if (alone is not None and not result.abstain and typed is None
                and not (info is not None and info.get("changed"))
                and not sure_on_its_own(log_probs, alone, self.identifier.abstain_threshold)):
            result.abstain, result.message = True, MESSAGE_UNSURE
        return result

    def explain_crop(self, crop: Image.Image) -> dict[str, Image.Image]:
        """Attention, Grad-CAM and occlusion overlays on one pill's normalised crop (what
        the classifier saw; torch backend). See :mod:`.explain`."""
        from .explain import explain_image

        return explain_image(self.identifier._torch_model("explanations"), self.transform,
                             crop)

    @staticmethod
    def the_pill(pills: list[FoundPill], log_probs: np.ndarray) -> int:
        """Which of the candidates ``find(max_pills=1)`` returned is "the pill", given their
        calibrated log-probabilities (n, C): :func:`pick_the_pill`, as evaluation picks."""
        return int(pick_the_pill(np.array([p.likeness for p in pills]), log_probs))

    @classmethod
    def the_pill_of_each(cls, views: list[list[FoundPill]], log_probs: np.ndarray) -> list[int]:
        """For photos whose candidates were classified together, in order (``log_probs``
        (sum of their counts, C)): the row of each photo's "the pill" (:meth:`the_pill`)."""
        rows, start = [], 0
        for pills in views:
            rows.append(start + cls.the_pill(pills, log_probs[start:start + len(pills)]))
            start += len(pills)
        return rows

    def same_photo_pair(self, pills: list[FoundPill]) -> tuple[int, int] | None:
        """The photo's two most pill-like regions (indices into ``pills``) when the card
        has a same-photo rule and both are pills the pipeline would answer about (finder
        gate, not too small); else None."""
        ranked = {p.rank: i for i, p in enumerate(pills) if p.rank is not None}
        if self.identifier.same_photo is None or 0 not in ranked or 1 not in ranked:
            return None
        pair = ranked[0], ranked[1]
        if any(self.doubts(pills[i]) or self.too_small(pills[i]) for i in pair):
            return None
        return pair

    def weigh_same_photo(self, pills: list[FoundPill], log_probs: np.ndarray
                         ) -> tuple[np.ndarray, list[dict[str, Any] | None], list[Any]]:
        """Each pill's log-probabilities (n, C), the photo's pair of sure regions
        (:meth:`same_photo_pair`) each weighed with the other by how likely they are the
        same pill (:class:`.fusion.SamePhotoRule`); per pill what it was weighed with
        (``{"with_box", "same_pill_probability"}``) or None; and per weighed pill its own
        log-probabilities (else None), for :meth:`decide`'s ``alone``."""
        notes: list[dict[str, Any] | None] = [None] * len(pills)
        alone: list[Any] = [None] * len(pills)
        pair = self.same_photo_pair(pills)
        if pair is None:
            return log_probs, notes, alone
        rule, (i, j) = self.identifier.same_photo, pair
        out = np.array(log_probs, copy=True)
        out[i], w = rule.fuse(log_probs[i], log_probs[j])
        out[j], _ = rule.fuse(log_probs[j], log_probs[i])
        for a, b in ((i, j), (j, i)):
            notes[a] = {"with_box": pills[b].box, "same_pill_probability": round(float(w), 4)}
            alone[a] = log_probs[a]
        return out, notes, alone

    def typed_candidates(self, pills: list[FoundPill]) -> list[int]:
        """The pills typed facts may describe, of several regions found in one photo: the
        only one the pipeline would answer about (finder score at the gate, not too small),
        or the photo's two such regions when they may be one pill seen twice (the card's
        same-photo rule; :meth:`typed_choice` decides once they are classified). Regions it
        doubts are never answered, so they do not make the facts ambiguous.

        Raises:
            IdentifierError: more pills pass (or none does): the facts fit none alone.
        """
        sure = [i for i, p in enumerate(pills) if not self.doubts(p) and not self.too_small(p)]
        pair = self.same_photo_pair(pills)
        if len(sure) == 1 or (pair is not None and set(sure) == set(pair)):
            return sure
        raise IdentifierError(
            f"the typed facts describe one pill, but the photo shows {len(pills)} "
            f"regions, {len(sure)} of them clearly pills: photograph that pill alone")

    def typed_choice(self, pills: list[FoundPill], log_probs: np.ndarray
                     ) -> tuple[int, np.ndarray, dict[str, Any] | None]:
        """Of a same-photo pair :meth:`typed_candidates` kept, classified (``log_probs``
        (2, C)): the pill the facts are about, its log-probabilities and what it was
        weighed with. A pair is one pill only when the photo says so (p(same pill) >=
        TYPED_SAME_PILL); the answer is then about "the pill" of the two
        (:meth:`the_pill`), weighed with the other.

        Raises:
            IdentifierError: two regions that do not look like one pill.
        """
        weighed, notes, _ = self.weigh_same_photo(pills, log_probs)
        same = notes[0]["same_pill_probability"] if notes[0] is not None else 0.0
        if len(pills) != 2 or same < TYPED_SAME_PILL:
            raise IdentifierError(
                f"the typed facts describe one pill, but the photo shows two pills that do "
                f"not look like the same one (p = {same:.2f}): photograph that pill alone")
        k = self.the_pill(pills, log_probs)
        return k, weighed[k], notes[k]

    def weigh(self, pills: list[FoundPill], log_probs: np.ndarray,
              typed: TypedFacts | None = None
              ) -> tuple[list[int], np.ndarray, list[dict[str, Any] | None], list[Any]]:
        """A photo's classified pills (``log_probs`` (n, C)) as they are answered: without
        typed facts (or with one pill) every pill, the same-photo pair weighed
        (:meth:`weigh_same_photo`); with typed facts on two kept pills
        (:meth:`typed_candidates`) the one they describe (:meth:`typed_choice`). Returns
        the indices kept and, per kept pill, its log-probabilities, what it was weighed
        with and its own log-probabilities for :meth:`decide`'s ``alone``.

        Raises:
            IdentifierError: typed facts on two pills that do not look like one.
        """
        if typed is None or len(pills) < 2:
            return list(range(len(pills))), *self.weigh_same_photo(pills, log_probs)
        k, lp_k, note = self.typed_choice(pills, log_probs)
        return [k], lp_k[None], [note], [None]

    def too_small(self, pill: FoundPill) -> bool:
        """Whether a pill spans too few photo pixels to be named (ask to move closer)."""
        x0, y0, x1, y1 = pill.box
        return max(x1 - x0, y1 - y0) < self.min_pill_px

    def identify(self, image: ImageInput, topk: int = 5, name: str | None = None,
                 typed: TypedFacts | None = None) -> PhotoAnswer:
        """One answer per pill in the photo; ``retake`` says why when none can be given.

        The photo check (:func:`rxvision.locate.presence.check_photo`) runs first: a dark,
        overexposed, blurred or empty photo gets a retake, not a guess. A pill spanning
        fewer than ``min_pill_px`` photo pixels gets its own retake ("pill too small").
        The photo's two most pill-like sure regions are each weighed with the other by how
        likely they are one pill seen twice (:meth:`weigh_same_photo`). ``typed`` facts
        describe one pill: with several pills found they are an error, unless the only two
        sure ones look like the same pill (:meth:`typed_candidates`, :meth:`typed_choice`).
        """
        found = self.find(image, name)
        source = name or source_name(image)
        if found.retake is not None:
            return PhotoAnswer([], found.retake, found.timings_ms, source)
        if typed is not None and len(found.pills) > 1:
            found.pills = [found.pills[i] for i in self.typed_candidates(found.pills)]
        t0 = time.perf_counter()
        lp, scores = self.classify(found.pills)
        keep, lp, same, alone = self.weigh(found.pills, lp, typed)
        found.pills, scores = [found.pills[i] for i in keep], scores[keep]
        t1 = time.perf_counter()
        reads = self.read_imprints(found.pills)
        t2 = time.perf_counter()
        results = [self.decide(lp[i], float(scores[i]), [reads[i]], topk, typed,
                               pills=found.pills[i:i + 1], alone=alone[i])
                   for i in range(len(found.pills))]
        for result, note in zip(results, same, strict=True):
            result.same_photo = note
        found.timings_ms["classify"] = ms(t1 - t0 + time.perf_counter() - t2)
        if self.imprint is not None:
            found.timings_ms["read_imprint"] = ms(t2 - t1)
        pills = []
        for pill, result in zip(found.pills, results, strict=True):
            result.source = source
            if self.too_small(pill):
                ask_for_retake(result, [("image", TOO_SMALL)])
            pills.append(PillAnswer(pill.box, pill.finder_score, result))
        return PhotoAnswer(pills, None, found.timings_ms, source)

    def identify_pair(self, front: ImageInput, back: ImageInput, topk: int = 5,
                      typed: TypedFacts | None = None) -> PillAnswer | PhotoAnswer:
        """Front and back photos of one pill: "the pill" of each (:meth:`the_pill`, as
        evaluation takes it), fused into one ranking (:mod:`.fusion`); the answer's box is
        the front's. A photo that fails its check or shows no pill makes the whole answer a
        retake ("front: ...")."""
        t0 = time.perf_counter()
        views = []
        for view, image in (("front", front), ("back", back)):
            found = self.find(image, max_pills=1)
            if found.retake is not None:
                source = f"{source_name(front)} + {source_name(back)}"
                return PhotoAnswer([], f"{view}: {found.retake}", {}, source)
            views.append(found.pills)
        candidates = views[0] + views[1]
        lp_all, scores_all = self.classify(candidates)
        rows = self.the_pill_of_each(views, lp_all)
        picked = [candidates[i] for i in rows]
        lp, scores = lp_all[rows], scores_all[rows]
        result = self.decide(fuse_log_probs(lp[0], lp[1]),
                             fuse_ood_scores(float(scores[0]), float(scores[1])),
                             self.read_imprints(picked), topk, typed, pills=picked)
        result.source = f"{source_name(front)} + {source_name(back)}"
        result.timings_ms = {"total": ms(time.perf_counter() - t0)}
        return PillAnswer(picked[0].box, picked[0].finder_score, result)


def sure_on_its_own(weighed: Any, own: Any, threshold: float) -> bool | np.ndarray:
    """Whether a region weighed with the photo's other region gives the weighed answer (the
    top of ``weighed``, (C,) or (B, C)) at least ``threshold`` on its own (``own``: its own
    log-probabilities). The other region helps rank the candidates but never makes an
    answer confident: two regions of one photo tend to make the same mistake (a sibling
    strength named by both sides), which their product at a temperature fitted for NLL
    over-states, and two different look-alike pills must not lend each other their names
    (docs/identification.md, "Two pills of one photo")."""
    return own_probability_of_answer(weighed, own) >= threshold


def own_probability_of_answer(weighed: Any, own: Any) -> np.ndarray:
    """The region's own probability (``own``: its log-probabilities) of the weighed
    answer (the top of ``weighed``), per leading index of the (..., C) rows."""
    weighed, own = np.asarray(weighed), np.asarray(own)
    top = np.argmax(weighed, axis=-1)[..., None]
    return np.exp(np.take_along_axis(own, top, axis=-1)[..., 0])


def typed_ranking(answers: Answers, typed: TypedFacts, log_probs: np.ndarray) -> np.ndarray:
    """The log-probabilities (C,) re-ranked by the facts the user typed."""
    return answers.fuse(log_probs, typed)[0]


def region_px(region: PillRegion) -> float:
    """A found pill's size: the longer side of its box, in the pixels it was found in."""
    x0, y0, x1, y1 = region.box
    return float(max(x1 - x0, y1 - y0))


def size_temperature_range(preprocessing: dict[str, Any]) -> tuple[float, float]:
    """The pill sizes a size temperature varies over: from the smallest pill the pipeline
    names (:data:`MIN_PILL_PX`) to the crop's own pill size (``fill`` x the input's side),
    above which a crop holds no more detail."""
    return float(MIN_PILL_PX), DEFAULT_FILL * min(int(s) for s in preprocessing["input_size"])


def pill_sizes(pills: list[FoundPill]) -> np.ndarray:
    """Each pill's :attr:`FoundPill.detail_px` (N,), for :meth:`Identifier.log_probs`."""
    return np.asarray([p.detail_px for p in pills], dtype=np.float64)


def segmenter_backend(backend: str) -> str:
    """The finder's backend for a classifier backend: ONNX beside ONNX, else PyTorch."""
    return "onnx" if backend == "onnx" else "torch"


def card_finder_gate(card: dict[str, Any], path: Path | str | None = None) -> float:
    """The card's finder gate (``identification.min_finder_score``; 0.0, no gate, for a
    card fitted before session 24): a region the finder scores lower is never answered."""
    gate = (card.get("identification") or {}).get("min_finder_score", 0.0)
    if not isinstance(gate, int | float) or isinstance(gate, bool):
        raise IdentifierError(f"{path or 'the model'}/card.json: identification."
                              f"min_finder_score must be a number, got {gate!r}")
    return float(gate)


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def crop_transform_for(card: dict[str, Any], model_path: Path | None,
                       segmenter: str | Path | None = None) -> CropTransform | None:
    """The photo transform a model must be evaluated or calibrated with: a
    :class:`CropTransform` (its own or the given finder) for a crop model, None (the
    card's own :class:`EvalTransform`) for a whole-photo model."""
    if model_framing(card) != "crop":
        return None
    path = find_segmenter(model_path, segmenter)
    return CropTransform(Segmenter.load(path), card["preprocessing"], path)
