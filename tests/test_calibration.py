"""Temperature scaling: recovers a known temperature, improves ECE, stored by the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rxvision.engine.calibration import calibrate, fit_temperature
from rxvision.engine.metrics import ece, softmax


def synthetic(temperature: float, n: int = 4000, c: int = 10, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels are drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(size=(n, c)) * 3.0
    p = softmax(true_logits)
    targets = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return true_logits * temperature, targets  # the model is over-confident by `temperature`


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_recovers_known_temperature(true_t: float) -> None:
    logits, targets = synthetic(true_t)
    assert fit_temperature(logits, targets) == pytest.approx(true_t, rel=0.08)


def test_calibrate_reduces_ece_and_nll() -> None:
    logits, targets = synthetic(3.0)
    fit = calibrate(torch.from_numpy(logits).float(), torch.from_numpy(targets))
    assert set(fit) == {"temperature", "nll_before", "nll_after", "ece_before", "ece_after",
                        "ece_if_calibrated", "n"}
    assert 0 < fit["ece_if_calibrated"] < fit["ece_before"]
    assert fit["n"] == 4000
    assert fit["ece_after"] < fit["ece_before"] / 2
    assert fit["nll_after"] < fit["nll_before"]
    assert fit["ece_after"] == pytest.approx(ece(softmax(logits, fit["temperature"]), targets))


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="zero samples"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="unknown"):
        fit_temperature(np.zeros((2, 3)), np.array([0, -1]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0]]), np.array([0]))


def test_calibrate_command_writes_card(sample_artifact: Path, sample_dir: Path,
                                       copy_artifact) -> None:
    from rxvision.cli import main

    model = copy_artifact(sample_artifact)
    before = json.loads((model / "card.json").read_text())
    rc = main(["calibrate", "--model", str(model), "--data", str(sample_dir / "manifest.csv"),
               "--workers", "0", "--batch-size", "8", "--no-progress"])
    assert rc == 0
    card = json.loads((model / "card.json").read_text())
    cal = card["calibration"]
    assert {"temperature", "nll_before", "nll_after", "ece_before", "ece_after", "fitted_on",
            "n"} <= set(cal)
    assert cal["n"] == 24 and cal["fitted_on"].endswith("manifest.csv")
    assert 0.05 <= cal["temperature"] <= 20
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9
    assert card["weights"] == before["weights"]  # only the card changes

