"""Answers that name the drug: facts, look-alikes and identical pills, photo + typed facts.

A copy of the session's random-weight sample artifact gets a drug library built for it
(``rxvision library build --for-model``) from the sample manifest, in which one pill
(ketoconazole, 93 900) is rewritten to look exactly like olanzapine (TEVA 5770, white round
10 mm): the two then form an identical-pill group. Everything runs in seconds.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rxvision.artifact import read_card, update_card
from rxvision.cli import main
from rxvision.commands.calibrate import drop_same_photo_rule, drop_typed_imprint_rule
from rxvision.identify.answers import CONTRADICTION, TypedFacts
from rxvision.identify.identifier import Identifier, IdentifierError
from rxvision.library.appearance import Appearance, nearest
from rxvision.library.database import LIBRARY_NAME, copy_library, open_library
from rxvision.library.errors import LibraryError, QueryError
from rxvision.library.facts import DrugFacts
from rxvision.library.for_model import build_model_library, retie_library

OLANZAPINE = "00093-5770-56"  # TEVA 5770, white round 10 mm
KETOCONAZOLE = "00093-0900-01"  # made olanzapine's twin below
IRBESARTAN = "00093-8232-56"  # TEVA 7239, pink oval 14 mm
TEMAZEPAM = "67877-0147-01"  # schedule IV


@pytest.fixture(scope="module")
def twin_manifest(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """The sample manifest with ketoconazole made olanzapine's identical twin; absolute
    image paths."""
    with open(sample_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    olanzapine = next(r for r in rows if r["label"] == OLANZAPINE)
    for row in rows:
        row["image"] = str((sample_dir / row["image"]).resolve())
        if row["label"] == KETOCONAZOLE:
            row.update({k: olanzapine[k] for k in ("imprint", "color", "shape", "size_mm")})
    out = tmp_path_factory.mktemp("twins") / "manifest.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def library_model(
    tmp_path_factory: pytest.TempPathFactory, sample_artifact: Path, twin_manifest: Path
) -> Path:
    """The sample artifact with ``library.sqlite`` built for it from the twin manifest."""
    model = tmp_path_factory.mktemp("models") / "sample"
    shutil.copytree(sample_artifact, model)
    build_model_library(twin_manifest, model)
    return model


@pytest.fixture(scope="module")
def ident(library_model: Path) -> Identifier:
    return Identifier.load(library_model)


def _photo(sample_dir: Path, label: str) -> Path:
    return sample_dir / "images" / f"{label}.jpg"


def _log_probs(ident: Identifier, probs: dict[str, float]) -> torch.Tensor:
    """Calibrated log-probabilities with the given mass on some labels, the rest spread."""
    rest = (1.0 - sum(probs.values())) / (ident.num_classes - len(probs))
    p = torch.tensor([probs.get(label, rest) for label in ident.labels])
    return p.log()


# --- look-alikes by appearance ----------------------------------------------------------


def test_nearest_rows_leave_out_the_pill_itself_and_its_identical_twins() -> None:
    facts = [DrugFacts(label=x, imprint=(x,)) for x in "abcd"]
    facts[1] = DrugFacts(label="b", imprint=("a",))  # b looks like a: one group
    rows = np.array([[1.0, 0, 0], [1.0, 0.01, 0], [0.9, 0.2, 0], [0, 0, 1.0]])
    appearance = Appearance(list("abcd"), rows, "sha")
    got = {
        (lab, rank): other
        for lab, rank, other, _ in nearest(appearance, facts, [0, 0, None, None], k=2)
    }
    assert got[("a", 1)] == "c" and got[("b", 1)] == "c"  # the twin is not a look-alike
    assert "b" not in {got[("a", 1)], got[("a", 2)]}
    assert got[("c", 1)] in {"a", "b"}
    with pytest.raises(LibraryError, match="do not match"):
        Appearance(["a"], rows, "sha")


def test_library_for_a_model_keeps_its_labels_and_ties_lookalikes_to_its_weights(
    library_model: Path, sample_dir: Path, tmp_path: Path
) -> None:
    card = json.loads((library_model / "card.json").read_text())
    with open_library(library_model) as lib:
        assert lib.meta["lookalikes_weights_sha256"] == card["weights"]["sha256"]
        assert set(lib.labels()) == set(card["labels"])
        near = lib.lookalikes([OLANZAPINE], 5)[OLANZAPINE]
        assert len(near) == 5 and KETOCONAZOLE not in {o for o, _ in near}
    # Photographs resolve from a library built from the sample manifest, and still do
    # when the library is copied elsewhere (the image root is rewritten).
    model = tmp_path / "m"
    shutil.copytree(library_model, model)
    build_model_library(sample_dir / "manifest.csv", model)
    assert not Path(open_library(model).meta["image_root"]).is_absolute()
    moved = copy_library(model / LIBRARY_NAME, tmp_path / "elsewhere" / "deep" / "lib.sqlite")
    with open_library(moved) as lib:
        assert lib.references(TEMAZEPAM)[0].image_path.is_file()


def test_a_manifest_without_the_models_labels_is_refused(
    library_model: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "other.csv"
    manifest.write_text("image,label\nx.jpg,99999-9999-99\n")
    with pytest.raises(LibraryError, match="none of the 24 labels"):
        build_model_library(manifest, library_model)


# --- facts in answers --------------------------------------------------------------------


def test_every_candidate_carries_its_facts_lookalikes_and_identical_pills(
    ident: Identifier, sample_dir: Path
) -> None:
    [result] = ident.identify(_photo(sample_dir, OLANZAPINE), topk=24)
    assert result.facts_source == "library"
    by_label = {c.label: c for c in result.candidates}
    olanzapine = by_label[OLANZAPINE]
    facts = olanzapine.facts
    assert facts["ndc"] == OLANZAPINE and facts["drug"] == "olanzapine 10 mg oral tablet"
    assert facts["rxcui"] == "314154" and facts["imprint_text"] == "TEVA 5770"
    assert facts["dailymed_url"].endswith(OLANZAPINE) and facts["is_controlled"] is False
    assert [m["label"] for m in olanzapine.same_pill] == [KETOCONAZOLE]
    assert olanzapine.same_pill_note.startswith("the same pill is sold as: ")
    assert len(olanzapine.lookalikes) == 3
    assert KETOCONAZOLE not in {a["label"] for a in olanzapine.lookalikes}
    assert all(a["note"] and a["ndc"] for a in olanzapine.lookalikes)
    temazepam = by_label[TEMAZEPAM].facts
    assert temazepam["is_controlled"] and temazepam["dea_schedule"] == "CIV"
    row = result.to_dict()
    assert row["candidates"][0]["facts"]["description"]  # JSON-ready
    json.dumps(row)


def test_without_a_library_answers_keep_the_card_metadata(
    sample_artifact: Path, sample_dir: Path
) -> None:
    plain = Identifier.load(sample_artifact)
    assert plain.answers.library is None and "no drug library" in plain.answers.notes[0]
    [result] = plain.identify(_photo(sample_dir, OLANZAPINE))
    assert result.facts_source == "card"
    assert all(c.facts is None and c.lookalikes == [] for c in result.candidates)
    assert result.candidates[0].metadata["ndc"]
    with pytest.raises(LibraryError, match="need the model's drug library"):
        plain.identify(_photo(sample_dir, OLANZAPINE), typed=TypedFacts.parse("TEVA 5770"))


def test_lookalikes_of_other_weights_are_not_shown(
    library_model: Path, artifact_factory, model_factory, sample_artifact: Path
) -> None:
    labels = json.loads((sample_artifact / "card.json").read_text())["labels"]
    other = artifact_factory(
        "other", labels=labels, model=model_factory(seed=1, num_classes=len(labels))
    )
    ident = Identifier.load(other, library=library_model / LIBRARY_NAME)
    assert ident.answers.library is not None and not ident.answers.show_lookalikes
    assert any("other weights" in n for n in ident.answers.notes)
    assert Identifier.load(other, library=False).answers.library is None
    # Re-tied to the other model's weights (what scripts/bundle_model.py does), they are.
    retie_library(library_model / LIBRARY_NAME, other)
    assert Identifier.load(other).answers.show_lookalikes


# --- photo + typed facts -----------------------------------------------------------------


def test_a_typed_imprint_reranks_the_photos_candidates(ident: Identifier) -> None:
    lp = _log_probs(ident, {OLANZAPINE: 0.5, IRBESARTAN: 0.3})
    assert ident.decide(lp, 0.0).top.label == OLANZAPINE
    for typed in ("TEVA 7239", "7239 tev", "TEVA 7230"):  # exact, reordered + short, one off
        result = ident.decide(lp, 0.0, typed=TypedFacts.parse(imprint=typed))
        assert result.top.label == IRBESARTAN, typed
        match = result.top.typed_match
        assert match["likelihood"] > CONTRADICTION and match["photo_probability"] == pytest.approx(
            0.3, abs=1e-4
        )
        assert not result.typed["contradicted"]
    # The fused ranking is a distribution over every label.
    fused, _ = ident.answers.fuse(lp, TypedFacts.parse(imprint="TEVA 7239", color="pink"))
    assert np.exp(fused).sum() == pytest.approx(1.0, abs=1e-5)
    assert fused.argmax() == ident.labels.index(IRBESARTAN)


def test_an_exactly_typed_imprint_outweighs_a_photo_fifty_times_surer() -> None:
    """The imprint's floor (evidence against a pill whose imprint shares nothing with the
    typed one) is 1/100: a photo 50 times surer of another pill does not outweigh an
    imprint typed exactly (at the floor of 1/20 used until session 21, it did)."""
    from rxvision.library.evidence import field_likelihood

    match, nothing = field_likelihood("imprint", 1.0), field_likelihood("imprint", 0.0)
    assert match / nothing > 50 and nothing > 0  # strong evidence, never proof


def test_an_imprint_sharing_one_token_with_the_typed_one_is_weak_evidence_for_it() -> None:
    """Sharpness 4 (session 28): an imprint one character off keeps ~40% of an exact
    match's weight; one that shares only a labeler's token ("93 148" typed, "93 7251") ~3%,
    so it cannot lift a photo's wrong favourite over the pill whose imprint was typed (at
    sharpness 2 it kept 64% and 15%)."""
    from rxvision.library.evidence import field_likelihood
    from rxvision.library.search import imprint_match

    exact = field_likelihood("imprint", imprint_match(("93", "148"), ("93", "148"))[0])
    one_off = field_likelihood("imprint", imprint_match(("93", "149"), ("93", "148"))[0])
    shared = field_likelihood("imprint", imprint_match(("93", "148"), ("93", "7251"))[0])
    assert exact == pytest.approx(1.0)
    assert 0.25 < one_off / exact < 0.6
    assert shared / exact < 0.05 and shared / one_off < 0.15


def test_typed_facts_that_contradict_every_likely_pill_answer_not_sure(
    ident: Identifier,
) -> None:
    lp = _log_probs(ident, {OLANZAPINE: 0.999})
    assert not ident.decide(lp, 0.0).abstain  # confident from the photo alone
    result = ident.decide(lp, 0.0, typed=TypedFacts.parse(imprint="TEVA 7239", color="pink"))
    assert result.abstain and result.message == "not sure"
    assert result.typed["contradicted"] and "match none of the likely pills" in result.typed["note"]
    assert result.library_hits[0]["label"] == IRBESARTAN  # what the typed facts do match
    nothing = ident.decide(lp, 0.0, typed=TypedFacts.parse(imprint="QQ 000"))
    assert nothing.abstain and nothing.typed["contradicted"]


def test_offered_hits_that_match_the_typed_text_equally_follow_the_photo(
    ident: Identifier,
) -> None:
    """"TEVA" typed, the photo sure of temazepam: the facts contradict it, and the library
    pills offered are the TEVA ones; those the text matches equally well come in the order
    the photo prefers them (irbesartan before olanzapine here), not in label order."""
    from rxvision.library.search import search

    lib = ident.answers.library
    teva = search(lib, imprint="TEVA", limit=50)
    scores = {h.facts.label: h.score for h in teva}
    assert scores[OLANZAPINE] == scores[IRBESARTAN]  # a tie on the text alone
    assert OLANZAPINE < IRBESARTAN  # label order would offer olanzapine first
    for preferred, other in ((IRBESARTAN, OLANZAPINE), (OLANZAPINE, IRBESARTAN)):
        lp = _log_probs(ident, {TEMAZEPAM: 0.99, preferred: 1e-3, other: 1e-6})
        result = ident.decide(lp, 0.0, typed=TypedFacts.parse(imprint="TEVA"))
        assert result.typed["contradicted"]
        offered = [h["label"] for h in result.library_hits]
        assert [h["rank"] for h in result.library_hits] == list(range(1, len(offered) + 1))
        assert offered.index(preferred) < offered.index(other)
        best = max(scores.values())
        assert all(scores[lab] == best for lab in offered[:2])  # still best text match first


def test_the_cards_offered_photo_weight_lets_the_photo_reorder_close_text_matches(
    library_model: Path, tmp_path: Path
) -> None:
    """"TEVA 7239" typed while the photo is sure of temazepam: contradicted. Irbesartan (TEVA
    7239) matches the text best and olanzapine (TEVA 5770) less; by the text alone (no
    weight in the card) irbesartan is offered first. With the card's offered_photo_weight
    the photo's 1e4-fold preference for olanzapine moves it ahead; weights that are not a
    finite number >= 0 are refused when the model loads."""
    from rxvision.library.search import search

    scores = {h.facts.label: h.score for h in
              search(Identifier.load(library_model).answers.library, imprint="TEVA 7239")}
    assert scores[IRBESARTAN] > scores[OLANZAPINE]
    typed = TypedFacts.parse(imprint="TEVA 7239")
    probs = {TEMAZEPAM: 0.99, OLANZAPINE: 1e-4, IRBESARTAN: 1e-8}

    def offered(model: Path) -> list[str]:
        ident = Identifier.load(model)
        result = ident.decide(_log_probs(ident, probs), 0.0, typed=typed)
        assert result.typed["contradicted"]
        return [h["label"] for h in result.library_hits]

    by_text = offered(library_model)
    assert by_text.index(IRBESARTAN) < by_text.index(OLANZAPINE)
    weighed = offered(_with_typed_rule(library_model, tmp_path, offered_photo_weight=1.0))
    assert weighed.index(OLANZAPINE) < weighed.index(IRBESARTAN)
    assert sorted(weighed) == sorted(by_text)  # the same hits, in another order
    for bad in (-0.1, "heavy", float("inf")):
        model = _with_typed_rule(library_model, tmp_path / str(bad), offered_photo_weight=bad)
        with pytest.raises(IdentifierError, match="offered_photo_weight"):
            Identifier.load(model)


def _with_typed_rule(library_model: Path, tmp_path: Path, **rule: object) -> Path:
    """A copy of the library model whose card has the given typed-imprint settings."""
    model = tmp_path / "typed-rule"
    shutil.copytree(library_model, model)
    update_card(model, identification={**read_card(model).get("identification", {}), **rule})
    return model


def test_the_cards_photo_power_lets_a_typed_imprint_outweigh_a_confidently_wrong_photo(
    library_model: Path, tmp_path: Path
) -> None:
    """Photo 95 times surer of olanzapine than of irbesartan; the user types irbesartan's
    imprint (olanzapine's, TEVA 5770, shares the maker's name with it: L 0.26 against 1).
    At full weight the photo wins; with the card's typed_photo_power 0.25 the typed imprint
    decides, and the answer threshold fitted with that power applies. Colour alone keeps
    the photo's full weight."""
    lp = _log_probs(Identifier.load(library_model), {OLANZAPINE: 0.95, IRBESARTAN: 0.01})
    typed = TypedFacts.parse(imprint="TEVA 7239")
    full = Identifier.load(library_model).decide(lp, 0.0, typed=typed)
    assert full.top.label == OLANZAPINE and full.typed["photo_power"] == 1.0

    model = _with_typed_rule(library_model, tmp_path, typed_photo_power=0.25,
                             typed_abstain_threshold=0.4)
    ident = Identifier.load(model)
    result = ident.decide(lp, 0.0, typed=typed)
    assert result.top.label == IRBESARTAN and not result.typed["contradicted"]
    assert result.typed["photo_power"] == 0.25
    assert result.confidence >= 0.4 and not result.abstain
    assert result.top.typed_match["photo_probability"] == pytest.approx(0.01, rel=1e-3)
    ident.typed_abstain_threshold = min(1.0, result.confidence + 1e-3)  # just out of reach
    assert ident.decide(lp, 0.0, typed=typed).abstain
    colour = ident.decide(lp, 0.0, typed=TypedFacts.parse(color="pink"))
    assert colour.top.label == OLANZAPINE and colour.typed["photo_power"] == 1.0


@pytest.mark.parametrize("rule, problem", [
    ({"typed_photo_power": 0.6}, "only one of"),
    ({"typed_abstain_threshold": 0.7}, "only one of"),
    ({"typed_photo_power": 0.0, "typed_abstain_threshold": 0.7}, r"in \(0, 1\]"),
    ({"typed_photo_power": 0.6, "typed_abstain_threshold": 1.5}, r"in \[0, 1\]"),
    ({"typed_photo_power": "soft", "typed_abstain_threshold": 0.7}, "must be numbers"),
])
def test_a_bad_typed_imprint_rule_in_the_card_is_refused(
    library_model: Path, tmp_path: Path, rule: dict[str, object], problem: str
) -> None:
    model = _with_typed_rule(library_model, tmp_path, **rule)
    with pytest.raises(IdentifierError, match=problem):
        Identifier.load(model)


def test_an_abstain_threshold_asked_for_also_rules_typed_answers(
    library_model: Path, tmp_path: Path
) -> None:
    model = _with_typed_rule(library_model, tmp_path, typed_photo_power=0.6,
                             typed_abstain_threshold=0.4)
    assert Identifier.load(model).typed_photo_power == 0.6
    strict = Identifier.load(model, abstain_threshold=0.99)
    assert (strict.typed_photo_power, strict.typed_abstain_threshold) == (1.0, 0.99)


def test_recalibrating_drops_the_typed_imprint_rule_fitted_for_the_old_thresholds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    identification = {"abstain_threshold": 0.9, "typed_photo_power": 0.6,
                      "typed_abstain_threshold": 0.75, "typed_photo_power_fitted_on": "cal"}
    drop_typed_imprint_rule(identification)
    assert identification == {"abstain_threshold": 0.9}
    assert "refit it with benchmarks/typed_photo_power.py --write" in capsys.readouterr().out
    drop_typed_imprint_rule(identification)  # nothing to drop: nothing said
    assert capsys.readouterr().out == ""
    identification["same_photo"] = {"temperature": 1.5, "prior": 0.5}
    drop_same_photo_rule(identification)
    assert identification == {"abstain_threshold": 0.9}
    assert "benchmarks/fit_same_photo.py --write" in capsys.readouterr().out


def test_typed_facts_are_checked() -> None:
    assert TypedFacts.parse(" ", "", None) is None
    assert TypedFacts.parse(imprint="m 411", color="Off-white").to_dict() == {
        "imprint": "m 411",
        "color": "Off-white",
    }
    with pytest.raises(QueryError, match="unknown colour"):
        TypedFacts.parse(color="plaid")
    with pytest.raises(QueryError, match="no letters or digits"):
        TypedFacts.parse(imprint="--")


# --- CLI -------------------------------------------------------------------------------


def test_predict_prints_the_drug_and_its_facts(
    library_model: Path, sample_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(_photo(sample_dir, TEMAZEPAM))
    assert main(["predict", "--model", str(library_model), "--topk", "24", photo]) == 0
    out = capsys.readouterr().out
    assert "— NDC 67877-0147-01 — CONTROLLED CIV" in out
    assert "temazepam 30 mg oral capsule" in out.lower()
    assert "DailyMed https://dailymed.nlm.nih.gov/" in out and "also looks like" in out
    assert main(["predict", "--model", str(library_model), "--json", photo]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["facts_source"] == "library"
    assert all(c["facts"]["ndc"] == c["label"] for c in row["topk"])
    assert all(len(c["lookalikes"]) == 3 for c in row["topk"])
    out = tmp_path / "r.csv"
    assert main(["predict", "--model", str(library_model), photo, "--out", str(out)]) == 0
    [line] = list(csv.DictReader(out.open()))
    assert line["drug_1"] and line["ndc_1"] == line["label_1"]


def test_predict_with_typed_facts(
    library_model: Path, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(_photo(sample_dir, OLANZAPINE))
    args = ["predict", "--model", str(library_model), "--json", photo]
    assert main([*args, "--imprint", "TEVA 7239", "--color", "pink", "--shape", "oval"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["topk"][0]["label"] == IRBESARTAN and row["typed"]["fields"]["shape"] == "oval"
    assert main([*args, "--imprint", "ZZZZZZ"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["message"] == "not sure" and row["typed"]["contradicted"]
    assert main([*args, "--color", "plaid"]) == 2
    assert "unknown colour 'plaid'" in capsys.readouterr().err
    assert main([*args, photo, "--imprint", "M 411"]) == 2
    assert "describe one pill" in capsys.readouterr().err


def test_predict_says_when_the_model_has_no_library(
    sample_artifact: Path, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(_photo(sample_dir, OLANZAPINE))
    assert main(["predict", "--model", str(sample_artifact), photo]) == 0
    assert "this model has no drug library" in capsys.readouterr().err
    assert main(["predict", "--model", str(sample_artifact), photo, "--imprint", "x1"]) == 2
    assert "need a drug library" in capsys.readouterr().err


def test_an_export_carries_the_library_and_its_lookalikes(
    library_model: Path, sample_dir: Path, tmp_path: Path
) -> None:
    from rxvision.deploy.export import export_artifact

    out = tmp_path / "onnx"
    export_artifact(library_model, out, num_parity=2, parity_data=sample_dir / "manifest.csv")
    with open_library(out) as lib:
        assert lib.references(TEMAZEPAM)[0].image_path.is_file()
    onnx = Identifier.load(out, backend="onnx")
    assert onnx.answers.show_lookalikes, onnx.answers.notes  # same weights as the source
    [result] = onnx.identify(_photo(sample_dir, OLANZAPINE))
    assert result.facts_source == "library" and result.candidates[0].lookalikes


def test_the_bundled_models_library_names_its_pills_and_finds_their_photographs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rxvision.identify.bundled import bundled_model_dir

    model = bundled_model_dir()
    if not (model / LIBRARY_NAME).is_file():
        pytest.skip(f"no bundled model library at {model}")
    card = json.loads((model / "card.json").read_text())
    with open_library(model) as lib:
        assert set(lib.labels()) == set(card["labels"])
        assert lib.lookalikes_fingerprint == card["weights"]["sha256"]
        photo = lib.references("00002-3229-30")[0].image_path
    assert photo.parts[-4:-2] == ("data", "c3pi-4k") and "shared" in photo.parts
    shared = model.parents[2] / "shared" / "data" / "c3pi-4k"
    if shared.is_dir():  # ../shared beside the repository: the photograph is there
        assert photo.is_file()
    # Moved without the photographs, `library show` says where they were expected.
    shutil.copy(model / LIBRARY_NAME, tmp_path / LIBRARY_NAME)
    assert main(["library", "show", "00002-3229-30", "--library", str(tmp_path)]) == 0
    assert "not found on this machine: the library's photographs are expected under" in (
        capsys.readouterr().out
    )
