"""Prototype head: every cosine row rebuilt from reference photos; enrollment follows suit."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rxvision.artifact import ArtifactError, load_artifact, read_card, save_artifact
from rxvision.cli import main
from rxvision.data import DatasetError, load_dataset, load_image
from rxvision.library.embeddings import embed_uint8
from rxvision.library.enroll import enroll_artifact
from rxvision.library.prototype_head import prototype_head_artifact
from rxvision.locate import EvalTransform
from rxvision.models import build_model

ROWS = "classifier.classifier.weight"


def _manifest(path: Path, sample_dir: Path, labels: set[str]) -> Path:
    with open(sample_dir / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] in labels]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "image": str(sample_dir / row["image"])})
    return path


@pytest.fixture(scope="module")
def cosine_base(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                ) -> dict[str, Path]:
    """A random cosine-head model over the sample's first 12 labels, and two manifests."""
    from rxvision.config import config_from_dict

    images = load_dataset(sample_dir / "manifest.csv")
    old, new = images.labels[:12], images.labels[12:]
    root = tmp_path_factory.mktemp("proto")
    cfg = config_from_dict({
        "architecture": {"backbone": {"name": "resnet18", "pretrained": False,
                                      "freeze_layers": False},
                         "classifier": {"type": "cosine"}},
        "training": {"input_size": [64, 64], "num_classes": len(old)}})
    torch.manual_seed(0)
    base = save_artifact(root / "base", build_model(cfg), cfg, old, images.label_metadata[:12],
                         calibration={"temperature": 1.5},
                         extra={"identification": {"abstain_threshold": 0.4}})
    return {"base": base, "old": _manifest(root / "old.csv", sample_dir, set(old)),
            "new": _manifest(root / "new.csv", sample_dir, set(new)),
            "all": sample_dir / "manifest.csv"}


def _embed(run: Path, paths: list[Path]) -> torch.Tensor:
    art = load_artifact(run)
    t = EvalTransform(art.preprocessing)
    return embed_uint8(art.model.eval(), t, torch.stack([t.to_uint8(load_image(p)) for p in paths]))


def test_rows_become_reference_prototypes_and_nothing_else_moves(
    cosine_base: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "proto"
    record = prototype_head_artifact(cosine_base["base"], cosine_base["old"], out, views=0)
    assert record["source"] == "prototypes" and record["references"] == 12
    refs = load_dataset(cosine_base["old"])
    # With no synthetic views a row is the reference photo's own normalised embedding.
    art = load_artifact(out)
    paths = [s.path for s in refs.samples]
    emb = _embed(out, paths)
    rows = art.model.get_classifier().weight.detach()
    order = [art.labels.index(s.label) for s in refs.samples]
    torch.testing.assert_close(F.normalize(rows[order], dim=1), F.normalize(emb, dim=1))
    # So every reference photo is identified as itself, with cosine 1.
    cos = art.model.get_classifier().cosine(emb)
    assert cos.argmax(1).tolist() == order
    assert torch.allclose(cos.max(1).values, torch.ones(len(paths)), atol=1e-4)
    before, after = (load_file(str(p / "model.safetensors")) for p in (cosine_base["base"], out))
    for key, tensor in before.items():
        if key != ROWS:
            assert torch.equal(after[key], tensor), key
    assert not torch.equal(after[ROWS], before[ROWS])
    card = read_card(out)
    assert card["calibration"] == {"temperature": 1.0}  # fitted to the old rows: dropped
    assert "identification" not in card
    assert card["classifier_rows"]["views_per_reference"] == 0


def test_enrollment_into_a_prototype_head_uses_the_same_rule(
    cosine_base: dict[str, Path], tmp_path: Path
) -> None:
    head = prototype_head_artifact(cosine_base["base"], cosine_base["old"], tmp_path / "p",
                                   views=2, seed=3)
    assert head["views_per_reference"] == 2
    result = enroll_artifact(tmp_path / "p", cosine_base["new"], tmp_path / "p+new", views=2,
                             seed=3)
    assert result.imprint == "prototype"
    # A head rebuilt over all 24 labels at once gives the new pills the same directions
    # (seeds are per label position, so compare with views=0, which has no randomness).
    prototype_head_artifact(cosine_base["base"], cosine_base["old"], tmp_path / "p0", views=0)
    enroll_artifact(tmp_path / "p0", cosine_base["new"], tmp_path / "p0+new", views=0)
    all_labels = load_dataset(cosine_base["all"])
    grown = load_artifact(tmp_path / "p0+new")
    assert sorted(grown.labels) == all_labels.labels
    paths = [s.path for s in all_labels.samples]
    cos = grown.model.get_classifier().cosine(_embed(tmp_path / "p0+new", paths))
    assert [grown.labels[i] for i in cos.argmax(1).tolist()] == [
        s.label for s in all_labels.samples]
    # Old rows untouched by the enrollment.
    old = load_file(str(tmp_path / "p0" / "model.safetensors"))[ROWS]
    assert torch.equal(load_file(str(tmp_path / "p0+new" / "model.safetensors"))[ROWS][:12], old)


def test_label_mismatch_and_linear_heads_are_refused(
    cosine_base: dict[str, Path], sample_artifact: Path, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match=r"exactly the model's labels.*12 are not in the"):
        prototype_head_artifact(cosine_base["base"], cosine_base["all"], tmp_path / "a", views=0)
    with pytest.raises(DatasetError, match=r"12 label\(s\) have no photo"):
        prototype_head_artifact(cosine_base["base"], cosine_base["new"], tmp_path / "b", views=0)
    with pytest.raises(ArtifactError, match="cosine final layer"):
        prototype_head_artifact(sample_artifact, cosine_base["all"], tmp_path / "c", views=0)
    for name in ("a", "b", "c"):
        assert not (tmp_path / name).exists()


def test_cli(cosine_base: dict[str, Path], tmp_path: Path,
             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["prototypes", "--model", str(cosine_base["base"]), "--data",
                 str(cosine_base["old"]), "--out", str(out), "--views", "0"]) == 0
    printed = capsys.readouterr().out
    assert "rxvision calibrate" in printed and "the source has no drug library" in printed
    assert main(["prototypes", "--model", str(cosine_base["base"]), "--data",
                 str(cosine_base["old"]), "--out", str(out), "--views", "0"]) == 2
    assert "already holds a model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prototypes", "--data", "x.csv", "--out", str(tmp_path / "y"), "--views", "-1"])
    assert "--views: must be a whole number" in capsys.readouterr().err


def test_the_drug_library_comes_along_with_look_alikes_of_the_new_rows(
    cosine_base: dict[str, Path], sample_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rxvision.library import prototype_head
    from rxvision.library.database import open_library
    from rxvision.library.errors import LibraryError
    from rxvision.library.for_model import build_model_library

    source = tmp_path / "with-library"
    shutil.copytree(cosine_base["base"], source)
    build_model_library(sample_dir / "manifest.csv", source)
    record = prototype_head_artifact(source, cosine_base["old"], tmp_path / "p", views=0)
    assert record["library"] == str(tmp_path / "p" / "library.sqlite")
    with open_library(tmp_path / "p" / "library.sqlite", verify=True) as lib, \
            open_library(source / "library.sqlite") as old:
        assert lib.labels() == old.labels()
        # Look-alikes are neighbours of the rows: tied to the new weights, not the source's.
        assert lib.lookalikes_fingerprint == read_card(tmp_path / "p")["weights"]["sha256"]
        assert old.lookalikes_fingerprint == read_card(source)["weights"]["sha256"]
        assert lib.lookalikes_fingerprint != old.lookalikes_fingerprint
        # Built in a staging folder, named for where it was published.
        assert lib.meta["lookalikes_source"] == str(tmp_path / "p")
    # The source without a library: none, and saying so.
    assert prototype_head_artifact(cosine_base["base"], cosine_base["old"], tmp_path / "q",
                                   views=0)["library"] is None

    def broken(*_: object, **__: object) -> None:
        raise LibraryError("disk full")

    monkeypatch.setattr(prototype_head, "retie_library", broken)
    with pytest.raises(LibraryError, match="disk full"):
        prototype_head_artifact(source, cosine_base["old"], tmp_path / "r", views=0)
    assert not (tmp_path / "r").exists()  # no model left without its library
    assert not list(tmp_path.glob(".r.*"))  # nor a staging folder
    # Into a folder that held other files: those stay, the model's own files go.
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("mine")
    with pytest.raises(LibraryError, match="disk full"):
        prototype_head_artifact(source, cosine_base["old"], tmp_path / "s", views=0)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["notes.txt"]
    # ... and on success the model arrives whole beside them.
    monkeypatch.undo()
    prototype_head_artifact(source, cosine_base["old"], tmp_path / "s", views=0)
    assert {p.name for p in (tmp_path / "s").iterdir()} >= {
        "notes.txt", "card.json", "model.safetensors", "library.sqlite"}
