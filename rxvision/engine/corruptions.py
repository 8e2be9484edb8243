"""Robustness sweep in the style of ImageNet-C (Hendrycks & Dietterich, 2019).

Seven corruptions at five severities are applied to every image *after* it is letterboxed
to the model's input size (as ImageNet-C corrupts 224-px crops), so a severity means the
same thing whatever the source resolution. Parameters follow ImageNet-C where it has the
corruption (gaussian blur, gaussian noise, brightness, contrast, JPEG, pixelate-style
downscale); rotation is ours, since phone photos are taken at any angle. Noise is seeded
per (image, corruption, severity), so sweeps are reproducible.

Corruption error, normalised by the model's *own* clean error (ImageNet-C's unnormalised
"relative" form, without the AlexNet baseline, which does not exist for pills)::

    CE_c = sum_s err_{c,s} / (5 * err_clean)        mCE = mean_c CE_c

CE_c = 1 means corruption c costs nothing; 2 means it doubles the error. With a perfect
clean score (err_clean = 0) the ratio is undefined and reported as None; the mean relative
accuracy drop, ``mean_{c,s} (acc_clean - acc_{c,s}) / acc_clean``, is reported alongside
because it stays defined there.

Accuracy alone hides what matters most here: whether a degraded photo gets a *wrong answer*
or a "not sure". Every cell therefore also records, under the card's own rule (calibrated
confidence at least ``abstain_threshold`` and open-set score at most ``ood_threshold``, as
:class:`~rxvision.identify.identifier.Identifier` decides), the fraction of photos answered
and the fraction answered wrongly, next to the same for the clean photo.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset

from ..data import ImageSet, load_image
from ..identify.openset import ood_scores
from ..locate import EvalTransform
from .evaluate import batches
from .openset_eval import answered, card_thresholds, class_centres

if TYPE_CHECKING:
    from ..identify.backends import Backend

SEVERITIES = (1, 2, 3, 4, 5)
DEFINITION = ("CE_c = sum_s err_{c,s} / (5 * err_clean); mCE = mean_c CE_c "
              "(ImageNet-C relative style, normalised by this model's clean top-1 error; "
              "applied after letterboxing to the model input size)")

# Severity parameters, index = severity - 1.
BLUR_SIGMA = (1.0, 2.0, 3.0, 4.0, 6.0)  # px at 224 px, scaled with the input size
NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)  # on [0, 1] intensities
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # scale of deviations from the image mean
ROTATION_DEG = (15.0, 30.0, 60.0, 90.0, 180.0)
JPEG_QUALITY = (25, 18, 15, 10, 7)
DOWNSCALE = (0.6, 0.5, 0.4, 0.3, 0.25)  # down by this factor (box), back up (bilinear)


def _blur(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    sigma = BLUR_SIGMA[s - 1] * min(img.size) / 224
    return img.filter(ImageFilter.GaussianBlur(radius=sigma))


def _noise(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = x + rng.normal(0.0, NOISE_STD[s - 1], size=x.shape).astype(np.float32)
    return Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))


def _brightness(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    hsv = np.asarray(img.convert("HSV"), dtype=np.float32)
    hsv[..., 2] = np.clip(hsv[..., 2] + BRIGHTNESS[s - 1] * 255, 0, 255)
    return Image.fromarray(hsv.round().astype(np.uint8), "HSV").convert("RGB")


def _contrast(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    x = np.asarray(img, dtype=np.float32)
    mean = x.mean()
    x = (x - mean) * CONTRAST[s - 1] + mean
    return Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8))


def _rotation(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    # Corners exposed by the turn take the letterbox fill (the top-left pixel).
    return img.rotate(ROTATION_DEG[s - 1], resample=Image.Resampling.BILINEAR,
                      fillcolor=img.getpixel((0, 0)))


def _jpeg(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY[s - 1])
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _downscale(img: Image.Image, s: int, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    f = DOWNSCALE[s - 1]
    small = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.BILINEAR)


CORRUPTIONS: dict[str, Callable[[Image.Image, int, np.random.Generator], Image.Image]] = {
    "blur": _blur,
    "noise": _noise,
    "brightness": _brightness,
    "contrast": _contrast,
    "rotation": _rotation,
    "jpeg": _jpeg,
    "downscale": _downscale,
}


def corrupt(img: Image.Image, name: str, severity: int, seed: int = 0) -> Image.Image:
    """Apply corruption ``name`` at ``severity`` (1-5) to an RGB image."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {sorted(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), severity])
    return CORRUPTIONS[name](img, severity, rng)


class CardRule:
    """The card's answer-or-abstain rule on raw logits, as the Identifier applies it.

    ``None`` from :meth:`answered` when the rule needs embeddings (the ``cosine`` score),
    which a logits-only sweep does not compute.
    """

    def __init__(self, backend: Backend):
        self.thresholds = card_thresholds(backend.card)
        self.temperature = float(backend.temperature)
        self.method = self.thresholds["ood_method"]
        self.centres = None
        if self.thresholds["ood_threshold"] is not None and self.method == "centred_max_logit":
            self.centres = class_centres(backend)

    @property
    def usable(self) -> bool:
        return self.thresholds["ood_threshold"] is None or self.method != "cosine"

    def answered(self, logits: torch.Tensor) -> torch.Tensor | None:
        """(B, C) raw logits -> (B,) bool: the photo gets an answer, not "not sure"."""
        if not self.usable:
            return None
        conf = torch.softmax(logits.float() / self.temperature, dim=1).amax(1)
        ood = self.thresholds["ood_threshold"]
        scores = None if ood is None else torch.from_numpy(
            ood_scores(logits, None, None, self.method, self.centres)).to(conf.device)
        return answered(conf, scores, self.thresholds["abstain_threshold"], ood)


class CorruptedViews(Dataset):
    """Item i: the clean view of image i, then every corrupted one, uint8 (1 + 35, 3, H, W).

    One decode per image feeds all 36 views; corrupted views are in (corruption, severity)
    order.
    """

    def __init__(self, images: ImageSet, transform: EvalTransform):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.transform.to_uint8(load_image(self.images.samples[i].path))  # (3, H, W)
        boxed = Image.fromarray(x.permute(1, 2, 0).numpy())
        views = [torch.from_numpy(np.asarray(boxed).copy())] + [
            torch.from_numpy(np.asarray(corrupt(boxed, name, s, seed=i)).copy())
            for name in CORRUPTIONS for s in SEVERITIES
        ]
        return torch.stack(views).permute(0, 3, 1, 2)  # (36, 3, H, W)


def corruption_sweep(
    backend: Backend,
    images: ImageSet,
    clean_top1: float,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = True,
    zoom: str | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy per corruption and severity, corruption errors and mCE, and how often
    the card's rule answers (and answers wrongly) there.

    ``zoom`` ("auto"/"off") overrides the card's; the corruptions apply after zooming.

    Args:
        images: samples whose labels the model knows (others are skipped).
        clean_top1: the model's top-1 on the same images without corruption (the mCE's
            normaliser; the sweep's own clean pass is reported as ``clean``).

    Returns:
        ``{"definition", "n", "clean_top1", "accuracy": {corruption: {"1".."5": acc}},
        "corruption_error": {corruption: CE_c or None}, "mce", "mean_accuracy",
        "mean_relative_accuracy_drop", "rule", "clean": {"top1", "answered",
        "answered_wrong"}, "answered": {...}, "answered_wrong": {...}}``; the last two are
        fractions of all photos, shaped like ``accuracy`` (None where the card's open-set
        score needs embeddings).
    """
    index = {lab: i for i, lab in enumerate(backend.labels)}
    known = [s for s in images.samples if s.label in index]
    images = ImageSet(known, images.labels, images.label_metadata, images.source)
    transform = EvalTransform(backend.preprocessing, zoom)
    rule = CardRule(backend)
    targets = torch.tensor([index[s.label] for s in known], dtype=torch.int64)
    n_views = 1 + len(CORRUPTIONS) * len(SEVERITIES)  # the clean view first
    # Each item carries 36 views; load enough images to fill about one forward batch.
    loader = DataLoader(CorruptedViews(images, transform), num_workers=workers,
                        batch_size=max(1, batch_size // n_views), shuffle=False)
    hits = torch.zeros(n_views, dtype=torch.int64)
    answers = torch.zeros(n_views, dtype=torch.int64)
    wrong = torch.zeros(n_views, dtype=torch.int64)
    seen = 0
    with torch.inference_mode():
        for views in batches(loader, progress, "corruptions"):
            k = views.shape[0]
            flat = transform.normalize(views.flatten(0, 1))  # (k * 36, 3, H, W)
            logits = torch.cat([
                backend(chunk.contiguous(memory_format=torch.channels_last)).float()
                for chunk in flat.split(batch_size)
            ])  # (k * 36, C)
            right = (logits.argmax(1).view(k, n_views) == targets[seen:seen + k, None])
            hits += right.sum(0)
            says = rule.answered(logits)
            if says is not None:
                says = says.view(k, n_views)
                answers += says.sum(0)
                wrong += (says & ~right).sum(0)
            seen += k
    shape = (len(CORRUPTIONS), len(SEVERITIES))
    rate = (torch.stack([hits, answers, wrong]).double() / max(seen, 1)).numpy()
    out = summarize_sweep(rate[0, 1:].reshape(shape), clean_top1, seen)
    out["rule"] = rule.thresholds
    if rule.usable and seen:
        out["clean"] = {"top1": float(rate[0, 0]), "answered": float(rate[1, 0]),
                        "answered_wrong": float(rate[2, 0])}
        out["answered"] = _by_cell(rate[1, 1:].reshape(shape))
        out["answered_wrong"] = _by_cell(rate[2, 1:].reshape(shape))
    else:
        out["clean"] = {"top1": float(rate[0, 0]) if seen else None,
                        "answered": None, "answered_wrong": None}
        out["answered"] = out["answered_wrong"] = None
    return out


def _by_cell(values: np.ndarray) -> dict[str, dict[str, float]]:
    return {name: {str(s): float(values[c, j]) for j, s in enumerate(SEVERITIES)}
            for c, name in enumerate(CORRUPTIONS)}


def summarize_sweep(acc: np.ndarray, clean_top1: float, n: int) -> dict[str, Any]:
    """Corruption errors and mCE from accuracies (len(CORRUPTIONS), 5)."""
    clean_err = 1.0 - clean_top1
    accuracy, ce = _by_cell(acc), {}
    for c, name in enumerate(CORRUPTIONS):
        err_sum = float((1.0 - acc[c]).sum())
        ce[name] = err_sum / (len(SEVERITIES) * clean_err) if clean_err > 0 else None
    defined = [v for v in ce.values() if v is not None]
    return {
        "definition": DEFINITION,
        "n": n,
        "clean_top1": clean_top1,
        "accuracy": accuracy,
        "corruption_error": ce,
        "mce": float(np.mean(defined)) if defined and n else None,
        "mean_accuracy": float(acc.mean()) if n else None,
        "mean_relative_accuracy_drop": (float(((clean_top1 - acc) / clean_top1).mean())
                                        if clean_top1 > 0 and n else None),
    }
