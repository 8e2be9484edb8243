"""Photo plus typed facts: how much a typed imprint (exact or one character wrong) helps.

For each labelled photo (a random, seeded subset), the model's calibrated log-probabilities
are computed once, then decided with the typed facts a person might add, built from the
true pill's library facts (its first reference). A whole-photo model sees the photo (the
card's TTA and zoom); a crop model sees the crop of the pill its finder takes for the
photo's pill (as evaluation takes it, weighed with the photo's other sure pill by the card's
same-photo rule; one pass, its size temperature; a photo with no pill found counts as
missed in every variant; the product refuses typed facts for two sure pills that do not
look like one, 4% of both-sides photos in session 27, which this benchmark does not). The photo's
own imprint is not read here: the typed facts are the only text evidence. Decisions use
the photo's open-set score (until session 13 they used 0, so no photo was "unknown").

- ``photo``: the photo alone; ``photo_same_pill``: a hit on an identical pill counts;
- ``exact``: the imprint as NLM writes it (tokens separated by spaces);
- ``one_wrong``: one letter or digit replaced by another (seeded), as in library_search.py;
- ``one_wrong_color_shape``: that, plus the pill's coded colour(s) and shape in words;
- ``contradicting``: another random library pill's imprint (a misread or a wrong pill).

Per variant: top-1 (the right label first), answered (the card's abstain rule, after the
typed facts), top-1 on the answered, how often the typed facts were judged to contradict
the photo ("not sure"), how often the first library hit then offered is the right pill
(or an identical one), and ``found``: the answer is right, or it is "not sure" because of
the typed facts and the first offered hit is right. Photos of pills without an imprint
get only ``photo``.

With ``--read-imprint`` (a crop model) each pill's imprint is also read by the OCR and the
decision is ``predict``'s own (:meth:`PillPipeline.decide`: the read weighed in, the finder
gate, typed facts on top), as a user who types what they read gets it.

    python benchmarks/photo_plus_typed.py --data /work/views/indep-1k/manifest.csv \\
        --limit 300 [--model models/rxvision-c3pi-4k] [--group-by mode] [--json out.json] \\
        [--read-imprint]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rxvision.data import load_dataset
from rxvision.engine.evaluate import subset
from rxvision.identify.answers import TypedFacts
from rxvision.identify.identifier import Identifier
from rxvision.identify.pipeline import FoundPill, PillPipeline, model_framing, sure_on_its_own
from rxvision.imprint import ImprintRead
from rxvision.library.facts import DrugFacts
from rxvision.library.groups import twin_labels

SEED = 17
ALNUM = string.ascii_uppercase + string.digits
VARIANTS = ("photo", "exact", "one_wrong", "one_wrong_color_shape", "contradicting")


def one_wrong(text: str, rng: random.Random) -> str:
    spots = [i for i, ch in enumerate(text) if ch.isalnum()]
    i = rng.choice(spots)
    new = rng.choice([c for c in ALNUM if c != text[i].upper()])
    return text[:i] + new + text[i + 1 :]


def library_facts(ident: Identifier) -> dict[str, DrugFacts]:
    """Each label's drug facts in the model's library (its first reference's), from which
    the typed variants are built."""
    library = ident.answers.library
    assert library is not None
    return {label: refs[0].facts
            for label, refs in library.references_for(ident.labels).items()}


def typed_variants(
    facts: DrugFacts, others: list[DrugFacts], rng: random.Random
) -> dict[str, TypedFacts | None]:
    """The typed facts of each variant for a photo of the pill ``facts``."""
    out: dict[str, TypedFacts | None] = {"photo": None}
    if not facts.imprint:
        return out
    exact = " ".join(facts.imprint)
    wrong = one_wrong(exact, rng)
    other = rng.choice([o for o in others if o.imprint and o.label != facts.label])
    out["exact"] = TypedFacts.parse(imprint=exact)
    out["one_wrong"] = TypedFacts.parse(imprint=wrong)
    out["one_wrong_color_shape"] = TypedFacts.parse(
        imprint=wrong, color=", ".join(c.lower() for c in facts.colors) or None,
        shape=facts.shape.lower() or None,
    )
    out["contradicting"] = TypedFacts.parse(imprint=" ".join(other.imprint))
    return out


ThePill = tuple[FoundPill, np.ndarray, float, "np.ndarray | None"]


def the_pills(pipe: PillPipeline, paths: list[Path], note: str = "") -> list[ThePill | None]:
    """Per photo "the pill" as evaluation takes it (None: none found): the pill, its
    log-probabilities weighed with the photo's other sure pill (the card's same-photo
    rule), its open-set score and its own row where it was weighed (else None)."""
    out: list[ThePill | None] = []
    for n, path in enumerate(paths, 1):
        pills = pipe.find(path, max_pills=1).pills
        if not pills:
            out.append(None)
        else:
            lp, score = pipe.classify(pills)
            pick = pipe.the_pill(pills, lp)
            weighed, _, alone = pipe.weigh_same_photo(pills, lp)
            out.append((pills[pick], weighed[pick], float(score[pick]), alone[pick]))
        print(f"\r{n}/{len(paths)} photos{note}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return out


def photo_log_probs(ident: Identifier, paths: list[Path], batch: int,
                    own: list[np.ndarray | None] | None = None
                    ) -> tuple[list[np.ndarray | None], list[float]]:
    """Calibrated log-probabilities (C,) and the open-set score of each photo (None, 0.0:
    a crop model's finder found no pill). A crop model's pill is weighed with the photo's
    other sure pill by the card's same-photo rule, as evaluation and the pipeline weigh
    it; ``own``, when given, receives each photo's own row where it was weighed (else
    None), for the condition on answers without typed facts (:func:`sure_on_its_own`)."""
    if model_framing(ident.card) == "crop":
        found = the_pills(PillPipeline.around(ident, imprint=False), paths)
        if own is not None:
            own += [f[3] if f else None for f in found]
        return [f[1] if f else None for f in found], [f[2] if f else 0.0 for f in found]
    out = []
    for start in range(0, len(paths), batch):
        x = np.stack([ident.preprocess(p) for p in paths[start : start + batch]])
        logits, emb = ident.forward(x)
        out.append((ident.log_probs(logits), ident.ood(logits, emb)))
        print(f"\r{start + len(x)}/{len(paths)} photos", end="", file=sys.stderr)
    print(file=sys.stderr)
    return ([row for lp, _ in out for row in lp],
            [float(v) for _, sc in out for v in sc])


Counts = dict[str, dict[str, dict[str, float]]]


@dataclass
class ImprintReads:
    """Per photo, the imprint read off its pill and the pill (None where none was found),
    with the pipeline that reads and decides (``--read-imprint``)."""

    pipeline: PillPipeline
    reads: list[ImprintRead | None]
    pills: list[FoundPill | None]


def imprint_reads(ident: Identifier, paths: list[Path]) -> tuple[ImprintReads, list, list,
                                                                  list]:
    """A crop model's photos as ``predict`` sees them with the OCR on: per photo the pill's
    read and the pill, its (weighed) log-probabilities, open-set score and own row."""
    pipe = PillPipeline.around(ident, imprint=True)
    found = the_pills(pipe, paths, " (reading imprints)")
    pills = [f[0] if f else None for f in found]
    reads = [pipe.read_imprints([p])[0] if p is not None else None for p in pills]
    return (ImprintReads(pipe, reads, pills), [f[1] if f else None for f in found],
            [f[2] if f else 0.0 for f in found], [f[3] if f else None for f in found])


def count_decisions(
    ident: Identifier, samples: list[Any], log_probs: list[np.ndarray | None],
    scores: list[float], facts: dict[str, DrugFacts], twins: dict[str, frozenset[str]],
    rng: random.Random, group_by: str | None = None,
    own_rows: list[np.ndarray | None] | None = None,
    read: ImprintReads | None = None,
) -> tuple[Counts, list[float]]:
    """Decide every photo under each typed variant; counts per group ("all" and, with
    ``group_by``, one per value of that column) and variant, and each decision's time in ms.

    A photo with no pill found (``None`` row) counts as missed in every variant. Counts:
    ``n``, ``top1``, ``top1_same_pill``, ``answered``, ``answered_right``, ``contradicted``
    ("not sure" because the typed facts match none of the likely pills), ``hit_right``
    (then the first library hit offered is the pill or an identical one), ``found``, ``no_pill``.
    ``own_rows`` (from :func:`photo_log_probs`): a weighed photo without typed facts is
    answered only when its pill alone is sure, as the pipeline answers it. ``read``
    (:func:`imprint_reads`): decide as ``predict`` does, with each pill's imprint read by
    OCR and its finder gate (:meth:`PillPipeline.decide`).
    """
    others = list(facts.values())
    own_rows = own_rows or [None] * len(samples)
    counts: Counts = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    decide_ms: list[float] = []
    for k, (s, row, score, own) in enumerate(zip(samples, log_probs, scores, own_rows,
                                                 strict=True)):
        groups = ["all"] + ([f"{group_by}={s.extra.get(group_by, '')}"] if group_by else [])
        for name, typed in typed_variants(facts[s.label], others, rng).items():
            if row is None:
                for g in groups:
                    counts[g][name]["n"] += 1
                    counts[g][name]["no_pill"] += 1
                continue
            t1 = time.perf_counter()
            if read is not None:
                result = read.pipeline.decide(row, score, [read.reads[k]], 5, typed,
                                              pills=[read.pills[k]], alone=own)
            else:
                result = ident.decide(row, score, topk=5, typed=typed)
                if (typed is None and own is not None and not result.abstain
                        and not sure_on_its_own(row, own, ident.abstain_threshold)):
                    result.abstain = True
            decide_ms.append((time.perf_counter() - t1) * 1e3)
            top = result.candidates[0].label
            right = top == s.label
            same = right or top in twins.get(s.label, ())
            contradicted = bool(result.typed and result.typed["contradicted"])
            hit = result.library_hits[0]["label"] if result.library_hits else None
            hit_right = hit is not None and (hit == s.label or hit in twins.get(s.label, ()))
            for g in groups:
                c = counts[g][name]
                c["n"] += 1
                c["top1"] += right
                c["top1_same_pill"] += same
                c["answered"] += not result.abstain
                c["answered_right"] += (not result.abstain) and right
                c["contradicted"] += contradicted
                c["hit_right"] += contradicted and hit_right
                c["found"] += ((not result.abstain) and same) or (contradicted and hit_right)
    return counts, decide_ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model with library.sqlite (default: bundled)")
    p.add_argument("--data", required=True, help="labelled photos (manifest CSV)")
    p.add_argument("--limit", type=int, default=300, help="photos drawn (seeded)")
    p.add_argument("--group-by", default=None, help="also report per value of this column")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--read-imprint", action="store_true",
                   help="also read each pill's imprint (OCR) and decide as predict does, "
                   "with the finder gate (a crop model)")
    args = p.parse_args()

    ident = Identifier.load(args.model)
    lib = ident.answers.library
    if lib is None:
        raise SystemExit("the model has no drug library: " + "; ".join(ident.answers.notes))
    images = load_dataset(args.data)
    index = {label: i for i, label in enumerate(ident.labels)}
    images = subset(images, args.limit, seed=SEED)
    samples = [s for s in images.samples if s.label in index]
    t0 = time.perf_counter()
    own: list[np.ndarray | None] = []
    read = None
    if args.read_imprint:
        if model_framing(ident.card) != "crop":
            raise SystemExit("--read-imprint needs a model that finds the pill first")
        read, lp, ood_scores, own = imprint_reads(ident, [s.path for s in samples])
    else:
        lp, ood_scores = photo_log_probs(ident, [s.path for s in samples], args.batch_size,
                                         own)
    forward_s = time.perf_counter() - t0
    facts = library_facts(ident)
    twins = twin_labels(lib)
    counts, decide_ms = count_decisions(ident, samples, lp, ood_scores, facts, twins,
                                        random.Random(SEED), args.group_by, own, read)
    report: dict[str, Any] = {"model": str(ident.path), "data": args.data,
                              "imprint_read": bool(args.read_imprint),
                              "photos": len(samples), "forward_seconds": round(forward_s, 1),
                              "decide_ms_median": sorted(decide_ms)[len(decide_ms) // 2],
                              "results": {}}
    for g, by_variant in counts.items():
        report["results"][g] = {}
        for name in VARIANTS:
            c = by_variant.get(name)
            if not c:
                continue
            n = c["n"]
            row_out = {"n": int(n), "top1": round(c["top1"] / n, 4),
                       "top1_same_pill": round(c["top1_same_pill"] / n, 4),
                       "answered": round(c["answered"] / n, 4),
                       "top1_on_answered": round(c["answered_right"] / c["answered"], 4)
                       if c["answered"] else None,
                       "not_sure_by_typed_facts": round(c["contradicted"] / n, 4),
                       "first_offered_hit_right": round(c["hit_right"] / c["contradicted"], 4)
                       if c["contradicted"] else None,
                       "found": round(c["found"] / n, 4),
                       "no_pill_found": round(c["no_pill"] / n, 4)}
            report["results"][g][name] = row_out
            print(f"{g:12s} {name:24s} " + "  ".join(f"{k} {v}" for k, v in row_out.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
