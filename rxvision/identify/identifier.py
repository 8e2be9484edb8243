"""The Identifier: photo(s) of a pill in, ranked candidates with calibrated confidence out.

One object wraps a model artifact (or an exported backend) and everything needed to use it
from its card: labels and drug metadata, preprocessing, temperature, abstention and
open-set thresholds. The CLI, the HTTP service and the evaluation use it.

Stages are separate so a caller can batch (the service micro-batches requests):
:meth:`Identifier.preprocess` (one image -> array), :meth:`Identifier.forward` (one batch
-> logits and embeddings), :meth:`Identifier.postprocess` (logits -> typed results). Every
stage after the forward pass is NumPy (:mod:`rxvision.logmath`), whichever the backend, so serving
an ONNX export never imports torch.

Decisions, per image:

- probabilities are ``softmax(logits / T)`` with the card's calibrated temperature ``T``;
- ``unknown`` when the open-set score (see :mod:`.openset`) exceeds the card's
  ``identification.ood_threshold`` (never, if the card has none);
- ``abstain`` when the top probability is below ``identification.abstain_threshold``
  (default 0.5) *or* the pill is unknown: in both cases the top answer must not be shown as
  the identification; the candidates are still returned;
- with an imprint typed by the user, the photo's log-probabilities are weighed by the card's
  ``identification.typed_photo_power`` (default 1) before the typed facts are added, and the
  answer must reach ``identification.typed_abstain_threshold`` (default: the abstention
  threshold); both are fitted together on calibration photos
  (``benchmarks/typed_photo_power.py --write``), since a softer photo makes different
  confidences.

Example:
    >>> ident = Identifier.load("runs/c3pi")            # None -> the bundled model
    >>> [r] = ident.identify("photo.jpg", topk=5)
    >>> r.candidates[0].label, r.confidence, r.abstain, r.message
    >>> ident.identify_pair("front.jpg", "back.jpg").candidates[0].metadata["ndc"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..artifact import HEAD_PRECISIONS, Artifact, ArtifactError, head_precision_problem
from ..data import ImageDecodeError, ImageSet, load_image
from ..data.decode import DEFAULT_MAX_PIXELS, to_rgb
from ..locate import EvalTransform, ZoomResult
from ..logmath import as_array, log_softmax, top_k
from .answers import Answers, TypedFacts
from .bundled import resolve_model_path
from .fusion import SamePhotoRule, fuse_log_probs, fuse_ood_scores
from .openset import (
    OOD_METHODS,
    class_centres_from_card,
    class_prototypes,
    fit_thresholds,
    ood_scores,
)
from .temperature import SizeTemperature, row_temperatures
from .tta import RotationTTA, apply_tta

if TYPE_CHECKING:  # annotations only: the ONNX backend never builds the network (timm)
    import torch

    from ..models import RxVisionModel

ImageInput = str | Path | bytes | Image.Image

DEFAULT_ABSTAIN_THRESHOLD = 0.5
DEFAULT_OOD_METHOD = "energy"
MESSAGE_OK = "ok"
MESSAGE_UNSURE = "not sure"
MESSAGE_UNKNOWN = "not a pill I know"
MESSAGE_RETAKE = "retake the photo"  # the photo check found no pill, or an unusable photo
BACKENDS = ("torch", "onnx")


class IdentifierError(ValueError):
    """A request the identifier cannot serve as asked (bad option, missing capability)."""


@dataclass
class Candidate:
    """One ranked answer: a label, its drug metadata and calibrated probability."""

    label: str
    probability: float
    metadata: dict[str, str]
    rank: int  # 1 = most probable
    # From the model's drug library (rxvision.identify.answers); None / empty without one.
    facts: dict[str, Any] | None = None
    lookalikes: list[dict[str, Any]] = field(default_factory=list)
    same_pill: list[dict[str, Any]] = field(default_factory=list)
    same_pill_note: str = ""
    typed_match: dict[str, Any] | None = None  # with typed facts: likelihood, photo p, why


@dataclass
class Identification:
    """The answer for one pill (one photo, or a fused front/back pair)."""

    candidates: list[Candidate]
    abstain: bool  # do not present candidates[0] as the answer ("not sure" or unknown)
    unknown: bool  # open-set score says: not a pill this model knows
    confidence: float  # calibrated probability of candidates[0]
    ood_score: float  # higher = more likely unknown (method in Identifier.ood_method)
    message: str  # "ok" | "not sure" | "not a pill I know"
    timings_ms: dict[str, float] = field(default_factory=dict)
    source: str | None = None  # file name(s) the answer is about, when known
    # Why the photo must be retaken instead of answered (rxvision.locate.presence: "no pill
    # found in the photo", "photo too dark", ...; "back: too blurred" for a pair), or None.
    # With a cause, there are no candidates and the message is "retake the photo".
    retake: str | None = None
    # Per input photo (one, or front and back): the square (x0, y0, x1, y1) of the photo
    # the model saw when it zoomed to a small pill (preprocessing.zoom), else None.
    zoomed_to: list[list[int] | None] = field(default_factory=list)
    # Per input photo: why it was or was not zoomed (rxvision.locate.locator's reason, e.g.
    # "zoomed", "pills already fill the frame", "no pill-like region found"); None with
    # zoom off.
    zoom_notes: list[str | None] = field(default_factory=list)
    facts_source: str = "card"  # "library": candidates carry the library's drug facts
    typed: dict[str, Any] | None = None  # typed facts, how they were used (answers.py)
    library_hits: list[dict[str, Any]] = field(default_factory=list)  # typed facts contradict
    # A model that finds the pills first: the imprint read off this pill ("read", "" when
    # nothing was), whether the imprint or the appearance decided (.imprint_evidence).
    imprint: dict[str, Any] | None = None
    # A model that finds the pills first: the photo's other sure region this answer was
    # weighed with as possibly the same pill ("with_box", "same_pill_probability"), or None.
    same_photo: dict[str, Any] | None = None

    @property
    def top(self) -> Candidate:
        return self.candidates[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; every candidate repeats the abstain/unknown flags."""
        out = asdict(self)
        for cand in out["candidates"]:
            cand["abstain"], cand["unknown"] = self.abstain, self.unknown
        return out


class TorchRunner:
    """Batch (B, 3, H, W) -> (logits (B, C), pre-logit embeddings (B, D)) in one pass."""

    has_embeddings = True

    def __init__(self, model: RxVisionModel, device: str | torch.device = "cpu"):
        import torch

        self.model = model.eval()
        self.device = torch.device(device)

    def __call__(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A NumPy or torch batch -> float32 CPU tensors."""
        import torch

        with torch.inference_mode():
            maps = self.model.forward_features(torch.as_tensor(batch).to(self.device))
            emb = self.model.forward_head(maps, pre_logits=True)  # (B, D)
            logits = self.model.get_classifier()(emb)  # (B, C), same as model(batch)
            return logits.float().cpu(), emb.float().cpu()


def set_head_precision(model: RxVisionModel | None, precision: str) -> None:
    """Keep the model's cosine final layer rows at ``precision`` for inference."""
    problem = head_precision_problem(model, precision)
    if problem is not None:
        raise IdentifierError(problem)
    if model is None:  # an exported backend: nothing to set, and torch stays unloaded
        return
    import torch

    from ..models.layers import CosineClassifier

    head = model.get_classifier()
    if isinstance(head, CosineClassifier):
        head.inference_dtype = getattr(torch, HEAD_PRECISIONS[precision])


def card_head_precision(settings: dict[str, Any], requested: str | None,
                        model: RxVisionModel | None) -> str:
    """The head precision in effect: ``requested``, else the card's
    ``identification.head_precision`` for the torch backend (``model`` given; an exported
    graph keeps the float32 rows it was exported with), else ``"fp32"``.

    Raises:
        IdentifierError: the card names a precision that does not exist.
    """
    if requested is not None:
        return requested
    chosen = settings.get("head_precision")
    if chosen is None or model is None:
        return "fp32"
    if chosen not in HEAD_PRECISIONS:
        raise IdentifierError(f"card identification.head_precision must be one of "
                              f"{tuple(HEAD_PRECISIONS)}, got {chosen!r}")
    return str(chosen)


def _load_runner(path: Path, backend: str, device: str, threads: int | None
                 ) -> tuple[Any, Artifact | None]:
    if backend not in BACKENDS:
        raise IdentifierError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    from .backends import load_backend  # lazily: it loads onnxruntime

    loaded = load_backend(path, backend=backend, threads=threads)
    if backend == "torch":  # keep the model itself: embeddings and explanations need it
        art = loaded.artifact
        art.model.to(device)
        return TorchRunner(art.model, device), art
    # Exported backends: normalised batch -> logits, with the artifact's card attached.
    return loaded, None


class Identifier:
    """Identify pills with one model; see the module docstring for the decision rules."""

    def __init__(
        self,
        runner: Any,
        labels: list[str],
        label_metadata: list[dict[str, str]],
        preprocessing: dict[str, Any],
        card: dict[str, Any],
        *,
        model: RxVisionModel | None = None,
        backend: str = "torch",
        path: Path | None = None,
        abstain_threshold: float | None = None,
        ood_threshold: float | None = None,
        ood_method: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int = 32,
        zoom: str | None = None,
        library: str | Path | bool | None = None,
        head_precision: str | None = None,
    ):
        self.runner = runner
        self.tta = runner.rotations if isinstance(runner, RotationTTA) else 1
        self.labels = list(labels)
        self.label_metadata = label_metadata or [{} for _ in labels]
        self.preprocessing = preprocessing
        try:  # zoom: "auto"/"off" overrides the card's preprocessing.zoom
            self.transform = EvalTransform(preprocessing, zoom)
        except ValueError as exc:
            raise IdentifierError(str(exc)) from exc
        self.card = card
        self.model = model
        self.backend = backend
        self.path = path
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.temperature = float(card.get("calibration", {}).get("temperature", 1.0))
        if not self.temperature > 0:
            raise ArtifactError(f"card temperature must be positive, got {self.temperature}")
        self.size_temperature = SizeTemperature.from_card(card)  # None: one T for every pill
        settings = card.get("identification", {})
        self.abstain_threshold = float(
            settings.get("abstain_threshold", DEFAULT_ABSTAIN_THRESHOLD)
            if abstain_threshold is None else abstain_threshold
        )
        if not 0.0 <= self.abstain_threshold <= 1.0:
            raise IdentifierError(f"abstain threshold must be in [0, 1], got "
                                  f"{self.abstain_threshold}")
        self.typed_photo_power, self.typed_abstain_threshold = typed_imprint_rule(
            settings, self.abstain_threshold, explicit=abstain_threshold is not None)
        try:  # two sure regions of one photo weighed as one pill (fusion.py); None: never
            self.same_photo = SamePhotoRule.from_card(settings)
        except ValueError as exc:
            raise IdentifierError(f"{path or 'the model'}: {exc}") from exc
        self.ood_method = ood_method or settings.get("ood_method", DEFAULT_OOD_METHOD)
        if self.ood_method not in OOD_METHODS:
            raise IdentifierError(f"unknown OOD method {self.ood_method!r}; "
                                  f"choose one of {OOD_METHODS}")
        if ood_threshold is None and self.ood_method == settings.get("ood_method",
                                                                      DEFAULT_OOD_METHOD):
            # A card threshold only applies to the score it was fitted for.
            ood_threshold = settings.get("ood_threshold")
        self.ood_threshold = None if ood_threshold is None else float(ood_threshold)
        self.prototypes: np.ndarray | None = None
        if self.ood_method == "cosine":
            if model is None or not getattr(runner, "has_embeddings", False):
                raise IdentifierError("the cosine OOD score needs embeddings: use the torch "
                                      "backend or another OOD method")
            self.prototypes = class_prototypes(model.get_classifier().weight)
        self.class_centres: np.ndarray | None = None
        if self.ood_method == "centred_max_logit":
            try:
                self.class_centres = class_centres_from_card(card, len(self.labels))
            except ValueError as exc:
                raise IdentifierError(str(exc)) from exc
        self.head_precision = card_head_precision(settings, head_precision, model)
        set_head_precision(model, self.head_precision)
        # Drug facts, look-alikes and typed-fact fusion from the artifact's library.sqlite
        # (library=None), another library file, or none (False).
        self.answers = Answers.for_model(self.labels, card, path, library)
        self.answers.offered_photo_weight = offered_photo_weight(settings)

    # --- construction -----------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path | None = None, backend: str = "torch", device: str = "cpu",
        threads: int | None = None, tta: int | None = None, **options: Any,
    ) -> Identifier:
        """Load a model artifact (``None``: the bundled model) for identification.

        Args:
            path: artifact directory; ``None`` uses the bundled model.
            backend: ``"torch"`` (everything) or ``"onnx"`` (no explanations, no cosine OOD).
            device: torch device for the torch backend.
            threads: onnxruntime intra-op threads (onnx backend; None: its default).
            tta: average over 1, 2 or 4 right-angle rotations of each photo
                (:class:`~rxvision.identify.tta.RotationTTA`; that many times the compute);
                None: the number the card was calibrated with (``calibration.tta``, else 1).
            **options: ``abstain_threshold``, ``ood_threshold``, ``ood_method``,
                ``max_pixels``, ``batch_size``, ``zoom`` overriding the card's settings;
                ``head_precision``: ``"fp16"`` keeps a cosine final layer's rows in half
                precision (torch backend; for libraries of tens of thousands of pills,
                where reading the rows bounds the time); None: the card's
                ``identification.head_precision`` (torch backend), else ``"fp32"``;
                ``library``: the drug library (None: the artifact's ``library.sqlite``
                when present; False: none; a path: that file).
        """
        path = resolve_model_path(path)
        runner, art = _load_runner(path, backend, device, threads)
        card = art.card if art is not None else runner.card  # exports carry the same card
        try:
            runner, _ = apply_tta(runner, card, tta, card["preprocessing"]["input_size"])
        except ValueError as exc:
            raise IdentifierError(str(exc)) from exc
        if art is not None:
            return cls.from_artifact(art, runner=runner, **options)
        return cls(runner, card["labels"], card.get("label_metadata"), card["preprocessing"],
                   card, backend=backend, path=path, **options)

    @classmethod
    def from_artifact(cls, art: Artifact, runner: Any = None, **options: Any) -> Identifier:
        """Wrap an already loaded :class:`Artifact` (torch backend)."""
        return cls(runner or TorchRunner(art.model, next(art.model.parameters()).device),
                   art.labels, art.label_metadata, art.preprocessing, art.card,
                   model=art.model, backend="torch", path=art.path, **options)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    # --- stages ---------------------------------------------------------------------------
    def decode(self, image: ImageInput, name: str | None = None) -> Image.Image:
        """Path, bytes or PIL image -> RGB PIL image (safe decode, pixel limit)."""
        if isinstance(image, Image.Image):
            return to_rgb(image)
        if not isinstance(image, str | Path | bytes):
            raise IdentifierError(f"expected a path, bytes or PIL image, got "
                                  f"{type(image).__name__}")
        return load_image(image, max_pixels=self.max_pixels, name=name)

    def preprocess(self, image: ImageInput, name: str | None = None) -> np.ndarray:
        """One image -> normalised float32 array (3, H, W) exactly as the card prescribes."""
        return self.prepare(image, name)[0]

    def prepare(self, image: ImageInput, name: str | None = None
                ) -> tuple[np.ndarray, ZoomResult]:
        """:meth:`preprocess`, and the zoom step's crop (photo pixels, or None) and reason."""
        if isinstance(image, str | Path | bytes):  # a JPEG is decoded no larger than needed
            boxed, zoom, _ = self.transform.load_and_zoom(image, self.max_pixels, name,
                                                          check=True)
        else:
            boxed, zoom = self.transform.to_uint8_and_zoom(self.decode(image, name),
                                                           check=True)
        return self.transform.normalize(boxed), zoom

    def forward(self, batch: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """One forward pass: batch (B, 3, H, W), a NumPy array (or torch tensor) -> float32
        arrays: logits (B, C), embeddings (B, D) or None."""
        out = self.runner(batch)
        logits, emb = out if isinstance(out, tuple) else (out, None)
        logits = as_array(logits)
        if logits.shape[-1] != self.num_classes:
            raise ArtifactError(f"model returned {logits.shape[-1]} logits for "
                                f"{self.num_classes} labels")
        return logits, None if emb is None else as_array(emb)

    def log_probs(self, logits: Any, pill_px: Any | None = None) -> np.ndarray:
        """Calibrated log-probabilities ``log_softmax(logits / T)`` (B, C).

        ``pill_px``: each row's pill size (longer side of its box in the decoded photo, > 0);
        with a card that has a size temperature each row gets its own T (see
        :mod:`.temperature`), else (or where a size is unknown) the card's single T.
        """
        logits = as_array(logits)
        temps = row_temperatures(self.temperature, self.size_temperature, pill_px)
        if isinstance(temps, np.ndarray):
            if len(temps) != len(logits):
                raise IdentifierError(f"{len(temps)} pill sizes for {len(logits)} rows")
            return log_softmax(logits / temps.astype(np.float32)[:, None])
        return log_softmax(logits / np.float32(temps))

    def ood(self, logits: Any, embeddings: Any | None = None) -> np.ndarray:
        """Open-set scores (B,), higher = more likely unknown."""
        return ood_scores(logits, embeddings, self.prototypes, self.ood_method,
                          self.class_centres)

    def postprocess(
        self, logits: Any, embeddings: Any | None = None, topk: int = 5,
        typed: TypedFacts | None = None,
    ) -> list[Identification]:
        """Logits (B, C) (+ embeddings) -> one :class:`Identification` per row."""
        lp, scores = self.log_probs(logits), self.ood(logits, embeddings)
        return [self.decide(lp[i], float(scores[i]), topk, typed) for i in range(len(lp))]

    def decide(self, log_probs: Any, ood_score: float, topk: int = 5,
               typed: TypedFacts | None = None) -> Identification:
        """Calibrated log-probabilities (C,) and an open-set score -> an Identification.

        ``typed``: what the user read off the pill, combined with the photo's probabilities
        (:meth:`.answers.Answers.fuse`); typed facts that contradict every likely pill make
        the answer "not sure".
        """
        if topk < 1:
            raise IdentifierError(f"topk must be >= 1, got {topk}")
        fusion = None
        log_probs = as_array(log_probs)
        threshold = self.abstain_threshold
        if typed is not None:
            power = 1.0
            if typed.imprint is not None:  # the rule fitted for a typed imprint
                power, threshold = self.typed_photo_power, self.typed_abstain_threshold
            log_probs, fusion = self.answers.fuse(log_probs, typed, photo_power=power)
        values, indices = top_k(np.exp(log_probs), topk)
        candidates = [
            Candidate(self.labels[i], float(p), dict(self.label_metadata[i]), rank)
            for rank, (p, i) in enumerate(zip(values.tolist(), indices.tolist(), strict=True),
                                          start=1)
        ]
        confidence = candidates[0].probability
        unknown = self.ood_threshold is not None and ood_score > self.ood_threshold
        unsure = confidence < threshold
        message = MESSAGE_UNKNOWN if unknown else MESSAGE_UNSURE if unsure else MESSAGE_OK
        result = Identification(candidates, unknown or unsure, unknown, confidence, ood_score,
                                message)
        if self.answers.attach(result, fusion):  # the typed facts contradict the photo
            result.abstain = True
            result.message = MESSAGE_UNKNOWN if unknown else MESSAGE_UNSURE
        return result

    # --- whole pipeline -------------------------------------------------------------------
    def identify(self, images: ImageInput | Sequence[ImageInput], topk: int = 5,
                 typed: TypedFacts | None = None) -> list[Identification]:
        """Identify one image or a list of images (batched by ``batch_size``).

        ``typed``: facts the user read off the pill (one pill: give one image).
        """
        if isinstance(images, str | Path | bytes | Image.Image):
            images = [images]
        if typed is not None and len(images) != 1:
            raise IdentifierError("typed facts describe one pill: give one photo (or a pair)")
        results: list[Identification] = []
        for start in range(0, len(images), self.batch_size):
            results += self.identify_batch(list(images[start:start + self.batch_size]), topk,
                                           typed)
        return results

    def identify_batch(self, images: Sequence[ImageInput], topk: int = 5,
                       typed: TypedFacts | None = None) -> list[Identification]:
        """Identify ``images`` with ONE forward pass; a bad image raises ImageDecodeError."""
        if not images:
            return []
        prep_ms, tensors, zooms = [], [], []
        for image in images:
            t0 = time.perf_counter()
            x, zoom = self.prepare(image)
            tensors.append(x)
            zooms.append(zoom)
            prep_ms.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        logits, emb = self.forward(np.stack(tensors))
        forward_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        results = self.postprocess(logits, emb, topk, typed)
        post_ms = (time.perf_counter() - t0) * 1e3
        for image, result, prep, zoom in zip(images, results, prep_ms, zooms, strict=True):
            result.source = source_name(image)
            _set_zoom(result, [zoom])
            result.timings_ms = _timings(prep, forward_ms / len(images), post_ms / len(images))
        return results

    def identify_pair(self, front: ImageInput, back: ImageInput, topk: int = 5,
                      typed: TypedFacts | None = None) -> Identification:
        """Fuse two photos of one pill (front and back) into one ranking; see :mod:`.fusion`."""
        t0 = time.perf_counter()
        (x_front, zoom_front), (x_back, zoom_back) = self.prepare(front), self.prepare(back)
        batch = np.stack([x_front, x_back])
        prep = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        logits, emb = self.forward(batch)
        forward_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        lp, scores = self.log_probs(logits), self.ood(logits, emb)
        result = self.decide(fuse_log_probs(lp[0], lp[1]),
                             fuse_ood_scores(float(scores[0]), float(scores[1])), topk, typed)
        result.source = f"{source_name(front)} + {source_name(back)}"
        _set_zoom(result, [zoom_front, zoom_back])
        result.timings_ms = _timings(prep, forward_ms, (time.perf_counter() - t0) * 1e3)
        return result

    def iter_identify(
        self, sources: Iterable[ImageInput], topk: int = 5, batch_size: int | None = None
    ) -> Iterator[tuple[ImageInput, Identification | ImageDecodeError]]:
        """Identify many images in batches; a bad image yields its error and the rest go on."""
        size = batch_size or self.batch_size
        # (source, array or its decode error, preprocessing ms, zoom step)
        pending: list[tuple[ImageInput, np.ndarray | ImageDecodeError, float,
                            ZoomResult | None]] = []

        def flush() -> Iterator[tuple[ImageInput, Identification | ImageDecodeError]]:
            good = [i for i, (_, x, _, _) in enumerate(pending) if isinstance(x, np.ndarray)]
            results: dict[int, Identification] = {}
            if good:
                t0 = time.perf_counter()
                logits, emb = self.forward(np.stack([pending[i][1] for i in good]))
                fwd = (time.perf_counter() - t0) * 1e3 / len(good)
                for i, res in zip(good, self.postprocess(logits, emb, topk), strict=True):
                    res.source, res.timings_ms = source_name(pending[i][0]), _timings(
                        pending[i][2], fwd, 0.0)
                    _set_zoom(res, [pending[i][3]])
                    results[i] = res
            for i, (src, x, _, _) in enumerate(pending):
                yield src, results.get(i, x)
            pending.clear()

        for source in sources:
            t0 = time.perf_counter()
            zoom = None
            try:
                x: np.ndarray | ImageDecodeError
                x, zoom = self.prepare(source)
            except ImageDecodeError as exc:
                x = exc
            pending.append((source, x, (time.perf_counter() - t0) * 1e3, zoom))
            if len(pending) >= size:
                yield from flush()
        yield from flush()

    def fit_thresholds(self, images: ImageSet, tpr: float = 0.95,
                       target_accuracy: float = 0.95) -> dict[str, Any]:
        """Fit abstention and open-set thresholds on labelled validation views.

        See :func:`.openset.fit_thresholds`; views of labels the model does not know are
        ignored. Store the result with ``update_card(run, identification=fit)``.
        """
        logits, embs = [], []
        paths = [s.path for s in images.samples]
        for start in range(0, len(paths), self.batch_size):
            batch = np.stack([self.preprocess(p) for p in paths[start:start + self.batch_size]])
            lg, emb = self.forward(batch)
            logits.append(lg)
            embs.append(emb)
        emb_all = None if any(e is None for e in embs) else np.concatenate(embs)
        fit = fit_thresholds(np.concatenate(logits), np.asarray(images.targets(self.labels)),
                             self.temperature, self.ood_method, emb_all, self.prototypes,
                             tpr, target_accuracy, class_centres=self.class_centres)
        return {**fit, "fitted_on": str(images.source)}

    # --- torch-only extras ----------------------------------------------------------------
    def _torch_model(self, what: str) -> RxVisionModel:
        if self.model is None:
            raise IdentifierError(f"{what} needs the torch model; the {self.backend} backend "
                                  "cannot provide it (use --backend torch)")
        return self.model

    def embed(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Pre-logit embeddings (N, D) of ``images`` (torch backend)."""
        self._torch_model("embed()")
        _, emb = self.forward(np.stack([self.preprocess(im) for im in images]))
        assert emb is not None  # the torch runner returns embeddings
        return emb

    def explain(self, image: ImageInput) -> dict[str, Image.Image]:
        """Overlays on the letterboxed input: ``attention``, ``gradcam``, ``occlusion``."""
        from .explain import explain_image

        model = self._torch_model("explain()")
        return explain_image(model, self.transform, self.decode(image))


def offered_photo_weight(settings: dict[str, Any]) -> float:
    """The card's weight of the photo's log-probability when ordering the library pills
    offered after typed facts contradict the photo (0 without one: text order).

    Raises:
        IdentifierError: not a finite number >= 0.
    """
    value = settings.get("offered_photo_weight", 0.0)
    try:
        weight = float(value)
    except (TypeError, ValueError) as exc:
        raise IdentifierError(f"offered_photo_weight must be a number, got {value!r}") from exc
    if not (math.isfinite(weight) and weight >= 0.0):
        raise IdentifierError(f"offered_photo_weight must be a finite number >= 0, got {weight}")
    return weight


def typed_imprint_rule(settings: dict[str, Any], abstain_threshold: float,
                       explicit: bool = False) -> tuple[float, float]:
    """The card's rule for an answer with a typed imprint: (the photo's weight, the answer
    threshold). Without ``typed_photo_power`` the photo keeps its full weight and the usual
    abstention threshold applies; so it does when the caller set the abstention threshold
    (``explicit``: a stricter threshold asked for is not loosened behind the caller's back).

    Raises:
        IdentifierError: a value outside its range, or one of the pair without the other.
    """
    power, threshold = settings.get("typed_photo_power"), settings.get("typed_abstain_threshold")
    if power is None and threshold is None:
        return 1.0, abstain_threshold
    if power is None or threshold is None:
        raise IdentifierError("the card's identification has only one of typed_photo_power "
                              "and typed_abstain_threshold; they are fitted together "
                              "(benchmarks/typed_photo_power.py --write)")
    try:
        power, threshold = float(power), float(threshold)
    except (TypeError, ValueError) as exc:
        raise IdentifierError(f"typed_photo_power and typed_abstain_threshold must be numbers, "
                              f"got {power!r} and {threshold!r}") from exc
    if not 0.0 < power <= 1.0 or not 0.0 <= threshold <= 1.0:
        raise IdentifierError(f"typed_photo_power must be in (0, 1] and "
                              f"typed_abstain_threshold in [0, 1], got {power} and {threshold}")
    return (1.0, abstain_threshold) if explicit else (power, threshold)


def _set_zoom(result: Identification, zooms: list[ZoomResult | None]) -> None:
    """Record, per input photo, the crop the model saw (or None) and the zoom step's reason;
    ask for a retake when a photo check failed (one photo, or front and back)."""
    result.zoomed_to = [z.crop if z else None for z in zooms]
    result.zoom_notes = [z.note if z else None for z in zooms]
    views = ["image"] if len(zooms) == 1 else ["front", "back"]
    ask_for_retake(result, [(v, z.retake if z else None) for v, z in zip(views, zooms,
                                                                          strict=True)])


def ask_for_retake(result: Identification, checks: Sequence[tuple[str, str | None]]
                   ) -> Identification:
    """Turn ``result`` into a retake request when a photo check failed; returns it.

    Args:
        checks: per input photo, its view ("image", "front", "back") and the photo check's
            cause (:func:`rxvision.locate.presence.check_photo`) or None.

    No guess is given for a photo of nothing: the candidates are dropped, the answer
    abstains, ``message`` is "retake the photo" and ``retake`` names the cause.
    """
    failed = [(view, cause) for view, cause in checks if cause]
    if not failed:
        return result
    result.retake = (failed[0][1] if len(checks) == 1
                     else "; ".join(f"{view}: {cause}" for view, cause in failed))
    result.candidates, result.abstain, result.unknown = [], True, False
    result.confidence, result.message = 0.0, MESSAGE_RETAKE
    return result


def retake_request(cause: str | None = None) -> Identification:
    """The answer for a photo with nothing to name (no pill found, an unusable photo): no
    candidates, abstaining, "retake the photo", and ``cause`` as its ``retake``. The CLI's
    row and the API's answer for such a photo are both made of it."""
    return Identification([], True, False, 0.0, 0.0, MESSAGE_RETAKE, retake=cause)


def source_name(image: ImageInput) -> str | None:
    """What an answer names as its source: the path of a file input, else None."""
    return str(image) if isinstance(image, str | Path) else None


def _timings(preprocess_ms: float, forward_ms: float, postprocess_ms: float) -> dict[str, float]:
    return {"preprocess": round(preprocess_ms, 3), "forward": round(forward_ms, 3),
            "postprocess": round(postprocess_ms, 3),
            "total": round(preprocess_ms + forward_ms + postprocess_ms, 3)}
