"""Safe image decoding shared by training, evaluation, prediction and the service.

Every image enters RxVision through :func:`load_image`. JPEG, PNG, WebP, BMP, TIFF, GIF and
HEIC/HEIF (iPhone photos, through pillow-heif) are read; EXIF orientation is applied (for
HEIC, libheif applies the file's rotation); grayscale, palette, RGBA/LA (composited on white),
CMYK and 16-bit images become 8-bit RGB; images over ``max_pixels`` are refused before
decoding (decompression bombs), except a JPEG that libjpeg can decode at 1/2, 1/4 or 1/8
scale within the limit (a 48 MP phone photo); empty, truncated and non-image inputs raise
:class:`ImageDecodeError` naming the source.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

register_heif_opener()  # HEIC/HEIF, the default format of iPhone cameras

DEFAULT_MAX_PIXELS = 40_000_000  # 12-24 MP pass; a 48 MP JPEG decodes at 1/2 scale


class ImageDecodeError(ValueError):
    """An input is not a readable, acceptable image."""


class ImageTooLargeError(ImageDecodeError):
    """An image has more pixels than the configured limit."""


def load_image(
    source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """Decode a path or raw bytes into an 8-bit RGB PIL image.

    Args:
        source: file path or the file's bytes.
        max_pixels: refuse images with more pixels than this (checked from the header).
        name: how to call the input in error messages (defaults to the path).
        min_side: decode a JPEG at the smallest DCT scale (1/2, 1/4 or 1/8) whose longer
            side is still at least this many pixels (a 12 MP photo for pill finding needs
            ~1,000 px, and decodes about 8x faster at 1/4 scale); other formats decode whole.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<uploaded image>")
    if isinstance(source, bytes):
        if not source:
            raise ImageDecodeError(f"{label}: empty file")
        fh: io.BytesIO | Path = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise ImageDecodeError(f"{label}: empty file")
        fh = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # ``with`` closes the file also when the size check or decoding fails.
            with Image.open(fh) as img:
                w, h = img.size
                if min_side is not None and img.format == "JPEG":
                    scale = max([s for s in (1, 2, 4, 8) if max(w, h) // s >= min_side],
                                default=1)
                    if scale > 1:
                        img.draft(img.mode, (w // scale, h // scale))
                        w, h = img.size
                if w * h > max_pixels and not reduce_jpeg(img, max_pixels):
                    even = " (even decoded at 1/8 scale)" if img.format == "JPEG" else ""
                    raise ImageTooLargeError(f"{label}: {w}x{h} = {w * h:,} pixels exceeds the "
                                             f"limit of {max_pixels:,}{even}")
                img.load()
                # Inside the try: a corrupt EXIF block or odd mode is a decode error too.
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{label}: image too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{label}: not an image file (unrecognised format)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{label}: truncated or corrupt image ({exc})") from exc


def reduce_jpeg(img: Image.Image, max_pixels: int) -> bool:
    """Have a JPEG decode at the largest of 1/2, 1/4, 1/8 scale within ``max_pixels``.

    libjpeg scales in the DCT domain, so the full-size image is never in memory. Returns
    False (the image is left as it is) for other formats or when 1/8 scale is still too big.
    The model sees a few hundred pixels, so a 48 MP photo loses nothing at 1/2 scale.
    """
    if img.format != "JPEG":
        return False
    w, h = img.size
    for scale in (2, 4, 8):
        if math.ceil(w / scale) * math.ceil(h / scale) <= max_pixels:
            img.draft(img.mode, (w // scale, h // scale))  # Pillow picks the scale w // size
            return img.size[0] * img.size[1] <= max_pixels
    return False


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
