"""Imprinting: a label's prototype embedding written as a new row of the final layer.

The rules (``lean``/``prototype`` for cosine layers, ``centred``/``plain`` for Linear ones)
and why each is the default are described in :mod:`rxvision.library.enroll`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..artifact import (
    ArtifactError,
)
from ..models import RxVisionModel
from ..models.layers import CosineClassifier
from .embeddings import mean_embedding

IMPRINT_METHODS = ("auto", "centred", "plain", "lean", "prototype")


COSINE_METHODS = ("lean", "prototype")  # the rules for a cosine final layer


DEFAULT_IMPRINT = "auto"  # see resolve_method


# Card key of a prototype head (rxvision.library.prototype_head): its rows are prototypes.
PROTOTYPE_CARD_KEY = "classifier_rows"


PROTOTYPE_SOURCE = "prototypes"


class EnrollmentError(ValueError):
    """An enrollment option that does not fit the model (a user error, printed plainly)."""


def prototype_settings(card: dict[str, Any]) -> dict[str, Any] | None:
    """The card's prototype-head record (views, seed, ...), or None for trained rows."""
    rows = card.get(PROTOTYPE_CARD_KEY)
    return rows if isinstance(rows, dict) and rows.get("source") == PROTOTYPE_SOURCE else None


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
