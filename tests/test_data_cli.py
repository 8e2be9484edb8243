"""`rxvision data check|preview|synth` end to end on real sample photos."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from rxvision.cli import main
from rxvision.data import load_dataset, load_image

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def _broken_dataset(tmp_path: Path, sample_dir: Path) -> Path:
    """Four good photos, a duplicate of one, a truncated JPEG and a text file posing as one."""
    src = sorted((sample_dir / "images").glob("*.jpg"))[:4]
    root = tmp_path / "broken"
    (root / "images").mkdir(parents=True)
    rows = []
    for i, path in enumerate(src):
        shutil.copy(path, root / "images" / path.name)
        rows.append((f"images/{path.name}", f"pill{i}"))
    shutil.copy(src[0], root / "images" / "copy-of-first.jpg")
    rows.append(("images/copy-of-first.jpg", "pill4"))
    data = src[1].read_bytes()
    (root / "images" / "cut-short.jpg").write_bytes(data[: len(data) // 2])
    rows.append(("images/cut-short.jpg", "pill5"))
    (root / "images" / "notes.jpg").write_text("not a photo")
    rows.append(("images/notes.jpg", "pill6"))
    rows.append(("images/gone.jpg", "pill7"))
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    return root / "manifest.csv"


def test_check_reports_every_problem_and_fails(tmp_path: Path, sample_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _broken_dataset(tmp_path, sample_dir)
    assert main(["data", "check", str(manifest)]) == 1
    out = capsys.readouterr().out
    # Every bad file is named, not just the first one met.
    errors = [line for line in out.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 3
    for name in ("cut-short.jpg", "notes.jpg", "gone.jpg"):
        assert sum(name in line for line in errors) == 1, name
    dup = [line for line in out.splitlines() if line.startswith("DUPLICATE")]
    assert len(dup) == 1 and "copy-of-first.jpg" in dup[0]
    assert "8 images, 8 classes" in out and "3 error(s)" in out

    assert main(["data", "check", str(manifest), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["num_images"] == 8
    assert len(report["errors"]) == 3 and len(report["duplicates"]) == 1
    assert report["image_sizes"]["most_common"] == "300x225"


def test_check_passes_on_the_sample(sample_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(sample_dir / "manifest.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["num_images"] == 24 and report["num_classes"] == 24
    assert report["errors"] == [] and report["duplicates"] == []
    assert report["images_per_class"] == {"min": 1, "max": 1, "mean": 1.0}


def test_check_missing_dataset_is_a_user_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "nowhere.csv")]) == 2
    assert "dataset not found" in capsys.readouterr().err


def test_preview_writes_grid(tmp_path: Path, sample_dir: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("training:\n  input_size: [64, 64]\n")
    out = tmp_path / "grid.png"
    argv = ["data", "preview", str(sample_dir / "manifest.csv"), "--out", str(out),
            "--config", str(config), "--num", "10", "--seed", "3"]
    assert main(argv) == 0
    grid = Image.open(out)
    assert grid.format == "PNG"
    # torchvision make_grid: 8 per row, 2 px padding around every tile.
    assert grid.size == (8 * 64 + 9 * 2, 2 * 64 + 3 * 2)
    first = out.read_bytes()
    assert main(argv) == 0 and out.read_bytes() == first  # seeded: same grid again


def test_synth_writes_decodable_views(tmp_path: Path, sample_dir: Path) -> None:
    out = tmp_path / "views"
    argv = ["data", "synth", str(sample_dir / "manifest.csv"), "--out", str(out),
            "--views", "2", "--size", "96"]
    assert main(argv) == 0
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48
    assert {"image", "label", "mode", "ndc"} <= set(rows[0])
    assert sorted(r["mode"] for r in rows) == ["both"] * 24 + ["one"] * 24
    assert len({r["image"] for r in rows}) == 48
    assert len(list((out / "images").iterdir())) == 48
    views = load_dataset(out / "manifest.csv")
    refs = load_dataset(sample_dir / "manifest.csv")
    assert views.labels == refs.labels and views.label_metadata == refs.label_metadata
    assert views.column("mode") == [r["mode"] for r in rows]
    for sample in views.samples:
        assert load_image(sample.path).size == (96, 96)


def test_synth_keeps_same_named_files_apart(tmp_path: Path, sample_dir: Path) -> None:
    # Class folders often reuse file names (a/1.jpg, b/1.jpg); no view may overwrite another.
    src = sorted((sample_dir / "images").glob("*.jpg"))[:2]
    for label, path in zip(("a", "b"), src, strict=True):
        (tmp_path / "refs" / label).mkdir(parents=True)
        shutil.copy(path, tmp_path / "refs" / label / "1.jpg")
    out = tmp_path / "views"
    argv = ["data", "synth", str(tmp_path / "refs"), "--out", str(out), "--views", "1",
            "--size", "64"]
    assert main(argv) == 0
    views = load_dataset(out / "manifest.csv")
    assert len(views) == 2 and len({s.path for s in views.samples}) == 2
    assert all(s.path.is_file() for s in views.samples)
