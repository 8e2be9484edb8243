"""Run a model over a labelled image set and measure it.

Two steps, so later features reuse the expensive one:

1. :func:`predict` decodes images in DataLoader workers, batches them through a model
   backend and returns raw :class:`Predictions` (logits, targets, per-sample columns and,
   when asked, embeddings). Open-set evaluation and calibration start from these.
2. :func:`summarize` turns predictions into the JSON-ready result: headline metrics with
   the model's temperature applied, per-group metrics, per-class rows, most-confused
   pairs and the labels the model does not know (counted, then left out of every metric).

Example:
    >>> backend = load_backend("runs/c3pi")
    >>> images = load_dataset("views/manifest.csv")
    >>> result = summarize(predict(backend, images), backend.labels, backend.temperature,
    ...                    group_by="mode")
    >>> write_json(result, "m.json")
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..artifact import ArtifactError
from ..data import DatasetError, EvalDataset, ImageSet
from ..io_utils import atomic_write_json, atomic_write_text
from ..locate import EvalTransform
from .metrics import (
    compute_metrics,
    describe_temperature,
    ece,
    empty_metrics,
    most_confused,
    nll,
    per_class_table,
    rows_of,
    softmax,
)

if TYPE_CHECKING:  # the protocol lives with the backends; importing it loads onnxruntime
    from ..identify.backends import Backend

NO_GROUP = "(none)"  # group name for samples with an empty group-by column


@dataclass
class Predictions:
    """Raw outputs of one pass over an image set, in dataset order."""

    logits: np.ndarray  # (N, C) float32, before temperature
    targets: np.ndarray  # (N,) int64 index into the model's labels, -1 if unknown to it
    true_labels: list[str]  # (N,) label names from the data
    paths: list[str]
    # Per-sample manifest columns (mode, side, ...) and the label's metadata (ndc, ...).
    columns: dict[str, list[str]] = field(default_factory=dict)
    embeddings: np.ndarray | None = None  # (N, D) when predict(..., embeddings=True)
    # (N,) each photo's pill size in decoded pixels (0: none found), from a crop transform
    pill_px: np.ndarray | None = None
    # (N,) the finder's score for that pill (0: none found), from a crop transform
    finder_score: np.ndarray | None = None
    # (N,) for a photo whose pill was weighed with its other region (same_photo_logits):
    # the pill's own probability of the weighed answer, which the card's rule also requires
    # to reach the threshold (pipeline.sure_on_its_own); NaN otherwise
    alone_confidence: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def known(self) -> np.ndarray:
        """Mask of samples whose label the model knows."""
        return self.targets >= 0


def subset(images: ImageSet, limit: int | None, seed: int = 0) -> ImageSet:
    """At most ``limit`` samples, drawn at random with a fixed seed, kept in file order.

    A random draw (not the first N rows) because manifests are usually sorted by label.
    """
    if limit is None or limit >= len(images):
        return images
    if limit <= 0:
        raise DatasetError(f"--limit must be positive, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(images)), limit))
    return ImageSet([images.samples[i] for i in keep], images.labels, images.label_metadata,
                    images.source)


def batches(loader: DataLoader, progress: bool, desc: str) -> Iterator[Any]:
    """Iterate a loader under a tqdm bar on stderr (hidden when ``progress`` is False)."""
    with tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False) as bar:
        yield from bar


def predict(
    backend: Backend,
    images: ImageSet,
    batch_size: int = 32,
    workers: int = 2,
    channels_last: bool = True,
    embeddings: bool = False,
    progress: bool = True,
    desc: str = "evaluate",
    zoom: str | None = None,
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
    same_photo: bool = False,
) -> Predictions:
    """Run ``backend`` over every image; decoding and preprocessing happen in workers.

    Args:
        backend: from :func:`rxvision.identify.backends.load_backend` (precision, e.g.
            bf16 autocast, is the backend's choice); its card's preprocessing is used.
        images: the labelled set; labels the model lacks get target -1.
        batch_size: images per forward pass.
        workers: DataLoader worker processes (0 decodes in this process).
        channels_last: hand the backend NHWC-strided batches and, for a torch backend,
            convert its model to channels-last once (1.7x faster fp32 convolutions on
            this CPU with efficientnet_lite0; results equal to rounding).
        embeddings: also collect pre-logit embeddings (B, D), e.g. for the cosine open-set
            score, from ``backend.logits_and_embeddings(batch)`` in the same forward pass.
        progress: show a progress bar.
        zoom: ``"auto"`` or ``"off"`` overrides the card's ``preprocessing.zoom``.
        transform: photo -> model input; default: the card's :class:`EvalTransform` (a
            crop model passes :class:`rxvision.identify.pipeline.CropTransform`, which
            returns its candidate regions per photo: inputs, pill sizes, finder scores and
            pill-likeness; one is kept per photo (:func:`the_pill_rows`), and its size and
            score land in ``Predictions.pill_px`` and ``Predictions.finder_score``).
        same_photo: with such a transform, weigh each photo's pill with its other candidate
            as the pipeline answers users (the card's ``identification.same_photo`` rule,
            :func:`same_photo_logits`; nothing without a rule). Off for ``calibrate``, which
            fits the temperature on each region's own logits.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0 (got {batch_size}, "
                         f"{workers})")
    both = getattr(backend, "logits_and_embeddings", None) if embeddings else None
    if embeddings and not callable(both):
        raise TypeError(f"{type(backend).__name__} has no logits_and_embeddings(batch) method "
                        "(embeddings need the torch backend)")
    model = getattr(backend, "model", None)
    if channels_last and isinstance(model, torch.nn.Module):
        model.to(memory_format=torch.channels_last)  # in place and idempotent
    transform = transform or EvalTransform(backend.preprocessing, zoom)
    dataset = EvalDataset(images, transform, backend.labels)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    logits, embeds, sizes, finder, alone = [], [], [], [], []
    with torch.inference_mode():
        for x, _ in batches(loader, progress, desc):
            candidates = None
            if isinstance(x, list | tuple):  # a crop transform's candidate regions per photo
                x, px, score, likeness = x  # (B, K, 3, H, W), (B, K) each
                candidates = (px.numpy(), score.numpy(), likeness.numpy())
                x = x.flatten(0, 1)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)  # (B, 3, H, W), NHWC
            if both is not None:
                lg, emb = both(x)  # one forward pass for both
                emb = emb.float().cpu()  # (B, D)
            else:
                lg, emb = backend(x), None
            lg = lg.float().cpu()  # (B, C)
            if candidates is not None:  # keep "the pill" of each photo
                px, score, likeness = candidates
                log_probs, temps = candidate_log_probs(backend, lg.numpy(), px)
                rows = the_pill_rows(log_probs, likeness)
                kept = (same_photo_logits(backend, lg.numpy(), log_probs, temps, px, score,
                                          likeness, rows) if same_photo else None)
                lg, emb = lg[rows], None if emb is None else emb[rows]
                if kept is not None:
                    lg = torch.from_numpy(kept[0])
                    alone.append(kept[1])
                sizes.append(px.reshape(-1)[rows])
                finder.append(score.reshape(-1)[rows])
            logits.append(lg)
            if emb is not None:
                embeds.append(emb)
    num_classes = len(backend.labels)
    return Predictions(
        logits=torch.cat(logits).numpy() if logits else np.zeros((0, num_classes), np.float32),
        targets=np.asarray(dataset.targets, dtype=np.int64),
        true_labels=[s.label for s in images.samples],
        paths=[str(s.path) for s in images.samples],
        columns=sample_columns(images),
        embeddings=torch.cat(embeds).numpy() if embeds else None,
        pill_px=np.concatenate(sizes) if sizes else None,
        finder_score=np.concatenate(finder) if finder else None,
        alone_confidence=np.concatenate(alone) if alone else None,
    )


def candidate_log_probs(backend: Backend, logits: np.ndarray, pill_px: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate regions' calibrated log-probabilities (B * K, C), each at its pill's size
    (the card's temperature by size), and those temperatures (B * K,)."""
    from ..identify.temperature import SizeTemperature, row_temperatures
    from ..logmath import log_softmax

    temps = row_temperatures(backend.temperature, SizeTemperature.from_card(backend.card),
                             pill_px.reshape(-1))
    temps = np.broadcast_to(np.asarray(temps, dtype=np.float32), (len(logits),))
    return log_softmax(logits / temps[:, None]), temps


def the_pill_rows(log_probs: np.ndarray, likeness: np.ndarray) -> np.ndarray:
    """Rows of the candidates' calibrated ``log_probs`` (B * K, C) to keep: per photo the
    region :func:`rxvision.identify.pipeline.pick_the_pill` takes for "the pill"
    (``likeness`` (B, K))."""
    from ..identify.pipeline import pick_the_pill

    k = likeness.shape[-1]
    return (np.arange(len(likeness)) * k
            + pick_the_pill(likeness, log_probs.reshape(-1, k, log_probs.shape[-1])))


def answerable(gate: float, finder_score: np.ndarray, pill_px: np.ndarray) -> np.ndarray:
    """Which regions the pipeline answers about: a finder score at the card's gate and a
    pill of at least MIN_PILL_PX (as :meth:`PillPipeline.doubts` and ``too_small`` hold
    back; evaluation reads the pill's size in decoded pixels)."""
    from ..identify.pipeline import MIN_PILL_PX

    return (finder_score >= gate) & (pill_px >= MIN_PILL_PX)


def same_photo_logits(backend: Backend, logits: np.ndarray, log_probs: np.ndarray,
                      temps: np.ndarray, pill_px: np.ndarray, finder_score: np.ndarray,
                      likeness: np.ndarray, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """The kept rows' logits (B, C), each photo's pill weighed with its other candidate
    when both are pills the pipeline answers about (:func:`answerable`), as
    :meth:`rxvision.identify.pipeline.PillPipeline.weigh_same_photo` does, and per photo
    the pill's own probability of the weighed answer (NaN where not weighed; see
    ``Predictions.alone_confidence``); None when the card has no same-photo rule.
    ``log_probs`` and ``temps`` are :func:`candidate_log_probs` of ``logits`` (B * K, C).

    Evaluation keeps logits and divides them by each photo's temperature later, so a
    weighed photo's row is written as ``T * log p + c``: the same calibrated distribution
    after that division, with ``c`` chosen so that the energy score (``-logsumexp`` of the
    logits) stays the pill's own."""
    from ..identify.fusion import SamePhotoRule
    from ..identify.pipeline import card_finder_gate, own_probability_of_answer
    from ..logmath import logsumexp

    try:
        rule = SamePhotoRule.from_card(backend.card.get("identification") or {})
    except ValueError as exc:
        raise ArtifactError(f"the model's card: {exc}") from exc
    k = likeness.shape[-1]
    if rule is None or k < 2:
        return None
    sure = ((likeness.reshape(-1) > 0) & answerable(card_finder_gate(backend.card),
                                                      finder_score.reshape(-1),
                                                      pill_px.reshape(-1))).reshape(-1, k)
    first = np.arange(len(rows)) * k
    other = np.where(rows == first, first + 1, first)  # the other of the first two
    both = np.flatnonzero(sure[:, 0] & sure[:, 1] & (rows - first < 2))
    kept = logits[rows].astype(np.float64)
    alone = np.full(len(rows), np.nan)
    if both.size:
        own = log_probs[rows[both]]
        mixed, _ = rule.fuse(own, log_probs[other[both]])  # (n, C)
        t = temps[rows[both]].astype(np.float64)[:, None]
        shift = logsumexp(kept[both], axis=-1) - logsumexp(t * mixed, axis=-1)
        kept[both] = t * mixed + shift[:, None]
        alone[both] = own_probability_of_answer(mixed, own)
    return kept.astype(np.float32), alone


def calibrated_temperature(backend: Backend, pred: Predictions) -> float | np.ndarray:
    """The temperature each photo of ``pred`` is scored with: one per photo when the
    backend's card has a size temperature and the photos' pill sizes are known (a crop
    model), else its single temperature."""
    from ..identify.temperature import SizeTemperature, row_temperatures

    return row_temperatures(backend.temperature, SizeTemperature.from_card(backend.card),
                            pred.pill_px)


def sample_columns(images: ImageSet) -> dict[str, list[str]]:
    """Every column of the data per sample: the sample's own, then its label's metadata."""
    meta = dict(zip(images.labels, images.label_metadata, strict=True))
    rows = [{**meta.get(s.label, {}), **s.extra} for s in images.samples]
    names = sorted({k for row in rows for k in row})
    return {name: [row.get(name, "") for row in rows] for name in names}


def group_values(pred: Predictions, column: str) -> list[str]:
    """Each sample's value of ``column``; raise if no sample has that column."""
    if column not in pred.columns:
        raise DatasetError(
            f"--group-by {column}: the data has no such column "
            f"(columns found: {sorted(pred.columns) or 'none'})")
    return [v or NO_GROUP for v in pred.columns[column]]


def summarize(
    pred: Predictions,
    labels: list[str],
    temperature: float | np.ndarray = 1.0,
    group_by: str | None = None,
    top_confused: int = 20,
) -> dict[str, Any]:
    """Metrics for ``pred``: headline keys at top level, plus groups and diagnostics.

    ``temperature``: one number, or one per photo (:func:`calibrated_temperature`).

    Returns a dict with the :func:`~rxvision.engine.metrics.compute_metrics` keys, and
    ``temperature`` (the median of per-photo ones, which ``temperature_rule`` then
    describes), ``uncalibrated`` (nll/ece at T = 1), ``unknown_labels`` ({count,
    labels}), ``groups`` (value -> headline keys, only with ``group_by``), ``per_class``
    (rows) and ``most_confused`` (pairs).
    """
    known = pred.known
    probs = softmax(pred.logits[known], rows_of(temperature, known))  # (K, C)
    targets = pred.targets[known]
    result: dict[str, Any] = compute_metrics(probs, targets, labels)
    result["temperature"] = float(np.median(temperature) if np.size(temperature) else 1.0)
    if isinstance(temperature, np.ndarray):
        result["temperature_rule"] = describe_temperature(temperature)
    if len(targets):
        raw = softmax(pred.logits[known], 1.0)
        result["uncalibrated"] = {"nll": nll(raw, targets), "ece": ece(raw, targets)}
    unknown = sorted({lab for lab, k in zip(pred.true_labels, known, strict=True) if not k})
    result["unknown_labels"] = {"count": int((~known).sum()), "labels": unknown}
    if group_by is not None:
        values = np.asarray(group_values(pred, group_by))
        result["group_by"] = group_by
        result["groups"] = {}
        for value in sorted(set(values.tolist())):
            mask = values == value
            sel = mask[known]
            metrics = (compute_metrics(probs[sel], targets[sel], labels) if sel.any()
                       else empty_metrics())
            metrics["unknown"] = int((mask & ~known).sum())
            result["groups"][value] = metrics
    result["per_class"] = per_class_table(probs, targets, labels) if len(targets) else []
    result["most_confused"] = most_confused(targets, probs.argmax(axis=1), labels, top_confused) \
        if len(targets) else []
    return result


PER_CLASS_FIELDS = ("label", "precision", "recall", "f1", "support", "predicted")


def per_class_csv(rows: list[dict[str, Any]]) -> str:
    """Per-class rows as CSV text (header ``label,precision,recall,f1,support,predicted``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PER_CLASS_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write ``result`` as JSON (atomically) with per-class rows in a CSV beside it.

    ``OUT.json`` gets ``OUT.per_class.csv``; the JSON names it under ``per_class_csv``.
    """
    path = Path(path)
    csv_path = path.with_name(path.stem + ".per_class.csv")
    atomic_write_text(csv_path, per_class_csv(result.get("per_class", [])))
    doc = {k: v for k, v in result.items() if k != "per_class"}
    doc["per_class_csv"] = csv_path.name
    atomic_write_json(path, _jsonable(doc))
    return path


def _jsonable(obj: Any) -> Any:
    """NaN -> None (strict JSON) and NumPy scalars -> Python, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
