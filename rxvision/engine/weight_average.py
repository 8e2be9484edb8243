"""Average the weights of several runs of one model: a "model soup" (Wortsman et al., 2022).

Runs that continue one another (``--init``) or fine-tune from one checkpoint lie in one
basin of the loss, so the mean of their weights is a model too, often one that generalises
a little better than each of them. Session 15: the ninth version and its 8-epoch
continuation scored 0.401 / 0.499 and 0.403 / 0.488 on two independent render sets; their
mean 0.406 / 0.512 (docs/training.md).

The runs must share labels (same order), architecture and tensor shapes; anything else is
an :class:`~rxvision.artifact.ArtifactError`. Floating-point tensors are averaged
(batch-norm running statistics too); integer buffers (batch-norm step counts) keep the
first run's. The result is a new artifact with no calibration: calibrate it before use,
as its temperature and thresholds are not the ingredients'.

Example:
    >>> average_artifacts(["runs/a", "runs/b"], "runs/a+b")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..artifact import ArtifactError, load_artifact, save_artifact
from ..data.transforms import card_zoom
from ..locate.segmenter import carry_segmenter


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of ``states``' floating-point tensors (float32 sums); integer
    tensors are taken from the first. Keys and shapes must agree."""
    if len(states) < 2:
        raise ArtifactError(f"averaging needs at least two models, got {len(states)}")
    first = states[0]
    for i, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys():
            diff = sorted(state.keys() ^ first.keys())[:3]
            raise ArtifactError(f"model {i} has other tensors than model 1 (e.g. {diff}): "
                                "not the same architecture")
        for key, value in state.items():
            if value.shape != first[key].shape:
                raise ArtifactError(f"model {i}: {key} has shape {tuple(value.shape)}, model 1 "
                                    f"{tuple(first[key].shape)}: not the same architecture")
    out = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = torch.zeros_like(value, dtype=torch.float32)
            for state in states:
                total += state[key].float()
            out[key] = (total / len(states)).to(value.dtype)
        else:
            out[key] = value.clone()
    return out


def average_artifacts(runs: Sequence[str | Path], out: str | Path) -> Path:
    """Write the weight average of the model artifacts ``runs`` to ``out`` (atomically).

    The card takes the last run's configuration, labels and label metadata, records its
    ingredients (``averaged_from``: path and weights hash of each) and carries no
    calibration or metrics. A crop model keeps the last run's pill finder.
    """
    paths = [Path(r) for r in runs]
    arts = [load_artifact(p) for p in paths]
    for path, art in zip(paths[1:], arts[1:], strict=True):
        if art.labels != arts[0].labels:
            raise ArtifactError(f"{path}: its labels differ from {paths[0]}'s (other pills or "
                                "another order); only runs of one label list can be averaged")
        if art.config.architecture != arts[0].config.architecture:
            raise ArtifactError(f"{path}: its architecture differs from {paths[0]}'s")
    mean = average_state_dicts([a.model.state_dict() for a in arts])
    model = arts[-1].model
    model.load_state_dict(mean)
    extra: dict[str, Any] = {"averaged_from": [
        {"run": str(p), "sha256": a.card.get("weights", {}).get("sha256")}
        for p, a in zip(paths, arts, strict=True)]}
    last = arts[-1]
    return save_artifact(out, model, last.config, last.labels, last.label_metadata,
                         extra=extra, zoom=card_zoom(last.preprocessing),
                         parts=lambda staging: carry_segmenter(paths[-1], staging))
