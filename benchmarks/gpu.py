"""GPU benchmark of the spec's ResNet50 RxVision model (random init, 1000 classes).

Measures throughput at a large batch (default 256) and latency at batch 1 for:

- ``eager-fp32``: plain PyTorch (cuDNN may use TF32 for convolutions, torch's default);
- ``eager-bf16-cl``: bfloat16 autocast + channels_last;
- ``compiled-bf16-cl``: the same under ``torch.compile`` (default mode ``reduce-overhead``,
  which replays CUDA graphs; inductor ``freezing`` folds BatchNorm into the convolutions).

Inputs are random tensors already on the GPU (no decoding or host-to-device copies), so
the numbers are model speed. Runs only where CUDA exists; about 2-4 minutes on an H100,
most of it compilation. Prints JSON; ``--json`` writes it, ``--markdown`` appends a table.

Example:
    python benchmarks/gpu.py --markdown docs/benchmarks.md --json gpu.json
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

VARIANTS = ("eager-fp32", "eager-bf16-cl", "compiled-bf16-cl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "model.yaml"),
                   help="architecture config (default: configs/model.yaml, random init)")
    p.add_argument("--batch-size", type=int, default=256, help="throughput batch (default 256)")
    p.add_argument("--throughput-iters", type=int, default=50, metavar="N")
    p.add_argument("--latency-iters", type=int, default=200, metavar="N")
    p.add_argument("--mode", default="reduce-overhead",
                   choices=["default", "reduce-overhead", "max-autotune",
                            "max-autotune-no-cudagraphs"],
                   help="torch.compile mode (max-autotune compiles for several minutes)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--json", metavar="OUT", help="write the JSON report here")
    p.add_argument("--markdown", metavar="FILE", help="append a results table to this file")
    p.add_argument("--smoke-test-on-cpu", action="store_true",
                   help="run the script's plumbing on the CPU (tests only; numbers meaningless)")
    return p.parse_args(argv)


def build_model(config: str, device: str) -> tuple[torch.nn.Module, tuple[int, int]]:
    """The config's model (random init, eval mode) on ``device`` and its input size."""
    from rxvision.config import load_config
    from rxvision.models import build_model as build

    cfg = load_config(config, ["architecture.backbone.pretrained=false"])
    torch.manual_seed(0)
    return build(cfg).eval().to(device), tuple(cfg.training.input_size)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_runner(model: torch.nn.Module, variant: str, mode: str, device: str) -> Callable:
    """A function batch -> logits for one variant (compiled lazily on first call)."""
    if variant == "eager-fp32":
        return model
    model = model.to(memory_format=torch.channels_last)
    fn = torch.compile(model, mode=mode, dynamic=False) if variant.startswith("compiled") \
        else model

    def run(x: torch.Tensor) -> torch.Tensor:
        if variant.startswith("compiled"):
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device, dtype=torch.bfloat16):
            return fn(x)

    return run


def throughput(run: Callable, x: torch.Tensor, iters: int, device: str) -> float:
    """Images per second over ``iters`` back-to-back batches, synchronised at both ends."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        run(x)
    synchronize(device)
    return x.shape[0] * iters / (time.perf_counter() - t0)


def latencies_ms(run: Callable, x: torch.Tensor, iters: int, device: str) -> list[float]:
    """Wall-clock milliseconds per synchronised call (launch overhead included)."""
    out = []
    for _ in range(iters):
        synchronize(device)
        t0 = time.perf_counter()
        run(x)
        synchronize(device)
        out.append((time.perf_counter() - t0) * 1000)
    return out


@torch.inference_mode()
def measure(model: torch.nn.Module, input_size: tuple[int, int], variant: str,
            args: argparse.Namespace, device: str) -> dict:
    run = make_runner(model, variant, args.mode, device)
    cl = variant != "eager-fp32"
    result: dict = {"variant": variant}
    for batch, kind in ((args.batch_size, "throughput"), (1, "latency")):
        x = torch.randn(batch, 3, *input_size, device=device)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        for _ in range(3):  # compile / record CUDA graphs / cuDNN autotune
            run(x)
        synchronize(device)
        result[f"warmup_s_batch{batch}"] = round(time.perf_counter() - t0, 2)
        if kind == "throughput":
            result["batch_size"] = batch
            result["throughput_ips"] = round(
                throughput(run, x, args.throughput_iters, device), 1)
        else:
            ms = sorted(latencies_ms(run, x, args.latency_iters, device))
            result["latency_ms_p50"] = round(statistics.median(ms), 3)
            result["latency_ms_p99"] = round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3)
        print(f"{variant} batch {batch}: done", file=sys.stderr)
    return result


def machine(device: str) -> dict:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if device != "cuda":
        return {"gpu": "none (CPU smoke test)", "torch": torch.__version__, "cuda": None,
                "date": date}
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "memory_gb": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "date": date,
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"\n### GPU run: {m['gpu']}, torch {m['torch']}, CUDA {m['cuda']} ({m['date']})\n",
        f"Model: {report['model']}; compile mode `{report['compile_mode']}`; inputs on GPU.\n",
        f"| variant | throughput img/s (batch {report['batch_size']}) | latency p50 ms (batch 1) "
        "| latency p99 ms (batch 1) |",
        "|---|---:|---:|---:|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error'][:80]} | | |")
            continue
        lines.append(f"| {r['variant']} | {r['throughput_ips']:,.0f} | {r['latency_ms_p50']:.2f} "
                     f"| {r['latency_ms_p99']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = "cpu" if args.smoke_test_on_cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU, and torch.cuda.is_available() is False "
              "here; nothing was measured. Use `rxvision benchmark` for CPU numbers.",
              file=sys.stderr)
        return 2
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        print(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    import torch._inductor.config as inductor_config  # slow import: only where it runs

    torch.backends.cudnn.benchmark = True
    inductor_config.freezing = True  # fold BatchNorm and weights into constants (inference)
    model, input_size = build_model(args.config, device)
    results = []
    for variant in variants:
        if device == "cuda":
            torch.cuda.empty_cache()
        try:  # a failed compile must not lose the eager numbers; the error is reported
            results.append(measure(copy.deepcopy(model), input_size, variant, args, device))
        except Exception as exc:
            print(f"{variant} failed: {exc!r}", file=sys.stderr)
            results.append({"variant": variant, "error": repr(exc)[:500]})
    report = {
        "machine": machine(device),
        "model": f"RxVision {Path(args.config).name} (random init, "
                 f"{model.num_classes} classes, {input_size[0]}x{input_size[1]})",
        "compile_mode": args.mode,
        "batch_size": args.batch_size,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        from rxvision.io_utils import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    if args.markdown:
        from rxvision.io_utils import atomic_write_text

        path = Path(args.markdown)
        old = path.read_text() if path.is_file() else ""
        atomic_write_text(path, old + markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
