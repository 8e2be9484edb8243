"""Dataset health check: every bad file, duplicates, class counts and image sizes.

Unlike training, the check never stops at the first problem: it decodes every image,
collects all errors, and reports them together.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .datasets import ImageSet
from .decode import ImageDecodeError, load_image


@dataclass
class CheckReport:
    num_images: int = 0
    num_classes: int = 0
    errors: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        counts = list(self.class_counts.values()) or [0]
        return {
            "ok": self.ok,
            "num_images": self.num_images,
            "num_classes": self.num_classes,
            "errors": self.errors,
            "duplicates": self.duplicates,
            "images_per_class": {"min": min(counts), "max": max(counts),
                                 "mean": sum(counts) / len(counts)},
            "image_sizes": self.sizes,
        }


def check_dataset(images: ImageSet, progress: bool = True) -> CheckReport:
    """Decode every image of ``images``; collect errors, duplicates and statistics."""
    report = CheckReport(num_images=len(images), num_classes=images.num_classes)
    report.class_counts = dict(Counter(s.label for s in images.samples))
    by_hash: dict[str, list[str]] = defaultdict(list)
    widths, heights = [], []
    for sample in tqdm(images.samples, desc="checking", disable=not progress):
        path = Path(sample.path)
        try:
            img = load_image(path)
        except ImageDecodeError as exc:
            report.errors.append(str(exc))
            continue
        widths.append(img.width)
        heights.append(img.height)
        by_hash[hashlib.sha256(path.read_bytes()).hexdigest()].append(str(path))
    report.duplicates = [paths for paths in by_hash.values() if len(paths) > 1]
    if widths:
        common = Counter(zip(widths, heights, strict=True)).most_common(1)[0][0]
        report.sizes = {
            "width": {"min": min(widths), "max": max(widths)},
            "height": {"min": min(heights), "max": max(heights)},
            "most_common": "{}x{}".format(*common),
        }
    return report
