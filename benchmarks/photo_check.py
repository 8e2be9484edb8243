"""How often the photo check asks for a retake: on real pill photos (should be never) and
on photos of nothing (should be always).

Runs :func:`rxvision.locate.presence.check_photo` over folders of photos (recursive) or
manifest CSVs and counts the causes; ``--degenerate`` adds built photos of no pill (plain
colours at 1 and 224 px, gradients, a printed page, a palm without a pill, noise) and
sample photos made too dark, overexposed, blurred or tiny.

Example:
    python benchmarks/photo_check.py data/sample/images ../shared/data/c3pi-1k/images \\
        ../shared/data/otc-phone-photos/images --degenerate
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from rxvision.data import load_image  # noqa: E402
from rxvision.identify.predict_io import expand_inputs  # noqa: E402
from rxvision.locate.presence import check_photo  # noqa: E402


def degenerate(sample: Path) -> dict[str, Image.Image]:
    """Photos of no pill, and sample photos spoilt in the ways the check names."""
    out: dict[str, Image.Image] = {}
    for rgb in [(200, 10, 10), (255, 255, 255), (0, 0, 0), (128, 128, 128), (20, 20, 200)]:
        for side in (1, 224):
            out[f"plain {rgb} {side}px"] = Image.new("RGB", (side, side), rgb)
    x = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None]
    out["grey gradient"] = Image.fromarray(np.broadcast_to(x, (480, 640, 3)).astype(np.uint8))
    page = Image.new("RGB", (640, 480), (240, 238, 230))
    draw = ImageDraw.Draw(page)
    for i in range(10):
        draw.text((20, 20 + 44 * i), "Take 1 tablet by mouth 2x daily", fill=(25, 25, 30),
                  font=ImageFont.load_default(size=28))
    out["printed page"] = page
    palm = Image.new("RGB", (640, 480), (120, 110, 100))
    draw = ImageDraw.Draw(palm)
    draw.ellipse((150, 160, 450, 470), fill=(224, 172, 140))
    for k in range(4):
        draw.rounded_rectangle((170 + 65 * k, 0, 215 + 65 * k, 260), 20, fill=(218, 165, 134))
    out["palm, no pill"] = palm.filter(ImageFilter.GaussianBlur(1.5))
    out["noise"] = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3),
                                                                      dtype=np.uint8))
    photo = load_image(sample)
    out["sample, dark"] = ImageEnhance.Brightness(photo).enhance(0.12)
    out["sample, overexposed"] = ImageEnhance.Brightness(photo).enhance(3.0)
    for frac in (0.0125, 0.025, 0.05):
        out[f"sample, blurred sigma {frac:.2%} of side"] = photo.filter(
            ImageFilter.GaussianBlur(frac * max(photo.size)))
    out["sample, 1/12 size"] = photo.resize((photo.width // 12, photo.height // 12))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", help="folders of photos or manifest CSVs")
    p.add_argument("--degenerate", action="store_true", help="also the built photos")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    report: dict = {"sets": {}, "degenerate": {}}
    for arg in args.inputs:
        items, _ = expand_inputs([arg])
        causes: collections.Counter = collections.Counter()
        retaken = []
        t0 = time.perf_counter()
        for item in items:
            cause = check_photo(load_image(item.path)).retake
            causes[cause or "answered"] += 1
            if cause:
                retaken.append([str(item.path), cause])
        report["sets"][arg] = {"photos": len(items), "causes": dict(causes),
                               "retake_rate": round(len(retaken) / max(len(items), 1), 4),
                               "retaken": retaken[:20],
                               "ms_per_photo": round((time.perf_counter() - t0) * 1e3
                                                     / max(len(items), 1), 1)}
        print(f"{arg}: {len(items)} photos, {dict(causes)}")
    if args.degenerate:
        sample = sorted((REPO / "data/sample/images").glob("*.jpg"))[1]
        for name, img in degenerate(sample).items():
            report["degenerate"][name] = check_photo(img).retake
            print(f"{name}: {report['degenerate'][name] or 'answered (left to the model)'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
