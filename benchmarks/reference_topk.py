"""What the library's size costs one identification: the reference top-k at 4k and 100k.

Everything an answer does that grows with the number of library entries N, timed per photo
with the code the service runs:

- ``head``: the cosine classifier's final layer, ``CosineClassifier(D, N)`` (the model's
  last ``F.linear``: one row per reference; D from the bundled model), on one embedding;
- ``calibrate``: ``Identifier.log_probs`` (temperature, log-softmax over N);
- ``open set``: ``Identifier.ood`` (the card's open-set score over N logits);
- ``top-k``: ``rxvision.logmath.top_k`` of the probabilities (k = 5);

and, once at the real library's size, ``decide`` (top-k, the card's rule, drug facts and
look-alikes read from the model's library file), which reads only the k answers' rows.
The 100k head has random rows (timing does not depend on their values). The backbone and
the pill finder do not depend on N and are timed in benchmarks/photo_latency.py.

    python benchmarks/reference_topk.py [--sizes 3936 100000] [--repeats 2000] [--json out.json]

A benchmark: it prints measured numbers, it does not pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from rxvision.identify.identifier import HEAD_PRECISIONS, Identifier  # noqa: E402
from rxvision.logmath import top_k  # noqa: E402
from rxvision.models.layers import CosineClassifier  # noqa: E402

SAMPLE_CROP = REPO / "data" / "sample" / "images" / "00093-0900-01.jpg"


def percentiles(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and p99 wall time of ``fn`` in ms (the first 5 calls dropped as warm-up)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3)}


def time_size(ident: Identifier, n: int, embedding: torch.Tensor, repeats: int, topk: int,
              head_dtype: torch.dtype = torch.float32) -> dict[str, dict[str, float]]:
    """Each N-dependent step of one answer, and all of them together, for N entries."""
    head = CosineClassifier(embedding.shape[1], n).eval()
    head.inference_dtype = head_dtype
    logits = head(embedding).numpy()
    log_probs = ident.log_probs(logits)

    def together() -> None:
        out = head(embedding).numpy()
        lp = ident.log_probs(out)
        ident.ood(out, embedding.numpy())
        top_k(np.exp(lp[0]), topk)

    return {
        "head": percentiles(lambda: head(embedding), repeats),
        "calibrate": percentiles(lambda: ident.log_probs(logits), repeats),
        "open set": percentiles(lambda: ident.ood(logits, embedding.numpy()), repeats),
        "top-k": percentiles(lambda: top_k(np.exp(log_probs[0]), topk), repeats),
        "all of the above": percentiles(together, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the bundled)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3936, 100_000],
                        help="library entries N to time")
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--head-precision", choices=tuple(HEAD_PRECISIONS), default="fp32",
                        help="the cosine head's kept rows (Identifier head_precision)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    if min(args.sizes) < args.topk or args.repeats < 1:
        parser.error("need every size >= topk and repeats >= 1")

    ident = Identifier.load(args.model, head_precision=args.head_precision)
    head_dtype = getattr(torch, HEAD_PRECISIONS[args.head_precision])
    dim = int(ident.model.get_classifier().weight.shape[1])
    rng = np.random.default_rng(0)
    embedding = torch.from_numpy(rng.standard_normal((1, dim)).astype(np.float32))
    print(f"model {ident.num_classes} classes, embedding {dim}; torch threads "
          f"{torch.get_num_threads()}; open-set score {ident.ood_method}; head rows "
          f"{args.head_precision}")
    rows: list[dict[str, object]] = []
    with torch.no_grad():  # not inference_mode: the head's rows stay ordinary tensors
        for n in args.sizes:
            for part, t in time_size(ident, n, embedding, args.repeats, args.topk,
                                     head_dtype).items():
                rows.append({"entries": n, "part": part, **t})
                print(f"N {n:>7,d}  {part:18s} p50 {t['p50_ms']:7.3f} ms  "
                      f"p99 {t['p99_ms']:7.3f} ms")
        crop = ident.preprocess(SAMPLE_CROP)  # log-probabilities of a real photo
        real = ident.log_probs(ident.forward(crop[None])[0])
        t = percentiles(lambda: ident.decide(real[0], 0.0, args.topk), min(args.repeats, 500))
        rows.append({"entries": ident.num_classes, "part": "decide (facts, look-alikes)", **t})
        print(f"N {ident.num_classes:>7,d}  decide (facts, look-alikes) p50 {t['p50_ms']:7.3f} "
              f"ms  p99 {t['p99_ms']:7.3f} ms")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model or "bundled", "embedding_dim": dim, "topk": args.topk,
            "head_precision": args.head_precision,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
