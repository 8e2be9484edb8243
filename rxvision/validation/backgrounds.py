"""Surfaces a pill lies on in a phone photo, for the independent validation renderer.

Each kind is either a procedural texture written here (numpy, seeded by the caller's
Generator) or a crop of a real photograph shipped by an installed package.
``BACKGROUND_SOURCES`` records where every kind comes from; docs/data.md repeats it.

Reserved, never used here: scikit-image's and scikit-learn's bundled sample photographs
(the project's outside checks use them as backgrounds, so they must stay unseen by both
training and validation) and the real OTC phone photos (they measure pill finding).

All textures are float32 sRGB in [0, 1], shape (H, W, 3).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

Texture = Callable[[np.random.Generator, int, int], np.ndarray]

# Where each kind comes from (kind -> source, licence).
BACKGROUND_SOURCES: dict[str, str] = {
    "wood": "procedural (this module): planks with drifting growth rings and fine grain",
    "granite": "procedural: mottled base with mineral flecks in 3-5 colours (countertop)",
    "marble": "procedural: light stone with turbulent dark veins",
    "laminate": "procedural: near-uniform countertop/table colour with fine speckle",
    "fabric": "procedural: woven threads (warp and weft), plain or twill",
    "tablecloth": "procedural: gingham check or stripes on woven cloth",
    "paper": "procedural: off-white paper fibres, sometimes ruled or squared",
    "tiles": "procedural: square tiles with grout lines and per-tile shade",
    "palm": "procedural: skin tones (light to dark) with blotches and palm creases",
    "photo": "crops of matplotlib's mpl-data/sample_data/grace_hopper.jpg (U.S. Navy "
    "photograph, public domain), flipped, rotated and zoomed",
}


def fractal_noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    scale: float,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """(h, w) float32 value noise, about zero-mean, unit-ish amplitude.

    ``scale`` is the size in pixels of the coarsest features; each octave halves it.
    Random grids are upsampled bicubically by PIL (fast in C, also at 12 MP).
    """
    out = np.zeros((h, w), dtype=np.float32)
    amp, total, cell = 1.0, 0.0, max(scale, 2.0)
    for _ in range(octaves):
        gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        big = Image.fromarray(grid, "F").resize(
            (int(gw * cell), int(gh * cell)), Image.Resampling.BICUBIC
        )
        oy, ox = (
            int(rng.integers(0, max(1, big.height - h))),
            int(rng.integers(0, max(1, big.width - w))),
        )
        out += amp * np.asarray(big.crop((ox, oy, ox + w, oy + h)))
        total += amp
        amp *= persistence
        cell /= 2.0
        if cell < 1.0:
            break
    return out / total


def _coords(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates about the centre, rotated by a random angle: (along, across)."""
    a = rng.uniform(0, np.pi)
    x = (np.arange(w, dtype=np.float32) - w / 2)[None, :]
    y = (np.arange(h, dtype=np.float32) - h / 2)[:, None]
    return x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)


def _mix(base: np.ndarray, other: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)[..., None]
    return base * (1 - t) + other * t


def _colour(
    rng: np.random.Generator, palette: list[tuple[int, int, int]], jitter: float = 0.06
) -> np.ndarray:
    c = np.array(palette[int(rng.integers(len(palette)))], dtype=np.float32) / 255
    return np.clip(c * (1 + rng.uniform(-jitter, jitter, 3)), 0, 1).astype(np.float32)


def _streaks(
    rng: np.random.Generator, h: int, w: int, length: float, width: float, octaves: int = 3
) -> np.ndarray:
    """Noise stretched along x (features ``length`` long, ``width`` wide), about unit std.

    Surfaces need no rotation of their own: the camera's roll turns them.
    """
    out = np.zeros((h, w), dtype=np.float32)
    amp = 1.0
    for _ in range(octaves):
        gw, gh = max(2, int(w / length) + 2), max(2, int(h / width) + 2)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.Resampling.BICUBIC))
        amp, length, width = amp * 0.5, length / 2, max(width / 2, 1.0)
    return out


def wood(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    y = np.arange(h, dtype=np.float32)[:, None]
    plank = s * rng.uniform(0.12, 0.35)
    # Growth rings cut lengthwise: stripes along the plank whose spacing drifts.
    warp = _streaks(rng, h, w, s * 0.8, s * 0.05, 2) * s * 0.015
    rings = np.sin((y + warp) / (s * rng.uniform(0.006, 0.02)) * 2 * np.pi)
    grain = 0.5 + 0.35 * rings + 0.25 * _streaks(rng, h, w, s * 0.3, 1.5, 3)
    light = _colour(
        rng,
        [
            (196, 152, 104),
            (170, 120, 74),
            (222, 190, 140),
            (120, 80, 50),
            (90, 58, 38),
            (204, 170, 128),
        ],
    )
    dark = light * rng.uniform(0.6, 0.85)
    img = _mix(light[None, None], dark[None, None], grain)
    idx = np.floor(y / plank)
    tone = (np.sin(idx * 12.9898) * 43758.5453) % 1.0  # per-plank shade
    img = img * (0.94 + 0.12 * tone)[..., None]
    seam = np.abs(y / plank - np.round(y / plank)) * plank < max(1.0, s * 0.0015)
    img[np.broadcast_to(seam, (h, w))] *= 0.55
    return img


def granite(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    base = _colour(
        rng,
        [
            (120, 110, 100),
            (60, 60, 64),
            (180, 170, 160),
            (150, 120, 100),
            (40, 40, 42),
            (210, 205, 198),
        ],
    )
    img = base[None, None] * (1 + 0.12 * fractal_noise(rng, h, w, s * 0.08, 4)[..., None])
    for _ in range(int(rng.integers(3, 6))):
        fleck = _colour(
            rng,
            [
                (20, 20, 20),
                (240, 236, 230),
                (150, 90, 70),
                (90, 90, 96),
                (200, 180, 150),
                (110, 100, 80),
            ],
            0.1,
        )
        n = fractal_noise(rng, h, w, s * rng.uniform(0.002, 0.008), 2)
        img = _mix(img, fleck[None, None], (n - rng.uniform(0.9, 1.5)) * 4)
    return img


def marble(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    along, _ = _coords(rng, h, w)
    turb = fractal_noise(rng, h, w, s * 0.35, 5) * rng.uniform(1.5, 3.0)
    # Veins: thin lines where the turbulent phase crosses zero.
    phase = np.sin(along / (s * rng.uniform(0.08, 0.2)) * np.pi + turb)
    veins = np.exp(-((phase / rng.uniform(0.04, 0.12)) ** 2))
    base = _colour(rng, [(236, 234, 230), (226, 220, 210), (245, 243, 240), (60, 60, 62)])
    vein = base * rng.uniform(0.45, 0.75)
    img = base[None, None] * (1 + 0.04 * fractal_noise(rng, h, w, s * 0.1, 3)[..., None])
    return _mix(img, vein[None, None], veins * rng.uniform(0.5, 1.0))


def laminate(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    base = _colour(
        rng,
        [
            (245, 245, 242),
            (30, 30, 32),
            (200, 190, 170),
            (160, 165, 170),
            (110, 80, 60),
            (230, 225, 215),
            (80, 110, 120),
            (140, 30, 30),
        ],
    )
    n = 0.03 * fractal_noise(rng, h, w, s * 0.2, 3) + 0.02 * fractal_noise(rng, h, w, 2.0, 1)
    return base[None, None] * (1 + n[..., None])


def _weave(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """Thread shading of a plain or twill weave, in [0, 1]."""
    along, across = _coords(rng, h, w)
    u, v = along / period, across / period
    warp_up = (np.floor(u) + np.floor(v) * (1 if rng.random() < 0.5 else 2)) % 2 == 0
    thread_u = np.abs(np.sin(np.pi * v))  # bright across the middle of each thread
    thread_v = np.abs(np.sin(np.pi * u))
    return np.where(warp_up, thread_u, thread_v) ** 0.6


def fabric(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    colour = _colour(
        rng,
        [
            (40, 60, 110),
            (150, 40, 50),
            (90, 90, 90),
            (200, 190, 170),
            (60, 100, 70),
            (30, 30, 35),
            (180, 150, 200),
            (230, 230, 225),
        ],
    )
    shade = _weave(rng, h, w, max(2.0, s * rng.uniform(0.003, 0.012)))
    fold = 0.1 * fractal_noise(rng, h, w, s * 0.4, 2)
    return colour[None, None] * (0.7 + 0.35 * shade + fold)[..., None]


def tablecloth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    along, across = _coords(rng, h, w)
    period = s * rng.uniform(0.04, 0.15)
    ink = _colour(rng, [(180, 30, 40), (40, 70, 150), (30, 110, 60), (230, 150, 40), (60, 60, 60)])
    paper = _colour(rng, [(245, 244, 238), (235, 228, 210)])
    a = ((along / period) % 1.0) < 0.5
    b = ((across / period) % 1.0) < 0.5
    density = (a.astype(np.float32) + b) / 2 if rng.random() < 0.7 else a.astype(np.float32)
    img = _mix(paper[None, None], ink[None, None], density * rng.uniform(0.6, 1.0))
    shade = _weave(rng, h, w, max(2.0, s * 0.004))
    return img * (0.85 + 0.2 * shade)[..., None]


def paper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    base = _colour(rng, [(246, 244, 236), (240, 236, 220), (250, 250, 250), (232, 226, 206)], 0.02)
    fibres = 0.02 * fractal_noise(rng, h, w, 4.0, 2) + 0.02 * fractal_noise(rng, h, w, s * 0.1)
    img = base[None, None] * (1 + fibres[..., None])
    kind = rng.random()
    if kind < 0.4:  # ruled or squared notebook paper
        _, across = _coords(rng, h, w)
        pitch = s * rng.uniform(0.03, 0.07)
        line = np.abs((across / pitch) - np.round(across / pitch)) * pitch < max(0.8, s * 0.0012)
        ink = np.array([0.55, 0.7, 0.9], dtype=np.float32)
        img[line] = img[line] * 0.4 + ink * 0.6
    return img


def tiles(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    along, across = _coords(rng, h, w)
    size = s * rng.uniform(0.12, 0.4)
    iu, iv = np.floor(along / size), np.floor(across / size)
    per_tile = (np.sin(iu * 12.9898 + iv * 78.233) * 43758.5453) % 1.0
    base = _colour(
        rng,
        [
            (235, 235, 232),
            (200, 210, 215),
            (180, 140, 110),
            (90, 110, 130),
            (60, 60, 60),
            (220, 200, 170),
        ],
    )
    img = base[None, None] * (0.93 + 0.1 * per_tile[..., None])
    grout_w = max(1.5, s * rng.uniform(0.003, 0.008))
    gu = np.abs(along / size - np.round(along / size)) * size < grout_w
    gv = np.abs(across / size - np.round(across / size)) * size < grout_w
    grout = _colour(rng, [(150, 150, 145), (90, 85, 80), (210, 205, 200)])
    img[gu | gv] = grout
    return img * (1 + 0.02 * fractal_noise(rng, h, w, s * 0.02, 2)[..., None])


def palm(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = max(h, w)
    skin = _colour(
        rng,
        [
            (241, 194, 167),
            (224, 172, 138),
            (198, 134, 96),
            (161, 102, 70),
            (120, 74, 50),
            (88, 56, 40),
            (232, 190, 160),
        ],
        0.04,
    )
    blotch = fractal_noise(rng, h, w, s * 0.15, 4)
    img = skin[None, None] * (1 + 0.08 * blotch[..., None])
    red = np.array([1.05, 0.92, 0.9], dtype=np.float32)  # flushed, redder patches
    img = _mix(img, img * red, fractal_noise(rng, h, w, s * 0.1, 2) * 0.8)
    for _ in range(int(rng.integers(2, 5))):  # palm creases: thin dark curved lines
        _, across = _coords(rng, h, w)
        bend = fractal_noise(rng, h, w, s * 0.5, 2) * s * 0.06
        dist = np.abs(across - rng.uniform(-0.3, 0.3) * s + bend)
        crease = np.exp(-((dist / max(1.5, s * rng.uniform(0.004, 0.01))) ** 2))
        img *= (1 - 0.18 * crease)[..., None]
    fine = 0.015 * fractal_noise(rng, h, w, 2.0, 1)
    return img * (1 + fine[..., None])


def _sample_photo() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a real photograph (see BACKGROUND_SOURCES), zoomed to (h, w)."""
    path = _sample_photo()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: matplotlib's sample photo is missing; reinstall "
            "matplotlib or leave 'photo' out of the background kinds"
        )
    with Image.open(path) as im:
        img = im.convert("RGB")
    img = img.rotate(90 * int(rng.integers(4)), expand=True)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # A crop of 35-90% of the photo's short side, with the output's aspect ratio.
    side = min(img.size) * rng.uniform(0.35, 0.9)
    cw, ch = (side, side * h / w) if w >= h else (side * w / h, side)
    x0 = rng.uniform(0, img.width - cw)
    y0 = rng.uniform(0, img.height - ch)
    crop = img.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
    return np.asarray(crop, dtype=np.float32) / 255


TEXTURES: dict[str, Texture] = {
    "wood": wood,
    "granite": granite,
    "marble": marble,
    "laminate": laminate,
    "fabric": fabric,
    "tablecloth": tablecloth,
    "paper": paper,
    "tiles": tiles,
    "palm": palm,
    "photo": photo,
}
assert set(TEXTURES) == set(BACKGROUND_SOURCES)

# Textures are drawn at most this many pixels on the long side, then resized: surfaces
# have little detail a phone resolves beyond it, and a 12 MP texture would cost seconds.
MAX_TEXTURE_SIDE = 1600


def background(
    rng: np.random.Generator, h: int, w: int, kind: str | None = None
) -> tuple[np.ndarray, str]:
    """A (h, w, 3) float32 sRGB surface of ``kind`` (default: a random kind) and its kind."""
    if kind is None:
        kind = list(TEXTURES)[int(rng.integers(len(TEXTURES)))]
    if kind not in TEXTURES:
        raise ValueError(f"unknown background kind {kind!r}; choose from {sorted(TEXTURES)}")
    scale = min(1.0, MAX_TEXTURE_SIDE / max(h, w))
    th, tw = max(8, round(h * scale)), max(8, round(w * scale))
    tex = np.clip(TEXTURES[kind](rng, th, tw), 0, 1).astype(np.float32)
    if (th, tw) != (h, w):
        tex = np.stack(
            [
                np.asarray(
                    Image.fromarray(tex[..., c], "F").resize((w, h), Image.Resampling.BICUBIC)
                )
                for c in range(3)
            ],
            axis=2,
        )
    return np.clip(tex, 0, 1), kind
