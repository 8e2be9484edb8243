"""What zooming to the pill (preprocessing.zoom: auto) does, by how large the pill is.

Renders phone-style views of N random c3pi-1k pills at a realistic photo resolution with
the training synthesiser, at three pill sizes (fraction of the frame width per side):
the training range, smaller and tiny, and identifies each with zoom off and auto.
Prints top-1, the share answered, and the share answered wrongly (not abstained on), which
is the number that matters for safety. Seeds are fixed; nothing here was used to train.

    python benchmarks/zoom_gain.py [--model DIR] [--n 100] [--side 1536] [--tta N]

``--tta`` defaults to the model's own setting (its card's ``calibration.tta``, 4 for the
bundled model).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import torch
from PIL import Image

from rxvision.commands.options import add_tta_argument
from rxvision.data import load_dataset, load_image
from rxvision.data.synth import PhoneViewSynthesizer, SynthParams
from rxvision.identify.identifier import Identifier
from rxvision.locate.locator import locate_pills

SIZES = {  # name: (both sides: side length / width, one side: the same)
    "training range": ((0.30, 0.46), (0.45, 0.85)),
    "small": ((0.15, 0.25), (0.20, 0.35)),
    "tiny": ((0.08, 0.14), (0.10, 0.18)),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model artifact (default: the bundled model)")
    p.add_argument("--data", default="../shared/data/c3pi-1k/manifest.csv")
    p.add_argument("--n", type=int, default=100, help="pills (one view each per size)")
    p.add_argument("--side", type=int, default=1536, help="rendered photo side in pixels")
    add_tta_argument(p)
    args = p.parse_args()
    refs = load_dataset(args.data)
    rng = random.Random(0)
    pick = rng.sample(range(len(refs.samples)), args.n)
    images = [load_image(refs.samples[i].path) for i in pick]
    labels = [refs.samples[i].label for i in pick]
    ident = {z: Identifier.load(args.model, zoom=z, tta=args.tta) for z in ("off", "auto")}
    min_crop = min(ident["auto"].transform.size)
    print(f"{args.n} pills at {args.side} px; model {ident['off'].path}")
    print(f"{'pill size':16s} {'zoom':5s} {'top-1':>6s} {'answered':>9s} {'answered wrong':>15s}")
    for name, (both, one) in SIZES.items():
        synth = PhoneViewSynthesizer.from_images(
            images, size=(args.side, args.side), params=SynthParams(both_size=both, one_size=one))
        g = torch.Generator().manual_seed(99)
        photos = []
        for start in range(0, len(images), 10):  # full-size renders: ten at a time
            views, _ = synth.render(torch.arange(start, min(start + 10, len(images))), g)
            photos += [Image.fromarray(v.permute(1, 2, 0).numpy()) for v in views]
        t0 = time.perf_counter()
        reasons = Counter(locate_pills(im, min_crop).reason.split(" (")[0].split(":")[0]
                          for im in photos)
        locate_ms = (time.perf_counter() - t0) * 1e3 / len(photos)
        for zoom in ("off", "auto"):
            results = ident[zoom].identify(photos, topk=1)
            right = [r.top.label == lab for r, lab in zip(results, labels, strict=True)]
            answered = [not r.abstain for r in results]
            wrong = sum(a and not ok for a, ok in zip(answered, right, strict=True))
            print(f"{name:16s} {zoom:5s} {sum(right) / len(right):6.3f} "
                  f"{sum(answered) / len(answered):9.3f} {wrong / len(right):15.3f}")
        print(f"  locator: {locate_ms:.0f} ms/photo; {dict(reasons)}")


if __name__ == "__main__":
    main()
