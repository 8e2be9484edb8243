"""`rxvision predict`: identify pills in photos (top-k, calibrated, with abstention).

Examples:
    rxvision predict photo.jpg                       # bundled model, readable output
    rxvision predict --json photo.jpg                # JSON: top-k with metadata and flags
    rxvision predict --pair front.jpg back.jpg       # fuse both sides of one pill
    rxvision predict --explain overlays/ photo.jpg   # attention, Grad-CAM, occlusion PNGs
                                                     # (a crop model: per pill, photo_pill1_*)
    rxvision predict photos/ --out results.csv       # a folder or manifest -> CSV/JSONL
    rxvision predict photo.jpg --imprint "M 411" --color blue --shape round
                                                     # photo + what you read off the pill

A model trained on pill crops (augment.framing: crop) finds every pill in the photo first
and answers each one ("photo.jpg, pill 2 of 3 at (x0, y0)-(x1, y1): ..."); a photo with no
usable pill gets "retake the photo" and the cause instead of a guess. When the card has a
same-photo rule, the photo's two most pill-like sure pills are each weighed with the other
by how likely they are one pill seen twice ("weighed with the pill at ...: the same pill
with p = 0.97"); typed facts then go to such a pair when the photo says it is one pill.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import add_head_precision_argument, add_tta_argument, add_zoom_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..identify.bundled import add_model_argument
    from ..identify.identifier import BACKENDS

    p = sub.add_parser("predict", help="identify pills in photos",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (JPEG, PNG, WebP, HEIC, ...), folders of images "
                        "(recursive) or manifest CSVs")
    add_model_argument(p)
    p.add_argument("--topk", type=int, default=5, help="candidates per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON to stdout")
    p.add_argument("--pair", action="store_true",
                   help="take the images two by two as the front and back of one pill and "
                        "fuse both views into one ranking")
    p.add_argument("--explain", metavar="OUT_DIR",
                   help="write attention, Grad-CAM and occlusion overlay PNGs per image "
                        "(torch backend; occlusion runs ~100 extra forward passes)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="inference backend (default torch)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--abstain-threshold", type=float, metavar="P",
                   help="abstain below this top probability (default: the model card's); "
                        "given, it also rules answers with a typed imprint, the photo at "
                        "full weight")
    p.add_argument("--ood-threshold", type=float, metavar="S",
                   help="flag unknown pills above this open-set score (default: the card's)")
    p.add_argument("--segmenter", metavar="DIR",
                   help="pill finder for a crop model (default: the model's own segmenter/)")
    p.add_argument("--max-pills", type=int, default=8,
                   help="most pills answered per photo by a crop model (default 8)")
    p.add_argument("--no-imprint", action="store_true",
                   help="a crop model reads each pill's imprint (OCR, ~80 ms per pill) and "
                        "weighs it with the photo when the model has a drug library; this "
                        "turns that off")
    p.add_argument("--out", metavar="FILE", help="write all results to FILE.csv or FILE.jsonl")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    add_tta_argument(p)
    add_zoom_argument(p)
    add_head_precision_argument(p)
    typed = p.add_argument_group(
        "what you can read off the pill", "combined with the photo's probabilities (one pill: "
        "one image, or one --pair; a photo showing two sure pills only when they look like "
        "one pill seen twice); needs the model's drug library; see docs/identification.md")
    typed.add_argument("--imprint", help='letters and digits on the pill, e.g. "M 411"; the '
                       "photo is then weighed by the card's typed_photo_power against it")
    typed.add_argument("--color", help='its colour(s), e.g. blue, "white, yellow"')
    typed.add_argument("--shape", help="e.g. round, oval, capsule")
    lib = p.add_mutually_exclusive_group()
    lib.add_argument("--library", metavar="PATH",
                     help="drug library to name the pills with (default: the model's own "
                          "library.sqlite, when it has one)")
    lib.add_argument("--no-library", action="store_true",
                     help="answer without drug facts (the card's label metadata only)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=predict)


def predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data import DatasetError, ImageDecodeError
    from ..identify.answers import TypedFacts
    from ..identify.identifier import Identifier, IdentifierError
    from ..identify.pipeline import PillPipeline, model_framing
    from ..identify.predict_io import (
        OUTPUT_SUFFIXES,
        expand_inputs,
        format_text,
        pill_rows,
        result_row,
        write_rows,
    )
    from ..identify.tta import calibration_mismatch

    if args.out and Path(args.out).suffix.lower() not in OUTPUT_SUFFIXES:
        raise IdentifierError(f"--out must end in {' or '.join(OUTPUT_SUFFIXES)}: {args.out}")
    if args.explain and args.backend != "torch":
        raise IdentifierError("--explain needs the torch backend (use --backend torch)")
    if args.topk < 1:
        raise IdentifierError(f"--topk must be >= 1, got {args.topk}")
    typed = TypedFacts.parse(args.imprint, args.color, args.shape)  # QueryError: exit 2
    items, batch = expand_inputs(args.images)
    if not items:
        raise DatasetError(f"no images found in {' '.join(args.images)}")
    if args.pair and len(items) % 2:
        raise IdentifierError(f"--pair takes images two by two (front, back); got {len(items)}")
    if typed is not None and len(items) != (2 if args.pair else 1):
        raise IdentifierError("--imprint/--color/--shape describe one pill: give one image "
                              f"(or one --pair of front and back); got {len(items)} images")
    ident = Identifier.load(args.model, backend=args.backend, device=args.device,
                            abstain_threshold=args.abstain_threshold,
                            ood_threshold=args.ood_threshold, batch_size=args.batch_size,
                            tta=args.tta, zoom=args.zoom, head_precision=args.head_precision,
                            library=False if args.no_library else args.library)
    if typed is not None and ident.answers.library is None:
        raise IdentifierError("--imprint/--color/--shape need a drug library: "
                              + "; ".join(ident.answers.notes))
    for note in ident.answers.notes:
        print(f"note: {note}", file=sys.stderr)
    mismatch = calibration_mismatch(ident.card, ident.tta)
    if mismatch:
        print(f"note: {mismatch}", file=sys.stderr)
    if ident.ood_threshold is None:
        print("note: no open-set threshold in the model card; unknown pills are not flagged "
              "(fit one: rxvision calibrate --thresholds)", file=sys.stderr)

    pipeline = None
    if model_framing(ident.card) == "crop":
        read = not args.no_imprint and ident.answers.library is not None
        if not args.no_imprint and not read:
            print("note: the imprint is not read: it is matched against the model's drug "
                  "library, and this model has none (or --no-library)", file=sys.stderr)
        pipeline = PillPipeline.around(ident, args.segmenter, args.max_pills, imprint=read)
    elif args.segmenter:
        raise IdentifierError("--segmenter is for models trained on pill crops "
                              "(augment.framing: crop); this one sees whole photos")

    show_progress = (batch or args.out) and not args.no_progress
    rows = []
    with tqdm(total=len(items), disable=not show_progress, unit="img", file=sys.stderr) as bar:
        if pipeline is not None:
            step = 2 if args.pair else 1
            for i in range(0, len(items), step):
                group = items[i:i + step]
                label = " + ".join(str(it.path) for it in group)
                try:
                    answer = (pipeline.identify_pair(group[0].path, group[1].path, args.topk,
                                                     typed) if args.pair
                              else pipeline.identify(group[0].path, args.topk, typed=typed))
                except ImageDecodeError as exc:
                    answer = exc
                rows += pill_rows(label, answer, group[0].true_label)
                bar.update(step)
        elif args.pair:
            for front, back in zip(items[::2], items[1::2], strict=True):
                try:
                    result = ident.identify_pair(front.path, back.path, args.topk, typed)
                except ImageDecodeError as exc:
                    result = exc
                rows.append(result_row(f"{front.path} + {back.path}", result, front.true_label))
                bar.update(2)
        elif typed is not None:
            try:
                result = ident.identify(items[0].path, args.topk, typed)[0]
            except ImageDecodeError as exc:
                result = exc
            rows.append(result_row(str(items[0].path), result, items[0].true_label))
            bar.update(1)
        else:
            pairs = ident.iter_identify([it.path for it in items], args.topk)
            for item, (_, result) in zip(items, pairs, strict=True):
                rows.append(result_row(str(item.path), result, item.true_label))
                bar.update(1)

    failed = [r for r in rows if "error" in r]
    if args.explain:
        from ..identify.explain import write_overlays  # torch: only when explaining

        good = {str(it.path): it.path for it in items}
        bad = {p for r in failed for p in r["image"].split(" + ")}
        used: set[str] = set()
        for key, path in good.items():
            if key in bad:
                continue
            stem, n = path.stem, 1
            while stem in used:  # same file name in two folders
                n += 1
                stem = f"{path.stem}_{n}"
            used.add(stem)
            if pipeline is None:
                write_overlays(args.explain, stem, ident.explain(path))
                continue
            for number, pill in enumerate(pipeline.find(path).pills, start=1):  # per pill
                write_overlays(args.explain, f"{stem}_pill{number}",
                               pipeline.explain_crop(pill.crop))
    for row in failed:
        print(f"rxvision predict: error: {row['error']}", file=sys.stderr)
    if args.out:
        write_rows(args.out, rows, args.topk)
        print(f"wrote {len(rows)} result(s) to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not (batch and args.out):
        print("\n".join(format_text(r) for r in rows if "error" not in r))
    if failed:
        print(f"{len(failed)} of {len(rows)} input(s) failed", file=sys.stderr)
        return 1
    return 0
