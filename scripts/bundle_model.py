"""Copy a trained run into models/ as the bundled default model (fp16 weights + its card).

    python scripts/bundle_model.py runs/c3pi-4k-train-v2 models/rxvision-c3pi-4k \
        --facts ../shared/data/c3pi-4k/manifest.csv

The card keeps everything the run's card holds (calibration, identification thresholds,
metrics, training summary); only the weights file, its dtype and hash change. Loading
converts the fp16 weights back to fp32. A crop model's pill finder (the run's
``segmenter/``, with the card it was calibrated with) replaces the bundle's.

The bundle's drug library (``library.sqlite``: facts, identical pills, look-alikes for the
fp16 weights) is built from ``--facts`` (the manifest's rows of the model's labels), else
re-tied from the run's library, else from the bundle folder's previous one. With
``--facts``, the card's ``label_metadata`` keeps only each label's NDC and name for the labels
the manifest has facts for (answers take the facts from the library; the card stays small:
2.1 MB before session 17, most of it facts the library holds too).

All of it is written into a copy of the bundle in a temporary folder beside it, which
replaces the bundle only when every step succeeded: a failure leaves the old bundle whole.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rxvision.artifact import SAVED_CARD_KEYS, load_artifact, read_card, save_artifact
from rxvision.data.transforms import card_zoom
from rxvision.io_utils import atomic_directory
from rxvision.library.database import LIBRARY_NAME
from rxvision.library.for_model import build_model_library, retie_library
from rxvision.locate.segmenter import carry_segmenter

LEAN_KEYS = ("ndc", "name")  # what a card keeps per label when the library holds the facts


def lean_metadata(labels: list[str], metadata: list[dict[str, str]], facts: Path
                  ) -> list[dict[str, str]]:
    """``metadata`` with only :data:`LEAN_KEYS` for the labels that ``facts`` has rows of."""
    with open(facts, newline="") as fh:
        covered = {row.get("label") for row in csv.DictReader(fh)}
    return [{k: m[k] for k in LEAN_KEYS if k in m} if label in covered else dict(m)
            for label, m in zip(labels, metadata, strict=True)]


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A copy of ``out`` (empty when there is none) to write in; it replaces ``out`` when
    the block ends without an error and is removed when it raises
    (:func:`rxvision.io_utils.atomic_directory`; the bundle owns every file in ``out``)."""
    owned = {p.name for p in out.iterdir()} if out.is_dir() else set()
    with atomic_directory(out, replaceable=owned) as stage:
        if owned:
            shutil.copytree(out, stage, dirs_exist_ok=True)
        yield stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="trained run directory (model artifact)")
    parser.add_argument("out", type=Path, help="bundle directory, e.g. models/rxvision-c3pi-4k")
    parser.add_argument("--facts", type=Path, metavar="MANIFEST",
                        help="manifest with the drug facts columns, e.g. "
                             "../shared/data/c3pi-4k/manifest.csv")
    args = parser.parse_args()
    with staged(args.out) as stage:
        bundle(args.run, stage, args.facts)
    print(f"bundle written: {args.out}")


def bundle(run: Path, out: Path, facts: Path | None) -> None:
    """Write ``run`` into the bundle folder ``out``: weights, card, pill finder, library."""
    art = load_artifact(run)
    card = read_card(run)
    extra = {k: v for k, v in card.items() if k not in SAVED_CARD_KEYS}
    extra["bundled_from"] = {"run": str(run), "sha256_fp32": card["weights"]["sha256"]}
    metadata = (lean_metadata(art.labels, art.label_metadata, facts) if facts
                else art.label_metadata)
    save_artifact(out, art.model, art.config, art.labels, metadata,
                  metrics=card.get("metrics"), calibration=card.get("calibration"),
                  extra=extra, half=True, zoom=card_zoom(card["preprocessing"]))
    size = (out / "model.safetensors").stat().st_size / 2**20
    print(f"bundled {run} -> {out} ({size:.1f} MB fp16)")
    finder = carry_segmenter(run, out)  # the finder it was calibrated with
    print(f"pill finder {finder}" if finder else "no pill finder in the run (whole-photo model)")
    old = [p / LIBRARY_NAME for p in (run, out) if (p / LIBRARY_NAME).is_file()]
    if facts:
        built = build_model_library(facts, out)
    elif old:
        built = retie_library(old[0], out)
    else:
        print("no drug library: pass --facts MANIFEST (answers will show label codes only)")
        return
    print(f"library {built.path} ({built.path.stat().st_size / 2**20:.1f} MB); "
          f"{len(built.missing)} of {built.labels} labels without facts")


if __name__ == "__main__":
    main()
