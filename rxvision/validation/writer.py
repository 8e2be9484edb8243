"""Write independent-renderer photos of a reference set to a folder, atomically.

Layout of ``out/``:

- ``images/*.jpg``: the photos, exactly the JPEG files the renderer encoded;
- ``masks/*.png``: one 8-bit label image per photo (0 surface, k = the k-th pill);
- ``manifest.csv``: ``image,label,mode,num_pills,boxes,mask,background,width,height`` plus
  the references' label metadata (``ndc``, ...). ``boxes`` holds one ``x0 y0 x1 y1`` per pill
  (photo pixels, x1/y1 exclusive), separated by ``;``, in the order of the mask labels;
- ``annotations.jsonl``: per photo, everything ``render`` reports except the masks
  (outline polygons, camera, light, sensor draws);
- ``skipped.csv``: references whose pill could not be cut out, with the reason.

The folder is built under a temporary name beside ``out`` and renamed into place when
complete, so an interrupted run never leaves a half-written set that looks finished.
Each photo draws from its own generator, seeded by (seed, reference index, view index):
any one photo can be rebuilt alone, and the set does not depend on the order of work.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.datasets import ImageSet
from ..data.decode import load_image
from .render import MODES, IndependentRenderer, RenderError
from .segment import SegmentError

MANIFEST_COLUMNS = [
    "image",
    "label",
    "mode",
    "num_pills",
    "boxes",
    "mask",
    "background",
    "width",
    "height",
]


def view_mode(view: int) -> str:
    """Views alternate: even indices show both sides, odd ones one side."""
    return MODES[view % 2]


def _label_png(masks: list[np.ndarray]) -> bytes:
    labels = np.zeros(masks[0].shape, dtype=np.uint8)
    for k, m in enumerate(masks, start=1):
        labels[m] = k
    buf = io.BytesIO()
    Image.fromarray(labels, "L").save(buf, "PNG", optimize=True)
    return buf.getvalue()


def write_views(
    images: ImageSet,
    out: str | Path,
    views_per_image: int = 2,
    seed: int = 0,
    renderer: IndependentRenderer | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render ``views_per_image`` photos of every reference into ``out``; return the manifest.

    Args:
        images: the reference set (one C3PI studio photo per label).
        out: the folder to create (refused if it exists, unless ``overwrite``).
        views_per_image: photos per reference, alternating both sides / one side.
        seed: base seed; use one that no model selection has been tuned on.
        renderer: an :class:`IndependentRenderer` (default: 1024 px long side).
        overwrite: replace an existing ``out`` (only once the new set is complete).
        progress: called with (references done, references total).
    """
    out = Path(out)
    if views_per_image < 1:
        raise RenderError(f"views_per_image must be at least 1, got {views_per_image}")
    if out.exists() and not overwrite:
        raise RenderError(f"{out} exists; remove it, choose another --out, or pass --overwrite")
    renderer = renderer or IndependentRenderer()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _render_all(images, tmp, views_per_image, seed, renderer, progress)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "manifest.csv"


def _render_all(
    images: ImageSet,
    tmp: Path,
    views: int,
    seed: int,
    renderer: IndependentRenderer,
    progress: Callable[[int, int], None] | None,
) -> None:
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    meta_cols = sorted({k for m in images.label_metadata for k in m})
    targets = images.targets()
    rows, notes, skipped = [], [], []
    for i, sample in enumerate(images.samples):
        try:
            sides = renderer.cut(load_image(sample.path))
        except SegmentError as exc:
            skipped.append({"image": str(sample.path), "label": sample.label, "reason": str(exc)})
            continue
        for v in range(views):
            mode = view_mode(v)
            jpeg, meta = renderer.render_jpeg(sides, np.random.default_rng([seed, i, v]), mode)
            stem = f"{i:05d}_{Path(sample.path).stem}_v{v}_{mode}"
            (tmp / "images" / f"{stem}.jpg").write_bytes(jpeg)
            (tmp / "masks" / f"{stem}.png").write_bytes(
                _label_png([p.pop("mask") for p in meta["pills"]])
            )
            label_meta = images.label_metadata[targets[i]]
            rows.append(
                {
                    "image": f"images/{stem}.jpg",
                    "label": sample.label,
                    "mode": mode,
                    "num_pills": len(meta["pills"]),
                    "boxes": ";".join(" ".join(str(c) for c in p["box"]) for p in meta["pills"]),
                    "mask": f"masks/{stem}.png",
                    "background": meta["background"],
                    "width": meta["size"][0],
                    "height": meta["size"][1],
                    **{c: label_meta.get(c, "") for c in meta_cols},
                }
            )
            notes.append(
                json.dumps(
                    {
                        "image": f"images/{stem}.jpg",
                        "label": sample.label,
                        "seed": [seed, i, v],
                        **meta,
                    }
                )
            )
        if progress:
            progress(i + 1, len(images.samples))
    if not rows:
        raise RenderError(
            f"no reference could be cut out ({len(skipped)} skipped); are these C3PI studio photos?"
        )
    with open(tmp / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS + meta_cols)
        writer.writeheader()
        writer.writerows(rows)
    (tmp / "annotations.jsonl").write_text("\n".join(notes) + "\n")
    with open(tmp / "skipped.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "label", "reason"])
        writer.writeheader()
        writer.writerows(skipped)
