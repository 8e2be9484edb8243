"""Fit how much the photo weighs in ordering the library pills offered when typed facts
contradict it (``identification.offered_photo_weight``), on calibration photos.

When a user types an imprint (and colour, shape) that none of the photo's likely pills
carries, the answer is "not sure" and the search's best text matches are offered instead
(:meth:`rxvision.identify.answers.Answers.offered_hits`). This script takes the photos of
``--data`` as ``photo_plus_typed.py`` does, builds the same typed variants (the exact
imprint, one character wrong, that plus colour and shape; seeded), keeps the cases the card
judges contradicted, and fits a conditional logit over the search's first ``OFFERED_POOL``
hits: P(hit) proportional to exp(a * text score + b * max(photo log-prob, floor)), by
maximum likelihood of the right pill (or an identical one) among the hits. The ordering
needs only ``b / a``, the weight written with ``--write``. Use calibration photos only:
the sets that report the typed figures must not choose the weight.

    python benchmarks/fit_offered_order.py --model models/rxvision-c3pi-4k \\
        --data views/s17/cal-extra-512-new/manifest.csv --limit 400 [--write]
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

import numpy as np
from imprint_fused import store_identification  # this folder: run as a script
from photo_plus_typed import SEED, typed_variants
from scipy.optimize import minimize
from typed_photo_power import load_photos

from rxvision.identify.answers import OFFERED_PHOTO_FLOOR, OFFERED_POOL
from rxvision.identify.identifier import Identifier
from rxvision.library.groups import twin_labels
from rxvision.library.search import search

Case = tuple[np.ndarray, np.ndarray, np.ndarray]  # text scores, photo log-probs, right


def contradicted_cases(ident: Identifier, photos: dict[str, Any]) -> list[Case]:
    """Per typed variant the card judges contradicted (``photos``: from
    :func:`typed_photo_power.load_photos`): the search's hits' text scores, the photo's
    (floored) log-probabilities of them, and which hits are the right pill."""
    lib = ident.answers.library
    index = {label: i for i, label in enumerate(ident.labels)}
    twins, rng = twin_labels(lib), random.Random(SEED)
    cases = []
    for sample, row, score in zip(photos["samples"], photos["log_probs"], photos["scores"],
                                  strict=True):
        label = sample.label
        variants = typed_variants(photos["facts"][label], photos["others"], rng)
        if row is None:
            continue
        for name, typed in variants.items():
            if typed is None or name == "contradicting":
                continue
            decided = ident.decide(row, score, topk=5, typed=typed)
            if not (decided.typed and decided.typed["contradicted"]):
                continue
            hits = search(lib, imprint=typed.imprint, color=typed.color, shape=typed.shape,
                          limit=OFFERED_POOL)
            names = [h.facts.label for h in hits]
            lp = np.array([row[index[n]] if n in index else -np.inf for n in names])
            right = np.array([n == label or n in twins.get(label, ()) for n in names])
            cases.append((np.array([h.score for h in hits]),
                          np.maximum(lp, OFFERED_PHOTO_FLOOR), right))
    return cases


def fit_weight(cases: list[Case]) -> tuple[float, float, float]:
    """Maximum-likelihood (a, b) of the conditional logit on cases whose right pill is among
    the hits: ``(b / a, NLL, NLL with the photo left out)``."""
    usable = [c for c in cases if c[2].any()]

    def nll(a: float, b: float) -> float:
        total = 0.0
        for text, photo, right in usable:
            z = a * text + b * photo
            p = np.exp(z - z.max())
            total -= np.log(max(p[right].sum() / p.sum(), 1e-300))
        return total

    both = minimize(lambda t: nll(t[0], t[1]), [10.0, 0.1], method="Nelder-Mead")
    text_only = minimize(lambda t: nll(t[0], 0.0), [10.0], method="Nelder-Mead")
    return float(both.x[1] / both.x[0]), float(both.fun), float(text_only.fun)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a crop model with a drug library")
    ap.add_argument("--data", required=True, help="calibration photos (render-independent)")
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--write", action="store_true",
                    help="store the fitted weight in the card (identification)")
    args = ap.parse_args()
    ident = Identifier.load(args.model)
    if ident.answers.library is None:
        sys.exit(f"{args.model} has no drug library: nothing is offered without one")
    cases = contradicted_cases(ident, load_photos(ident, args.data, args.limit))
    usable = sum(bool(c[2].any()) for c in cases)
    if usable < 20:
        sys.exit(f"only {usable} contradicted cases with the right pill among the hits: "
                 "too few to fit; use more photos (--limit)")
    weight, nll_both, nll_text = fit_weight(cases)
    print(f"{len(cases)} contradicted typed cases, {usable} with the right pill among the "
          f"first {OFFERED_POOL} hits: weight {weight:.4f} per unit of photo log-probability "
          f"(NLL {nll_text:.1f} by the text alone -> {nll_both:.1f})")
    if weight < 0:
        sys.exit("the fit gives the photo a negative weight: not written")
    if args.write:
        store_identification(args.model, "offered_photo_weight", round(weight, 4), args.data)


if __name__ == "__main__":
    main()
