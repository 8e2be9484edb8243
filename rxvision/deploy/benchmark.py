"""CPU inference benchmark: RxVision and its plain timm backbone across runtimes.

For each (model, backend) a fresh worker process (``spawn``) builds the model, warms up
and times every batch size, so each backend's peak resident memory is its own (it includes
the Python + torch runtime of the worker, reported as ``baseline_rss_mb``). With
``isolate=False`` everything runs in this process and ``peak_rss_mb`` is cumulative.

With ``rounds > 1`` the whole sequence of (model, backend) workers runs that many times,
interleaved (round 1: every backend, then round 2: every backend, ...), and each point's
statistics pool the calls of all rounds. A shared machine's speed drifts over minutes; run
back to back, two backends would see different machines and their ratio would carry the
drift. Interleaved, each round gives its own ratio, and the summary reports their median
and range beside the pooled ratio.

Backends: ``torch-fp32`` (eager), ``torch-cl`` (eager, channels_last), ``torch-bf16``
(channels_last + bfloat16 autocast), ``torch-compile`` (inductor, channels_last),
``onnx-fp32`` and ``onnx-int8`` (onnxruntime CPU, exported and quantised in this process
before timing). Numbers are measured, never judged: nothing here passes or fails on time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import timm
import torch
from torch import nn

from ..artifact import WEIGHTS_NAME, load_artifact, read_card
from ..config import config_from_dict, load_config
from ..identify.bundled import resolve_model_path
from ..identify.onnx_backend import OnnxModel
from ..models import build_model
from .export import (
    ArrayCalibrationReader,
    ImageCalibrationReader,
    export_onnx,
    quantize_int8,
    split_images,
)

BACKENDS = ("torch-fp32", "torch-cl", "torch-bf16", "torch-compile", "onnx-fp32", "onnx-int8")
DEFAULT_BACKENDS = ("torch-fp32", "torch-cl", "onnx-fp32", "onnx-int8")
SEED = 0


class BenchmarkError(ValueError):
    """A benchmark request is invalid."""


@dataclass
class ModelSpec:
    """How a worker rebuilds a model: picklable, weights do not matter for speed.

    ``kind`` is ``"artifact"`` (``ref`` = directory), ``"config"`` (``ref`` = config
    dict, random init) or ``"timm"`` (``ref`` = timm model name, random init).
    """

    name: str
    kind: str
    ref: Any
    num_classes: int
    input_size: tuple[int, int]

    def build(self) -> nn.Module:
        torch.manual_seed(SEED)
        if self.kind == "artifact":
            return load_artifact(self.ref).model.eval()
        if self.kind == "config":
            return build_model(config_from_dict(self.ref), self.num_classes).eval()
        return timm.create_model(self.ref, pretrained=False, num_classes=self.num_classes).eval()

    def torch_size_mb(self, model: nn.Module | None = None) -> tuple[float, str]:
        """Size on disk of the torch weights (safetensors file, else fp32 state bytes)."""
        if self.kind == "artifact":
            return (Path(self.ref) / WEIGHTS_NAME).stat().st_size / 1e6, "safetensors file"
        model = model or self.build()
        nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        return nbytes / 1e6, "parameters + buffers, fp32"


@dataclass
class Task:
    """One worker's job: a model on one backend at every batch size."""

    model: ModelSpec
    backend: str
    batch_sizes: list[int]
    iters: int
    warmup: int
    max_seconds: float
    threads: int
    onnx_path: str | None = None
    size_mb: float = 0.0
    size_source: str = ""


# --- timing -------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process image so far, in MB.

    Linux's VmHWM belongs to the current address space, so a spawned worker reports only
    its own peak; ``ru_maxrss`` would not do: it carries the parent's peak through fork+exec.
    """
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_calls(fn: Callable[[], Any], iters: int, warmup: int, max_seconds: float) -> list[float]:
    """Seconds per call after ``warmup`` calls; stop at ``iters`` calls or ``max_seconds``."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds and len(times) >= min(iters, 3):
            break
    return times


def latency_stats(times: list[float], batch: int) -> dict[str, float]:
    ms = np.asarray(times) * 1000
    return {
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
        "latency_ms_p90": round(float(np.percentile(ms, 90)), 3),
        "latency_ms_p99": round(float(np.percentile(ms, 99)), 3),
        "latency_ms_mean": round(float(ms.mean()), 3),
        # The fastest call is the least disturbed by other processes on a shared machine.
        "latency_ms_min": round(float(ms.min()), 3),
        "throughput_ips": round(batch * 1000 / float(statistics.median(ms)), 2),
        "iters": len(times),
    }


def _runner(task: Task) -> Callable[[torch.Tensor], Any]:
    """A function running one batch on the task's backend (model built here)."""
    if task.backend.startswith("onnx"):
        onnx_model = OnnxModel(task.onnx_path, threads=task.threads)
        return lambda x: onnx_model.run_numpy(x.numpy())
    model = task.model.build()
    if task.backend == "torch-fp32":
        return lambda x: model(x)
    model = model.to(memory_format=torch.channels_last)
    if task.backend == "torch-compile":
        model = torch.compile(model)
    autocast = task.backend == "torch-bf16"

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with contextlib.ExitStack() as stack:
            if autocast:
                stack.enter_context(torch.autocast("cpu", torch.bfloat16))
            if task.backend == "torch-compile":
                import torch._inductor.config as inductor_config  # slow import: only here

                # Freezing folds BatchNorm and prepacks weights: inference-only, big on CPU.
                stack.enter_context(inductor_config.patch(freezing=True))
            return model(x)

    return run


def run_task(task: Task) -> list[dict[str, Any]]:
    """Time one (model, backend) at every batch size; runs inside the worker process."""
    torch.set_num_threads(task.threads)
    baseline = peak_rss_mb()
    t0 = time.perf_counter()
    run = _runner(task)
    setup_s = time.perf_counter() - t0
    results = []
    gen = torch.Generator().manual_seed(SEED)
    # Ascending batch sizes: the peak after batch b is the peak of running up to b.
    for batch in sorted(task.batch_sizes):
        x = torch.randn(batch, 3, *task.model.input_size, generator=gen)
        with torch.inference_mode():
            times = time_calls(lambda x=x: run(x), task.iters, task.warmup, task.max_seconds)
        results.append({
            "model": task.model.name,
            "backend": task.backend,
            "batch_size": batch,
            **latency_stats(times, batch),
            "size_mb": round(task.size_mb, 2),
            "size_source": task.size_source,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "baseline_rss_mb": round(baseline, 1),
            "setup_s": round(setup_s, 2),
            "threads": task.threads,
            "times_s": times,  # raw, for pooling rounds; run_benchmark drops it
        })
    return results


# --- preparation --------------------------------------------------------------------------
def prepare_onnx(spec: ModelSpec, workdir: Path, int8: bool, calibration: str | None,
                 num_calibration: int) -> dict[str, Any]:
    """Export ``spec`` to fp32 (and int8) ONNX in ``workdir``; return paths and notes."""
    model = spec.build()
    fp32 = export_onnx(model, workdir / f"{spec.name}.fp32.onnx", spec.input_size)
    out: dict[str, Any] = {"onnx-fp32": fp32}
    if int8:
        if calibration:
            paths = split_images(calibration, num_calibration, 0)[0]
            pre = (load_artifact(spec.ref).preprocessing if spec.kind == "artifact"
                   else model_preprocessing(model, spec.input_size))
            reader = ImageCalibrationReader(paths, pre)
            note = f"{len(paths)} images from {calibration}"
        else:
            rng = np.random.default_rng(SEED)
            shape = (1, 3, *spec.input_size)
            reader = ArrayCalibrationReader(
                [rng.standard_normal(shape, dtype=np.float32) for _ in range(num_calibration)])
            note = f"{num_calibration} random N(0,1) inputs (speed only; not for accuracy)"
        out["onnx-int8"] = workdir / f"{spec.name}.int8.onnx"
        settings = quantize_int8(fp32, out["onnx-int8"], reader)
        out["int8_calibration"] = (f"{note}; first {settings['float_convs']} convolutions "
                                   "kept float")
    return out


def model_preprocessing(model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
    if hasattr(model, "data_config"):
        return model.data_config(input_size)
    cfg = timm.data.resolve_data_config(model=model)
    return {"input_size": list(input_size), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
            "interpolation": cfg.get("interpolation", "bicubic")}


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, cores, ISA features relevant to int8/bf16, software versions, load."""
    cpu, flags = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name") and cpu in ("unknown", "x86_64", ""):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    import psutil

    return {
        "cpu": cpu,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "threads": threads,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "isa": sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                  "avx512_bf16", "amx_tile", "amx_int8"}),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "timm": timm.__version__,
    }


# --- orchestration ------------------------------------------------------------------------
def run_benchmark(
    models: list[ModelSpec],
    backends: list[str],
    batch_sizes: list[int],
    *,
    iters: int = 30,
    warmup: int = 3,
    max_seconds: float = 10.0,
    threads: int | None = None,
    isolate: bool = True,
    calibration: str | None = None,
    num_calibration: int = 16,
    rounds: int = 1,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Benchmark every (model, backend) pair; return ``{"machine", "options", "results"}``.

    ``iters`` and ``max_seconds`` apply to each point in each of the ``rounds``.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise BenchmarkError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    if not backends or not batch_sizes or min(batch_sizes) < 1 or iters < 1 or warmup < 0:
        raise BenchmarkError("need at least one backend, batch sizes >= 1, --iters >= 1")
    if rounds < 1:
        raise BenchmarkError(f"--rounds must be at least 1, got {rounds}")
    threads = threads or torch.get_num_threads()
    report: dict[str, Any] = {"machine": machine_info(threads), "results": []}
    report["options"] = {
        "backends": backends, "batch_sizes": batch_sizes, "iters": iters, "warmup": warmup,
        "max_seconds_per_point": max_seconds, "rounds": rounds,
        "peak_rss": ("per (model, backend) worker process, includes its runtime baseline"
                     if isolate else "cumulative peak of one process (not separable)"),
        "inputs": "random N(0,1) tensors, preprocessing excluded",
        "int8_calibration": {},
    }
    with tempfile.TemporaryDirectory(prefix="rxvision-bench-") as tmp:
        tasks = []
        for spec in models:
            wanted = [b for b in backends if b.startswith("onnx")]
            onnx_files: dict[str, Any] = {}
            if wanted:
                log(f"exporting {spec.name} to ONNX{' + int8' if 'onnx-int8' in wanted else ''}")
                onnx_files = prepare_onnx(spec, Path(tmp), "onnx-int8" in wanted, calibration,
                                          num_calibration)
                if "int8_calibration" in onnx_files:
                    report["options"]["int8_calibration"][spec.name] = onnx_files[
                        "int8_calibration"]
            torch_size = spec.torch_size_mb() if any(b.startswith("torch") for b in backends) \
                else (0.0, "")
            for backend in backends:
                if backend.startswith("onnx"):
                    path = onnx_files[backend]
                    size = (Path(path).stat().st_size / 1e6, "onnx file")
                else:
                    path, size = None, torch_size
                tasks.append(Task(spec, backend, list(batch_sizes), iters, warmup, max_seconds,
                                  threads, str(path) if path else None, *size))
        per_round = []
        for r in range(rounds):
            results = []
            for task in tasks:
                log(f"{f'round {r + 1}/{rounds}: ' if rounds > 1 else ''}timing "
                    f"{task.model.name} {task.backend} at batch "
                    f"{','.join(map(str, batch_sizes))}")
                results.extend(_execute(task, isolate))
            per_round.append(results)
    report["results"] = pool_rounds(per_round)
    report["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    report["summary"] = summarize(report["results"])
    if rounds > 1:
        report["summary"].update(round_ratios(per_round))
    return report


def pool_rounds(per_round: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One result per point: statistics over the calls of every round, peak RSS the max."""
    pooled = []
    for point in per_round[0]:
        key = (point["model"], point["backend"], point["batch_size"])
        same = [_find(results, *key) for results in per_round]
        times = [t for r in same for t in r["times_s"]]
        merged = {k: v for k, v in point.items() if k != "times_s"}
        merged.update(latency_stats(times, point["batch_size"]))
        merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in same)
        merged["setup_s"] = round(statistics.median(r["setup_s"] for r in same), 2)
        if len(per_round) > 1:
            merged["latency_ms_p50_per_round"] = [r["latency_ms_p50"] for r in same]
        pooled.append(merged)
    return pooled


def round_ratios(per_round: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Each summary ratio computed within each round: the list, and its median."""
    out: dict[str, Any] = {}
    ratios = [summarize(results) for results in per_round]
    for key in ("rxvision_int8_speedup_vs_torch_fp32_b1",
                "rxvision_torch_fp32_latency_vs_plain_b1"):
        values = [r[key] for r in ratios if key in r]
        if values:
            out[f"{key}_per_round"] = values
            out[f"{key}_round_median"] = round(statistics.median(values), 3)
    return out


def _execute(task: Task, isolate: bool) -> list[dict[str, Any]]:
    if not isolate:
        return run_task(task)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(run_task, task).result()


def _find(results: list[dict[str, Any]], model: str, backend: str, batch: int) -> dict | None:
    return next((r for r in results if (r["model"], r["backend"], r["batch_size"])
                 == (model, backend, batch)), None)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios the issue's targets are stated in (reported, not judged)."""
    out: dict[str, Any] = {}
    eager = _find(results, "rxvision", "torch-fp32", 1)
    int8 = _find(results, "rxvision", "onnx-int8", 1)
    plain = next((r for r in results if r["model"] != "rxvision" and r["backend"] == "torch-fp32"
                  and r["batch_size"] == 1), None)
    if eager and int8:
        out["rxvision_int8_speedup_vs_torch_fp32_b1"] = round(
            eager["latency_ms_p50"] / int8["latency_ms_p50"], 2)
        out["rxvision_int8_speedup_vs_torch_fp32_b1_min"] = round(
            eager["latency_ms_min"] / int8["latency_ms_min"], 2)
        out["rxvision_int8_size_mb"] = int8["size_mb"]
    if eager and plain:
        out["rxvision_torch_fp32_latency_vs_plain_b1"] = round(
            eager["latency_ms_p50"] / plain["latency_ms_p50"], 3)
        out["rxvision_torch_fp32_latency_vs_plain_b1_min"] = round(
            eager["latency_ms_min"] / plain["latency_ms_min"], 3)
        out["plain_model"] = plain["model"]
    return out


def format_table(report: dict[str, Any]) -> str:
    """A readable fixed-width table of the results, then the summary ratios."""
    head = (f"{'model':<14}{'backend':<14}{'batch':>6}{'p50 ms':>10}{'p90 ms':>10}"
            f"{'p99 ms':>10}{'min ms':>10}{'img/s':>10}{'size MB':>9}{'RSS MB':>9}{'iters':>7}")
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        lines.append(
            f"{r['model']:<14}{r['backend']:<14}{r['batch_size']:>6}{r['latency_ms_p50']:>10.2f}"
            f"{r['latency_ms_p90']:>10.2f}{r['latency_ms_p99']:>10.2f}"
            f"{r['latency_ms_min']:>10.2f}"
            f"{r['throughput_ips']:>10.1f}{r['size_mb']:>9.1f}{r['peak_rss_mb']:>9.0f}"
            f"{r['iters']:>7}")
    s = report.get("summary", {})
    if "rxvision_int8_speedup_vs_torch_fp32_b1" in s:
        lines.append(f"rxvision onnx-int8 vs torch-fp32 at batch 1: "
                     f"{s['rxvision_int8_speedup_vs_torch_fp32_b1']:.2f}x faster by median, "
                     f"{s['rxvision_int8_speedup_vs_torch_fp32_b1_min']:.2f}x by fastest call; "
                     f"int8 model {s['rxvision_int8_size_mb']:.1f} MB "
                     f"(issue target: >= 5x, <= 25 MB)")
        if "rxvision_int8_speedup_vs_torch_fp32_b1_per_round" in s:
            lines.append("  per round (interleaved): " + _round_list(
                s, "rxvision_int8_speedup_vs_torch_fp32_b1", "x"))
    if "rxvision_torch_fp32_latency_vs_plain_b1" in s:
        lines.append(f"rxvision torch-fp32 latency / plain {s['plain_model']} at batch 1: "
                     f"{s['rxvision_torch_fp32_latency_vs_plain_b1']:.3f} by median, "
                     f"{s['rxvision_torch_fp32_latency_vs_plain_b1_min']:.3f} by fastest call "
                     f"(issue target: <= 1.15)")
        if "rxvision_torch_fp32_latency_vs_plain_b1_per_round" in s:
            lines.append("  per round (interleaved): " + _round_list(
                s, "rxvision_torch_fp32_latency_vs_plain_b1", ""))
    return "\n".join(lines)


def _round_list(summary: dict[str, Any], key: str, unit: str) -> str:
    values = ", ".join(f"{v:.2f}{unit}" for v in summary[f"{key}_per_round"])
    return f"{values}; median {summary[f'{key}_round_median']:.2f}{unit}"


def model_specs(model: str | None, config: str | None, overrides: list[str] | None = None,
                plain: str | None = None) -> list[ModelSpec]:
    """RxVision (from an artifact or a config, random init) plus its plain timm counterpart.

    The plain model is the backbone's full timm classifier with the same number of
    classes, so the ratio of the two is the cost of the FPN, attention and head.
    """
    if config:
        cfg = load_config(config, ["architecture.backbone.pretrained=false", *(overrides or [])])
        rx = ModelSpec("rxvision", "config", cfg.to_dict(), cfg.training.num_classes,
                       tuple(cfg.training.input_size))
        backbone = cfg.architecture.backbone.name
    else:
        if overrides:
            raise BenchmarkError("--set applies to --config only")
        directory = resolve_model_path(model)
        card = read_card(directory)
        rx = ModelSpec("rxvision", "artifact", str(directory), len(card["labels"]),
                       tuple(card["preprocessing"]["input_size"]))
        backbone = card["config"]["architecture"]["backbone"]["name"]
    specs = [rx]
    name = plain or backbone
    if name != "none":
        if not timm.is_model(name):
            raise BenchmarkError(f"--plain {name!r} is not a timm model name")
        specs.append(ModelSpec(name, "timm", name, rx.num_classes, rx.input_size))
    return specs
