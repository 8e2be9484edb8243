"""Which of the independent renderer's settings cost the bundled model its accuracy.

Renders the same pills (every k-th reference) once per variant, one setting changed at a
time, and prints the bundled model's top-1 on each (both sides / one side), with one
rotation (tta 1) to keep it fast. A benchmark: it reports numbers, it does not pass/fail.

    python benchmarks/indep_ablation.py ../shared/data/c3pi-1k/manifest.csv --refs 100 \
        --size 512 --variants default clean_sensor no_colour no_blur no_noise no_grain \
        jpeg_95 flat_light no_tilt laminate big clean_all clean

Photos go to --work (default /tmp/indep-ablation/<variant>-<size>), replaced each run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from rxvision.data import load_dataset
from rxvision.engine.evaluate import predict
from rxvision.identify.backends import load_backend
from rxvision.identify.bundled import resolve_model_path
from rxvision.identify.pipeline import crop_transform_for
from rxvision.identify.tta import apply_tta
from rxvision.validation import IndependentRenderer, RenderParams, write_views
from rxvision.validation.geometry import CameraParams
from rxvision.validation.scene import SceneParams
from rxvision.validation.sensor import SensorParams

CLEAN_SENSOR = dataclasses.replace(
    SensorParams(),
    cast=0.0,
    tint=0.0,
    exposure=(1.0, 1.0),
    vignette=(0.0, 0.0),
    defocus_prob=0.0,
    motion_prob=0.0,
    photons=(1e6, 1e6),
    read_noise=(0.0, 0.0),
    jpeg_quality=(95, 95),
)
BIG = {"one_fraction": (0.45, 0.6), "both_fraction": (0.3, 0.4)}
CLEAN_SCENE = dataclasses.replace(
    SceneParams(),
    light_gradient=(0.0, 0.0),
    gloss_prob=0.0,
    glare_prob=0.0,
    shadow_strength=(0.1, 0.1),
    **BIG,
)
FLAT = CameraParams(tilt=(0.0, 0.0))
BASE = RenderParams()
VARIANTS: dict[str, RenderParams] = {
    "default": BASE,
    "clean_sensor": dataclasses.replace(BASE, sensor=CLEAN_SENSOR),
    "no_tilt": dataclasses.replace(BASE, camera=FLAT),
    "laminate": dataclasses.replace(BASE, backgrounds=("laminate",)),
    "no_colour": dataclasses.replace(BASE, sensor=dataclasses.replace(
        SensorParams(), cast=0.0, tint=0.0, exposure=(1.0, 1.0), vignette=(0.0, 0.0))),
    "no_blur": dataclasses.replace(BASE, sensor=dataclasses.replace(
        SensorParams(), defocus_prob=0.0, motion_prob=0.0)),
    "no_noise": dataclasses.replace(BASE, sensor=dataclasses.replace(
        SensorParams(), photons=(1e6, 1e6), read_noise=(0.0, 0.0), jpeg_quality=(95, 95))),
    "no_grain": dataclasses.replace(BASE, sensor=dataclasses.replace(
        SensorParams(), photons=(1e6, 1e6), read_noise=(0.0, 0.0))),
    "jpeg_95": dataclasses.replace(BASE, sensor=dataclasses.replace(
        SensorParams(), jpeg_quality=(95, 95))),
    "flat_light": dataclasses.replace(BASE, scene=dataclasses.replace(
        SceneParams(), light_gradient=(0.0, 0.0), gloss_prob=0.0, glare_prob=0.0,
        shadow_strength=(0.1, 0.1))),
    "big": dataclasses.replace(BASE, scene=dataclasses.replace(SceneParams(), **BIG)),
    "clean_all": dataclasses.replace(BASE, sensor=CLEAN_SENSOR, scene=CLEAN_SCENE, camera=FLAT),
    "clean": dataclasses.replace(
        BASE, sensor=CLEAN_SENSOR, scene=CLEAN_SCENE, camera=FLAT, backgrounds=("laminate",)
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("references", help="reference manifest (C3PI studio photos)")
    parser.add_argument("--refs", type=int, default=100, help="pills, evenly spaced")
    parser.add_argument("--size", type=int, default=512, help="photo long side")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/indep-ablation"))
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    images = load_dataset(args.references)
    step = max(1, len(images) // args.refs)
    images = dataclasses.replace(images, samples=images.samples[::step][: args.refs])
    backend = load_backend(resolve_model_path(None))
    backend, _ = apply_tta(backend, backend.card, 1)  # one rotation: 4x faster than the card
    # a crop model sees each photo through its pill finder, as evaluate runs it
    transform = crop_transform_for(backend.card, backend.path)
    results = {}
    for name in args.variants:
        start = time.perf_counter()
        renderer = IndependentRenderer(args.size, params=VARIANTS[name])
        manifest = write_views(
            images, args.work / f"{name}-{args.size}", 2, args.seed, renderer, overwrite=True
        )
        pred = predict(backend, load_dataset(manifest), workers=0, progress=False,
                       transform=transform)
        ok = pred.logits.argmax(1) == pred.targets
        modes = np.array(pred.columns["mode"])
        results[name] = {
            "n": len(ok),
            "top1": float(ok.mean()),
            "both": float(ok[modes == "both"].mean()),
            "one": float(ok[modes == "one"].mean()),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(name, results[name], flush=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "size": args.size,
                    "refs": len(images.samples),
                    "seed": args.seed,
                    "results": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
