"""Find the pill first: segmenter + normalised crop + classifier, one answer per pill.

Uses the bundled segmenter (models/rxvision-segmenter) on photos composed from the
built-in sample pills, and a random-weight crop model: the contracts here are where the
pills are and what reaches the classifier, not what it answers.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, SAMPLE_MANIFEST, make_config
from fastapi.testclient import TestClient
from PIL import Image

from rxvision.cli import main
from rxvision.data import load_dataset, load_image
from rxvision.identify import IdentifierError
from rxvision.identify.answers import TypedFacts
from rxvision.identify.pipeline import (
    PICK_AMONG,
    SEGMENTER_DIR,
    CropTransform,
    PillPipeline,
    crop_transform_for,
    find_segmenter,
    model_framing,
    pick_the_pill,
)
from rxvision.locate import C3PI_GREY, Segmenter
from rxvision.locate.presence import NO_PILL, TOO_DARK, TOO_SMALL
from rxvision.locate.segmenter import pill_likeness

BUNDLED_SEGMENTER = REPO_ROOT / "models" / "rxvision-segmenter"


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter.load(BUNDLED_SEGMENTER)


@pytest.fixture(scope="module")
def sides() -> list[np.ndarray]:
    from rxvision.locate.composite import sides_from_images

    return sides_from_images([load_image(s.path) for s in load_dataset(SAMPLE_MANIFEST).samples])


@pytest.fixture
def crop_model(artifact_factory: Any) -> Path:
    """A random-weight classifier trained (as its card says) on pill crops, with the
    bundled segmenter copied in as its own pill finder."""
    labels = [s.label for s in load_dataset(SAMPLE_MANIFEST).samples]
    cfg = make_config(num_classes=len(labels), overrides=["augment.framing=crop"])
    path = artifact_factory("crop", labels=labels, config=cfg)
    shutil.copytree(BUNDLED_SEGMENTER, path / SEGMENTER_DIR)
    return path


def _photo(sides: list[np.ndarray], positions: list[tuple[int, int]], longest: int = 70
           ) -> Image.Image:
    """Sample pill sides on a flat beige surface, 320x240."""
    photo = Image.new("RGB", (320, 240), (170, 150, 120))
    for i, (x, y) in enumerate(positions):
        side = Image.fromarray(sides[(5 * i) % len(sides)], "RGBA")
        k = longest / max(side.size)
        side = side.resize((round(side.size[0] * k), round(side.size[1] * k)))
        photo.paste(side, (x, y), side)
    return photo


def test_framing_comes_from_the_card():
    assert model_framing({}) == "photo"
    assert model_framing({"config": {"augment": {"framing": "crop"}}}) == "crop"


def test_crop_model_without_a_finder_is_an_error(artifact_factory: Any):
    cfg = make_config(overrides=["augment.framing=crop"])
    path = artifact_factory("bare", config=cfg)
    with pytest.raises(IdentifierError, match="needs a pill finder"):
        find_segmenter(path)
    card = {"config": cfg.to_dict(), "preprocessing": {}}
    with pytest.raises(IdentifierError, match="needs a pill finder"):
        crop_transform_for(card, path)
    # A whole-photo model needs none: its card's own transform applies.
    assert crop_transform_for({"config": make_config().to_dict()}, path) is None


def test_every_pill_gets_its_own_answer(crop_model: Path, sides: list[np.ndarray]):
    pipeline = PillPipeline.load(crop_model, tta=1)
    photo = _photo(sides, [(20, 30), (200, 140)])
    answer = pipeline.identify(photo, topk=3)
    assert answer.retake is None
    assert len(answer.pills) == 2
    centres = sorted(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
                     for b in (p.box for p in answer.pills))
    assert centres[0][0] < 120 < 180 < centres[1][0]  # one pill left, one right
    for pill in answer.pills:
        assert len(pill.identification.candidates) == 3
        assert 0.0 < pill.finder_score <= 1.0
    as_json = answer.to_dict()
    assert len(as_json["pills"]) == 2 and "box" in as_json["pills"][0]


def test_a_photo_without_a_pill_is_a_retake(crop_model: Path):
    pipeline = PillPipeline.load(crop_model, tta=1)
    answer = pipeline.identify(Image.new("RGB", (320, 240), (170, 150, 120)))
    assert answer.pills == [] and answer.retake == NO_PILL


def test_crop_transform_shows_the_pill_alone_on_grey(segmenter: Segmenter,
                                                      sides: list[np.ndarray]):
    card_pre = {"input_size": [96, 96], "mean": [0.0] * 3, "std": [1.0] * 3}
    transform = CropTransform(segmenter, card_pre)
    crop, region = transform.crop(_photo(sides, [(120, 80)]))
    assert region is not None and crop.size == (96, 96)
    corner = np.asarray(crop)[0, 0]
    assert tuple(int(v) for v in corner) == C3PI_GREY  # the surface is gone
    x, pill_px, finder_score, likeness = transform(_photo(sides, [(120, 80)]))
    assert x.shape == (PICK_AMONG, 3, 96, 96) and torch.isfinite(x).all()
    x0, y0, x1, y1 = region.box  # the size the size temperature reads
    assert pill_px[0] == max(x1 - x0, y1 - y0) > 0
    assert finder_score[0] == region.score > 0  # what the finder gate reads
    assert likeness[0] == pytest.approx(pill_likeness(region)) and likeness[0] >= likeness[1]
    # Nothing found: the whole photo is letterboxed (and will most likely be answered wrong).
    _, none = transform.crop(Image.new("RGB", (200, 150), (90, 90, 90)))
    assert none is None


def test_a_dark_photo_is_a_retake_before_any_pill_is_looked_for(crop_model: Path,
                                                                  sides: list[np.ndarray]):
    pipeline = PillPipeline.load(crop_model, tta=1)
    dark = Image.fromarray((np.asarray(_photo(sides, [(120, 80)])) * 0.05).astype(np.uint8))
    answer = pipeline.identify(dark)
    assert answer.pills == [] and answer.retake == TOO_DARK
    assert "find" not in answer.timings_ms  # the finder never ran


def test_a_pill_smaller_than_the_minimum_is_a_retake(crop_model: Path,
                                                     sides: list[np.ndarray]):
    pipeline = PillPipeline.load(crop_model, tta=1)
    photo = _photo(sides, [(120, 80)])
    assert pipeline.identify(photo).pills[0].identification.retake is None
    pipeline.min_pill_px = 200  # the pill spans ~70 px
    pill = pipeline.identify(photo).pills[0]
    assert pill.identification.retake == TOO_SMALL
    assert pill.identification.candidates == [] and pill.identification.abstain


def test_a_region_the_finder_doubts_is_never_answered(crop_model: Path,
                                                      sides: list[np.ndarray]):
    """The finder gate (identification.min_finder_score): an answer about a region whose
    finder score is below it becomes "not sure"; the card sets it, and a bad value is an
    error naming the field."""
    from rxvision.artifact import read_card, update_card

    photo = _photo(sides, [(120, 80)])
    pipeline = PillPipeline.load(crop_model, tta=1)
    assert pipeline.min_finder_score == 0.0  # a card without the field: no gate
    pipeline.identifier.abstain_threshold, pipeline.identifier.ood_threshold = 0.0, None
    pill = pipeline.identify(photo).pills[0]
    assert not pill.identification.abstain and pill.identification.message == "ok"
    settings = read_card(crop_model).get("identification") or {}
    update_card(crop_model, identification={**settings,
                                             "min_finder_score": pill.finder_score + 1e-3})
    gated = PillPipeline.load(crop_model, tta=1)
    gated.identifier.abstain_threshold, gated.identifier.ood_threshold = 0.0, None
    held = gated.identify(photo).pills[0].identification
    assert held.abstain and held.message == "not sure"
    assert held.candidates[0].label == pill.identification.candidates[0].label  # still shown
    update_card(crop_model, identification={**settings,
                                             "min_finder_score": pill.finder_score - 1e-3})
    passed = PillPipeline.load(crop_model, tta=1)
    passed.identifier.abstain_threshold, passed.identifier.ood_threshold = 0.0, None
    assert not passed.identify(photo).pills[0].identification.abstain
    update_card(crop_model, identification={**settings, "min_finder_score": "high"})
    with pytest.raises(IdentifierError, match="min_finder_score"):
        PillPipeline.load(crop_model, tta=1)
    update_card(crop_model, identification={**settings, "min_finder_score": 1.5})
    with pytest.raises(IdentifierError, match="min_finder_score"):
        PillPipeline.load(crop_model, tta=1)


def test_typed_facts_describe_one_pill(crop_model: Path, sides: list[np.ndarray]):
    pipeline = PillPipeline.load(crop_model, tta=1)
    typed = TypedFacts.parse("M 411", None, None)
    with pytest.raises(IdentifierError, match="photo shows 2"):
        pipeline.identify(_photo(sides, [(20, 30), (200, 140)]), typed=typed)


def test_typed_facts_go_to_the_one_pill_the_pipeline_is_sure_of(crop_model: Path,
                                                                 sides: list[np.ndarray]):
    """Regions the pipeline never answers about (under the finder gate, too small) do not
    make typed facts ambiguous; two pills it would answer about do."""
    photo = _photo(sides, [(20, 30)], longest=40)
    big = Image.fromarray(sides[1], "RGBA")
    big = big.resize((110, round(110 * big.size[1] / big.size[0])))
    photo.paste(big, (170, 90), big)
    pipeline = PillPipeline.load(crop_model, tta=1)
    pills = pipeline.find(photo).pills
    assert len(pills) == 2
    with pytest.raises(IdentifierError, match="2 of them clearly pills"):
        pipeline.typed_candidates(pills)  # the card has no same-photo rule
    pipeline.min_pill_px = 60  # the small pill spans ~40 px
    (only,) = pipeline.typed_candidates(pills)
    assert pills[only].box[0] > 120  # the large pill on the right
    # The service keeps that pill's row of the batch (and its read) alone.
    from rxvision.serve.service import Decoded, keep_typed_pill

    rows = np.stack([pipeline.transform.array(p.crop) for p in pills])
    decoded = Decoded(None, photo, rows, 0.0, pills=pills, reads=[None, None])  # type: ignore[arg-type]
    keep_typed_pill(pipeline, decoded)
    assert decoded.tensor.shape[0] == len(decoded.pills) == len(decoded.reads) == 1
    assert decoded.pills[0].box[0] > 120
    pipeline.min_finder_score = min(0.999999, max(p.finder_score for p in pills) + 1e-6)
    with pytest.raises(IdentifierError, match="0 of them clearly pills"):
        pipeline.typed_candidates(pills)


def test_front_and_back_fuse_into_one_answer(crop_model: Path, sides: list[np.ndarray],
                                             tmp_path: Path):
    pipeline = PillPipeline.load(crop_model, tta=1)
    front, back = tmp_path / "front.png", tmp_path / "back.png"
    _photo(sides, [(20, 30)]).save(front)
    _photo(sides, [(150, 100)]).save(back)
    answer = pipeline.identify_pair(front, back, topk=2)
    assert len(answer.identification.candidates) == 2
    assert answer.box[0] < 100  # the front's pill
    Image.new("RGB", (320, 240), (170, 150, 120)).save(back)
    empty = pipeline.identify_pair(front, back)
    assert empty.pills == [] and empty.retake == f"back: {NO_PILL}"


def test_predict_answers_each_pill_of_a_photo(crop_model: Path, sides: list[np.ndarray],
                                             tmp_path: Path, capsys: pytest.CaptureFixture):
    photo, empty = tmp_path / "two.png", tmp_path / "empty.png"
    _photo(sides, [(20, 30), (200, 140)]).save(photo)
    Image.new("RGB", (320, 240), (170, 150, 120)).save(empty)
    args = ["predict", "--model", str(crop_model), "--tta", "1", "--no-library"]
    assert main([*args, "--json", str(photo), str(empty)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["image"], r["pills"]) for r in rows] == [
        (str(photo), 2), (str(photo), 2), (str(empty), 0)]
    assert [r.get("pill") for r in rows] == [1, 2, None]
    assert all(len(r["box"]) == 4 for r in rows[:2]) and rows[2]["retake"] == NO_PILL
    assert main([*args, str(photo)]) == 0
    text = capsys.readouterr().out
    assert "pill 1 of 2 at (" in text and "pill 2 of 2 at (" in text
    assert main([*args, "--explain", str(tmp_path / "why"), str(photo)]) == 0
    assert sorted(p.name for p in (tmp_path / "why").iterdir()) == sorted(
        f"two_pill{n}_{kind}.png" for n in (1, 2) for kind in ("attention", "gradcam",
                                                                "occlusion"))
    capsys.readouterr()
    out = tmp_path / "rows.csv"
    assert main([*args, "--out", str(out), str(photo), str(empty)]) == 0
    table = list(csv.DictReader(out.open()))
    assert [t["pill"] for t in table] == ["1", "2", ""]
    assert len(table[0]["box"].split()) == 4


def test_a_segmenter_for_a_whole_photo_model_is_an_error(sample_artifact: Path,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture):
    photo = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (120, 10, 10)).save(photo)
    code = main(["predict", "--model", str(sample_artifact), "--segmenter",
                 str(BUNDLED_SEGMENTER), str(photo)])
    assert code != 0 and "this one sees whole photos" in capsys.readouterr().err


@pytest.fixture
def crop_client(crop_model: Path) -> Iterator[TestClient]:
    from rxvision.serve import ServeSettings, create_app

    app = create_app(ServeSettings(model=crop_model, tta=1, warmup=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_the_api_answers_each_pill_with_its_box(crop_client: TestClient,
                                                sides: list[np.ndarray]):
    info = crop_client.get("/v1/model").json()
    assert info["capabilities"]["finds_pills"] and info["capabilities"]["explain"]
    two = _png(_photo(sides, [(20, 30), (200, 140)]))
    body = crop_client.post("/v1/identify", files={"image": ("two.png", two, "image/png")},
                            data={"topk": "2"}).json()
    assert len(body["pills"]) == 2 and body["result"] == body["pills"][0]
    lefts = sorted(p["box"][0] for p in body["pills"])
    assert lefts[0] < 120 < lefts[1]
    assert all(len(p["candidates"]) == 2 and 0 < p["finder_score"] <= 1 for p in body["pills"])
    empty = _png(Image.new("RGB", (320, 240), (170, 150, 120)))
    resp = crop_client.post("/v1/identify", files={"image": ("e.png", empty, "image/png")})
    assert resp.status_code == 200
    body = resp.json()
    assert body["result"]["retake"] == NO_PILL and body["result"]["candidates"] == []
    assert len(body["pills"]) == 1 and body["pills"][0]["box"] is None
    batch = crop_client.post("/v1/identify/batch", files=[
        ("images", ("two.png", two, "image/png")), ("images", ("e.png", empty, "image/png"))])
    body = batch.json()
    assert [len(p) for p in body["pills"]] == [2, 1]
    assert body["results"][1]["retake"] == NO_PILL
    pair = crop_client.post("/v1/identify", files={
        "front": ("f.png", two, "image/png"), "back": ("b.png", empty, "image/png")}).json()
    assert pair["mode"] == "pair" and pair["result"]["retake"] == f"back: {NO_PILL}"
    explain = crop_client.post("/v1/identify", files={"image": ("two.png", two, "image/png")},
                               data={"explain": "true"}).json()
    for pill in explain["pills"]:  # drawn on each pill's own crop
        overlays = pill["explanations"]["image"]
        assert set(overlays) == {"attention", "gradcam", "occlusion"}
        assert all(url.startswith("data:image/png;base64,") for url in overlays.values())


def test_evaluation_keeps_the_row_of_each_photos_picked_candidate() -> None:
    """evaluate classifies PICK_AMONG crops per photo and keeps one row each."""
    from rxvision.engine.evaluate import the_pill_rows

    probs = [[0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.5, 0.25, 0.25]]
    rows = the_pill_rows(np.log(np.array(probs, dtype=np.float32)),
                         np.array([[1.0, 0.8], [1.0, 0.8]]))
    assert rows.tolist() == [1, 2]  # photo 0: its second candidate; photo 1: its first


def test_the_api_and_the_pipeline_take_the_same_pill_of_each_side_of_a_pair(
        crop_client: TestClient, crop_model: Path, sides: list[np.ndarray]):
    """A front/back pair whose front shows two pills: the service picks "the pill" of each
    side from its candidates after the batched pass, as identify_pair does."""
    front, back = _photo(sides, [(20, 30), (200, 140)]), _photo(sides, [(150, 100)])
    expected = PillPipeline.load(crop_model, tta=1).identify_pair(front, back, topk=2)
    body = crop_client.post("/v1/identify", data={"topk": "2"}, files={
        "front": ("f.png", _png(front), "image/png"),
        "back": ("b.png", _png(back), "image/png")}).json()
    assert body["mode"] == "pair" and body["result"]["box"] == expected.box
    assert [c["label"] for c in body["result"]["candidates"]] == [
        c.label for c in expected.identification.candidates]
    assert body["result"]["confidence"] == pytest.approx(
        expected.identification.confidence, abs=1e-4)


PRINTED = "00378-6440-01"  # MYLAN 6440 printed on one side of the capsule


@pytest.fixture
def library_crop_model(crop_model: Path, sample_dir: Path) -> Path:
    from rxvision.library.for_model import build_model_library

    build_model_library(sample_dir / "manifest.csv", crop_model)
    return crop_model


def _printed_photo(sample_dir: Path) -> Image.Image:
    """Both sides of the MYLAN 6440 capsule at the reference's own scale, one above the other."""
    from rxvision.locate.composite import sides_from_images

    photo = Image.new("RGB", (640, 480), (170, 150, 120))
    for y, side in zip((60, 260), sides_from_images(
            [load_image(sample_dir / "images" / f"{PRINTED}.jpg")]), strict=True):
        pill = Image.fromarray(side, "RGBA")
        photo.paste(pill, (40, y), pill)
    return photo


def test_the_imprint_read_names_the_pill(library_crop_model: Path, sample_dir: Path,
                                         tmp_path: Path, capsys: pytest.CaptureFixture):
    """A random-weight model cannot tell the pills apart; the imprint read off the printed
    side can, and the answer says so."""
    photo = _printed_photo(sample_dir)
    pipeline = PillPipeline.load(library_crop_model, imprint=True, tta=1)
    answers = [p.identification for p in pipeline.identify(photo, topk=3).pills]
    printed = [a for a in answers if "6440" in a.imprint["read"]]
    assert len(printed) == 1, [a.imprint for a in answers]
    assert printed[0].candidates[0].label == PRINTED
    assert printed[0].imprint["decided_by"] == "imprint" and printed[0].imprint["changed"]
    assert all(a.imprint["decided_by"] == "appearance" for a in answers
               if not a.imprint["read"])  # nothing read: the photo alone, unchanged
    plain = PillPipeline.load(library_crop_model, tta=1).identify(photo).pills
    assert all(p.identification.imprint is None for p in plain)
    path = tmp_path / "capsule.png"
    photo.save(path)
    args = ["predict", "--model", str(library_crop_model), "--tta", "1", str(path)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "read: " in text and "6440" in text
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any("6440" in r["imprint"]["read"] for r in rows)
    assert main([*args, "--json", "--no-imprint"]) == 0
    assert all("imprint" not in r for r in json.loads(capsys.readouterr().out))


def test_the_api_never_answers_a_region_the_finder_doubts(crop_model: Path,
                                                           sides: list[np.ndarray]):
    """The service decides in batches, apart from PillPipeline.identify: the finder gate
    holds there too."""
    from rxvision.artifact import read_card, update_card
    from rxvision.serve import ServeSettings, create_app

    body = _png(_photo(sides, [(120, 80)]))
    settings = {k: v for k, v in (read_card(crop_model).get("identification") or {}).items()
                if k != "ood_threshold"}
    messages = []
    for gate in (0.0, 0.999):
        update_card(crop_model, identification={**settings, "abstain_threshold": 0.0,
                                                 "min_finder_score": gate})
        app = create_app(ServeSettings(model=crop_model, tta=1, warmup=False))
        with TestClient(app, raise_server_exceptions=False) as client:
            resp = client.post("/v1/identify", files={"image": ("p.png", body, "image/png")})
            info = client.get("/v1/model").json()
        assert info["identification"]["min_finder_score"] == gate
        assert resp.status_code == 200, resp.text
        (pill,) = resp.json()["pills"]
        assert pill["finder_score"] < 0.999
        messages.append((pill["abstain"], pill["message"]))
    assert messages == [(False, "ok"), (True, "not sure")]


def test_the_api_and_page_fields_carry_the_imprint_read(library_crop_model: Path,
                                                        sample_dir: Path):
    from rxvision.serve import ServeSettings, create_app

    body = _png(_printed_photo(sample_dir))
    for imprint in (True, False):
        app = create_app(ServeSettings(model=library_crop_model, tta=1, warmup=False,
                                       imprint=imprint))
        with TestClient(app, raise_server_exceptions=False) as client:
            resp = client.post("/v1/identify", files={"image": ("c.png", body, "image/png")})
        assert resp.status_code == 200, resp.text
        reads = [p["imprint"] for p in resp.json()["pills"]]
        if imprint:
            assert any("6440" in r["read"] and r["decided_by"] == "imprint" for r in reads)
        else:
            assert reads == [None] * len(reads)


def test_a_pair_reads_the_imprint_of_each_sides_picked_pill_only(
        library_crop_model: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A front/back pair through the API: each side's candidates are classified, "the
    pill" of each is picked, and only those two are read (OCR is the slow part); the
    answer's imprint is what identify_pair reads and decides."""
    from rxvision.serve import ServeSettings, create_app

    photo = _printed_photo(sample_dir)  # two regions: both are candidates for "the pill"
    expected = PillPipeline.load(library_crop_model, imprint=True, tta=1).identify_pair(
        photo, photo, topk=3)
    read_counts: list[int] = []
    original = PillPipeline.read_imprints

    def counting(self: PillPipeline, pills: list) -> list:
        read_counts.append(len(pills))
        return original(self, pills)

    monkeypatch.setattr(PillPipeline, "read_imprints", counting)
    app = create_app(ServeSettings(model=library_crop_model, tta=1, warmup=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.post("/v1/identify", data={"topk": "3"}, files={
            "front": ("f.png", _png(photo), "image/png"),
            "back": ("b.png", _png(photo), "image/png")})
    assert resp.status_code == 200, resp.text
    result = resp.json()["result"]
    assert sum(read_counts) == 2, read_counts  # not the four candidates
    assert result["box"] == expected.box
    assert result["imprint"]["read"] == expected.identification.imprint["read"]
    assert result["imprint"]["decided_by"] == expected.identification.imprint["decided_by"]
    assert [c["label"] for c in result["candidates"]] == [
        c.label for c in expected.identification.candidates]


def test_an_answer_the_read_does_not_separate_from_a_sibling_is_not_sure(
        library_crop_model: Path):
    """Only "M" read: M EC5 and M EC 10 (both white and round) fit it, so the photo alone
    must clear the threshold to answer M EC5; the whole imprint read, or typed, answers it."""
    from rxvision.identify.predict_io import format_text, result_row
    from rxvision.imprint import ImprintRead, ImprintToken

    pipeline = PillPipeline.load(library_crop_model, imprint=True, tta=1)
    ident = pipeline.identifier
    ident.abstain_threshold, ident.ood_threshold = 0.95, None
    answer, sibling = "00378-3855-77", "00378-3856-77"

    def photo(p_answer: float) -> np.ndarray:
        probs = np.full(len(ident.labels), (0.99 - p_answer) / (len(ident.labels) - 2))
        probs[ident.labels.index(answer)] = p_answer
        probs[ident.labels.index(sibling)] = 0.01
        return np.log(probs)

    def read(*texts: str) -> ImprintRead:
        return ImprintRead(tuple(ImprintToken(t, 0.95) for t in texts), "test", (120, 80),
                           1.0, 5.0)

    held = pipeline.decide(photo(0.90), 0.0, [read("M")], topk=3, pills=())
    assert held.top.label == answer and held.confidence > 0.95
    assert held.abstain and held.message == "not sure"
    others = {o["label"]: o["imprint"] for o in held.imprint["also_fits"]}
    assert others.get(sibling) == "M;EC;10", held.imprint
    assert "00093-5770-56" not in others  # white and round too, but the read rules it out
    text = format_text(result_row("p.png", held))
    assert f"also fits {sibling} (M EC 10)" in text and "check the whole imprint" in text
    whole = pipeline.decide(photo(0.90), 0.0, [read("M", "EC5")], topk=3, pills=())
    assert not whole.abstain and whole.imprint["also_fits"] == []
    typed = pipeline.decide(photo(0.90), 0.0, [read("M")], topk=3,
                            typed=TypedFacts.parse(imprint="M EC5"), pills=())
    assert typed.top.label == answer and not typed.abstain
    sure = pipeline.decide(photo(0.97), 0.0, [read("M")], topk=3, pills=())  # photo sure enough
    assert not sure.abstain and sure.imprint["also_fits"]


def test_the_sibling_check_looks_at_the_answer_typed_facts_give(library_crop_model: Path):
    """The photo favours LCI 1789 (blue, round); "M" is read and the user types white and
    round, which makes M EC5 the answer. The read does not tell M EC5 from M EC 10, and the
    photo alone gives M EC5 5%: the check must look at M EC5, not at the blue pill the
    imprint alone left on top, and hold the answer back."""
    from rxvision.imprint import ImprintRead, ImprintToken

    pipeline = PillPipeline.load(library_crop_model, imprint=True, tta=1)
    ident = pipeline.identifier
    ident.abstain_threshold, ident.ood_threshold = 0.5, None
    answer, sibling, blue = "00378-3855-77", "00378-3856-77", "00527-1789-01"
    probs = np.full(len(ident.labels), 1e-5)
    probs[ident.labels.index(blue)] = 0.9
    probs[ident.labels.index(answer)] = 0.05
    probs[ident.labels.index(sibling)] = 1e-3
    log_probs = np.log(probs / probs.sum())
    read = ImprintRead((ImprintToken("M", 0.95),), "test", (120, 80), 1.0, 5.0)
    untyped = pipeline.decide(log_probs, 0.0, [read], topk=3, pills=())
    assert untyped.top.label == blue and untyped.imprint["also_fits"] == []
    typed = pipeline.decide(log_probs, 0.0, [read], topk=3,
                            typed=TypedFacts.parse(None, "WHITE", "ROUND"), pills=())
    assert typed.top.label == answer and typed.confidence > ident.abstain_threshold
    assert sibling in {o["label"] for o in typed.imprint["also_fits"]}, typed.imprint
    assert typed.imprint["photo_confidence"] == pytest.approx(0.05, abs=0.01)
    assert typed.abstain and typed.message == "not sure"


def test_the_cards_imprint_weight_tempers_the_read(library_crop_model: Path,
                                                   sample_dir: Path):
    from rxvision.artifact import read_card, update_card

    settings = read_card(library_crop_model).get("identification") or {}
    update_card(library_crop_model, identification={**settings, "imprint_weight": 0.0})
    pipeline = PillPipeline.load(library_crop_model, imprint=True, tta=1)
    assert pipeline.imprint is not None and pipeline.imprint.weight == 0.0
    answers = [p.identification for p in pipeline.identify(_printed_photo(sample_dir)).pills]
    assert any("6440" in a.imprint["read"] for a in answers)  # still read and reported ...
    assert all(not a.imprint["changed"] for a in answers)  # ... but weighs nothing
    update_card(library_crop_model, identification={**settings, "imprint_weight": -1.0})
    with pytest.raises(IdentifierError, match="imprint weight"):
        PillPipeline.load(library_crop_model, imprint=True, tta=1)


def test_one_pill_asked_for_gets_the_candidates_evaluation_weighs(
        crop_model: Path, segmenter: Segmenter, sides: list[np.ndarray]):
    from rxvision.locate import PillRegion
    from rxvision.locate.segmenter import most_pill_like

    speck = PillRegion((0, 0, 4, 4), np.ones((4, 4), bool), 0.95)
    pill = PillRegion((10, 10, 50, 40), np.ones((30, 40), bool), 0.90)
    assert most_pill_like([speck, pill]) is pill  # score order alone would take the speck
    with pytest.raises(ValueError, match="no region"):
        most_pill_like([])
    # A small pill and a large one: the pair path weighs CropTransform's candidates.
    photo = _photo(sides, [(20, 30)], longest=40)
    big = Image.fromarray(sides[1], "RGBA")
    big = big.resize((110, round(110 * big.size[1] / big.size[0])))
    photo.paste(big, (170, 90), big)
    pipeline = PillPipeline.load(crop_model, tta=1)
    one = pipeline.find(photo, max_pills=1).pills  # the candidates, most pill-like first
    crops = CropTransform(segmenter, pipeline.identifier.preprocessing).crops(photo)
    assert len(one) == len(crops) == PICK_AMONG
    assert [p.box for p in one] == [list(r.box) for _, r in crops if r is not None]
    assert one[0].box[0] > 120  # the large pill on the right
    assert one[0].likeness > one[1].likeness > 0


def test_the_pill_of_a_photo_is_the_candidate_the_classifier_recognises_best() -> None:
    """pick_the_pill weighs pill-likeness by the classifier's top probability: a finder's
    favourite the classifier cannot place loses to a slightly less pill-like region it
    recognises; a padded candidate (likeness 0) is never taken."""
    def lp(*top: float) -> np.ndarray:  # (K, 3): each row's top probability given
        return np.log(np.array([[t, (1 - t) / 2, (1 - t) / 2] for t in top]))

    assert pick_the_pill(np.array([1.0, 0.8]), lp(0.4, 0.9)) == 1
    assert pick_the_pill(np.array([1.0, 0.8]), lp(0.6, 0.7)) == 0
    assert pick_the_pill(np.array([1.0, 0.0]), lp(0.34, 1.0)) == 0
    batch = np.stack([lp(0.4, 0.9), lp(0.9, 0.4)])  # (B, K, C) -> (B,)
    assert pick_the_pill(np.array([[1.0, 0.8], [1.0, 0.8]]), batch).tolist() == [1, 0]


def test_a_photo_without_a_pill_is_one_shape_of_row(crop_model: Path, sides: list[np.ndarray]):
    from rxvision.identify.identifier import MESSAGE_RETAKE
    from rxvision.identify.pipeline import PhotoAnswer
    from rxvision.identify.predict_io import pill_rows

    [row] = pill_rows("empty.jpg", PhotoAnswer([], NO_PILL, {"decode": 1.0}), "00002-3229-30")
    assert row["retake"] == NO_PILL and row["message"] == MESSAGE_RETAKE
    assert row["abstain"] is True and row["topk"] == [] and row["pills"] == 0
    assert row["timings_ms"] == {"decode": 1.0} and row["true_label"] == "00002-3229-30"
    # Every field an answered pill's row has, but the pill's own (number, box, score).
    pipeline = PillPipeline.load(crop_model, tta=1)
    answered = pill_rows("a.jpg", pipeline.identify(_photo(sides, [(120, 80)])))[0]
    assert set(answered) - set(row) == {"pill", "box", "finder_score"}


def _with_same_photo_rule(model: Path, temperature: float, prior: float) -> None:
    from rxvision.artifact import read_card, update_card

    settings = read_card(model).get("identification") or {}
    update_card(model, identification={**settings, "min_finder_score": 0.0,
                                       "same_photo": {"temperature": temperature,
                                                      "prior": prior}})


def test_two_sure_pills_of_one_photo_are_weighed_as_one_pill(crop_model: Path,
                                                             sides: list[np.ndarray]):
    """With the card's same-photo rule each of the photo's two sure pills is answered from
    the mixture of the pair's product and its own ranking (fusion.SamePhotoRule), in the
    pipeline and in the service alike; without a rule each is answered alone."""
    from rxvision.serve import ServeSettings, create_app

    photo = _photo(sides, [(20, 30), (200, 140)])
    _with_same_photo_rule(crop_model, 1.5, 0.5)
    pipeline = PillPipeline.load(crop_model, tta=1)
    labels = pipeline.identifier.labels
    found = pipeline.find(photo).pills
    assert sorted(p.rank for p in found) == [0, 1]
    own, _ = pipeline.classify(found)
    answer = pipeline.identify(photo, topk=len(labels))
    assert [p.box for p in answer.pills] == [p.box for p in found]
    rule = pipeline.identifier.same_photo
    for i, pill in enumerate(answer.pills):
        expected, w = rule.fuse(own[i], own[1 - i])
        same = pill.identification.same_photo
        assert same["with_box"] == found[1 - i].box
        assert same["same_pill_probability"] == pytest.approx(float(w), abs=1e-4)
        got = {c.label: c.probability for c in pill.identification.candidates}
        np.testing.assert_allclose([got[lab] for lab in labels], np.exp(expected), atol=1e-5)
    app = create_app(ServeSettings(model=crop_model, tta=1, warmup=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        body = client.post("/v1/identify", files={"image": ("two.png", _png(photo),
                                                            "image/png")},
                           data={"topk": str(len(labels))}).json()
        info = client.get("/v1/model").json()
    assert info["identification"]["same_photo"] == {"temperature": 1.5, "prior": 0.5}
    for pill, api in zip(answer.pills, body["pills"], strict=True):
        assert api["same_photo"] == pill.identification.same_photo
        assert api["confidence"] == pytest.approx(pill.identification.confidence, abs=1e-4)
    # A weighed answer needs the pill alone to be sure of it: in between, "not sure".
    from rxvision.identify.pipeline import sure_on_its_own

    weighed = rule.fuse(own[0], own[1])[0]
    alone = float(np.exp(own[0][np.argmax(weighed)]))
    assert float(np.exp(weighed.max())) > alone  # the pair is surer than the pill alone
    between = (alone + float(np.exp(weighed.max()))) / 2
    assert not sure_on_its_own(weighed, own[0], between)
    assert sure_on_its_own(weighed, own[0], alone)
    assert sure_on_its_own(np.stack([weighed, weighed]), own[:2], alone).tolist() == [
        True, bool(np.exp(own[1][np.argmax(weighed)]) >= alone)]
    pipeline.identifier.abstain_threshold, pipeline.identifier.ood_threshold = between, None
    first = pipeline.identify(photo).pills[0].identification
    assert first.abstain and first.message == "not sure"
    pipeline.identifier.abstain_threshold = 0.0
    assert not pipeline.identify(photo).pills[0].identification.abstain
    pipeline.identifier.same_photo = None  # no rule: each pill alone
    for i, pill in enumerate(pipeline.identify(photo, topk=len(labels)).pills):
        assert pill.identification.same_photo is None
        assert pill.identification.confidence == pytest.approx(float(np.exp(own[i].max())),
                                                               abs=1e-5)


def test_typed_facts_on_a_photo_of_one_pill_seen_twice(library_crop_model: Path,
                                                       sample_dir: Path):
    """Both sides of one capsule in one photo: typed facts describe them as one pill when
    the photo makes that more likely than not; otherwise they stay an error (a 422)."""
    from rxvision.serve import ServeSettings, create_app

    photo, typed = _printed_photo(sample_dir), TypedFacts.parse("MYLAN 6440", None, None)
    for prior, expect in ((1 - 1e-9, "one answer"), (1e-9, "error")):
        _with_same_photo_rule(library_crop_model, 1.5, prior)
        pipeline = PillPipeline.load(library_crop_model, tta=1)
        pills = pipeline.find(photo).pills
        assert len(pipeline.typed_candidates(pills)) == 2
        app = create_app(ServeSettings(model=library_crop_model, tta=1, warmup=False,
                                       imprint=False))
        with TestClient(app, raise_server_exceptions=False) as client:
            resp = client.post("/v1/identify", files={"image": ("c.png", _png(photo),
                                                                "image/png")},
                               data={"imprint": "MYLAN 6440"})
        if expect == "error":
            with pytest.raises(IdentifierError, match="not look like the same one"):
                pipeline.identify(photo, typed=typed)
            assert resp.status_code == 422 and "same one" in resp.json()["detail"]
            continue
        (answer,) = pipeline.identify(photo, typed=typed).pills
        same = answer.identification.same_photo
        assert same["same_pill_probability"] > 0.5
        assert answer.box in [p.box for p in pills] and same["with_box"] != answer.box
        assert answer.identification.typed is not None
        assert resp.status_code == 200, resp.text
        (api,) = resp.json()["pills"]
        assert api["box"] == answer.box and api["same_photo"] == same


def test_evaluation_weighs_each_photos_pill_as_the_pipeline_does() -> None:
    """evaluate keeps logits: a weighed photo's row is T * log p + c, the rule's
    distribution at the photo's temperature, with the pill's own energy score."""
    from rxvision.engine.evaluate import candidate_log_probs, same_photo_logits
    from rxvision.identify.fusion import SamePhotoRule
    from rxvision.logmath import log_softmax, logsumexp

    class Backend:
        temperature = 2.0

        def __init__(self, identification: dict[str, Any]) -> None:
            self.card = {"identification": identification}

    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(6, 7)) * 4).astype(np.float32)  # 3 photos x 2 candidates
    px = np.full((3, 2), 100.0)
    score = np.array([[0.9, 0.9], [0.9, 0.2], [0.9, 0.9]])  # photo 1: second doubted
    likeness = np.array([[1.0, 0.8], [1.0, 0.8], [1.0, 0.0]])  # photo 2: one candidate
    rows = np.array([1, 2, 4])
    rule = {"min_finder_score": 0.5, "same_photo": {"temperature": 1.5, "prior": 0.5}}
    log_probs, temps = candidate_log_probs(Backend(rule), logits, px)
    kept, alone = same_photo_logits(Backend(rule), logits, log_probs, temps, px, score,
                                    likeness, rows)
    lp = log_softmax(logits / 2.0)
    expected, _ = SamePhotoRule(1.5, 0.5).fuse(lp[1], lp[0])
    np.testing.assert_allclose(log_softmax(kept[0] / 2.0), expected, atol=1e-4)
    assert float(logsumexp(kept[0])) == pytest.approx(float(logsumexp(logits[1])), abs=1e-3)
    top = int(np.argmax(expected))
    assert alone[0] == pytest.approx(float(np.exp(lp[1, top])), rel=1e-5)  # the pill's own
    np.testing.assert_allclose(kept[1:], logits[[2, 4]])  # not both sure: as they were
    assert np.isnan(alone[1:]).all()
    assert same_photo_logits(Backend({}), logits, log_probs, temps, px, score, likeness,
                             rows) is None
