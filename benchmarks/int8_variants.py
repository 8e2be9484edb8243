"""Compare int8 quantisation settings on one model, judged on views that did not calibrate.

The views of DATA are shuffled (seed 0): the first 512 calibrate, the next 500 judge. For
each variant it prints top-1 on the judged views, top-1 agreement and max |logit diff| with
fp32 ONNX, file size and batch-1 latency (median of 30 calls, 2 threads). Use a calibration
set, never the held-out set you report on. About 8 minutes for all variants on 2 cores.

    python benchmarks/int8_variants.py --model models/rxvision-c3pi-4k \
        --data runs/calviews-v2/manifest.csv --work runs/int8-variants
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from rxvision.artifact import load_artifact
from rxvision.data import load_dataset, load_image
from rxvision.deploy.export import FLOAT_OPS, ArrayCalibrationReader, export_onnx
from rxvision.identify.onnx_backend import OnnxModel
from rxvision.locate import EvalTransform

MINMAX, PERCENTILE, ENTROPY = (CalibrationMethod.MinMax, CalibrationMethod.Percentile,
                               CalibrationMethod.Entropy)


def latency_ms(model: OnnxModel, x: np.ndarray, calls: int = 30) -> float:
    for _ in range(5):
        model.run_numpy(x)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.run_numpy(x)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def logits(model: OnnxModel, x: np.ndarray) -> np.ndarray:
    return np.concatenate([model.run_numpy(x[i:i + 32]) for i in range(0, len(x), 32)])


def variants(graph: onnx.GraphProto) -> dict[str, tuple[CalibrationMethod, int, list[str]]]:
    """name -> (calibration method, calibration images, nodes kept float)."""
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    depthwise = [n.name for n in graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    tail, seen_softmax = [], False
    for node in graph.node:  # after the attention's Softmax: pooling and head
        if node.op_type == "Softmax":
            seen_softmax, tail = True, []
        elif seen_softmax:
            tail.append(node.name)
    return {
        "all int8, minmax 128": (MINMAX, 128, []),
        "all int8, minmax 512": (MINMAX, 512, []),
        "all int8, percentile 99.99": (PERCENTILE, 256, []),
        "all int8, entropy": (ENTROPY, 256, []),
        "attention+head float": (MINMAX, 256, tail),
        "first conv float": (MINMAX, 256, convs[:1]),
        "first conv + depthwise float": (MINMAX, 256, convs[:1] + depthwise),
        "first 3 convs float": (MINMAX, 256, convs[:3]),
        "first 6 convs float": (MINMAX, 256, convs[:6]),
        "first 12 convs float": (MINMAX, 256, convs[:12]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="artifact directory")
    parser.add_argument("--data", required=True, help="labelled calibration views (>= 1012)")
    parser.add_argument("--work", required=True, help="folder for the ONNX files")
    parser.add_argument("--only", help="comma-separated variant names")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    art = load_artifact(args.model)
    transform = EvalTransform(art.preprocessing)
    samples = load_dataset(args.data).samples
    if len(samples) < 1012:
        raise SystemExit(f"{args.data}: {len(samples)} views; need at least 1012")
    order = np.random.default_rng(0).permutation(len(samples))
    load = lambda idx: np.stack([transform(load_image(samples[i].path)).numpy() for i in idx])  # noqa: E731
    x_cal, x_judge = load(order[:512]), load(order[512:1012])
    index = {label: i for i, label in enumerate(art.labels)}
    y = np.array([index[samples[i].label] for i in order[512:1012]])
    fp32, pre = work / "fp32.onnx", work / "pre.onnx"
    export_onnx(art.model, fp32, art.preprocessing["input_size"])
    quant_pre_process(str(fp32), str(pre))
    reference = OnnxModel(fp32, threads=2)
    ref = logits(reference, x_judge)
    print(f"{'variant':32s} {'top-1':>6s} {'agree':>6s} {'maxdiff':>8s} {'MB':>5s} {'ms b1':>6s}")
    print(f"{'fp32':32s} {np.mean(ref.argmax(1) == y):6.3f} {1:6.3f} {0:8.2f} "
          f"{fp32.stat().st_size / 1e6:5.1f} {latency_ms(reference, x_judge[:1]):6.2f}")
    graph = onnx.load(str(pre)).graph
    keep_float = [n.name for n in graph.node if n.op_type in FLOAT_OPS]
    table = variants(graph)
    for name in (args.only.split(",") if args.only else table):
        method, n, float_nodes = table[name]
        out = work / f"{name.replace(' ', '_').replace(',', '')}.onnx"
        quantize_static(str(pre), str(out),
                        ArrayCalibrationReader([x_cal[i:i + 1] for i in range(n)]),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=keep_float + float_nodes, calibrate_method=method,
                        extra_options={"CalibPercentile": 99.99})
        model = OnnxModel(out, threads=2)
        q = logits(model, x_judge)
        print(f"{name:32s} {np.mean(q.argmax(1) == y):6.3f} "
              f"{np.mean(q.argmax(1) == ref.argmax(1)):6.3f} {np.abs(q - ref).max():8.2f} "
              f"{out.stat().st_size / 1e6:5.1f} {latency_ms(model, x_judge[:1]):6.2f}",
              flush=True)


if __name__ == "__main__":
    main()
