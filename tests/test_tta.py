"""Rotation test-time augmentation: exact invariance to right-angle turns, wiring, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rxvision.cli import main
from rxvision.inference.identifier import Identifier, TorchRunner
from rxvision.inference.tta import RotationTTA


def test_four_rotations_make_outputs_rotation_invariant(tiny_model) -> None:
    runner = TorchRunner(tiny_model)
    tta = RotationTTA(runner, rotations=4)
    x = torch.randn(3, 3, 64, 64)
    logits, emb = tta(x)
    turned_logits, turned_emb = tta(torch.rot90(x, 1, dims=(2, 3)))
    assert logits.shape == (3, 4) and emb.shape == (3, 512)
    torch.testing.assert_close(turned_logits, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(turned_emb, emb, atol=1e-4, rtol=1e-4)
    # Without TTA a quarter turn changes the logits (the check above is not vacuous).
    plain, _ = runner(x)
    assert not torch.allclose(runner(torch.rot90(x, 1, dims=(2, 3)))[0], plain, atol=1e-4)
    # One "rotation" is the model itself; the mean over 4 equals averaging by hand.
    torch.testing.assert_close(RotationTTA(runner, 1)(x)[0], plain)
    by_hand = torch.stack([runner(torch.rot90(x, k, dims=(2, 3)))[0] for k in range(4)]).mean(0)
    torch.testing.assert_close(logits, by_hand, atol=1e-5, rtol=1e-5)


def test_bad_settings_are_refused(tiny_model) -> None:
    with pytest.raises(ValueError, match="rotations"):
        RotationTTA(TorchRunner(tiny_model), rotations=3)
    with pytest.raises(ValueError, match="square"):
        RotationTTA(TorchRunner(tiny_model), rotations=2)(torch.randn(1, 3, 64, 96))


def test_identifier_and_evaluate_accept_tta(sample_artifact: Path, sample_dir: Path,
                                           tmp_path: Path, capsys) -> None:
    photo = next((sample_dir / "images").iterdir())
    plain = Identifier.load(sample_artifact).identify(photo)[0]
    turned = Identifier.load(sample_artifact, tta=4).identify(photo)[0]
    assert len(turned.candidates) == len(plain.candidates)
    # The rotations were applied: the averaged answer differs from the single pass.
    assert [(c.label, round(c.probability, 6)) for c in turned.candidates] != \
        [(c.label, round(c.probability, 6)) for c in plain.candidates]
    out = tmp_path / "m.json"
    code = main(["evaluate", "--model", str(sample_artifact), "--data",
                 str(sample_dir / "manifest.csv"), "--tta", "2", "--limit", "4",
                 "--json", str(out), "--no-progress", "--workers", "0"])
    assert code == 0
    assert json.loads(out.read_text())["tta_rotations"] == 2
    capsys.readouterr()  # drop evaluate's summary
    assert main(["predict", "--model", str(sample_artifact), "--tta", "4", "--json",
                 str(photo)]) == 0
    assert json.loads(capsys.readouterr().out)
