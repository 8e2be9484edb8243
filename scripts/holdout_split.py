"""Split c3pi-1k into 100 held-out pills and the rest, and split a view set the same way.

The 100 pills are the first 100 of a seed-11 shuffle, as in the enrollment studies
(`benchmarks/enroll_holdout.sh`, `benchmarks/enroll_study.sh`).

    python scripts/holdout_split.py refs DATA OUT      # OUT/new_refs.csv, OUT/known_refs.csv
    python scripts/holdout_split.py views OUT          # OUT/views/views_{new,known}.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from collections.abc import Callable


def _read(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write(path: str, rows: list[dict[str, str]], keep: Callable[[str], bool]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if keep(r["label"]))


def split_refs(data: str, out: str, held: int = 100, seed: int = 11) -> None:
    rows = _read(data)
    random.Random(seed).shuffle(rows)
    new = {r["label"] for r in rows[:held]}
    base = os.path.dirname(os.path.abspath(data))
    rows = [{**r, "image": os.path.join(base, r["image"])}
            for r in sorted(rows, key=lambda r: r["label"])]
    _write(f"{out}/new_refs.csv", rows, lambda label: label in new)
    _write(f"{out}/known_refs.csv", rows, lambda label: label not in new)


def split_views(out: str) -> None:
    new = {r["label"] for r in _read(f"{out}/new_refs.csv")}
    rows = _read(f"{out}/views/manifest.csv")
    _write(f"{out}/views/views_new.csv", rows, lambda label: label in new)
    _write(f"{out}/views/views_known.csv", rows, lambda label: label not in new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    refs = sub.add_parser("refs")
    refs.add_argument("data")
    refs.add_argument("out")
    views = sub.add_parser("views")
    views.add_argument("out")
    args = parser.parse_args()
    if args.what == "refs":
        split_refs(args.data, args.out)
    else:
        split_views(args.out)


if __name__ == "__main__":
    main()
