"""`rxvision calibrate`: fit the temperature on held-out views and store it in the card."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="fit temperature scaling on held-out photos; store it in the model")
    p.add_argument("--model", required=True, metavar="RUN",
                   help="model artifact directory (its card.json is updated)")
    p.add_argument("--data", required=True, metavar="D",
                   help="held-out labelled views (not training images), e.g. from "
                        "`rxvision data synth`")
    p.add_argument("--batch-size", type=int, default=32, metavar="B")
    p.add_argument("--workers", type=int, default=2, metavar="W")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--limit", type=int, metavar="N", help="use a fixed random subset of N images")
    p.add_argument("--dry-run", action="store_true", help="print the fit; leave the card as is")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..artifact import update_card
    from ..data import DatasetError, load_dataset
    from ..engine.calibration import calibrate
    from ..engine.evaluate import predict, subset
    from ..inference.backends import load_backend

    backend = load_backend(args.model, backend="torch", bf16=args.precision == "bf16")
    images = subset(load_dataset(args.data), args.limit)
    pred = predict(backend, images, batch_size=args.batch_size, workers=args.workers,
                   progress=not args.no_progress, desc="calibrate")
    known = pred.known
    if not known.any():
        raise DatasetError(f"{args.data}: none of its labels are in the model; "
                           "calibrate on views of the model's own classes")
    fit = calibrate(pred.logits[known], pred.targets[known])
    record = {**fit, "fitted_on": str(args.data)}
    if (~known).any():
        record["skipped_unknown"] = int((~known).sum())
    print(f"T = {fit['temperature']:.4f} on {fit['n']} images: "
          f"NLL {fit['nll_before']:.4f} -> {fit['nll_after']:.4f}, "
          f"ECE {fit['ece_before']:.4f} -> {fit['ece_after']:.4f}")
    if not args.dry_run:
        # Keep other calibration entries (e.g. abstention thresholds) other tools stored.
        merged = {**backend.card.get("calibration", {}), **record}
        update_card(args.model, calibration=merged)
        print(f"wrote calibration into {args.model}/card.json")
    return 0
