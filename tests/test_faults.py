"""Fault suite: hostile bytes, degenerate photos and kill -9 never give a wrong-looking answer.

- **kill -9** (subprocesses): at fixed points inside a save (weights written, between the
  renames, in a card update, in a checkpoint) and after random delays during
  ``rxvision enroll`` / ``rxvision export``, the output folder is either absent or a
  complete artifact that loads; a rerun leaves no temporary files behind.
- **Decoder fuzzing** (hypothesis): random bytes, truncated and bit-flipped images, odd sizes
  and modes: :func:`rxvision.data.load_image` returns an RGB image or raises
  :class:`ImageDecodeError`, nothing else.
- **HTTP fuzzing** (hypothesis): random multipart bodies, random uploads and form fields
  answer 200 or a JSON 4xx, never 500; repeated fields and malformed multipart are 4xx.
- **Degenerate photos**: solid colours, gradients, a photo of text, a hand-like skin blob
  and no pill are never answered "ok"; they get a retake status naming the cause.

Everything uses the tiny random-weight resnet18 (64 px) of tests/conftest.py, so the whole
file runs in well under two minutes on two cores.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter, ImageFont

import rxvision.artifact as artifact_module
from rxvision.artifact import (
    CARD_NAME,
    WEIGHTS_NAME,
    ArtifactError,
    load_artifact,
    read_card,
    save_artifact,
    update_card,
)
from rxvision.config import config_from_dict
from rxvision.data import ImageDecodeError, load_image
from rxvision.identify.identifier import MESSAGE_RETAKE, Identifier
from rxvision.locate.presence import NO_PILL, RETAKE_CAUSES
from rxvision.models import build_model

# Damaged TIFFs make Pillow warn (corrupt EXIF, tags past the end) before the decoder's error.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")



@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and far faster than on two when other work
    shares the cores (OpenMP teams then wait for each other: 48 vs 660 ms per pass)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def make_config(num_classes: int) -> object:
    """resnet18 at 64 px, random init (as tests/conftest.py's tiny config)."""
    return config_from_dict({"architecture": {"backbone": {"name": "resnet18",
                                                           "pretrained": False}},
                             "training": {"input_size": [64, 64], "num_classes": num_classes}})


# --- kill -9 ---------------------------------------------------------------------------------
def _leftovers(folder: Path) -> list[str]:
    """Temporary names beside or inside ``folder`` (staging folders, .tmp files)."""
    names = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    if folder.is_dir():
        names += [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    return sorted(names)


def _complete_or_absent(folder: Path) -> str:
    """'absent' or 'complete' (loads, hash checked); anything else fails the test."""
    if not folder.exists():
        return "absent"
    if "export" in read_card(folder):
        from rxvision.identify.onnx_backend import OnnxModel

        OnnxModel.from_directory(folder)  # raises on a missing file or a hash mismatch
    else:
        load_artifact(folder)  # raises on a missing card, missing weights or a hash mismatch
    return "complete"


def _in_child(work: Callable[[], object]) -> int:
    """Fork; the child runs ``work()`` and exits (0, or 1 on an exception). Returns its pid.

    A fork, not a fresh interpreter: the child starts with torch already imported, so a
    kill test costs the work itself, not seconds of imports.
    """
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


def _wait(pid: int, timeout: float = 120.0) -> int:
    """The child's wait status as -signal or exit code; SIGKILLs it after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _die_during(work: Callable[[], object], patch: Callable[[Callable[[], None]], None]) -> None:
    """Run ``work()`` in a child in which ``patch(die)`` installed a self-SIGKILL."""
    def child() -> None:
        patch(lambda: os.kill(os.getpid(), signal.SIGKILL))
        work()

    assert _wait(_in_child(child)) == -signal.SIGKILL, "the child was not killed"


def _save(out: Path, seed: int) -> Callable[[], Path]:
    def work() -> Path:
        cfg = make_config(num_classes=4)
        torch.manual_seed(seed)
        return save_artifact(out, build_model(cfg), cfg, ["a", "b", "c", "d"])

    return work


def _kill_after_weights(die: Callable[[], None]) -> None:
    real = artifact_module.save_file

    def dying(state: dict, filename: str, metadata: dict | None = None) -> None:
        real(state, filename, metadata=metadata)
        die()

    artifact_module.save_file = dying


def _kill_mid_weights(die: Callable[[], None]) -> None:
    def dying(state: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"\0" * 1000)
        die()

    artifact_module.save_file = dying


def _kill_at_card(die: Callable[[], None]) -> None:
    real = Path.write_text

    def dying(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if CARD_NAME in self.name:
            die()
        return real(self, text, *args, **kwargs)

    Path.write_text = dying  # type: ignore[method-assign]


KILLS = {"mid-weights": _kill_mid_weights, "after-weights": _kill_after_weights,
         "at-card": _kill_at_card}


@pytest.fixture
def tiny_artifact(artifact_factory: Callable[..., Path]) -> Path:
    return artifact_factory("old")


@pytest.mark.parametrize("kill", KILLS)
def test_kill_during_save_leaves_nothing(tmp_path: Path, kill: str) -> None:
    # Regression (issue 19): a kill left --out with a 0-byte temp file or weights without card.
    out = tmp_path / "new"
    _die_during(_save(out, 1), KILLS[kill])
    assert _complete_or_absent(out) == "absent"
    _save(out, 1)()  # a rerun writes the artifact and removes what the killed one left
    assert _complete_or_absent(out) == "complete"
    assert _leftovers(out) == []


@pytest.mark.parametrize("kill", KILLS)
def test_kill_during_overwrite_keeps_the_old_artifact(tiny_artifact: Path, kill: str) -> None:
    before = read_card(tiny_artifact)["weights"]["sha256"]
    _die_during(_save(tiny_artifact, 2), KILLS[kill])
    art = load_artifact(tiny_artifact)
    assert art.card["weights"]["sha256"] == before
    assert art.labels == [f"class{i}" for i in range(4)]


def test_overwrite_replaces_the_whole_folder(tiny_artifact: Path, tiny_model,
                                             tiny_config) -> None:
    save_artifact(tiny_artifact, tiny_model, tiny_config, list("wxyz"))
    assert load_artifact(tiny_artifact).labels == list("wxyz")
    assert sorted(p.name for p in tiny_artifact.iterdir()) == [CARD_NAME, WEIGHTS_NAME]
    assert _leftovers(tiny_artifact) == []


def test_kill_between_renames_in_a_run_folder_is_refused(tiny_artifact: Path) -> None:
    """A training run folder holds more than the artifact: the card is renamed in last."""
    (tiny_artifact / "log.jsonl").write_text("{}\n")

    def kill_at_card(die: Callable[[], None]) -> None:
        real = os.replace

        def dying(src: str | Path, dst: str | Path) -> None:
            if str(dst).endswith(CARD_NAME):
                die()
            real(src, dst)

        os.replace = dying

    _die_during(_save(tiny_artifact, 3), kill_at_card)
    with pytest.raises(ArtifactError, match="SHA-256 does not match"):
        load_artifact(tiny_artifact)  # new weights under the old card: never loaded
    _save(tiny_artifact, 3)()
    assert _complete_or_absent(tiny_artifact) == "complete"
    assert _leftovers(tiny_artifact) == []
    assert (tiny_artifact / "log.jsonl").read_text() == "{}\n"


def test_kill_during_card_update_keeps_the_card(tiny_artifact: Path) -> None:
    """`rxvision calibrate` and training's temperature fit update the card in place."""
    before = (tiny_artifact / CARD_NAME).read_text()

    def kill_mid_text(die: Callable[[], None]) -> None:
        real = Path.write_text

        def dying(self: Path, text: str, *args: object, **kwargs: object) -> int:
            real(self, text[: len(text) // 2])
            die()
            return 0

        Path.write_text = dying  # type: ignore[method-assign]

    def work() -> None:
        update_card(tiny_artifact, calibration={"temperature": 2.0})

    _die_during(work, kill_mid_text)
    assert (tiny_artifact / CARD_NAME).read_text() == before
    assert _leftovers(tiny_artifact) != []  # the killed writer's half card, until ...
    work()  # ... the next update removes it
    assert load_artifact(tiny_artifact).temperature == 2.0
    assert _leftovers(tiny_artifact) == []


def test_kill_during_checkpoint_keeps_the_last_one(tmp_path: Path) -> None:
    from rxvision.engine.train import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(path, model, opt, 0, 1, 0.5, 0, [])

    def kill_in_torch_save(die: Callable[[], None]) -> None:
        def dying(obj: object, f: str | Path, *args: object, **kwargs: object) -> None:
            Path(f).write_bytes(b"\x80partial")
            die()

        torch.save = dying

    _die_during(lambda: save_checkpoint(path, model, opt, 1, 2, 0.6, 0, []), kill_in_torch_save)
    assert load_checkpoint(path)["epoch"] == 0
    save_checkpoint(path, model, opt, 1, 2, 0.6, 0, [])
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def _kill_at_random_points(argv: list[str], out: Path, kills: int) -> list[str]:
    """Run the CLI once (timing it), then ``kills`` times in a child SIGKILLed after a random
    delay within that time; ``out`` must be absent or complete each time, and a final run
    must leave no temporary files."""
    from rxvision.cli import main

    start = time.perf_counter()
    assert main(argv) == 0
    duration = time.perf_counter() - start
    assert _complete_or_absent(out) == "complete"
    rng = random.Random(int(os.environ.get("RXV_FAULT_SEED", "19")))
    outcomes = []
    for _ in range(kills):
        if out.exists():  # a kill before the artifact appeared leaves nothing to remove
            shutil.rmtree(out)
        pid = _in_child(lambda: main(argv))
        time.sleep(rng.uniform(0.1, 0.9) * duration)
        os.kill(pid, signal.SIGKILL)
        _wait(pid)
        outcomes.append(_complete_or_absent(out))
    if out.exists():
        shutil.rmtree(out)
    assert main(argv) == 0
    assert _complete_or_absent(out) == "complete" and _leftovers(out) == []
    return outcomes


def test_kill_enroll_at_random_points(tiny_artifact: Path, sample_dir: Path,
                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "new"
    for i, photo in enumerate(sorted((sample_dir / "images").glob("*.jpg"))[:2]):
        (data / f"newpill{i}").mkdir(parents=True)
        (data / f"newpill{i}" / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "enrolled"
    outcomes = _kill_at_random_points(
        ["enroll", "--model", str(tiny_artifact), "--data", str(data), "--out", str(out),
         "--views", "1"], out, kills=3)
    assert set(outcomes) <= {"absent", "complete"}


def test_kill_export_at_random_points(tiny_artifact: Path, sample_dir: Path,
                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "onnx"
    outcomes = _kill_at_random_points(
        ["export", "--model", str(tiny_artifact), "--format", "onnx", "--parity-data",
         str(sample_dir / "manifest.csv"), "--num-parity", "2", "--out", str(out)], out,
        kills=2)
    assert set(outcomes) <= {"absent", "complete"}


# --- photos of no pill ------------------------------------------------------------------------
def degenerate_photos() -> dict[str, Image.Image]:
    """Photos with no pill in them: what a confident answer must never be given to."""
    photos: dict[str, Image.Image] = {}
    for rgb in [(200, 10, 10), (255, 255, 255), (0, 0, 0), (128, 128, 128), (20, 20, 200),
                (30, 120, 40)]:
        for side in (1, 224):
            photos[f"solid{rgb}x{side}"] = Image.new("RGB", (side, side), rgb)
    x = np.linspace(0, 255, 640, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, 480, dtype=np.float32)[:, None, None]
    photos["grey gradient"] = Image.fromarray(np.broadcast_to(x, (480, 640, 3)).astype(np.uint8))
    photos["colour gradient"] = Image.fromarray(np.concatenate(
        [np.broadcast_to(x, (480, 640, 1)), np.broadcast_to(y, (480, 640, 1)),
         np.full((480, 640, 1), 90.0)], axis=-1).astype(np.uint8))
    text = Image.new("RGB", (640, 480), (240, 238, 230))
    draw = ImageDraw.Draw(text)
    for i in range(10):  # a printed page photographed from above
        draw.text((20, 20 + 44 * i), "Take 1 tablet by mouth 2x daily", fill=(25, 25, 30),
                  font=ImageFont.load_default(size=28))
    photos["text"] = text
    hand = Image.new("RGB", (640, 480), (120, 110, 100))  # a palm and fingers, no pill
    draw = ImageDraw.Draw(hand)
    draw.ellipse((150, 160, 450, 470), fill=(224, 172, 140))
    for k in range(4):
        draw.rounded_rectangle((170 + 65 * k, 0, 215 + 65 * k, 260), 20, fill=(218, 165, 134))
    photos["hand"] = hand.filter(ImageFilter.GaussianBlur(1.5))
    return photos


# What the photo check itself must refuse (a hand is left to the model's open-set score:
# the check does not tell a palm from a large peach-coloured pill).
CHECKED = {name for name in degenerate_photos() if name != "hand"}


@pytest.fixture(scope="module")
def overconfident(tmp_path_factory: pytest.TempPathFactory) -> Identifier:
    """A tiny model that answers "ok" for class 0 whatever it sees: only the photo check
    stands between a photo of nothing and a confident answer."""
    cfg = make_config(num_classes=4)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.get_classifier().bias.copy_(torch.tensor([60.0, 0.0, 0.0, 0.0]))
    path = save_artifact(tmp_path_factory.mktemp("sure") / "sure", model, cfg, list("abcd"))
    return Identifier.load(path)


@pytest.fixture(scope="module")
def bundled() -> Identifier:
    from rxvision.identify.bundled import bundled_model_dir

    if not (bundled_model_dir() / CARD_NAME).is_file():
        pytest.skip(f"bundled model not found at {bundled_model_dir()}")
    return Identifier.load(None, tta=1)


def test_photo_check_refuses_photos_of_nothing(overconfident: Identifier) -> None:
    photos = degenerate_photos()
    results = overconfident.identify([photos[name] for name in sorted(CHECKED)])
    for name, r in zip(sorted(CHECKED), results, strict=True):
        assert r.message == MESSAGE_RETAKE and r.abstain and not r.candidates, name
        assert r.retake in RETAKE_CAUSES, (name, r.retake)
    by_name = dict(zip(sorted(CHECKED), results, strict=True))
    assert by_name["solid(200, 10, 10)x224"].retake == NO_PILL
    assert by_name["solid(0, 0, 0)x1"].retake == "photo too dark"
    assert by_name["solid(255, 255, 255)x224"].retake == "overexposed"
    assert by_name["text"].retake == NO_PILL and by_name["grey gradient"].retake == NO_PILL


def test_photo_check_lets_real_pill_photos_through(overconfident: Identifier,
                                                   sample_dir: Path) -> None:
    photos = sorted((sample_dir / "images").glob("*.jpg"))
    results = overconfident.identify(photos)
    assert [r.retake for r in results] == [None] * len(photos)
    assert all(r.message == "ok" for r in results)


def test_photo_check_names_blur_darkness_and_size(overconfident: Identifier,
                                                  sample_dir: Path) -> None:
    photo = load_image(sorted((sample_dir / "images").glob("*.jpg"))[1])
    blurred = photo.filter(ImageFilter.GaussianBlur(0.05 * max(photo.size)))
    dark = Image.eval(photo, lambda v: v // 8)
    tiny = photo.resize((photo.width // 12, photo.height // 12))
    causes = [r.retake for r in overconfident.identify([blurred, dark, tiny])]
    assert causes == ["too blurred", "photo too dark", "pill too small"]
    pair = overconfident.identify_pair(photo, blurred)
    assert pair.retake == "back: too blurred" and not pair.candidates


def test_bundled_model_never_answers_ok_for_no_pill(bundled: Identifier) -> None:
    # Regression (issue 19): plain red at 1x1 and 224x224 was "ok" at 0.906.
    photos = degenerate_photos()
    for name, r in zip(photos, bundled.identify(list(photos.values())), strict=True):
        assert r.message != "ok" and r.abstain, (name, r.message, r.confidence)
    [red] = bundled.identify(Image.new("RGB", (224, 224), (200, 10, 10)))
    assert red.retake == NO_PILL and red.message == MESSAGE_RETAKE


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
       st.integers(1, 300), st.integers(1, 300), st.integers(0, 3))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_plain_and_smooth_photos_are_never_ok(overconfident: Identifier, r: int, g: int,
                                              b: int, w: int, h: int, kind: int) -> None:
    """Random plain colours and smooth two-colour ramps of random sizes: always a retake."""
    a = np.array([r, g, b], dtype=np.float32)
    if kind == 0:
        photo = Image.new("RGB", (w, h), (r, g, b))
    else:
        other = a[::-1] if kind == 1 else 255 - a
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        if kind == 3:
            t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None] * np.ones((1, w, 1))
        photo = Image.fromarray((a * (1 - t) + other * t).repeat(h if kind != 3 else 1, 0)
                                .astype(np.uint8).reshape(h, w, 3))
    [result] = overconfident.identify(photo)
    assert result.message == MESSAGE_RETAKE, (result.message, photo.size, kind)


def test_cli_says_retake_in_text_and_json(overconfident: Identifier, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from rxvision.cli import main

    red = tmp_path / "red.png"
    Image.new("RGB", (224, 224), (200, 10, 10)).save(red)
    assert main(["predict", "--model", str(overconfident.path), str(red)]) == 0
    assert capsys.readouterr().out.strip() == f"{red}: retake the photo: {NO_PILL}"
    assert main(["predict", "--model", str(overconfident.path), "--json", str(red)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["message"] == MESSAGE_RETAKE and row["retake"] == NO_PILL
    assert row["topk"] == [] and row["abstain"] is True


def test_api_says_retake(overconfident: Identifier, sample_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from rxvision.serve import ServeSettings, create_app

    red = io.BytesIO()
    Image.new("RGB", (224, 224), (200, 10, 10)).save(red, format="PNG")
    photo = sorted((sample_dir / "images").glob("*.jpg"))[0].read_bytes()
    app = create_app(ServeSettings(max_wait_ms=1.0), identifier=overconfident)
    with TestClient(app) as client:
        resp = client.post("/v1/identify", files={"image": ("red.png", red.getvalue())})
        assert resp.status_code == 200, resp.text
        result = resp.json()["result"]
        assert (result["message"], result["retake"], result["candidates"]) == (
            MESSAGE_RETAKE, NO_PILL, [])
        pair = client.post("/v1/identify", files=[("front", ("p.jpg", photo, "image/jpeg")),
                                                  ("back", ("red.png", red.getvalue()))])
        assert pair.json()["result"]["retake"] == f"back: {NO_PILL}"
        batch = client.post("/v1/identify/batch", files=[
            ("images", ("p.jpg", photo, "image/jpeg")), ("images", ("red.png", red.getvalue()))])
        first, second = batch.json()["results"]
        assert first["retake"] is None and first["message"] == "ok"
        assert second["retake"] == NO_PILL


# --- decoder fuzzing ---------------------------------------------------------------------------
# (mode, formats that can hold it): odd modes included, each written by Pillow itself.
MODES = {"1": ["PNG", "BMP", "TIFF"], "L": ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"],
         "LA": ["PNG", "TIFF"], "P": ["PNG", "GIF", "BMP", "TIFF"],
         "RGB": ["PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF"],
         "RGBA": ["PNG", "TIFF", "WEBP"], "CMYK": ["JPEG", "TIFF"], "I;16": ["PNG", "TIFF"],
         "I": ["TIFF"], "F": ["TIFF"], "YCbCr": ["JPEG"]}


@st.composite
def encoded_images(draw: st.DrawFn) -> bytes:
    """A small image of a random mode and size, encoded in a format that holds the mode."""
    mode = draw(st.sampled_from(sorted(MODES)))
    fmt = draw(st.sampled_from(MODES[mode]))
    w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode in ("I;16", "I", "F"):
        values = rng.integers(0, 65535, (h, w)).astype(np.uint16 if mode == "I;16" else
                                                      np.int32 if mode == "I" else np.float32)
        img = Image.fromarray(values)  # uint16 -> I;16, int32 -> I, float32 -> F
    else:
        img = noise.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _mutate(data: bytes, kind: int, where: int, junk: bytes) -> bytes:
    """0: as is; 1: truncated; 2: bytes overwritten in the middle; 3: junk appended;
    4: header kept, body replaced by junk."""
    if not data:
        return junk
    cut = where % len(data)
    if kind == 1:
        return data[:cut]
    if kind == 2:
        return data[:cut] + junk + data[cut + len(junk):]
    if kind == 3:
        return data + junk
    if kind == 4:
        return data[:16] + junk
    return data


def _decoded_cleanly(data: bytes) -> Image.Image | None:
    """load_image's outcome: an RGB image, or None for a clean ImageDecodeError."""
    try:
        img = load_image(data, max_pixels=1_000_000, name="fuzz")
    except ImageDecodeError as exc:
        assert str(exc).startswith("fuzz: "), exc  # the message names the input
        return None
    assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
    img.load()
    return img


@given(st.binary(max_size=4096))
@settings(max_examples=150, deadline=None)
def test_decoder_random_bytes(data: bytes) -> None:
    _decoded_cleanly(data)


@given(encoded_images(), st.integers(0, 4), st.integers(0, 10**6), st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_decoder_odd_modes_sizes_and_damage(data: bytes, kind: int, where: int,
                                           junk: bytes) -> None:
    img = _decoded_cleanly(_mutate(data, kind, where, junk))
    if kind == 0:  # an intact image always decodes
        assert img is not None


# --- HTTP fuzzing ------------------------------------------------------------------------------
OK_OR_CLIENT_ERROR = {200, 400, 413, 415, 422}


@pytest.fixture(scope="module")
def client(sample_artifact: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from rxvision.serve import ServeSettings, create_app

    app = create_app(ServeSettings(max_wait_ms=1.0, max_body_bytes=256 * 1024),
                     identifier=Identifier.load(sample_artifact))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _clean(resp: Any) -> None:
    """200, or a JSON 4xx with a message; never a 500 or a stack trace."""
    assert resp.status_code in OK_OR_CLIENT_ERROR, (resp.status_code, resp.text[:300])
    assert "Traceback" not in resp.text
    if resp.status_code != 200:
        body = resp.json()
        assert body["status"] == resp.status_code and body["detail"]


@given(encoded_images(), st.integers(0, 4), st.integers(0, 10**6), st.binary(max_size=64),
       st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "",
                        "text/plain", "image/x-nonsense"]))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_http_uploads_damaged_and_odd(client: Any, data: bytes, kind: int, where: int,
                                      junk: bytes, ctype: str) -> None:
    resp = client.post("/v1/identify",
                       files={"image": ("x", _mutate(data, kind, where, junk), ctype)})
    _clean(resp)


FIELDS = ["image", "front", "back", "images", "topk", "explain", "", "x" * 300, "imag\u00e9"]


@given(st.lists(st.tuples(st.sampled_from(FIELDS), st.booleans(),
                          st.binary(max_size=300)), max_size=5),
       st.sampled_from(["/v1/identify", "/v1/identify/batch"]))
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_http_random_forms(client: Any, sample_dir: Path, parts: list[tuple[str, bool, bytes]],
                           route: str) -> None:
    """Random field names, repeats, files where text belongs and text where files belong."""
    photo = sorted((sample_dir / "images").glob("*.jpg"))[0].read_bytes()
    files = []
    for name, is_file, payload in parts:
        body = photo if is_file and payload[:1] == b"\0" else payload
        files.append((name, ("p.jpg", body, "image/jpeg") if is_file
                      else (None, payload.decode("latin-1"))))
    resp = client.post(route, files=files) if files else client.post(route)
    _clean(resp)
    repeated = {n for n, *_ in parts if n in ("image", "front", "back", "topk", "explain")
                and sum(m == n for m, *_ in parts) > 1}
    if route == "/v1/identify" and repeated:
        assert resp.status_code in (400, 422)


@given(st.binary(max_size=2048),
       st.sampled_from([b"XyZ", b"", b"a" * 80, b"--", b"\r\n"]),
       st.sampled_from(["multipart/form-data; boundary={b}", "multipart/form-data",
                        "multipart/form-data; boundary=", "multipart/mixed; boundary={b}"]))
@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_http_malformed_multipart(client: Any, junk: bytes, boundary: bytes,
                                  ctype: str) -> None:
    """Bodies that claim to be multipart and are not, or only half."""
    b = boundary.decode()
    half = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; '
            b'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' + junk)
    for body in (junk, half, half + b"\r\n--" + boundary + b"--\r\n"):
        resp = client.post("/v1/identify", content=body,
                           headers={"content-type": ctype.format(b=b)})
        _clean(resp)
        assert resp.status_code != 200 or b"image" in body


def test_http_repeated_and_missing_fields_are_4xx(client: Any, sample_dir: Path) -> None:
    photo = sorted((sample_dir / "images").glob("*.jpg"))[0].read_bytes()
    jpg = ("p.jpg", photo, "image/jpeg")
    cases = {
        "two images": [("image", jpg), ("image", jpg)],
        "two backs": [("back", jpg), ("back", jpg)],
        "image and front": [("image", jpg), ("front", jpg)],
        "two topk": [("image", jpg), ("topk", (None, "1")), ("topk", (None, "2"))],
        "no file": [("topk", (None, "1"))],
        "text image": [("image", (None, "hello"))],
        "three files": [("image", jpg), ("front", jpg), ("back", jpg)],
    }
    for name, files in cases.items():
        resp = client.post("/v1/identify", files=files)
        _clean(resp)
        assert 400 <= resp.status_code < 500, (name, resp.status_code)
