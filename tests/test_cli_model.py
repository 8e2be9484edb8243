"""`rxvision model summary`: the spec's resnet50 numbers, JSON output, clean user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rxvision.cli import main

KEYS = {
    "num_params",
    "trainable_params",
    "feature_channels",
    "feature_strides",
    "num_tokens",
    "output_shape",
    "attention_shape",
}


def _summary(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["model", "summary", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_json_for_spec_config(
    capsys: pytest.CaptureFixture[str], spec_config_path: Path, no_hub_downloads: list[str]
) -> None:
    code, out, _ = _summary(capsys, "--config", str(spec_config_path), "--json")
    assert code == 0
    info = json.loads(out)
    assert set(info) >= KEYS
    assert info["backbone"] == "resnet50"
    assert info["feature_channels"] == [512, 1024, 2048]
    assert info["feature_strides"] == [8, 16, 32]
    assert info["num_tokens"] == 49
    assert info["output_shape"] == [1, 1000]
    assert info["attention_shape"] == [1, 8, 49, 49]
    assert abs(info["num_params"] - 27e6) / 27e6 < 0.10
    assert 0 < info["trainable_params"] < info["num_params"]  # freeze_layers: true
    assert no_hub_downloads == []  # random init unless --pretrained is given


def test_summary_overrides_and_text_output(
    capsys: pytest.CaptureFixture[str], spec_config_path: Path
) -> None:
    args = [
        "--config",
        str(spec_config_path),
        "--set",
        "architecture.backbone.name=resnet18",
        "--set",
        "training.input_size=[96,96]",
        "--set",
        "training.num_classes=20",
    ]
    code, out, _ = _summary(capsys, *args, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["output_shape"] == [1, 20]
    assert info["attention_shape"] == [1, 8, 9, 9]
    assert info["feature_channels"] == [128, 256, 512]
    code, out, _ = _summary(capsys, *args)
    assert code == 0
    assert "num_params" in out and "attention_shape" in out


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("training.num_clases=20", "training.num_clases"),
        ("training.num_classes=abc", "training.num_classes"),
        ("architecture.attention.num_heads=7", "architecture.attention.num_heads"),
    ],
)
def test_bad_override_exits_2_naming_the_key(
    capsys: pytest.CaptureFixture[str], spec_config_path: Path, override: str, key: str
) -> None:
    code, out, err = _summary(capsys, "--config", str(spec_config_path), "--set", override)
    assert code == 2
    assert key in err
    assert "Traceback" not in err and out == ""


def test_missing_config_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _summary(capsys, "--config", str(tmp_path / "none.yaml"))
    assert code == 2 and "not found" in err


def test_module_entry_point(spec_config_path: Path) -> None:
    """`python -m rxvision` works as a subprocess, as the README tells users to run it."""
    repo = spec_config_path.parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "rxvision",
        "model",
        "summary",
        "--config",
        str(spec_config_path),
        "--json",
        "--set",
        "architecture.backbone.name=test_resnet",
        "--set",
        "training.input_size=[64,64]",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert set(info) >= KEYS and info["output_shape"] == [1, 1000]
