"""Training step time with the real data path vs. in-memory tensors (issue: loader overhead).

The real path renders every batch with the phone-view synthesiser from the decoded
references, as `rxvision train` does; the in-memory path reuses one pre-rendered batch.
Both run the same forward/backward/optimiser step. Prints both medians and their ratio.

    python benchmarks/train_step.py --config configs/c3pi-1k.yaml \
        --data ../shared/data/c3pi-1k/manifest.csv --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from rxvision.config import load_config
from rxvision.data import load_dataset
from rxvision.engine.precision import autocast_context, resolve_precision
from rxvision.engine.train import build_synthesizer, class_balanced_batches, epoch_batches
from rxvision.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="render in this many DataLoader workers (default: the config's "
                             "training.num_workers)")
    parser.add_argument("--json", default=None, help="also write the numbers as JSON")
    args = parser.parse_args()

    cfg = load_config(args.config)
    t = cfg.training
    images = load_dataset(args.data)
    model = build_model(cfg, images.num_classes)
    pre = model.data_config(t.input_size)
    synth, targets = build_synthesizer(images, cfg, pre["mean"])
    mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"]).view(1, 3, 1, 1)
    device = torch.device("cpu")
    precision = resolve_precision(t.precision, device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr)
    g = torch.Generator().manual_seed(0)

    n = args.warmup + args.steps
    workers = t.num_workers if args.workers is None else args.workers
    # The training loop's data path: planned class-balanced batches, rendered as they are
    # needed. The in-memory path gets the same kind of batches, rendered before timing.
    plan = class_balanced_batches(targets, images.num_classes, 2 * n, t.batch_size, g)
    stream = iter(epoch_batches(synth, plan[n:], seed=1, num_workers=workers))
    in_memory_batches = [(idx, synth.render(idx, g)[0]) for idx in plan[:n]]

    def step(views: torch.Tensor, idx: torch.Tensor) -> None:
        x = views.float().div_(255).sub_(mean).div_(std)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            loss = F.cross_entropy(model(x).float(), targets[idx],
                                   label_smoothing=t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # Interleaved (in-memory step, real step, in-memory step, ...) so that drift in machine
    # speed over the run (other load, clocks) hits both paths alike.
    in_memory: list[float] = []
    real: list[float] = []
    for i in range(n):
        for times, source in ((in_memory, None), (real, stream)):
            start = time.perf_counter()
            idx, views = in_memory_batches[i] if source is None else next(source)
            step(views, idx)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)

    result = {
        "batch_size": t.batch_size,
        "input_size": t.input_size,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "loader_workers": workers,
        "in_memory_step_s": statistics.median(in_memory),
        "real_loader_step_s": statistics.median(real),
    }
    result["ratio"] = result["real_loader_step_s"] / result["in_memory_step_s"]
    print(f"in-memory tensors : {result['in_memory_step_s'] * 1000:.0f} ms/step")
    print(f"real data path    : {result['real_loader_step_s'] * 1000:.0f} ms/step")
    print(f"ratio             : {result['ratio']:.3f} (target <= 1.10)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
