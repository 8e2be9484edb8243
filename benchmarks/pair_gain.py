"""What photographing both sides gains: one-side photos alone against the fused pair.

For N random c3pi-1k pills whose reference shows two sides, the training synthesiser
renders one photo of each side (the left and right side of the reference photo, usually
front and back; other backgrounds, light and pose for each, 320 px like `rxvision data
synth`), plus one photo with both sides in the frame. Each one-side photo is identified
alone, then the two are fused (`Identifier.identify_pair`, the `--pair` path), with the
model's own rotations, temperature and thresholds. Prints top-1,
top-5, the share answered and the share answered wrongly (not abstained on). Seeds are
fixed; nothing here was used to train or calibrate.

    python benchmarks/pair_gain.py [--model DIR] [--n 300] [--tta N]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from PIL import Image

from rxvision.commands.options import add_tta_argument
from rxvision.data import load_dataset, load_image
from rxvision.data.synth import PhoneViewSynthesizer
from rxvision.identify.identifier import Identification, Identifier

SEED = 31  # no training, calibration or held-out set uses it
BATCH = 50


def score(name: str, results: list[Identification], labels: list[str]) -> None:
    top1 = [r.top.label == lab for r, lab in zip(results, labels, strict=True)]
    top5 = [lab in [c.label for c in r.candidates] for r, lab in zip(results, labels,
                                                                       strict=True)]
    answered = [not r.abstain for r in results]
    wrong = sum(a and not ok for a, ok in zip(answered, top1, strict=True))
    n = len(labels)
    print(f"{name:34s} {sum(top1) / n:6.3f} {sum(top5) / n:6.3f} {sum(answered) / n:9.3f} "
          f"{wrong / n:15.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model artifact (default: the bundled model)")
    p.add_argument("--data", default="../shared/data/c3pi-1k/manifest.csv")
    p.add_argument("--n", type=int, default=300, help="pills (three photos each)")
    p.add_argument("--size", type=int, default=320, help="rendered photo side in pixels")
    add_tta_argument(p)
    args = p.parse_args()
    refs = load_dataset(args.data)
    ident = Identifier.load(args.model, tta=args.tta)
    images = [load_image(s.path) for s in refs.samples]
    synth = PhoneViewSynthesizer.from_images(images, size=(args.size, args.size))
    two_sided = [i for i in range(len(images)) if int(synth.num_sides[i]) == 2]
    pick = random.Random(SEED).sample(two_sided, min(args.n, len(two_sided)))
    labels = [refs.samples[i].label for i in pick]
    print(f"{len(pick)} of the {len(two_sided)} two-sided pills; model {ident.path}, "
          f"{ident.tta} rotation(s)")
    g = torch.Generator().manual_seed(SEED)
    photos: dict[str, list[Image.Image]] = {"front": [], "back": [], "both": []}
    for start in range(0, len(pick), BATCH):
        classes = torch.tensor(pick[start:start + BATCH])
        for key, mode, side in (("front", "one", 0), ("back", "one", 1), ("both", "both", 0)):
            views, _ = synth.render(classes, g, [mode] * len(classes),
                                    torch.full((len(classes),), side))
            photos[key] += [Image.fromarray(v.permute(1, 2, 0).numpy()) for v in views]
    print(f"{'photos':34s} {'top-1':>6s} {'top-5':>6s} {'answered':>9s} {'answered wrong':>15s}")
    t0 = time.perf_counter()
    for key, name in (("front", "left side alone"), ("back", "right side alone"),
                      ("both", "both sides in one photo")):
        score(name, ident.identify(photos[key], topk=5), labels)
    pairs = [ident.identify_pair(f, b, topk=5)
             for f, b in zip(photos["front"], photos["back"], strict=True)]
    score("both one-side photos fused (--pair)", pairs, labels)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
