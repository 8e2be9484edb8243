"""Two different pills in one photo: does weighing a photo's two pills as one pill seen
twice (the card's same-photo rule) make the pipeline name a wrong pill?

The independent renderer places a pill's front and back as two pills of one photo; given
one side of pill A and one side of another pill B instead, it renders two different pills
lying side by side (same light, blur and JPEG). B is a look-alike of A when the library has
one (same colour and shape in the references' facts), else any other pill. Each photo goes
through the pipeline as a user's would (``PillPipeline.identify``, 1 rotation), once with
the card's rule and once without; every answer given (not "not sure", not unknown) is
matched to the rendered pill under its box (IoU >= 0.5) and counted wrong when it names
another pill. A benchmark: it prints numbers; the renders are measurement data, not
photographs.

    python benchmarks/two_pill_photos.py --model models/rxvision-c3pi-4k \\
        --refs views/s17/refs/new-512.csv --n 300 --size 512 [--seed 27]
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from rxvision.identify.pipeline import PillPipeline
from rxvision.locate.scoring import box_iou
from rxvision.validation.render import IndependentRenderer, RenderError
from rxvision.validation.scene import PlacementError
from rxvision.validation.segment import SegmentError

PILL_IOU = 0.5


def pairs(refs: list[dict[str, str]], rng: random.Random
          ) -> Iterator[tuple[dict[str, str], dict[str, str], bool]]:
    """Endless (A, B, look-alike?) draws of two references with different labels."""
    looks = defaultdict(list)
    for r in refs:
        looks[(r["color"], r["shape"])].append(r)
    while True:
        a = rng.choice(refs)
        alike = [r for r in looks[(a["color"], a["shape"])] if r["label"] != a["label"]]
        b = rng.choice(alike or [r for r in refs if r["label"] != a["label"]])
        yield a, b, bool(alike)


class Sides:
    """Each reference's cut-out sides, cut once; None for one the renderer cannot cut (as
    render-independent skips it)."""

    def __init__(self, renderer: IndependentRenderer) -> None:
        self.renderer, self.cache = renderer, {}

    def __call__(self, ref: dict[str, str]) -> list[Any] | None:
        if ref["image"] not in self.cache:
            try:
                self.cache[ref["image"]] = self.renderer.cut(
                    Image.open(ref["image"]).convert("RGB"))
            except SegmentError:
                self.cache[ref["image"]] = None
        return self.cache[ref["image"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="crop model (default: bundled)")
    ap.add_argument("--refs", required=True, help="reference manifest (image, label, color, "
                    "shape), e.g. views/s17/refs/new-512.csv")
    ap.add_argument("--n", type=int, default=300, help="photos to render")
    ap.add_argument("--size", type=int, default=512, help="photo's long side, pixels")
    ap.add_argument("--seed", type=int, default=27)
    args = ap.parse_args()
    with open(args.refs, newline="") as f:
        refs = list(csv.DictReader(f))
    rng = random.Random(args.seed)
    renderer = IndependentRenderer(size=args.size)
    with_rule = PillPipeline.load(args.model, tta=1)
    rule = with_rule.identifier.same_photo
    if rule is None:
        raise SystemExit("the model's card has no identification.same_photo rule to measure")
    counts = {name: defaultdict(int) for name in ("with the rule", "without")}
    same_over_half = weighed = alike_photos = k = 0
    sides = Sides(renderer)
    for a, b, alike in pairs(refs, rng):
        if k == args.n:
            break
        cut_a, cut_b = sides(a), sides(b)
        if cut_a is None or cut_b is None:
            continue
        try:
            photo, meta = renderer.render([rng.choice(cut_a), rng.choice(cut_b)],
                                          np.random.default_rng([args.seed, k + 1]),
                                          mode="both")
        except (RenderError, PlacementError):  # they do not fit the frame: draw again
            continue
        k += 1
        truth = [(p["box"], (a, b)[p["side"]]["label"]) for p in meta["pills"]]
        alike_photos += alike
        for name, same in (("with the rule", rule), ("without", None)):
            with_rule.identifier.same_photo = same
            answer = with_rule.identify(photo)
            c = counts[name]
            c["photos"] += 1
            for pill in answer.pills:
                ident = pill.identification
                if name == "with the rule" and ident.same_photo is not None:
                    weighed += 1
                    same_over_half += ident.same_photo["same_pill_probability"] > 0.5
                if ident.abstain or ident.unknown or ident.retake:
                    continue
                c["answers"] += 1
                iou, label = max((box_iou(pill.box, box), lab) for box, lab in truth)
                if iou < PILL_IOU:
                    c["answers on no pill"] += 1
                elif ident.top.label != label:
                    c["wrong"] += 1
        with_rule.identifier.same_photo = rule
        if k % 50 == 0:
            print(f"  {k}/{args.n} photos", flush=True)
    print(f"{args.n} photos of two different pills ({alike_photos} look-alikes: same colour "
          f"and shape), {args.size} px, seed {args.seed}; rule: temperature "
          f"{rule.temperature}, prior {rule.prior}")
    print(f"answers weighed with the other pill: {weighed}, p(same) > 0.5 in "
          f"{same_over_half}")
    print("| | photos | answers | naming a wrong pill | on no pill |")
    print("|---|---|---|---|---|")
    for name, c in counts.items():
        print(f"| {name} | {c['photos']} | {c['answers']} | {c['wrong']} | "
              f"{c['answers on no pill']} |")


if __name__ == "__main__":
    main()
