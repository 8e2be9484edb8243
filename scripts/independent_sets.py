"""Build the independent-render measurement and calibration sets, reproducibly.

    python scripts/independent_sets.py ../shared/data/c3pi-4k/manifest.csv views/s17

Draws pills from the c3pi-4k manifest with a fixed seed (one studio photo each, the first of
its label) and renders each set with the independent validation renderer
(`rxvision data render-independent`). Measurement and calibration sets hold different
pills, so thresholds fitted on one are never scored on the same pills:

| set | pills | renders |
| --- | --- | --- |
| new-512 | 500 not in c3pi-1k | 2 views, seed 7, 512 px |
| known-512 | 500 of c3pi-1k | 2 views, seed 7, 512 px |
| new-1024 | 200 not in c3pi-1k | 2 views, seed 7, 1024 px |
| known-1024 | 200 of c3pi-1k | 2 views, seed 7, 1024 px |
| cal-512 | 250 + 250 others | 2 views, seed 8, 512 px |
| cal-1024 | 50 + 50 others | 2 views, seed 9, 1024 px |
| cal-1024-more | cal-512's 250 new pills again | 2 views, seed 10, 1024 px |
| cal-extra-512-new | 400 other pills not in c3pi-1k | 2 views, seed 11, 512 px |
| cal-extra-1024-new | 400 more pills not in c3pi-1k | 2 views, seed 12, 1024 px |

Writes OUT/refs/*.csv (the drawn references, image paths absolute), OUT/<set>/ (images,
masks, manifest.csv) and the calibration sets merged into one manifest each (image paths
absolute): OUT/cal.csv (sessions 17-19: 1,672 photos of 600 pills) and OUT/cal-s20.csv (those
and the cal-extra sets: 1,400 pills drawn, 3,264 photos; the c3pi-1k pills are all drawn by then,
so the extra pills are new ones). A set already rendered is kept, so a killed run resumes
where it stopped. These are renders, not photographs: they measure robustness to a renderer
the model was not trained on, not accuracy on real phone photos.
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
from pathlib import Path

from rxvision.io_utils import atomic_write

SEED = 17
MEASURE = {"new": 500, "known": 500}
MEASURE_1024 = {"new": 200, "known": 200}
CAL = {"new": 250, "known": 250}
CAL_1024 = {"new": 50, "known": 50}
# Session 18: calibration pills again at 1024 px, so that the size temperature sees large
# pills (cal-1024 alone has 198 photos): set -> (the set whose pills it renders, seed, px).
AGAIN = {"cal-1024-more": ("cal-512-new", 10, 1024)}
# Session 20: more calibration pills, so that a 99.5%-precision abstain threshold rests on
# more than the ~65 answers cal.csv gave (drawn after the others: earlier draws unchanged).
CAL_EXTRA = {"new": 400, "known": 0}
CAL_EXTRA_1024 = {"new": 400, "known": 0}
# merged calibration manifest -> the sets it holds (None: every calibration set)
CAL_MANIFESTS = {"cal.csv": ("cal-512-new", "cal-512-known", "cal-1024-new", "cal-1024-known",
                             "cal-1024-more"),
                 "cal-s20.csv": None}


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def draw(manifest: Path) -> dict[str, list[dict[str, str]]]:
    """Split the library's labels into disjoint seeded draws, one reference row each."""
    rows = _read(manifest)
    if "in_c3pi_1k" not in rows[0]:
        raise SystemExit(f"{manifest}: no in_c3pi_1k column; pass the c3pi-4k manifest")
    base = manifest.parent.resolve()
    first: dict[str, dict[str, str]] = {}
    for row in rows:
        first.setdefault(row["label"], {**row, "image": str(base / row["image"])})
    pools = {kind: sorted(label for label, row in first.items()
                          if (row["in_c3pi_1k"] == "yes") == (kind == "known"))
             for kind in ("new", "known")}
    sets: dict[str, list[dict[str, str]]] = {}
    for kind, pool in pools.items():
        random.Random(f"{SEED}-{kind}").shuffle(pool)
        start = 0
        for name, sizes in (("512", MEASURE), ("1024", MEASURE_1024),
                            ("cal-512", CAL), ("cal-1024", CAL_1024),
                            ("cal-extra-512", CAL_EXTRA), ("cal-extra-1024", CAL_EXTRA_1024)):
            if sizes[kind] == 0:
                continue
            take = pool[start:start + sizes[kind]]
            if len(take) < sizes[kind]:
                raise SystemExit(f"{manifest}: too few {kind} pills for the draw")
            start += sizes[kind]
            key = f"{kind}-{name}" if not name.startswith("cal") else f"{name}-{kind}"
            sets[key] = [first[label] for label in sorted(take)]
    return sets


def render(refs: Path, out: Path, seed: int, size: int) -> None:
    if (out / "manifest.csv").exists():
        print(f"{out}: already rendered")
        return
    cmd = [sys.executable, "-m", "rxvision", "data", "render-independent", str(refs),
           "--out", str(out), "--views", "2", "--seed", str(seed), "--size", str(size)]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def merge(parts: list[Path], out: Path) -> None:
    rows: list[dict[str, str]] = []
    for part in parts:
        for row in _read(part / "manifest.csv"):
            rows.append({**row, "image": str((part / row["image"]).resolve()),
                         "mask": str((part / row["mask"]).resolve())})
    fields = list(dict.fromkeys(key for row in rows for key in row))
    _write(out, [{key: row.get(key, "") for key in fields} for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="the c3pi-4k manifest.csv")
    parser.add_argument("out", type=Path, help="folder for the sets")
    parser.add_argument("--only", nargs="*", help="render only these sets (e.g. new-512)")
    args = parser.parse_args()
    (args.out / "refs").mkdir(parents=True, exist_ok=True)
    plan = {"new-512": (7, 512), "cal-512-new": (8, 512), "cal-512-known": (8, 512),
            "cal-1024-new": (9, 1024), "cal-1024-known": (9, 1024), "known-512": (7, 512),
            "new-1024": (7, 1024), "known-1024": (7, 1024),
            "cal-extra-512-new": (11, 512), "cal-extra-1024-new": (12, 1024)}
    drawn = draw(args.manifest)
    for name, (source, seed, size) in AGAIN.items():
        drawn[name] = drawn[source]
        plan[name] = (seed, size)
    for name, refs in drawn.items():
        _write(args.out / "refs" / f"{name}.csv", refs)
    for name, (seed, size) in plan.items():
        if args.only and name not in args.only:
            continue
        render(args.out / "refs" / f"{name}.csv", args.out / name, seed, size)
    for merged, names in CAL_MANIFESTS.items():
        parts = [args.out / name for name in plan
                 if name.startswith("cal") and (names is None or name in names)]
        if all((part / "manifest.csv").exists() for part in parts):
            merge(parts, args.out / merged)
            print(f"wrote {args.out / merged}")


if __name__ == "__main__":
    main()
