"""A contact sheet (PNG grid) of photos listed in a manifest, e.g. independent-renderer views.

    python scripts/contact_sheet.py /work/views/indep-1k/manifest.csv \
        docs/img/independent-views.png --num 16 --tile 240

Photos are taken evenly spaced through the manifest (deterministic), shrunk to ``--tile``
pixels on the long side and centred in square cells; the sheet is quantised to 256
colours so that it stays small enough for the docs.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image

from rxvision.data.decode import load_image
from rxvision.io_utils import atomic_write


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("manifest", type=Path, help="manifest CSV (image column)")
    parser.add_argument("out", type=Path, help="output PNG")
    parser.add_argument("--num", type=int, default=16, help="photos on the sheet (default 16)")
    parser.add_argument("--cols", type=int, default=4, help="photos per row (default 4)")
    parser.add_argument("--tile", type=int, default=240, help="cell size in pixels")
    args = parser.parse_args()
    with open(args.manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{args.manifest}: no rows")
    step = max(1, len(rows) // args.num)
    picks = rows[::step][: args.num]
    rows_n = -(-len(picks) // args.cols)
    sheet = Image.new("RGB", (args.cols * args.tile, rows_n * args.tile), (255, 255, 255))
    for k, row in enumerate(picks):
        img = load_image(args.manifest.parent / row["image"])
        img.thumbnail((args.tile - 4, args.tile - 4), Image.Resampling.LANCZOS)
        x = (k % args.cols) * args.tile + (args.tile - img.width) // 2
        y = (k // args.cols) * args.tile + (args.tile - img.height) // 2
        sheet.paste(img, (x, y))
    small = sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    atomic_write(args.out, lambda p: small.save(p, format="PNG", optimize=True))
    print(f"wrote {args.out} ({len(picks)} photos, {args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
