"""Identifier(head_precision=...): half-precision rows for a cosine head, clear errors else."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch

from rxvision.identify.identifier import Identifier, IdentifierError


def test_half_precision_rows_give_the_same_answer(sample_dir: Path) -> None:
    photo = sample_dir / "images" / "00093-0900-01.jpg"
    full = Identifier.load(None)  # the bundled model: a cosine head
    half = Identifier.load(None, head_precision="fp16")
    assert half.model.get_classifier().inference_dtype == torch.float16
    assert full.model.get_classifier().inference_dtype == torch.float32
    x = full.preprocess(photo)[None]
    (a, _), (b, _) = full.forward(x), half.forward(x)
    assert np.abs(a - b).max() < 0.02  # logits at scale ~20: float16 rows, float32 sums
    assert int(a.argmax()) == int(b.argmax())


def test_head_precision_is_checked(sample_artifact: Path) -> None:
    with pytest.raises(IdentifierError, match="head precision must be one of"):
        Identifier.load(sample_artifact, head_precision="int4")
    with pytest.raises(IdentifierError, match="cosine final layer"):
        Identifier.load(sample_artifact, head_precision="fp16")  # its head is nn.Linear
    assert Identifier.load(sample_artifact, head_precision="fp32").num_classes > 0


def test_the_refusal_names_its_own_cause(tiny_model: torch.nn.Module) -> None:
    """An exported backend (no torch model) and a linear final layer are refused for
    different reasons, and each message says its own."""
    from rxvision.artifact import head_precision_problem

    exported = head_precision_problem(None, "fp16")
    assert exported is not None and "torch backend" in exported and "cosine" not in exported
    problem = head_precision_problem(tiny_model, "fp16")  # its final layer is nn.Linear
    assert problem is not None and "cosine final layer" in problem
    assert "torch backend" not in problem
    assert head_precision_problem(None, "fp32") is None


def test_cli_and_service_offer_the_same_precisions(sample_artifact: Path, sample_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from rxvision.cli import main
    from rxvision.commands.options import HEAD_PRECISION_CHOICES
    from rxvision.identify.identifier import HEAD_PRECISIONS
    from rxvision.serve import ServeSettings

    assert tuple(HEAD_PRECISIONS) == HEAD_PRECISION_CHOICES
    choices, none = get_args(ServeSettings.model_fields["head_precision"].annotation)
    assert get_args(choices) == HEAD_PRECISION_CHOICES and none is type(None)
    assert ServeSettings().head_precision is None  # the card's setting, else fp32
    assert ServeSettings(head_precision="fp16").head_precision == "fp16"
    with pytest.raises(ValueError, match="head_precision"):
        ServeSettings(head_precision="int4")
    photo = str(sample_dir / "images" / "00093-0900-01.jpg")
    # The sample artifact's final layer is nn.Linear: fp16 rows are refused in one line.
    code = main(["predict", "--model", str(sample_artifact), "--head-precision", "fp16", photo])
    assert code == 2 and "cosine final layer" in capsys.readouterr().err
    assert main(["predict", "--model", str(sample_artifact), "--head-precision", "fp32",
                 photo]) == 0
