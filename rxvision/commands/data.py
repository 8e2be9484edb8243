"""`rxvision data check|preview|synth|render-independent`: inspect data and render views."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check a dataset, preview augmentation, render views")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    c = dsub.add_parser("check", help="report bad files, duplicates, class counts, sizes")
    c.add_argument("data", help="manifest CSV or class-per-folder directory")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=check)

    v = dsub.add_parser("preview", help="write a grid of augmented training views (PNG)")
    v.add_argument("data", help="manifest CSV or class-per-folder directory")
    v.add_argument("--out", required=True, help="output PNG, e.g. grid.png")
    v.add_argument("--config", default=None, help="config whose input size/augment to use")
    v.add_argument("--num", type=int, default=32, help="number of views (default 32)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--strength", type=float, default=None, help="override augment.strength")
    v.set_defaults(func=preview)

    s = dsub.add_parser("synth", help="render held-out phone-style views to a manifest")
    s.add_argument("data", help="reference manifest CSV or class-per-folder directory")
    s.add_argument("--out", required=True, help="output directory (gets manifest.csv)")
    s.add_argument("--views", type=int, default=2,
                   help="views per reference, alternating both sides / one side (default 2)")
    s.add_argument("--seed", type=int, default=2024,
                   help="generator seed; use one no training run uses (default 2024)")
    s.add_argument("--size", type=int, default=320, help="square output size in pixels")
    s.add_argument("--strength", type=float, default=1.0, help="augmentation strength")
    s.set_defaults(func=synth)

    r = dsub.add_parser(
        "render-independent",
        help="render phone-style photos with the independent renderer (validation only)",
        description="Render phone-style photos of each reference pill with the independent "
        "validation renderer (rxvision.validation): surfaces from other sources, pills lying "
        "in the frame, a tilted projective camera, its own light, blur, noise and JPEG. It "
        "shares no code with the training renderer (`data synth`), so its views measure how "
        "well a model copes with photos it was not trained to expect. Use them for "
        "validation, model selection and reports, never for training. Writes OUT/images, "
        "OUT/masks (pill label PNGs), OUT/manifest.csv (image,label,mode,num_pills,boxes,"
        "mask,...), OUT/annotations.jsonl and OUT/skipped.csv; the folder appears only "
        "when complete.",
        epilog="example: rxvision data render-independent ../shared/data/c3pi-1k/manifest.csv "
        "--out views/indep --views 2 --seed 7 --size 512; then rxvision evaluate --data "
        "views/indep/manifest.csv --group-by mode")
    r.add_argument("data", help="reference manifest CSV or class-per-folder directory "
                   "(C3PI studio photos)")
    r.add_argument("--out", required=True, help="output folder (must not exist, see "
                   "--overwrite)")
    r.add_argument("--views", type=int, default=2,
                   help="photos per reference, alternating both sides / one side (default 2)")
    r.add_argument("--seed", type=int, default=7,
                   help="base seed; photo (reference i, view v) uses seed (S, i, v) (default 7)")
    r.add_argument("--size", type=int, default=1024,
                   help="long side in pixels, 256..4032 (4032: 12 MP, 4032x3024); default 1024")
    r.add_argument("--aspect", type=float, default=4 / 3,
                   help="long side / short side (default 4:3, as phone cameras)")
    r.add_argument("--backgrounds", default=None, metavar="KIND[,KIND...]",
                   help="restrict surfaces to these kinds (default: all; see docs/data.md)")
    r.add_argument("--limit", type=int, default=None,
                   help="render only the first N references (quick looks)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace OUT once the new set is complete")
    r.set_defaults(func=render_independent)


def check(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..data.check import check_dataset

    report = check_dataset(load_dataset(args.data))
    summary = report.to_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['num_images']} images, {summary['num_classes']} classes; "
              f"images per class {summary['images_per_class']}")
        print(f"image sizes: {summary['image_sizes']}")
        for err in report.errors:
            print(f"ERROR {err}")
        for group in report.duplicates:
            print(f"DUPLICATE {' = '.join(group)}")
        print("OK" if report.ok else f"{len(report.errors)} error(s)")
    return 0 if report.ok else 1


def preview(args: argparse.Namespace) -> int:
    import torch
    from torchvision.utils import make_grid

    from ..config import Config, load_config
    from ..data import load_dataset, load_image
    from ..data.synth import PhoneViewSynthesizer, SynthParams
    from ..io_utils import atomic_write

    cfg = load_config(args.config) if args.config else Config()
    images = load_dataset(args.data)
    refs = [load_image(s.path) for s in images.samples]
    params = SynthParams.for_training(cfg.augment, args.strength)  # as `rxvision train`
    synth = PhoneViewSynthesizer.from_images(refs, tuple(cfg.training.input_size), params)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(len(refs), (args.num,), generator=g)
    views, _ = synth.render(idx, g)
    grid = make_grid(views, nrow=8, padding=2)
    from PIL import Image

    img = Image.fromarray(grid.permute(1, 2, 0).numpy())
    atomic_write(args.out, lambda p: img.save(p, format="PNG"))
    print(f"wrote {args.out} ({args.num} views)")
    return 0


def synth(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..data.export_views import write_views

    manifest = write_views(load_dataset(args.data), args.out, args.views, args.seed,
                           size=args.size, strength=args.strength)
    print(f"wrote {manifest}")
    return 0


def render_independent(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from ..data import load_dataset
    from ..validation import IndependentRenderer, RenderParams, write_views

    images = load_dataset(args.data)
    if args.limit is not None:
        images = dataclasses.replace(images, samples=images.samples[: args.limit])
    params = RenderParams()
    if args.backgrounds:
        params = dataclasses.replace(params, backgrounds=tuple(args.backgrounds.split(",")))
    renderer = IndependentRenderer(args.size, args.aspect, params)

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"  {done}/{total} references", file=sys.stderr, flush=True)

    manifest = write_views(images, args.out, args.views, args.seed, renderer,
                           overwrite=args.overwrite, progress=progress)
    with open(manifest.parent / "skipped.csv") as fh:
        skipped = sum(1 for _ in fh) - 1  # less the header
    print(f"wrote {manifest}" + (f" ({skipped} reference(s) skipped: see skipped.csv)"
                                 if skipped else ""))
    return 0
