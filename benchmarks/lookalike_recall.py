"""When the photo names the wrong pill, is the right one among the look-alikes shown?

Every answer lists the ``LOOKALIKES_SHOWN`` (3) nearest other library pills by the model's
class rows, each with what tells it apart, so that the user can rule them out. This asks
how often that list holds the pill the model actually confused with the answer. For each
labelled photo (a seeded random subset; a crop model finds the pill as evaluation does, one
pass) the top-1 is taken; for each wrong one (not the true label, nor an identical pill of
its group):

* ``lookalike@k``: the true pill (or an identical one) is among the answer's k nearest
  look-alikes in the library (k = 1, 3 shown, 5 stored);
* ``top5``: ... among the answer's other top-5 candidates (also shown to the user);
* ``either``: among the 3 look-alikes or the top-5 candidates;
* ``look-first@3``: among the 3 nearest by class row when pills with the answer's colour
  set and shape (library facts) come first: would look-alikes chosen by facts do better?
  (``same-look``: the share of wrong answers whose true pill has the answer's colour set
  and shape at all.)

Measured on renders (``views/s17``), not on photographs: it says how well the look-alike
list covers this model's own confusions.

    python benchmarks/lookalike_recall.py --data views/s17/new-512/manifest.csv --limit 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from photo_plus_typed import SEED, photo_log_probs  # this folder: run as a script

from rxvision.artifact import load_artifact
from rxvision.data import load_dataset
from rxvision.engine.evaluate import subset
from rxvision.identify.identifier import Identifier
from rxvision.library.appearance import LOOKALIKES_SHOWN, STORED, centred_unit_rows
from rxvision.library.facts import Look
from rxvision.library.for_model import class_rows
from rxvision.library.groups import twin_labels


def look_first(rows: np.ndarray, looks: list[Look | None], answer: int, excluded: set[int],
               k: int) -> list[int]:
    """The ``k`` nearest rows to ``answer`` by centred cosine, pills of its look first."""
    sim = rows @ rows[answer]
    same = np.array([look is not None and look == looks[answer] for look in looks])
    sim = np.where(same, sim, sim - 4.0)  # cosines lie in [-1, 1]: the same look ranks first
    sim[[answer, *excluded]] = -np.inf
    return [int(j) for j in np.argsort(-sim, kind="stable")[:k]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model with library.sqlite (default: bundled)")
    p.add_argument("--data", required=True, help="labelled photos (manifest CSV)")
    p.add_argument("--limit", type=int, default=500, help="photos drawn (seeded)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    ident = Identifier.load(args.model)
    lib = ident.answers.library
    if lib is None or lib.lookalikes_fingerprint is None:
        raise SystemExit("the model has no drug library with look-alikes: "
                         + "; ".join(ident.answers.notes))
    index = {label: i for i, label in enumerate(ident.labels)}
    images = subset(load_dataset(args.data), args.limit, seed=SEED)
    samples = [s for s in images.samples if s.label in index]
    rows, _ = photo_log_probs(ident, [s.path for s in samples], args.batch_size)
    twins = twin_labels(lib)
    wrong: list[tuple[str, str, list[str]]] = []  # (true, answer, other top-5 labels)
    for s, lp in zip(samples, rows, strict=True):
        if lp is None:
            continue
        top5 = [ident.labels[i] for i in np.argsort(-lp)[:5]]
        if top5[0] != s.label and top5[0] not in twins.get(s.label, ()):
            wrong.append((s.label, top5[0], top5[1:]))
    near = lib.lookalikes([answer for _, answer, _ in wrong], STORED)
    unit = centred_unit_rows(class_rows(load_artifact(ident.path)))  # as the stored table
    refs = lib.references_for(ident.labels)
    looks = [refs[lab][0].facts.look if refs.get(lab) else None for lab in ident.labels]
    hits: dict[str, list[float]] = {k: [] for k in ("lookalike@1", f"lookalike@{LOOKALIKES_SHOWN}",
                                                      f"lookalike@{STORED}", "top5", "either",
                                                      f"look-first@{LOOKALIKES_SHOWN}",
                                                      "same-look")}
    for true, answer, others in wrong:
        accept = {true, *twins.get(true, ())}
        ranked = [o for o, _ in near.get(answer, [])]
        shown = accept & set(ranked[:LOOKALIKES_SHOWN])
        hits["lookalike@1"].append(float(bool(accept & set(ranked[:1]))))
        hits[f"lookalike@{LOOKALIKES_SHOWN}"].append(float(bool(shown)))
        hits[f"lookalike@{STORED}"].append(float(bool(accept & set(ranked))))
        hits["top5"].append(float(bool(accept & set(others))))
        hits["either"].append(float(bool(shown or accept & set(others))))
        first = look_first(unit, looks, index[answer],
                           {index[t] for t in twins.get(answer, ()) if t in index},
                           LOOKALIKES_SHOWN)
        hits[f"look-first@{LOOKALIKES_SHOWN}"].append(
            float(bool(accept & {ident.labels[j] for j in first})))
        hits["same-look"].append(float(looks[index[true]] is not None
                                       and looks[index[true]] == looks[index[answer]]))
    found = sum(lp is not None for lp in rows)
    report = {"model": str(ident.path), "data": args.data, "photos": len(samples),
              "pill_found": found, "wrong_top1": len(wrong),
              "recall": {k: round(statistics.fmean(v), 4) if v else None
                         for k, v in hits.items()}}
    print(f"{ident.path} on {args.data}: {len(samples)} photos, pill found in {found}, "
          f"{len(wrong)} wrong top-1 answers (renders, not photographs)")
    print("| the true pill is named among | share of wrong answers |")
    print("|---|---|")
    for k, v in report["recall"].items():
        print(f"| {k} | {v if v is None else f'{v:.3f}'} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
