"""Dataset contract: manifests and class folders give stable labels, metadata and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from rxvision.data import DatasetError, load_dataset, load_datasets


def _png(path: Path, colour: tuple[int, int, int] = (120, 80, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _manifest(tmp_path: Path, text: str, name: str = "data/manifest.csv") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_manifest_metadata_per_label_and_sample_columns_per_sample(tmp_path: Path) -> None:
    path = _manifest(tmp_path, (
        "image,label,ndc,name,strength,side,mode\n"
        "img/b-front.png,zeta,0002-1,Zetamab,10 mg,front,both\n"
        "img/a-front.png,alpha,0001-1,Alphacin,5 mg,front,one\n"
        "img/b-back.png,zeta,0002-1,Zetamab,10 mg,back,one\n"
    ))
    ds = load_dataset(path)
    assert ds.labels == ["alpha", "zeta"]  # sorted, not in file order
    assert ds.num_classes == 2 and len(ds) == 3
    assert ds.label_metadata == [
        {"ndc": "0001-1", "name": "Alphacin", "strength": "5 mg"},
        {"ndc": "0002-1", "name": "Zetamab", "strength": "10 mg"},
    ]
    first = ds.samples[0]
    assert first.label == "zeta" and first.extra == {"side": "front", "mode": "both"}
    # Relative paths resolve against the manifest's folder, not the working directory.
    assert first.path == tmp_path / "data" / "img" / "b-front.png"
    assert ds.column("side") == ["front", "front", "back"]
    assert ds.targets() == [1, 0, 1]


def test_labels_are_stable_whatever_the_row_order(tmp_path: Path) -> None:
    rows = [f"{c}.png,{c}" for c in ["c", "a", "b", "a"]]
    one = load_dataset(_manifest(tmp_path, "image,label\n" + "\n".join(rows) + "\n", "1.csv"))
    two = load_dataset(_manifest(tmp_path, "image,label\n" + "\n".join(rows[::-1]) + "\n",
                                 "2.csv"))
    assert one.labels == two.labels == ["a", "b", "c"]


def test_several_manifests_load_as_one_set(tmp_path: Path) -> None:
    one = _manifest(tmp_path, "image,label,ndc\nx/b.png,zeta,0002-1\n", "r512/manifest.csv")
    two = _manifest(tmp_path, "image,label,ndc,name\nx/a.png,alpha,0001-1,Alphacin\n"
                              "x/c.png,zeta,0002-1,Zetamab\n", "r1024/manifest.csv")
    ds = load_datasets([one, two])
    assert [s.path for s in ds.samples] == [tmp_path / "r512/x/b.png",  # each its own root
                                            tmp_path / "r1024/x/a.png",
                                            tmp_path / "r1024/x/c.png"]
    assert ds.labels == ["alpha", "zeta"] and ds.targets() == [1, 0, 1]
    assert ds.label_metadata[1] == {"ndc": "0002-1", "name": "Zetamab"}  # merged
    assert ds.source == one
    assert load_datasets([one]).samples == load_dataset(one).samples
    with pytest.raises(DatasetError, match="no dataset"):
        load_datasets([])
    with pytest.raises(DatasetError, match="not found"):
        load_datasets([one, tmp_path / "missing.csv"])


def test_sample_manifest_keeps_source_id_per_sample(sample_dir: Path) -> None:
    ds = load_dataset(sample_dir / "manifest.csv")
    assert len(ds) == 24 and ds.num_classes == 24
    assert ds.labels == sorted(ds.labels)
    # Per label: the NDC and the drug facts columns; source_id stays per sample.
    assert all(m["ndc"] == lab and "source_id" not in m
               for m, lab in zip(ds.label_metadata, ds.labels, strict=True))
    assert all(s.path.is_file() and "source_id" in s.extra for s in ds.samples)


def test_absolute_paths_and_utf8_bom(tmp_path: Path) -> None:
    img = _png(tmp_path / "elsewhere" / "x.png")
    path = tmp_path / "m.csv"
    path.write_bytes(("\ufeffimage,label\n" + f"{img},x\n").encode("utf-8"))
    ds = load_dataset(path)
    assert ds.samples[0].path == img and ds.labels == ["x"]


def test_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "folders"
    _png(root / "beta" / "2.png")
    _png(root / "beta" / "1.jpg")
    _png(root / "alpha" / "1.png")
    (root / "alpha" / "notes.txt").write_text("ignored")
    (root / ".cache").mkdir()
    ds = load_dataset(root)
    assert ds.labels == ["alpha", "beta"]
    assert [(s.path.name, s.label) for s in ds.samples] == [
        ("1.png", "alpha"), ("1.jpg", "beta"), ("2.png", "beta")]
    assert ds.targets() == [0, 1, 1]
    assert ds.label_metadata == [{}, {}]


def test_targets_unknown_labels_are_minus_one(tmp_path: Path) -> None:
    ds = load_dataset(_manifest(tmp_path, "image,label\na.png,a\nb.png,b\nc.png,c\n"))
    assert ds.targets(["c", "a"]) == [1, -1, 0]
    assert ds.targets([]) == [-1, -1, -1]


@pytest.mark.parametrize(("text", "message"), [
    ("file,label\na.png,a\n", r"lacks column\(s\) \['image'\]"),
    ("image,name\na.png,a\n", r"lacks column\(s\) \['label'\]"),
    ("", r"lacks column"),
    ("image,label\n", "no rows"),
    ("image,label\na.png,\n", r":2: empty image or label"),
    ("image,label\na.png,a\nb.png,b,extra\n", r":3: more fields"),
])
def test_bad_manifests_raise_dataset_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(_manifest(tmp_path, text))


def test_missing_and_unreadable_sources(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset not found.*nope\.csv"):
        load_dataset(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="hold no images"):
        load_dataset(tmp_path / "noimg")
    binary = tmp_path / "photo.csv"
    binary.write_bytes(b"\xff\xd8\xff\xe0 not text \x00\x9c")
    with pytest.raises(DatasetError, match="not a UTF-8 CSV"):
        load_dataset(binary)
