"""Would a softer photo let a typed imprint decide more often? (A study, not a setting.)

With an imprint typed, ``Identifier.decide`` adds the typed facts' log-likelihoods to the
photo's calibrated log-probabilities. When the photo is confidently wrong it gives the right
pill 1e-5 of the top pill's probability or less, and the imprint's floor (0.01) cannot
outweigh that. This study raises the photo's log-probabilities to a power ``alpha`` (then
renormalises) before the typed facts are added, fits an abstain threshold on the typed
decisions of calibration photos (those the energy rule and the contradiction check did not
already hold back; ``--precision`` of the answers right), and applies both to measurement
photos. Typed variants and counting as ``photo_plus_typed.py`` (exact imprint, one character
wrong, that plus colour and shape, another pill's imprint); a photo with no pill found is
missed. Session 25's figures: docs/library.md, "Session 25".

    python benchmarks/typed_photo_power.py --calibration views/s17/cal-extra-512-new/manifest.csv \\
        --data views/s17/new-512/manifest.csv [--alphas 1,0.75,0.6,0.5] [--precision 0.995]
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import numpy as np
from photo_plus_typed import (  # this folder: a script
    SEED,
    library_facts,
    photo_log_probs,
    typed_variants,
)

from rxvision.artifact import read_card, update_card
from rxvision.data import load_dataset
from rxvision.engine.evaluate import subset
from rxvision.identify.identifier import Identifier
from rxvision.identify.openset import fit_abstain_threshold

TYPED = ("exact", "one_wrong", "one_wrong_color_shape", "contradicting")


def typed_decisions(ident: Identifier, photos: dict[str, Any], alpha: float
                    ) -> dict[str, list[tuple[float, bool, bool]]]:
    """Per typed variant, per photo: (confidence, right, held back by the energy rule or the
    contradiction check); a photo with no pill found is (0, False, True)."""
    ident.typed_photo_power = alpha  # what the card would say (the threshold is fitted here)
    out: dict[str, list[tuple[float, bool, bool]]] = {v: [] for v in TYPED}
    rng = random.Random(SEED)  # the same typed variants for every alpha
    for s, row, score in zip(photos["samples"], photos["log_probs"], photos["scores"],
                             strict=True):
        variants = typed_variants(photos["facts"][s.label], photos["others"], rng)
        for name in TYPED:
            if name not in variants:
                continue
            if row is None:
                out[name].append((0.0, False, True))
                continue
            r = ident.decide(row, score, topk=5, typed=variants[name])
            held = bool(r.unknown or (r.typed and r.typed["contradicted"]))
            out[name].append((r.confidence, r.candidates[0].label == s.label, held))
    return out


def load_photos(ident: Identifier, manifest: str, limit: int) -> dict[str, Any]:
    index = set(ident.labels)
    samples = [s for s in subset(load_dataset(manifest), limit, seed=SEED).samples
               if s.label in index]
    log_probs, scores = photo_log_probs(ident, [s.path for s in samples], 16)
    facts = library_facts(ident)
    return {"samples": samples, "log_probs": log_probs, "scores": scores, "facts": facts,
            "others": list(facts.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model with library.sqlite (default: bundled)")
    ap.add_argument("--calibration", required=True, help="photos the threshold is fitted on")
    ap.add_argument("--data", required=True, help="photos it is measured on (other pills)")
    ap.add_argument("--cal-limit", type=int, default=400)
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--alphas", type=lambda t: [float(x) for x in t.split(",")],
                    default=[1.0, 0.75, 0.6, 0.5])
    ap.add_argument("--precision", type=float, default=0.999)
    ap.add_argument("--write", action="store_true",
                    help="store the one alpha and its fitted threshold in --model's card")
    args = ap.parse_args()
    if any(not 0.0 < a <= 1.0 for a in args.alphas) or not 0.5 < args.precision < 1.0:
        ap.error("alphas must be in (0, 1] and --precision in (0.5, 1)")
    if args.write and (args.model is None or len(args.alphas) != 1):
        ap.error("--write needs --model and exactly one alpha in --alphas")

    ident = Identifier.load(args.model)
    if ident.answers.library is None:
        raise SystemExit("the model has no drug library: " + "; ".join(ident.answers.notes))
    cal = load_photos(ident, args.calibration, args.cal_limit)
    measured = load_photos(ident, args.data, args.limit)
    print(f"fitted on {len(cal['samples'])} photos, measured on {len(measured['samples'])}; "
          "per typed variant: top-1 (answered, wrong answers); the card's abstention "
          f"threshold {ident.abstain_threshold:.4f}")
    for alpha in args.alphas:
        free = [(c, ok) for rows in typed_decisions(ident, cal, alpha).values()
                for c, ok, held in rows if not held]
        threshold = fit_abstain_threshold(np.array([c for c, _ in free]),
                                          np.array([ok for _, ok in free]), args.precision)
        parts = []
        for name, rows in typed_decisions(ident, measured, alpha).items():
            conf, right, held = (np.array(col) for col in zip(*rows, strict=True))
            answered = (conf >= threshold) & ~held
            parts.append(f"{name} {right.mean():.3f} ({answered.mean():.1%}, "
                         f"{int((answered & ~right).sum())} wrong)")
        print(f"alpha {alpha} threshold {threshold:.4f}: " + " | ".join(parts), flush=True)
    if args.write:
        update_card(args.model, identification={
            **(read_card(args.model).get("identification") or {}),
            "typed_photo_power": args.alphas[0], "typed_abstain_threshold": float(threshold),
            "typed_photo_power_fitted_on": str(args.calibration)})
        print(f"wrote identification.typed_photo_power = {args.alphas[0]} and "
              f"typed_abstain_threshold = {threshold:.4f} into {args.model}/card.json")


if __name__ == "__main__":
    main()
