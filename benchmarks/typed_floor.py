"""How the typed imprint's floor trades right answers against following a wrong imprint.

``L_imprint = floor + (1 - floor) * match ** sharpness`` (:mod:`rxvision.library.evidence`):
the floor is the evidence left for a pill whose imprint shares nothing with what was typed.
This study decides the same photos with the typed variants of ``photo_plus_typed.py``
(the exact imprint, one character wrong, that plus colour and shape, another pill's
imprint) under each floor on a grid, the photo's log-probabilities computed once, counted
by ``photo_plus_typed.count_decisions`` (a photo with no pill found is missed in every
variant). Run it on calibration photos (pills in no measurement set), not on the sets the
model is reported on.

    python benchmarks/typed_floor.py --data views/s17/cal-extra-512-new/manifest.csv \\
        --limit 400 --floors 0.05,0.02,0.01,0.005,0.002,0.001 [--sharpness 2,1]
"""

from __future__ import annotations

import argparse
import random

from photo_plus_typed import (  # this folder: a script
    SEED,
    count_decisions,
    library_facts,
    photo_log_probs,
)

from rxvision.data import load_dataset
from rxvision.engine.evaluate import subset
from rxvision.identify.identifier import Identifier
from rxvision.library import evidence
from rxvision.library.groups import twin_labels


def floats(text: str) -> list[float]:
    values = [float(x) for x in text.split(",")]
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"values in (0, 1) separated by commas, got {text!r}")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model with library.sqlite (default: bundled)")
    ap.add_argument("--data", required=True, help="labelled calibration photos (manifest CSV)")
    ap.add_argument("--limit", type=int, default=400, help="photos drawn (seeded)")
    ap.add_argument("--floors", type=floats, default=[0.05, 0.02, 0.01, 0.005, 0.002])
    ap.add_argument("--sharpness", type=lambda t: [float(x) for x in t.split(",")],
                    default=[evidence.SHARPNESS["imprint"]])
    args = ap.parse_args()

    ident = Identifier.load(args.model)
    lib = ident.answers.library
    if lib is None:
        raise SystemExit("the model has no drug library: " + "; ".join(ident.answers.notes))
    index = {label: i for i, label in enumerate(ident.labels)}
    samples = [s for s in subset(load_dataset(args.data), args.limit, seed=SEED).samples
               if s.label in index]
    log_probs, scores = photo_log_probs(ident, [s.path for s in samples], 16)
    facts = library_facts(ident)
    twins = twin_labels(lib)
    print(f"{len(samples)} photos; per variant: top-1, answered, wrong answers, "
          "'not sure' because the typed facts match none of the likely pills")
    for sharpness in args.sharpness:
        for floor in args.floors:
            evidence.FLOOR["imprint"], evidence.SHARPNESS["imprint"] = floor, sharpness
            # the same typed variants for every floor
            counts, _ = count_decisions(ident, samples, log_probs, scores, facts, twins,
                                        random.Random(SEED))
            print(f"sharpness {sharpness} floor {floor}: " + " | ".join(
                f"{name} top-1 {c['top1'] / c['n']:.3f} answered {c['answered'] / c['n']:.3f} "
                f"wrong {int(c['answered'] - c['answered_right'])} "
                f"not sure {c['contradicted'] / c['n']:.2f}"
                for name, c in counts["all"].items()), flush=True)


if __name__ == "__main__":
    main()
