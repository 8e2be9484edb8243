"""`rxvision enroll`: add new pills to a trained model from reference photos, no training.

Example:
    rxvision enroll --data new_pills/manifest.csv --out runs/c3pi+new
    rxvision predict --model runs/c3pi+new photo.jpg
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..identify.bundled import add_model_argument
    from ..library.enroll_fit import DEFAULT_MAX_DROP
    from ..library.imprinting import DEFAULT_IMPRINT, IMPRINT_METHODS
    from .options import HEAD_PRECISION_CHOICES

    p = sub.add_parser("enroll", help="add new pills from reference photos (no retraining)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(p, "the model to extend; it is not modified")
    p.add_argument("--data", required=True, metavar="NEW",
                   help="manifest CSV (image,label,+ndc,name,strength,...) or class folders "
                        "with one or more reference photos per new pill")
    p.add_argument("--out", required=True, metavar="RUN2", help="directory for the new model")
    add_view_arguments(p, "0 = the letterboxed photo only")
    p.add_argument("--imprint", choices=IMPRINT_METHODS, default=DEFAULT_IMPRINT,
                   help="how new classifier rows are built (default auto: centred for a "
                        "Linear final layer; for a cosine one, prototype when its rows are "
                        "prototypes (`rxvision prototypes`), else lean; see "
                        "docs/identification.md)")
    p.add_argument("--offset", type=_offset, default="auto",
                   help="cosine final layer: subtracted from the new rows' cosines; lower "
                        "favours new pills, higher protects old pills' answers (default "
                        "auto: new rows score their own pill's views like trained rows score "
                        "theirs, using the card's calibration.own_class_cosine or --old-data)")
    p.add_argument("--scale", type=_scale, default=1.0,
                   help="length of the new rows relative to the trained ones (default 1.0): "
                        "higher favours new pills, lower protects old pills' answers; 'auto' "
                        "picks the largest that costs the old pills at most --max-drop top-1 "
                        "on --old-data")
    p.add_argument("--old-data", metavar="D",
                   help="labelled photos of the model's own classes (e.g. `rxvision data "
                        "synth` views) for --scale auto or --offset auto")
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                   help=f"old-class top-1 that --scale auto may cost (default "
                        f"{DEFAULT_MAX_DROP})")
    p.add_argument("--head-precision", choices=HEAD_PRECISION_CHOICES, default=None,
                   help="store the new model's final-layer precision in its card "
                        "(identification.head_precision; fp16: half-precision rows, for "
                        "libraries of tens of thousands of pills; a cosine final layer). "
                        "Default: the base card's setting")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip labels the model already knows (default: refuse them)")
    p.add_argument("--json", action="store_true", help="print the enrollment record as JSON")
    p.set_defaults(func=enroll)


def add_view_arguments(p: argparse.ArgumentParser, views_note: str) -> None:
    """--views, --seed and --batch-size: how reference photos become embeddings."""
    from ..library.embeddings import DEFAULT_SEED, DEFAULT_VIEWS

    p.add_argument("--views", type=_non_negative, default=DEFAULT_VIEWS,
                   help=f"synthetic phone-style views per reference photo (default "
                        f"{DEFAULT_VIEWS}; {views_note})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the synthetic views")
    p.add_argument("--batch-size", type=int, default=32, help="views per forward pass")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def _offset(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be a number or 'auto', got {text!r}") from exc


def _scale(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0 or 'auto', got {text!r}")
    return value


def enroll(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..identify.bundled import resolve_model_path
    from ..library.enroll import enroll_artifact

    result = enroll_artifact(
        resolve_model_path(args.model), args.data, args.out, views=args.views, seed=args.seed,
        on_existing="skip" if args.skip_existing else "error", batch_size=args.batch_size,
        method=args.imprint, scale=args.scale, old_data=args.old_data, max_drop=args.max_drop,
        offset=args.offset, head_precision=args.head_precision,
    )
    fit = result.scale_fit
    if fit:
        table = ", ".join(f"{r['scale']}: {r['old_top1']:.3f}" for r in fit["table"])
        print(f"old-class top-1 on {fit['n']} images: {fit['old_top1_before']:.3f} before; "
              f"after, by scale: {table}; chose {fit['chosen']}", file=sys.stderr)
        if "warning" in fit:
            print(f"warning: {fit['warning']}", file=sys.stderr)
    if result.skipped:
        print(f"skipped {len(result.skipped)} label(s) the model already knows: "
              f"{', '.join(result.skipped[:5])}{' ...' if len(result.skipped) > 5 else ''}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        refs = sum(result.references.values())
        print(f"enrolled {len(result.enrolled)} new label(s) from {refs} reference photo(s) "
              f"({result.views_per_reference} synthetic views each, {result.imprint} "
              f"imprinting, " + (f"offset {result.offset:.4f}" if result.offset_fit or
                                 result.offset else f"scale {result.scale}")
              + f") -> {result.output}")
    lib = result.library
    if lib is not None:
        missing = lib["enrolled_without_facts"]
        print(f"drug library: {lib['new_references']} new reference(s) with facts from the "
              f"manifest -> {lib['path']}"
              + (f"; {len(missing)} enrolled label(s) without facts (no manifest row): "
                 f"their answers show the card's metadata" if missing else ""),
              file=sys.stderr if args.json else sys.stdout)
    if result.enrolled and fitted_before(args.model):
        print(f"note: the temperature and the not-sure/unknown thresholds were fitted before "
              f"these pills were added; the new pills' confidences are not calibrated (from "
              f"one studio photo each they can be confidently wrong). Refit them on photos "
              f"that include the new pills (rxvision calibrate --model {result.output} "
              f"--data VIEWS/manifest.csv --thresholds) and measure the answers with "
              f"rxvision evaluate before relying on them", file=sys.stderr)
    return 0


def fitted_before(model: str | None) -> bool:
    """Whether the base model's card holds a fitted temperature or thresholds."""
    from ..artifact import read_card
    from ..identify.bundled import resolve_model_path

    card = read_card(resolve_model_path(model))
    return "temperature" in (card.get("calibration") or {}) or bool(card.get("identification"))
