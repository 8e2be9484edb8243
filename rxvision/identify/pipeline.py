"""Find the pill first: photo in, one answer per pill out.

A classifier trained on normalised crops (``augment.framing: crop``) never sees a photo's
background or framing: the pill finder (:class:`rxvision.locate.Segmenter`) returns a mask
and box per pill, :func:`rxvision.locate.normalised_crop` cuts each pill out onto the C3PI
studio grey at a fixed scale, and the :class:`~.identifier.Identifier` classifies the
crops in one batch.

A model artifact carries its pill finder in a ``segmenter/`` folder beside ``card.json``;
another one can be named explicitly. A crop model without a finder is an error, never a
silent fall back to whole photos.

Example:
    >>> pipeline = PillPipeline.load("runs/crop-model")
    >>> answer = pipeline.identify("photo.jpg")
    >>> [(p.box, p.identification.top.label) for p in answer.pills], answer.retake
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..locate import EvalTransform, PillRegion, Segmenter, normalised_crop
from ..locate.presence import NO_PILL
from .identifier import Identification, Identifier, IdentifierError, ImageInput

SEGMENTER_DIR = "segmenter"  # a model artifact's own pill finder
DEFAULT_MAX_PILLS = 8


def model_framing(card: dict[str, Any]) -> str:
    """What a model was trained to see: ``"photo"`` or ``"crop"`` (its config's framing)."""
    return card.get("config", {}).get("augment", {}).get("framing", "photo")


def find_segmenter(model_path: Path | None, segmenter: str | Path | None = None) -> Path:
    """The pill finder to use: ``segmenter`` if given, else the artifact's own.

    Raises:
        IdentifierError: none given and the artifact has none.
    """
    if segmenter is not None:
        return Path(segmenter)
    own = model_path / SEGMENTER_DIR if model_path is not None else None
    if own is None or not own.is_dir():
        raise IdentifierError(
            f"this model classifies pill crops and needs a pill finder: {own or 'its folder'} "
            f"holds none; pass a segmenter (e.g. --segmenter models/rxvision-segmenter)")
    return own


@dataclass
class PillAnswer:
    """One pill found in a photo and what it is."""

    box: list[int]  # (x0, y0, x1, y1) in photo pixels
    finder_score: float  # the segmenter's mean foreground probability over the pill
    identification: Identification

    def to_dict(self) -> dict[str, Any]:
        return {"box": self.box, "finder_score": self.finder_score,
                **self.identification.to_dict()}


@dataclass
class PhotoAnswer:
    """Every pill of one photo, or why the photo must be retaken."""

    pills: list[PillAnswer]
    retake: str | None = None  # e.g. "no pill found in the photo"; None when pills were found
    timings_ms: dict[str, float] = field(default_factory=dict)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "retake": self.retake, "timings_ms": self.timings_ms,
                "pills": [p.to_dict() for p in self.pills]}


class CropTransform:
    """Photo -> model input of its most pill-like region: the transform a crop model is
    evaluated with (one labelled pill per photo). A photo where nothing is found is
    letterboxed whole, so that it still counts (and most likely counts as wrong)."""

    def __init__(self, segmenter: Segmenter, preprocessing: dict[str, Any],
                 segmenter_path: Path | None = None):
        self.segmenter = segmenter
        self.segmenter_path = segmenter_path
        self.inner = EvalTransform(preprocessing, zoom="off")
        self.size = min(self.inner.size)

    def crop(self, img: Image.Image) -> tuple[Image.Image, PillRegion | None]:
        regions = self.segmenter.find(img)
        if not regions:
            return img, None
        best = max(regions, key=lambda r: r.score * r.mask.sum() ** 0.5)
        return normalised_crop(img, best, self.size), best

    def __call__(self, img: Image.Image) -> Tensor:
        return self.inner(self.crop(img)[0])


class PillPipeline:
    """Segmenter + normalised crop + Identifier (see the module docstring)."""

    def __init__(self, identifier: Identifier, segmenter: Segmenter,
                 max_pills: int = DEFAULT_MAX_PILLS):
        if max_pills < 1:
            raise IdentifierError(f"max_pills must be >= 1, got {max_pills}")
        self.identifier = identifier
        self.segmenter = segmenter
        self.max_pills = max_pills
        self.transform = EvalTransform(identifier.preprocessing, zoom="off")
        self.crop_size = min(self.transform.size)

    @classmethod
    def load(cls, model: str | Path | None = None, segmenter: str | Path | None = None,
             max_pills: int = DEFAULT_MAX_PILLS, **identifier_options: Any) -> PillPipeline:
        """The Identifier of ``model`` (None: bundled) with its own or the given finder."""
        identifier = Identifier.load(model, **identifier_options)
        return cls(identifier, Segmenter.load(find_segmenter(identifier.path, segmenter)),
                   max_pills)

    def crops(self, img: Image.Image) -> list[tuple[PillRegion, Image.Image]]:
        """The pills of an RGB photo, best first, each with its normalised crop."""
        regions = self.segmenter.find(img)[: self.max_pills]
        return [(r, normalised_crop(img, r, self.crop_size)) for r in regions]

    def identify(self, image: ImageInput, topk: int = 5, name: str | None = None
                 ) -> PhotoAnswer:
        """One answer per pill in the photo; ``retake`` says why when none is found."""
        t0 = time.perf_counter()
        img = self.identifier.decode(image, name)
        t1 = time.perf_counter()
        found = self.crops(img)
        t2 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1e3, "find": (t2 - t1) * 1e3}
        source = name or (str(image) if isinstance(image, str | Path) else None)
        if not found:
            return PhotoAnswer([], NO_PILL, timings, source)
        batch = torch.stack([self.transform(crop) for _, crop in found])
        logits, emb = self.identifier.forward(batch)
        results = self.identifier.postprocess(logits, emb, topk)
        timings["classify"] = (time.perf_counter() - t2) * 1e3
        pills = []
        for (region, _), result in zip(found, results, strict=True):
            result.source = source
            pills.append(PillAnswer(list(region.box), round(region.score, 4), result))
        return PhotoAnswer(pills, None, timings, source)


def crop_transform_for(card: dict[str, Any], model_path: Path | None,
                       segmenter: str | Path | None = None) -> CropTransform | None:
    """The photo transform a model must be evaluated or calibrated with: a
    :class:`CropTransform` (its own or the given finder) for a crop model, None (the
    card's own :class:`EvalTransform`) for a whole-photo model."""
    if model_framing(card) != "crop":
        return None
    path = find_segmenter(model_path, segmenter)
    return CropTransform(Segmenter.load(path), card["preprocessing"], path)
