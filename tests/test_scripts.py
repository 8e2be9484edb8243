"""The maintenance scripts' own logic: bundling and the independent measurement sets."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_bundle_keeps_full_metadata_only_where_the_library_lacks_facts(tmp_path: Path) -> None:
    facts = write_csv(tmp_path / "facts.csv", [{"label": "A", "ndc": "A", "name": "drug a"}])
    full = {"ndc": "A", "name": "drug a", "imprint": "M;411", "color": "WHITE"}
    other = {"ndc": "B", "name": "drug b", "imprint": "X"}
    lean = load_script("bundle_model").lean_metadata(["A", "B"], [full, other], facts)
    assert lean == [{"ndc": "A", "name": "drug a"}, other]


def test_bundle_replaces_the_old_one_only_when_every_step_succeeded(tmp_path: Path) -> None:
    staged = load_script("bundle_model").staged
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "model.safetensors").write_text("old weights")
    (out / "README.md").write_text("model card")
    with pytest.raises(RuntimeError, match="library build failed"), staged(out) as stage:
        (stage / "model.safetensors").write_text("new weights")
        raise RuntimeError("library build failed")
    assert (out / "model.safetensors").read_text() == "old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging left
    with staged(out) as stage:
        (stage / "model.safetensors").write_text("new weights")
    assert (out / "model.safetensors").read_text() == "new weights"
    assert (out / "README.md").read_text() == "model card"  # the rest carried over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with staged(tmp_path / "fresh") as stage:
        (stage / "card.json").write_text("{}")
    assert (tmp_path / "fresh" / "card.json").is_file()


def test_independent_sets_draw_disjoint_seeded_pills(tmp_path: Path) -> None:
    sets = load_script("independent_sets")
    rows = [{"image": f"images/{i}.jpg", "label": f"L{i:04d}",
             "in_c3pi_1k": "yes" if i % 3 == 0 else "no"} for i in range(3300)]
    manifest = write_csv(tmp_path / "manifest.csv", rows)
    drawn = sets.draw(manifest)
    assert drawn == sets.draw(manifest)  # seeded
    labels = [r["label"] for refs in drawn.values() for r in refs]
    assert len(labels) == len(set(labels))  # measurement and calibration pills differ
    assert {r["in_c3pi_1k"] for r in drawn["known-512"]} == {"yes"}
    assert {r["in_c3pi_1k"] for r in drawn["new-512"]} == {"no"}
    assert len(drawn["new-512"]) == sets.MEASURE["new"]
    assert all(Path(r["image"]).is_absolute() for r in drawn["cal-512-new"])
    assert len(drawn["cal-extra-1024-new"]) == sets.CAL_EXTRA_1024["new"]
    assert "cal-extra-512-known" not in drawn  # no c3pi-1k pills are left for it


def test_independent_sets_refuse_a_manifest_without_the_library_column(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path / "m.csv", [{"image": "a.jpg", "label": "A"}])
    with pytest.raises(SystemExit, match="in_c3pi_1k"):
        load_script("independent_sets").draw(manifest)
