"""What the pill finder costs a crop model on independent renders: the same photos classified
from the finder's crop and from the true-mask crop, overall and per background.

The independent renderer writes each photo's exact pill masks (``masks/*.png``, one label
per pill). For every photo this benchmark crops (a) the finder's most pill-like region
(``most_pill_like``, what ``rxvision evaluate`` took until session 26), (b) the region
evaluation takes since (of the finder's two most pill-like, the one the classifier
recognises best, ``pick_the_pill``) and (c) the largest true pill by its own mask,
classifies the crops with one rotation and reports top-1 for each, the box IoU of the
finder's pick with the best-matching true pill, and how often nothing was found. A
benchmark: it reports numbers, it does not pass/fail. The renders are measurement data, not
photographs.

    python benchmarks/finder_cost.py /work/views/indep-1k --limit 400 \
        [--model models/rxvision-c3pi-4k] [--segmenter DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from rxvision.identify.pipeline import PICK_AMONG, PillPipeline, pick_the_pill, region_px
from rxvision.locate import PillRegion, normalised_crop
from rxvision.locate.scoring import box_iou
from rxvision.locate.segmenter import most_pill_like_regions, pill_likeness


def true_pills(mask: np.ndarray) -> list[PillRegion]:
    """One region per label of a renderer mask (0 is the surface), largest first."""
    regions = []
    for k, sl in enumerate(ndimage.find_objects(mask), start=1):
        if sl is None:
            continue
        box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        regions.append(PillRegion(box, mask[sl] == k, 1.0))
    return sorted(regions, key=lambda r: -int(r.mask.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("views", type=Path, help="folder written by render-independent")
    parser.add_argument("--model", default=None, help="crop model (default: bundled)")
    parser.add_argument("--segmenter", default=None, help="finder (default: the model's)")
    parser.add_argument("--limit", type=int, default=None, help="a fixed random subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    pipe = PillPipeline.load(args.model, segmenter=args.segmenter)
    ident, labels = pipe.identifier, pipe.identifier.labels
    with open(args.views / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if args.limit and args.limit < len(rows):
        rows = random.Random(args.seed).sample(rows, args.limit)

    def right(crop: Image.Image, label: str) -> bool:
        x = pipe.transform.normalize(pipe.transform.array(crop)[None])
        logits, _ = ident.forward(x)
        return labels[int(np.argmax(logits[0]))] == label

    def picked_right(image: Image.Image, found: list[PillRegion], label: str) -> bool:
        regions = most_pill_like_regions(found, PICK_AMONG)
        x = pipe.transform.normalize(np.stack([
            pipe.transform.array(normalised_crop(image, r, pipe.crop_size)) for r in regions]))
        logits, _ = ident.forward(x)
        lp = ident.log_probs(logits, np.array([region_px(r) for r in regions]))
        i = int(pick_the_pill(np.array([pill_likeness(r) for r in regions]), lp))
        return labels[int(np.argmax(lp[i]))] == label

    by: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0, 0])
    for row in rows:
        image = Image.open(args.views / row["image"]).convert("RGB")
        truth = true_pills(np.asarray(Image.open(args.views / row["mask"])))
        if not truth:
            continue
        oracle = right(normalised_crop(image, truth[0], pipe.crop_size), row["label"])
        found = pipe.segmenter.find(image)
        if found:
            pick = most_pill_like_regions(found, 1)[0]
            iou = max(box_iou(pick.box, t.box) for t in truth)
            finder = right(normalised_crop(image, pick, pipe.crop_size), row["label"])
            picked = picked_right(image, found, row["label"])
        else:
            iou, finder, picked = 0.0, False, False
        for key in ("all", row.get("background", "?")):
            s = by[key]
            s[0] += 1
            s[1] += finder
            s[2] += oracle
            s[3] += not found
            s[4] += iou
            s[5] += picked
    results = {
        key: {"n": s[0], "finder_top1": s[1] / s[0], "picked_top1": s[5] / s[0],
              "true_mask_top1": s[2] / s[0],
              "nothing_found": s[3] / s[0], "pick_box_iou": s[4] / s[0]}
        for key, s in sorted(by.items(), key=lambda kv: (kv[0] != "all", -kv[1][0]))
    }
    print(f"{'background':14s} {'n':>5s} {'finder':>7s} {'picked':>7s} {'true mask':>9s} "
          f"{'none':>5s} {'pick IoU':>8s}")
    for key, r in results.items():
        print(f"{key:14s} {r['n']:5d} {r['finder_top1']:7.3f} {r['picked_top1']:7.3f} "
              f"{r['true_mask_top1']:9.3f} {r['nothing_found']:5.2f} {r['pick_box_iou']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"views": str(args.views), "model": args.model,
                                         "segmenter": args.segmenter, "results": results},
                                        indent=2))


if __name__ == "__main__":
    main()
