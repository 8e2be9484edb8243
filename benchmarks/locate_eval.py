"""How well the pill segmenter finds pills, against the classical locator, and how fast.

Prints, for the segmenter (``--segmenter``, default the bundled one) and where it applies
the classical background-fit locator (:func:`rxvision.locate.locate_pills`, which answers
one box or none per photo):

1. **Real phone photos** (``../shared/data/otc-phone-photos``, YOLO boxes): box recall and
   precision at IoU 0.5 and mean IoU (a missed pill counts 0), on val, test and one version
   of each of the 82 train source photos (Roboflow made 3 rotated/sheared versions of each;
   the first by file name is used; its boxes are the rotated boxes' bounds, looser than the
   pills). Also split into photos of one pill and of several. These photos are for
   measuring only: nothing is trained or tuned on them.
2. **Own composites** (``rxvision.locate.composite``, a seed no training run uses, pills of
   ``--refs``): mask IoU per pill and box recall. Own-generator figures: not evidence that
   real photos are segmented.
3. **Independent renders** (``--independent DIR``, written by ``rxvision data
   render-independent``; measurement only): box recall, mask IoU per pill.
4. **Latency per 12 MP photo** on this CPU: a 4032x3024 JPEG (an OTC photo enlarged) is
   decoded at 1/4 scale (``load_image(min_side=1000)``), every pill found and its
   normalised crop made; median of ``--calls`` runs, PyTorch and ONNX backends (the latter
   needs ``rxvision segmenter export``), 1 and 2 threads; beside them the classical locator
   on the same decoded photo and a full-resolution decode.

    python benchmarks/locate_eval.py
    python benchmarks/locate_eval.py --independent runs/indep-seg --calls 20
    # one working side instead of the card's (min_area in working pixels scales with its
    # square): the session-16 sweep on the real photos
    python benchmarks/locate_eval.py --skip composites,latency --input-longest 320 --min-area 16
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rxvision.data import load_dataset, load_image
from rxvision.locate import Segmenter, locate_pills, normalised_crop
from rxvision.locate.composite import CompositeParams, Composites
from rxvision.locate.scoring import BoxMatch, mask_iou, match_boxes

REPO = Path(__file__).resolve().parents[1]
OTC = REPO.parent / "shared" / "data" / "otc-phone-photos"


def otc_photos(split: str) -> Iterator[tuple[Path, list[tuple[float, ...]]]]:
    """(photo, true boxes in pixels) of one OTC split; for train, one version per source."""
    seen = set()
    for path in sorted((OTC / "images" / split).glob("*.jpg")):
        source = path.name.split("_jpeg.rf.")[0]
        if split == "train" and source in seen:
            continue
        seen.add(source)
        with Image.open(path) as img:
            w, h = img.size
        boxes = []
        for line in (OTC / "labels" / split / f"{path.stem}.txt").read_text().splitlines():
            if line.strip():
                _, cx, cy, bw, bh = map(float, line.split())
                boxes.append(
                    ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
                )
        yield path, boxes


def _row(name: str, match: BoxMatch, photos: int) -> str:
    return (
        f"  {name:<34} photos {photos:>3}  pills {len(match.ious):>4}  "
        f"recall@0.5 {match.recall(0.5):.3f}  precision@0.5 {match.precision(0.5):.3f}  "
        f"mean IoU {match.mean_iou():.3f}"
    )


def real_photos(seg: Segmenter) -> None:
    print("1. Real phone photos (otc-phone-photos; measurement only)")
    totals = {
        k: [BoxMatch([], 0), 0] for k in ("seg", "classic", "seg1", "classic1", "segN", "classicN")
    }
    for split in ("val", "test", "train"):
        found, classic, n = BoxMatch([], 0), BoxMatch([], 0), 0
        for path, truth in otc_photos(split):
            photo = load_image(path)
            seg_match = match_boxes([r.box for r in seg.find(photo)], truth)
            location = locate_pills(photo)
            classic_match = match_boxes([location.box] if location.box else [], truth)
            found, classic, n = found + seg_match, classic + classic_match, n + 1
            kind = "1" if len(truth) == 1 else "N"
            for key, m in (
                ("seg", seg_match),
                ("classic", classic_match),
                (f"seg{kind}", seg_match),
                (f"classic{kind}", classic_match),
            ):
                totals[key][0] = totals[key][0] + m
                totals[key][1] += 1
        label = "train (82 sources, 1 version each)" if split == "train" else split
        print(_row(f"segmenter, {label}", found, n))
        print(_row(f"classical, {label}", classic, n))
    for key, name in (
        ("seg", "segmenter, all"),
        ("classic", "classical, all"),
        ("seg1", "segmenter, one-pill photos"),
        ("classic1", "classical, one-pill photos"),
        ("segN", "segmenter, several-pill photos"),
        ("classicN", "classical, several-pill photos"),
    ):
        print(_row(name, *totals[key]))


def _pill_mask_ious(regions: list, labels: np.ndarray) -> tuple[BoxMatch, list[float]]:
    """Box match, and per true pill the mask IoU of its matched region (0 if missed)."""
    truth_ids = [k for k in range(1, labels.max() + 1) if (labels == k).any()]
    truth_boxes = []
    for k in truth_ids:
        ys, xs = np.nonzero(labels == k)
        truth_boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    match = match_boxes([r.box for r in regions], truth_boxes)
    ious = []
    size = (labels.shape[1], labels.shape[0])
    for k, box_iou_k in zip(truth_ids, match.ious, strict=True):
        if box_iou_k == 0:
            ious.append(0.0)
            continue
        best = max(mask_iou(r.full_mask(size), labels == k) for r in regions)
        ious.append(best)
    return match, ious


def composites(seg: Segmenter, refs: str, count: int) -> None:
    print(
        f"2. Own composites ({count}, 320x320, seed 90210, pills of {refs}; own generator; "
        "pills cut by the frame kept)"
    )
    images = [load_image(s.path) for s in load_dataset(refs).samples[:300]]
    comp = Composites.from_images(images, CompositeParams(size=320, photo_side=320))
    # Composites cut pills by the frame, which the card's rule drops: keep them for this one.
    keep_all = Segmenter(
        seg.net, seg.input_longest, dataclasses.replace(seg.thresholds, keep_cut_by_frame=True),
        extra_longest=seg.extra_longest,
    )
    rng = np.random.default_rng(90210)
    total, ious = BoxMatch([], 0), []
    for _ in range(count):
        image, labels = comp.sample(rng)
        match, pill_ious = _pill_mask_ious(keep_all.find(Image.fromarray(image)), labels)
        total, ious = total + match, ious + pill_ious
    print(_row("segmenter", total, count) + f"  mask IoU per pill {np.mean(ious):.3f}")


def independent(seg: Segmenter, folder: Path) -> None:
    print(f"3. Independent renders ({folder}; measurement only)")
    with open(folder / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    total, ious = BoxMatch([], 0), []
    by_background: dict[str, tuple[BoxMatch, int]] = {}
    for row in rows:
        photo = load_image(folder / row["image"])
        labels = np.asarray(Image.open(folder / row["mask"])).astype(np.int32)
        if labels.shape != (photo.size[1], photo.size[0]):
            raise SystemExit(f"{row['mask']}: mask size differs from its photo")
        match, pill_ious = _pill_mask_ious(seg.find(photo), labels)
        total, ious = total + match, ious + pill_ious
        kind = row.get("background", "?")
        seen, n = by_background.get(kind, (BoxMatch([], 0), 0))
        by_background[kind] = (seen + match, n + 1)
    print(_row("segmenter", total, len(rows)) + f"  mask IoU per pill {np.mean(ious):.3f}")
    for kind, (match, n) in sorted(by_background.items()):
        print(_row(f"  on {kind}", match, n))


def _median_ms(fn: Callable[[], object], calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def latency(directory: str, calls: int) -> None:
    source = next(otc_photos("val"))[0] if OTC.is_dir() else None
    base = load_image(source) if source else Image.new("RGB", (640, 480), (120, 110, 100))
    if base.size[0] < base.size[1]:
        base = base.transpose(Image.Transpose.ROTATE_90)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "12mp.jpg"
        big = np.asarray(base.resize((4032, 3024), Image.Resampling.BICUBIC), np.float32)
        # Sensor noise gives the file a phone JPEG's size (a few MB): it decodes slower.
        big += np.random.default_rng(0).normal(0, 3, big.shape).astype(np.float32)
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=92)
        print(
            f"4. Latency per 12 MP photo (4032x3024 JPEG, {path.stat().st_size / 1e6:.1f} MB;"
            f" median of {calls}; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores)"
        )
        small = load_image(path, min_side=1000)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for backend in ("torch", "onnx"):
                seg = Segmenter.load(directory, backend=backend)

                def find_and_crop(seg: Segmenter = seg) -> int:
                    photo = load_image(path, min_side=1000)
                    return sum(normalised_crop(photo, r, 224).size[0] for r in seg.find(photo))

                print(
                    f"  {backend:<5} threads {threads}: decode at 1/4 {small.size} + find + "
                    f"crop {_median_ms(find_and_crop, calls):.0f} ms;  find only "
                    f"{_median_ms(lambda seg=seg: seg.find(small), calls):.0f} ms"
                )
        torch.set_num_threads(1)
        print(
            f"  decode at 1/4 {_median_ms(lambda: load_image(path, min_side=1000), calls):.0f}"
            f" ms;  full-resolution decode "
            f"{_median_ms(lambda: load_image(path), max(3, calls // 4)):.0f} ms;  classical "
            f"locator on the 1/4-scale photo {_median_ms(lambda: locate_pills(small), calls):.0f}"
            " ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", default=str(REPO / "models" / "rxvision-segmenter"))
    parser.add_argument(
        "--refs",
        default=str(REPO.parent / "shared" / "data" / "c3pi-1k" / "manifest.csv"),
        help="references whose pills the composites show",
    )
    parser.add_argument("--composites", type=int, default=100)
    parser.add_argument(
        "--independent",
        type=Path,
        default=None,
        help="folder written by `rxvision data render-independent`",
    )
    parser.add_argument("--calls", type=int, default=15, help="timed calls per latency")
    parser.add_argument("--skip", default="", help="comma list of: real,composites,latency")
    parser.add_argument("--input-longest", type=int, default=None,
                        help="one working side instead of the card's sides (not for latency)")
    parser.add_argument("--extra-longest", type=int, nargs="*", default=None,
                        help="with --input-longest: further working sides (the card's "
                             "preprocessing.extra_longest)")
    parser.add_argument("--min-area", type=int, default=None,
                        help="smallest pill in working pixels instead of the card's")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(1)
    seg = Segmenter.load(args.segmenter)
    if args.input_longest is not None or args.min_area is not None:
        thresholds = seg.thresholds
        if args.min_area is not None:
            thresholds = dataclasses.replace(thresholds, min_area=args.min_area)
        extra = (tuple(args.extra_longest or ()) if args.input_longest
                 else seg.extra_longest)
        seg = Segmenter(seg.net, args.input_longest or seg.input_longest, thresholds, seg.card,
                        extra_longest=extra)
    print(
        f"segmenter {args.segmenter}: working sides {[seg.input_longest, *seg.extra_longest]}, "
        f"{seg.card.get('parameters', 0):,} parameters, thresholds {seg.thresholds}"
    )
    if "real" not in skip:
        if not OTC.is_dir():
            print(f"1. skipped: {OTC} not found")
        else:
            real_photos(seg)
    if "composites" not in skip:
        composites(seg, args.refs, args.composites)
    if args.independent:
        independent(seg, args.independent)
    if "latency" not in skip:
        latency(args.segmenter, args.calls)


if __name__ == "__main__":
    main()
