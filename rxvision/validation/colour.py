"""Colour conversions of the validation renderer: sRGB <-> linear light, sRGB -> CIE Lab."""

from __future__ import annotations

import numpy as np

# D65 sRGB -> XYZ (IEC 61966-2-1) and the D65 white point.
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=np.float32,
)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] -> linear light (float32)."""
    c = np.clip(srgb, 0.0, 1.0).astype(np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB values in [0, 1] (float32, clipped)."""
    c = np.clip(linear, 0.0, 1.0).astype(np.float32)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055).astype(np.float32)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> (H, W, 3) float32 CIE Lab (D65)."""
    xyz = to_linear(rgb.astype(np.float32) / 255.0) @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab
