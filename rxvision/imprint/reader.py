"""Read the imprint on one pill crop: tokens with confidences, orientation and timing.

A pill crop (a PIL RGB image of one pill, roughly centred, as the locator cuts it from the
photo) is brought to a working size for the text detector: small crops are upsampled, large
ones are detected on a reduced copy while each text line is cut for the recogniser from
the crop at no less than its own resolution. Upsampling interpolates; it adds no detail, so
:attr:`ImprintRead.source_size` keeps the crop's own pixels for whoever judges the read.

Orientation: the detector finds text lines at any angle, lines taller than wide are
turned a quarter, and each line is read both ways up; the reading with the higher
confidence is kept (a half turn reads "6" as "9", "900" as "006"), the other is kept as
:attr:`ImprintToken.alternative` when its confidence is close.

Debossed imprints have no ink, only shading: the crop is read first as a local-contrast
copy (CLAHE on the lightness), then as it is unless the first pass already read a token
confidently (``enhance_modes``, ``stop_confidence``); per text line the more confident
reading wins.

Example:
    >>> read = read_imprint(crop)                 # the default reader, loaded once
    >>> read.text(), read.elapsed_ms              # ("M 411", 92.0)
    >>> [(t.text, round(t.confidence, 2), t.angle) for t in read.tokens]
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps

DEFAULT_READER = "rapidocr"
WORK_SIDE = 480  # the crop's longer side for text detection, in pixels
MAX_UPSCALE = 6.0  # ... but a tiny crop is enlarged at most this much (it has no more to show)
MIN_CONFIDENCE = 0.5  # tokens below this are not reported by ImprintRead.text()
ENHANCE_MODES = ("none", "clahe", "invert")
ENHANCE = ("clahe", "none")  # the default passes, in order
STOP_CONFIDENCE = 0.9  # no further pass once one read a 2+ character token this surely

_TOKEN_SPLIT = re.compile(r"[^0-9A-Za-z]+")


class ImprintReaderError(RuntimeError):
    """The imprint reader cannot run (engine not installed, unknown reader name)."""


@dataclass(frozen=True)
class ImprintToken:
    """One read token (ASCII letters and digits only).

    ``confidence`` is the recogniser's score in [0, 1]; ``angle`` the clockwise turn (0, 90,
    180, 270) that made the text line upright; ``box`` (x0, y0, x1, y1) where it sits in the
    crop as given, in its pixels; ``alternative`` the same line read the other way up, as
    (text, confidence), when that was nearly as confident (6/9, 0/0), else None.
    """

    text: str
    confidence: float
    angle: int = 0
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    alternative: tuple[str, float] | None = None


@dataclass(frozen=True)
class ImprintRead:
    """What one reader read on one crop.

    ``source_size`` is the crop's own (width, height); ``scale`` the factor it was resized
    by for detection (>1 means upsampled: interpolated, no added detail); ``elapsed_ms`` the
    whole read, preprocessing included.
    """

    tokens: tuple[ImprintToken, ...]
    reader: str
    source_size: tuple[int, int]
    scale: float
    elapsed_ms: float
    enhance: tuple[str, ...] = field(default=("none",))

    def confident(self, min_confidence: float = MIN_CONFIDENCE) -> tuple[ImprintToken, ...]:
        """Tokens at or above ``min_confidence``."""
        return tuple(t for t in self.tokens if t.confidence >= min_confidence)

    def text(self, min_confidence: float = MIN_CONFIDENCE) -> str:
        """The confident tokens joined by spaces, e.g. ``"M 411"`` ('' when nothing)."""
        return " ".join(t.text for t in self.confident(min_confidence))


@dataclass(frozen=True)
class LineRead:
    """A backend's reading of one text line, before splitting into tokens."""

    text: str
    confidence: float
    angle: int
    box: tuple[float, float, float, float]
    alternative: tuple[str, float] | None = None


class ImprintBackend(Protocol):
    """An OCR engine: text lines on an upright RGB array (H, W, 3) uint8."""

    name: str

    def read_lines(self, rgb: np.ndarray, detail: np.ndarray | None = None) -> list[LineRead]:
        """Text lines found in ``rgb`` (H, W, 3) uint8, boxes in its pixels.

        ``detail``, when given, is the same picture at a higher resolution; a backend may cut
        the lines it found for the recogniser from it.
        """
        ...


def _rapidocr() -> ImprintBackend:
    from ._rapidocr import RapidOcrBackend

    return RapidOcrBackend()


def _tesseract() -> ImprintBackend:
    from ._tesseract import TesseractBackend

    return TesseractBackend()


READERS: dict[str, Callable[[], ImprintBackend]] = {
    "rapidocr": _rapidocr,
    "tesseract": _tesseract,
}


@cache
def get_reader(name: str = DEFAULT_READER) -> ImprintBackend:
    """The backend called ``name``, built once per process (models load on first use).

    Raises:
        ImprintReaderError: unknown name, or its engine is not installed.
    """
    if name not in READERS:
        raise ImprintReaderError(f"unknown imprint reader {name!r}; choose one of {list(READERS)}")
    return READERS[name]()


def enhance(rgb: np.ndarray, mode: str) -> np.ndarray:
    """A contrast variant of ``rgb`` (H, W, 3) uint8 for imprints without ink.

    ``none`` returns it unchanged; ``clahe`` equalises the lightness locally (grey output,
    3 channels), which lifts the shading of a debossed imprint; ``invert`` is its negative
    (light text on dark pills).
    """
    if mode == "none":
        return rgb
    if mode == "invert":
        return 255 - rgb
    if mode == "clahe":
        import cv2

        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        tile = max(2, round(min(grey.shape) / 80))
        out = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(tile, tile)).apply(grey)
        return np.repeat(out[..., None], 3, axis=2)
    raise ValueError(f"unknown enhance mode {mode!r}; choose from {ENHANCE_MODES}")


def working_copy(crop: Image.Image, work_side: int = WORK_SIDE) -> tuple[np.ndarray, float]:
    """``crop`` resized so its longer side is ``work_side`` (upscaling capped at
    :data:`MAX_UPSCALE`), as (array, scale)."""
    w, h = crop.size
    scale = min(work_side / max(w, h), MAX_UPSCALE)
    if abs(scale - 1.0) > 1e-3:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        crop = crop.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BOX)
    return np.asarray(crop.convert("RGB")), scale


def split_tokens(line: LineRead, scale: float) -> list[ImprintToken]:
    """The ASCII letter-digit runs of one line, with its box mapped back to crop pixels."""
    box = tuple(v / scale for v in line.box)
    alt = None
    if line.alternative is not None:
        alt_text = " ".join(t for t in _TOKEN_SPLIT.split(line.alternative[0]) if t)
        alt = (alt_text, line.alternative[1]) if alt_text else None
    return [
        ImprintToken(part, float(line.confidence), line.angle, box, alt)  # type: ignore[arg-type]
        for part in _TOKEN_SPLIT.split(line.text)
        if part
    ]


def _merge(lines: Sequence[LineRead]) -> list[LineRead]:
    """Overlapping lines from several enhancements: keep the most confident of each place."""
    kept: list[LineRead] = []
    for line in sorted(lines, key=lambda x: -x.confidence):
        if all(_iou(line.box, k.box) < 0.3 for k in kept):
            kept.append(line)
    return sorted(kept, key=lambda x: (x.box[1], x.box[0]))


def _settled(lines: Sequence[LineRead], confidence: float) -> bool:
    return any(
        ln.confidence >= confidence and len(re.sub(r"[^0-9A-Za-z]", "", ln.text)) >= 2
        for ln in lines
    )


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def read_imprint(
    crop: Image.Image,
    reader: str | ImprintBackend = DEFAULT_READER,
    enhance_modes: Sequence[str] = ENHANCE,
    work_side: int = WORK_SIDE,
    stop_confidence: float | None = STOP_CONFIDENCE,
) -> ImprintRead:
    """Read the imprint on one pill crop.

    Args:
        crop: a PIL image of one pill, roughly centred (any mode; EXIF orientation applied).
        reader: a name in :data:`READERS` (its engine is loaded once per process) or a
            backend object.
        enhance_modes: contrast variants to read (see :func:`enhance`); per text line the
            most confident reading across them is kept.
        work_side: the longer side the crop is brought to for detection.
        stop_confidence: skip the remaining enhancement passes once a pass read a token of
            2+ characters at this confidence (None: always run all). On c3pi-4k studio
            crops this cut CPU time by 28% at the same read rate.

    Returns:
        An :class:`ImprintRead`; ``tokens`` is empty when nothing was read.

    Raises:
        ImprintReaderError: the reader is unknown or its engine is missing.
        TypeError: ``crop`` is not a PIL image.
    """
    if not isinstance(crop, Image.Image):
        raise TypeError(f"read_imprint needs a PIL image of one pill, got {type(crop).__name__}")
    for mode in enhance_modes:
        if mode not in ENHANCE_MODES:
            raise ValueError(f"unknown enhance mode {mode!r}; choose from {ENHANCE_MODES}")
    backend = get_reader(reader) if isinstance(reader, str) else reader
    start = time.perf_counter()
    crop = ImageOps.exif_transpose(crop).convert("RGB")
    rgb, scale = working_copy(crop, work_side)
    # A crop larger than the working copy keeps its own detail for the recogniser.
    detail = np.asarray(crop) if scale < 1.0 else None
    lines: list[LineRead] = []
    for mode in enhance_modes:
        hires = None if detail is None else enhance(detail, mode)
        lines.extend(backend.read_lines(enhance(rgb, mode), hires))
        if stop_confidence is not None and _settled(lines, stop_confidence):
            break
    tokens = [tok for line in _merge(lines) for tok in split_tokens(line, scale)]
    elapsed = (time.perf_counter() - start) * 1000.0
    return ImprintRead(
        tokens=tuple(tokens),
        reader=backend.name,
        source_size=crop.size,
        scale=scale,
        elapsed_ms=elapsed,
        enhance=tuple(enhance_modes),
    )
