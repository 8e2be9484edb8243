"""Imprint read rate, reader latency, and retrieval by the imprint alone, on C3PI studio photos.

For a stratified sample of the c3pi-4k reference photographs (printed, debossed/embossed,
no imprint), each pill side is cut from the studio layout (grey background, rulers on the
left and bottom) by a simple foreground mask and read with :func:`read_imprint`. Reported
per imprint type:

* read rate: pills with at least one confident token equal (after normalisation) to one
  of its imprint tokens (as read, or read the other way up when that was nearly as
  confident); for pills without an imprint, the rate of any confident token;
* median and 90th-percentile milliseconds per side crop (both enhancement passes);
* retrieval by the read alone: the true NDC's rank among all library NDCs by
  :meth:`ImprintIndex.llr` (max over an NDC's photographs), ties counted against it.

The studio photos are 300x225 px, a pill side about 137 px across: the reader upsamples
them (no added detail). Phone photos are larger; these numbers say what the reader does at
reference resolution, not on consumer photos.

    python benchmarks/imprint_read.py --per-type 60 --readers rapidocr,tesseract
    python benchmarks/imprint_read.py --per-type 60 --readers rapidocr --enhance none
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from rxvision.imprint import (
    ImprintIndex,
    ImprintToken,
    normalize_imprint,
    normalize_token,
    read_imprint,
)
from rxvision.imprint._rapidocr import RapidOcrBackend
from rxvision.imprint.reader import ENHANCE, MIN_CONFIDENCE, STOP_CONFIDENCE, get_reader

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "c3pi-4k"
RULER_PX = 14  # the studio rulers' width along the left and bottom edges (300x225 photos)


def studio_sides(img: Image.Image) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) of the (up to two) pill sides in a C3PI studio photo."""
    a = np.asarray(img.convert("RGB")).astype(np.float32)
    h, _ = a.shape[:2]
    ring = np.concatenate([a[:8, 20:].reshape(-1, 3), a[:, -8:].reshape(-1, 3)])
    bg = np.median(ring, axis=0)
    ring_d = np.linalg.norm(ring - bg, axis=1)
    spread = np.median(np.abs(ring_d - np.median(ring_d)))
    mask = np.linalg.norm(a - bg, axis=2) > max(18.0, np.median(ring_d) + 6 * spread + 8)
    mask[:, :RULER_PX] = False
    mask[h - RULER_PX :, :] = False
    mask = ndimage.binary_opening(mask, iterations=1)
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    labels, n = ndimage.label(mask)
    if n == 0:
        return []
    slices = ndimage.find_objects(labels)
    areas = ndimage.sum(mask, labels, range(1, n + 1))
    order = np.argsort(-areas)
    boxes = []
    for i in order[:2]:
        if areas[i] >= max(300, 0.25 * areas[order[0]]):
            ys, xs = slices[i]
            boxes.append((xs.start, ys.start, xs.stop, ys.stop))
    return boxes


def imprint_kind(row: dict[str, str]) -> str:
    if not row["imprint"].strip():
        return "none"
    return "printed" if row["imprint_type"] == "PRINTED" else "debossed"


def sample_rows(rows: list[dict[str, str]], per_type: int, seed: int) -> list[dict[str, str]]:
    by_kind: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_kind[imprint_kind(row)].append(row)
    rng = random.Random(seed)
    picked = []
    for kind in ("printed", "debossed", "none"):
        group = by_kind[kind]
        picked += rng.sample(group, min(per_type, len(group)))
    return picked


def label_rank(llr: np.ndarray, labels: list[str], true_label: str) -> tuple[int, int]:
    """(NDCs scored above the true one, NDCs tied with it) by the max llr over photographs."""
    best: dict[str, float] = {}
    for lab, v in zip(labels, llr, strict=True):
        best[lab] = max(best.get(lab, -np.inf), float(v))
    true = best.pop(true_label)
    scores = np.array(list(best.values()))
    return int((scores > true).sum()), int((scores == true).sum())


def top_k(ranks: list[tuple[int, int]], k: int) -> float:
    """Mean chance that the true NDC is within the first k, ties broken at random."""
    return float(np.mean([np.clip((k - above) / (tied + 1), 0.0, 1.0) for above, tied in ranks]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--per-type", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readers", default="rapidocr")
    ap.add_argument("--enhance", default=",".join(ENHANCE))
    ap.add_argument("--work-side", type=int, default=None)
    ap.add_argument("--rec-width", type=int, default=None, help="rapidocr only")
    ap.add_argument("--one-way", action="store_true", help="rapidocr: read lines one way up")
    ap.add_argument("--rec-model", type=Path, default=None, help="rapidocr: another rec ONNX")
    ap.add_argument("--det-model", type=Path, default=None, help="rapidocr: another det ONNX")
    ap.add_argument(
        "--matcher-scale",
        type=int,
        default=0,
        help="also time the matcher on a library of this many entries (the real "
        "imprints plus random ones)",
    )
    ap.add_argument(
        "--stop-confidence",
        type=float,
        default=STOP_CONFIDENCE,
        help="skip later enhancement passes once a pass read this confidently (0: run all)",
    )
    ap.add_argument("--verbose", action="store_true", help="print every pill's read")
    ap.add_argument("--threads", type=int, default=None, help="rapidocr: intra-op threads")
    args = ap.parse_args()

    manifest = args.data / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} not found: pass --data pointing at c3pi-4k")
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    index = ImprintIndex([r["imprint"] for r in rows])
    labels = [r["label"] for r in rows]
    # how many NDCs carry each imprint: identical imprints cannot be told apart by reading
    imprint_count = Counter(
        imp for _, imp in {(r["label"], normalize_imprint(r["imprint"])) for r in rows}
    )
    picked = sample_rows(rows, args.per_type, args.seed)
    enhance_modes = tuple(args.enhance.split(","))
    from rxvision.imprint.reader import WORK_SIDE

    work_side = args.work_side or WORK_SIDE
    print(
        f"{len(picked)} photos from {manifest} (seed {args.seed}), library {len(rows)} "
        f"photos / {len(set(labels))} NDCs; enhance={enhance_modes}, "
        f"stop at {args.stop_confidence or None}, work side {work_side}"
    )

    for name in args.readers.split(","):
        if name == "rapidocr" and (
            args.rec_width or args.one_way or args.rec_model or args.det_model or args.threads
        ):
            from rxvision.imprint._rapidocr import REC_WIDTH

            backend = RapidOcrBackend(
                args.det_model,
                args.rec_model,
                rec_width=args.rec_width or REC_WIDTH,
                both_ways=not args.one_way,
                threads=args.threads,
            )
        else:
            backend = get_reader(name)
        read_imprint(Image.new("RGB", (64, 64), (128, 128, 128)), backend)  # load models
        stats: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        match_ms = []
        start = time.perf_counter()
        for row in picked:
            kind = imprint_kind(row)
            img = Image.open(args.data / row["image"]).convert("RGB")
            boxes = studio_sides(img) or [(RULER_PX, 0, img.width, img.height - RULER_PX)]
            read: list[ImprintToken] = []
            for box in boxes:
                cpu0 = time.process_time()
                r = read_imprint(
                    img.crop(box), backend, enhance_modes, work_side, args.stop_confidence or None
                )
                stats[kind]["cpu"].append((time.process_time() - cpu0) * 1000)
                stats[kind]["ms"].append(r.elapsed_ms)
                read += r.confident(MIN_CONFIDENCE)
            truth = set(normalize_imprint(row["imprint"]))
            got = {normalize_token(t.text) for t in read}
            got |= {normalize_token(t.alternative[0]) for t in read if t.alternative}
            stats[kind]["unique"].append(imprint_count[normalize_imprint(row["imprint"])] == 1)
            stats[kind]["hit"].append(bool(truth & got) if truth else bool(got))
            t0 = time.perf_counter()
            llr = index.llr(read)
            match_ms.append((time.perf_counter() - t0) * 1000)
            stats[kind]["rank"].append(label_rank(llr, labels, row["label"]))
            if args.verbose:
                print(
                    f"  {kind:<9} {row['imprint']!r:<28} above/tied {stats[kind]['rank'][-1]}  "
                    f"read {[(t.text, round(t.confidence, 2), t.alternative) for t in read]}"
                )
        wall = time.perf_counter() - start
        print(f"\nreader {name}: {wall:.0f} s wall for {len(picked)} photos")
        print(
            f"{'type':<10}{'pills':>6}{'unique':>8}{'read rate':>11}{'top-1':>8}{'top-5':>8}"
            f"{'ms/crop med':>13}{'p90':>7}{'cpu ms med':>12}"
        )
        for kind in ("printed", "debossed", "none"):
            s = stats[kind]
            if not s["hit"]:
                continue
            n = len(s["hit"])
            ranks = s["rank"]
            rate = f"{np.mean(s['hit']):.2f}" + ("*" if kind == "none" else "")
            print(
                f"{kind:<10}{n:>6}{np.mean(s['unique']):>8.2f}{rate:>11}{top_k(ranks, 1):>8.2f}"
                f"{top_k(ranks, 5):>8.2f}{statistics.median(s['ms']):>13.0f}"
                f"{np.percentile(s['ms'], 90):>7.0f}{statistics.median(s['cpu']):>12.0f}"
            )
        all_ms = [m for s in stats.values() for m in s["ms"]]
        all_cpu = [m for s in stats.values() for m in s["cpu"]]
        print(
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; process CPU "
            f"per crop: median {statistics.median(all_cpu):.0f} ms"
        )
        print(
            f"all crops: median {statistics.median(all_ms):.0f} ms, p90 "
            f"{np.percentile(all_ms, 90):.0f} ms; matcher (llr over {len(rows)} entries): "
            f"median {statistics.median(match_ms):.2f} ms"
        )
        print("* for pills without an imprint: the rate of any confident token (false reads)")
        print(
            "unique: the pill's imprint is carried by no other NDC (the ceiling of top-1); "
            "top-k: ties broken at random"
        )

    if args.matcher_scale:
        time_matcher_at_scale([r["imprint"] for r in rows], args.matcher_scale, args.seed)


def time_matcher_at_scale(imprints: list[str], size: int, seed: int) -> None:
    """Build time and per-read time of ImprintIndex over ``size`` entries."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("ABCDEFGHJKMNPRTUVWXY0123456789"))
    extra = [
        ";".join(
            "".join(rng.choice(alphabet, size=rng.integers(1, 6)))
            for _ in range(rng.integers(1, 4))
        )
        for _ in range(max(0, size - len(imprints)))
    ]
    library = imprints + extra
    t0 = time.perf_counter()
    index = ImprintIndex(library)
    build = time.perf_counter() - t0
    reads = [normalize_imprint(i) for i in rng.choice(imprints, 50)]
    times = []
    for read in reads:
        t0 = time.perf_counter()
        index.llr(list(read))
        times.append((time.perf_counter() - t0) * 1000)
    print(
        f"\nmatcher over {len(library)} entries: index built in {build:.1f} s; llr of a "
        f"full imprint read: median {statistics.median(times):.1f} ms, "
        f"p90 {np.percentile(times, 90):.1f} ms"
    )


if __name__ == "__main__":
    main()
