"""Artifact contract: exact round trip from the card alone; bad files refused; writes atomic."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rxvision import artifact as artifact_module
from rxvision.artifact import (
    CARD_NAME,
    WEIGHTS_NAME,
    ArtifactError,
    load_artifact,
    load_state_dict_safely,
    read_card,
    save_artifact,
    sha256_file,
    update_card,
)
from rxvision.data import load_dataset, load_image
from rxvision.io_utils import atomic_write
from rxvision.locate import EvalTransform
from rxvision.models import build_model


def _x(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _edit_card(directory: Path, edit: Callable[[dict], None]) -> None:
    card = json.loads((directory / CARD_NAME).read_text())
    edit(card)
    (directory / CARD_NAME).write_text(json.dumps(card))


# --- round trip ---------------------------------------------------------------------------
def test_round_trip_gives_identical_logits(tmp_path: Path, config_factory: Callable) -> None:
    cfg = config_factory(num_classes=3)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    model(_x())  # move BN running stats off their defaults so buffers are really tested
    model.eval()
    meta = [{"ndc": f"0000{i}", "name": f"drug {i}"} for i in range(3)]
    save_artifact(
        tmp_path / "m", model, cfg, ["a", "b", "c"], label_metadata=meta, metrics={"top1": 0.5}
    )
    art = load_artifact(tmp_path / "m")
    assert not art.model.training
    with torch.no_grad():
        assert torch.equal(art.model(_x()), model(_x()))
    assert art.labels == ["a", "b", "c"]
    assert art.label_metadata == meta
    assert art.config == cfg
    assert art.preprocessing == {**model.data_config([64, 64]), "zoom": "auto"}
    assert art.card["metrics"] == {"top1": 0.5}
    assert art.temperature == 1.0


def test_round_trip_on_sample_photos(sample_artifact: Path, sample_dir: Path) -> None:
    """Preprocessing rebuilt from the card gives the same logits as the saved model."""
    art = load_artifact(sample_artifact)
    images = load_dataset(sample_dir / "manifest.csv")
    assert art.labels == images.labels
    assert art.label_metadata[0]["ndc"] == images.label_metadata[0]["ndc"]
    transform = EvalTransform(art.preprocessing)
    batch = torch.stack([transform(load_image(s.path)) for s in images.samples[:2]])
    assert batch.shape == (2, 3, 64, 64)
    again = load_artifact(sample_artifact)
    with torch.no_grad():
        assert torch.equal(art.model(batch), again.model(batch))


def test_card_is_self_describing(sample_artifact: Path) -> None:
    card = read_card(sample_artifact)
    assert card["weights"]["sha256"] == sha256_file(sample_artifact / WEIGHTS_NAME)
    assert card["weights"]["dtype"] == "float32"
    assert set(card["versions"]) >= {"python", "torch", "timm", "torchvision"}
    assert card["config"]["architecture"]["backbone"]["name"] == "resnet18"
    assert card["config"]["training"]["num_classes"] == len(card["labels"])
    assert set(card["preprocessing"]) == {"input_size", "mean", "std", "interpolation", "zoom"}
    assert card["parameters"]["num_params"] >= card["parameters"]["trainable_params"] > 0


def test_fp16_save_is_smaller_and_close(tmp_path: Path, config_factory: Callable) -> None:
    cfg = config_factory()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    full = save_artifact(tmp_path / "fp32", model, cfg, list("abcd"))
    half = save_artifact(tmp_path / "fp16", model, cfg, list("abcd"), half=True)
    assert (half / WEIGHTS_NAME).stat().st_size < 0.6 * (full / WEIGHTS_NAME).stat().st_size
    art = load_artifact(half)
    assert read_card(half)["weights"]["dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in art.model.parameters())
    with torch.no_grad():
        ref, got = model(_x()), art.model(_x())
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


def test_unwraps_data_parallel(tmp_path: Path, tiny_model: torch.nn.Module, tiny_config) -> None:
    wrapped = torch.nn.DataParallel(tiny_model)  # has .module, like DDP
    save_artifact(tmp_path / "m", wrapped, tiny_config, list("abcd"))
    art = load_artifact(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(art.model(_x()), tiny_model(_x()))


def test_update_card_and_temperature(artifact_factory: Callable) -> None:
    path = artifact_factory()
    update_card(path, calibration={"temperature": 1.7}, metrics={"ece": 0.01})
    art = load_artifact(path)
    assert art.temperature == pytest.approx(1.7)
    assert art.card["metrics"] == {"ece": 0.01}
    assert _temp_files(path) == []


# --- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("zipfile", [True, False])
def test_refuses_pickled_weights(artifact_factory: Callable, zipfile: bool) -> None:
    path = artifact_factory()
    weights = path / WEIGHTS_NAME
    state = load_artifact(path).model.state_dict()
    torch.save(state, weights, _use_new_zipfile_serialization=zipfile)
    _edit_card(path, lambda c: c["weights"].update(sha256=sha256_file(weights)))
    with pytest.raises(ArtifactError, match="pickle"):
        load_artifact(path)


def test_refuses_plain_pickle_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / WEIGHTS_NAME
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(ArtifactError, match="pickle"):
        load_state_dict_safely(path, None)


def test_refuses_truncated_weights(artifact_factory: Callable) -> None:
    path = artifact_factory()
    weights = path / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_artifact(path)
    # Even without a recorded hash the safetensors parser refuses it.
    with pytest.raises(ArtifactError, match="not a valid safetensors"):
        load_state_dict_safely(weights, None)
    weights.write_bytes(data[:5])
    with pytest.raises(ArtifactError, match="not a valid safetensors"):
        load_state_dict_safely(weights, None)


def test_refuses_hash_mismatch(artifact_factory: Callable) -> None:
    path = artifact_factory()
    weights = path / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one byte inside the tensor data: still parses, wrong values
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256 does not match"):
        load_artifact(path)


def test_accepts_safetensors_whose_header_length_starts_with_0x80(tmp_path: Path) -> None:
    """Regression: a valid file whose u64 header length has low byte 0x80 is not a pickle."""
    path = tmp_path / WEIGHTS_NAME
    for n in range(1, 300):
        save_file({"w" * n: torch.zeros(2)}, str(path))
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("could not produce a header length with low byte 0x80")
    assert list(load_state_dict_safely(path, sha256_file(path))) == ["w" * n]


def test_refuses_missing_card_and_weights(artifact_factory: Callable, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a directory"):
        load_artifact(tmp_path / "nowhere")
    path = artifact_factory("a")
    (path / CARD_NAME).unlink()
    with pytest.raises(ArtifactError, match=CARD_NAME):
        load_artifact(path)
    path = artifact_factory("b")
    (path / WEIGHTS_NAME).unlink()
    with pytest.raises(ArtifactError, match="weights file missing"):
        load_artifact(path)


def test_refuses_bad_cards(artifact_factory: Callable) -> None:
    path = artifact_factory()
    good = (path / CARD_NAME).read_text()
    (path / CARD_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(path)
    (path / CARD_NAME).write_text(good)
    _edit_card(path, lambda c: c.update(format="other/9"))
    with pytest.raises(ArtifactError, match="unknown card format"):
        load_artifact(path)
    (path / CARD_NAME).write_text(good)
    _edit_card(path, lambda c: c["config"]["architecture"].update(bogus=1))
    with pytest.raises(ArtifactError, match=r"architecture\.bogus"):
        load_artifact(path)
    (path / CARD_NAME).write_text(good)
    _edit_card(path, lambda c: c["config"]["architecture"]["backbone"].update(name="resnet34"))
    with pytest.raises(ArtifactError, match="do not match the card's architecture"):
        load_artifact(path)


def test_refuses_label_count_mismatch(artifact_factory: Callable, tiny_model, tiny_config) -> None:
    path = artifact_factory()
    _edit_card(path, lambda c: c.update(labels=c["labels"][:-1]))
    with pytest.raises(ArtifactError, match="3 labels but num_classes is 4"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="labels for a model with 4 classes"):
        save_artifact(path.parent / "x", tiny_model, tiny_config, ["only", "two"])


# --- atomic writes ------------------------------------------------------------------------
def test_save_leaves_no_temp_files(artifact_factory: Callable) -> None:
    path = artifact_factory()
    assert sorted(p.name for p in path.iterdir()) == [CARD_NAME, WEIGHTS_NAME]


def test_failed_write_keeps_old_artifact(
    artifact_factory: Callable, tiny_model, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = artifact_factory()
    old_weights = (path / WEIGHTS_NAME).read_bytes()
    old_card = (path / CARD_NAME).read_text()

    def half_written(state: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(artifact_module, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_artifact(path, tiny_model, tiny_config, list("wxyz"))
    assert (path / WEIGHTS_NAME).read_bytes() == old_weights
    assert (path / CARD_NAME).read_text() == old_card
    assert _temp_files(path) == []
    assert load_artifact(path).labels == [f"class{i}" for i in range(4)]


@pytest.mark.parametrize(("beside", "exchange"), [(False, True), (True, True), (True, False)],
                         ids=["own folder", "training run", "training run, no renameat2"])
def test_parts_are_published_with_the_model_or_nothing_is(
    tmp_path: Path, tiny_model, tiny_config, beside: bool, exchange: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``parts`` (a model's pill finder, its library) are built in the staging folder,
    where the model already loads, and go in with it; if they fail, nothing does. A
    finder folder already there is replaced whole, also where the atomic exchange is
    unavailable (two renames instead)."""
    if not exchange:
        from rxvision import io_utils

        monkeypatch.setattr(io_utils, "_exchange", lambda a, b: False)
    out = tmp_path / "model"
    if beside:  # a folder holding other files: a training run's log, an older finder
        (out / "segmenter").mkdir(parents=True)
        (out / "run.log").write_text("epoch 1")
        (out / "segmenter" / "old.txt").write_text("old")

    def parts(staging: Path) -> None:
        assert load_artifact(staging).labels == list("wxyz")  # the model loads there
        (staging / "segmenter").mkdir()
        (staging / "segmenter" / CARD_NAME).write_text("{}")
        (staging / "library.sqlite").write_bytes(b"db")

    def broken(staging: Path) -> None:
        (staging / "library.sqlite").write_bytes(b"half")
        raise OSError("disk full")

    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(OSError, match="disk full"):
        save_artifact(out, tiny_model, tiny_config, list("wxyz"), parts=broken)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not list(tmp_path.glob(".*"))  # no staging folder left either
    save_artifact(out, tiny_model, tiny_config, list("wxyz"), parts=parts)
    assert load_artifact(out).labels == list("wxyz")
    assert (out / "library.sqlite").read_bytes() == b"db"
    assert sorted(p.name for p in (out / "segmenter").iterdir()) == [CARD_NAME]  # replaced
    assert (out / "run.log").exists() == beside
    assert not list(tmp_path.glob(".*"))


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")

    def boom(p: Path) -> None:
        p.write_text("new but incomplete")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert _temp_files(tmp_path) == []
    atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_gives_plain_file_permissions(tmp_path: Path) -> None:
    import os
    import stat

    target = tmp_path / "card.json"
    atomic_write(target, lambda p: p.write_text("{}"))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
