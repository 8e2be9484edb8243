"""Train the pill segmenter on composites (:mod:`rxvision.locate.composite`), on a CPU.

Every step draws a fresh batch of composites (so nothing repeats and there is no epoch),
predicts foreground and core maps, and minimises binary cross-entropy on both plus a soft
Dice term on the foreground (small pills would otherwise be outweighed by background). The
learning rate warms up for ``warmup`` steps and then follows a cosine to zero; the decoder
learns ``decoder_lr_scale`` times faster than the pretrained encoder. A fixed set of
held-out composites (another seed) is scored during and after training: pixel IoU of the
foreground and box recall at IoU 0.5. These are own-generator figures: they show the
training works, not that real photos are segmented (benchmarks/locate_eval.py measures
that).

Example:
    >>> opts = SegmenterTrainOptions(refs="../shared/data/c3pi-4k/manifest.csv",
    ...                              out="runs/segmenter", steps=600)
    >>> train_segmenter(opts, log=print)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data import load_dataset, load_image
from ..io_utils import atomic_write_json
from .composite import CompositeParams, Composites, segmentation_targets
from .instances import InstanceThresholds, split_instances
from .scoring import BoxMatch, match_boxes
from .segmenter import Segmenter
from .segnet import PillSegNet, SegNetConfig


@dataclass
class SegmenterTrainOptions:
    """Options of ``rxvision segmenter train`` (written to the run folder and the card)."""

    refs: str  # manifest CSV or folder of C3PI-style reference photos
    out: str
    steps: int = 600
    batch: int = 12
    size: int = 160  # composite side, pixels
    input_longest: int = 320  # the working size photos are segmented at
    lr: float = 1e-3
    decoder_lr_scale: float = 3.0
    weight_decay: float = 1e-4
    warmup: int = 30
    seed: int = 0
    max_refs: int | None = None  # use the first N references (fewer cut-outs to make)
    # A time budget: the schedule runs on max(step / steps, minutes / max_minutes), so a
    # busy CPU gets fewer steps but a full warm-up and cosine decay (the card records both).
    max_minutes: float | None = None
    val_count: int = 64
    val_seed: int = 10_000
    eval_every: int = 100
    log_every: int = 10
    # One thread by default: on a shared 2-core CPU, two OpenMP threads were 5x slower per
    # step than one (they wait on each other whenever another process takes a core).
    threads: int | None = 1
    workers: int = 1  # processes drawing composites while the network trains
    bf16: bool = False  # CPU autocast to bfloat16 (faster on CPUs with AVX512-BF16/AMX)
    net: SegNetConfig = field(default_factory=SegNetConfig)
    # A segmenter artifact to continue from: its network, weights and thresholds replace
    # ``net`` (the schedule still warms up and decays over this run's steps).
    init: str | None = None


def _batch(
    comp: Composites, rng: np.random.Generator, n: int
) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """n composites: uint8 images (n, 3, S, S), targets (n, 2, S, S), label maps."""
    images, targets, labels = [], [], []
    for _ in range(n):
        image, label = comp.sample(rng)
        fg, core = segmentation_targets(label)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        targets.append(torch.from_numpy(np.stack([fg, core])))
        labels.append(label)
    return torch.stack(images), torch.stack(targets), labels


class _Batches(torch.utils.data.IterableDataset):
    """An endless stream of composite batches; each worker draws from its own seed."""

    def __init__(self, comp: Composites, batch: int, seed: int):
        self.comp, self.batch, self.seed = comp, batch, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            images, targets, _ = _batch(self.comp, rng, self.batch)
            yield images, targets


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE on foreground and core, plus soft Dice on the foreground; logits (B, 2, H, W)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    p = torch.sigmoid(logits[:, 0])
    t = targets[:, 0]
    inter = (p * t).sum(dim=(1, 2))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2)) + t.sum(dim=(1, 2)) + 1)
    return bce + dice.mean()


def _boxes(labels: np.ndarray) -> list[tuple[int, int, int, int]]:
    from scipy import ndimage

    return [
        (s[1].start, s[0].start, s[1].stop, s[0].stop)
        for s in ndimage.find_objects(labels)
        if s is not None
    ]


@torch.no_grad()
def score_composites(
    net: PillSegNet,
    x: torch.Tensor,
    labels: list[np.ndarray],
    thresholds: InstanceThresholds,
    batch: int = 16,
) -> dict[str, float]:
    """Foreground pixel IoU (over the whole set) and box recall/precision at IoU 0.5."""
    was_training = net.training
    net.eval()
    inter = union = 0
    match = BoxMatch([], 0)
    for start in range(0, len(x), batch):
        probs = torch.sigmoid(net(x[start : start + batch])).numpy()
        for p, truth in zip(probs, labels[start : start + batch], strict=True):
            predicted = p[0] > thresholds.foreground
            inter += int((predicted & (truth > 0)).sum())
            union += int((predicted | (truth > 0)).sum())
            pills, _ = split_instances(p[0], p[1], thresholds)
            match = match + match_boxes(_boxes(pills), _boxes(truth))
    net.train(was_training)
    return {
        "foreground_iou": inter / max(union, 1),
        "box_recall_50": match.recall(0.5),
        "box_precision_50": match.precision(0.5),
        "box_mean_iou": match.mean_iou(),
        "pills": len(match.ious),
    }


def train_segmenter(opts: SegmenterTrainOptions, log: Callable[[str], None] = print) -> Path:
    """Train, score on held-out composites, and save the segmenter artifact to ``opts.out``."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    out = Path(opts.out)
    seg = _initial_segmenter(opts)  # before anything is written: --init may be refused
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "train_options.json", asdict(opts))
    started = time.time()
    samples = load_dataset(opts.refs).samples[: opts.max_refs]
    params = CompositeParams(size=opts.size, photo_side=opts.input_longest)
    comp = Composites.from_images([load_image(s.path) for s in samples], params)
    log(
        f"{len(comp.sides)} pill sides cut out of {len(samples)} references "
        f"({time.time() - started:.0f} s)"
    )

    net = seg.net
    val_images, _, val_labels = _batch(comp, np.random.default_rng(opts.val_seed), opts.val_count)
    val_x = seg.normalize(val_images)
    net.to(memory_format=torch.channels_last)  # about 2x faster convolutions on CPU
    decoder = [p for n, p in net.named_parameters() if not n.startswith("encoder.")]
    encoder = [p for n, p in net.named_parameters() if n.startswith("encoder.") and p.requires_grad]
    optimiser = torch.optim.AdamW(
        [
            {"params": encoder, "lr": opts.lr},
            {"params": decoder, "lr": opts.lr * opts.decoder_lr_scale},
        ],
        weight_decay=opts.weight_decay,
    )
    base = [g["lr"] for g in optimiser.param_groups]
    batches = iter(
        torch.utils.data.DataLoader(
            _Batches(comp, opts.batch, opts.seed),
            batch_size=None,
            num_workers=opts.workers,
            persistent_workers=opts.workers > 0,
        )
    )
    net.train()
    history: list[dict[str, Any]] = []
    step, t0, smoothed, progress = 0, time.time(), None, 0.0
    while progress < 1.0:
        step += 1
        minutes = (time.time() - t0) / 60
        progress = step / opts.steps
        if opts.max_minutes:
            progress = max(progress, minutes / opts.max_minutes)
        warm = min(1.0, step / max(opts.warmup, 1))
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        for group, lr in zip(optimiser.param_groups, base, strict=True):
            group["lr"] = lr * warm * cosine
        images, targets = next(batches)
        x = seg.normalize(images).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts.bf16):
            logits = net(x)
        loss = segmentation_loss(logits, targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        smoothed = loss.item() if smoothed is None else 0.9 * smoothed + 0.1 * loss.item()
        if step % opts.log_every == 0 or step == 1:
            minutes = (time.time() - t0) / 60
            log(
                f"step {step} ({100 * min(progress, 1):.0f}%) loss {smoothed:.4f} "
                f"{step * opts.batch / (60 * minutes + 1e-9):.1f} img/s {minutes:.1f} min"
            )
        if opts.eval_every and step % opts.eval_every == 0 and progress < 1.0:
            scores = score_composites(net, val_x, val_labels, seg.thresholds)
            history.append({"step": step, **scores})
            log(f"held-out composites at step {step}: " + _fmt(scores))
    minutes = (time.time() - t0) / 60
    net.eval().to(memory_format=torch.contiguous_format)
    scores = score_composites(net, val_x, val_labels, seg.thresholds)
    log("held-out composites (own generator): " + _fmt(scores))
    training = {
        "options": asdict(opts),
        "steps_done": step,
        "images_seen": step * opts.batch,
        "minutes": round(minutes, 1),
        "history": history,
        "data": f"composites of {len(comp.sides)} sides of {len(samples)} references "
        f"from {opts.refs} over procedural surfaces (rxvision.locate.textures)",
    }
    metrics = {
        "held_out_composites": {
            **scores,
            "count": opts.val_count,
            "note": "own composite generator, not real photos",
        }
    }
    seg.save(out, metrics=metrics, training=training)
    log(f"saved {out}: {step} steps in {minutes:.1f} min")
    return out


def _initial_segmenter(opts: SegmenterTrainOptions) -> Segmenter:
    """A fresh network from ``opts.net``, or the ``opts.init`` artifact's (whose network
    then becomes ``opts.net``, so that the options written say what was trained)."""
    if not opts.init:
        return Segmenter(PillSegNet(opts.net), opts.input_longest)
    start = Segmenter.load(opts.init)
    if start.input_longest != opts.input_longest:
        raise ConfigError(
            f"--init {opts.init} segments photos at {start.input_longest} px, this run at "
            f"{opts.input_longest}: pass --input-longest {start.input_longest}"
        )
    opts.net = start.net.config
    return start


def _fmt(scores: dict[str, float]) -> str:
    return " ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()
    )
