"""What this CPU allows: GEMM peaks, model arithmetic, and the ceilings they put on issue 6.

Issue 6 asks three CPU numbers of the ResNet50 RxVision model: int8 ONNX at least 5x faster
than PyTorch eager fp32, an int8 file of at most 25 MB, and eager latency at most 1.15x plain
timm resnet50. None is a timing of our code alone; each is bounded by the machine or by the
model's arithmetic. This script measures those bounds:

* the machine's achievable fp32 GEMM rate (``torch.mm``, the kernels eager PyTorch uses)
  and int8 GEMM rate (onnxruntime ``MatMulInteger``, uint8 x int8, the VNNI kernels of its
  int8 convolutions), interleaved over ``--rounds``, and their ratio: the int8 speed-up a
  model can reach when both runtimes are equally efficient;
* multiply-accumulates per image (``torch.utils.flop_counter``) and parameters of RxVision
  (a config, with ``--set`` overrides) and of the plain timm backbone: the eager ratio a
  perfect runtime would show, and the int8 file's floor (one byte per weight);
* the best-case latencies those give (MACs / peak rate).

    python benchmarks/cpu_ceiling.py --config configs/model.yaml
    python benchmarks/cpu_ceiling.py --config configs/model.yaml \
        --set architecture.fpn.out_channels=192
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import timm
import torch
from onnx import TensorProto, helper
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rxvision.config import load_config
from rxvision.deploy.benchmark import time_calls
from rxvision.identify.onnx_backend import session_options
from rxvision.models import build_model


def median_seconds(fn: Callable[[], object], calls: int) -> float:
    return statistics.median(time_calls(fn, calls, warmup=1, max_seconds=math.inf))


def int8_gemm_session(n: int, threads: int) -> ort.InferenceSession:
    """One MatMulInteger node, (n, n) uint8 x (n, n) int8 -> int32."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=["CPUExecutionProvider"])


def gemm_peaks(n: int, rounds: int, calls: int, threads: int) -> list[tuple[float, float]]:
    """(fp32, int8) GEMM rates in GMAC/s, one pair per interleaved round."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    session = int8_gemm_session(n, threads)
    rng = np.random.default_rng(0)
    feeds = {"A": rng.integers(0, 256, (n, n), dtype=np.uint8),
             "B": rng.integers(-127, 128, (n, n), dtype=np.int8)}
    macs = n ** 3 / 1e9
    out = []
    for _ in range(rounds):
        fp32 = macs / median_seconds(lambda: torch.mm(a, b), calls)
        int8 = macs / median_seconds(lambda: session.run(None, feeds), calls)
        out.append((fp32, int8))
    return out


def count_gmacs(model: nn.Module, size: tuple[int, int]) -> float:
    """Multiply-accumulates of one image, in G (flop_counter counts 2 FLOPs per MAC)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, *size))
    return counter.get_total_flops() / 2e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/model.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=7, help="timed GEMMs per round and kind")
    args = parser.parse_args()

    cfg = load_config(args.config, ["architecture.backbone.pretrained=false", *args.set])
    size = tuple(cfg.training.input_size)
    classes = cfg.training.num_classes
    rx = build_model(cfg, classes).eval()
    plain_name = cfg.architecture.backbone.name
    plain = timm.create_model(plain_name, pretrained=False, num_classes=classes).eval()
    models = {"rxvision": rx, plain_name: plain}
    gmacs = {name: count_gmacs(m, size) for name, m in models.items()}
    params = {name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in models.items()}

    print(f"config {args.config} {' '.join(args.set)}; input {size[0]}x{size[1]}, "
          f"{classes} classes, {args.threads} threads")
    for name in models:
        print(f"  {name:<10} {gmacs[name]:6.3f} GMACs/image  {params[name]:6.2f} M params "
              f"(int8 file floor {params[name]:.1f} MB)")
    print(f"  arithmetic eager ratio rxvision/{plain_name}: "
          f"{gmacs['rxvision'] / gmacs[plain_name]:.3f} (issue target <= 1.15)")

    peaks = gemm_peaks(args.gemm_size, args.rounds, args.calls, args.threads)
    for i, (fp32, int8) in enumerate(peaks, 1):
        print(f"  round {i}: fp32 GEMM {fp32:5.0f} GMAC/s, int8 GEMM {int8:5.0f} GMAC/s, "
              f"ratio {int8 / fp32:.2f}")
    fp32 = statistics.median(p[0] for p in peaks)
    int8 = statistics.median(p[1] for p in peaks)
    print(f"median: fp32 {fp32:.0f} GMAC/s, int8 {int8:.0f} GMAC/s; int8/fp32 peak ratio "
          f"{int8 / fp32:.2f} (issue target for the int8 speed-up: >= 5)")
    for name in models:
        print(f"  {name:<10} best case at peak: fp32 {1000 * gmacs[name] / fp32:5.1f} ms, "
              f"int8 {1000 * gmacs[name] / int8:5.1f} ms")


if __name__ == "__main__":
    main()
