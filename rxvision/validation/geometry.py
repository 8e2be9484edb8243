"""A pinhole phone camera looking at a tilted table plane, and warps through its homography.

The table is a plane with its own pixel grid (the "canvas" on which the scene is painted).
A camera with a phone-like field of view looks at it from a random tilt and roll; the
mapping between canvas and photo is then a homography (a projective transform), so
parallel lines of a tiled or striped surface converge, and a pill far from the camera is
smaller than one near it. Canvas units are chosen so that one canvas pixel covers one photo
pixel (in area) at the photo's centre, unless the canvas would be too large (12 MP photos).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CameraParams:
    """Ranges of the camera pose; angles in degrees."""

    fov: tuple[float, float] = (60.0, 78.0)  # horizontal field of view (phone main cameras)
    tilt: tuple[float, float] = (0.0, 35.0)  # angle between the optical axis and the normal
    roll: tuple[float, float] = (0.0, 360.0)  # rotation of the phone about its axis


@dataclass
class Camera:
    """Homographies between the photo (``size`` = W, H) and the scene canvas."""

    size: tuple[int, int]
    canvas_size: tuple[int, int]
    to_canvas: np.ndarray  # (3, 3): photo pixel coords -> canvas pixel coords
    tilt: float
    fov: float
    density: float = 1.0  # canvas pixels per photo pixel (linear) at the photo centre

    @property
    def to_photo(self) -> np.ndarray:
        return np.linalg.inv(self.to_canvas)

    def local_scale(self, xy: np.ndarray) -> np.ndarray:
        """Canvas pixels per photo pixel (square root of the Jacobian's area) at photo ``xy``."""
        xy = np.atleast_2d(xy).astype(np.float64)
        eps = 0.5
        base = apply(self.to_canvas, xy)
        dx = apply(self.to_canvas, xy + np.array([eps, 0.0])) - base
        dy = apply(self.to_canvas, xy + np.array([0.0, eps])) - base
        det = dx[:, 0] * dy[:, 1] - dx[:, 1] * dy[:, 0]
        return np.sqrt(np.abs(det)) / eps


def apply(h: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through the homography ``h``."""
    xy = np.atleast_2d(xy).astype(np.float64)
    p = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ h.T
    return p[:, :2] / p[:, 2:3]


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation matrix about unit ``axis`` by ``angle`` radians."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def random_camera(
    rng: np.random.Generator,
    size: tuple[int, int],
    params: CameraParams | None = None,
    max_canvas_pixels: float = 16e6,
) -> Camera:
    """A camera of random field of view, tilt and roll for a photo of ``size`` (W, H).

    A canvas that would exceed ``max_canvas_pixels`` (large photos seen at a steep tilt) is
    painted at a lower density: fewer than one canvas pixel per photo pixel at the centre.
    """
    p = params or CameraParams()
    w, h = size
    fov = float(rng.uniform(*p.fov))
    tilt = float(rng.uniform(*p.tilt))
    f = (w / 2) / np.tan(np.radians(fov) / 2)
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    # Plane basis in camera coordinates: tilt about a random axis across the optical axis,
    # then roll about the optical axis. The optical axis meets the plane at distance f.
    az = rng.uniform(0, 2 * np.pi)
    r = _rotation(np.array([0, 0, 1.0]), np.radians(rng.uniform(*p.roll))) @ _rotation(
        np.array([np.cos(az), np.sin(az), 0.0]), np.radians(tilt)
    )
    plane_to_photo = k @ np.column_stack([r[:, 0], r[:, 1], [0, 0, f]])
    photo_to_plane = np.linalg.inv(plane_to_photo)
    # Plane units -> canvas pixels: unit area at the photo centre, origin at the footprint's
    # top-left corner (with a 2-pixel margin for interpolation).
    centre = np.array([[w / 2, h / 2]])
    eps = 1.0
    base = apply(photo_to_plane, centre)
    dx = apply(photo_to_plane, centre + np.array([eps, 0.0])) - base
    dy = apply(photo_to_plane, centre + np.array([0.0, eps])) - base
    s = 1.0 / np.sqrt(abs(dx[0, 0] * dy[0, 1] - dx[0, 1] * dy[0, 0]))
    corners = apply(photo_to_plane, np.array([[0, 0], [w, 0], [w, h], [0, h]], float)) * s
    extent = corners.max(axis=0) - corners.min(axis=0)
    density = min(1.0, float(np.sqrt(max_canvas_pixels / (extent[0] * extent[1]))))
    s, corners = s * density, corners * density
    lo, hi = corners.min(axis=0) - 2, corners.max(axis=0) + 2
    shift = np.array([[s, 0, -lo[0]], [0, s, -lo[1]], [0, 0, 1.0]])
    to_canvas = shift @ photo_to_plane
    canvas = (int(np.ceil(hi[0] - lo[0])), int(np.ceil(hi[1] - lo[1])))
    return Camera((w, h), canvas, to_canvas / to_canvas[2, 2], tilt, fov, density)


def warp(
    layer: np.ndarray,
    to_source: np.ndarray,
    size: tuple[int, int],
    offset: tuple[int, int] = (0, 0),
    resample: int = Image.Resampling.BILINEAR,
) -> np.ndarray:
    """Sample a float layer (H, W) or (H, W, C) at ``to_source`` of each output pixel.

    ``size`` (W, H) is the output window, whose top-left pixel sits at ``offset`` of the full
    photo. PIL samples output pixel centres and treats input pixel (i, j) as the square
    [i, i+1) x [j, j+1), the convention used for boxes and polygons here.
    """
    ox, oy = offset
    h = to_source @ np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1.0]])
    h = h / h[2, 2]
    coeffs = tuple(h.flatten()[:8])
    channels = [layer] if layer.ndim == 2 else [layer[..., c] for c in range(layer.shape[2])]
    out = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), "F").transform(
                size, Image.Transform.PERSPECTIVE, coeffs, resample
            )
        )
        for c in channels
    ]
    return out[0] if layer.ndim == 2 else np.stack(out, axis=2)
