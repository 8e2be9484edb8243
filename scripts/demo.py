"""End-to-end demo on the built-in sample (data/sample: 24 NLM C3PI pill photos).

Runs the real pipeline, every step through the `rxvision` CLI:
  1. check the sample data;
  2. train briefly on it (configs/sample.yaml, a few minutes on 2 CPU cores);
  3. render held-out phone-style photos of the sample pills (a seed training never uses);
  4. evaluate the demo model on them, split by one side / both sides visible, with a report;
  5. identify one phone-style photo with the bundled c3pi-4k model (the default model)
     and with the demo model, printing the top-5 with calibrated confidences.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

from rxvision.cli import main as rxvision

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "manifest.csv"


def step(title: str, args: list[str]) -> None:
    print(f"\n=== {title}\n$ rxvision {shlex.join(args)}", flush=True)
    start = time.perf_counter()
    code = rxvision(args)
    if code != 0:
        sys.exit(f"demo step failed ({title}): exit code {code}")
    print(f"--- {time.perf_counter() - start:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=".demo", help="output folder (recreated)")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run, views = out / "run", out / "views"

    step("1. check the sample data", ["data", "check", str(SAMPLE)])
    step("2. train on the sample (configs/sample.yaml)",
         ["train", "--config", str(REPO / "configs" / "sample.yaml"), "--data", str(SAMPLE),
          "--out", str(run)])
    step("3. render held-out phone-style photos (seed 2024, never used in training)",
         ["data", "synth", str(SAMPLE), "--out", str(views), "--views", "2", "--seed", "2024"])
    step("4. evaluate the demo model, split by one side / both sides visible",
         ["evaluate", "--model", str(run), "--data", str(views / "manifest.csv"),
          "--group-by", "mode", "--json", str(out / "metrics.json"),
          "--report", str(out / "report")])
    photo = sorted((views / "images").glob("*_v1_one.jpg"))[0]
    step("5a. identify a phone-style photo with the bundled c3pi-4k model",
         ["predict", str(photo), "--topk", "5"])
    step("5b. the same photo with the demo model",
         ["predict", "--model", str(run), str(photo), "--topk", "5"])
    print(f"\nDone. Report: {out / 'report' / 'index.html'}")


if __name__ == "__main__":
    main()
