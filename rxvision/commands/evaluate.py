"""`rxvision evaluate`: metrics, groups, robustness sweep and an HTML report for a model."""

from __future__ import annotations

import argparse
import time
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..inference.bundled import add_model_argument

    p = sub.add_parser("evaluate", help="measure a model on labelled images")
    add_model_argument(p)
    p.add_argument("--data", required=True, metavar="D",
                   help="labelled images: manifest CSV (image,label,...) or class folders")
    p.add_argument("--group-by", metavar="COLUMN",
                   help="repeat the headline metrics per value of this manifest column")
    p.add_argument("--json", metavar="OUT.json",
                   help="write metrics here (per-class rows go to OUT.per_class.csv)")
    p.add_argument("--report", metavar="DIR", help="write an HTML report (index.html + PNGs)")
    p.add_argument("--references", metavar="D",
                   help="reference images for the report's thumbnails (default: --data)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B")
    p.add_argument("--workers", type=int, default=2, metavar="W",
                   help="DataLoader processes decoding images (0: decode in this process)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 autocast: ~2-3x faster on CPUs with AVX-512 BF16 (torch only)")
    p.add_argument("--corruptions", action="store_true",
                   help="also run the robustness sweep (7 corruptions x 5 severities; "
                        "35 passes over the data, so combine with --limit)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="evaluate a fixed random subset of N images")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..engine.corruptions import corruption_sweep
    from ..engine.evaluate import predict, subset, summarize, write_json
    from ..inference.backends import load_backend
    from ..inference.bundled import resolve_model_path

    model_dir = resolve_model_path(args.model)
    backend = load_backend(model_dir, backend=args.backend, bf16=args.precision == "bf16")
    images = subset(load_dataset(args.data), args.limit)
    opts = {"batch_size": args.batch_size, "workers": args.workers,
            "progress": not args.no_progress}
    start = time.perf_counter()
    pred = predict(backend, images, **opts)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "model": str(model_dir), "data": str(args.data), "backend": args.backend,
        "precision": args.precision,
        **summarize(pred, backend.labels, backend.temperature, group_by=args.group_by),
        "calibration": backend.card.get("calibration", {}),
        "seconds": round(seconds, 2), "images_per_second": round(len(pred) / seconds, 2),
    }
    # Further analyses reuse `pred` and `images` (the open-set --unknown study plugs in here).
    if args.corruptions:
        start = time.perf_counter()
        result["corruptions"] = corruption_sweep(backend, images, result["top1"] or 0.0, **opts)
        result["corruptions"]["seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        write_json(result, args.json)
    if args.report:
        from ..engine.report import write_report

        refs = load_dataset(args.references) if args.references else images
        write_report(args.report, result, pred, backend.labels, backend.temperature,
                     run_dir=model_dir, thumbnails=refs)
    print_summary(result)
    return 0


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def print_summary(result: dict[str, Any]) -> None:
    """A few lines a person reads at a glance."""
    print(f"{result['n']} images in {result['seconds']} s ({result['images_per_second']} img/s),"
          f" T = {result['temperature']:.4g}")
    print("  " + "  ".join(f"{k} {_f(result[k])}" for k in
                           ("top1", "top5", "f1_macro", "f1_weighted", "roc_auc_macro")))
    print("  " + "  ".join(f"{k} {_f(result[k])}" for k in ("nll", "ece", "brier"))
          + (f"  (at T = 1: nll {_f(result['uncalibrated']['nll'])}  ece "
             f"{_f(result['uncalibrated']['ece'])})" if "uncalibrated" in result else ""))
    cov = result["accuracy_at_coverage"]
    print("  accuracy at coverage " + "  ".join(f"{q}: {_f(v)}" for q, v in cov.items()))
    unknown = result["unknown_labels"]
    if unknown["count"]:
        print(f"  {unknown['count']} images with {len(unknown['labels'])} labels unknown to "
              "the model were left out")
    for name, m in (result.get("groups") or {}).items():
        print(f"  [{result['group_by']}={name}] n {m['n']}  top1 {_f(m['top1'])}  "
              f"top5 {_f(m['top5'])}  ece {_f(m['ece'])}")
    sweep = result.get("corruptions")
    if sweep:
        print(f"  corruptions: mCE {_f(sweep['mce'])}  mean accuracy "
              f"{_f(sweep['mean_accuracy'])} (clean {_f(sweep['clean_top1'])})")
