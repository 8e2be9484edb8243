"""`rxvision benchmark` (schema, not speed) and the standalone GPU script's CPU-side paths."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rxvision import cli
from rxvision.deploy.benchmark import (
    BenchmarkError,
    format_table,
    model_specs,
    pool_rounds,
    round_ratios,
    run_benchmark,
)

REPO = Path(__file__).resolve().parents[1]
REQUIRED_KEYS = {"model", "backend", "batch_size", "latency_ms_p50", "latency_ms_p90",
                 "latency_ms_p99", "throughput_ips", "size_mb", "peak_rss_mb"}
TINY_YAML = """\
architecture:
  backbone: {name: resnet18, pretrained: false, freeze_layers: false}
training:
  input_size: [64, 64]
  num_classes: 5
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_all_default_backends_in_process(tiny_config: Path) -> None:
    specs = model_specs(None, str(tiny_config))
    assert [s.name for s in specs] == ["rxvision", "resnet18"]  # plain backbone model
    report = run_benchmark(specs, ["torch-fp32", "torch-cl", "onnx-fp32", "onnx-int8"], [1, 2],
                           iters=2, warmup=1, isolate=False)
    assert {"cpu", "physical_cores", "threads", "torch", "onnxruntime"} <= set(report["machine"])
    results = report["results"]
    assert len(results) == 2 * 4 * 2
    for r in results:
        assert set(r) >= REQUIRED_KEYS
        assert r["latency_ms_p50"] > 0 and r["throughput_ips"] > 0 and r["size_mb"] > 0
        assert r["iters"] == 2
    by = {(r["model"], r["backend"], r["batch_size"]): r for r in results}
    # int8 file is much smaller than fp32 for both models (weights are 1 byte, not 4).
    for model in ("rxvision", "resnet18"):
        assert by[(model, "onnx-int8", 1)]["size_mb"] < by[(model, "onnx-fp32", 1)]["size_mb"] / 2.5
    assert "random" in report["options"]["int8_calibration"]["rxvision"]
    summary = report["summary"]
    assert {"rxvision_int8_speedup_vs_torch_fp32_b1", "rxvision_torch_fp32_latency_vs_plain_b1",
            "rxvision_int8_size_mb"} <= set(summary)
    table = format_table(report)
    assert "onnx-int8" in table and "issue target" in table and "PASS" not in table


def test_cli_isolated_workers_write_json(tiny_config: Path, tmp_path: Path) -> None:
    from rxvision.deploy.benchmark import peak_rss_mb

    # Raise this process's peak by 400 MB: a worker must not inherit it (ru_maxrss would).
    ballast = np.ones(400 * 2**20, dtype=np.uint8)
    parent_peak = peak_rss_mb()
    out = tmp_path / "b.json"
    code, stdout, stderr = run_cli(["benchmark", "--config", str(tiny_config), "--backend",
                                    "torch-fp32", "--batch-sizes", "1", "--iters", "2",
                                    "--warmup", "0", "--plain", "none", "--json", str(out)])
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "results", "options", "summary"}
    (r,) = report["results"]
    assert (r["model"], r["backend"], r["batch_size"]) == ("rxvision", "torch-fp32", 1)
    assert set(r) >= REQUIRED_KEYS
    # The worker process reports its own peak, on top of its runtime baseline.
    assert r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0
    assert r["peak_rss_mb"] < parent_peak - 300
    del ballast
    assert "worker process" in report["options"]["peak_rss"]
    assert "torch-fp32" in stdout


def test_benchmark_errors(tiny_config: Path) -> None:
    code, _, err = run_cli(["benchmark", "--config", str(tiny_config), "--backend", "tensorrt"])
    assert code == 2 and "unknown backend" in err
    code, _, err = run_cli(["benchmark", "--config", str(tiny_config), "--plain", "nope_net"])
    assert code == 2 and "not a timm model" in err
    with pytest.raises(BenchmarkError, match="--set applies to --config"):
        model_specs("runs/x", None, ["training.num_classes=3"])
    with pytest.raises(BenchmarkError, match="batch sizes"):
        run_benchmark(model_specs(None, str(tiny_config)), ["torch-fp32"], [0])
    with pytest.raises(BenchmarkError, match="--rounds must be at least 1"):
        run_benchmark(model_specs(None, str(tiny_config)), ["torch-fp32"], [1], rounds=0)


def _point(model: str, backend: str, times_ms: list[float], rss: float = 100.0) -> dict:
    return {"model": model, "backend": backend, "batch_size": 1, "peak_rss_mb": rss,
            "setup_s": 1.0, "size_mb": 5.0, "latency_ms_p50": float(np.median(times_ms)),
            "latency_ms_min": float(min(times_ms)),
            "times_s": [t / 1000 for t in times_ms]}


def test_rounds_pool_calls_and_give_a_ratio_per_round() -> None:
    # Round 2 ran on a machine twice as slow: the pooled ratio mixes machines, each
    # round's own ratio does not (8x in both).
    round1 = [_point("rxvision", "torch-fp32", [80, 80, 80]),
              _point("rxvision", "onnx-int8", [10, 10, 10], rss=50),
              _point("resnet50", "torch-fp32", [70, 70, 70])]
    round2 = [_point("rxvision", "torch-fp32", [160, 160, 160], rss=120),
              _point("rxvision", "onnx-int8", [20, 20, 20]),
              _point("resnet50", "torch-fp32", [140, 140, 140])]
    pooled = pool_rounds([round1, round2])
    eager = pooled[0]
    assert "times_s" not in eager
    assert eager["iters"] == 6 and eager["peak_rss_mb"] == 120
    assert eager["latency_ms_p50"] == pytest.approx(120.0)  # median of 80,80,80,160,160,160
    assert eager["latency_ms_min"] == pytest.approx(80.0)
    assert eager["latency_ms_p50_per_round"] == [80.0, 160.0]
    ratios = round_ratios([round1, round2])
    assert ratios["rxvision_int8_speedup_vs_torch_fp32_b1_per_round"] == [8.0, 8.0]
    assert ratios["rxvision_int8_speedup_vs_torch_fp32_b1_round_median"] == 8.0
    assert ratios["rxvision_torch_fp32_latency_vs_plain_b1_per_round"] == [
        round(80 / 70, 3), round(160 / 140, 3)]


def test_interleaved_rounds_end_to_end(tiny_config: Path) -> None:
    specs = model_specs(None, str(tiny_config))
    report = run_benchmark(specs, ["torch-fp32", "onnx-int8"], [1], iters=2, warmup=0,
                           isolate=False, rounds=2)
    assert report["options"]["rounds"] == 2
    for r in report["results"]:
        assert r["iters"] == 4 and len(r["latency_ms_p50_per_round"]) == 2
        assert "times_s" not in r
    summary = report["summary"]
    per_round = summary["rxvision_int8_speedup_vs_torch_fp32_b1_per_round"]
    assert len(per_round) == 2
    assert summary["rxvision_int8_speedup_vs_torch_fp32_b1_round_median"] == pytest.approx(
        float(np.median(per_round)), abs=1e-3)
    assert "per round (interleaved)" in format_table(report)


def load_gpu_script():
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_script_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load_gpu_script().main(["--help"])
    assert exc.value.code == 0
    assert "--markdown" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-CUDA message")
def test_gpu_script_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_gpu_script().main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_script_plumbing_on_cpu(tiny_config: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    md, js = tmp_path / "bench.md", tmp_path / "gpu.json"
    md.write_text("# Benchmarks\n")
    code = load_gpu_script().main([
        "--smoke-test-on-cpu", "--config", str(tiny_config), "--batch-size", "2",
        "--throughput-iters", "1", "--latency-iters", "2", "--variants",
        "eager-fp32,eager-bf16-cl", "--markdown", str(md), "--json", str(js)])
    assert code == 0
    report = json.loads(js.read_text())
    assert [r["variant"] for r in report["results"]] == ["eager-fp32", "eager-bf16-cl"]
    assert all(r["throughput_ips"] > 0 and r["latency_ms_p99"] > 0 for r in report["results"])
    text = md.read_text()
    assert text.startswith("# Benchmarks\n") and "| eager-bf16-cl |" in text


def test_artifact_source_reports_its_weights_file(sample_artifact: Path) -> None:
    specs = model_specs(str(sample_artifact), None, plain="none")
    assert [(s.name, s.kind, s.num_classes, s.input_size) for s in specs] == [
        ("rxvision", "artifact", 24, (64, 64))]
    report = run_benchmark(specs, ["torch-fp32"], [1], iters=1, warmup=0, isolate=False)
    (r,) = report["results"]
    size = (sample_artifact / "model.safetensors").stat().st_size / 1e6
    assert r["size_source"] == "safetensors file" and r["size_mb"] == pytest.approx(size, abs=0.01)


@pytest.mark.parametrize("script", ["fit_same_photo.py", "two_pill_photos.py"])
def test_the_same_photo_benchmarks_start_and_refuse_bad_values(script: str) -> None:
    """They import (the benchmarks folder is run as scripts) and check their values before
    loading any model."""
    import subprocess
    import sys

    path = REPO / "benchmarks" / script
    help_run = subprocess.run([sys.executable, str(path), "--help"], capture_output=True,
                              text=True, cwd=REPO / "benchmarks", timeout=120)
    assert help_run.returncode == 0 and "usage:" in help_run.stdout
    if script == "fit_same_photo.py":
        bad = subprocess.run([sys.executable, str(path), "--model", "m", "--data", "d.csv",
                              "--prior", "1.5"], capture_output=True, text=True,
                             cwd=REPO / "benchmarks", timeout=120)
        assert bad.returncode == 2 and "--prior must be in (0, 1)" in bad.stderr
