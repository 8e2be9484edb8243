"""Evaluation-time preprocessing, derived only from an artifact's ``preprocessing`` card.

Images are letterboxed (aspect kept, padded with the mean colour) to ``input_size`` and
normalised with the card's mean/std, so training views, evaluation, export and the
service all see pixels the same way. With ``zoom: auto`` in the card (or passed here) a
photo whose pill is small in the frame is first cropped around it at full resolution
(:mod:`rxvision.locate.locator`); ``off`` or a card without the key leaves photos whole.

The work is PIL and NumPy: :meth:`EvalTransform.array`, :meth:`~EvalTransform.load_and_zoom`
and :meth:`~EvalTransform.normalize` of an array never import torch (ONNX serving);
:meth:`~EvalTransform.to_uint8` and calling the transform give torch tensors, for training,
evaluation and enrollment.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.decode import DEFAULT_MAX_PIXELS, load_image
from ..data.transforms import ZOOM_MODES, card_zoom, fill_colour, letterbox
from .locator import WORK_SIDE, WorkCopy, locate_pills, zoom_square
from .presence import check_photo

if TYPE_CHECKING:
    import torch

DRAFT_SIDE = 2 * WORK_SIDE  # a reduced JPEG decode keeps its longer side at least this


class ZoomResult(NamedTuple):
    """What the zoom step did with one photo, and what the photo check found."""

    crop: list[int] | None  # the square (x0, y0, x1, y1) of the photo the model saw, or None
    note: str | None  # the locator's reason (``PillLocation.reason``); None with zoom off
    # Why the photo must be retaken (:func:`~.presence.check_photo`), or None; always None
    # unless the check was asked for.
    retake: str | None = None


def _jpeg_size(source: str | Path | bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG as displayed (EXIF orientation applied), from its header
    alone; None for other formats and for anything unreadable (the decode that follows
    reports what is wrong with it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                if im.format != "JPEG":
                    return None
                w, h = im.size
                if im.getexif().get(0x0112) in (5, 6, 7, 8):  # turned a quarter: swapped
                    w, h = h, w
                return w, h
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError,
            Image.DecompressionBombError):
        return None


def load_reduced(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                 name: str | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode a photo file or its bytes, a large JPEG at a reduced DCT scale that keeps its
    longer side at least :data:`DRAFT_SIDE`; and the photo's full (width, height) (the
    decoded size when it was decoded whole)."""
    full = _jpeg_size(source)
    img = load_image(source, max_pixels=max_pixels, name=name,
                     min_side=DRAFT_SIDE if full else None)
    return img, full or img.size


class EvalTransform:
    """PIL RGB image -> normalised float tensor (3, H, W), from a preprocessing card.

    :meth:`array` and :meth:`normalize` give the same pixels as NumPy arrays.
    """

    def __init__(self, preprocessing: dict[str, Any], zoom: str | None = None):
        """``zoom`` overrides the card's ``preprocessing.zoom`` ("auto" or "off")."""
        self.zoom = zoom or card_zoom(preprocessing)
        if self.zoom not in ZOOM_MODES:
            raise ValueError(f"zoom must be one of {ZOOM_MODES}, got {self.zoom!r}")
        self.size = tuple(int(s) for s in preprocessing["input_size"])
        self.mean = np.asarray(preprocessing["mean"], dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(preprocessing["std"], dtype=np.float32).reshape(3, 1, 1)
        self.interpolation = preprocessing.get("interpolation", "bicubic")
        self.fill = fill_colour(preprocessing["mean"])

    def array(self, img: Image.Image) -> np.ndarray:
        """Letterboxed uint8 array (3, H, W), before normalisation (zoomed first if set)."""
        return self.to_uint8_and_zoom(img)[0]

    def to_uint8(self, img: Image.Image) -> torch.Tensor:
        """:meth:`array` as a torch tensor (3, H, W) uint8."""
        import torch

        return torch.from_numpy(self.array(img))

    def to_uint8_and_zoom(self, img: Image.Image, check: bool = False
                          ) -> tuple[np.ndarray, ZoomResult]:
        """:meth:`array`, and where it zoomed (the crop, or None) and why.

        ``check``: also run the photo check (is there a pill, is the photo usable), as
        identification does; training, evaluation and enrollment views skip it.
        """
        work = WorkCopy.of(img)  # one working copy and background fit for both steps
        retake = check_photo(img, work=work).retake if check else None
        crop, note = None, None
        if self.zoom == "auto":
            location = locate_pills(img, min(self.size), work)  # never upsample: blur
            note = location.reason
            if location.zoom:
                crop = list(zoom_square(location, img.size))
                img = img.crop(crop)
        return self._boxed(img), ZoomResult(crop, note, retake)

    def load_and_zoom(self, source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                      name: str | None = None, check: bool = False
                      ) -> tuple[np.ndarray, ZoomResult, Image.Image]:
        """Decode a photo file or its bytes no larger than needed, then as
        :meth:`to_uint8_and_zoom`; also returns the decoded image.

        A large JPEG is decoded at a reduced DCT scale (1/2, 1/4 or 1/8; libjpeg does not
        compute the dropped detail) with its longer side still at least
        :data:`DRAFT_SIDE`, twice the locator's working copy: a 12 MP photo at 1/4
        (1008 px). The photo check, the locator and the letterbox of a pill that fills
        the frame use that. When the model must zoom to a small pill, the crop is taken
        from a second decode at the smallest scale that keeps the crop at least the
        model's input size, as a full-resolution crop would be (the crop reported is in
        photo pixels). Other formats and small JPEGs are decoded once, whole.
        """
        small, full = load_reduced(source, max_pixels, name)
        factor = full[0] / small.width  # photo pixels per decoded pixel
        if factor <= 1.0:
            boxed, zoom = self.to_uint8_and_zoom(small, check)
            return boxed, zoom, small
        work = WorkCopy.of(small)
        retake = check_photo(small, factor, work).retake if check else None
        if self.zoom != "auto":
            return self._boxed(small), ZoomResult(None, None, retake), small
        need = min(self.size)
        location = locate_pills(small, need / factor, work)  # in photo pixels, as above
        if not location.zoom:
            return self._boxed(small), ZoomResult(None, location.reason, retake), small
        crop = zoom_square(location, small.size)  # (x0, y0, x1, y1) in decoded pixels
        side = (crop[2] - crop[0]) * factor  # in photo pixels
        scale = max([s for s in (1, 2, 4, 8) if side / s >= need], default=1)
        image = small
        if full[0] / scale > small.width:  # the crop needs more detail than the draft has
            image = load_image(source, max_pixels=max_pixels, name=name,
                               min_side=math.ceil(max(full) / scale))
        g = image.width / small.width
        box = [min(round(v * g), image.width if i % 2 == 0 else image.height)
               for i, v in enumerate(crop)]
        photo_crop = [round(v * factor) for v in crop]
        return (self._boxed(image.crop(box)), ZoomResult(photo_crop, location.reason, retake),
                image)

    def _boxed(self, img: Image.Image) -> np.ndarray:
        """Letterbox to the card's input size: uint8 array (3, H, W)."""
        boxed = letterbox(img, self.size, self.fill, self.interpolation)
        return np.ascontiguousarray(np.asarray(boxed).transpose(2, 0, 1))

    def normalize(self, x: Any) -> Any:
        """uint8 (…, 3, H, W) -> normalised float32: a NumPy array for an array, a torch
        tensor for a tensor."""
        if isinstance(x, np.ndarray):
            return (x.astype(np.float32) / np.float32(255.0) - self.mean) / self.std
        import torch  # a torch batch: torch is loaded already

        mean, std = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        return (x.float() / 255.0 - mean.to(x.device)) / std.to(x.device)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(self.to_uint8(img))
