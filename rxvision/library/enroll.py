"""Enrollment: teach a trained model new pills from reference photos, without training.

For each new label, its reference photo(s) are rendered as several phone-style views with
the same synthesiser training used (:class:`rxvision.data.synth.PhoneViewSynthesizer`,
seeded, with the model's own ``augment`` settings), plus the plain letterboxed photo. The
mean of their 512-d pre-logit embeddings is the label's prototype ``m``, which is
*imprinted* (Qi et al., 2018) as a new row of the final layer.

Cosine final layer (``classifier.type: cosine``; logits ``s·(cos(e, w) - offset)``):

- ``lean`` (default for trained rows): ``a·μ̂ + sqrt(1 - a²)·normalise(m⊥)``, the prototype's
  direction orthogonal to the mean embedding ``μ̂`` plus the trained rows' mean lean ``a`` on
  it (trained rows point away from ``μ̂``, post-ReLU prototypes towards it). Even so a new
  row's cosine with its own pill's photos is far higher than a trained row's with its own
  (0.21 against 0.03 in the 900-pill study), so the new rows also get an ``offset``:
  ``offset="auto"`` (:func:`fit_offset`) subtracts the difference of the two means, the
  trained rows' measured by ``rxvision calibrate`` on held-out views, the new rows' on fresh
  synthetic views of the new pills.
- ``prototype`` (default when every row is a prototype, ``rxvision prototypes``):
  ``normalise(m)``, the same rule as the rows it joins, no offset.

Linear final layer, two rules:

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

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from ..artifact import (
    SAVED_CARD_KEYS,
    Artifact,
    ArtifactError,
    load_artifact,
    require_new_output,
    save_artifact,
)
from ..data import DatasetError, ImageSet, Sample, load_dataset, load_image
from ..data.synth import PhoneViewSynthesizer, SynthParams
from ..data.transforms import card_zoom
from ..locate import EvalTransform
from ..models import RxVisionModel
from ..models.layers import CosineClassifier

DEFAULT_VIEWS = 16  # synthetic phone-style views per reference photo
DEFAULT_SEED = 0
IMPRINT_METHODS = ("auto", "centred", "plain", "lean", "prototype")
COSINE_METHODS = ("lean", "prototype")  # the rules for a cosine final layer
DEFAULT_IMPRINT = "auto"  # see resolve_method
# enroll --offset auto measures new rows on views rendered with seeds shifted by this.
OFFSET_SEED_SHIFT = 1_000_000
# Card key of a prototype head (rxvision.library.prototype_head): its rows are prototypes.
PROTOTYPE_CARD_KEY = "classifier_rows"
PROTOTYPE_SOURCE = "prototypes"
# Scales tried by ``scale="auto"``, and the old-class top-1 it may cost.
SCALE_GRID = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)
DEFAULT_MAX_DROP = 0.01


class EnrollmentError(ValueError):
    """An enrollment option that does not fit the model (a user error, printed plainly)."""


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
    offset: float = 0.0  # cosine layers: subtracted from the new rows' cosines
    offset_fit: dict[str, Any] | None = None  # how offset="auto" chose it
    class_centres_fit: dict[str, Any] | None = None  # how the new classes' centres were set
    # All classes' logit centres (calibration.own_logit_means) after enrollment; None when
    # the base card has none. Saved into the card's calibration, not the enrollment record.
    own_logit_means: list[float] | None = None
    output: str | None = None


def prototype_settings(card: dict[str, Any]) -> dict[str, Any] | None:
    """The card's prototype-head record (views, seed, ...), or None for trained rows."""
    rows = card.get(PROTOTYPE_CARD_KEY)
    return rows if isinstance(rows, dict) and rows.get("source") == PROTOTYPE_SOURCE else None


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


def label_embeddings(model: RxVisionModel, transform: EvalTransform,
                     references: dict[str, list[Image.Image]], views: int = DEFAULT_VIEWS,
                     seed: int = DEFAULT_SEED, params: SynthParams | None = None,
                     batch_size: int = 32, progress: bool = True) -> list[Tensor]:
    """Pre-logit embeddings (V, D) of each label's views, in ``references`` order.

    Label ``i``'s views use seed ``seed + i``. ``progress`` shows a bar on stderr when
    there are more than a few labels.
    """
    model.eval()
    bar = tqdm(references.values(), desc="reference views", unit="label", leave=False,
               disable=not progress or len(references) < 8)
    return [embed_uint8(model, transform,
                        reference_views(images, transform, views, seed + i, params), batch_size)
            for i, images in enumerate(bar)]


def label_prototypes(model: RxVisionModel, transform: EvalTransform,
                     references: dict[str, list[Image.Image]], views: int = DEFAULT_VIEWS,
                     seed: int = DEFAULT_SEED, params: SynthParams | None = None,
                     batch_size: int = 32, progress: bool = True) -> Tensor:
    """Mean pre-logit embedding of each label's views (:func:`label_embeddings`): (L, D)."""
    return torch.stack([e.mean(0) for e in label_embeddings(
        model, transform, references, views, seed, params, batch_size, progress)])


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


def resolve_method(model: RxVisionModel, method: str, prototype_head: bool = False) -> str:
    """Resolve ``"auto"`` and check ``method`` suits the model's final layer.

    ``auto``: ``centred`` for a Linear layer; for a cosine layer ``prototype`` when its rows
    are prototypes themselves (``rxvision prototypes``), else ``lean``.
    """
    if method not in IMPRINT_METHODS:
        raise EnrollmentError(f"imprint method must be one of {IMPRINT_METHODS}, got {method!r}")
    cosine = isinstance(model.get_classifier(), CosineClassifier)
    if method == "auto":
        if cosine:
            return "prototype" if prototype_head else "lean"
        return "centred"
    if cosine and method not in COSINE_METHODS:
        raise EnrollmentError(f"a cosine classifier is imprinted with --imprint "
                              f"{' or '.join(COSINE_METHODS)} (or auto), not {method!r}")
    if not cosine and method in COSINE_METHODS:
        raise EnrollmentError(f"--imprint {method} needs a cosine final layer; this model's "
                              "is Linear: use centred or plain (or auto)")
    return method


@torch.no_grad()
def imprinted_rows(model: RxVisionModel, prototypes: Tensor, method: str = DEFAULT_IMPRINT,
                   scale: float = 1.0, offset: float = 0.0) -> tuple[Tensor, Tensor]:
    """The new rows (L, D) and biases (L,) for ``prototypes`` (see module doc).

    For a cosine layer the second tensor holds the rows' cosine ``offset`` instead of biases.
    """
    if method not in IMPRINT_METHODS:
        raise EnrollmentError(f"imprint method must be one of {IMPRINT_METHODS}, got {method!r}")
    if not scale > 0:
        raise EnrollmentError(f"imprint scale must be positive, got {scale}")
    old = model.get_classifier()
    method = resolve_method(model, method)
    if isinstance(old, CosineClassifier):
        if scale != 1.0:
            raise EnrollmentError("a cosine classifier compares directions only: enrollment "
                                  f"scale must be 1.0, got {scale}")
        w = old.weight.detach().float()
        rows = (_cosine_rows(model, w, prototypes) if method == "lean"
                else F.normalize(prototypes.to(w), dim=1) * w.norm(dim=1).mean())
        return rows, torch.full((len(prototypes),), float(offset))
    if offset:
        raise EnrollmentError("a cosine offset needs a cosine final layer; this model's is Linear")
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
            scale: float = 1.0, offset: float = 0.0) -> None:
    """Append one classifier row per prototype (L, D) in place; old rows stay bit-identical.

    Args:
        prototypes: mean embeddings of the new labels (not normalised).
        method: ``"centred"`` or ``"plain"`` (see the module docstring).
        scale: multiplies the new rows' deviation (centred) or norm (plain).
        offset: cosine layers only: subtracted from the new rows' cosines.
    """
    rows, biases = imprinted_rows(model, prototypes, method, scale, offset)
    old = model.get_classifier()
    if isinstance(old, CosineClassifier):
        grown = CosineClassifier(old.in_features, old.out_features + len(rows)).to(old.weight)
        grown.weight[: old.out_features] = old.weight
        grown.weight[old.out_features:] = rows.to(grown.weight)
        grown.log_scale.copy_(old.log_scale)
        grown.offset[: old.out_features] = old.offset
        grown.offset[old.out_features:] = biases.to(grown.offset)
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
    emb = torch.cat([embed_uint8(model, transform, views) for views in uint8_batches(
        [old_data.samples[i] for i in keep], transform, batch_size)])  # (N, D)
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


def own_class_cosine(logits: Tensor, targets: Tensor, head: CosineClassifier) -> float:
    """Mean cosine of photos with their own class's row, over the rows with zero offset.

    ``logits`` (N, C) of labelled photos of the model's own classes (``targets`` (N,),
    -1 for unknown labels). Rows with an offset were imprinted, not trained, and are left
    out. This is what ``rxvision calibrate`` stores as ``calibration.own_class_cosine``.
    """
    scale = float(head.log_scale.detach().exp())
    offset = head.offset.detach().float().cpu()
    keep = (targets >= 0) & (offset[targets.clamp(min=0)] == 0)
    if not keep.any():
        raise DatasetError("no photo of a trained (not enrolled) class to measure the "
                           "own-class cosine on")
    t = targets[keep]
    own = logits[keep].float().gather(1, t[:, None]).squeeze(1) / scale + offset[t]
    return float(own.mean())


def fit_offset(rows: Tensor, embeddings: list[Tensor], trained_own: float
               ) -> tuple[float, dict[str, Any]]:
    """The cosine offset that makes new rows score their own views like trained rows do.

    ``rows`` (L, D) are the new rows, ``embeddings[i]`` (V, D) views of label ``i`` that
    did not build its row (fresh seeds: the row's own views would overstate the cosine,
    as training views would for trained rows), ``trained_own`` the trained rows' mean
    cosine with held-out photos of their own class (:func:`own_class_cosine`). The offset is the
    difference of the two means, so a new pill's photos clear the bar old pills' photos
    clear, no lower (measured in docs/identification.md).
    """
    unit = F.normalize(rows.float(), dim=1)
    new_own = torch.cat([F.normalize(e.float(), dim=1) @ unit[i] for i, e in
                         enumerate(embeddings)]).mean()
    offset = float(new_own) - trained_own
    return offset, {"rule": "mean own-class cosine of new rows minus that of trained rows",
                    "new_rows_own_cosine": float(new_own), "trained_own_cosine": trained_own}


def extend_class_centres(card: dict[str, Any], head: torch.nn.Module,
                         fresh_embeddings: Callable[[], list[Tensor]], old_count: int
                         ) -> tuple[list[float] | None, dict[str, Any] | None]:
    """The card's per-class logit centres with one appended per new class.

    A new class's centre is the mean logit its new row gives ``fresh_embeddings()[i]``
    (views that did not build the row; only computed when the card has centres), shrunk
    towards the card's overall mean with the card's prior weight, as
    :func:`~rxvision.identify.openset.fit_class_centres` does for trained classes.
    Returns (None, None) when the card has no centres.
    """
    calibration = card.get("calibration") or {}
    old = calibration.get("own_logit_means")
    if old is None:
        return None, None
    fresh = fresh_embeddings()
    if len(old) != old_count:
        raise ArtifactError(f"card calibration.own_logit_means has {len(old)} values for "
                            f"{old_count} classes; rerun `rxvision calibrate` on the base model")
    fit = calibration.get("own_logit_means_fit") or {}
    prior = float(fit.get("prior_views", 0.0))
    grand = float(fit.get("grand_mean", sum(old) / len(old)))
    new = []
    with torch.no_grad():
        for i, emb in enumerate(fresh):
            own = head(emb.float())[:, old_count + i]  # (V,) logits of the new row
            new.append(round((float(own.sum()) + prior * grand) / (own.numel() + prior), 6))
    return [*old, *new], {"rule": "mean logit of the new row on its fresh views, shrunk "
                                  "like the trained classes' centres",
                          "views_per_label": int(fresh[0].shape[0]), "prior_views": prior,
                          "grand_mean": grand}


def load_references(data: ImageSet, skip: set[str]) -> dict[str, list[Image.Image]]:
    """Each label's reference photos (decoded), in ``data`` order, leaving out ``skip``."""
    refs: dict[str, list[Image.Image]] = {}
    for sample in data.samples:
        if sample.label not in skip:
            refs.setdefault(sample.label, []).append(load_image(sample.path))
    return refs


def _resolve_offset(art: Artifact, method: str, offset: float | str, protos: Tensor,
                    old_data: ImageSet | None, transform: EvalTransform, batch_size: int,
                    fresh_embeddings: Callable[[], list[Tensor]]
                    ) -> tuple[float, dict[str, Any] | None]:
    """The offset for the new rows, and how it was chosen (None when given)."""
    head = art.model.get_classifier()
    if not isinstance(head, CosineClassifier):
        if offset not in ("auto", 0, 0.0):
            raise EnrollmentError("--offset applies to a cosine final layer; this model's is "
                                  "Linear")
        return 0.0, None
    if offset != "auto":
        return float(offset), None
    if method == "prototype":
        return 0.0, {"rule": "prototype rows join prototype rows: no offset"}
    if old_data is not None:
        targets = torch.tensor(old_data.targets(art.labels))
        with torch.no_grad():
            logits = torch.cat([art.model(transform.normalize(b)) for b in
                                uint8_batches(old_data.samples, transform, batch_size)])
        trained, source = own_class_cosine(logits, targets, head), str(old_data.source)
    elif "own_class_cosine" in art.card.get("calibration", {}):
        trained = float(art.card["calibration"]["own_class_cosine"])
        source = f"card calibration ({art.card['calibration'].get('fitted_on')})"
    else:
        raise ArtifactError(
            "--offset auto needs the trained rows' own-class cosine: run `rxvision calibrate` "
            "on views of the model's own pills first (it stores calibration.own_class_cosine),"
            " pass --old-data D, or give --offset NUMBER (0 = none)")
    rows, _ = imprinted_rows(art.model, protos, method)
    value, record = fit_offset(rows, fresh_embeddings(), trained)
    return value, {**record, "trained_measured_on": source,
                   "new_rows_measured_on": f"fresh views (seed + {OFFSET_SEED_SHIFT})"}


def uint8_batches(samples: list[Sample], transform: EvalTransform, batch_size: int
                  ) -> Iterator[Tensor]:
    """Decoded, letterboxed photos (B, 3, H, W) uint8, ``batch_size`` at a time."""
    for start in range(0, len(samples), batch_size):
        yield torch.stack([transform.to_uint8(load_image(s.path))
                           for s in samples[start:start + batch_size]])


def enroll(art: Artifact, data: ImageSet, views: int = DEFAULT_VIEWS, seed: int = DEFAULT_SEED,
           on_existing: str = "error", batch_size: int = 32, method: str = DEFAULT_IMPRINT,
           scale: float | str = 1.0, old_data: ImageSet | None = None,
           max_drop: float = DEFAULT_MAX_DROP, offset: float | str = "auto"
           ) -> tuple[list[str], list[dict[str, str]], EnrollmentResult]:
    """Imprint the labels of ``data`` into ``art.model`` (in place).

    Args:
        scale: Linear layers: a positive number, or ``"auto"``: the largest scale that
            costs the old classes at most ``max_drop`` top-1 on ``old_data`` (see
            :func:`choose_scale`).
        offset: cosine layers: a number subtracted from the new rows' cosines, or
            ``"auto"``: :func:`fit_offset` against the trained rows' own-class cosine, read
            from the card (``rxvision calibrate`` stores it) or measured on ``old_data``;
            0 for ``prototype`` rows, which are built like the rows they join.

    Returns:
        (all labels, all label metadata, what was done).

    Raises:
        DatasetError: ``data`` holds labels the model knows and ``on_existing="error"``,
            nothing is left to enroll, or ``scale="auto"`` without ``old_data``.
    """
    if on_existing not in ("error", "skip"):
        raise EnrollmentError(f"on_existing must be 'error' or 'skip', got {on_existing!r}")
    method = resolve_method(art.model, method,
                            prototype_head=prototype_settings(art.card) is not None)
    if isinstance(art.model.get_classifier(), CosineClassifier) and scale != 1.0:
        raise EnrollmentError("this model has a cosine classifier: enrollment needs no scale "
                              f"(new rows compare directions, like the trained ones); got "
                              f"{scale!r}")
    if scale == "auto" and old_data is None:
        raise DatasetError("--scale auto needs --old-data: labelled photos of the model's own "
                           "classes to measure what enrollment costs them")
    if scale != "auto" and not float(scale) > 0:
        raise EnrollmentError(f"scale must be positive or 'auto', got {scale!r}")
    known = set(art.labels)
    existing = sorted(set(data.labels) & known)
    if existing and on_existing == "error":
        raise DatasetError(
            f"{data.source}: {len(existing)} label(s) are already in the model "
            f"(e.g. {existing[:3]}); remove them or pass --skip-existing"
        )
    refs = load_references(data, set(existing))
    if not refs:
        raise DatasetError(f"{data.source}: no new labels to enroll")
    aug = art.config.augment
    params = SynthParams(strength=aug.strength, one_side_prob=aug.one_side_prob)
    transform = EvalTransform(art.preprocessing)
    embeddings = label_embeddings(art.model, transform, refs, views, seed, params, batch_size)
    protos = torch.stack([e.mean(0) for e in embeddings])
    fresh_cache: list[list[Tensor]] = []

    def fresh_embeddings() -> list[Tensor]:
        """Views of each new label that do not build its row (computed once, on demand)."""
        if not fresh_cache:
            fresh_cache.append(label_embeddings(art.model, transform, refs, views,
                                                seed + OFFSET_SEED_SHIFT, params, batch_size))
        return fresh_cache[0]

    offset, offset_fit = _resolve_offset(art, method, offset, protos, old_data, transform,
                                         batch_size, fresh_embeddings)
    scale_fit = None
    if scale == "auto":
        assert old_data is not None
        scale, scale_fit = choose_scale(art.model, transform, old_data, art.labels, protos,
                                        method, max_drop, batch_size)
    old_count = len(art.labels)
    imprint(art.model, protos, method, float(scale), offset)
    centres, centres_fit = extend_class_centres(art.card, art.model.get_classifier(),
                                                fresh_embeddings, old_count)
    meta = dict(zip(data.labels, data.label_metadata, strict=True))
    new = list(refs)
    result = EnrollmentResult(new, existing, {k: len(v) for k, v in refs.items()}, views,
                              method, float(scale), scale_fit, offset, offset_fit,
                              centres_fit, centres)
    return art.labels + new, art.label_metadata + [meta[k] for k in new], result


def enroll_artifact(model_path: str | Path, data_path: str | Path, out: str | Path,
                    views: int = DEFAULT_VIEWS, seed: int = DEFAULT_SEED,
                    on_existing: str = "error", batch_size: int = 32,
                    method: str = DEFAULT_IMPRINT, scale: float | str = 1.0,
                    old_data: str | Path | None = None,
                    max_drop: float = DEFAULT_MAX_DROP,
                    offset: float | str = "auto") -> EnrollmentResult:
    """Load ``model_path``, enroll the labels in ``data_path``, save the result to ``out``.

    The new card keeps the base card's calibration, identification thresholds and other
    sections, and appends an ``enrollment`` record; the base metrics move into that record
    because they were measured without the new labels.
    """
    model_path, out = Path(model_path), Path(out)
    require_new_output(model_path, out)
    art = load_artifact(model_path)
    data = load_dataset(data_path)
    old = load_dataset(old_data) if old_data is not None else None
    labels, metadata, result = enroll(art, data, views, seed, on_existing, batch_size, method,
                                      scale, old, max_drop, offset)
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
    record.pop("own_logit_means")
    calibration = card.get("calibration")
    if result.own_logit_means is not None:
        calibration = {**calibration, "own_logit_means": result.own_logit_means}
    extra = {k: v for k, v in card.items() if k not in SAVED_CARD_KEYS}
    extra["enrollment"] = [*card.get("enrollment", []), record]
    save_artifact(out, art.model, art.config, labels, metadata, metrics={},
                  calibration=calibration, extra=extra,
                  half=card.get("weights", {}).get("dtype") == "float16",
                  zoom=card_zoom(card["preprocessing"]))
    result.output = str(out)
    return result
