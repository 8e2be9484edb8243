"""Identifier(head_precision=...): half-precision rows for a cosine head, clear errors else."""

from __future__ import annotations

from pathlib import Path

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
