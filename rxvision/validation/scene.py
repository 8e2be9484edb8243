"""Paint the table scene on the canvas: surface, pills as they lie, cast shadows and light.

Everything here is in linear light on the canvas (the table plane's pixel grid, see
:mod:`.geometry`). Pills are placed by where they should appear in the photo: a target
centre in the frame and a length as a fraction of the photo's short side, converted to
canvas units with the camera's local scale there. Two pills (both sides) never overlap
and every pill lies wholly inside the frame, as a user photographing a pill frames it.

Light comes from one direction (azimuth and elevation): the surface brightens towards it,
each pill casts a soft shadow away from it (offset grows as the light gets lower), glossy
pills get a specular highlight on the side facing it, and glossy surfaces a broad glare.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from ..data.datasets import DatasetError
from .colour import to_linear
from .geometry import Camera, apply
from .segment import Side


class PlacementError(DatasetError):
    """The pills cannot be placed in the frame at the requested size."""


@dataclass(frozen=True)
class SceneParams:
    """Ranges of the scene model (lengths of pills are fractions of the photo's short side)."""

    one_fraction: tuple[float, float] = (0.15, 0.55)  # one pill: its length, log-uniform
    both_fraction: tuple[float, float] = (0.12, 0.40)  # two pills: each one's length
    margin: float = 0.03  # pills keep this fraction of the short side from the frame edge
    thickness: float = 0.35  # pill height / length, sets the shadow offset
    light_elevation: tuple[float, float] = (25.0, 80.0)  # degrees above the table
    light_gradient: tuple[float, float] = (0.0, 0.6)  # brightness change across the canvas
    shadow_strength: tuple[float, float] = (0.2, 0.75)  # fraction of light a shadow blocks
    gloss_prob: float = 0.5  # share of pills with a specular highlight
    gloss_strength: tuple[float, float] = (0.1, 0.6)
    glare_prob: float = 0.3  # share of surfaces with a broad specular glare
    glare_strength: tuple[float, float] = (0.05, 0.35)


@dataclass
class PlacedPill:
    """One pill on the canvas: which side, side-crop -> canvas affine, outline on canvas."""

    side: int
    affine: np.ndarray  # (2, 3): side-crop pixel coords -> canvas pixel coords
    outline: np.ndarray  # (K, 2) canvas coords of the side's convex outline
    fraction: float  # requested length / photo short side


@dataclass
class Light:
    azimuth: float  # radians, direction towards the light on the canvas
    elevation: float  # radians
    gradient: float
    shadow: float
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def direction(self) -> np.ndarray:
        return np.array([np.cos(self.azimuth), np.sin(self.azimuth)])


def _affine(side: Side, centre: np.ndarray, scale: float, angle: float) -> np.ndarray:
    w, h = side.image.size
    c, s = np.cos(angle), np.sin(angle)
    rot = scale * np.array([[c, -s], [s, c]])
    return np.column_stack([rot, centre - rot @ np.array([w / 2, h / 2])])


def place_pills(
    rng: np.random.Generator, sides: list[Side], camera: Camera, mode: str, params: SceneParams
) -> list[PlacedPill]:
    """Choose side(s), size, rotation and position of each pill (see module docstring)."""
    if mode == "both":
        order = [0, 1] if len(sides) >= 2 else [0, 0]
        lo, hi = params.both_fraction
    else:
        order = [int(rng.integers(len(sides)))]
        lo, hi = params.one_fraction
    w, h = camera.size
    short = min(w, h)
    margin = params.margin * short
    shrink = 1.0
    for attempt in range(60):
        if attempt and attempt % 15 == 0:
            shrink *= 0.8  # crowded frame: smaller pills
        placed: list[PlacedPill] = []
        spans: list[tuple[np.ndarray, float]] = []
        for k in order:
            side = sides[k]
            frac = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * shrink
            target = rng.uniform([margin, margin], [w - margin, h - margin])
            scale_c = float(camera.local_scale(target)[0])
            length = frac * short * scale_c  # canvas pixels
            aff = _affine(
                side,
                apply(camera.to_canvas, target)[0],
                length / max(side.image.size),
                float(rng.uniform(0, 2 * np.pi)),
            )
            outline = side.outline @ aff[:, :2].T + aff[:, 2]
            photo = apply(camera.to_photo, outline)
            if (photo.min(axis=0) < margin).any() or (
                photo.max(axis=0) > [w - margin, h - margin]
            ).any():
                break
            centre = photo.mean(axis=0)
            radius = float(np.linalg.norm(photo - centre, axis=1).max())
            if any(np.linalg.norm(centre - c) < 1.08 * (radius + r) for c, r in spans):
                break
            spans.append((centre, radius))
            placed.append(PlacedPill(k, aff, outline, frac))
        if len(placed) == len(order):
            return placed
    raise PlacementError(
        f"could not fit {len(order)} pill(s) in a {w}x{h} frame; use a smaller pill fraction range"
    )


def random_light(rng: np.random.Generator, params: SceneParams) -> Light:
    return Light(
        azimuth=float(rng.uniform(0, 2 * np.pi)),
        elevation=float(np.radians(rng.uniform(*params.light_elevation))),
        gradient=float(rng.uniform(*params.light_gradient)),
        shadow=float(rng.uniform(*params.shadow_strength)),
    )


def _window(points: np.ndarray, pad: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer canvas window (x0, y0, x1, y1) around ``points`` plus ``pad``, clipped."""
    x0, y0 = np.floor(points.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + pad).astype(int)
    return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)


def pill_layer(
    side: Side, affine: np.ndarray, window: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The side warped into a canvas window: linear RGB (h, w, 3) and coverage (h, w)."""
    x0, y0, x1, y1 = window
    full = np.vstack([affine, [0, 0, 1]])
    inv = np.linalg.inv(full) @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1.0]])
    # PIL premultiplies RGBA before resampling, so no grey fringe bleeds from the
    # transparent surround.
    warped = side.image.transform(
        (x1 - x0, y1 - y0),
        Image.Transform.AFFINE,
        tuple(inv[:2].flatten()),
        Image.Resampling.BICUBIC,
    )
    arr = np.asarray(warped, dtype=np.float32) / 255.0
    return to_linear(arr[..., :3]), arr[..., 3]


def _blob(
    shape: tuple[int, int], origin: tuple[int, int], centre: np.ndarray, sigma: float
) -> np.ndarray:
    """Isotropic Gaussian spot (peak 1) on a window; separable, so built from two vectors."""
    h, w = shape
    x = np.arange(w, dtype=np.float32) + origin[0] + 0.5 - centre[0]
    y = np.arange(h, dtype=np.float32) + origin[1] + 0.5 - centre[1]
    return np.exp(-(y * y)[:, None] / (2 * sigma**2)) * np.exp(-(x * x)[None, :] / (2 * sigma**2))


def paint(
    canvas: np.ndarray,
    sides: list[Side],
    pills: list[PlacedPill],
    light: Light,
    rng: np.random.Generator,
    params: SceneParams,
) -> np.ndarray:
    """Shadows, pills, highlights and uneven light on a linear-light surface (in place)."""
    ch, cw, _ = canvas.shape
    direction = light.direction
    for pill in pills:  # shadows first: they fall on the surface, under both pills
        length = np.linalg.norm(pill.affine[:, 0]) * max(sides[pill.side].image.size)
        offset = -direction * params.thickness * length / np.tan(light.elevation)
        soft = 1.0 + 0.25 * np.linalg.norm(offset)  # penumbra widens with the offset
        win = _window(np.vstack([pill.outline, pill.outline + offset]), 3 * soft + 2, (ch, cw))
        if win[2] <= win[0] or win[3] <= win[1]:
            continue
        moved = pill.affine.copy()
        moved[:, 2] += offset
        _, cast = pill_layer(sides[pill.side], moved, win)
        _, contact = pill_layer(sides[pill.side], pill.affine, win)
        cast = ndimage.gaussian_filter(cast, soft)
        contact = ndimage.gaussian_filter(contact, 0.6 + 0.02 * length)
        occlusion = 1 - (1 - light.shadow * cast) * (1 - 0.5 * light.shadow * contact)
        x0, y0, x1, y1 = win
        canvas[y0:y1, x0:x1] *= (1 - occlusion)[..., None]
    for pill in pills:
        side = sides[pill.side]
        win = _window(pill.outline, 3, (ch, cw))
        rgb, alpha = pill_layer(side, pill.affine, win)
        x0, y0, x1, y1 = win
        region = canvas[y0:y1, x0:x1]
        region[:] = region * (1 - alpha[..., None]) + rgb * alpha[..., None]
        if rng.random() < params.gloss_prob:
            length = np.linalg.norm(pill.affine[:, 0]) * max(side.image.size)
            centre = pill.outline.mean(axis=0) + direction * length * rng.uniform(0.1, 0.3)
            spot = _blob(alpha.shape, (x0, y0), centre, length * rng.uniform(0.06, 0.18))
            region += (rng.uniform(*params.gloss_strength) * spot * alpha)[..., None]
    # Uneven light: brighter towards the light, across the whole canvas.
    reach = 0.5 * np.hypot(cw, ch)
    ax = (np.arange(cw, dtype=np.float32) - cw / 2) * (direction[0] / reach)
    ay = (np.arange(ch, dtype=np.float32) - ch / 2) * (direction[1] / reach)
    along = ay[:, None] + ax[None, :]  # in [-1, 1]: position along the light's direction
    canvas *= (1 + 0.5 * light.gradient * along)[..., None]
    if rng.random() < params.glare_prob:
        centre = rng.uniform([0, 0], [cw, ch])
        glare = _blob((ch, cw), (0, 0), centre, max(cw, ch) * rng.uniform(0.08, 0.3))
        canvas += (rng.uniform(*params.glare_strength) * glare)[..., None]
    return canvas
