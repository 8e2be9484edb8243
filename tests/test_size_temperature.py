"""A temperature by the pill's size in the photo: the model, its fit, and that every path
(pipeline, API, calibrate, evaluate) calibrates each pill at its own size.

The pipeline tests use the bundled segmenter on photos composed from the built-in sample
pills, and a random-weight crop model: the contract is which temperature each pill gets,
not what the model answers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_MANIFEST, make_config
from PIL import Image

from rxvision.artifact import ArtifactError
from rxvision.cli import main
from rxvision.data import load_dataset, load_image
from rxvision.engine.calibration import (
    SizeSpreadError,
    calibrate_by_size,
    fit_size_temperature,
)
from rxvision.engine.metrics import softmax
from rxvision.identify.pipeline import (
    SEGMENTER_DIR,
    PillPipeline,
    pill_sizes,
    size_temperature_range,
)
from rxvision.identify.temperature import SizeTemperature, row_temperatures
from rxvision.locate.composite import sides_from_images
from rxvision.logmath import log_softmax

BUNDLED_SEGMENTER = REPO_ROOT / "models" / "rxvision-segmenter"
STEEP = SizeTemperature(log_t=0.0, slope=-1.5, px_min=36.0, px_max=180.0)


# --- the model --------------------------------------------------------------------------
def test_temperature_follows_size_and_stops_at_the_clip_range():
    t = STEEP([10.0, 36.0, 100.0, 180.0, 900.0])
    assert t[0] == t[1] and t[3] == t[4]  # clipped at both ends
    assert t[2] == pytest.approx(1.0)  # exp(log_t) at px_ref
    assert t[1] == pytest.approx((36 / 100) ** -1.5) and t[1] > t[2] > t[3]


def test_sizes_unknown_or_absent_keep_the_single_temperature():
    temps = row_temperatures(1.25, STEEP, [0.0, float("nan"), 100.0])
    assert temps.tolist() == pytest.approx([1.25, 1.25, 1.0])
    assert row_temperatures(1.25, None, [50.0]) == 1.25
    assert row_temperatures(1.25, STEEP, None) == 1.25


def test_the_card_entry_round_trips_and_a_malformed_one_is_an_error():
    card = {"calibration": {"temperature": 1.0, "size_temperature": STEEP.to_dict()}}
    assert SizeTemperature.from_card(card) == STEEP
    assert SizeTemperature.from_card({"calibration": {"temperature": 1.0}}) is None
    for bad in ({"log_t": 0.0}, {**STEEP.to_dict(), "slope": "steep"},
                {**STEEP.to_dict(), "px_min": 200.0}, {**STEEP.to_dict(), "log_t": math.inf}):
        with pytest.raises(ArtifactError, match=r"size_temperature|px_min|non-finite"):
            SizeTemperature.from_card({"calibration": {"size_temperature": bad}})


# --- the fit ----------------------------------------------------------------------------
def synthetic_by_size(truth: SizeTemperature, n: int = 6000, c: int = 10, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels drawn from softmax(logits / truth(px)), and the sizes px."""
    rng = np.random.default_rng(seed)
    px = rng.uniform(30, 260, n)
    logits = rng.normal(size=(n, c)) * 3.0
    p = softmax(logits, truth(px))
    targets = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, targets, px


def test_the_fit_recovers_a_known_size_dependence():
    truth = SizeTemperature(log_t=0.2, slope=-0.6, px_min=36.0, px_max=180.0)
    logits, targets, px = synthetic_by_size(truth)
    fit = fit_size_temperature(logits, targets, px, 36.0, 180.0)
    assert fit.log_t == pytest.approx(0.2, abs=0.08)
    assert fit.slope == pytest.approx(-0.6, abs=0.12)
    study = calibrate_by_size(logits, targets, px, 36.0, 180.0,
                              single=math.exp(truth.log_t))
    assert study["nll_by_size"] < study["nll_single"]  # one T cannot fit every size
    assert study["ece_by_size"] < study["ece_single"]
    assert study["n_sized"] == len(px) and study["slope"] == pytest.approx(fit.slope, abs=1e-5)


def test_the_fit_refuses_photos_of_one_size():
    logits, targets, _ = synthetic_by_size(STEEP, n=400)
    with pytest.raises(SizeSpreadError, match="too narrow"):
        fit_size_temperature(logits, targets, np.full(400, 120.0), 36.0, 180.0)
    with pytest.raises(SizeSpreadError, match="too narrow"):  # all above the crop's detail
        fit_size_temperature(logits, targets, np.linspace(200, 900, 400), 36.0, 180.0)
    with pytest.raises(SizeSpreadError, match="only 10 photos"):
        fit_size_temperature(logits, targets, np.r_[np.linspace(40, 170, 10), np.zeros(390)],
                             36.0, 180.0)


def test_the_clip_range_comes_from_the_crop():
    lo, hi = size_temperature_range({"input_size": [224, 224]})
    assert lo == 36.0 and hi == pytest.approx(0.8 * 224)


# --- every path calibrates each pill at its own size ------------------------------------
@pytest.fixture
def crop_model(artifact_factory: Any) -> Path:
    labels = [s.label for s in load_dataset(SAMPLE_MANIFEST).samples]
    # 128 px: its crop holds a pill of up to 102 px, so 40-100 px pills span a range
    cfg = make_config(input_size=128, num_classes=len(labels),
                      overrides=["augment.framing=crop"])
    path = artifact_factory("crop", labels=labels, config=cfg)
    shutil.copytree(BUNDLED_SEGMENTER, path / SEGMENTER_DIR)
    return path


@pytest.fixture(scope="module")
def labelled_sides() -> list[tuple[str, np.ndarray]]:
    """(label, RGBA side) of the first cleanly cut side of each sample pill."""
    out = []
    for sample in load_dataset(SAMPLE_MANIFEST).samples:
        try:
            out.append((sample.label, sides_from_images([load_image(sample.path)])[0]))
        except ValueError:  # not separable from its background: not usable here
            continue
    return out


def _photo(pills: list[tuple[np.ndarray, tuple[int, int], int]]) -> Image.Image:
    """Sides (array, top-left, longer side in px) on a flat beige surface, 320x240."""
    photo = Image.new("RGB", (320, 240), (170, 150, 120))
    for side, at, longest in pills:
        img = Image.fromarray(side, "RGBA")
        k = longest / max(img.size)
        img = img.resize((round(img.size[0] * k), round(img.size[1] * k)))
        photo.paste(img, at, img)
    return photo


def _store(model: Path, by_size: SizeTemperature) -> None:
    card = json.loads((model / "card.json").read_text())
    card.setdefault("calibration", {})["size_temperature"] = by_size.to_dict()
    (model / "card.json").write_text(json.dumps(card))


def test_the_pipeline_and_the_api_calibrate_each_pill_at_its_size(
        crop_model: Path, labelled_sides: list[tuple[str, np.ndarray]]):
    from fastapi.testclient import TestClient

    from rxvision.serve import ServeSettings, create_app

    _store(crop_model, STEEP)
    side_a, side_b = labelled_sides[0][1], labelled_sides[5][1]
    photo = _photo([(side_a, (20, 40), 48), (side_b, (160, 60), 130)])
    pipeline = PillPipeline.load(crop_model, tta=1)
    found = pipeline.find(photo)
    sizes = sorted(pill_sizes(found.pills).tolist())
    assert len(sizes) == 2 and 40 <= sizes[0] <= 60 and sizes[1] > 1.6 * sizes[0]
    logits, _ = pipeline.identifier.forward(pipeline.inputs(found.pills))
    temps = STEEP(pill_sizes(found.pills))
    assert temps.max() / temps.min() > 2  # the two pills get clearly different T
    expected = np.exp(log_softmax(logits / temps[:, None]).max(axis=1))
    single = np.exp(log_softmax(logits / pipeline.identifier.temperature).max(axis=1))
    assert not np.allclose(expected, single, rtol=1e-3)  # the test can tell them apart
    answer = pipeline.identify(photo, topk=1)
    got = [p.identification.confidence for p in answer.pills]
    assert got == pytest.approx(expected.tolist(), rel=1e-4)

    app = create_app(ServeSettings(model=crop_model, tta=1, warmup=False))
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    with TestClient(app) as client:
        body = client.post("/v1/identify",
                           files={"image": ("p.png", buf.getvalue(), "image/png")}).json()
        info = client.get("/v1/model").json()
    assert info["size_temperature"]["slope"] == pytest.approx(STEEP.slope)
    assert [p["confidence"] for p in body["pills"]] == pytest.approx(expected.tolist(),
                                                                     rel=1e-4)


def _write_views(root: Path, labelled: list[tuple[str, np.ndarray]], sizes: list[int]
                 ) -> Path:
    """One photo per pill per size, and a manifest of them."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i, (label, side) in enumerate(labelled):
        for longest in sizes:
            name = f"images/{i:02d}_{longest}.png"
            _photo([(side, (30, 30), longest)]).save(root / name)
            rows.append({"image": name, "label": label})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_calibrate_fits_it_on_mixed_sizes_and_drops_it_when_asked(
        crop_model: Path, labelled_sides: list[tuple[str, np.ndarray]], tmp_path: Path,
        capsys: pytest.CaptureFixture):
    # two manifests, fitted on as one set, as renders at two resolutions would be
    small = _write_views(tmp_path / "small", labelled_sides, [40, 70])
    large = _write_views(tmp_path / "large", labelled_sides, [100])
    assert len(labelled_sides) * 3 >= 50
    args = ["calibrate", "--model", str(crop_model), "--workers", "0", "--no-progress",
            "--thresholds", "--abstain-threshold", "0.5"]
    assert main([*args, "--data", str(small), str(large)]) == 0
    assert "size temperature: T" in capsys.readouterr().out
    card = json.loads((crop_model / "card.json").read_text())
    assert card["calibration"]["fitted_on"] == f"{small} + {large}"
    stored = card["calibration"]["size_temperature"]
    assert SizeTemperature.from_card(card) is not None and stored["n_sized"] >= 50
    assert card["identification"]["by_size"] is True
    # evaluate scores each photo at its own size, and says so
    assert main(["evaluate", "--model", str(crop_model), "--data", str(small), "--workers", "0",
                 "--no-progress", "--tta", "1"]) == 0
    assert "by pill size" in capsys.readouterr().out

    one_size = _write_views(tmp_path / "one", labelled_sides, [69, 70, 71])
    code = main([*args, "--data", str(one_size), "--size-temperature"])
    assert code != 0 and "too narrow" in capsys.readouterr().err
    assert json.loads((crop_model / "card.json").read_text()) == card  # nothing written
    assert main([*args, "--data", str(one_size)]) == 0  # default: said, and dropped
    assert "no size temperature" in capsys.readouterr().out
    card = json.loads((crop_model / "card.json").read_text())
    assert "size_temperature" not in card["calibration"]
    assert card["identification"]["by_size"] is False


def test_size_temperature_needs_a_crop_model(sample_artifact: Path, sample_dir: Path,
                                             capsys: pytest.CaptureFixture):
    code = main(["calibrate", "--model", str(sample_artifact), "--data",
                 str(sample_dir / "manifest.csv"), "--workers", "0", "--no-progress",
                 "--size-temperature", "--dry-run"])
    assert code != 0 and "trained on pill crops" in capsys.readouterr().err
