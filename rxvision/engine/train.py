"""Training loop: phone-style views from studio references, single process or DDP.

``train(cfg, data, out)`` writes a run directory that is itself a model artifact:

    RUN/model.safetensors, RUN/card.json   best epoch by validation top-1 (the artifact)
    RUN/checkpoints/last.pt                full state for ``--resume`` (tensors only)
    RUN/config.yaml                        resolved config
    RUN/log.jsonl, RUN/tb/                 per-epoch metrics (JSON lines, TensorBoard)

Each epoch draws fresh views from a generator seeded by (seed, epoch, rank), and reseeds
dropout the same way, so a run killed at any point and resumed from its last checkpoint
ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm import tqdm

from ..artifact import load_artifact, save_artifact, unwrap
from ..config import Config, ConfigError
from ..data import ImageSet, load_dataset, load_image
from ..data.synth import PhoneViewSynthesizer, SynthParams
from ..data.transforms import fill_colour
from ..io_utils import atomic_write, atomic_write_text
from ..models import RxVisionModel, build_model
from .precision import autocast_context, resolve_precision
from .schedule import lr_at

CHECKPOINT = "checkpoints/last.pt"


@dataclass
class ValidationSet:
    """Fixed phone-style views of every class, rendered once with their own seed."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    targets: torch.Tensor  # (N,)
    modes: list[str]


@dataclass
class TrainResult:
    run_dir: Path
    best_top1: float
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)


# --- distributed helpers ---------------------------------------------------------------------
def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def init_distributed() -> bool:
    """Join the process group torchrun describes (NCCL on GPU, gloo on CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


# --- data ------------------------------------------------------------------------------------
def build_synthesizer(images: ImageSet, cfg: Config, mean: list[float]) -> tuple[
        PhoneViewSynthesizer, torch.Tensor]:
    """Decode every reference once and cut out its pill sides."""
    refs = [load_image(s.path) for s in tqdm(images.samples, desc="cut out references",
                                             disable=_dist_info()[0] != 0, leave=False)]
    params = SynthParams.for_training(cfg.augment)
    synth = PhoneViewSynthesizer.from_images(refs, tuple(cfg.training.input_size), params,
                                             fill=fill_colour(mean))
    return synth, torch.tensor(images.targets(), dtype=torch.long)


def validation_views(synth: PhoneViewSynthesizer, image_targets: torch.Tensor,
                     views_per_image: int, seed: int, batch: int = 64) -> ValidationSet:
    """Render the held-out views, generator seeded by ``seed``.

    Views use the default blur and noise ranges whatever the training ones
    (``augment.blur_sigma``/``noise_std``), so validation top-1 compares across recipes.
    Both-sides and one-side views alternate over images and over each image's views, so
    one view per image still gives half of each, and two give every image one of each
    (crop framing: one side only, as the pill finder's crop shows).
    """
    synth = copy.copy(synth)  # shares the cut-out sides; only the parameters differ
    synth.params = dataclasses.replace(synth.params, blur_sigma=SynthParams.blur_sigma,
                                       noise_std=SynthParams.noise_std)
    g = torch.Generator().manual_seed(seed)
    n = len(synth)
    index = torch.arange(n).repeat(views_per_image)
    if synth.params.framing == "crop":  # a finder's crop shows one side, never both
        modes = ["one"] * len(index)
    else:
        modes = ["both" if (i + i // n) % 2 == 0 else "one" for i in range(len(index))]
    chunks = []
    for start in range(0, len(index), batch):
        part, _ = synth.render(index[start:start + batch], g, modes[start:start + batch])
        chunks.append(part)
    return ValidationSet(torch.cat(chunks), image_targets[index], modes)


def class_balanced_batches(image_targets: torch.Tensor, num_classes: int, steps: int,
                           batch_size: int, g: torch.Generator) -> torch.Tensor:
    """Image indices (steps, batch): classes drawn uniformly, then an image of that class."""
    per_class = [torch.nonzero(image_targets == c).flatten() for c in range(num_classes)]
    need = steps * batch_size
    classes = torch.cat([torch.randperm(num_classes, generator=g)
                         for _ in range(math.ceil(need / num_classes))])[:need]
    picks = torch.empty(need, dtype=torch.long)
    for i, c in enumerate(classes.tolist()):
        options = per_class[c]
        picks[i] = options[torch.randint(len(options), (1,), generator=g)]
    return picks.view(steps, batch_size)


class SyntheticBatches(torch.utils.data.IterableDataset):
    """Rendered training batches for one epoch, in plan order.

    With ``num_workers`` DataLoader workers, worker ``w`` renders batches ``w, w+n, ...``
    from its own generator (seed + w) and the DataLoader interleaves them back in order,
    so the stream is deterministic for a given worker count. Rendering in a worker
    process overlaps it with the training step.
    """

    def __init__(self, synth: PhoneViewSynthesizer, batches: torch.Tensor, seed: int):
        self.synth, self.batches, self.seed = synth, batches, seed

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):  # type: ignore[override]
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if info:
            torch.set_num_threads(1)  # leave the cores to the training step
        g = torch.Generator().manual_seed(self.seed + worker)
        for idx in self.batches[worker::workers]:
            views, _ = self.synth.render(idx, g)
            yield idx, views


def epoch_batches(synth: PhoneViewSynthesizer, batches: torch.Tensor, seed: int,
                  num_workers: int) -> torch.utils.data.DataLoader | SyntheticBatches:
    data = SyntheticBatches(synth, batches, seed)
    if num_workers == 0:
        return data
    return torch.utils.data.DataLoader(data, batch_size=None, num_workers=num_workers,
                                       prefetch_factor=2)


def uniform_batches(num_images: int, steps: int, batch_size: int,
                    g: torch.Generator) -> torch.Tensor:
    """Image indices (steps, batch) drawn by shuffled passes over all images."""
    need = steps * batch_size
    order = torch.cat([torch.randperm(num_images, generator=g)
                       for _ in range(math.ceil(need / num_images))])[:need]
    return order.view(steps, batch_size)


# --- evaluation during training ---------------------------------------------------------------
@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   device: torch.device, precision: str, channels_last: bool,
                   batch: int = 64) -> torch.Tensor:
    """Logits (N, classes) in fp32 for uint8 images (N, 3, H, W)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch].to(device).float().div_(255).sub_(mean).div_(std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            out.append(model(x).float().cpu())
    return torch.cat(out)


def validation_metrics(logits: torch.Tensor, val: ValidationSet,
                       label_smoothing: float) -> dict[str, float]:
    targets = val.targets
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    correct = top5[:, 0] == targets
    metrics = {
        "val_loss": float(F.cross_entropy(logits, targets, label_smoothing=label_smoothing)),
        "val_nll": float(F.cross_entropy(logits, targets)),
        "val_top1": float(correct.float().mean()),
        "val_top5": float((top5 == targets[:, None]).any(1).float().mean()),
    }
    for mode in sorted(set(val.modes)):
        sel = torch.tensor([m == mode for m in val.modes])
        metrics[f"val_top1_{mode}"] = float(correct[sel].float().mean())
    return metrics


# --- checkpointing -----------------------------------------------------------------------------
def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    step: int, best: float, stale: int, history: list[dict[str, Any]]) -> None:
    """Tensors-and-numbers checkpoint, written atomically, loadable with weights_only=True."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "best": best,
        "stale": stale,
        "history": json.dumps(history),
    }
    atomic_write(path, lambda p: torch.save(state, p))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"cannot resume: {path} not found (was the run started?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"cannot resume: checkpoint {path} is corrupt ({exc})") from exc


# --- the loop ----------------------------------------------------------------------------------
def _mixup(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float, smoothing: float,
           g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix images and their (label-smoothed) one-hot targets with a Beta(alpha, alpha) weight."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample()) if alpha > 0 else 1.0
    perm = torch.randperm(x.shape[0], generator=g)
    soft = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]


def train(cfg: Config, data: str | Path, out: str | Path, resume: bool = False,
          device: str | None = None, max_steps: int | None = None,
          init: str | Path | None = None) -> TrainResult:
    """Train ``cfg`` on the references in ``data`` and write the run directory ``out``.

    Args:
        max_steps: stop after this many optimiser steps in total (tests and benchmarks).
        init: a model artifact with the same architecture and labels to start from
            (fine-tuning with a fresh optimiser and schedule), instead of the config's
            pretrained backbone and a random head.
    """
    distributed = init_distributed()
    rank, world, local_rank = _dist_info()
    is_main = rank == 0
    t = cfg.training
    run = Path(out)
    if not resume and (run / CHECKPOINT).exists():
        raise ConfigError(f"{run} already holds a run; pass --resume to continue it or choose "
                          "another --out")
    if torch.cuda.is_available() and device in (None, "cuda"):
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device or "cpu")
    precision = resolve_precision(t.precision, dev)

    images = load_dataset(data)
    if images.num_classes != t.num_classes:
        raise ConfigError(
            f"config key 'training.num_classes': {t.num_classes} in the config but the data has "
            f"{images.num_classes} labels; set training.num_classes={images.num_classes}"
        )
    torch.manual_seed(t.seed)
    model: nn.Module = build_model(cfg, images.num_classes)
    if init is not None and not resume:
        _load_init(model, init, images.labels)
    preprocessing = model.data_config(t.input_size)
    synth, image_targets = build_synthesizer(images, cfg, preprocessing["mean"])
    val = validation_views(synth, image_targets, cfg.augment.val_views_per_image,
                           cfg.augment.val_seed)
    mean = torch.tensor(preprocessing["mean"], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing["std"], device=dev).view(1, 3, 1, 1)

    model.to(dev)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    if distributed and t.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)

    start_epoch, step, best, stale, history = 0, 0, -1.0, 0, []
    if resume:
        ckpt = load_checkpoint(run / CHECKPOINT)
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step = int(ckpt["epoch"]) + 1, int(ckpt["step"])
        best, stale = float(ckpt["best"]), int(ckpt["stale"])
        history = json.loads(ckpt["history"])
        if is_main:  # the log holds exactly the checkpointed epochs, whatever the crash left
            atomic_write_text(run / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    train_model = model
    if distributed:
        ids = [local_rank] if dev.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if t.compile:
        train_model = torch.compile(train_model)

    steps_per_epoch = t.steps_per_epoch or max(1, math.ceil(len(images) / (t.batch_size * world)))
    if is_main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        writer = _tensorboard(run)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    epochs_run = 0
    for epoch in range(start_epoch, t.epochs):
        if max_steps is not None and step >= max_steps:
            break
        # Everything random in this epoch derives from (seed, epoch, rank): exact resume.
        torch.manual_seed(t.seed * 1_000_003 + epoch * 7919 + rank)
        g_order = torch.Generator().manual_seed(t.seed * 7 + epoch)  # same on every rank
        view_seed = t.seed * 1_000_003 + epoch * 7919 + rank + 1
        g_mix = torch.Generator().manual_seed(view_seed + 500_009)
        if t.balanced_sampling:
            batches = class_balanced_batches(image_targets, images.num_classes, steps_per_epoch,
                                             t.batch_size * world, g_order)
        else:
            batches = uniform_batches(len(images), steps_per_epoch, t.batch_size * world, g_order)
        batches = batches[:, rank * t.batch_size:(rank + 1) * t.batch_size]
        train_model.train()
        seen, correct, loss_sum, t0 = 0, 0, 0.0, time.perf_counter()
        stream = epoch_batches(synth, batches, view_seed, t.num_workers)
        bar = tqdm(stream, total=len(batches), desc=f"epoch {epoch + 1}/{t.epochs}",
                   disable=not is_main, leave=False, dynamic_ncols=True)
        for idx, views in bar:
            if max_steps is not None and step >= max_steps:
                break
            y = image_targets[idx].to(dev)
            x = views.to(dev).float().div_(255).sub_(mean).div_(std)
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = lr_at(step / steps_per_epoch, t.lr, t.warmup_epochs, t.t_0, t.t_mult, t.eta_min)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast_context(dev, precision):
                if t.mixup_alpha > 0:
                    x, soft = _mixup(x, y, images.num_classes, t.mixup_alpha, t.label_smoothing,
                                     g_mix)
                    logits = train_model(x)
                    loss = torch.sum(-soft * F.log_softmax(logits.float(), 1), 1).mean()
                else:
                    logits = train_model(x)
                    loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            optimizer.step()
            step += 1
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            rate = seen * world / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{rate:.1f}", lr=f"{lr:.2e}")
        epochs_run += 1
        record: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "lr": lr,
            "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "images_per_s": seen * world / (time.perf_counter() - t0),
            "epoch_seconds": time.perf_counter() - t0,
        }
        if is_main:
            logits = predict_logits(model, val.images, mean, std, dev, precision, t.channels_last)
            record.update(validation_metrics(logits, val, t.label_smoothing))
            improved = record["val_top1"] > best
            best, stale = (record["val_top1"], 0) if improved else (best, stale + 1)
            record["best_val_top1"] = best
            history.append(record)
            if improved:
                save_artifact(run, model, cfg, images.labels, images.label_metadata,
                              metrics=_card_metrics(record),
                              extra={"training": _summary(history, init)})
            save_checkpoint(run / CHECKPOINT, model, optimizer, epoch, step, best, stale, history)
            _log(run, writer, record)
            tqdm.write(_format(record))
        if distributed:
            flags = torch.tensor([stale], dtype=torch.long)
            dist.broadcast(flags, src=0)  # every rank stops at the same epoch
            stale = int(flags[0])
        if t.early_stopping_patience and stale >= t.early_stopping_patience:
            if is_main:
                tqdm.write(f"early stopping: no val_top1 gain for {stale} epochs")
            break
    if distributed:
        _record_rank_checksums(run, model, is_main)
        dist.barrier()
    if is_main:
        writer.close()
        _finish(run, model, val, mean, std, dev, precision, t.channels_last)
    return TrainResult(run, best, epochs_run, history)


def _finish(run: Path, model: nn.Module, val: ValidationSet, mean: torch.Tensor,
            std: torch.Tensor, dev: torch.device, precision: str, channels_last: bool) -> None:
    """Fit the temperature on the validation views with the best weights; store it."""
    from ..artifact import load_artifact, update_card
    from .calibration import fit_temperature

    best = load_artifact(run, device=dev)
    logits = predict_logits(best.model, val.images, mean, std, dev, precision, channels_last)
    temperature = fit_temperature(logits, val.targets)
    before = float(F.cross_entropy(logits, val.targets))
    after = float(F.cross_entropy(logits / temperature, val.targets))
    update_card(run, calibration={"temperature": temperature, "nll_before": before,
                                  "nll_after": after, "fitted_on": "training validation views",
                                  "n": len(val.targets)})
    tqdm.write(f"calibrated: temperature {temperature:.3f}, val NLL {before:.4f} -> {after:.4f}")


def _record_rank_checksums(run: Path, model: nn.Module, is_main: bool) -> None:
    """Gather a checksum of every rank's weights; rank 0 logs them (they must agree)."""
    flat = torch.cat([p.detach().double().flatten().cpu() for p in unwrap(model).parameters()])
    local = torch.tensor([float(flat.sum()), float((flat * flat).sum())], dtype=torch.float64)
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    if is_main:
        sums = [g.tolist() for g in gathered]
        with open(run / "log.jsonl", "a") as fh:
            fh.write(json.dumps({"ddp_weight_checksums": sums}) + "\n")


def _card_metrics(record: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in record if k.startswith("val_")]
    return {"validation": {k: record[k] for k in keys}, "epoch": record["epoch"]}


def _load_init(model: nn.Module, init: str | Path, labels: list[str]) -> None:
    """Copy an artifact's weights into ``model``; same architecture and the same labels, in
    any order (an enrolled model lists its new pills after the trained ones: its classifier
    rows are put in the data's order)."""
    art = load_artifact(init)
    if sorted(art.labels) != sorted(labels):
        missing = sorted(set(labels) - set(art.labels))
        raise ConfigError(f"--init {init}: its {len(art.labels)} labels are not the data's "
                          f"{len(labels)} labels (e.g. not in it: {missing[:3]}); fine-tune "
                          "only on the pills it knows: enroll new pills first with "
                          "`rxvision enroll`")
    state = art.model.state_dict()
    if art.labels != labels:
        row = {label: i for i, label in enumerate(art.labels)}
        order = torch.tensor([row[label] for label in labels])
        prefix = _classifier_prefix(model)
        for key in [k for k in state if k.startswith(prefix)]:
            if state[key].ndim and state[key].shape[0] == len(labels):
                state[key] = state[key][order]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"--init {init}: its architecture differs from the config's "
                          f"({str(exc).splitlines()[0]})") from exc


def _classifier_prefix(model: nn.Module) -> str:
    """The state-dict key prefix of the model's final (per-class) layer."""
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return name + "."
    raise ConfigError("the model's final layer is not one of its modules")


def _summary(history: list[dict[str, Any]], init: str | Path | None = None) -> dict[str, Any]:
    summary = {"epochs": len(history), "seconds": sum(h["epoch_seconds"] for h in history),
               "images_per_s": float(np.mean([h["images_per_s"] for h in history]))}
    if init is not None:
        summary["init"] = str(init)
    return summary


def _tensorboard(run: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run / "tb"))


def _log(run: Path, writer: Any, record: dict[str, Any]) -> None:
    # Append-only JSON lines: a crash loses at most the line being written.
    with open(run / "log.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    for key, value in record.items():
        if isinstance(value, int | float) and key != "epoch":
            writer.add_scalar(key, value, record["epoch"])
    writer.flush()


def _format(r: dict[str, Any]) -> str:
    return (f"epoch {r['epoch']}: loss {r['train_loss']:.3f} acc {r['train_acc']:.3f} "
            f"| val top1 {r['val_top1']:.3f} (both {r.get('val_top1_both', float('nan')):.3f}, "
            f"one {r.get('val_top1_one', float('nan')):.3f}) top5 {r['val_top5']:.3f} "
            f"| {r['images_per_s']:.1f} img/s, {r['epoch_seconds']:.0f}s")


__all__ = ["RxVisionModel", "TrainResult", "train"]
