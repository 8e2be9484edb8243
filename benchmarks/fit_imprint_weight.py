"""Fit the imprint fusion weight ``w`` on independent-renderer photos (and measure it).

``log p_fused = log p_photo + w * llr`` (:mod:`rxvision.imprint.fusion`) with ``w = 1``
is the untempered rule. This script runs the crop model's pipeline over a labelled
independent render (one the model is *not* measured on), keeps each photo's best-matching
pill, and chooses ``w`` on a grid by the negative log-likelihood of the true label under
the fused distribution. Photos where nothing was read do not depend on ``w``; the fit says
how many carried a read. With ``--write`` the chosen ``w`` goes into the card's
``identification.imprint_weight``, which :class:`ImprintEvidence` then uses.

    python benchmarks/fit_imprint_weight.py --model models/rxvision-c3pi-4k \\
        --data indep-500-1024-s9/manifest.csv --limit 600 [--write]
"""

from __future__ import annotations

import argparse

import numpy as np
from imprint_fused import (  # this folder: run as a script
    best_pill,
    open_study,
    store_identification,
)
from PIL import Image

from rxvision.imprint import fuse

GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="render-independent manifest.csv")
    ap.add_argument("--limit", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="store w in the card")
    args = ap.parse_args()
    root, rows, pipe = open_study(args.model, args.data, args.limit, args.seed)
    ident, evidence = pipe.identifier, pipe.imprint
    index = {lab: i for i, lab in enumerate(ident.labels)}
    photo_lp, llrs, targets = [], [], []
    for n, row in enumerate(rows, 1):
        img = Image.open(root / row["image"]).convert("RGB")
        pill = best_pill(pipe.find(img).pills, row)
        if pill is None or row["label"] not in index:
            continue
        photo_lp.append(pipe.classify([pill])[0][0].astype(np.float64))
        llrs.append(evidence.llr([evidence.read(pill.detail or pill.crop)]))
        targets.append(index[row["label"]])
        if n % 100 == 0:
            print(f"  {n}/{len(rows)} photos", flush=True)
    lp, llr, y = np.stack(photo_lp), np.stack(llrs), np.array(targets)
    read = np.any(llr != 0, axis=1)
    print(f"{len(y)} photos with a pill found, {int(read.sum())} with a read")
    print("| w | NLL (photos with a read) | top-1 (all) | top-1 (with a read) |")
    print("|---|---|---|---|")
    best = None
    for w in GRID:
        fused = fuse(lp, llr, w)
        nll = float(-fused[np.arange(len(y)), y][read].mean()) if read.any() else 0.0
        top1 = fused.argmax(1) == y
        print(f"| {w} | {nll:.4f} | {top1.mean():.4f} | {top1[read].mean():.4f} |")
        if best is None or nll < best[1]:
            best = (w, nll)
    print(f"chosen w = {best[0]} (lowest NLL on the photos with a read)")
    if args.write:
        store_identification(args.model, "imprint_weight", best[0], args.data)


if __name__ == "__main__":
    main()
