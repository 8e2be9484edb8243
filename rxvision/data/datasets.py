"""Labelled image collections from a manifest CSV or a class-per-folder directory.

Manifest CSV: columns ``image,label`` plus optional metadata columns (``ndc``, ``name``,
``strength``, ``side``, ``mode``, ...); image paths are relative to the CSV. Folder: one
sub-folder per label holding its images. Labels are sorted, so the order is stable.

Example:
    >>> ds = load_dataset("../shared/data/c3pi-1k/manifest.csv")
    >>> len(ds), ds.num_classes, ds.label_metadata[0]["ndc"]
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .decode import load_image

IMAGE_SUFFIXES = {
    ".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".heic", ".heif",
}
# Columns describing a sample rather than its label; kept per sample, not per label.
# (num_pills ... height: what `data render-independent` writes about each photo.)
SAMPLE_COLUMNS = {"image", "label", "side", "mode", "source_id", "view", "split",
                  "num_pills", "boxes", "mask", "background", "width", "height"}


class DatasetError(ValueError):
    """A dataset description is missing, malformed or inconsistent."""


@dataclass
class Sample:
    path: Path
    label: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageSet:
    """Samples plus the sorted label list and per-label metadata."""

    samples: list[Sample]
    labels: list[str]
    label_metadata: list[dict[str, str]]
    source: Path

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def targets(self, labels: list[str] | None = None) -> list[int]:
        """Class index of each sample in ``labels`` (default: this set's); -1 if unknown."""
        index = {lab: i for i, lab in enumerate(self.labels if labels is None else labels)}
        return [index.get(s.label, -1) for s in self.samples]

    def column(self, name: str) -> list[str]:
        return [s.extra.get(name, "") for s in self.samples]


def load_dataset(path: str | Path) -> ImageSet:
    """Load a manifest CSV or a class-per-folder directory."""
    path = Path(path)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        return _from_manifest(path)
    raise DatasetError(f"dataset not found: {path} (expected a manifest CSV or a folder)")


def load_datasets(paths: list[str | Path]) -> ImageSet:
    """Several manifests or folders as one set (e.g. renders at two resolutions for a
    calibration): samples in the given order, the union of labels, each label's metadata
    merged (a later set's values win). ``source`` is the first path.

    Raises:
        DatasetError: no path given, or one of them cannot be read.
    """
    if not paths:
        raise DatasetError("no dataset given")
    sets = [load_dataset(p) for p in paths]
    if len(sets) == 1:
        return sets[0]
    meta: dict[str, dict[str, str]] = {}
    for one in sets:
        for label, label_meta in zip(one.labels, one.label_metadata, strict=True):
            meta.setdefault(label, {}).update(label_meta)
    labels = sorted(meta)
    return ImageSet([s for one in sets for s in one.samples], labels,
                    [meta[lab] for lab in labels], sets[0].source)


def _from_manifest(path: Path) -> ImageSet:
    # utf-8-sig: spreadsheet exports start with a BOM that would rename the first column.
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV manifest ({exc})") from exc
    missing = {"image", "label"} - set(cols)
    if missing:
        raise DatasetError(f"{path}: manifest lacks column(s) {sorted(missing)}; found {cols}")
    if not rows:
        raise DatasetError(f"{path}: manifest has no rows")
    samples, meta = [], {}
    for line, row in enumerate(rows, start=2):
        image, label = (row.get("image") or "").strip(), (row.get("label") or "").strip()
        if not image or not label:
            raise DatasetError(f"{path}:{line}: empty image or label")
        if None in row:  # csv.DictReader files surplus fields under the key None
            raise DatasetError(f"{path}:{line}: more fields than the header's {len(cols)}")
        label_meta = {k: v for k, v in row.items() if k not in SAMPLE_COLUMNS and v}
        extra = {k: v for k, v in row.items() if k in SAMPLE_COLUMNS - {"image", "label"} and v}
        meta.setdefault(label, {}).update(label_meta)
        samples.append(Sample((path.parent / image), label, extra))
    labels = sorted(meta)
    return ImageSet(samples, labels, [meta[lab] for lab in labels], path)


def _from_folder(path: Path) -> ImageSet:
    labels = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not labels:
        raise DatasetError(f"{path}: no class sub-folders found")
    samples = [
        Sample(f, lab)
        for lab in labels
        for f in sorted((path / lab).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise DatasetError(f"{path}: class folders hold no images ({sorted(IMAGE_SUFFIXES)})")
    return ImageSet(samples, labels, [{} for _ in labels], path)


class EvalDataset:
    """Decoded, preprocessed images with their class index in ``labels`` (-1 if unknown).

    A map-style dataset for ``torch.utils.data.DataLoader`` (which collates the
    transform's NumPy arrays into tensors); it needs no torch itself.
    """

    def __init__(self, images: ImageSet, transform: Callable[[Image.Image], Any],
                 labels: list[str], max_pixels: int | None = None):
        self.images = images
        self.transform = transform
        self.targets = images.targets(labels)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        kwargs = {"max_pixels": self.max_pixels} if self.max_pixels else {}
        img = load_image(self.images.samples[i].path, **kwargs)
        return self.transform(img), self.targets[i]
