"""Enrollment: teach a trained model new pills from reference photos, without training.

For each new label, its reference photo(s) are rendered as several phone-style views with
the same synthesiser training used (:class:`rxvision.data.synth.PhoneViewSynthesizer`,
seeded, with the model's own ``augment`` settings), plus the plain letterboxed photo. The
mean of their 512-d pre-logit embeddings is the label's prototype ``m``, which is
*imprinted* (Qi et al., 2018) as a new row of the final Linear layer. Two rules:

``centred`` (default), with ``w̄, b̄`` the mean existing row and bias, ``μ`` the mean
embedding and ``α = mean ||w_c - w̄||``::

    p = normalise(m - μ)     weight_new = w̄ + scale·α·p     bias_new = b̄ - scale·α·(p·μ)

so ``logit_new(e) = w̄·e + b̄ + scale·α·(e - μ)·p``: the new row shares the trained rows'
common part and differs from it by a deviation as long as theirs, pointing from the mean
embedding to the new pill. ``μ`` needs no data: the embedding is ``ReLU(BN(...))``, and
after BatchNorm each unit is ~N(β, γ²) on the training distribution, so
``μ = β·Φ(β/γ) + γ·φ(β/γ)`` (the mean of a rectified normal).

``plain`` (the textbook recipe for normalised classifiers)::

    weight_new = normalise(m) · mean ||w_c|| · scale     bias_new = b̄

Why ``centred`` is the default: the embeddings are non-negative (after a ReLU), so any two
embeddings have a high cosine similarity, while trained rows have almost no component along
the mean embedding (softmax gradients sum to zero over classes). A ``plain`` row therefore
scores *every* photo highly, and new pills take over old pills' answers. In a CPU-sized
study (``benchmarks/enroll_imprint_sim.py``: frozen ImageNet features, trained head, 120
known + 30 enrolled c3pi pills) ``plain`` kept 0% of the old pills' confident correct
answers at every scale; ``centred`` kept 96% / 63% / 24% at scale 0.5 / 0.75 / 1.0, with
26% / 41% / 42% top-1 on the new pills (plain: 43%). ``scale`` trades new-pill accuracy
against old-pill accuracy: ``scale="auto"`` measures that trade on photos of the old
classes and takes the largest scale within a given loss (:func:`choose_scale`).

Both rules copy every existing row and every other weight unchanged, so the old classes'
logits are exactly what they were; an old pill's photo can only change answer if a new pill
now scores higher. Labels the model already knows are an error by default (enrollment must
not silently shadow a trained class); ``on_existing="skip"`` skips them instead.

Example:
    >>> result = enroll_artifact("runs/base", "new_pills/manifest.csv", "runs/base+new")
    >>> result.enrolled, result.references
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..artifact import CARD_NAME, Artifact, ArtifactError, load_artifact, save_artifact
from ..data import DatasetError, EvalTransform, ImageSet, load_dataset, load_image
from ..data.synth import PhoneViewSynthesizer, SynthParams
from ..models import RxVisionModel
from ..models.layers import CosineClassifier

DEFAULT_VIEWS = 16  # synthetic phone-style views per reference photo
DEFAULT_SEED = 0
IMPRINT_METHODS = ("auto", "centred", "plain")
DEFAULT_IMPRINT = "auto"  # plain for a cosine classifier, centred for a Linear one
# Scales tried by ``scale="auto"``, and the old-class top-1 it may cost.
SCALE_GRID = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)
DEFAULT_MAX_DROP = 0.01
# Keys save_artifact writes itself; every other card key is carried over to the new card.
_OWN_CARD_KEYS = {"format", "config", "labels", "label_metadata", "preprocessing",
                  "calibration", "metrics", "parameters", "versions", "weights"}


@dataclass
class EnrollmentResult:
    """What an enrollment did."""

    enrolled: list[str]
    skipped: list[str] = field(default_factory=list)
    references: dict[str, int] = field(default_factory=dict)  # label -> reference photos
    views_per_reference: int = DEFAULT_VIEWS
    imprint: str = DEFAULT_IMPRINT
    scale: float = 1.0
    scale_fit: dict[str, Any] | None = None  # how scale="auto" chose the scale
    output: str | None = None


def reference_views(images: list[Image.Image], transform: EvalTransform, views: int,
                    seed: int, params: SynthParams | None = None) -> Tensor:
    """Plain letterboxed references plus ``views`` synthetic phone views of each (uint8).

    Returns:
        Tensor (len(images) * (1 + views), 3, H, W), uint8.
    """
    plain = torch.stack([transform.to_uint8(img) for img in images])  # (R, 3, H, W)
    if views <= 0:
        return plain
    synth = PhoneViewSynthesizer.from_images(images, size=transform.size, params=params,
                                             fill=transform.fill)
    g = torch.Generator().manual_seed(seed)
    classes = torch.arange(len(images)).repeat_interleave(views)
    rendered, _ = synth.render(classes, g)  # (R * views, 3, H, W)
    return torch.cat([plain, rendered])


@torch.inference_mode()
def embed_uint8(model: RxVisionModel, transform: EvalTransform, views: Tensor,
                batch_size: int = 32) -> Tensor:
    """Pre-logit embeddings (N, D) of uint8 views (N, 3, H, W)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(views), batch_size):
        x = transform.normalize(views[start:start + batch_size]).to(device)
        out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu())
    return torch.cat(out)


def label_prototypes(model: RxVisionModel, transform: EvalTransform,
                     references: dict[str, list[Image.Image]], views: int = DEFAULT_VIEWS,
                     seed: int = DEFAULT_SEED, params: SynthParams | None = None,
                     batch_size: int = 32) -> Tensor:
    """Mean pre-logit embedding (D,) of each label's views, in ``references`` order: (L, D)."""
    model.eval()
    protos = []
    for i, images in enumerate(references.values()):
        emb = embed_uint8(model, transform,
                          reference_views(images, transform, views, seed + i, params), batch_size)
        protos.append(emb.mean(0))
    return torch.stack(protos)


def mean_embedding(model: RxVisionModel) -> Tensor:
    """Mean pre-logit embedding on the training distribution, from the head's BatchNorm.

    The embedding is ``ReLU(BN(x))``; BN output unit ``i`` is ~N(beta_i, gamma_i^2) over
    the data its running statistics were taken on, and a rectified normal has mean
    ``beta·Φ(beta/gamma) + gamma·φ(beta/gamma)``.
    """
    fc = model.classifier.fc
    norms = [m for m in fc if isinstance(m, nn.BatchNorm1d)]
    if len(norms) != 1 or not any(isinstance(m, nn.ReLU) for m in fc):
        raise ArtifactError("centred imprinting needs a head of Linear + BatchNorm1d + ReLU; "
                            "use --imprint plain for this model")
    bn = norms[0]
    beta = bn.bias.detach().float()
    gamma = bn.weight.detach().float().abs().clamp(min=1e-6)
    a = beta / gamma
    normal = torch.distributions.Normal(0.0, 1.0)
    return beta * normal.cdf(a) + gamma * normal.log_prob(a).exp()


def _cosine_rows(model: RxVisionModel, w: Tensor, prototypes: Tensor) -> Tensor:
    """New rows of a cosine layer: the prototypes' direction, with the trained rows' lean.

    Embeddings are non-negative (after a ReLU), so every prototype leans towards the mean
    embedding ``μ̂`` (measured +0.61 cosine), while trained rows lean away from it (-0.62):
    a bare ``normalise(m)`` row is then closer to *every* photo than the right old row.
    Each new row keeps its prototype's direction orthogonal to ``μ̂`` and takes the trained
    rows' mean cosine ``a`` with ``μ̂``: ``a·μ̂ + sqrt(1 - a²)·normalise(m - (m·μ̂)μ̂)``.
    """
    mu = F.normalize(mean_embedding(model).to(w), dim=0)  # (D,)
    a = (F.normalize(w, dim=1) @ mu).mean().clamp(-0.999, 0.999)
    m = F.normalize(prototypes.to(w), dim=1)  # (L, D)
    perp = F.normalize(m - (m @ mu)[:, None] * mu, dim=1)
    return (a * mu + torch.sqrt(1 - a * a) * perp) * w.norm(dim=1).mean()


def resolve_method(model: RxVisionModel, method: str) -> str:
    """``"auto"`` -> ``"plain"`` for a cosine classifier, ``"centred"`` for a Linear one."""
    if method not in IMPRINT_METHODS:
        raise ValueError(f"imprint method must be one of {IMPRINT_METHODS}, got {method!r}")
    cosine = isinstance(model.get_classifier(), CosineClassifier)
    if method == "auto":
        return "plain" if cosine else "centred"
    if cosine and method != "plain":
        raise ValueError("a cosine classifier is imprinted with normalised prototypes: use "
                         "--imprint plain (or auto)")
    return method


@torch.no_grad()
def imprinted_rows(model: RxVisionModel, prototypes: Tensor, method: str = DEFAULT_IMPRINT,
                   scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """The new classifier rows (L, D) and biases (L,) for ``prototypes`` (see module doc)."""
    if method not in IMPRINT_METHODS:
        raise ValueError(f"imprint method must be one of {IMPRINT_METHODS}, got {method!r}")
    if not scale > 0:
        raise ValueError(f"imprint scale must be positive, got {scale}")
    old = model.get_classifier()
    method = resolve_method(model, method)
    if isinstance(old, CosineClassifier):
        if scale != 1.0:
            raise ValueError("a cosine classifier compares directions only: enrollment scale "
                             f"must be 1.0, got {scale}")
        return _cosine_rows(model, old.weight.detach().float(), prototypes), torch.zeros(
            len(prototypes))
    if not isinstance(old, nn.Linear) or old.bias is None:
        raise ArtifactError("enrollment needs a final nn.Linear with bias or a CosineClassifier")
    w, b = old.weight.detach().float(), old.bias.detach().float()
    protos = prototypes.to(w)
    if method == "plain":
        return (F.normalize(protos, dim=1) * w.norm(dim=1).mean() * scale,
                b.mean().expand(len(protos)))
    mu = mean_embedding(model).to(w)
    w_mean = w.mean(0)
    alpha = (w - w_mean).norm(dim=1).mean() * scale
    direction = F.normalize(protos - mu, dim=1)  # (L, D)
    # The bias makes logit_new(mu) equal the mean old logit at mu.
    return w_mean + alpha * direction, b.mean() - alpha * (direction @ mu)


@torch.no_grad()
def imprint(model: RxVisionModel, prototypes: Tensor, method: str = DEFAULT_IMPRINT,
            scale: float = 1.0) -> None:
    """Append one classifier row per prototype (L, D) in place; old rows stay bit-identical.

    Args:
        prototypes: mean embeddings of the new labels (not normalised).
        method: ``"centred"`` or ``"plain"`` (see the module docstring).
        scale: multiplies the new rows' deviation (centred) or norm (plain).
    """
    rows, biases = imprinted_rows(model, prototypes, method, scale)
    old = model.get_classifier()
    if isinstance(old, CosineClassifier):
        grown = CosineClassifier(old.in_features, old.out_features + len(rows)).to(old.weight)
        grown.weight[: old.out_features] = old.weight
        grown.weight[old.out_features:] = rows.to(grown.weight)
        grown.log_scale.copy_(old.log_scale)
        model.classifier.classifier = grown
        model.num_classes = grown.out_features
        return
    new = nn.Linear(old.in_features, old.out_features + len(rows)).to(old.weight)
    new.weight[: old.out_features] = old.weight
    new.weight[old.out_features:] = rows.to(new.weight)
    new.bias[: old.out_features] = old.bias
    new.bias[old.out_features:] = biases.to(new.bias)
    model.classifier.classifier = new
    model.num_classes = new.out_features


@torch.no_grad()
def choose_scale(model: RxVisionModel, transform: EvalTransform, old_data: ImageSet,
                 labels: list[str], prototypes: Tensor, method: str = DEFAULT_IMPRINT,
                 max_drop: float = DEFAULT_MAX_DROP, batch_size: int = 32
                 ) -> tuple[float, dict[str, Any]]:
    """The largest scale in :data:`SCALE_GRID` that costs the old classes at most
    ``max_drop`` top-1 on ``old_data`` (labelled photos of the model's own classes).

    One forward pass over ``old_data``; each scale then costs a matrix product.

    Returns:
        (chosen scale, record with the per-scale old top-1 for the card).
    """
    targets = torch.tensor(old_data.targets(labels))
    keep = (targets >= 0).nonzero().flatten().tolist()
    if not keep:
        raise DatasetError(f"{old_data.source}: none of its labels are in the model; "
                           "--old-data must show the model's own classes")
    emb = torch.cat([
        embed_uint8(model, transform, torch.stack(
            [transform.to_uint8(load_image(old_data.samples[i].path)) for i in chunk]))
        for chunk in (keep[j:j + batch_size] for j in range(0, len(keep), batch_size))
    ])  # (N, D)
    t = targets[keep]
    old_logits = model.get_classifier()(emb.to(next(model.parameters()).device)).float().cpu()
    before = float((old_logits.argmax(1) == t).float().mean())
    table = []
    for scale in SCALE_GRID:
        rows, biases = imprinted_rows(model, prototypes, method, scale)
        new_max = (emb @ rows.cpu().T + biases.cpu()).max(1).values
        keeps = (old_logits.argmax(1) == t) & (old_logits.max(1).values >= new_max)
        table.append({"scale": scale, "old_top1": round(float(keeps.float().mean()), 4)})
    fits = [r["scale"] for r in table if before - r["old_top1"] <= max_drop]
    chosen = max(fits) if fits else min(SCALE_GRID)
    record = {"old_data": str(old_data.source), "n": len(keep), "old_top1_before": before,
              "max_drop": max_drop, "table": table, "chosen": chosen}
    if not fits:
        record["warning"] = (f"even scale {chosen} costs the old classes more than "
                             f"{max_drop:.1%} top-1; the smallest scale was used")
    return chosen, record


def _references(data: ImageSet, skip: set[str]) -> dict[str, list[Image.Image]]:
    refs: dict[str, list[Image.Image]] = {}
    for sample in data.samples:
        if sample.label not in skip:
            refs.setdefault(sample.label, []).append(load_image(sample.path))
    return refs


def enroll(art: Artifact, data: ImageSet, views: int = DEFAULT_VIEWS, seed: int = DEFAULT_SEED,
           on_existing: str = "error", batch_size: int = 32, method: str = DEFAULT_IMPRINT,
           scale: float | str = 1.0, old_data: ImageSet | None = None,
           max_drop: float = DEFAULT_MAX_DROP
           ) -> tuple[list[str], list[dict[str, str]], EnrollmentResult]:
    """Imprint the labels of ``data`` into ``art.model`` (in place).

    Args:
        scale: a positive number, or ``"auto"``: the largest scale that costs the old
            classes at most ``max_drop`` top-1 on ``old_data`` (see :func:`choose_scale`).

    Returns:
        (all labels, all label metadata, what was done).

    Raises:
        DatasetError: ``data`` holds labels the model knows and ``on_existing="error"``,
            nothing is left to enroll, or ``scale="auto"`` without ``old_data``.
    """
    if on_existing not in ("error", "skip"):
        raise ValueError(f"on_existing must be 'error' or 'skip', got {on_existing!r}")
    method = resolve_method(art.model, method)
    if isinstance(art.model.get_classifier(), CosineClassifier) and scale != 1.0:
        raise ValueError("this model has a cosine classifier: enrollment needs no scale "
                         f"(new rows compare directions, like the trained ones); got {scale!r}")
    if scale == "auto" and old_data is None:
        raise DatasetError("--scale auto needs --old-data: labelled photos of the model's own "
                           "classes to measure what enrollment costs them")
    if scale != "auto" and not float(scale) > 0:
        raise ValueError(f"scale must be positive or 'auto', got {scale!r}")
    known = set(art.labels)
    existing = sorted(set(data.labels) & known)
    if existing and on_existing == "error":
        raise DatasetError(
            f"{data.source}: {len(existing)} label(s) are already in the model "
            f"(e.g. {existing[:3]}); remove them or pass --skip-existing"
        )
    refs = _references(data, set(existing))
    if not refs:
        raise DatasetError(f"{data.source}: no new labels to enroll")
    aug = art.config.augment
    params = SynthParams(strength=aug.strength, one_side_prob=aug.one_side_prob)
    transform = EvalTransform(art.preprocessing)
    protos = label_prototypes(art.model, transform, refs, views, seed, params, batch_size)
    scale_fit = None
    if scale == "auto":
        assert old_data is not None
        scale, scale_fit = choose_scale(art.model, transform, old_data, art.labels, protos,
                                        method, max_drop, batch_size)
    imprint(art.model, protos, method, float(scale))
    meta = dict(zip(data.labels, data.label_metadata, strict=True))
    new = list(refs)
    result = EnrollmentResult(new, existing, {k: len(v) for k, v in refs.items()}, views,
                              method, float(scale), scale_fit)
    return art.labels + new, art.label_metadata + [meta[k] for k in new], result


def enroll_artifact(model_path: str | Path, data_path: str | Path, out: str | Path,
                    views: int = DEFAULT_VIEWS, seed: int = DEFAULT_SEED,
                    on_existing: str = "error", batch_size: int = 32,
                    method: str = DEFAULT_IMPRINT, scale: float | str = 1.0,
                    old_data: str | Path | None = None,
                    max_drop: float = DEFAULT_MAX_DROP) -> EnrollmentResult:
    """Load ``model_path``, enroll the labels in ``data_path``, save the result to ``out``.

    The new card keeps the base card's calibration, identification thresholds and other
    sections, and appends an ``enrollment`` record; the base metrics move into that record
    because they were measured without the new labels.
    """
    model_path, out = Path(model_path), Path(out)
    if out.resolve() == model_path.resolve():
        raise ArtifactError("--out must differ from --model: the base model is kept as is")
    if (out / CARD_NAME).exists():
        raise ArtifactError(f"{out} already holds a model; choose another --out or remove it")
    art = load_artifact(model_path)
    data = load_dataset(data_path)
    old = load_dataset(old_data) if old_data is not None else None
    labels, metadata, result = enroll(art, data, views, seed, on_existing, batch_size, method,
                                      scale, old, max_drop)
    card = art.card
    record: dict[str, Any] = {
        **asdict(result),
        "base_model": {"path": str(model_path), "sha256": card.get("weights", {}).get("sha256"),
                       "num_classes": len(art.labels)},
        "base_metrics": card.get("metrics", {}),
        "data": str(data_path),
        "seed": seed,
        "method": f"classifier weight imprinting ({method}) of mean pre-logit embeddings",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    record.pop("output")
    extra = {k: v for k, v in card.items() if k not in _OWN_CARD_KEYS}
    extra["enrollment"] = [*card.get("enrollment", []), record]
    save_artifact(out, art.model, art.config, labels, metadata, metrics={},
                  calibration=card.get("calibration"), extra=extra,
                  half=card.get("weights", {}).get("dtype") == "float16")
    result.output = str(out)
    return result
