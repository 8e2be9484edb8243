"""Write synthesised phone-style views to disk as a manifest with a ``mode`` column.

Used to build held-out evaluation and calibration sets (``rxvision data synth``) and the
demo's query photos. The generator seed is explicit so a set can be regenerated exactly.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..io_utils import atomic_write_bytes, atomic_write_text
from .datasets import ImageSet
from .decode import load_image
from .synth import PhoneViewSynthesizer, SynthParams


def write_views(images: ImageSet, out: str | Path, views_per_image: int, seed: int,
                size: int = 320, strength: float = 1.0, quality: int = 90) -> Path:
    """Render ``views_per_image`` views per reference (alternating both/one side) into ``out``.

    Returns the manifest path ``out/manifest.csv`` (columns image,label,mode + metadata).
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    refs = [load_image(s.path) for s in images.samples]
    synth = PhoneViewSynthesizer.from_images(refs, (size, size), SynthParams(strength=strength))
    targets = images.targets()
    g = torch.Generator().manual_seed(seed)
    meta_cols = sorted({k for m in images.label_metadata for k in m})
    rows = []
    n = len(refs)
    for v in tqdm(range(views_per_image), desc="rendering views"):
        mode = "both" if v % 2 == 0 else "one"
        for start in range(0, n, 32):
            idx = torch.arange(start, min(start + 32, n))
            views, _ = synth.render(idx, g, [mode] * len(idx))
            for i, view in zip(idx.tolist(), views, strict=True):
                label = images.labels[targets[i]]
                # The index keeps names unique: class folders often reuse file names.
                name = f"images/{i:05d}_{Path(images.samples[i].path).stem}_v{v}_{mode}.jpg"
                buf = io.BytesIO()
                Image.fromarray(view.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality)
                atomic_write_bytes(out / name, buf.getvalue())
                meta = images.label_metadata[targets[i]]
                rows.append({"image": name, "label": label, "mode": mode,
                             **{c: meta.get(c, "") for c in meta_cols}})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["image", "label", "mode", *meta_cols])
    writer.writeheader()
    writer.writerows(rows)
    manifest = out / "manifest.csv"
    atomic_write_text(manifest, text.getvalue())
    return manifest
