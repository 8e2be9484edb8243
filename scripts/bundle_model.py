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
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from rxvision.artifact import SAVED_CARD_KEYS, load_artifact, read_card, save_artifact
from rxvision.data.transforms import card_zoom
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="trained run directory (model artifact)")
    parser.add_argument("out", type=Path, help="bundle directory, e.g. models/rxvision-c3pi-4k")
    parser.add_argument("--facts", type=Path, metavar="MANIFEST",
                        help="manifest with the drug facts columns, e.g. "
                             "../shared/data/c3pi-4k/manifest.csv")
    args = parser.parse_args()
    art = load_artifact(args.run)
    card = read_card(args.run)
    extra = {k: v for k, v in card.items() if k not in SAVED_CARD_KEYS}
    extra["bundled_from"] = {"run": str(args.run), "sha256_fp32": card["weights"]["sha256"]}
    metadata = (lean_metadata(art.labels, art.label_metadata, args.facts) if args.facts
                else art.label_metadata)
    save_artifact(args.out, art.model, art.config, art.labels, metadata,
                  metrics=card.get("metrics"), calibration=card.get("calibration"),
                  extra=extra, half=True, zoom=card_zoom(card["preprocessing"]))
    size = (args.out / "model.safetensors").stat().st_size / 2**20
    print(f"bundled {args.run} -> {args.out} ({size:.1f} MB fp16)")
    finder = carry_segmenter(args.run, args.out)  # the finder it was calibrated with
    print(f"pill finder {finder}" if finder else "no pill finder in the run (whole-photo model)")
    old = [p / LIBRARY_NAME for p in (args.run, args.out) if (p / LIBRARY_NAME).is_file()]
    if args.facts:
        built = build_model_library(args.facts, args.out)
    elif old:
        built = retie_library(old[0], args.out)
    else:
        print("no drug library: pass --facts MANIFEST (answers will show label codes only)")
        return
    print(f"library {built.path} ({built.path.stat().st_size / 2**20:.1f} MB); "
          f"{len(built.missing)} of {built.labels} labels without facts")


if __name__ == "__main__":
    main()
