"""Fitting enrolled rows to the trained ones: the Linear rows' scale and the cosine offset.

``scale="auto"`` trades new-pill against old-pill accuracy on photos of the old classes;
``offset="auto"`` lines the new rows' own-class cosine up with the trained rows'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..artifact import (
    Artifact,
    ArtifactError,
)
from ..data import DatasetError, ImageSet
from ..locate import EvalTransform
from ..models import RxVisionModel
from ..models.layers import CosineClassifier
from .embeddings import embed_uint8, uint8_batches
from .imprinting import DEFAULT_IMPRINT, EnrollmentError, imprinted_rows

# enroll --offset auto measures new rows on views rendered with seeds shifted by this.
OFFSET_SEED_SHIFT = 1_000_000


# Scales tried by ``scale="auto"``, and the old-class top-1 it may cost.
SCALE_GRID = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5)


DEFAULT_MAX_DROP = 0.01


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


def resolve_offset(art: Artifact, method: str, offset: float | str, protos: Tensor,
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
