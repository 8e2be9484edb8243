"""Shared fixtures: tiny configs, models and artifacts, and the paths of the test data.

Everything here is CPU-only, random-weight and small (resnet18 at 64 px builds and runs in
well under a second), so contract tests stay in seconds. Session-scoped objects are shared
between tests: never modify them in place (copy the artifact directory first).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from rxvision.artifact import save_artifact
from rxvision.config import Config, config_from_dict
from rxvision.models import RxVisionModel, build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_CONFIG = REPO_ROOT / "configs" / "model.yaml"
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
SAMPLE_MANIFEST = SAMPLE_DIR / "manifest.csv"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "c3pi-1k"

TINY_BACKBONE = "resnet18"
TINY_SIZE = 64


def make_config(
    backbone: str = TINY_BACKBONE,
    input_size: int = TINY_SIZE,
    num_classes: int = 4,
    freeze_layers: bool = False,
    overrides: list[str] | None = None,
    **sections: dict[str, Any],
) -> Config:
    """A small, random-init config; ``sections`` merge into ``architecture``.

    Example:
        >>> make_config("efficientnet_lite0", 96, fpn={"out_channels": 64})
    """
    arch: dict[str, Any] = {
        "backbone": {"name": backbone, "pretrained": False, "freeze_layers": freeze_layers},
        **sections,
    }
    data = {
        "architecture": arch,
        "training": {"input_size": [input_size, input_size], "num_classes": num_classes},
    }
    return config_from_dict(data, overrides)


def make_model(seed: int = 0, **kwargs: Any) -> RxVisionModel:
    """``build_model(make_config(**kwargs))`` with a fixed seed, in eval mode."""
    torch.manual_seed(seed)
    return build_model(make_config(**kwargs)).eval()


@pytest.fixture(scope="session")
def spec_config_path() -> Path:
    """configs/model.yaml: the specification's ResNet50 recipe."""
    return SPEC_CONFIG


@pytest.fixture(scope="session")
def config_factory() -> Callable[..., Config]:
    """:func:`make_config` as a fixture (tests do not import from conftest)."""
    return make_config


@pytest.fixture(scope="session")
def model_factory() -> Callable[..., RxVisionModel]:
    """:func:`make_model` as a fixture: a seeded, eval-mode model for ``make_config(**kw)``."""
    return make_model


@pytest.fixture
def tiny_config() -> Config:
    """resnet18, 64x64, 4 classes, random init, nothing frozen."""
    return make_config()


@pytest.fixture
def tiny_model(tiny_config: Config) -> RxVisionModel:
    """A fresh eval-mode model for ``tiny_config`` (safe to modify)."""
    torch.manual_seed(0)
    return build_model(tiny_config).eval()


@pytest.fixture
def artifact_factory(tmp_path: Path) -> Callable[..., Path]:
    """Save a random-weight artifact: ``factory(name="m", labels=None, **save_kwargs)``.

    ``labels`` defaults to four synthetic names; extra keyword arguments go to
    :func:`rxvision.artifact.save_artifact` (``label_metadata``, ``metrics``, ``half`` ...).
    """

    def factory(
        name: str = "m",
        labels: list[str] | None = None,
        config: Config | None = None,
        model: RxVisionModel | None = None,
        **save_kwargs: Any,
    ) -> Path:
        labels = labels or [f"class{i}" for i in range(4)]
        cfg = config or make_config(num_classes=len(labels))
        if model is None:
            torch.manual_seed(0)
            model = build_model(cfg, num_classes=len(labels))
        return save_artifact(tmp_path / name, model, cfg, labels, **save_kwargs)

    return factory


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """data/sample: 24 real C3PI pill photos with manifest.csv (image,label,ndc,source_id)."""
    if not SAMPLE_MANIFEST.is_file():
        pytest.fail(f"built-in sample missing: {SAMPLE_MANIFEST} (it is part of the repository)")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_artifact(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """A random-weight resnet18 (64 px) artifact over the sample's labels and NDC metadata.

    Shared by the whole session: read it, never write into it (copy with ``copy_artifact``).
    """
    from rxvision.data import load_dataset

    images = load_dataset(sample_dir / "manifest.csv")
    cfg = make_config(num_classes=images.num_classes)
    torch.manual_seed(0)
    model = build_model(cfg)
    out = tmp_path_factory.mktemp("artifacts") / "sample"
    return save_artifact(out, model, cfg, images.labels, label_metadata=images.label_metadata)


@pytest.fixture(scope="session")
def two_view_manifest(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """Two photos of each sample pill: the original and a copy turned 90 degrees.

    For what needs several views per class (per-class logit centres). Columns as the
    sample's manifest; image paths are absolute.
    """
    out = tmp_path_factory.mktemp("two_views")
    with open(sample_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            src = sample_dir / row["image"]
            turned = out / f"{src.stem}_r90.png"
            with Image.open(src) as im:
                im.convert("RGB").rotate(90, expand=True).save(turned)
            writer.writerow({**row, "image": str(src)})
            writer.writerow({**row, "image": str(turned)})
    return manifest


@pytest.fixture
def copy_artifact(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy an artifact directory into this test's tmp_path so it can be modified."""

    def copy(src: Path) -> Path:
        dst = tmp_path / f"copy-{src.name}"
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data/c3pi-1k (1000 pill photos); skips the test when it is not there."""
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.skip(f"shared dataset not found at {SHARED_DATA} (needs the shared data checkout)")
    return SHARED_DATA


@pytest.fixture
def no_hub_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make any ``timm.create_model(..., pretrained=True)`` call fail as it would offline.

    Returns the list of model names that tried to download, for assertions.
    """
    import timm

    real = timm.create_model
    attempts: list[str] = []

    def guarded(name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        if pretrained:
            attempts.append(name)
            raise RuntimeError("offline: tests never download weights")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", guarded)
    return attempts
