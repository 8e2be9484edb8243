"""Fit the same-photo rule: two sure pills of one photo weighed as one pill seen twice.

A photo often shows two pills: the front and the back of two tablets from one bottle (as
C3PI's references and the independent renderer's "both" photos do), or two different drugs.
The pipeline weighs each of the photo's two most pill-like sure regions with the other by
p(same pill | both crops) (:class:`rxvision.identify.fusion.SamePhotoRule`): a mixture of
the pair's product and the region's own distribution. Two regions of one photo share its
light, blur and JPEG, so their plain product is over-confident; this script fits the
product's temperature (NLL) on calibration photos that show one pill twice (``mode`` both)
or stores a chosen one (``--temperature 2``: the normalised geometric mean, the two regions
counted as one piece of evidence, for when the two regions of a photo make the same mistake,
which the NLL fit does not see in the confident tail; docs/identification.md), keeps
``--prior`` (p(same) before looking: an assumption, not fitted; real use mixes both cases),
and prints what the rule does on the same photos:

- both-sides photos: top-1 and answers under the card's abstention threshold (top
  probability, and for a weighed answer the region alone sure of it too, as the pipeline
  answers; the open-set score is left out here), each region alone against weighed;
- one-side photos where the finder also passed a second region (a false one): the same;
- two different pills (each one-side photo's pill paired with the pill of another photo,
  a look-alike of the same colour and shape first): answers that name the wrong pill. The
  two crops come from different photos, so they share less than two pills of one photo
  would: a lower bound on the risk, said so in the output.

With ``--write`` the rule goes into the card's ``identification.same_photo``. Run it on
calibration renders only (the model is measured on others).

    python benchmarks/fit_same_photo.py --model models/rxvision-c3pi-4k \\
        --data views/s17/cal-s20.csv --limit 1600 [--temperature 2] [--prior 0.5] [--write]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
from imprint_fused import sample_rows  # this folder: run as a script
from PIL import Image
from scipy.optimize import minimize_scalar

from rxvision.artifact import read_card, update_card
from rxvision.identify.fusion import SamePhotoRule
from rxvision.identify.pipeline import PillPipeline, sure_on_its_own
from rxvision.logmath import log_softmax

TEMPERATURES = (0.5, 5.0)  # the search range of the product's temperature


def collect(pipe: PillPipeline, root: Path, rows: list[dict[str, str]]) -> list[dict]:
    """Per photo with a label the model knows: its pill's log-probabilities (the_pill) and,
    when the photo has a same-photo pair, the other region's."""
    index = {label: i for i, label in enumerate(pipe.identifier.labels)}
    out = []
    for n, row in enumerate(rows, 1):
        if n % 200 == 0:
            print(f"  {n}/{len(rows)} photos", flush=True)
        if row["label"] not in index:
            continue
        found = pipe.find(Image.open(root / row["image"]).convert("RGB"))
        if found.retake is not None:
            continue
        # the candidates for "the pill", as evaluation and the pipeline take them
        pills = sorted((p for p in found.pills if p.rank is not None), key=lambda p: p.rank)
        if not pills:  # both candidates beyond the photo's first max_pills regions
            continue
        lp, _ = pipe.classify(pills)
        k = pipe.the_pill(pills, lp)
        pair = pipe.same_photo_pair(found.pills) is not None  # then pills are that pair
        out.append({"y": index[row["label"]], "mode": row.get("mode", ""),
                    "look": (row.get("color", ""), row.get("shape", "")),
                    "own": lp[k], "other": lp[1 - k] if pair else None,
                    "sure": not pipe.doubts(pills[k]) and not pipe.too_small(pills[k])})
    return out


def fit_temperature(pairs: list[dict]) -> tuple[float, float, float]:
    """The product's temperature minimising NLL over one-pill-twice photos; (T, NLL at T,
    NLL at 1)."""
    sums = np.stack([p["own"].astype(np.float64) + p["other"] for p in pairs])
    y = np.array([p["y"] for p in pairs])

    def nll(t: float) -> float:
        return float(-log_softmax(sums / t)[np.arange(len(y)), y].mean())

    best = minimize_scalar(nll, bounds=TEMPERATURES, method="bounded")
    return float(best.x), float(best.fun), nll(1.0)


def tally(rule: SamePhotoRule, photos: list[dict], threshold: float) -> str:
    """"| n | top-1 alone | weighed | answered (wrong) alone | weighed |" cells."""
    alone, weighed = [], []
    for p in photos:
        mixed = rule.fuse(p["own"], p["other"])[0] if p["other"] is not None else p["own"]
        for log_probs, into in ((p["own"], alone), (mixed, weighed)):
            sure = float(np.exp(log_probs.max())) >= threshold
            if into is weighed and p["other"] is not None:  # as PillPipeline.decide answers
                sure = sure and bool(sure_on_its_own(mixed, p["own"], threshold))
            into.append((int(np.argmax(log_probs)) == p["y"], bool(sure)))
    def cells(r: list[tuple[bool, bool]]) -> tuple[str, str]:
        answered = sum(a for _, a in r)
        wrong = sum(a and not ok for ok, a in r)
        return f"{sum(ok for ok, _ in r) / max(1, len(r)):.3f}", f"{answered} ({wrong})"
    (t1, a1), (t2, a2) = cells(alone), cells(weighed)
    return f"| {len(photos)} | {t1} | {t2} | {a1} | {a2} |"


def different_pills(rule: SamePhotoRule, photos: list[dict], threshold: float, seed: int
                    ) -> str:
    """Each one-side photo's sure pill weighed with another photo's pill of another label
    (a look-alike, same colour and shape, when there is one): answers naming a wrong pill,
    alone and weighed, and how often p(same) came out above one half."""
    one = [p for p in photos if p["mode"] == "one" and p["sure"]]
    rng = random.Random(seed)
    wrong_alone = wrong_weighed = over_half = n = 0
    for p in one:
        alike = [q for q in one if q["y"] != p["y"] and q["look"] == p["look"]]
        others = alike or [q for q in one if q["y"] != p["y"]]
        if not others:
            continue
        q = rng.choice(others)
        mixed, w = rule.fuse(p["own"], q["own"])
        n += 1
        over_half += float(w) > 0.5
        for log_probs, wrong in ((p["own"], "alone"), (mixed, "weighed")):
            named = float(np.exp(log_probs.max())) >= threshold
            if wrong == "weighed":
                named = named and bool(sure_on_its_own(mixed, p["own"], threshold))
            bad = named and int(np.argmax(log_probs)) != p["y"]
            if wrong == "alone":
                wrong_alone += bad
            else:
                wrong_weighed += bad
    return (f"two different pills (crops of different photos, look-alikes first; a lower "
            f"bound): {n} pairs, p(same) > 0.5 for {over_half}, answers naming a wrong pill "
            f"{wrong_alone} alone -> {wrong_weighed} weighed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="render-independent manifest.csv "
                    "(calibration renders, with a mode column)")
    ap.add_argument("--limit", type=int, default=1600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prior", type=float, default=0.5,
                    help="p(same pill) for two sure pills of a photo before looking")
    ap.add_argument("--temperature", type=float, default=None,
                    help="store this product temperature instead of the NLL fit (2 = the "
                    "geometric mean: the two regions count as one piece of evidence)")
    ap.add_argument("--write", action="store_true", help="store the rule in the card")
    args = ap.parse_args()
    if args.temperature is not None and not args.temperature > 0:
        ap.error(f"--temperature must be positive, got {args.temperature}")
    if not 0 < args.prior < 1:
        ap.error(f"--prior must be in (0, 1), got {args.prior}")
    pipe = PillPipeline.load(args.model, tta=1)
    pipe.identifier.same_photo = SamePhotoRule(1.0, args.prior)  # to find the pairs
    photos = collect(pipe, Path(args.data).parent, sample_rows(args.data, args.limit,
                                                               args.seed))
    twice = [p for p in photos if p["mode"] == "both" and p["other"] is not None]
    if len(twice) < 100:
        raise SystemExit(f"only {len(twice)} photos show one pill twice as a sure pair: "
                         "need 100 to fit")
    fitted, nll_t, nll_1 = fit_temperature(twice)
    chosen = args.temperature if args.temperature is not None else round(fitted, 4)
    rule = SamePhotoRule(chosen, args.prior)
    threshold = pipe.identifier.abstain_threshold
    print(f"{len(photos)} photos, {len(twice)} showing one pill twice as a sure pair: "
          f"product temperature by NLL {fitted:.4f} (NLL {nll_1:.3f} at 1 -> {nll_t:.3f}); "
          f"rule: temperature {rule.temperature}"
          f"{' (chosen, not fitted)' if args.temperature is not None else ''}, prior "
          f"{rule.prior}; answered = top probability >= {threshold:.4f}")
    print("| photos | n | top-1 alone | weighed | answered (wrong) alone | weighed |")
    print("|---|---|---|---|---|---|")
    for name, mode in (("both sides", "both"), ("one side", "one")):
        group = [p for p in photos if p["mode"] == mode]
        print(f"| {name}, all " + tally(rule, group, threshold))
        print(f"| {name}, with a sure pair " + tally(
            rule, [p for p in group if p["other"] is not None], threshold))
    print(different_pills(rule, photos, threshold, args.seed))
    if args.write:
        settings = {**(read_card(args.model).get("identification") or {}),
                    "same_photo": {"temperature": rule.temperature, "prior": rule.prior,
                                   "temperature_by_nll": round(fitted, 4),
                                   "pairs": len(twice), "fitted_on": str(args.data)}}
        update_card(args.model, identification=settings)
        print(f"wrote identification.same_photo into {args.model}/card.json")


if __name__ == "__main__":
    main()
