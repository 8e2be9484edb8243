"""Render phone-style photos of a reference pill with exact boxes and masks.

:class:`IndependentRenderer` chains the validation renderer's parts: cut the sides out of
the studio reference (:mod:`.segment`), draw a surface (:mod:`.backgrounds`) and a tilted
phone camera (:mod:`.geometry`), lay one pill or two (one per side) on the table under a
directional light (:mod:`.scene`), project the scene into the photo, and expose it through
the optics and sensor (:mod:`.sensor`). It shares no code or parameter with the training
renderer (``rxvision.data.synth``) and must never feed training.

Example:
    >>> r = IndependentRenderer(size=512)
    >>> photo, meta = r.render(reference, np.random.default_rng(0), mode="both")
    >>> photo.size, [p["box"] for p in meta["pills"]]
    ((512, 384), [[101, 37, 190, 121], [265, 210, 340, 301]])
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..data.datasets import DatasetError
from .backgrounds import TEXTURES, background
from .colour import to_linear
from .geometry import CameraParams, apply, random_camera, warp
from .scene import SceneParams, paint, pill_layer, place_pills, random_light
from .segment import SegmentParams, Side, cut_sides
from .sensor import SensorParams, draw, encode_jpeg, expose

MODES = ("both", "one")
MIN_SIZE, MAX_SIZE = 256, 4032  # long side: from a thumbnail to a 12 MP (4032x3024) photo


class RenderError(DatasetError):
    """A render request cannot be carried out (bad size, mode, kind or reference)."""


@dataclass(frozen=True)
class RenderParams:
    """Every range the independent renderer draws from, grouped by stage."""

    camera: CameraParams = field(default_factory=CameraParams)
    scene: SceneParams = field(default_factory=SceneParams)
    sensor: SensorParams = field(default_factory=SensorParams)
    segment: SegmentParams = field(default_factory=SegmentParams)
    backgrounds: tuple[str, ...] = tuple(TEXTURES)
    portrait_prob: float = 0.5  # phones are held upright about as often as sideways


class IndependentRenderer:
    """Phone-style photos of reference pills for validation (see module docstring).

    Args:
        size: long side of the photo in pixels, 256 to 4032 (4032 gives 4032x3024, 12 MP).
        aspect: long side / short side (4:3 as phone cameras by default).
        params: ranges of every random draw.
    """

    def __init__(self, size: int = 1024, aspect: float = 4 / 3, params: RenderParams | None = None):
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise RenderError(
                f"size {size} is outside {MIN_SIZE}..{MAX_SIZE} pixels (long "
                "side; 4032 is a 12 MP photo)"
            )
        if not 1.0 <= aspect <= 3.0:
            raise RenderError(f"aspect {aspect} is outside 1..3 (long side / short side)")
        self.params = params or RenderParams()
        unknown = set(self.params.backgrounds) - set(TEXTURES)
        if unknown or not self.params.backgrounds:
            raise RenderError(
                f"unknown background kind(s) {sorted(unknown)}; choose from {sorted(TEXTURES)}"
            )
        self.size = int(size)
        self.short = round(size / aspect)

    def cut(self, reference: Image.Image) -> list[Side]:
        """The reference's pill sides (cache them when rendering many views of one pill)."""
        return cut_sides(reference, self.params.segment)

    def render(
        self,
        reference: Image.Image | list[Side],
        rng: np.random.Generator,
        mode: str = "both",
        background_kind: str | None = None,
    ) -> tuple[Image.Image, dict[str, Any]]:
        """:meth:`render_jpeg`, decoded: the RGB photo and its metadata."""
        jpeg, meta = self.render_jpeg(reference, rng, mode, background_kind)
        with Image.open(io.BytesIO(jpeg)) as im:
            return im.convert("RGB"), meta

    def render_jpeg(
        self,
        reference: Image.Image | list[Side],
        rng: np.random.Generator,
        mode: str = "both",
        background_kind: str | None = None,
    ) -> tuple[bytes, dict[str, Any]]:
        """One photo of the pill lying on a surface, and what is where in it.

        Args:
            reference: the C3PI studio photo, or its sides from :meth:`cut`.
            rng: the only source of randomness; the same seed gives the same photo.
            mode: "both" (two pills showing front and back) or "one" (one pill, one side).
            background_kind: a key of ``backgrounds.TEXTURES``; default: drawn at random.

        Returns:
            The photo as JPEG bytes (the file a phone would save) and metadata: ``size``,
            ``mode``, ``background``, ``camera``, ``light``, ``sensor`` and ``pills``, one dict
            per pill with
            ``side`` (0 front, 1 back), ``box`` [x0, y0, x1, y1) in photo pixels,
            ``polygon`` (convex outline, photo coordinates), ``mask`` (bool array, H x W,
            coverage >= 0.5) and ``fraction`` (box long side / photo short side).
        """
        if mode not in MODES:
            raise RenderError(f"mode {mode!r} is not one of {MODES}")
        if background_kind is not None and background_kind not in TEXTURES:
            raise RenderError(
                f"unknown background kind {background_kind!r}; choose from {sorted(TEXTURES)}"
            )
        if isinstance(reference, Image.Image):
            sides = self.cut(reference)
        else:
            sides = list(reference)
            if not sides or not all(isinstance(s, Side) for s in sides):
                raise RenderError(
                    "reference must be a PIL image or a non-empty list of Side "
                    "from IndependentRenderer.cut"
                )
        p = self.params
        portrait = rng.random() < p.portrait_prob
        size = (self.short, self.size) if portrait else (self.size, self.short)
        camera = random_camera(rng, size, p.camera)
        kind = background_kind or p.backgrounds[int(rng.integers(len(p.backgrounds)))]
        surface, kind = background(rng, camera.canvas_size[1], camera.canvas_size[0], kind)
        canvas = to_linear(surface)
        pills = place_pills(rng, sides, camera, mode, p.scene)
        light = random_light(rng, p.scene)
        paint(canvas, sides, pills, light, rng, p.scene)
        scene = warp(canvas, camera.to_canvas, size)
        exposure = draw(rng, min(size), p.sensor)
        jpeg = encode_jpeg(expose(scene, exposure, rng), exposure.jpeg_quality)
        meta = {
            "size": list(size),
            "mode": mode,
            "background": kind,
            "camera": {"tilt": camera.tilt, "fov": camera.fov, "density": camera.density},
            "light": {
                "azimuth": light.azimuth,
                "elevation": light.elevation,
                "gradient": light.gradient,
                "shadow": light.shadow,
            },
            "sensor": exposure.__dict__,
            "pills": [self._pill_meta(sides, pill, camera, size) for pill in pills],
        }
        return jpeg, meta

    @staticmethod
    def _pill_meta(
        sides: list[Side], pill: Any, camera: Any, size: tuple[int, int]
    ) -> dict[str, Any]:
        """Exact mask, box and outline of one pill in photo coordinates."""
        w, h = size
        polygon = apply(camera.to_photo, pill.outline)
        x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 2, [w, h])
        # Coverage of the photo window: warp the pill's canvas coverage into it.
        cx0, cy0 = np.floor(pill.outline.min(axis=0)).astype(int) - 3
        cx1, cy1 = np.ceil(pill.outline.max(axis=0)).astype(int) + 3
        _, alpha = pill_layer(sides[pill.side], pill.affine, (cx0, cy0, cx1, cy1))
        shift = np.array([[1, 0, -cx0], [0, 1, -cy0], [0, 0, 1.0]])
        cover = warp(
            alpha, shift @ camera.to_canvas, (int(x1 - x0), int(y1 - y0)), (int(x0), int(y0))
        )
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y1, x0:x1] = cover >= 0.5
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            raise RenderError("a pill vanished in projection; this is a renderer bug")
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        return {
            "side": pill.side,
            "box": box,
            "polygon": polygon.round(2).tolist(),
            "mask": mask,
            "fraction": max(box[2] - box[0], box[3] - box[1]) / min(w, h),
            "requested_fraction": pill.fraction,
        }
