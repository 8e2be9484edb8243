"""Weight averaging ("model soup"): the mean of runs of one model, checked for sameness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_config

from rxvision.artifact import ArtifactError, load_artifact, save_artifact
from rxvision.engine.weight_average import average_artifacts, average_state_dicts
from rxvision.models import build_model


def _shifted(src: Path, out: Path, delta: float) -> Path:
    """A copy of the artifact ``src`` with every float weight moved by ``delta``."""
    art = load_artifact(src)
    with torch.no_grad():
        for p in art.model.parameters():
            p.add_(delta)
    return save_artifact(out, art.model, art.config, art.labels, art.label_metadata)


def test_the_mean_of_two_runs_is_their_midpoint(sample_artifact: Path, tmp_path: Path) -> None:
    up = _shifted(sample_artifact, tmp_path / "up", 0.5)
    down = _shifted(sample_artifact, tmp_path / "down", -0.5)
    out = average_artifacts([up, down], tmp_path / "mean")
    mean, base = load_artifact(out).model, load_artifact(sample_artifact).model
    for (name, a), b in zip(mean.named_parameters(), base.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    card = json.loads((out / "card.json").read_text())
    assert [d["run"] for d in card["averaged_from"]] == [str(up), str(down)]
    assert all(len(d["sha256"]) == 64 for d in card["averaged_from"])
    assert card["calibration"] == {"temperature": 1.0}  # to be calibrated, not inherited
    assert card["labels"] == load_artifact(sample_artifact).labels


def test_other_labels_or_shapes_are_refused(sample_artifact: Path, tmp_path: Path) -> None:
    art = load_artifact(sample_artifact)
    turned = save_artifact(tmp_path / "turned", art.model, art.config, art.labels[::-1],
                           art.label_metadata[::-1])
    with pytest.raises(ArtifactError, match="labels differ"):
        average_artifacts([sample_artifact, turned], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written
    small = build_model(make_config(num_classes=3)).state_dict()
    with pytest.raises(ArtifactError, match="not the same architecture"):
        average_state_dicts([art.model.state_dict(), small])
    with pytest.raises(ArtifactError, match="at least two"):
        average_state_dicts([small])


def test_integer_buffers_are_kept_not_averaged() -> None:
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(10)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(20)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 10


def test_the_pill_finder_comes_along_or_no_mean_is_written(
    sample_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rxvision.engine import weight_average

    up = _shifted(sample_artifact, tmp_path / "up", 0.5)
    down = _shifted(sample_artifact, tmp_path / "down", -0.5)
    (down / "segmenter").mkdir()
    (down / "segmenter" / "card.json").write_text("{}")  # the last run's finder is kept
    out = average_artifacts([up, down], tmp_path / "mean")
    assert (out / "segmenter" / "card.json").read_text() == "{}"

    def broken(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(weight_average, "carry_segmenter", broken)
    with pytest.raises(OSError, match="disk full"):
        average_artifacts([up, down], tmp_path / "mean2")
    assert not (tmp_path / "mean2").exists()  # no mean without its finder
    assert not list(tmp_path.glob(".mean2*"))
