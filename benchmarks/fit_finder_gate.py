"""Fit the finder gate: the least finder score a region needs before it is answered.

The pill finder reports regions that are no pill (a patch of palm, a printed motif), and
the classifier can be sure of a library pill on them: a real phone photo's palm patch was
answered "lurasidone 80 mg" at 0.983 (session 24). The finder's own score (the mean
foreground probability over the region) tells most of them apart: on independent renders
the found pills score 0.94 and above in 95 cases of 100, the regions that are no pill 0.86
at the median. This script runs the finder over labelled independent-renderer photos (ones
the model is *not* measured on), takes the score of the region that is each photo's pill
(IoU >= 0.5 with a true box) and of every region that overlaps none (IoU < 0.1), and
chooses the gate as the ``1 - keep`` quantile of the pills' scores, so that ``keep`` of
found pills can still be answered. With ``--write`` it goes into the card's
``identification.min_finder_score``; below it the pipeline says "not sure" instead of
answering (:class:`rxvision.identify.pipeline.PillPipeline`).

    python benchmarks/fit_finder_gate.py --model models/rxvision-c3pi-4k \\
        --data views/s17/cal-s20.csv --limit 800 [--keep 0.99] [--write]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from imprint_fused import (  # this folder: run as a script
    sample_rows,
    store_identification,
    true_boxes,
)
from PIL import Image

from rxvision.identify.pipeline import PillPipeline
from rxvision.locate.scoring import box_iou

PILL_IOU = 0.5  # a region this close to a true box is that pill
NO_PILL_IOU = 0.1  # a region this far from every true box is no pill


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="render-independent manifest.csv")
    ap.add_argument("--limit", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=float, default=0.99,
                    help="share of found pills whose score the gate lets through")
    ap.add_argument("--write", action="store_true", help="store the gate in the card")
    args = ap.parse_args()
    if not 0.5 <= args.keep < 1:
        ap.error(f"--keep must be in [0.5, 1), got {args.keep}")
    pipe = PillPipeline.load(args.model, tta=1)
    root = Path(args.data).parent
    rows = sample_rows(args.data, args.limit, args.seed)
    pills, others = [], []
    for n, row in enumerate(rows, 1):
        truth = true_boxes(row)
        found = pipe.find(Image.open(root / row["image"]).convert("RGB"))
        for pill in found.pills:
            best = max(box_iou(pill.box, t) for t in truth)
            if best >= PILL_IOU:
                pills.append(pill.finder_score)
            elif best < NO_PILL_IOU:
                others.append(pill.finder_score)
        if n % 100 == 0:
            print(f"  {n}/{len(rows)} photos", flush=True)
    if len(pills) < 100:
        raise SystemExit(f"only {len(pills)} pills found in {len(rows)} photos: need 100 to fit")
    p, o = np.array(pills), np.array(others)
    gate = math.floor(float(np.quantile(p, 1 - args.keep)) * 1000) / 1000
    print(f"{len(rows)} photos: {len(p)} regions on a pill, {len(o)} on no pill")
    print("| finder score quantile | 1% | 5% | 10% | 25% | 50% |")
    print("|---|---|---|---|---|---|")
    for name, x in (("pills", p), ("no pill", o)):
        if x.size:
            q = np.quantile(x, [0.01, 0.05, 0.1, 0.25, 0.5])
            print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in q) + " |")
    print(f"gate {gate:.3f}: lets through {float((p >= gate).mean()):.3f} of the pills and "
          f"{float((o >= gate).mean()) if o.size else 0.0:.3f} of the regions on no pill")
    if args.write:
        store_identification(args.model, "min_finder_score", gate, args.data)


if __name__ == "__main__":
    main()
