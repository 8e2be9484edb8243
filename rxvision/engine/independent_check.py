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

import shutil
from pathlib import Path
from typing import Any

from ..artifact import read_card, update_card
from ..data import load_dataset
from ..identify.backends import load_backend
from ..identify.pipeline import SEGMENTER_DIR, crop_transform_for, model_framing
from .evaluate import predict, subset, summarize


def attach_segmenter(run: str | Path, segmenter: str | Path) -> Path:
    """Copy a pill finder into a crop model's run as its own ``segmenter/`` (replacing
    one already there), so the run predicts, serves and evaluates as a whole."""
    source, target = Path(segmenter), Path(run) / SEGMENTER_DIR
    if not (source / "card.json").is_file():
        raise FileNotFoundError(f"--segmenter {source}: no pill finder there (no card.json)")
    staging = target.with_name(f".{SEGMENTER_DIR}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def independent_check(run: str | Path, data: str | Path, limit: int | None = None,
                      batch_size: int = 32) -> dict[str, Any]:
    """Evaluate ``run`` on independent photos (one pass, the card's calibration) and store
    ``metrics.independent`` = {data, n, top1, top5, ece, own_val_top1, gap_points} in its
    card. A crop model is evaluated behind its own pill finder."""
    backend = load_backend(run)
    images = subset(load_dataset(data), limit)
    transform = crop_transform_for(backend.card, Path(run))
    pred = predict(backend, images, batch_size=batch_size, workers=0, progress=True,
                   transform=transform, desc="independent photos")
    result = summarize(pred, backend.labels, backend.temperature)
    card = read_card(run)
    own = ((card.get("metrics") or {}).get("validation") or {}).get("val_top1")
    check = {"data": str(data), "n": result["n"], "framing": model_framing(card),
             "top1": result["top1"], "top5": result["top5"], "ece": result["ece"],
             "own_val_top1": own,
             "gap_points": (round(100 * (own - result["top1"]), 1)
                            if own is not None and result["top1"] is not None else None)}
    update_card(run, metrics={**(card.get("metrics") or {}), "independent": check})
    return check
