"""Attention, Grad-CAM and occlusion explanations: heat maps, overlays, PNGs, CLI and API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rxvision.cli import main
from rxvision.data import load_dataset, load_image
from rxvision.identify.explain import (
    attention_heatmap,
    explain_image,
    gradcam_heatmap,
    occlusion_heatmap,
    overlay,
    write_overlays,
)
from rxvision.identify.identifier import Identifier
from rxvision.locate import EvalTransform


@pytest.fixture(scope="module")
def photo(sample_dir: Path) -> Path:
    return load_dataset(sample_dir / "manifest.csv").samples[0].path


def test_heatmaps_live_on_the_right_grids(model_factory) -> None:
    model = model_factory(freeze_layers=True)  # Grad-CAM must work with a frozen stem
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_features(x)
    att = attention_heatmap(model, x)
    assert att.shape == tuple(maps[-1].shape[-2:])  # the P5 grid (2 x 2 at 64 px)
    cam, index = gradcam_heatmap(model, x)
    with torch.no_grad():
        last_stage = model.backbone(x)[-1]
        assert index == int(model(x)[0].argmax())
    assert cam.shape == tuple(last_stage.shape[-2:])
    for heat in (att, cam):
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


class TopLeftModel(torch.nn.Module):
    """Two classes; the logit gap is the mean of the top-left 16 x 16 corner only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, :16, :16].mean(dim=(1, 2, 3))
        return torch.stack([4 * corner, torch.zeros_like(corner)], dim=1)


def test_occlusion_marks_only_the_region_the_answer_depends_on() -> None:
    x = torch.ones(1, 3, 64, 64)  # class 0 wins with p = sigmoid(4)
    heat, index = occlusion_heatmap(TopLeftModel(), x, patch=16, stride=8)
    assert index == 0 and heat.shape == (64, 64)
    # Hiding the whole corner ties the logits: p falls from sigmoid(4) to 0.5, 49% of it.
    assert heat[:8, :8].min() > 0.45 and heat.max() == heat[:8, :8].max()
    assert heat[32:, :].max() == 0.0 and heat[:, 32:].max() == 0.0  # the rest costs nothing
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    # Explaining the losing class: hiding the corner only helps it, so nothing is marked.
    heat_other, index_other = occlusion_heatmap(TopLeftModel(), x, class_index=1, patch=16)
    assert index_other == 1 and heat_other.max() == 0.0


def test_occlusion_covers_the_far_edges_and_checks_the_patch() -> None:
    class BottomRight(TopLeftModel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.flip(-1, -2))

    heat, _ = occlusion_heatmap(BottomRight(), torch.ones(1, 3, 50, 50), patch=16, stride=12)
    assert heat[-8:, -8:].min() > 0.45  # 50 is not 16 + k * 12: a last patch sits flush
    with pytest.raises(ValueError, match="occlusion patch"):
        occlusion_heatmap(TopLeftModel(), torch.ones(1, 3, 20, 20), patch=21)


def test_overlay_blends_on_the_image() -> None:
    img = Image.new("RGB", (40, 30), (128, 128, 128))
    heat = np.zeros((2, 2), np.float32)
    heat[0, 0] = 1.0
    out = np.asarray(overlay(img, heat)).astype(int)
    assert out.shape == (30, 40, 3)
    assert not np.array_equal(out[0, 0], out[-1, -1])  # hot corner differs from cold corner


def test_explain_api_and_png_files(sample_artifact: Path, photo: Path, tmp_path: Path) -> None:
    ident = Identifier.load(sample_artifact)
    overlays = ident.explain(photo)
    size = tuple(ident.preprocessing["input_size"])  # (H, W)
    assert set(overlays) == {"attention", "gradcam", "occlusion"}
    assert all(im.mode == "RGB" and im.size == (size[1], size[0]) for im in overlays.values())
    paths = write_overlays(tmp_path / "ov", "pill", overlays)
    assert sorted(p.name for p in paths) == [
        "pill_attention.png", "pill_gradcam.png", "pill_occlusion.png"]
    again = explain_image(ident.model, EvalTransform(ident.preprocessing), load_image(photo))
    for kind in overlays:
        assert np.array_equal(np.asarray(again[kind]), np.asarray(overlays[kind]))


def test_predict_explain_writes_three_pngs_per_image(
    sample_artifact: Path, photo: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "explain"
    assert main(["predict", "--model", str(sample_artifact), "--explain", str(out),
                 str(photo)]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"{photo.stem}_{kind}.png"
                                       for kind in ("attention", "gradcam", "occlusion")]
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.size == (64, 64)
    capsys.readouterr()
    assert main(["predict", "--model", str(sample_artifact), "--backend", "onnx",
                 "--explain", str(out), str(photo)]) == 2
    assert "--explain needs the torch backend" in capsys.readouterr().err
