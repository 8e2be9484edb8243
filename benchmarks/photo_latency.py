"""Time to answer one 12-megapixel phone photo: decode + photo check + zoom + forward.

A model trained on pill crops (the bundled sixth version) is timed through
``PillPipeline.identify`` instead: decode at a reduced scale, photo check, find the pills,
crop, classify, with and without reading the imprint (rows with ``"pipeline": true``).

Builds a 4032x3024 JPEG like a phone's (a sample pill, cut out, photographed small on a
textured table, quality 92, about 2 MB) unless ``--photo`` is given, then times
``Identifier.identify`` on its bytes (what the service does per upload, without HTTP:
the JPEG decoded at a reduced scale where that serves) against the same on the photo
decoded at full size first (the previous path), with the card's rotations and with 1,
and reports medians.

Example:
    python benchmarks/photo_latency.py --repeats 15 --json photo-latency.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from rxvision.data import load_image  # noqa: E402
from rxvision.data.cutout import cut_out_sides  # noqa: E402
from rxvision.identify.identifier import Identifier  # noqa: E402
from rxvision.identify.pipeline import PillPipeline, model_framing  # noqa: E402

SIZE = (4032, 3024)


def phone_photo(pill: Path, fill: float = 0.15, seed: int = 0) -> bytes:
    """A 12 MP JPEG: the sample photo's pill, cut out, pasted at ``fill`` of the width on a
    smooth, slightly noisy table (what a phone held 25-30 cm above a pill sees)."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
    small = rng.normal(0, 6, (h // 16, w // 16, 3)) + np.array([168, 160, 148])
    table = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize(SIZE,
                                                                           Image.BICUBIC)
    grain = rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    table = Image.fromarray(np.clip(np.asarray(table, np.float32) + grain, 0, 255)
                            .astype(np.uint8))
    with Image.open(pill) as src:
        cut = cut_out_sides(src.convert("RGB")).sides[0]  # RGBA, the pill's front only
    side = round(fill * w)
    cut = cut.resize((side, round(side * cut.height / cut.width)), Image.LANCZOS)
    table.paste(cut, ((w - cut.width) // 2, (h - cut.height) // 2), cut)
    buf = io.BytesIO()
    table.filter(ImageFilter.GaussianBlur(0.6)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="artifact (default: the bundled model)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--photo", type=Path, help="a JPEG to time (default: a built 12 MP one)")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--torch-threads", type=int,
                   help="torch intra-op threads (default: torch's; 1 is steadier on a shared "
                        "machine, where two threads wait for each other)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    data = (args.photo.read_bytes() if args.photo else
            phone_photo(sorted((REPO / "data/sample/images").glob("*.jpg"))[0]))
    report = {"photo_bytes": len(data), "python": platform.python_version(),
              "torch_threads": args.torch_threads, "load_average_before": os.getloadavg(),
              "machine": platform.machine(), "rows": []}
    probe = Identifier.load(args.model, backend=args.backend)
    if model_framing(probe.card) == "crop":
        for imprint in (True, False):
            pipe = PillPipeline.around(probe, imprint=imprint and probe.answers.library
                                       is not None)
            answer = pipe.identify(data)
            row = {"pipeline": True, "rotations": probe.tta, "imprint": pipe.imprint is not None,
                   "identify_ms": median_ms(lambda pipe=pipe: pipe.identify(data),
                                            args.repeats),
                   "pills": len(answer.pills), "retake": answer.retake,
                   "stage_ms_last_run": pipe.identify(data).timings_ms}
            report["rows"].append(row)
            print(json.dumps(row))
    for tta in (() if model_framing(probe.card) == "crop" else (None, 1)):
        ident = Identifier.load(args.model, backend=args.backend, tta=tta)
        [res] = ident.identify(data)
        # Before: the whole photo decoded at full size, then the same steps.
        before = median_ms(lambda ident=ident: ident.identify(load_image(data)), args.repeats)
        row = {"rotations": ident.tta,
               "identify_ms": median_ms(lambda ident=ident: ident.identify(data), args.repeats),
               "identify_full_decode_ms": before,
               "answer": res.message, "retake": res.retake, "zoomed_to": res.zoomed_to,
               "zoom_notes": res.zoom_notes}
        report["rows"].append(row)
        print(json.dumps(row))
    with Image.open(io.BytesIO(data)) as im:
        report["photo_size"] = list(im.size)
    report["full_decode_ms"] = median_ms(lambda: load_image(data), args.repeats)
    report["load_average_after"] = os.getloadavg()
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
