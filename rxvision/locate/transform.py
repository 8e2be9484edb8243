"""Evaluation-time preprocessing, derived only from an artifact's ``preprocessing`` card.

Images are letterboxed (aspect kept, padded with the mean colour) to ``input_size`` and
normalised with the card's mean/std, so training views, evaluation, export and the
service all see pixels the same way. With ``zoom: auto`` in the card (or passed here) a
photo whose pill is small in the frame is first cropped around it at full resolution
(:mod:`rxvision.locate.locator`); ``off`` or a card without the key leaves photos whole.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from ..data.transforms import ZOOM_MODES, card_zoom, fill_colour, letterbox
from .locator import locate_pills, zoom_square
from .presence import check_photo


class ZoomResult(NamedTuple):
    """What the zoom step did with one photo, and what the photo check found."""

    crop: list[int] | None  # the square (x0, y0, x1, y1) of the photo the model saw, or None
    note: str | None  # the locator's reason (``PillLocation.reason``); None with zoom off
    # Why the photo must be retaken (:func:`~.presence.check_photo`), or None; always None
    # unless the check was asked for.
    retake: str | None = None


class EvalTransform:
    """PIL RGB image -> normalised float tensor (3, H, W), from a preprocessing card."""

    def __init__(self, preprocessing: dict[str, Any], zoom: str | None = None):
        """``zoom`` overrides the card's ``preprocessing.zoom`` ("auto" or "off")."""
        self.zoom = zoom or card_zoom(preprocessing)
        if self.zoom not in ZOOM_MODES:
            raise ValueError(f"zoom must be one of {ZOOM_MODES}, got {self.zoom!r}")
        self.size = tuple(int(s) for s in preprocessing["input_size"])
        self.mean = torch.tensor(preprocessing["mean"]).view(3, 1, 1)
        self.std = torch.tensor(preprocessing["std"]).view(3, 1, 1)
        self.interpolation = preprocessing.get("interpolation", "bicubic")
        self.fill = fill_colour(preprocessing["mean"])

    def to_uint8(self, img: Image.Image) -> torch.Tensor:
        """Letterboxed uint8 tensor (3, H, W), before normalisation (zoomed first if set)."""
        return self.to_uint8_and_zoom(img)[0]

    def to_uint8_and_zoom(self, img: Image.Image, check: bool = False
                          ) -> tuple[torch.Tensor, ZoomResult]:
        """:meth:`to_uint8`, and where it zoomed (the crop, or None) and why.

        ``check``: also run the photo check (is there a pill, is the photo usable), as
        identification does; training, evaluation and enrollment views skip it.
        """
        retake = check_photo(img).retake if check else None
        crop, note = None, None
        if self.zoom == "auto":
            location = locate_pills(img, min_crop=min(self.size))  # never upsample: blur
            note = location.reason
            if location.zoom:
                crop = list(zoom_square(location, img.size))
                img = img.crop(crop)
        boxed = letterbox(img, self.size, self.fill, self.interpolation)
        tensor = torch.from_numpy(np.asarray(boxed).copy()).permute(2, 0, 1)
        return tensor, ZoomResult(crop, note, retake)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (…, 3, H, W) -> normalised float."""
        return (x.float() / 255.0 - self.mean) / self.std

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(self.to_uint8(img))
