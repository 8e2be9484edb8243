"""Zooming to a small pill: locator decisions, crop geometry, transform, CLI and card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from rxvision.cli import main
from rxvision.identify.identifier import Identifier, IdentifierError
from rxvision.locate import EvalTransform
from rxvision.locate.locator import (
    TARGET_FILL,
    ZOOM_BELOW,
    locate_pills,
    zoom_square,
    zoom_to_pills,
)

PILL = (200, 60, 60)


def _photo(pills: list[tuple[int, int, int, int]], size: tuple[int, int] = (1200, 900)
           ) -> Image.Image:
    """A table-like photo: a left-to-right light gradient with red pills (ellipse boxes)."""
    w, h = size
    ramp = np.linspace(150, 210, w, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(ramp * np.array([1.0, 0.97, 0.9], np.float32), (h, w, 3))
    img = Image.fromarray(base.round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for box in pills:
        draw.ellipse(box, fill=PILL)
        x0, y0, x1, y1 = box
        draw.line((x0 + (x1 - x0) // 3, (y0 + y1) // 2, x1 - (x1 - x0) // 3, (y0 + y1) // 2),
                  fill=(120, 30, 30), width=3)  # an imprint-like mark
    return img


def test_a_small_pill_is_found_and_zoomed_to_the_training_fill() -> None:
    box = (560, 400, 680, 470)  # 120 px of a 1200 x 900 photo: 13% of the shorter side
    loc = locate_pills(_photo([box]))
    assert loc.zoom and loc.reason == "zoomed" and loc.regions == 1
    assert all(abs(a - b) <= 6 for a, b in zip(loc.box, box, strict=True))
    x0, y0, x1, y1 = zoom_square(loc, (1200, 900))
    assert x1 - x0 == y1 - y0 == round((loc.box[2] - loc.box[0]) / TARGET_FILL)
    assert x0 <= loc.box[0] and y0 <= loc.box[1] and x1 >= loc.box[2] and y1 >= loc.box[3]


def test_both_sides_of_one_pill_make_one_group() -> None:
    sides = [(400, 400, 480, 480), (560, 410, 640, 490)]
    loc = locate_pills(_photo(sides))
    assert loc.zoom and loc.regions == 2
    assert loc.box[0] <= 406 and loc.box[2] >= 634  # spans both sides


@pytest.mark.parametrize(("pills", "reason"), [
    ([(200, 150, 1000, 750)], "pills already fill the frame"),
    ([(200, 200, 280, 280), (500, 500, 580, 580), (800, 200, 880, 280)], "3 similar regions"),
    ([], "no pill-like region found"),
    ([(1000, 300, 1300, 700), (500, 400, 560, 450)], "reaches the photo's edge"),
])
def test_unclear_photos_are_left_whole_with_a_reason(
    pills: list[tuple[int, int, int, int]], reason: str
) -> None:
    img = _photo(pills)
    loc = locate_pills(img)
    assert not loc.zoom and reason in loc.reason
    assert zoom_to_pills(img, loc) is img


def test_a_mark_inside_a_faint_pill_is_not_taken_for_the_pill() -> None:
    img = Image.new("RGB", (1200, 900), (185, 180, 170))
    draw = ImageDraw.Draw(img)
    draw.ellipse((350, 250, 850, 650), fill=(197, 190, 178))  # barely off the background
    draw.ellipse((560, 410, 640, 490), fill=(60, 40, 40))  # a dark imprint in its middle
    loc = locate_pills(img)
    assert not loc.zoom and "not surrounded by background" in loc.reason


def test_zoomed_input_shows_the_pill_large(tmp_path: Path) -> None:
    img = _photo([(560, 400, 680, 470)])
    prep = {"input_size": [64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    red = {}
    for zoom in ("off", "auto"):
        x = EvalTransform(prep, zoom).to_uint8(img).permute(1, 2, 0).numpy().astype(int)
        red[zoom] = float((np.abs(x - np.array(PILL)).sum(-1) < 60).mean())
    assert red["off"] < 0.03  # ~1% of the letterboxed photo
    # Zoomed, the pill's width is TARGET_FILL of the side: an ellipse covers about
    # pi/4 * 0.65 * (0.65 * 70/120) of the square.
    assert red["auto"] > 0.15
    assert EvalTransform({**prep, "zoom": "auto"}).zoom == "auto"
    assert EvalTransform(prep).zoom == "off"  # cards without the key: photos stay whole
    with pytest.raises(ValueError, match="zoom must be one of"):
        EvalTransform(prep, "sometimes")
    assert ZOOM_BELOW < TARGET_FILL  # a zoomed photo is never zoomed again


def test_identifier_and_cli_take_the_zoom_setting(sample_artifact: Path, tmp_path: Path,
                                                  capsys) -> None:
    card = json.loads((sample_artifact / "card.json").read_text())
    assert card["preprocessing"]["zoom"] == "auto"  # new cards zoom by default
    assert Identifier.load(sample_artifact).transform.zoom == "auto"
    assert Identifier.load(sample_artifact, zoom="off").transform.zoom == "off"
    with pytest.raises(IdentifierError, match="zoom must be one of"):
        Identifier.load(sample_artifact, zoom="always")
    photo = tmp_path / "small_pill.png"
    _photo([(560, 400, 680, 470)]).save(photo)
    outputs = {}
    for zoom in ("off", "auto"):
        assert main(["predict", "--model", str(sample_artifact), "--json", "--zoom", zoom,
                     str(photo)]) == 0
        outputs[zoom] = json.loads(capsys.readouterr().out)
    ident = Identifier.load(sample_artifact)
    zoomed = ident.transform(Image.open(photo).convert("RGB"))
    logits, _ = ident.forward(zoomed[None])
    top = ident.labels[int(logits.argmax())]
    assert outputs["auto"][0]["topk"][0]["label"] == top
    assert not torch.equal(zoomed, EvalTransform(ident.preprocessing, "off")(
        Image.open(photo).convert("RGB")))
    # Results say which crop the model saw (JSON, text, API; pairs give one per photo).
    crop = zoom_square(locate_pills(Image.open(photo).convert("RGB"), 64), (1200, 900))
    assert outputs["auto"][0]["zoomed_to"] == [list(crop)]
    assert outputs["off"][0]["zoomed_to"] == [None]
    # ...and why: the locator's reason, or null when zoom is off.
    assert outputs["auto"][0]["zoom_notes"] == ["zoomed"]
    assert outputs["off"][0]["zoom_notes"] == [None]
    assert main(["predict", "--model", str(sample_artifact), str(photo)]) == 0
    assert f"zoomed to the pill at ({crop[0]}, {crop[1]})" in capsys.readouterr().out
    whole = tmp_path / "whole.png"
    _photo([(200, 150, 1000, 750)]).save(whole)
    pair = ident.identify_pair(photo, whole)
    assert pair.zoomed_to == [list(crop), None]
    assert pair.zoom_notes == ["zoomed", "pills already fill the frame"]
    assert [r.zoomed_to for _, r in ident.iter_identify([whole, photo])] == [[None], [list(crop)]]
    [(_, empty)] = ident.iter_identify([_blank(tmp_path)])
    assert empty.zoomed_to == [None] and empty.zoom_notes == ["no pill-like region found"]
    csv_out = tmp_path / "pair.csv"
    assert main(["predict", "--model", str(sample_artifact), "--pair", str(photo), str(whole),
                 "--out", str(csv_out)]) == 0
    row = next(csv.DictReader(csv_out.open()))
    assert row["zoomed"] == "True"
    assert row["zoom_note"] == "zoomed + pills already fill the frame"


def _blank(tmp_path: Path) -> Path:
    path = tmp_path / "blank.png"
    Image.new("RGB", (1200, 900), (170, 165, 150)).save(path)
    return path


def test_low_resolution_photos_are_not_blown_up() -> None:
    img = _photo([(140, 100, 170, 118)], size=(300, 225))  # a 30 px pill
    assert locate_pills(img).zoom  # found and small...
    loc = locate_pills(img, min_crop=112)  # ...but its crop (46 px) would be upsampled 2.4x
    assert not loc.zoom and "photo too small to zoom" in loc.reason


def _jpeg(img: Image.Image, **kwargs: object) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("pill", [(1050, 850, 1550, 1100), (200, 150, 2400, 1800)],
                         ids=["small pill", "fills the frame"])
def test_large_jpeg_decodes_at_reduced_scale_with_the_same_zoom(pill: tuple[int, ...]) -> None:
    """A 2600x1950 JPEG: the photo check and locator run on a 1/4-scale decode (650 px),
    a crop comes from a decode at the scale that keeps it >= the input size (here 1/2);
    the same answer as from a full-size decode."""
    from rxvision.data import load_image

    data = _jpeg(_photo([pill], size=(2600, 1950)))
    t = EvalTransform({"input_size": [224, 224], "mean": [0.5] * 3, "std": [0.25] * 3,
                       "zoom": "auto"})
    reduced, zoom, image = t.load_and_zoom(data, check=True)
    whole, whole_zoom = t.to_uint8_and_zoom(load_image(data), check=True)
    assert image.width < 2600  # never decoded whole
    assert zoom.note == whole_zoom.note and zoom.retake is None and whole_zoom.retake is None
    if whole_zoom.crop is None:
        assert zoom.crop is None and image.width == 650  # one decode, at 1/4
    else:
        assert image.width == 1300  # the 770 px crop needs 1/2 scale for 224 px
        assert zoom.crop == pytest.approx(whole_zoom.crop, abs=8)  # photo pixels
        assert (zoom.crop[2] - zoom.crop[0]) * image.width / 2600 >= 224
    diff = np.abs(reduced.astype(float) - whole.astype(float)).mean()
    assert diff < 3.0, diff  # letterboxed pixels, 0-255


def test_reduced_decode_follows_exif_orientation() -> None:
    photo = _photo([(1050, 850, 1550, 1100)], size=(2600, 1950))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: 1950x2600
    data = _jpeg(photo, exif=exif)
    t = EvalTransform({"input_size": [224, 224], "mean": [0.5] * 3, "std": [0.25] * 3,
                       "zoom": "auto"})
    from rxvision.data import load_image

    _, zoom, image = t.load_and_zoom(data)
    _, whole = t.to_uint8_and_zoom(load_image(data))
    assert image.height > image.width  # upright
    assert zoom.crop == pytest.approx(whole.crop, abs=8)
