"""Drug library contract: facts, the SQLite file, fuzzy search, groups, look-alike text, CLI.

Built from the 24-pill sample manifest (its c3pi-4k facts columns); every test runs in
milliseconds.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from rxvision.cli import main
from rxvision.library.database import (
    LIBRARY_NAME,
    Library,
    build_library,
    open_library,
    read_manifest_facts,
    write_library,
)
from rxvision.library.errors import LibraryError, QueryError
from rxvision.library.facts import DrugFacts
from rxvision.library.groups import find_groups, same_pill
from rxvision.library.lookalike import differences, lookalike_note, same_pill_note
from rxvision.library.search import search

OLANZAPINE = "00093-5770-56"  # TEVA 5770, white round 10 mm
IRBESARTAN = "00093-8232-56"  # TEVA 7239, pink oval 14 mm
TEMAZEPAM = "67877-0147-01"  # 30 mg Novel 123, schedule IV


@pytest.fixture(scope="module")
def library_file(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    return build_library(sample_dir / "manifest.csv", tmp_path_factory.mktemp("lib") / "l.sqlite")


@pytest.fixture(scope="module")
def lib(library_file: Path) -> Library:
    with open_library(library_file, verify=True) as library:
        yield library


def _top(lib: Library, **query: object) -> list[str]:
    return [h.facts.label for h in search(lib, **query)]


def _row(**cells: str) -> dict[str, str]:
    base = {
        "label": "x",
        "image": "x.jpg",
        "ndc": "00002-3229-30",
        "imprint": "Lilly;3229;40;mg",
        "name": "atomoxetine 40 MG Oral Capsule [Strattera]",
        "generic_name": "atomoxetine",
        "brand_name": "Strattera",
        "strength": "40 MG",
        "dosage_form": "Oral Capsule",
        "labeler": "Eli Lilly and Company",
        "color": "BLUE",
        "shape": "CAPSULE",
        "size_mm": "16",
        "score": "1",
        "imprint_type": "PRINTED",
        "imprint_color": "BLACK",
    }
    return {**base, **cells}


# --- facts ------------------------------------------------------------------------------


def test_facts_describe_link_and_controlled_flag() -> None:
    f = DrugFacts.from_row(_row())
    assert f.describe() == (
        "atomoxetine 40 mg oral capsule (Strattera), Eli Lilly and Company, "
        "blue capsule 16 mm, imprint Lilly 3229 40 mg"
    )
    assert f.dailymed_url == (
        "https://dailymed.nlm.nih.gov/dailymed/search.cfm?labeltype=all&query=00002-3229-30"
    )
    assert not f.is_controlled and f.imprint_tokens == ("LILLY", "3229", "40", "MG")
    c = DrugFacts.from_row(_row(dea_schedule="C-IV", color="grey, white"))
    assert c.is_controlled and c.dea_schedule == "CIV" and c.colors == ("GRAY", "WHITE")
    assert "controlled substance, schedule CIV" in c.describe()
    assert c.to_dict()["is_controlled"] is True


def test_sample_manifest_facts(sample_dir: Path) -> None:
    facts = {f.label: f for f in read_manifest_facts(sample_dir / "manifest.csv")}
    assert len(facts) == 24
    assert facts[TEMAZEPAM].is_controlled and facts[TEMAZEPAM].dea_schedule == "CIV"
    assert facts[OLANZAPINE].imprint == ("TEVA", "5770") and facts[OLANZAPINE].size_mm == 10
    assert facts["00007-3148-13"].rxcui == ""  # RxImage's 0: no RxNorm concept
    assert facts["00007-3148-13"].describe().startswith("unnamed pill (NDC 00007-3148-13)")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("size_mm", "-3"),
        ("size_mm", "big"),
        ("score", "9"),
        ("color", "plaid"),
        ("shape", "blob"),
        ("ndc", "0002322930"),
        ("dea_schedule", "CX"),
        ("rxcui", "12a"),
        ("imprint_type", "PAINTED"),
        ("label", ""),
    ],
)
def test_bad_facts_name_row_and_column(column: str, value: str) -> None:
    with pytest.raises(LibraryError, match=rf"m.csv:7: column '{column}'"):
        DrugFacts.from_row(_row(**{column: value}), where="m.csv:7")


# --- the library file -------------------------------------------------------------------


def test_build_round_trips_facts_and_is_read_only(
    library_file: Path, lib: Library, sample_dir: Path
) -> None:
    assert lib.meta["schema_version"] == "1" and lib.num_references == 24
    assert lib.all_facts() == read_manifest_facts(sample_dir / "manifest.csv")
    ref = lib.references(OLANZAPINE)[0]
    assert ref.image_path == sample_dir.resolve() / "images" / f"{OLANZAPINE}.jpg"
    assert ref.image_path.is_file()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        lib._conn.execute("DELETE FROM refs")
    with pytest.raises(LibraryError, match="not in the library"):
        lib.references("99999-9999-99")


def test_open_finds_library_in_artifact_folder(library_file: Path, tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text("{}")
    with pytest.raises(LibraryError, match=f"holds no {LIBRARY_NAME}"):
        open_library(tmp_path)
    shutil.copy(library_file, tmp_path / LIBRARY_NAME)
    with open_library(tmp_path) as lib:
        assert lib.num_references == 24


def test_missing_corrupt_and_foreign_files(library_file: Path, tmp_path: Path) -> None:
    with pytest.raises(LibraryError, match="library not found"):
        open_library(tmp_path / "none.sqlite")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LibraryError, match="not an RxVision library or is corrupt"):
        open_library(garbage)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    with pytest.raises(LibraryError, match="no library format mark"):
        open_library(foreign)
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(library_file.read_bytes()[: library_file.stat().st_size // 3])
    with pytest.raises(LibraryError, match="corrupt"):
        open_library(truncated, verify=True)
    newer = tmp_path / "newer.sqlite"
    shutil.copy(library_file, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LibraryError, match=r"schema 99.*rebuild"):
        open_library(newer)


def test_failed_build_leaves_nothing_and_keeps_the_old_file(
    sample_dir: Path, tmp_path: Path
) -> None:
    with open(sample_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, {**rows[0], "size_mm": "-1"}])
    out = tmp_path / "out" / "library.sqlite"
    with pytest.raises(LibraryError, match=r"bad.csv:26: column 'size_mm'"):
        build_library(bad, out)
    assert not out.exists()
    build_library(sample_dir / "manifest.csv", out)
    before = out.read_bytes()
    with pytest.raises(LibraryError):
        build_library(bad, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["library.sqlite"]  # no temp files


# --- search -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "TEVA 5770",
        "teva-5770",
        "TEVA;5770",
        "teva5770",
        "5770 TEVA",  # separators, case, order
        "TEVA 5771",
        "TEUA 5770",  # one character misread
        "TEVA 577",
        "TEV 5770",  # one character missing
        "5770",  # one side only
    ],
)
def test_imprint_search_finds_the_pill_first(lib: Library, typed: str) -> None:
    assert _top(lib, imprint=typed)[0] == OLANZAPINE


def test_exact_match_scores_one_and_explains(lib: Library) -> None:
    hit = search(lib, imprint="teva 5770")[0]
    assert hit.score == 1.0 and hit.explanation == ("imprint TEVA 5770: exact",)
    fuzzy = search(lib, imprint="TEVA 5771")[0]
    assert fuzzy.score < 1.0 and "5771~5770" in fuzzy.explanation[0]
    assert search(lib, imprint="PLIVA 36")[0].facts.label == "50111-0326-01"
    # A misread that moves a letter/digit boundary: S for 5 in "EC5".
    assert _top(lib, imprint="M ECS")[0] == "00378-3855-77"


def test_colour_and_shape_are_soft_filters(lib: Library) -> None:
    assert _top(lib, imprint="TEVA")[:2] == [OLANZAPINE, IRBESARTAN]  # tie: label order
    assert _top(lib, imprint="TEVA", color="pink")[0] == IRBESARTAN
    assert _top(lib, imprint="TEVA", shape="oblong")[0] == IRBESARTAN
    assert _top(lib, imprint="TEVA", color="off-white")[0] == OLANZAPINE
    # No pill is green: a boost, never an exclusion.
    assert set(_top(lib, imprint="TEVA", color="green")[:2]) == {OLANZAPINE, IRBESARTAN}
    hits = search(lib, imprint="TEVA", color="pink", shape="oval", size_mm=14, score=1)
    assert hits[0].facts.label == IRBESARTAN and hits[0].score == pytest.approx(
        1.0 - 0.25 * 0.5 / 1.3, abs=0.01
    )
    assert any("colour WHITE differs" in line for line in hits[1].explanation)


def test_search_without_imprint_and_by_name(lib: Library) -> None:
    purple = _top(lib, color="purple", limit=2)
    assert set(purple) == {"00187-0844-01", "00555-0886-02"}
    assert _top(lib, color="purple", shape="capsule")[0] == "00187-0844-01"
    assert _top(lib, color="black/yellow", shape="capsule")[0] == "00456-2240-30"
    assert _top(lib, name="olanz") == [OLANZAPINE]
    assert _top(lib, name="escitalopram", imprint="M EC 10")[0] == "00378-3856-77"
    assert search(lib, imprint="QQQQQQ") == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "nothing to search by"),
        ({"imprint": "   "}, "nothing to search by"),
        ({"imprint": "!!!"}, "no letters or digits"),
        ({"imprint": "M" * 65}, "at most 64"),
        ({"size_mm": 500.0}, "not a pill size"),
        ({"size_mm": float("nan")}, "not a pill size"),
        ({"score": 0}, "segments"),
        ({"color": "plaid"}, "unknown colour 'plaid'"),
        ({"shape": "blob"}, "unknown shape"),
        ({"imprint": "M", "limit": 0}, "limit 0"),
    ],
)
def test_malformed_queries(lib: Library, query: dict, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        search(lib, **query)


# --- groups and look-alikes -------------------------------------------------------------


def test_groups_from_facts() -> None:
    a = DrugFacts.from_row(
        _row(label="a", imprint="M;411", color="BLUE", shape="OVAL", size_mm="19")
    )
    relabel = replace(a, label="b", imprint=("411", "m"), size_mm=18.0)  # order, case, 1 mm
    bigger = replace(a, label="c", size_mm=23.0)
    same_label = replace(a, size_mm=23.0, part=2)
    bare = replace(a, label="d", imprint=())
    bare2 = replace(a, label="e", imprint=())
    other_colour = replace(a, label="f", colors=("WHITE",))
    groups = find_groups([a, relabel, bigger, same_label, bare, bare2, other_colour])
    assert groups == [0, 0, 1, 1, None, None, None]


def test_same_pill_in_library(tmp_path: Path) -> None:
    a = DrugFacts.from_row(
        _row(label="00093-3045-01", ndc="00093-3045-01", imprint="M;411", labeler="Teva")
    )
    twin = replace(a, label="00378-1411-01", ndc="00378-1411-01", labeler="Mylan")
    other = replace(a, label="00378-1412-01", ndc="00378-1412-01", imprint=("M", "412"))
    with open_library(
        write_library([a, twin, other], tmp_path / "g.sqlite", image_root=None)
    ) as lib:
        assert lib.meta["groups"] == "1" and lib.meta["grouped_labels"] == "2"
        assert [f.label for f in same_pill(lib, a.label)] == [twin.label]
        assert same_pill(lib, other.label) == []
        note = same_pill_note(a, same_pill(lib, a.label))
        assert note == (
            "the same pill is sold as: atomoxetine 40 mg oral capsule (NDC 00378-1411-01, Mylan)"
        )


def test_lookalike_text() -> None:
    a = DrugFacts.from_row(
        _row(
            label="a",
            imprint="M;411",
            color="BLUE",
            shape="OVAL",
            size_mm="19",
            score="2",
            imprint_type="DEBOSSED",
            imprint_color="",
        )
    )
    b = replace(a, label="b", imprint=("M", "412"), size_mm=11.0)
    assert differences(a, b) == [
        "check the imprint: it reads 'M 412' (this one reads 'M 411')",
        "size: it is 11 mm long, shorter than this one's 19 mm",
    ]
    c = replace(
        a, label="c", colors=("WHITE",), score=1, imprint_type="PRINTED", imprint_color="BLACK"
    )
    assert differences(a, c) == [
        "score line: it is unscored, this one scored into 2 parts",
        "colour: it is white, this one blue",
        "imprint: it is printed in black ink, this one debossed (pressed into the surface)",
    ]
    note = lookalike_note(a, b)
    assert note.startswith(
        "also looks like atomoxetine 40 mg oral capsule (NDC 00002-3229-30"
        "): check the imprint: it reads 'M 412'"
    )
    assert lookalike_note(a, replace(a, label="z")).startswith("looks the same as")


# --- CLI --------------------------------------------------------------------------------


def test_cli_build_search_show(
    sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "library.sqlite"
    assert main(["library", "build", str(sample_dir / "manifest.csv"), "--out", str(out)]) == 0
    assert "24 reference pills, 24 labels" in capsys.readouterr().out
    assert (
        main(
            [
                "library",
                "search",
                "--imprint",
                "5770 teva",
                "--color",
                "WHITE",
                "--shape",
                "round",
                "--size",
                "10",
                "--score",
                "1",
                "--json",
                "--library",
                str(out),
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["facts"]["ndc"] == OLANZAPINE and hits[0]["score"] == 1.0
    assert hits[0]["facts"]["dailymed_url"].endswith(OLANZAPINE)
    assert (
        main(["library", "search", "--imprint", "TEVA 5770", "--library", str(tmp_path)]) == 0
    )  # the folder holding library.sqlite
    assert "olanzapine 10 mg oral tablet" in capsys.readouterr().out
    assert main(["library", "show", TEMAZEPAM, "--library", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "yes, DEA schedule CIV" in shown and f"images/{TEMAZEPAM}.jpg" in shown


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["library", "search", "--imprint", "M 411"]) == 2
    assert "no library given: pass --library" in capsys.readouterr().err
    assert main(["library", "show", "x", "--library", str(tmp_path / "none.sqlite")]) == 2
    assert "library not found" in capsys.readouterr().err
