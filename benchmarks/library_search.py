"""Library search: does a typed imprint find the pill, and how fast, at 4k and 100k entries.

Accuracy on c3pi-4k: every reference photograph with an imprint is looked up by its imprint
as a person would type it (the manifest's tokens separated by spaces), then again with one
character wrong (a random letter or digit replaced by another, seeded), one character
missing, and the tokens in reversed order; each alone and with the pill's colour and shape.
A query counts as found when a hit in the top 5 (top 1) has the right label or belongs to
the label's identical-pill group. ``pessimistic`` counts every other pill with an equal
score as ranked above the right one (ties broken against us, not by label order).

Scale: the same library padded with synthetic entries to ``--synthetic`` references (real
pills' imprints with their digits redrawn and some letters changed, colour/shape/size from
other real pills), then p50/p99 search latency (wall and CPU time) for imprint queries
(exact and one wrong) and for colour+shape+size queries, the file size and the peak RSS
of a fresh process that only opens the library and searches. The synthetic entries crowd
the real pills' one-edit neighbourhoods more than real labels would (each is a real
imprint with new digits), so accuracy in the padded library is a pessimistic figure.

    python benchmarks/library_search.py [--manifest ../shared/data/c3pi-4k/manifest.csv]
        [--synthetic 100000] [--latency-queries 1000] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from rxvision.library import search as search_module
from rxvision.library.database import (
    build_library,
    open_library,
    read_manifest_facts,
    write_library,
)
from rxvision.library.facts import DrugFacts
from rxvision.library.imprint_text import imprint_tokens
from rxvision.library.search import search

SEED = 17
ALNUM = string.ascii_uppercase + string.digits


def typed(f: DrugFacts) -> str:
    return " ".join(f.imprint)


def one_wrong(text: str, rng: random.Random) -> str:
    spots = [i for i, ch in enumerate(text) if ch.isalnum()]
    i = rng.choice(spots)
    new = rng.choice([c for c in ALNUM if c != text[i].upper()])
    return text[:i] + new + text[i + 1 :]


def one_missing(text: str, rng: random.Random) -> str:
    spots = [i for i, ch in enumerate(text) if ch.isalnum()]
    if len(spots) < 2:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i + 1 :]


def reversed_tokens(text: str) -> str:
    return " ".join(reversed(text.split()))


def strict_groups(facts: list[DrugFacts]) -> tuple[int, int]:
    """The issue's definition: imprint string (case-insensitive), colour and shape equal."""
    buckets: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for f in facts:
        if f.imprint:
            buckets[(";".join(f.imprint).upper(), ", ".join(f.colors), f.shape)].add(f.label)
    multi = [s for s in buckets.values() if len(s) > 1]
    return len(multi), len(set().union(*multi)) if multi else 0


def accuracy(lib_path: Path, facts: list[DrugFacts], rows: list[int], seed: int) -> dict:
    """Top-1/top-5 (label or same-pill group) per query condition, over ``rows`` ids."""
    lib = open_library(lib_path)
    refs = {r.id: r for r in lib.fetch(rows)}
    conditions = {
        "exact": lambda t, rng: t,
        "one_wrong": one_wrong,
        "one_missing": one_missing,
        "reversed_tokens": lambda t, rng: reversed_tokens(t),
    }
    out = {}
    for with_look in (False, True):
        for name, make in conditions.items():
            rng = random.Random(seed)
            top1 = top5 = pess5 = 0
            for rid in rows:
                ref = refs[rid]
                f = ref.facts
                kwargs = {"imprint": make(typed(f), rng)}
                if with_look:
                    kwargs.update(color=", ".join(f.colors), shape=f.shape)
                hits = search(lib, limit=20, **kwargs)

                def same(h: object, ref: object = ref) -> bool:
                    return h.facts.label == ref.facts.label or (
                        ref.group_id is not None and h.group_id == ref.group_id
                    )

                ranks = [h.rank for h in hits if same(h)]
                if ranks and ranks[0] <= 1:
                    top1 += 1
                if ranks and ranks[0] <= 5:
                    top5 += 1
                    best = hits[ranks[0] - 1].score
                    above = sum(1 for h in hits if not same(h) and h.score >= best)
                    pess5 += above < 5
            key = f"{name}{'+color+shape' if with_look else ''}"
            n = len(rows)
            out[key] = {
                "n": n,
                "top1": round(top1 / n, 4),
                "top5": round(top5 / n, 4),
                "top5_pessimistic": round(pess5 / n, 4),
            }
            print(
                f"  {key:30s} n={n:5d} top1 {top1 / n:.4f} top5 {top5 / n:.4f} "
                f"(ties against: {pess5 / n:.4f})",
                flush=True,
            )
    lib.close()
    return out


def synthetic(facts: list[DrugFacts], total: int, seed: int) -> list[DrugFacts]:
    """``facts`` plus made-up references up to ``total``, shaped like the real ones."""
    rng = random.Random(seed)
    imprinted = [f for f in facts if f.imprint]
    out = list(facts)
    while len(out) < total:
        base, look = rng.choice(imprinted), rng.choice(facts)
        tokens = []
        for tok in base.imprint:
            chars = []
            for ch in tok:
                if ch.isdigit():
                    chars.append(rng.choice(string.digits))
                elif ch.isalpha() and rng.random() < 0.3:
                    chars.append(rng.choice(string.ascii_uppercase))
                else:
                    chars.append(ch)
            tokens.append("".join(chars))
        n = len(out)
        out.append(
            replace(
                base,
                label=f"SYN-{n:06d}",
                ndc="",
                source_id="",
                image="",
                imprint=tuple(tokens),
                colors=look.colors,
                shape=look.shape,
                size_mm=look.size_mm,
                score=look.score,
                part=1,
                status="",
            )
        )
    return out


def _vm(field: str) -> float:
    """A /proc/self/status memory field in MiB (Linux; per process image, reset by exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def latency_child(lib_path: str, queries_path: str) -> None:
    """Run in a fresh process: open, search every query, print timings and memory.

    Wall time is what a caller waits on this shared machine; CPU time is the work itself
    (the search is single-threaded), so it shows what an idle core would give.
    """
    queries = json.loads(Path(queries_path).read_text())
    rss_imported = _vm("VmRSS")
    t0 = time.perf_counter()
    lib = open_library(lib_path)
    open_ms = (time.perf_counter() - t0) * 1e3
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    for kind, kwargs in queries:
        t, c = time.perf_counter(), time.process_time()
        search(lib, limit=10, **kwargs)
        cpu[kind].append((time.process_time() - c) * 1e3)
        wall[kind].append((time.perf_counter() - t) * 1e3)
    stats = {}
    for kind in wall:
        stats[kind] = {
            "n": len(wall[kind]) - 5,
            **_percentiles("wall", wall[kind][5:]),
            **_percentiles("cpu", cpu[kind][5:]),
        }  # first few warm caches
    print(
        json.dumps(
            {
                "open_ms": round(open_ms, 1),
                "latency": stats,
                "rss_after_imports_mib": round(rss_imported, 1),
                "peak_rss_mib": round(_vm("VmHWM"), 1),
            }
        )
    )


def _percentiles(name: str, values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {
        f"{name}_p50_ms": round(v[len(v) // 2], 2),
        f"{name}_p99_ms": round(v[min(len(v) - 1, int(0.99 * len(v)))], 2),
        f"{name}_max_ms": round(v[-1], 2),
    }


def make_queries(facts: list[DrugFacts], n: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    imprinted = [f for f in facts if f.imprint]
    out: list[tuple[str, dict]] = []
    for _ in range(n):
        f = rng.choice(imprinted)
        out.append(("imprint_exact", {"imprint": typed(f)}))
        out.append(("imprint_one_wrong", {"imprint": one_wrong(typed(f), rng)}))
        out.append(
            (
                "imprint_one_wrong+color+shape",
                {
                    "imprint": one_wrong(typed(f), rng),
                    "color": ", ".join(f.colors),
                    "shape": f.shape,
                },
            )
        )
        out.append(
            (
                "color+shape+size",
                {"color": ", ".join(f.colors), "shape": f.shape, "size_mm": f.size_mm},
            )
        )
    rng.shuffle(out)
    return out


def scale(
    lib_path: Path, queries: list[tuple[str, dict]], tmp: Path, args: argparse.Namespace
) -> dict:
    qpath = tmp / "queries.json"
    qpath.write_text(json.dumps(queries))
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--latency-child",
            str(lib_path),
            str(qpath),
            str(args.candidates),
            str(args.postings_budget),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout)
    result["file_mib"] = round(lib_path.stat().st_size / 2**20, 2)
    return result


def ambiguity(lib_path: Path, rows: list[int], n: int, seed: int) -> float:
    """Share of one-wrong queries with 5+ other labels as close as the right pill.

    "As close": the imprint run together (tokens in reading order) within one edit of the
    typed text run together, as the right pill's is; labels of the right pill's group do
    not count. A ranking by the text alone cannot put the right pill in the top 5 for
    sure on these queries, whatever its rules.
    """
    with open_library(lib_path) as lib:
        refs = lib.fetch(rows)
    runs = [(r, "".join(r.facts.imprint_tokens)) for r in refs]
    rng = random.Random(seed)
    crowded = 0
    drawn = rng.sample(refs, min(n, len(refs)))
    for ref in drawn:
        typed_run = "".join(imprint_tokens(one_wrong(typed(ref.facts), rng)))
        close = {
            r.facts.label
            for r, run in runs
            if r.facts.label != ref.facts.label
            and (ref.group_id is None or r.group_id != ref.group_id)
            and abs(len(run) - len(typed_run)) <= 1
            and _levenshtein(typed_run, run) <= 1
        }
        crowded += len(close) >= 5
    return crowded / len(drawn)


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default="../shared/data/c3pi-4k/manifest.csv")
    p.add_argument(
        "--synthetic", type=int, default=100_000, help="references in the padded library (0: skip)"
    )
    p.add_argument(
        "--accuracy-4k",
        type=int,
        default=-1,
        help="c3pi-4k pills to look up (-1: all with an imprint; 0: skip)",
    )
    p.add_argument(
        "--ambiguity",
        type=int,
        default=600,
        help="one-wrong queries checked for 5+ equally close labels (0: skip)",
    )
    p.add_argument(
        "--latency-queries",
        type=int,
        default=1000,
        help="pills drawn for latency (4 queries each; 0: skip)",
    )
    p.add_argument(
        "--accuracy-100k",
        type=int,
        default=1000,
        help="real pills re-checked in the padded library (0: skip)",
    )
    p.add_argument(
        "--candidates",
        type=int,
        default=search_module.CANDIDATES,
        help="references scored exactly per query (search.CANDIDATES)",
    )
    p.add_argument(
        "--postings-budget",
        type=int,
        default=search_module.POSTINGS_BUDGET,
        help="imprint postings read per query (search.POSTINGS_BUDGET)",
    )
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--latency-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.latency_child:
        lib_path, queries_path, candidates, budget = args.latency_child
        search_module.CANDIDATES, search_module.POSTINGS_BUDGET = int(candidates), int(budget)
        latency_child(lib_path, queries_path)
        return
    search_module.CANDIDATES = args.candidates
    search_module.POSTINGS_BUDGET = args.postings_budget

    results: dict = {"command": " ".join(["python", *sys.argv])}
    facts = read_manifest_facts(args.manifest)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        t = time.perf_counter()
        lib4k = build_library(args.manifest, tmp / "4k.sqlite")
        build_s = time.perf_counter() - t
        with open_library(lib4k) as lib:
            meta = lib.meta
            refs = lib.fetch(list(range(1, lib.num_references + 1)))
        rows = [r.id for r in refs if r.facts.imprint]
        strict = strict_groups(facts)
        results["groups"] = {
            "ours": {"groups": int(meta["groups"]), "labels": int(meta["grouped_labels"])},
            "strict_imprint_colour_shape": {"groups": strict[0], "labels": strict[1]},
        }
        print(
            f"c3pi-4k: {meta['references']} references, {meta['labels']} labels, "
            f"{len(rows)} with an imprint; built in {build_s:.1f} s"
        )
        print(
            f"identical-pill groups: {meta['groups']} groups over {meta['grouped_labels']} "
            f"labels (the issue's strict rule: {strict[0]} groups, {strict[1]} labels)"
        )
        if args.accuracy_4k:
            sub = (
                rows
                if args.accuracy_4k < 0
                else sorted(random.Random(SEED).sample(rows, min(args.accuracy_4k, len(rows))))
            )
            print("accuracy, 4k library:")
            results["accuracy_4k"] = accuracy(lib4k, facts, sub, SEED)
        if args.ambiguity:
            share = ambiguity(lib4k, rows, args.ambiguity, SEED)
            results["one_wrong_with_5_equally_close_labels"] = round(share, 4)
            print(
                f"one-wrong queries with 5+ other labels as close as the right one: "
                f"{share:.3f} of {min(args.ambiguity, len(rows))}"
            )
        queries = make_queries(facts, args.latency_queries, SEED)
        results["scale"] = {"4k": {"references": len(facts), "build_s": round(build_s, 1)}}
        if queries:
            results["scale"]["4k"].update(scale(lib4k, queries, tmp, args))
        print(f"4k: {json.dumps(results['scale']['4k'])}", flush=True)
        if args.synthetic:
            padded = synthetic(facts, args.synthetic, SEED)
            t = time.perf_counter()
            big = write_library(padded, tmp / "big.sqlite", image_root=None, source="synthetic")
            build_s = time.perf_counter() - t
            key = f"{args.synthetic // 1000}k"
            results["scale"][key] = {"references": len(padded), "build_s": round(build_s, 1)}
            if queries:
                results["scale"][key].update(scale(big, queries, tmp, args))
            print(f"{key}: {json.dumps(results['scale'][key])}", flush=True)
            if args.accuracy_100k:
                sub = random.Random(SEED).sample(rows, min(args.accuracy_100k, len(rows)))
                print(f"accuracy of {len(sub)} real pills in the {key} library:")
                results[f"accuracy_{key}"] = accuracy(big, padded, sorted(sub), SEED)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
