"""Contracts of the pill segmenter, its composites, instances, crop, artifact and ONNX export.

Model-quality checks use the bundled segmenter (models/rxvision-segmenter) on composites of
the built-in sample pills at 320 px; everything else uses a random-weight network.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, SAMPLE_MANIFEST
from PIL import Image

from rxvision.artifact import ArtifactError
from rxvision.data import load_dataset, load_image
from rxvision.locate import C3PI_GREY, PillRegion, Segmenter, normalised_crop
from rxvision.locate.composite import CompositeParams, Composites, segmentation_targets
from rxvision.locate.instances import InstanceThresholds, split_instances
from rxvision.locate.scoring import box_iou, mask_iou, match_boxes
from rxvision.locate.segmenter import most_pill_like
from rxvision.locate.segnet import PillSegNet, SegNetConfig
from rxvision.locate.textures import SURFACES

BUNDLED = REPO_ROOT / "models" / "rxvision-segmenter"


@pytest.fixture(scope="module")
def sides() -> list[np.ndarray]:
    from rxvision.locate.composite import sides_from_images

    return sides_from_images([load_image(s.path) for s in load_dataset(SAMPLE_MANIFEST).samples])


@pytest.fixture(scope="module")
def bundled() -> Segmenter:
    torch.set_num_threads(1)
    return Segmenter.load(BUNDLED)


@pytest.fixture(scope="module")
def tiny() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(PillSegNet(SegNetConfig(pretrained="none", width=8)), input_longest=64)


def _photo(
    sides: list[np.ndarray],
    positions: list[tuple[int, int]],
    longest: int = 60,
    size: tuple[int, int] = (320, 240),
    colour: tuple[int, int, int] = (150, 135, 120),
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Sample pill sides pasted on a flat surface; returns the photo and the true boxes."""
    photo = Image.new("RGB", size, colour)
    boxes = []
    for i, (x, y) in enumerate(positions):
        side = Image.fromarray(sides[(3 * i) % len(sides)], "RGBA")
        k = longest / max(side.size)
        side = side.resize((round(side.size[0] * k), round(side.size[1] * k)))
        photo.paste(side, (x, y), side)
        ys, xs = np.nonzero(np.asarray(side.getchannel("A")) > 127)
        boxes.append((x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1))
    return photo, boxes


# -- composites and targets -----------------------------------------------------------------


def test_surfaces_are_float_rgb_in_range():
    rng = np.random.default_rng(0)
    for name, surface in SURFACES.items():
        img = surface(rng, 48, 64)
        assert img.shape == (48, 64, 3) and img.dtype == np.float32, name
        assert img.min() >= 0 and img.max() <= 1, name


def test_composites_give_exact_labels_and_separate_cores(sides):
    comp = Composites(
        sides, CompositeParams(size=96, photo_side=192, p_empty=0, p_one=0, p_few=1.0)
    )
    image, labels = comp.sample(np.random.default_rng(3))
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert labels.max() >= 1
    fg, core = segmentation_targets(labels)
    assert np.array_equal(fg > 0, labels > 0)
    for k in range(1, labels.max() + 1):
        if (labels == k).any():
            assert core[labels == k].any(), f"pill {k} has no core"
    # cores of different pills never touch: each connected core lies in one pill
    from scipy import ndimage

    core_labels, n = ndimage.label(core > 0)
    for c in range(1, n + 1):
        assert len(np.unique(labels[core_labels == c])) == 1


def test_split_instances_separates_touching_pills_and_drops_specks():
    yy, xx = np.mgrid[0:40, 0:80]
    left = (xx - 25) ** 2 + (yy - 20) ** 2 <= 15**2
    right = (xx - 54) ** 2 + (yy - 20) ** 2 <= 15**2  # overlaps the left disc
    fg = (left | right).astype(np.float32)
    core = (
        ((xx - 25) ** 2 + (yy - 20) ** 2 <= 6**2) | ((xx - 54) ** 2 + (yy - 20) ** 2 <= 6**2)
    ).astype(np.float32)
    fg[2, 2] = 1.0  # a speck
    labels, scores = split_instances(fg, core, InstanceThresholds())
    assert labels.max() == 2 and len(scores) == 2
    assert labels[20, 25] != labels[20, 54]
    assert labels[2, 2] == 0
    # without cores, the joined region is one pill
    labels, _ = split_instances(fg, np.zeros_like(core), InstanceThresholds())
    assert labels.max() == 1


def test_scoring_matches_boxes_one_to_one():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    match = match_boxes([(0, 0, 10, 10), (1, 1, 10, 10)], [(0, 0, 10, 10)])
    assert match.recall() == 1.0 and match.precision() == 0.5
    assert mask_iou(np.ones((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


# -- the bundled segmenter ------------------------------------------------------------------


def test_bundled_segments_composites(bundled, sides):
    comp = Composites(sides, CompositeParams(size=320, photo_side=320, max_blur=0.8))
    # Composites cut pills by the frame; the card's rule would drop those, so keep them here.
    keep_all = Segmenter(
        bundled.net,
        bundled.input_longest,
        dataclasses.replace(bundled.thresholds, keep_cut_by_frame=True),
    )
    rng = np.random.default_rng(7)
    inter = union = 0
    for _ in range(4):
        image, labels = comp.sample(rng)
        found = np.zeros(labels.shape, bool)
        for region in keep_all.find(Image.fromarray(image)):
            found |= region.full_mask((320, 320))
        inter += (found & (labels > 0)).sum()
        union += (found | (labels > 0)).sum()
    print(f"foreground IoU {inter / union:.3f}")
    assert inter / union > 0.7


def test_several_pills_give_several_boxes(bundled, sides):
    photo, truth = _photo(sides, [(20, 30), (130, 140), (220, 40)])
    regions = bundled.find(photo)
    assert len(regions) == 3
    assert match_boxes([r.box for r in regions], truth).recall(0.5) == 1.0
    for r in regions:
        assert r.mask.shape == (r.box[3] - r.box[1], r.box[2] - r.box[0])
        assert 0.0 <= r.score <= 1.0


def test_photo_without_pill_gives_none(bundled):
    rng = np.random.default_rng(1)
    for name in ("plain", "wood", "fabric"):
        surface = (SURFACES[name](rng, 240, 320) * 255).astype(np.uint8)
        assert bundled.find(Image.fromarray(surface)) == [], name


def test_find_refuses_non_images(bundled):
    with pytest.raises(TypeError, match="PIL image"):
        bundled.find(np.zeros((10, 10, 3), np.uint8))  # type: ignore[arg-type]


# -- normalised crop ------------------------------------------------------------------------


def test_normalised_crop_size_background_and_scale(sides):
    photo, (box,) = _photo(sides, [(100, 80)], longest=50)
    mask = np.asarray(photo.crop(box)).astype(int).sum(-1) != sum((150, 135, 120))
    region = PillRegion(box, mask, 0.9)
    crop = normalised_crop(photo, region, size=128, fill=0.75)
    assert crop.size == (128, 128) and crop.mode == "RGB"
    arr = np.asarray(crop)
    for corner in (arr[0, 0], arr[0, -1], arr[-1, 0], arr[-1, -1]):
        assert tuple(corner) == C3PI_GREY
    pill = np.abs(arr.astype(int) - C3PI_GREY).sum(-1) > 30
    ys, xs = np.nonzero(pill)
    assert max(xs.max() - xs.min(), ys.max() - ys.min()) + 1 == pytest.approx(96, abs=3)
    assert abs((xs.max() + xs.min()) / 2 - 63.5) <= 2 and abs((ys.max() + ys.min()) / 2 - 63.5) <= 2
    aligned = np.asarray(normalised_crop(photo, region, size=128, align=True))
    pill = np.abs(aligned.astype(int) - C3PI_GREY).sum(-1) > 30
    ys, xs = np.nonzero(pill)
    assert xs.max() - xs.min() >= ys.max() - ys.min()  # long axis horizontal


def test_normalised_crop_refuses_a_region_of_another_photo():
    region = PillRegion((0, 0, 50, 50), np.ones((50, 50), bool), 1.0)
    with pytest.raises(ValueError, match="outside"):
        normalised_crop(Image.new("RGB", (20, 20)), region)
    with pytest.raises(ValueError, match="mask shape"):
        normalised_crop(
            Image.new("RGB", (60, 60)), PillRegion((0, 0, 50, 50), np.ones((5, 5), bool), 1.0)
        )


# -- artifact and export --------------------------------------------------------------------


def test_artifact_round_trip(tiny, tmp_path):
    tiny.save(tmp_path / "seg", metrics={"x": 1})
    card = json.loads((tmp_path / "seg" / "card.json").read_text())
    assert card["format"] == "rxvision-segmenter-card/1"
    assert card["preprocessing"]["input_longest"] == 64 and "sha256" in card["weights"]
    assert card["thresholds"] == InstanceThresholds().to_dict()
    loaded = Segmenter.load(tmp_path / "seg")
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(tiny.net(x), loaded.net(x))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8))
    assert np.array_equal(tiny.probabilities(image), loaded.probabilities(image))


def _square_runner(squares_at: dict[int, list[tuple[float, float, float, float]]]):
    """A network stand-in: at a working width it finds the squares listed for that width
    (x0, y0, x1, y1 as fractions of the photo), certain foreground and core inside."""

    def run(x: np.ndarray) -> np.ndarray:
        _, _, h, w = x.shape
        logits = np.full((1, 2, h, w), -20.0, np.float32)
        for fx0, fy0, fx1, fy1 in squares_at.get(w, []):
            logits[0, :, round(fy0 * h):round(fy1 * h), round(fx0 * w):round(fx1 * w)] = 20.0
        return logits

    return run


def test_extra_working_sides_add_only_the_pills_not_found_before():
    pill_a, pill_b = (0.2, 0.2, 0.45, 0.45), (0.6, 0.55, 0.85, 0.8)
    # At 128 px the network sees pill A; at 64 px it sees A again (slightly off) and B.
    runner = _square_runner({128: [pill_a], 64: [(0.21, 0.2, 0.46, 0.45), pill_b]})
    data = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    photo = Image.new("RGB", (256, 256), (90, 90, 90))
    one = Segmenter(None, 128, runner=runner, data=data)
    both = Segmenter(None, 128, runner=runner, data=data, extra_longest=(64,))
    true_a, true_b = (51, 51, 115, 115), (154, 141, 218, 205)
    only = one.find(photo)
    assert len(only) == 1 and box_iou(only[0].box, true_a) > 0.9
    found = both.find(photo)
    assert len(found) == 2  # A once, from the first side; B from the extra one
    assert only[0].box in [r.box for r in found]
    assert max(box_iou(r.box, true_b) for r in found) > 0.8
    # min_area is in pixels at input_longest: at a side half as long it is a quarter.
    strict = InstanceThresholds(min_area=400)  # B is 16 x 16 = 256 px at 64: 1,024 at 128
    assert len(Segmenter(None, 128, strict, runner=runner, data=data,
                         extra_longest=(64,)).find(photo)) == 2
    with pytest.raises(ValueError, match="distinct and at least"):
        Segmenter(None, 128, runner=runner, data=data, extra_longest=(128,))
    with pytest.raises(ValueError, match="distinct and at least"):
        Segmenter(None, 128, runner=runner, data=data, extra_longest=(16,))


def test_the_one_pill_of_a_photo_comes_from_the_main_working_side():
    small, large = (0.2, 0.2, 0.35, 0.35), (0.5, 0.4, 0.9, 0.8)
    # The main side finds a small pill; the extra side adds a larger region elsewhere.
    runner = _square_runner({128: [small], 64: [large]})
    data = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    photo = Image.new("RGB", (256, 256), (90, 90, 90))
    found = Segmenter(None, 128, runner=runner, data=data, extra_longest=(64,)).find(photo)
    assert sorted(r.extra_side for r in found) == [False, True]
    pick = most_pill_like(found)
    assert not pick.extra_side and box_iou(pick.box, (51, 51, 90, 90)) > 0.8
    # Without a main-side region the extra side's is taken.
    only_extra = [r for r in found if r.extra_side]
    assert most_pill_like(only_extra) is only_extra[0]
    # Among main-side regions the larger wins at a similar score, as before.
    assert most_pill_like([dataclasses.replace(r, extra_side=False) for r in found]).box == max(
        found, key=lambda r: r.mask.sum()).box


def test_extra_working_sides_are_kept_in_the_card(tmp_path):
    torch.manual_seed(0)
    seg = Segmenter(PillSegNet(SegNetConfig(pretrained="none", width=8)), 64,
                    extra_longest=(48,))
    directory = seg.save(tmp_path / "seg")
    card = json.loads((directory / "card.json").read_text())
    assert card["preprocessing"]["extra_longest"] == [48]
    assert Segmenter.load(directory).extra_longest == (48,)
    for bad in ([64], [8], ["x"]):
        card["preprocessing"]["extra_longest"] = bad
        (directory / "card.json").write_text(json.dumps(card))
        with pytest.raises(ArtifactError, match="card is invalid"):
            Segmenter.load(directory)


def test_corrupt_or_foreign_weights_are_refused(tiny, tmp_path):
    directory = tiny.save(tmp_path / "seg")
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        Segmenter.load(directory)
    weights.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ArtifactError, match="pickle"):
        Segmenter.load(directory)
    shutil.rmtree(directory)
    with pytest.raises(ArtifactError, match="not a directory"):
        Segmenter.load(directory)


def test_classifier_directory_is_not_a_segmenter(tmp_path):
    (tmp_path / "card.json").write_text(json.dumps({"format": "rxvision-card/1"}))
    with pytest.raises(ArtifactError, match="not a segmenter card"):
        Segmenter.load(tmp_path)


def test_bundled_card_is_complete(bundled):
    card = bundled.card
    assert card["kind"] == "pill-segmenter"
    assert card["training"]["steps_done"] > 0
    assert card["metrics"]["held_out_composites"]["foreground_iou"] > 0.5
    assert Path(BUNDLED / "model.safetensors").stat().st_size < 5_000_000


def test_onnx_backend_runs_the_recorded_export(tiny, tmp_path):
    from rxvision.locate.segmenter_onnx import export_onnx

    directory = tiny.save(tmp_path / "seg")
    with pytest.raises(ArtifactError, match="no ONNX export"):
        Segmenter.load(directory, backend="onnx")
    export_onnx(tiny, directory / "model.onnx", check_size=(48, 64), record_in=directory)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8))
    onnx_maps = Segmenter.load(directory, backend="onnx").probabilities(image)
    assert np.abs(onnx_maps - tiny.probabilities(image)).max() < 1e-5
    (directory / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="SHA-256"):
        Segmenter.load(directory, backend="onnx")


def test_onnx_export_matches_pytorch(tiny, tmp_path):
    from rxvision.locate.segmenter_onnx import export_onnx, parity

    report = export_onnx(tiny, tmp_path / "seg.onnx", check_size=(48, 64))
    assert report["parity_max_abs"] < 1e-4
    # one file serves other working sizes too
    assert parity(tiny, tmp_path / "seg.onnx", torch.randn(1, 3, 64, 32)) < 1e-4


# -- continued training ---------------------------------------------------------------------


def test_training_continues_from_an_artifact(tiny, tmp_path):
    from rxvision.config import ConfigError
    from rxvision.locate.train_segmenter import SegmenterTrainOptions, train_segmenter

    start = tiny.save(tmp_path / "start")
    opts = SegmenterTrainOptions(
        refs=str(SAMPLE_MANIFEST), out=str(tmp_path / "next"), steps=2, batch=2, size=64,
        input_longest=64, max_refs=3, val_count=2, eval_every=0, workers=0, init=str(start),
        net=SegNetConfig(pretrained="none"),  # replaced by the artifact's (width 8)
    )
    out = train_segmenter(opts, log=lambda line: None)
    card = json.loads((out / "card.json").read_text())
    assert card["config"]["width"] == 8
    assert card["training"]["options"]["init"] == str(start)
    assert card["training"]["steps_done"] == 2
    trained = Segmenter.load(out)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            tiny.net.state_dict().values(), trained.net.state_dict().values(), strict=True
        )
        if a.is_floating_point()
    ]
    assert any(moved)  # the steps changed the artifact's weights, not fresh ones

    other = dataclasses.replace(opts, out=str(tmp_path / "bad"), input_longest=320)
    with pytest.raises(ConfigError, match="--input-longest 64"):
        train_segmenter(other, log=lambda line: None)
    assert not (tmp_path / "bad").exists()


def test_region_edge_on_a_rounding_boundary_is_found():
    # 392 x 347 photo, 320 x 288 working maps: working column 120 maps to photo x 147.0,
    # which float rounding puts a hair left of the crop (PIL refused the resize once).
    from rxvision.locate.segmenter import regions_from_maps

    maps = np.zeros((2, 288, 320), np.float32)
    maps[:, 100:140, 121:170] = 1.0  # with the one-pixel margin the crop starts at 120
    regions = regions_from_maps(maps, (392, 347), InstanceThresholds())
    assert len(regions) == 1
    x0, y0, x1, y1 = regions[0].box
    assert abs(x0 - 121 * 392 / 320) < 2 and abs(x1 - 170 * 392 / 320) < 2
    assert abs(y0 - 100 * 347 / 288) < 2 and abs(y1 - 140 * 347 / 288) < 2
