"""Safe decoding contract: every input becomes 8-bit RGB or raises an error naming the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from rxvision.data import ImageDecodeError, ImageTooLargeError, load_image


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    return arr


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Orientation 6 = "rotate 90 CW to display": a 40x20 sensor image shows as 20x40.
    img = Image.new("RGB", (40, 20), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, 10, 20))  # blue band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_encode(img, "JPEG", exif=exif, quality=95))
    out = load_image(path)
    assert out.size == (20, 40)
    arr = _rgb(out).astype(int)
    # Rotated clockwise, the stored left edge becomes the top.
    assert arr[2, 10, 2] > 150 and arr[-3, 10, 0] > 150


def test_grayscale_and_palette_become_rgb() -> None:
    gray = Image.fromarray(np.full((6, 8), 77, dtype=np.uint8), "L")
    assert (_rgb(load_image(_encode(gray))) == 77).all()

    pal = Image.new("P", (8, 6))
    pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    arr = _rgb(load_image(_encode(pal)))
    assert arr.shape == (6, 8, 3) and (arr == [10, 20, 30]).all()


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (0, 0, 4, 8))  # left half fully transparent
    arr = _rgb(load_image(_encode(rgba)))
    assert (arr[:, :4] == 255).all()  # transparent -> white
    assert (arr[:, 4:] == [255, 0, 0]).all()

    la = Image.new("LA", (4, 4), (0, 128))  # black at half opacity -> mid grey
    arr = _rgb(load_image(_encode(la)))
    assert np.abs(arr.astype(int) - 127).max() <= 2


def test_cmyk_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red ink
    arr = _rgb(load_image(_encode(cmyk, "JPEG", quality=95)))
    r, g, b = arr.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_rescaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    data = _encode(Image.fromarray(ramp))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really a 16-bit file
    arr = _rgb(load_image(data))
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    assert (arr[..., 0] == arr[..., 1]).all()
    assert np.all(np.diff(arr[..., 0].ravel().astype(int)) >= 0)  # monotone, no wrap-around
    assert len(np.unique(arr)) > 32  # spread over the range, not squashed to 0/255


def test_pixel_limit_refuses_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_encode(Image.new("RGB", (5000, 5000)), compress_level=1))
    loads: list[int] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> object:
        loads.append(1)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png.*exceeds the limit"):
        load_image(path, max_pixels=1_000_000)
    assert not loads, "pixel data was decoded before the size check"
    # The same file decodes (through the counted load) with a limit above its size.
    assert load_image(path, max_pixels=30_000_000).size == (5000, 5000)
    assert loads


def test_large_jpeg_decodes_at_a_reduced_scale(tmp_path: Path) -> None:
    # A phone photo over the limit is decoded by libjpeg at 1/2, 1/4 or 1/8 scale, the
    # largest that fits; the same pixels as PNG are refused (no reduced decoding there).
    photo = Image.new("RGB", (2001, 1499), (200, 30, 30))
    path = tmp_path / "big.jpg"
    photo.save(path, quality=95)
    assert load_image(path).size == (2001, 1499)  # under the default limit: untouched
    half = load_image(path, max_pixels=1_000_000)
    assert half.size == (1001, 750) and half.mode == "RGB"
    assert np.abs(np.asarray(half, dtype=int) - (200, 30, 30)).max() <= 3
    assert load_image(path, max_pixels=200_000).size == (501, 375)  # 1/4
    with pytest.raises(ImageTooLargeError, match=r"big\.jpg.*even decoded at 1/8 scale"):
        load_image(path, max_pixels=40_000)  # 1/8 is 251x188 = 47,188 pixels
    png = tmp_path / "big.png"
    photo.save(png)
    with pytest.raises(ImageTooLargeError, match=r"big\.png.*exceeds the limit of 1,000,000$"):
        load_image(png, max_pixels=1_000_000)


def test_reduced_jpeg_keeps_exif_orientation(tmp_path: Path) -> None:
    photo = Image.new("RGB", (2000, 1000), (10, 120, 240))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    path = tmp_path / "sideways.jpg"
    photo.save(path, exif=exif)
    assert load_image(path, max_pixels=600_000).size == (500, 1000)  # 1/2 scale, upright


def test_too_large_is_a_decode_error() -> None:
    # Callers that catch ImageDecodeError (data check, the service) also catch the limit.
    assert issubclass(ImageTooLargeError, ImageDecodeError)


@pytest.mark.parametrize("case", ["truncated", "empty", "text", "missing"])
def test_bad_files_raise_naming_the_file(tmp_path: Path, sample_dir: Path, case: str) -> None:
    jpeg = next((sample_dir / "images").glob("*.jpg")).read_bytes()
    path = tmp_path / f"bad-{case}.jpg"
    if case == "truncated":
        path.write_bytes(jpeg[: len(jpeg) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a picture\n")
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert path.name in str(info.value)


def test_bytes_input(sample_dir: Path) -> None:
    path = next((sample_dir / "images").glob("*.jpg"))
    from_bytes = load_image(path.read_bytes())
    assert np.array_equal(_rgb(from_bytes), _rgb(load_image(path)))
    with pytest.raises(ImageDecodeError, match=r"upload\.bin"):
        load_image(b"", name="upload.bin")
    with pytest.raises(ImageDecodeError, match=r"upload\.bin"):
        load_image(b"GIF89a garbage", name="upload.bin")


def test_heic_photo_decodes_upright(tmp_path: Path, sample_dir: Path) -> None:
    # iPhones save HEIC by default; pillow-heif reads it and libheif applies the rotation.
    photo = load_image(next((sample_dir / "images").glob("*.jpg")))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    path = tmp_path / "IMG_0001.HEIC"
    # Given EXIF bytes, pillow-heif writes the rotation as the HEIF 'irot' box, as cameras do.
    photo.save(path, "HEIF", quality=95, exif=exif.tobytes())
    assert path.read_bytes()[4:12] == b"ftypheic"
    out = load_image(path)
    assert out.size == (photo.height, photo.width)  # upright, rotated once (not twice)
    upright = np.asarray(photo.transpose(Image.Transpose.ROTATE_270), dtype=float)
    assert np.abs(_rgb(out).astype(float) - upright).mean() < 6  # lossy, but the same photo


def test_heic_truncated_or_too_large_is_a_decode_error(tmp_path: Path) -> None:
    data = _encode(Image.new("RGB", (320, 200), (200, 30, 30)), "HEIF")
    path = tmp_path / "cut.heic"
    path.write_bytes(data[:-10])
    with pytest.raises(ImageDecodeError, match=r"cut\.heic: truncated or corrupt"):
        load_image(path)
    with pytest.raises(ImageTooLargeError, match="64,000 pixels exceeds"):
        load_image(data, max_pixels=1000)


def test_folders_of_heic_photos_are_listed(tmp_path: Path) -> None:
    from rxvision.identify.predict_io import expand_inputs

    (tmp_path / "a.HEIC").write_bytes(_encode(Image.new("RGB", (8, 8)), "HEIF"))
    (tmp_path / "notes.txt").write_text("not a photo")
    items, batch = expand_inputs([str(tmp_path)])
    assert batch and [i.path.name for i in items] == ["a.HEIC"]
