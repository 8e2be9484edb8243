"""Photo alone vs photo + imprint read, on independent-renderer photos, through PillPipeline.

For each photo of a manifest written by ``rxvision data render-independent`` (one labelled
pill, or both sides of it), the crop model's pipeline finds the pills; the pill whose box
overlaps a true box most is scored twice from the same forward pass: photo alone, and
photo fused with the imprint read off it (:mod:`rxvision.identify.imprint_evidence`).
Printed per imprint type of the true pill (from the model's drug library: printed,
debossed/embossed, none):

* top-1 photo alone, top-1 fused, and how often the imprint changed the answer (right->
  wrong and wrong->right);
* read rate: photos where a confident token equals one of the true imprint's tokens;
* answers under the card's rule (not abstained) and the wrong share of those, fused;
* held back: answers the card's rule would give on the fused ranking that the pipeline
  makes "not sure" because the read also fits a sibling the photo alone cannot rule out
  (:meth:`rxvision.identify.imprint_evidence.ImprintEvidence.holds_back`), and how many
  of those would have been wrong;
* median milliseconds reading per pill.

The independent renderer's pill sizes decide what is legible: at 512 px a pill spans
~50-150 px. These are measured numbers on renders, not on real photographs.

    python benchmarks/imprint_fused.py --model runs/c3pi-1k-crop-v3 \\
        --data /work/views/indep-1k/manifest.csv --limit 300
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from rxvision.artifact import read_card, update_card
from rxvision.identify.pipeline import FoundPill, PillPipeline
from rxvision.imprint import normalize_imprint, normalize_token
from rxvision.locate.scoring import box_iou


def sample_rows(manifest: str, limit: int, seed: int) -> list[dict[str, str]]:
    """A fixed random ``limit`` rows of a render-independent manifest."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def open_study(model: str, data: str, limit: int, seed: int
               ) -> tuple[Path, list[dict[str, str]], PillPipeline]:
    """The manifest's folder, its fixed random ``limit`` rows, and the model's pipeline
    reading imprints (1 rotation)."""
    pipe = PillPipeline.load(model, imprint=True, tta=1)
    assert pipe.imprint is not None
    return Path(data).parent, sample_rows(data, limit, seed), pipe


def true_boxes(row: dict[str, str]) -> list[list[int]]:
    """A render-independent manifest row's true pill boxes, (x0, y0, x1, y1) each."""
    return [[int(v) for v in b.split()] for b in row["boxes"].split(";")]


def store_identification(model: str, field: str, value: float, data: str) -> None:
    """Write a setting fitted on ``data`` into the card's ``identification`` (beside the
    others, with ``<field>_fitted_on``): how the fit_*.py scripts keep what they fit."""
    settings = {**(read_card(model).get("identification") or {}), field: value,
                f"{field}_fitted_on": str(data)}
    update_card(model, identification=settings)
    print(f"wrote identification.{field} = {value} into {model}/card.json")


def best_pill(pills: list[FoundPill], row: dict[str, str]) -> FoundPill | None:
    """The found pill that best overlaps one of the row's true boxes (None: none found)."""
    truth = true_boxes(row)
    return max(pills, key=lambda p: max(box_iou(p.box, t) for t in truth), default=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a crop model with a drug library")
    ap.add_argument("--data", required=True, help="render-independent manifest.csv")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show-wrong", action="store_true",
                    help="print each wrong answer given under the card's rule (the photo, the "
                         "true and the answered pill's imprints, what was read, confidences) "
                         "and each answer held back for a sibling the read also fits")
    args = ap.parse_args()

    root, rows, pipe = open_study(args.model, args.data, args.limit, args.seed)
    ident, evidence = pipe.identifier, pipe.imprint
    refs = ident.answers.library.references_for(ident.labels)
    kind = {lab: (refs[lab][0].facts.imprint_type or "NONE") if refs.get(lab) else "?"
            for lab in ident.labels}
    truth_tokens = {lab: set(normalize_imprint(";".join(refs[lab][0].facts.imprint)))
                    if refs.get(lab) else set() for lab in ident.labels}
    index = {lab: i for i, lab in enumerate(ident.labels)}
    stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for n, row in enumerate(rows, 1):
        img = Image.open(root / row["image"]).convert("RGB")
        pill = best_pill(pipe.find(img).pills, row)
        group = kind.get(row["label"], "?")
        s = stats[group]
        if pill is None:
            for key in ("photo", "fused", "read", "answered"):
                s[key].append(0.0)
            continue
        lps, scores = pipe.classify([pill])
        lp, score = lps[0], float(scores[0])
        read = evidence.read(pill.detail or pill.crop)
        result = pipe.decide(lp, score, [read], 1, pills=())  # fused, with the sibling check
        sibling_held = result.abstain
        pipe.gate(result, pill)  # and the finder gate, as predict decides
        info = result.imprint
        # the card's rule on the fused ranking alone would have answered
        plain_answers = not result.unknown and result.confidence >= ident.abstain_threshold
        target = index[row["label"]]
        photo_ok = int(np.argmax(lp)) == target
        fused_ok = result.top.label == row["label"]
        read_tokens = {normalize_token(t.text) for t in read.confident()}
        s["photo"].append(float(photo_ok))
        s["fused"].append(float(fused_ok))
        s["read"].append(float(bool(read_tokens & truth_tokens[row["label"]])))
        s["helped"].append(float(fused_ok and not photo_ok))
        s["hurt"].append(float(photo_ok and not fused_ok))
        s["answered"].append(float(not result.abstain))
        if plain_answers and sibling_held:  # held back: the read also fits a sibling
            s["held_wrong"].append(float(not fused_ok))
            if args.show_wrong:
                print(f"  held back: {row['image']} answer {result.top.label} "
                      f"{'right' if fused_ok else 'WRONG'} read {info['read']!r} also fits "
                      f"{[o['imprint'] for o in result.imprint['also_fits']]} p_photo "
                      f"{result.imprint['photo_confidence']:.3f}", flush=True)
        if not result.abstain:
            s["answered_wrong"].append(float(not fused_ok))
            if args.show_wrong and not fused_ok:
                answer = result.top.label
                print(f"  wrong: {row['image']} true {row['label']} "
                      f"{sorted(truth_tokens[row['label']])} answered {answer} "
                      f"{sorted(truth_tokens.get(answer, set()))} read "
                      f"{info['read']!r} p_photo "
                      f"{float(np.exp(lp[target])):.3f}/{float(np.exp(lp.max())):.3f} p_fused "
                      f"{result.confidence:.3f} photo right {photo_ok}", flush=True)
        s["ms"].append(read.elapsed_ms)
        if n % 50 == 0:
            print(f"  {n}/{len(rows)} photos", flush=True)
    print(f"{args.model} on {args.data}: {len(rows)} photos, tta 1")
    print("| imprint | photos | top-1 photo | top-1 fused | imprint helped / hurt | read rate "
          "| answered | wrong of answered | held back (wrong) | read ms (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    total: dict[str, list[float]] = defaultdict(list)
    for group in sorted(stats):
        s = stats[group]
        for key, values in s.items():
            total[key] += values
        _line(group, s)
    _line("all", total)


def _line(group: str, s: dict[str, list[float]]) -> None:
    def mean(key: str) -> str:
        return f"{statistics.fmean(s[key]):.3f}" if s.get(key) else "-"

    ms = f"{statistics.median(s['ms']):.0f}" if s.get("ms") else "-"
    held = s.get("held_wrong", [])
    print(f"| {group} | {len(s['photo'])} | {mean('photo')} | {mean('fused')} | "
          f"{mean('helped')} / {mean('hurt')} | {mean('read')} | {mean('answered')} | "
          f"{mean('answered_wrong')} | {len(held)} ({int(sum(held))}) | {ms} |")


if __name__ == "__main__":
    main()
