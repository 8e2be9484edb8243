"""Which region is "the pill" of a one-pill photo? Rules compared on independent renders.

For each photo the finder's ``--among`` most pill-like regions (``most_pill_like_regions``)
are cropped and classified once; each rule then picks one of the first K of them and is
scored by the picked crop's top-1 and by what the card's rule (abstain and energy
thresholds, finder gate, 36 px) answers and gets wrong. Rules: the finder's pick alone
(``most_pill_like``), the lowest energy score, the highest calibrated confidence, and
pill-likeness times that confidence (``pick_the_pill``, the rule evaluation uses since
session 26). A benchmark: it prints measured numbers. Choose on calibration renders, not
on the sets a model is reported on (docs/locate.md, "Which region is the pill").

    python benchmarks/pick_rule.py views/s17/cal-512-new --limit 300 [--among 4] [--model M]
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from rxvision.engine.evaluate import answerable
from rxvision.identify.pipeline import PillPipeline, region_px
from rxvision.locate import normalised_crop
from rxvision.locate.segmenter import most_pill_like_regions, pill_likeness

RULES = ("finder_alone", "lowest_energy", "highest_confidence", "likeness_x_confidence")


def pick(rule: str, likeness: np.ndarray, confidence: np.ndarray, energy: np.ndarray) -> int:
    if rule == "finder_alone":
        return 0
    if rule == "lowest_energy":
        return int(np.argmin(energy))
    if rule == "highest_confidence":
        return int(np.argmax(confidence))
    return int(np.argmax(likeness * confidence))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("views", type=Path, help="folder written by render-independent")
    ap.add_argument("--model", default=None, help="crop model (default: bundled)")
    ap.add_argument("--limit", type=int, default=300, help="a fixed random subset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--among", type=int, default=4, help="most candidates compared")
    args = ap.parse_args()
    if args.among < 1:
        ap.error("--among must be >= 1")

    pipe = PillPipeline.load(args.model, tta=1)
    ident = pipe.identifier
    with open(args.views / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if args.limit and args.limit < len(rows):
        rows = random.Random(args.seed).sample(rows, args.limit)
    index = {label: i for i, label in enumerate(ident.labels)}
    # per K, per rule: photos, right, answered, answered wrongly
    counts: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * 4))
    for n, row in enumerate(rows, 1):
        image = Image.open(args.views / row["image"]).convert("RGB")
        regions = most_pill_like_regions(pipe.segmenter.find(image), args.among)
        if not regions:  # nothing found: missed by every rule
            for k in range(1, args.among + 1):
                for rule in RULES:
                    counts[k][rule][0] += 1
            continue
        crops = [pipe.transform.array(normalised_crop(image, r, pipe.crop_size))
                 for r in regions]
        logits, emb = ident.forward(pipe.transform.normalize(np.stack(crops)))
        px = np.array([region_px(r) for r in regions])
        log_probs = ident.log_probs(logits, px)
        energy = ident.ood(logits, emb)
        confidence = np.exp(log_probs.max(axis=1))
        right = log_probs.argmax(axis=1) == index.get(row["label"], -1)
        finder = np.array([r.score for r in regions])
        answers = ((confidence >= ident.abstain_threshold)
                   & answerable(pipe.min_finder_score, finder, px))
        if ident.ood_threshold is not None:
            answers &= energy <= ident.ood_threshold
        likeness = np.array([pill_likeness(r) for r in regions])
        for k in range(1, args.among + 1):
            for rule in RULES:
                i = pick(rule, likeness[:k], confidence[:k], energy[:k])
                c = counts[k][rule]
                c[0] += 1
                c[1] += int(right[i])
                c[2] += int(answers[i])
                c[3] += int(answers[i] and not right[i])
        print(f"\r{n}/{len(rows)} photos", end="", flush=True)
    print(f"\n{args.views}: top-1 of the picked crop (answered / wrong under the card's rule)")
    for k in range(1, args.among + 1):
        print(f"among {k}: " + " | ".join(
            f"{rule} {c[1] / max(c[0], 1):.3f} ({c[2]} / {c[3]})"
            for rule, c in counts[k].items()))


if __name__ == "__main__":
    main()
