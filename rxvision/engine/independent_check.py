"""After training: the run measured on photos its training renderer did not make.

A run's validation views come from the training renderer (other seeds), so its validation
top-1 cannot see what that renderer teaches the model about itself. ``rxvision train
--independent-val MANIFEST`` measures the finished run on a set the independent renderer
wrote (``rxvision data render-independent``) and stores both figures, and the gap between
them, in the card's ``metrics.independent``. Use it for reports and model selection, never
as training data.

Example:
    >>> check = independent_check("runs/x", "indep-1k/manifest.csv", limit=500)
    >>> check["top1"], check["own_val_top1"], check["gap_points"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifact import update_card
from ..data import load_dataset
from ..identify.backends import load_backend
from ..identify.pipeline import crop_transform_for, model_framing
from .evaluate import calibrated_temperature, predict, subset, summarize


def own_renderer_gap(card: dict[str, Any], top1: float | None) -> dict[str, Any] | None:
    """The training run's own validation top-1 (views from the training renderer, in the
    card) beside this evaluation's, and the gap in points: on the independent renderer's
    photos that gap is what the training renderer's figures hide."""
    val = (card.get("metrics") or {}).get("validation") or {}
    own = val.get("val_top1")
    if own is None or top1 is None:
        return None
    return {"val_top1": own, "val_top1_one": val.get("val_top1_one"),
            "val_top1_both": val.get("val_top1_both"),
            "gap_points": round(100 * (own - top1), 1)}


def independent_check(run: str | Path, data: str | Path, limit: int | None = None,
                      batch_size: int = 32) -> dict[str, Any]:
    """Evaluate ``run`` on independent photos (one pass, the card's calibration) and store
    ``metrics.independent`` = {data, n, top1, top5, ece, ece_if_calibrated (the ECE a
    perfectly calibrated model scores on that many photos), own_val_top1, gap_points} in its
    card. A crop model is evaluated behind its own pill finder."""
    backend = load_backend(run)
    images = subset(load_dataset(data), limit)
    transform = crop_transform_for(backend.card, Path(run))
    pred = predict(backend, images, batch_size=batch_size, workers=0, progress=True,
                   transform=transform, desc="independent photos",
                   same_photo=transform is not None)
    result = summarize(pred, backend.labels, calibrated_temperature(backend, pred))
    card = backend.card
    gap = own_renderer_gap(card, result["top1"]) or {}
    check = {"data": str(data), "n": result["n"], "framing": model_framing(card),
             "top1": result["top1"], "top5": result["top5"], "ece": result["ece"],
             "ece_if_calibrated": (result["ece_if_calibrated"] or {}).get("mean"),
             "own_val_top1": gap.get("val_top1"), "gap_points": gap.get("gap_points")}
    update_card(run, metrics={**(card.get("metrics") or {}), "independent": check})
    return check
