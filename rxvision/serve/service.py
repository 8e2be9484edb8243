"""The model side of the service: load once, decode off the loop, batch, decide.

:class:`Service` owns the :class:`~rxvision.identify.identifier.Identifier`, a small thread
pool for decoding and letterboxing uploads, and the :class:`~.batcher.MicroBatcher` that
runs every forward pass. The HTTP layer (:mod:`.app`) only parses requests and calls it.
Everything outside the torch backend's forward pass is NumPy: serving an ONNX export never
imports torch.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import io
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..identify.answers import TypedFacts
from ..identify.fusion import fuse_log_probs, fuse_ood_scores
from ..identify.identifier import Identification, Identifier, IdentifierError
from ..identify.pipeline import FoundPill, PillPipeline, model_framing, pill_sizes
from ..imprint import ImprintRead
from .batcher import BatchResult, MicroBatcher
from .metrics import ServeMetrics
from .settings import ServeSettings


@dataclass
class Upload:
    """One uploaded image: which form field (view) it came from, its name and bytes."""

    view: str  # "image", "front", "back" or "images[i]"
    filename: str | None
    data: bytes

    @property
    def label(self) -> str:
        return f"{self.view} ({self.filename})" if self.filename else self.view


@dataclass
class Decoded:
    upload: Upload
    image: Image.Image  # decoded RGB, kept for explanations
    # (n, 3, H, W) uint8, letterboxed as the card prescribes (not normalised): the whole
    # photo (n = 1), or for a crop model each pill found (n = 0 when none was)
    tensor: np.ndarray
    ms: float
    zoomed_to: list[int] | None = None  # the crop the model saw, when it zoomed to the pill
    zoom_note: str | None = None  # why it zoomed or not (None with zoom off)
    retake: str | None = None  # the photo check's cause for a retake (locate.presence), or None
    pills: list[FoundPill] | None = None  # a crop model's pills, one per row of ``tensor``
    reads: list[ImprintRead | None] | None = None  # ... and their imprints (None: not read)


class Service:
    """Identifier + decode pool + micro-batcher, started and stopped by the app lifespan."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics,
                 identifier: Identifier | None = None):
        self.settings, self.metrics = settings, metrics
        self.identifier = identifier
        self.pipeline: PillPipeline | None = None  # a crop model's pill finder + crop
        self.batcher: MicroBatcher | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.ready = False
        self.info: dict[str, Any] = {}

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model (once), start the batcher, warm up; then report ready."""
        s = self.settings
        if s.torch_threads is not None and (s.backend == "torch" or "torch" in sys.modules):
            # torch's OpenMP threads (spinning after each small op) would compete with
            # onnxruntime's own pool for the same cores. The ONNX path never loads torch.
            import torch

            torch.set_num_threads(s.torch_threads)
        if self.identifier is None:
            self.identifier = await asyncio.to_thread(
                Identifier.load, s.model, backend=s.backend, device=s.device, threads=s.threads,
                tta=s.tta, max_pixels=s.max_pixels,
                head_precision=s.head_precision)
        ident = self.identifier
        if model_framing(ident.card) == "crop":
            # One finder thread per decoding thread: several photos are decoded at once.
            self.pipeline = await asyncio.to_thread(
                PillPipeline.around, ident, s.segmenter, s.max_pills,
                s.imprint and ident.answers.library is not None, 1)
        elif s.segmenter is not None:
            raise IdentifierError("a segmenter is for models trained on pill crops "
                                  "(augment.framing: crop); this one sees whole photos")
        if ident.backend == "onnx" and not s.onnx_spinning:
            await asyncio.to_thread(_stop_onnx_spinning, ident, s.threads)
        self.info = model_info(ident, s, self.pipeline)
        self.metrics.model_info.labels(self.info["id"], ident.backend).set(1)
        self._pool = ThreadPoolExecutor(s.preprocess_threads, thread_name_prefix="rxvision-decode")
        self.batcher = MicroBatcher(self._forward, max_batch=s.max_batch,
                                    max_wait_ms=s.max_wait_ms, queue_size=s.queue_size,
                                    metrics=self.metrics)
        await self.batcher.start()
        if s.warmup:  # first passes allocate (ORT arenas, torch caches): not a user's latency
            h, w = ident.transform.size
            # On the model thread directly: no wait for a batch to fill, no batch metrics.
            await self.batcher.run_exclusive(self._forward, np.zeros((1, 3, h, w), np.uint8))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True)

    # --- stages ---------------------------------------------------------------------------
    def _forward(self, batch: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """On the model thread: uint8 batch (B, 3, H, W) -> logits (B, C), open-set scores
        (B,) and embeddings (B, D) or None (NumPy arrays).

        Normalising here, not in the decode pool, keeps every multi-threaded torch op on one
        thread: torch ops in several threads at once would each start their own OpenMP
        team and oversubscribe the cores. Scores are computed for the whole batch at once;
        the calibrated probabilities in :meth:`decide`, which knows each row's pill size.
        """
        ident = self.identifier
        logits, emb = ident.forward(ident.transform.normalize(batch))
        return logits, ident.ood(logits, emb), emb

    def _decode_one(self, upload: Upload, max_pills: int | None = None,
                    read_imprints: bool = True) -> Decoded:
        t0 = time.perf_counter()
        if self.pipeline is not None:  # a crop model: find the pills, crop each
            found = self.pipeline.find(upload.data, upload.label, max_pills)
            h, w = self.identifier.transform.size
            rows = [self.pipeline.transform.array(p.crop) for p in found.pills]
            tensor = np.stack(rows) if rows else np.zeros((0, 3, h, w), np.uint8)
            # OCR: here, off the model thread (a pair's sides: once the pill is picked)
            reads = self.pipeline.read_imprints(found.pills) if read_imprints else None
            return Decoded(upload, found.image, tensor, (time.perf_counter() - t0) * 1e3,
                           retake=found.retake, pills=found.pills, reads=reads)
        # PIL + NumPy only: a JPEG decoded no larger than needed, the photo check and the
        # zoom as Identifier.prepare runs them
        tensor, zoom, image = self.identifier.transform.load_and_zoom(
            upload.data, self.settings.max_pixels, upload.label, check=True)
        return Decoded(upload, image, tensor[None], (time.perf_counter() - t0) * 1e3,
                       zoom.crop, zoom.note, zoom.retake)

    async def decode(self, uploads: list[Upload], max_pills: int | None = None,
                     read_imprints: bool = True) -> list[Decoded]:
        """Decode and letterbox uploads in the decode pool (a crop model: find and crop
        at most ``max_pills`` pills of each and, with ``read_imprints``, read their
        imprints; without, :meth:`decide` reads a pair's picked pills only);
        ImageDecodeError names the file."""
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._pool, self._decode_one, u, max_pills,
                                     read_imprints)
                for u in uploads]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for r in results:  # the first bad file, in upload order, is the one reported
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    async def forward(self, decoded: list[Decoded]) -> list[BatchResult]:
        """Batched forward pass(es) over every row of every decoded upload: jobs of at most
        max_batch images, submitted together (none when no upload has a row)."""
        step = self.settings.max_batch
        rows = (decoded[0].tensor if len(decoded) == 1  # one photo: no copy
                else np.concatenate([d.tensor for d in decoded]))
        parts = [rows[i:i + step] for i in range(0, len(rows), step)]
        return list(await asyncio.gather(*(self.batcher.submit(p) for p in parts)))

    def decide(self, results: list[BatchResult], topk: int, pair: bool,
               typed: TypedFacts | None = None, decoded: list[Decoded] | None = None
               ) -> list[Identification]:
        """Batched outputs -> Identifications; a pair is fused into one (inference.fusion).

        The same decisions as ``Identifier.postprocess`` / ``identify_pair``, from the
        log-probabilities and open-set scores :meth:`_forward` computed per batch; with
        ``typed`` facts (one pill), combined with them; for a crop model, with each pill's
        imprint read (``decoded``: the uploads the rows came from) and each photo's pills
        as :meth:`PillPipeline.weigh` answers them (the same-photo pair weighed; with typed
        facts, two kept pills narrowed to the one they describe, IdentifierError when the
        two do not look like one pill). A pair decoded without reads has its two picked
        pills' imprints read here (:meth:`read_picked`). Reads the drug library and runs
        OCR: call it off the event loop.
        """
        if not results:
            return []
        logits = np.concatenate([r.outputs[0] for r in results])  # (n, C)
        scores = np.concatenate([r.outputs[1] for r in results]).tolist()  # (n,)
        reads = [r for d in decoded or [] for r in d.reads or []]  # one per row (crop model)
        pipeline = self.pipeline
        # A crop model's rows are its pills, each calibrated at its own size.
        pills = [p for d in decoded or [] for p in d.pills or []]
        sizes = pill_sizes(pills) if pipeline is not None else None
        lp = self.identifier.log_probs(logits, sizes)

        def decide(log_probs: np.ndarray, score: float, row_reads: list,
                   row_pills: list[FoundPill], alone: Any = None) -> Identification:
            if pipeline is None:
                return self.identifier.decide(log_probs, score, topk, typed)
            return pipeline.decide(log_probs, score, row_reads, topk, typed, pills=row_pills,
                                   alone=alone)

        if pair:  # a crop model's rows per upload are its candidates for the pill
            picked = [0, 1] if pipeline is None else the_pills(pipeline, decoded or [], lp)
            if pipeline is not None:  # each upload now holds its picked pill alone
                self.read_picked(decoded or [])
            return [decide(fuse_log_probs(lp[picked[0]], lp[picked[1]]),
                           fuse_ood_scores(*(scores[i] for i in picked)),
                           [r for d in decoded or [] for r in d.reads or []],
                           [pills[i] for i in picked] if pills else [])]
        if pipeline is None:
            return [decide(lp[i], scores[i], [], []) for i in range(len(lp))]
        out, start = [], 0
        for d in decoded or []:  # per photo: its pills, the same-photo rule, typed facts
            rows = list(range(start, start + len(d.pills or [])))
            start += len(rows)
            keep, weighed, notes, alone = pipeline.weigh(d.pills or [], lp[rows], typed)
            if len(keep) < len(rows):  # typed facts: the one pill of a same-photo pair
                rows = [rows[k] for k in keep]
                keep_only(d, keep)
            for j, (i, note) in enumerate(zip(rows, notes, strict=True)):
                ident = decide(weighed[j], scores[i], reads[i:i + 1], pills[i:i + 1],
                               alone[j])
                ident.same_photo = note
                out.append(ident)
        return out

    def read_picked(self, decoded: list[Decoded]) -> None:
        """Read the imprints of a pair's picked pills that decoding left unread, both
        sides at once in the decode pool (each upload holds its picked pill alone)."""
        pipeline, unread = self.pipeline, [d for d in decoded if d.reads is None]
        assert pipeline is not None
        for d, reads in zip(unread, self._pool.map(
                lambda d: pipeline.read_imprints(d.pills or []), unread), strict=True):
            d.reads = reads

    async def explain(self, image: Image.Image) -> dict[str, str]:
        """Attention, Grad-CAM and occlusion overlays as PNG data URLs: of a decoded photo,
        or for a crop model of one pill's normalised crop (:meth:`PillPipeline.explain_crop`).

        The explanation runs on the model thread (it hooks the backbone and runs backward,
        so it must not overlap a batched pass); PNG encoding runs in the decode pool.
        """
        explain = (self.identifier.explain if self.pipeline is None
                   else self.pipeline.explain_crop)
        overlays = await self.batcher.run_exclusive(explain, image)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _data_urls, overlays)


def keep_typed_pill(pipeline: PillPipeline, decoded: Decoded) -> None:
    """Typed facts with several regions found: keep the pills they can describe, one or a
    same-photo pair that :meth:`Service.decide` narrows to one once classified
    (:meth:`PillPipeline.typed_candidates`; IdentifierError when none can be kept)."""
    keep_only(decoded, pipeline.typed_candidates(decoded.pills or []))


def keep_only(decoded: Decoded, keep: list[int]) -> None:
    """Narrow a crop model's upload to the pills ``keep`` (indices): the pills, their rows
    and their reads."""
    decoded.pills = [(decoded.pills or [])[k] for k in keep]
    decoded.tensor = decoded.tensor[keep]
    decoded.reads = None if decoded.reads is None else [decoded.reads[k] for k in keep]


def the_pills(pipeline: PillPipeline, decoded: list[Decoded], log_probs: np.ndarray
              ) -> list[int]:
    """The row of "the pill" of each upload of a pair (:meth:`PillPipeline.the_pill`), its
    rows being its candidates in order. Each upload then keeps only that pill (its row and
    read), so the answer's box and explanation are the picked pill's."""
    picked = pipeline.the_pill_of_each([d.pills or [] for d in decoded], log_probs)
    start = 0
    for d, row in zip(decoded, picked, strict=True):
        count = len(d.pills or [])
        keep_only(d, [row - start])
        start += count
    return picked


def _stop_onnx_spinning(ident: Identifier, threads: int | None) -> None:
    """Recreate the onnxruntime session with ``session.intra_op.allow_spinning = 0``.

    By default onnxruntime's intra-op threads busy-wait after each run, ready for the next
    one. That suits a benchmark loop; in the service the same cores must decode uploads and
    answer HTTP between passes. Measured with benchmarks/load.py (2 cores, see
    docs/service.md): about 2 ms less server CPU per request and higher throughput.
    The session is built from the same file with the same options otherwise.
    """
    import onnxruntime as ort

    from ..identify.onnx_backend import OnnxModel, session_options

    model = getattr(ident.runner, "model", None)
    if not isinstance(model, OnnxModel):
        raise TypeError(f"expected an onnx runner, got {type(ident.runner).__name__}")
    options = session_options(threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model.session = ort.InferenceSession(str(model.path), options,
                                         providers=model.session.get_providers())


def _data_urls(overlays: dict[str, Image.Image]) -> dict[str, str]:
    out = {}
    for kind, img in overlays.items():
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out[kind] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return out


def model_info(ident: Identifier, settings: ServeSettings, pipeline: PillPipeline | None = None
               ) -> dict[str, Any]:
    """GET /v1/model: what is loaded, from its card (see schemas.ModelInfo).

    ``pipeline``: a crop model's pill finder (one answer per pill, its explanations drawn
    on each pill's crop, and its finder gate among the thresholds)."""
    finds_pills = pipeline is not None
    card = ident.card
    sha = (card.get("export") or card.get("weights") or {}).get("sha256")
    name = ident.path.name if ident.path is not None else "model"
    return {
        "id": f"{name}@{sha[:12]}" if sha else name,
        "name": name,
        "backend": ident.backend,
        "sha256": sha,
        "version": {"rxvision": importlib.metadata.version("rxvision"),
                    "card_format": card.get("format"), **card.get("versions", {})},
        "num_labels": ident.num_classes,
        "input_size": list(ident.transform.size),
        "zoom": ident.transform.zoom,
        "tta": ident.tta,
        "temperature": ident.temperature,
        "size_temperature": (None if ident.size_temperature is None
                             else ident.size_temperature.to_dict()),
        "identification": {"abstain_threshold": ident.abstain_threshold,
                           "ood_method": ident.ood_method, "ood_threshold": ident.ood_threshold,
                           "head_precision": ident.head_precision,
                           "typed_photo_power": ident.typed_photo_power,
                           "typed_abstain_threshold": ident.typed_abstain_threshold,
                           **({"min_finder_score": pipeline.min_finder_score,
                               "same_photo": (None if ident.same_photo is None
                                              else asdict(ident.same_photo))}
                              if pipeline is not None else {})},
        "metrics": card.get("metrics", {}),
        "capabilities": {"single": True, "pair": True, "batch": True,
                         "explain": ident.model is not None,
                         "finds_pills": finds_pills},
        "limits": {"max_body_bytes": settings.max_body_bytes,
                   "max_pixels": settings.max_pixels,
                   "max_batch_images": settings.max_batch_images,
                   "max_topk": settings.max_topk, "default_topk": settings.default_topk,
                   "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
    }
