"""What the phone's optics and sensor do to the light reaching them.

In order, on the photo in linear light: illuminant colour left over after auto white
balance (per-channel gains), exposure, lens vignetting (radial fall-off), defocus (a disc
kernel, as an out-of-focus aperture images a point) combined with linear motion blur
(a line kernel, hand shake during the exposure), Poisson-Gaussian sensor noise (photon shot
noise scales with the signal, read noise does not), the sRGB tone curve, 8-bit
quantisation and JPEG compression. Blur lengths are fractions of the photo's short side,
so a 12 MP photo blurs as much (relative to its content) as a 512 px one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import signal

from .colour import to_srgb


@dataclass(frozen=True)
class SensorParams:
    """Ranges of the optics and sensor model (lengths: fractions of the short side)."""

    cast: float = 0.22  # largest red-blue gain change left by white balance
    tint: float = 0.06  # largest green-magenta gain change
    exposure: tuple[float, float] = (0.55, 1.35)  # log-uniform
    vignette: tuple[float, float] = (0.0, 0.5)  # fall-off at the corners
    defocus_prob: float = 0.5
    defocus: tuple[float, float] = (0.001, 0.007)  # disc radius
    motion_prob: float = 0.35
    motion: tuple[float, float] = (0.002, 0.012)  # streak length
    photons: tuple[float, float] = (150.0, 4000.0)  # full-well electrons, log-uniform
    read_noise: tuple[float, float] = (0.0005, 0.008)  # std. dev., linear units
    jpeg_quality: tuple[int, int] = (35, 90)


def disc_kernel(radius: float) -> np.ndarray:
    """Normalised disc (pillbox) of ``radius`` pixels, anti-aliased at its rim."""
    r = max(radius, 0.5)
    n = int(np.ceil(r)) + 1
    y, x = np.mgrid[-n : n + 1, -n : n + 1].astype(np.float32)
    k = np.clip(r + 0.5 - np.hypot(x, y), 0.0, 1.0)
    return k / k.sum()


def line_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised straight streak of ``length`` pixels at ``angle`` radians, anti-aliased."""
    length = max(length, 1.0)
    n = int(np.ceil(length / 2)) + 1
    y, x = np.mgrid[-n : n + 1, -n : n + 1].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    along, across = x * c + y * s, -x * s + y * c
    k = np.clip(1.0 - np.abs(across), 0, 1) * np.clip(length / 2 + 0.5 - np.abs(along), 0, 1)
    return k / k.sum()


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with ``kernel``; edges are mirrored, so the frame stays lit."""
    if kernel.shape == (1, 1):
        return img
    p = kernel.shape[0] // 2
    padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="reflect")
    return signal.fftconvolve(padded, kernel[..., None], mode="valid", axes=(0, 1)).astype(
        np.float32
    )


@dataclass
class Exposure:
    """The draws of one photo, kept for its metadata."""

    gains: tuple[float, float, float]
    exposure: float
    vignette: float
    defocus_px: float
    motion_px: float
    photons: float
    read_noise: float
    jpeg_quality: int


def draw(rng: np.random.Generator, short_side: int, p: SensorParams) -> Exposure:
    t, g = rng.uniform(-1, 1), rng.uniform(-1, 1)  # warm-cool and green-magenta
    gains = (1 + p.cast * t, 1 + p.tint * g, 1 - p.cast * t)
    defocus = rng.uniform(*p.defocus) * short_side if rng.random() < p.defocus_prob else 0.0
    motion = rng.uniform(*p.motion) * short_side if rng.random() < p.motion_prob else 0.0
    return Exposure(
        gains=tuple(float(v) for v in gains),
        exposure=float(np.exp(rng.uniform(*np.log(p.exposure)))),
        vignette=float(rng.uniform(*p.vignette)),
        defocus_px=float(defocus),
        motion_px=float(motion),
        photons=float(np.exp(rng.uniform(*np.log(p.photons)))),
        read_noise=float(rng.uniform(*p.read_noise)),
        jpeg_quality=int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)),
    )


def expose(linear: np.ndarray, e: Exposure, rng: np.random.Generator) -> np.ndarray:
    """Linear scene light (H, W, 3) -> 8-bit sRGB photo (before JPEG)."""
    h, w, _ = linear.shape
    img = linear * (np.array(e.gains, dtype=np.float32) * e.exposure)
    if e.vignette > 0:
        norm = (w / 2) ** 2 + (h / 2) ** 2
        x2 = ((np.arange(w, dtype=np.float32) + 0.5 - w / 2) ** 2 / norm)[None, :]
        y2 = ((np.arange(h, dtype=np.float32) + 0.5 - h / 2) ** 2 / norm)[:, None]
        img *= (1 - e.vignette * (x2 + y2))[..., None]
    kernel = np.ones((1, 1), np.float32)
    if e.defocus_px >= 0.5:
        kernel = disc_kernel(e.defocus_px)
    if e.motion_px >= 1.0:
        streak = line_kernel(e.motion_px, float(rng.uniform(0, np.pi)))
        kernel = signal.convolve2d(kernel, streak) if kernel.size > 1 else streak
    img = blur(np.clip(img, 0, None), kernel)
    # Poisson-Gaussian noise: shot noise of variance signal / photons (the Gaussian form of
    # the Poisson count, as in Foi et al. 2008; a Poisson draw per pixel costs 5x more) plus
    # read noise. Highlights clip at the full well (1.0) afterwards, as on a sensor.
    std = np.sqrt(np.clip(img, 0, 1.5) / e.photons + e.read_noise**2)
    img = img + std * rng.standard_normal(img.shape, dtype=np.float32)
    return (to_srgb(img) * 255 + 0.5).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """The photo as a JPEG file at ``quality`` (4:2:0 chroma, as phones save)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=quality, subsampling="4:2:0")
    return buf.getvalue()
