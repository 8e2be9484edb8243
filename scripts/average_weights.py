"""Average the weights of several runs of one model (a "model soup") into a new run.

    python scripts/average_weights.py runs/c3pi-4k-soup-v34 \
        runs/c3pi-4k-train-v3 runs/c3pi-4k-train-v4
    rxvision calibrate --model runs/c3pi-4k-soup-v34 --data CAL.csv --thresholds

The runs need one label list and one architecture (runs continued from one another with
``--init`` are the intended case). The result has no calibration: calibrate it before use.
See rxvision/engine/weight_average.py and docs/training.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rxvision.engine.weight_average import average_artifacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="new run directory for the averaged model")
    parser.add_argument("runs", type=Path, nargs="+", help="two or more model artifacts")
    args = parser.parse_args()
    if args.out.resolve() in {r.resolve() for r in args.runs}:
        parser.error("out must be a new directory, not one of the runs")
    saved = average_artifacts(args.runs, args.out)
    print(f"averaged {len(args.runs)} runs -> {saved} (uncalibrated: run rxvision calibrate)")


if __name__ == "__main__":
    main()
