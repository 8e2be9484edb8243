"""Rotation test-time augmentation: exact invariance to right-angle turns, wiring, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rxvision.artifact import ArtifactError
from rxvision.cli import main
from rxvision.commands import options
from rxvision.data.transforms import ZOOM_MODES
from rxvision.identify.identifier import Identifier, TorchRunner
from rxvision.identify.tta import (
    TTA_CHOICES,
    RotationTTA,
    calibration_mismatch,
    card_tta,
    with_rotations,
)


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


def test_card_tta_reads_the_calibrated_setting() -> None:
    assert card_tta({}) == 1 and card_tta({"calibration": {"temperature": 1.0}}) == 1
    assert card_tta({"calibration": {"tta": 4}}) == 4
    for bad in (3, 0, True, "4", None):
        with pytest.raises(ArtifactError, match=r"calibration\.tta must be one of"):
            card_tta({"calibration": {"tta": bad}})


def test_calibration_mismatch_only_for_a_calibrated_card_run_otherwise() -> None:
    assert calibration_mismatch({}, 4) is None  # nothing fitted, nothing to mismatch
    assert calibration_mismatch({"calibration": {"temperature": 0.5}}, 1) is None
    assert calibration_mismatch({"calibration": {"temperature": 0.5, "tta": 4}}, 4) is None
    note = calibration_mismatch({"calibration": {"temperature": 0.5, "tta": 4}}, 1)
    assert note is not None and "calibrated with 4" in note and "--tta 1" in note
    note = calibration_mismatch({"calibration": {"temperature": 0.5}}, 2)
    assert note is not None and "calibrated with 1" in note


def test_calibrate_with_tta_makes_it_the_default(sample_artifact: Path, sample_dir: Path,
                                                 tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(sample_artifact, run)
    data = str(sample_dir / "manifest.csv")
    assert Identifier.load(run).tta == 1  # no calibration.tta: one pass
    assert main(["calibrate", "--model", str(run), "--data", data, "--tta", "2",
                 "--no-progress", "--workers", "0"]) == 0
    assert "x 2 rotations" in capsys.readouterr().out
    card = json.loads((run / "card.json").read_text())
    assert card["calibration"]["tta"] == 2
    # The temperature was fitted on averaged logits: it differs from a one-pass fit.
    one_pass = tmp_path / "one"
    shutil.copytree(sample_artifact, one_pass)
    assert main(["calibrate", "--model", str(one_pass), "--data", data, "--no-progress",
                 "--workers", "0"]) == 0
    t_one = json.loads((one_pass / "card.json").read_text())["calibration"]["temperature"]
    assert card["calibration"]["temperature"] != pytest.approx(t_one, abs=1e-6)
    # Every identifying command now defaults to 2 rotations; --tta / tta= override it.
    assert Identifier.load(run).tta == 2
    assert isinstance(Identifier.load(run).runner, RotationTTA)
    assert Identifier.load(run, tta=1).tta == 1
    for extra, expected in (([], 2), (["--tta", "1"], 1)):
        out = tmp_path / f"eval{expected}.json"
        assert main(["evaluate", "--model", str(run), "--data", data, "--limit", "4",
                     "--json", str(out), "--no-progress", "--workers", "0", *extra]) == 0
        assert json.loads(out.read_text())["tta_rotations"] == expected
        # Running with other rotations than the card was fitted for is said, not hidden.
        mismatch_noted = "calibrated with 2 rotation(s) per photo but runs with 1" in \
            capsys.readouterr().err
        assert mismatch_noted == (expected == 1)
    photo = next((sample_dir / "images").iterdir())
    assert main(["predict", "--model", str(run), "--tta", "1", str(photo)]) == 0
    assert "calibrate --tta 1" in capsys.readouterr().err
    # Recalibrating without --tta keeps the card's setting.
    assert main(["calibrate", "--model", str(run), "--data", data, "--no-progress",
                 "--workers", "0"]) == 0
    assert json.loads((run / "card.json").read_text())["calibration"]["tta"] == 2
    # A corrupt value is a clear error, not a silent single pass.
    card = json.loads((run / "card.json").read_text())
    card["calibration"]["tta"] = 3
    (run / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match=r"calibration\.tta must be one of"):
        Identifier.load(run)


def test_rotations_of_a_non_square_model_are_refused_up_front(tiny_model) -> None:
    runner = TorchRunner(tiny_model)
    runner.preprocessing = {"input_size": [64, 96]}
    with pytest.raises(ArtifactError, match=r"square input; this model's is 64x96"):
        with_rotations(runner, 4)
    assert with_rotations(runner, 1) is runner  # one pass needs no square
    with pytest.raises(ArtifactError, match="48x64"):
        with_rotations(TorchRunner(tiny_model), 2, input_size=[48, 64])


def test_cli_choices_are_the_library_choices() -> None:
    """The shared CLI options list their choices without importing torch; they must agree."""
    assert options.TTA_CHOICES == TTA_CHOICES
    assert options.ZOOM_CHOICES == ZOOM_MODES
