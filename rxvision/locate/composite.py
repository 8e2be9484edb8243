"""Training photos for the pill segmenter: pill cut-outs composited over procedural surfaces.

Each side of a C3PI reference photo, cut out with its exact alpha mask
(:func:`rxvision.data.cutout.cut_out_sides`), is scaled, rotated, relit and dropped on a
surface from :mod:`rxvision.locate.textures` with a soft shadow; a photo holds no pill,
one, a few or a crowd of up to :attr:`CompositeParams.max_pills`, sometimes touching. The
surface may carry things that are not pills (:mod:`rxvision.locate.distractors`). The
whole frame then gets uneven light, a colour cast, defocus, sensor noise and JPEG loss.
Because the pills are pasted, the per-pill masks are exact: the label map gives each
pixel the pill on top there (0 = background).

Example:
    >>> comp = Composites.from_images(reference_photos)
    >>> image, labels = comp.sample(np.random.default_rng(0))   # (S, S, 3) uint8, (S, S) int32
    >>> foreground, core = segmentation_targets(labels)
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from ..data.cutout import cut_out_sides
from .distractors import add_distractors
from .textures import random_surface


@dataclass(frozen=True)
class CompositeParams:
    """Ranges of the composites (sizes in pixels of the square frame of side ``size``).

    A pill's longest side is drawn log-uniformly between ``min_fill`` and ``max_fill`` of a
    photo ``photo_side`` pixels across (the size the segmenter sees photos at), so that a
    ``size`` frame is a window onto such a photo and pills keep the pixel sizes they have at
    inference; pills larger than the frame are partly in view.
    """

    size: int = 160
    photo_side: int = 320
    min_fill: float = 0.025
    max_fill: float = 0.6
    crowd_max_fill: float = 0.15  # pills in a crowd (5 or more) are at most this large
    max_pills: int = 24
    p_empty: float = 0.08
    p_one: float = 0.42
    p_few: float = 0.25  # 2-4 pills; the rest of the photos hold a crowd
    max_overlap: float = 0.12  # of a new pill's area that may lie on pills already placed
    max_blur: float = 1.6  # Gaussian sigma, pixels
    max_noise: float = 0.035  # noise std, fraction of full scale
    p_jpeg: float = 0.5


def sides_from_images(images: list[Image.Image]) -> list[np.ndarray]:
    """RGBA uint8 arrays (h, w, 4) of every pill side that could be cut out cleanly.

    Photos whose pills could not be separated from the background are skipped: their
    "cut-out" is the whole photo, which would teach the segmenter that a rectangle is a pill.
    """
    sides = []
    for image in images:
        cut = cut_out_sides(image)
        if cut.segmented:
            sides += [np.asarray(side) for side in cut.sides]
    if not sides:
        raise ValueError("no pill side could be cut out of the reference photos given")
    return sides


class Composites:
    """Random composites of pill sides over procedural surfaces; see the module docstring."""

    def __init__(self, sides: list[np.ndarray], params: CompositeParams | None = None):
        """``sides``: RGBA uint8 arrays (h, w, 4), e.g. from :func:`sides_from_images`."""
        if not sides:
            raise ValueError("Composites needs at least one pill side")
        self.sides = sides
        self.params = params or CompositeParams()

    @classmethod
    def from_images(
        cls, images: list[Image.Image], params: CompositeParams | None = None
    ) -> Composites:
        """Cut the sides out of C3PI-style reference photos."""
        return cls(sides_from_images(images), params)

    def _count(self, rng: np.random.Generator) -> int:
        p = self.params
        r = rng.random()
        if r < p.p_empty:
            return 0
        if r < p.p_empty + p.p_one:
            return 1
        if r < p.p_empty + p.p_one + p.p_few:
            return int(rng.integers(2, 5))
        return int(rng.integers(5, p.max_pills + 1))

    def _pill(self, rng: np.random.Generator, longest: float) -> Image.Image:
        """One side, relit, scaled to ``longest`` pixels and turned: RGBA image."""
        rgba = self.sides[rng.integers(len(self.sides))].astype(np.float32)
        gain = rng.uniform(0.7, 1.2) * rng.uniform(0.93, 1.07, 3)
        rgba[..., :3] = np.clip(rgba[..., :3] * gain, 0, 255)
        pill = Image.fromarray(rgba.astype(np.uint8), "RGBA")
        if rng.random() < 0.5:
            pill = pill.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        w, h = pill.size
        aspect = rng.uniform(0.9, 1.1)  # a little foreshortening
        k = longest / max(w, h)
        size = (max(2, round(w * k * aspect)), max(2, round(h * k / aspect)))
        pill = pill.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return pill.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR, expand=True)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One composite: image (S, S, 3) uint8 and pill labels (S, S) int32, 0 = background."""
        p = self.params
        s = p.size
        canvas = random_surface(rng, s, s)  # (S, S, 3) float in [0, 1]
        add_distractors(rng, canvas)  # fingers, laptops, cables, print: never labelled
        labels = np.zeros((s, s), dtype=np.int32)
        count = self._count(rng)
        top = p.crowd_max_fill if count >= 5 else p.max_fill
        placed = 0
        for _ in range(count):
            fill = np.exp(rng.uniform(np.log(p.min_fill), np.log(top)))
            pill = self._pill(rng, fill * p.photo_side)
            pw, ph = pill.size
            for _attempt in range(6):
                x0 = int(rng.integers(-pw // 3, s - 2 * pw // 3 + 1))
                y0 = int(rng.integers(-ph // 3, s - 2 * ph // 3 + 1))
                if self._paste(rng, canvas, labels, pill, x0, y0, placed + 1):
                    placed += 1
                    break
        return _camera(rng, canvas, p), labels

    def _paste(
        self,
        rng: np.random.Generator,
        canvas: np.ndarray,
        labels: np.ndarray,
        pill: Image.Image,
        x0: int,
        y0: int,
        index: int,
    ) -> bool:
        """Paste ``pill`` with its top-left at (x0, y0) unless it would cover other pills."""
        s = labels.shape[0]
        arr = np.asarray(pill, dtype=np.float32) / 255  # (h, w, 4)
        h, w = arr.shape[:2]
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, s), min(y0 + h, s)
        if cx1 - cx0 < 2 or cy1 - cy0 < 2:
            return False
        part = arr[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        alpha = part[..., 3]
        solid = alpha > 0.5
        if solid.sum() < 4:
            return False
        under = labels[cy0:cy1, cx0:cx1]
        if (under[solid] > 0).sum() > self.params.max_overlap * solid.sum():
            return False
        self._shadow(rng, canvas, pill, x0, y0)
        region = canvas[cy0:cy1, cx0:cx1]
        region[:] = region * (1 - alpha[..., None]) + part[..., :3] * alpha[..., None]
        under[solid] = index
        return True

    @staticmethod
    def _shadow(
        rng: np.random.Generator, canvas: np.ndarray, pill: Image.Image, x0: int, y0: int
    ) -> None:
        """Darken the surface under and beside the pill, as a lamp or window would."""
        if rng.random() < 0.25:
            return
        s = canvas.shape[0]
        longest = max(pill.size)
        blur = max(0.5, rng.uniform(0.03, 0.15) * longest)
        pad = int(3 * blur) + 1
        alpha = Image.new("L", (pill.size[0] + 2 * pad, pill.size[1] + 2 * pad), 0)
        alpha.paste(pill.getchannel("A"), (pad, pad))
        shade = np.asarray(alpha.filter(ImageFilter.GaussianBlur(blur)), np.float32) / 255
        dx, dy = (rng.normal(0, 0.08, 2) * longest).round().astype(int)
        sx0, sy0 = x0 - pad + dx, y0 - pad + dy
        h, w = shade.shape
        cx0, cy0, cx1, cy1 = max(sx0, 0), max(sy0, 0), min(sx0 + w, s), min(sy0 + h, s)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        part = shade[cy0 - sy0 : cy1 - sy0, cx0 - sx0 : cx1 - sx0]
        canvas[cy0:cy1, cx0:cx1] *= 1 - rng.uniform(0.15, 0.55) * part[..., None]


def _camera(rng: np.random.Generator, canvas: np.ndarray, p: CompositeParams) -> np.ndarray:
    """Uneven light, colour cast, defocus, noise and JPEG: float (S, S, 3) -> uint8."""
    s = canvas.shape[0]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.5) * (xx * np.cos(angle) + yy * np.sin(angle))
    light -= rng.uniform(0, 0.5) * (xx**2 + yy**2)  # vignette
    img = canvas * light[..., None] * rng.uniform(0.6, 1.25) * rng.uniform(0.9, 1.1, 3)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)
    out = Image.fromarray((img * 255).astype(np.uint8))
    if rng.random() < 0.6:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, p.max_blur)))
    arr = np.asarray(out).astype(np.float32)
    arr += rng.normal(0, rng.uniform(0, p.max_noise) * 255, arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < p.p_jpeg:
        buffer = io.BytesIO()
        out.save(buffer, format="JPEG", quality=int(rng.integers(35, 95)))
        out = Image.open(buffer).convert("RGB")
    return np.asarray(out)


CORE_FRACTION = 0.5  # a pill's core: pixels at least this fraction of its deepest distance in


def segmentation_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and core masks (H, W) float32 from a pill label map.

    The core of a pill is its interior at least :data:`CORE_FRACTION` of the pill's
    largest inner distance away from its edge: the cores of touching pills are apart, so
    they separate the pills that the foreground mask joins.
    """
    foreground = (labels > 0).astype(np.float32)
    core = np.zeros_like(foreground)
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(0, d.start - 1), d.stop + 1) for d in sl)
        region = labels[sl] == index
        distance = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        core[sl][distance >= CORE_FRACTION * distance.max()] = 1.0
    return foreground, core
