"""Contracts of the independent validation renderer (rxvision.validation).

Renders are small (256-320 px) so the file runs in seconds; a synthetic studio photo
(two red discs on C3PI grey, with ruler strokes) gives pill pixels that are easy to find.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_DIR, SAMPLE_MANIFEST
from PIL import Image, ImageDraw
from scipy import ndimage

from rxvision.cli import main
from rxvision.data import load_dataset
from rxvision.data.datasets import DatasetError
from rxvision.validation import IndependentRenderer, RenderError, RenderParams, cut_sides
from rxvision.validation.backgrounds import BACKGROUND_SOURCES, TEXTURES, background
from rxvision.validation.segment import SegmentError
from rxvision.validation.sensor import SensorParams
from rxvision.validation.writer import write_views

PACKAGE = REPO_ROOT / "rxvision" / "validation"
RED = (200, 30, 30)


def studio_photo(shapes: str = "discs") -> Image.Image:
    """A 300x225 C3PI-like reference: grey backdrop, rulers, two red pill sides."""
    img = Image.new("RGB", (300, 225), (118, 118, 118))
    d = ImageDraw.Draw(img)
    d.line([(22, 0), (22, 200)], fill=(60, 60, 60))  # left ruler and its ticks
    d.line([(22, 200), (300, 200)], fill=(60, 60, 60))
    for t in range(22, 300, 10):
        d.line([(t, 200), (t, 205)], fill=(60, 60, 60))
    if shapes == "discs":
        d.ellipse([40, 50, 140, 150], fill=RED)
        d.ellipse([170, 50, 270, 150], fill=RED)
    return img


def clean_params(**sensor: float) -> RenderParams:
    """Renderer ranges without blur, with little noise: pill pixels stay their colour."""
    s = dataclasses.replace(
        SensorParams(),
        defocus_prob=0.0,
        motion_prob=0.0,
        photons=(4000.0, 4000.0),
        read_noise=(0.0005, 0.0005),
        jpeg_quality=(90, 90),
        cast=0.05,
        **sensor,
    )
    return dataclasses.replace(RenderParams(), sensor=s)


def test_cut_sides_finds_two_discs_and_drops_rulers() -> None:
    sides = cut_sides(studio_photo())
    assert len(sides) == 2
    for side in sides:
        w, h = side.image.size
        assert 96 <= w <= 104 and 96 <= h <= 104  # the 101-pixel disc, no ruler attached
        alpha = np.asarray(side.image)[..., 3]
        assert alpha[h // 2, w // 2] == 255 and alpha[0, 0] == 0


def test_cut_sides_on_sample_references() -> None:
    for path in sorted((SAMPLE_DIR / "images").glob("*.jpg"))[:4]:
        sides = cut_sides(Image.open(path))
        assert len(sides) == 2, path
        areas = [np.asarray(s.image)[..., 3].astype(float).sum() for s in sides]
        assert min(areas) / max(areas) > 0.7, path  # front and back are the same size


@pytest.mark.parametrize(
    "image",
    [Image.new("RGB", (300, 225), (118, 118, 118)), Image.new("RGB", (8, 8), (200, 30, 30))],
)
def test_cut_sides_refuses_photos_without_a_pill(image: Image.Image) -> None:
    with pytest.raises(SegmentError, match="pill"):
        cut_sides(image)


def test_render_is_deterministic_for_a_seed() -> None:
    r = IndependentRenderer(size=256)
    sides = r.cut(studio_photo())
    a, meta_a = r.render_jpeg(sides, np.random.default_rng(3), "both")
    b, meta_b = r.render_jpeg(sides, np.random.default_rng(3), "both")
    c, _ = r.render_jpeg(sides, np.random.default_rng(4), "both")
    assert a == b and a != c
    for pa, pb in zip(meta_a["pills"], meta_b["pills"], strict=True):
        assert pa["box"] == pb["box"] and np.array_equal(pa["mask"], pb["mask"])


@pytest.mark.parametrize(("size", "aspect"), [(256, 4 / 3), (320, 1.0), (300, 16 / 9)])
def test_output_size(size: int, aspect: float) -> None:
    r = IndependentRenderer(size=size, aspect=aspect)
    photo, meta = r.render(studio_photo(), np.random.default_rng(0), "one")
    assert max(photo.size) == size and min(photo.size) == round(size / aspect)
    assert list(photo.size) == meta["size"]
    assert meta["pills"][0]["mask"].shape == (photo.height, photo.width)


@pytest.mark.parametrize("mode", ["both", "one"])
def test_masks_and_boxes_line_up_with_the_pill_pixels(mode: str) -> None:
    r = IndependentRenderer(size=320, params=clean_params())
    sides = r.cut(studio_photo())
    for seed in range(3):
        photo, meta = r.render(sides, np.random.default_rng(seed), mode, background_kind="paper")
        rgb = np.asarray(photo).astype(int)
        redness = rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2])
        pills = meta["pills"]
        assert len(pills) == (2 if mode == "both" else 1)
        union = np.zeros(rgb.shape[:2], dtype=bool)
        for pill in pills:
            mask = pill["mask"]
            assert not (union & mask).any()  # two pills never overlap
            union |= mask
            inner = ndimage.binary_erosion(mask, iterations=2)
            assert (redness[inner] > 40).mean() > 0.97
            ys, xs = np.nonzero(mask)
            assert pill["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            poly = np.array(pill["polygon"])
            # The outline polygon bounds the same pixels as the mask, to a pixel or two.
            assert np.abs(poly.min(axis=0) - pill["box"][:2]).max() < 2.5
            assert np.abs(poly.max(axis=0) - pill["box"][2:]).max() < 2.5
        outside = ~ndimage.binary_dilation(union, iterations=3)
        assert (redness[outside] > 40).mean() < 0.01  # no red pixels away from the masks
        if mode == "both":
            assert sorted(p["side"] for p in pills) == [0, 1]


def test_pill_fraction_follows_the_requested_range() -> None:
    scene = dataclasses.replace(RenderParams().scene, one_fraction=(0.4, 0.4))
    r = IndependentRenderer(size=320, params=dataclasses.replace(clean_params(), scene=scene))
    for seed in range(3):
        _, meta = r.render(studio_photo(), np.random.default_rng(seed), "one")
        # Perspective and rotation change the box a little; a disc keeps its length.
        assert 0.3 < meta["pills"][0]["fraction"] < 0.5


def test_every_background_kind_renders_and_has_a_source() -> None:
    assert set(TEXTURES) == set(BACKGROUND_SOURCES)
    rng = np.random.default_rng(0)
    for kind in TEXTURES:
        tex, got = background(rng, 48, 64, kind)
        assert got == kind and tex.shape == (48, 64, 3) and tex.dtype == np.float32
        assert tex.min() >= 0.0 and tex.max() <= 1.0 and tex.std() > 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 100}, "256..4032"),
        ({"size": 5000}, "256..4032"),
        ({"aspect": 0.5}, "aspect"),
        ({"params": dataclasses.replace(RenderParams(), backgrounds=("lava",))}, "lava"),
    ],
)
def test_bad_renderer_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(RenderError, match=match):
        IndependentRenderer(**kwargs)


def test_bad_render_requests_raise() -> None:
    r = IndependentRenderer(size=256)
    rng = np.random.default_rng(0)
    with pytest.raises(RenderError, match="mode"):
        r.render(studio_photo(), rng, mode="three")
    with pytest.raises(RenderError, match="background"):
        r.render(studio_photo(), rng, background_kind="lava")
    with pytest.raises(RenderError, match="reference"):
        r.render([], rng)
    with pytest.raises(SegmentError):
        r.render(Image.new("RGB", (300, 225), (118, 118, 118)), rng)
    assert issubclass(RenderError, DatasetError)  # the CLI prints it as a user error


def test_write_views_manifest_masks_and_boxes(tmp_path: Path) -> None:
    images = load_dataset(SAMPLE_MANIFEST)
    images = dataclasses.replace(images, samples=images.samples[:2])
    out = tmp_path / "views"
    manifest = write_views(images, out, 2, seed=5, renderer=IndependentRenderer(size=256))
    with open(manifest) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["mode"] for r in rows] == ["both", "one", "both", "one"]
    assert {"image", "label", "mode", "num_pills", "boxes", "mask"} <= set(rows[0])
    for row in rows:
        assert (out / row["image"]).is_file()
        labels = np.asarray(Image.open(out / row["mask"]))
        boxes = [list(map(int, b.split())) for b in row["boxes"].split(";")]
        assert len(boxes) == int(row["num_pills"]) == labels.max()
        for k, box in enumerate(boxes, start=1):
            ys, xs = np.nonzero(labels == k)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert [p.name for p in tmp_path.iterdir()] == ["views"]  # no temporary folder left
    # The set loads as an evaluation dataset, labels intact.
    assert load_dataset(manifest).labels == sorted(s.label for s in images.samples)
    with pytest.raises(RenderError, match="exists"):
        write_views(images, out, 1, seed=5, renderer=IndependentRenderer(size=256))


def test_cli_render_independent(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    refs = tmp_path / "refs"
    (refs / "pill-a").mkdir(parents=True)
    studio_photo().save(refs / "pill-a" / "ref.jpg", quality=95)
    (refs / "pill-b").mkdir()
    Image.new("RGB", (300, 225), (118, 118, 118)).save(refs / "pill-b" / "ref.jpg")
    out = tmp_path / "out"
    assert (
        main(
            [
                "data",
                "render-independent",
                str(refs),
                "--out",
                str(out),
                "--views",
                "1",
                "--size",
                "256",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert "1 reference(s) skipped" in capsys.readouterr().out
    with open(out / "skipped.csv") as fh:
        skipped = list(csv.DictReader(fh))
    assert [s["label"] for s in skipped] == ["pill-b"]
    assert main(["data", "render-independent", str(refs), "--out", str(out)]) == 2


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by a file of the rxvision.validation package."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = ["rxvision", "validation"][: 2 - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def test_validation_package_shares_no_code_with_the_training_renderer() -> None:
    allowed = (
        "rxvision.validation",
        "rxvision.data.decode",
        "rxvision.data.datasets",
        "rxvision.io_utils",
    )
    files = sorted(PACKAGE.glob("*.py"))
    assert files
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in {"torch", "torchvision", "timm"}, (path.name, name)
            assert "synth" not in name and "cutout" not in name, (path.name, name)
            if top == "rxvision":
                assert name.startswith(allowed), (path.name, name)


def test_photo_columns_stay_per_sample(tmp_path: Path) -> None:
    images = load_dataset(SAMPLE_MANIFEST)
    images = dataclasses.replace(images, samples=images.samples[:1])
    manifest = write_views(
        images, tmp_path / "v", 2, seed=0, renderer=IndependentRenderer(size=256)
    )
    loaded = load_dataset(manifest)
    # Boxes and masks describe one photo: they must not become facts about the pill.
    assert not {"boxes", "mask", "num_pills", "background"} & set(loaded.label_metadata[0])
    assert loaded.samples[0].extra["boxes"] and loaded.samples[1].extra["mode"] == "one"
