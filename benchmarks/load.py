"""Load test of `rxvision serve`: throughput, latency, errors and memory under concurrency.

1. **Offline**, in this process, before the server starts and again after it stops (the
   machine may be shared; the better of the two is the reference):
   ``Identifier.identify_batch`` on the same photo bytes at batch = ``--max-batch`` (decode
   + letterbox + forward + decision: the work the server does per image, without HTTP),
   and the bare forward pass on a preprocessed batch (what ``rxvision benchmark`` times).
2. **Served**: starts ``rxvision serve`` as a subprocess on a free loopback port with the
   same model and backend, warms it up, then ``--repeats`` times sends ``--requests`` POST
   /v1/identify from ``--concurrency`` concurrent httpx clients (bounded in count and by
   ``--time-limit`` seconds per repeat), recording latency, status codes and the server's
   RSS (psutil) before and after each repeat, and the mean batch size from /metrics.

The client runs on the same machine as the server, so its CPU time is part of the served
figure. Numbers are reported, not judged; the exit code is 0 unless the server fails to start.

Example:
    python benchmarks/load.py --model models/rxvision-c3pi-4k --backend torch \\
        --requests 2000 --concurrency 16 --repeats 2 --json load.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from rxvision.identify.bundled import resolve_model_path  # noqa: E402
from rxvision.identify.identifier import Identifier  # noqa: E402
from rxvision.identify.tta import TTA_CHOICES  # noqa: E402
from rxvision.io_utils import atomic_write_json  # noqa: E402

DEFAULT_IMAGES = REPO / "data" / "sample" / "images"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="artifact or ONNX export (default: the bundled model)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (both sides)")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                   help="folder of photos sent in turn (default data/sample/images)")
    p.add_argument("--requests", type=int, default=2000, help="per repeat (default 2000)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    p.add_argument("--repeats", type=int, default=2, help="runs against one server")
    p.add_argument("--warmup", type=int, default=64, help="untimed requests first")
    p.add_argument("--time-limit", type=float, default=300.0, metavar="S",
                   help="stop a repeat after S seconds even if requests remain")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--tta", type=int, choices=TTA_CHOICES,
                   help="rotations per photo, both sides (default: the model card's)")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--offline-images", type=int, default=800,
                   help="images timed offline (stops earlier at --offline-seconds)")
    p.add_argument("--offline-seconds", type=float, default=60.0)
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--json", type=Path, help="write the full report here")
    args = p.parse_args(argv)
    if min(args.requests, args.concurrency, args.repeats, args.max_batch) < 1:
        p.error("--requests, --concurrency, --repeats and --max-batch must be >= 1")
    return args


def load_photos(folder: Path) -> list[tuple[str, bytes]]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise SystemExit(f"no photos in {folder}")
    return [(p.name, p.read_bytes()) for p in paths]


# --- offline --------------------------------------------------------------------------------
def offline(model: Path, backend: str, threads: int | None, photos: list[tuple[str, bytes]],
            batch: int, max_images: int, max_seconds: float, tta: int | None = None
            ) -> dict[str, Any]:
    """Images/s of identify_batch (bytes in) and of the bare forward pass, at ``batch``.

    Throughput is ``batch / median(seconds per batch)``, as ``rxvision benchmark`` reports
    it: the median is the least disturbed by other processes on a shared machine.
    """
    if backend == "onnx":  # as `rxvision serve --backend onnx` does (see --torch-threads)
        torch.set_num_threads(1)
    ident = Identifier.load(model, backend=backend, threads=threads, tta=tta)
    data = [b for _, b in photos]
    batches = [[data[(i + j) % len(data)] for j in range(batch)]
               for i in range(0, max(max_images, 3 * batch), batch)]
    for b in batches[:2]:  # warm-up: allocators, ORT arenas, caches
        ident.identify_batch(b)
    e2e = _time_each(lambda b: ident.identify_batch(b), batches, max_seconds)
    x = np.stack([ident.preprocess(d) for d in batches[0]])
    cpu0 = _cpu_seconds(psutil.Process())
    fwd = _time_each(lambda _: ident.forward(x), batches, max_seconds / 2)
    fwd_cpu_ms = (_cpu_seconds(psutil.Process()) - cpu0) * 1e3 / (batch * len(fwd))
    return {"batch": batch, "batches_timed": len(e2e),
            "end_to_end_ips": round(batch / statistics.median(e2e), 2),
            "end_to_end_ips_mean": round(batch * len(e2e) / sum(e2e), 2),
            "forward_only_ips": round(batch / statistics.median(fwd), 2),
            "forward_cpu_ms_per_image": round(fwd_cpu_ms, 2),
            "num_labels": ident.num_classes, "input_size": list(ident.transform.size)}


def _cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU time of a process, all its threads, in seconds."""
    t = proc.cpu_times()
    return t.user + t.system


def _time_each(fn: Any, items: list[Any], max_seconds: float) -> list[float]:
    """Seconds per call of ``fn(item)``; stops after ``max_seconds`` (at least 3 calls)."""
    times: list[float] = []
    start = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    return times


# --- server ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, model: Path, port: int, log: Path
                 ) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rxvision", "serve", "--model", str(model),
           "--backend", args.backend, "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.tta:
        cmd += ["--tta", str(args.tta)]
    env = {k: v for k, v in os.environ.items() if k != "RXVISION_API_KEY"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"server not ready after {args.startup_timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def scrape(base: str) -> dict[str, float]:
    """Batch-size sum/count and rejections from /metrics."""
    text = httpx.get(base + "/metrics", timeout=10).text
    out = {}
    for name in ("rxvision_batch_size_sum", "rxvision_batch_size_count",
                 "rxvision_queue_rejections_total"):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


async def fire(base: str, photos: list[tuple[str, bytes]], n: int, concurrency: int,
               time_limit: float) -> dict[str, Any]:
    """``n`` requests from ``concurrency`` workers; per-request latency and status."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    next_index = 0
    deadline = time.perf_counter() + time_limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60.0) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < n and time.perf_counter() < deadline:
                name, data = photos[next_index % len(photos)]
                next_index += 1
                t0 = time.perf_counter()
                try:
                    resp = await client.post("/v1/identify",
                                             files={"image": (name, data, "image/jpeg")})
                    key = str(resp.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                latencies.append(time.perf_counter() - t0)
                statuses[key] = statuses.get(key, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ok = statuses.get("200", 0)
    ms = np.asarray(latencies) * 1e3
    return {"sent": len(latencies), "ok": ok, "errors": len(latencies) - ok,
            "statuses": statuses, "seconds": round(wall, 3),
            "throughput_rps": round(ok / wall, 2),
            "latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 2)
                           for q in (50, 90, 99)} | {"max": round(float(ms.max()), 2)},
            "stopped_by_time_limit": len(latencies) < n}


def served(args: argparse.Namespace, model: Path, photos: list[tuple[str, bytes]]
           ) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="rxvision-load-") as tmp:
        log = Path(tmp) / "server.log"
        t0 = time.perf_counter()
        proc = start_server(args, model, port, log)
        startup_s = time.perf_counter() - t0
        server, client = psutil.Process(proc.pid), psutil.Process()
        rss_at_start = round(server.memory_info().rss / 2**20, 1)  # ready, before any request
        runs = []
        try:
            asyncio.run(fire(base, photos, args.warmup, args.concurrency, args.time_limit))
            for r in range(args.repeats):
                before_rss, before_m = server.memory_info().rss, scrape(base)
                cpu_server, cpu_client = _cpu_seconds(server), _cpu_seconds(client)
                run = asyncio.run(fire(base, photos, args.requests, args.concurrency,
                                       args.time_limit))
                cpu_server = _cpu_seconds(server) - cpu_server
                cpu_client = _cpu_seconds(client) - cpu_client
                after_rss, after_m = server.memory_info().rss, scrape(base)
                passes = after_m["rxvision_batch_size_count"] - before_m[
                    "rxvision_batch_size_count"]
                images = after_m["rxvision_batch_size_sum"] - before_m["rxvision_batch_size_sum"]
                run.update(repeat=r + 1, rss_mb_before=round(before_rss / 2**20, 1),
                           rss_mb_after=round(after_rss / 2**20, 1),
                           forward_passes=int(passes),
                           server_cpu_ms_per_request=round(cpu_server * 1e3 / run["sent"], 2),
                           client_cpu_ms_per_request=round(cpu_client * 1e3 / run["sent"], 2),
                           mean_batch=round(images / passes, 2) if passes else 0.0,
                           rejected_503=int(after_m["rxvision_queue_rejections_total"]
                                            - before_m["rxvision_queue_rejections_total"]))
                runs.append(run)
                print(f"repeat {r + 1}: {run['throughput_rps']} req/s, "
                      f"p50 {run['latency_ms']['p50']} ms, {run['errors']} errors, "
                      f"RSS {run['rss_mb_before']} -> {run['rss_mb_after']} MB", file=sys.stderr)
        finally:
            stop_server(proc)
            server_log = log.read_text()[-2000:]
    return {"startup_s": round(startup_s, 2), "rss_mb_at_start": rss_at_start, "runs": runs,
            "server_log_tail": server_log}


def table(report: dict[str, Any]) -> str:
    off, runs, s = report["offline"], report["served"]["runs"], report["summary"]
    best = off["best"]
    lines = [
        f"model {report['model']} | backend {report['backend']} | "
        f"{report['machine']['cpus']} CPUs | {report['requests']} requests x "
        f"{report['concurrency']} clients x {report['repeats']} repeats | "
        f"max-batch {report['max_batch']}, max-wait {report['max_wait_ms']} ms",
        f"offline at batch {off['batch']} (before / after serving): identify_batch "
        f"(decode+forward+decide) {off['before']['end_to_end_ips']} / "
        f"{off['after']['end_to_end_ips']} img/s; forward only "
        f"{off['before']['forward_only_ips']} / {off['after']['forward_only_ips']} img/s "
        f"({off['before']['forward_cpu_ms_per_image']} CPU ms per image)",
        "",
        "| repeat | ok | errors | req/s | vs offline e2e | vs forward only | p50 ms | p90 ms "
        "| p99 ms | mean batch | server CPU ms/req | client CPU ms/req | RSS before MB "
        "| RSS after MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['repeat']} | {r['ok']} | {r['errors']} | {r['throughput_rps']} | "
            f"{r['throughput_rps'] / best['end_to_end_ips']:.1%} | "
            f"{r['throughput_rps'] / best['forward_only_ips']:.1%} | {lat['p50']} | "
            f"{lat['p90']} | {lat['p99']} | {r['mean_batch']} | "
            f"{r['server_cpu_ms_per_request']} | {r['client_cpu_ms_per_request']} | "
            f"{r['rss_mb_before']} | {r['rss_mb_after']} |")
    lines += ["", f"served / best offline: {s['served_over_offline']:.1%} of identify_batch, "
              f"{s['served_over_offline_forward_only']:.1%} of forward only (mean of repeats); "
              f"errors: {s['errors']}; RSS at start (ready, before any request) "
              f"{report['served']['rss_mb_at_start']} MB; RSS growth from repeat 1 to "
              f"{len(runs)}: {s['rss_growth_mb']:+.1f} MB; load average before / after "
              f"{report['machine']['load_before']} / {report['machine']['load_after']} "
              "(other work on the machine)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = resolve_model_path(args.model)
    photos = load_photos(args.images)

    def measure_offline(when: str) -> dict[str, Any]:
        print(f"offline ({when}): {args.backend} at batch {args.max_batch} ...", file=sys.stderr)
        off = offline(model, args.backend, args.threads, photos, args.max_batch,
                      args.offline_images, args.offline_seconds, args.tta)
        print(f"offline ({when}): {off['end_to_end_ips']} img/s end to end, "
              f"{off['forward_only_ips']} img/s forward only", file=sys.stderr)
        return off

    load_before = [round(v, 2) for v in os.getloadavg()]
    before = measure_offline("before")
    srv = served(args, model, photos)
    after = measure_offline("after")  # the machine may be shared: measure on both sides
    # Compare with the better offline figure of the two: the conservative ratio.
    best = {k: max(before[k], after[k]) for k in ("end_to_end_ips", "forward_only_ips")}
    runs = srv["runs"]
    rps = [r["throughput_rps"] for r in runs]
    report = {
        "model": str(model), "backend": args.backend, "requests": args.requests,
        "concurrency": args.concurrency, "repeats": args.repeats, "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms, "images": str(args.images), "photos": len(photos),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "load_before": load_before,
                    "load_after": [round(v, 2) for v in os.getloadavg()]},
        "offline": {"before": before, "after": after, "best": best,
                    "batch": args.max_batch},
        "served": srv,
        "summary": {
            "served_rps_mean": round(statistics.mean(rps), 2),
            "served_over_offline": statistics.mean(rps) / best["end_to_end_ips"],
            "served_over_offline_forward_only": statistics.mean(rps) / best["forward_only_ips"],
            "errors": sum(r["errors"] for r in runs),
            "rss_growth_mb": round(runs[-1]["rss_mb_after"] - runs[0]["rss_mb_after"], 1),
        },
    }
    print(table(report))
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
