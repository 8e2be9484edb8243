"""Procedural surfaces a pill may lie on, for training the pill segmenter.

Every surface is drawn here from numpy noise and simple geometry, seeded by the caller's
``numpy.random.Generator``: smooth and uneven plain surfaces, stone and concrete, wood,
woven fabric, printed cloth (checks, plaids, dots), lined and written-on paper, skin with a
hand's palm and fingers, keyboards, and clutter of large objects cut by the frame. Nothing
is read from disk.

Reserved sources are deliberately not used: the independent validation renderer's
backgrounds (``rxvision.validation``), scikit-image's and scikit-learn's sample photographs
(the project's outside checks use them) and the real OTC phone photos (they measure).

All surfaces are float32 sRGB in [0, 1], shape (H, W, 3).

Example:
    >>> rng = np.random.default_rng(0)
    >>> surface = random_surface(rng, 160, 160)   # (160, 160, 3) float32
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

Surface = Callable[[np.random.Generator, int, int], np.ndarray]


def fractal_noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    octaves: int = 4,
    base: int = 4,
    persistence: float = 0.55,
) -> np.ndarray:
    """Smooth multi-scale noise (h, w) in about [-1, 1]: random grids upsampled and summed."""
    out = np.zeros((h, w), dtype=np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        cells = base * 2**octave
        grid = rng.standard_normal(
            (max(2, cells * h // max(h, w)) + 1, max(2, cells * w // max(h, w)) + 1)
        ).astype(np.float32)
        layer = np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.Resampling.BICUBIC))
        out += amplitude * layer
        total += amplitude
        amplitude *= persistence
    return out / total


def _colour(rng: np.random.Generator, lo: float = 0.05, hi: float = 0.95) -> np.ndarray:
    """A random RGB colour (3,), mostly muted as household surfaces are."""
    grey = rng.uniform(lo, hi)
    tint = rng.normal(0, 0.08 if rng.random() < 0.8 else 0.25, 3)
    return np.clip(grey + tint, 0, 1).astype(np.float32)


def _grid(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by ``angle`` (radians): (u, v), each (h, w)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return xx * c + yy * s, -xx * s + yy * c


def plain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A flat surface with a light gradient and faint mottling (table, tray, laptop lid)."""
    u, _ = _grid(h, w, rng.uniform(0, 2 * np.pi))
    ramp = (u - u.min()) / max(float(np.ptp(u)), 1.0) - 0.5
    shade = 1 + rng.uniform(0, 0.35) * ramp + 0.04 * fractal_noise(rng, h, w, 3, 2)
    return np.clip(_colour(rng) * shade[..., None], 0, 1)


def stone(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Granite, terrazzo or concrete: mottled base with flecks in a few colours."""
    base = _colour(rng, 0.15, 0.85)
    mottle = fractal_noise(rng, h, w, 5, rng.integers(3, 12))
    img = base + rng.uniform(0.03, 0.15) * mottle[..., None]
    for _ in range(rng.integers(1, 4)):
        density = rng.uniform(0.01, 0.15)
        flecks = rng.random((h, w)) < density
        if rng.random() < 0.5:  # larger grains
            flecks = (
                np.asarray(
                    Image.fromarray(flecks.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))
                )
                > 0
            )
        img[flecks] = _colour(rng)
    img = np.asarray(
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))
        )
    )
    return img.astype(np.float32) / 255


def wood(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Wood grain: warped rings along a random direction, between two browns."""
    _, v = _grid(h, w, rng.uniform(0, np.pi))
    period = rng.uniform(4, 30)
    warp = fractal_noise(rng, h, w, 3, 3) * rng.uniform(5, 40)
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (v + warp) / period)
    rings = rings ** rng.uniform(0.5, 3)
    light = np.array([rng.uniform(0.45, 0.85), rng.uniform(0.3, 0.6), rng.uniform(0.15, 0.4)])
    dark = light * rng.uniform(0.4, 0.8)
    if rng.random() < 0.3:  # painted or grey-washed wood
        light, dark = _colour(rng), _colour(rng)
    pores = 0.05 * fractal_noise(rng, h, w, 2, 40)
    img = dark + (light - dark) * rings[..., None] + pores[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def fabric(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Woven cloth or a towel: crossing threads with a little unevenness."""
    u, v = _grid(h, w, rng.uniform(0, np.pi))
    period = rng.uniform(2.0, 7.0)
    warp = np.sin(2 * np.pi * u / period)
    weft = np.sin(2 * np.pi * v / period)
    weave = 0.5 + 0.25 * (warp + weft) * rng.uniform(0.3, 1.0)
    uneven = 0.08 * fractal_noise(rng, h, w, 4, 6)
    colour = _colour(rng)
    img = colour * (0.75 + 0.35 * weave + uneven)[..., None]
    if rng.random() < 0.3:  # stripes or checks
        stripe = (np.sin(2 * np.pi * u / rng.uniform(15, 60)) > 0.3)[..., None]
        img = np.where(stripe, img * _colour(rng, 0.5, 1.0), img)
    return np.clip(img, 0, 1).astype(np.float32)


def _strokes(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    h: int,
    w: int,
    count: int,
    colour: int | tuple[int, ...],
    width: tuple[int, int],
) -> None:
    """Wandering pen strokes (handwriting, creases, cables)."""
    for _ in range(count):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        heading = rng.uniform(0, 2 * np.pi)
        points = [(x, y)]
        for _ in range(rng.integers(4, 20)):
            heading += rng.normal(0, 0.8)
            step = rng.uniform(2, 0.06 * max(h, w))
            x, y = x + step * np.cos(heading), y + step * np.sin(heading)
            points.append((x, y))
        draw.line(points, fill=colour, width=int(rng.integers(*width)), joint="curve")


def paper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """White or lined paper, a notebook, a printout, sometimes written on."""
    tone = rng.uniform(0.8, 1.0)
    img = Image.new("RGB", (w, h), tuple(int(255 * tone * c) for c in (1, 1, rng.uniform(0.9, 1))))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.6:
        spacing = rng.uniform(6, 25)
        ink = (int(rng.uniform(90, 200)), int(rng.uniform(130, 210)), int(rng.uniform(190, 250)))
        y = rng.uniform(0, spacing)
        while y < h:
            draw.line([(0, y), (w, y)], fill=ink, width=1)
            y += spacing
    if rng.random() < 0.7:
        ink = tuple(int(v) for v in rng.integers(0, 90, 3))
        _strokes(draw, rng, h, w, int(rng.integers(2, 25)), ink, (1, 3))
    return np.asarray(img).astype(np.float32) / 255


SKIN_TONES = np.array(
    [  # sRGB, from pale to deep skin
        [0.96, 0.80, 0.69],
        [0.90, 0.72, 0.60],
        [0.83, 0.62, 0.50],
        [0.72, 0.52, 0.40],
        [0.60, 0.42, 0.30],
        [0.45, 0.30, 0.22],
        [0.32, 0.21, 0.16],
    ],
    dtype=np.float32,
)


def _skin_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Skin: a tone with blotches, pores and darker creases."""
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.85, 1.1)
    blotch = 0.06 * fractal_noise(rng, h, w, 4, 3)
    img = tone * (1 + blotch)[..., None]
    creases = Image.new("L", (w, h), 0)
    _strokes(ImageDraw.Draw(creases), rng, h, w, int(rng.integers(2, 10)), 255, (1, 3))
    crease = np.asarray(creases.filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float32) / 255
    img = img * (1 - rng.uniform(0.1, 0.35) * crease)[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def hand_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A palm with fingers, entering the frame from one side: float mask (h, w) in [0, 1]."""
    scale = max(h, w) * rng.uniform(0.7, 1.6)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.3, 1.0) * h
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    r = 0.35 * scale
    draw.ellipse([cx - r, cy - 0.9 * r, cx + r, cy + 1.3 * r], fill=255)
    arm = cy + 2 * r
    draw.polygon(
        [(cx - 0.8 * r, cy), (cx + 0.8 * r, cy), (cx + 0.9 * r, arm), (cx - 0.9 * r, arm)], fill=255
    )
    up = rng.uniform(-0.5, 0.5) - np.pi / 2
    for k in range(5):
        angle = up + (k - 2) * rng.uniform(0.2, 0.35) + (0.9 if k == 0 else 0)
        length = r * rng.uniform(1.0, 1.6) * (0.7 if k in (0, 4) else 1)
        width = r * rng.uniform(0.28, 0.38)
        x0 = cx + 0.75 * r * np.cos(angle)
        y0 = cy + 0.75 * r * np.sin(angle)
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        draw.line([(x0, y0), (x1, y1)], fill=255, width=int(width))
        draw.ellipse([x1 - width / 2, y1 - width / 2, x1 + width / 2, y1 + width / 2], fill=255)
    theta = rng.uniform(-40, 40)
    mask = mask.rotate(theta, resample=Image.Resampling.BILINEAR, center=(cx, cy))
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2)))
    return np.asarray(mask, dtype=np.float32) / 255


def hand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A hand held over another surface, or skin filling the frame (a close-up palm)."""
    skin = _skin_texture(rng, h, w)
    if rng.random() < 0.3:
        return skin
    under = random_surface(rng, h, w, allow_hand=False, allow_clutter=False)
    mask = hand_mask(rng, h, w)
    # Palm and fingers are rounded: lit in the middle, darker towards their rims.
    depth = ndimage.distance_transform_edt(np.pad(mask > 0.5, 1, mode="edge"))[1:-1, 1:-1]
    rim = np.clip(depth / rng.uniform(3, 0.1 * max(h, w) + 4), 0, 1) ** 0.5
    skin = skin * (0.55 + 0.45 * rim)[..., None]
    mask = mask[..., None]
    return np.clip(under * (1 - mask) + skin * mask, 0, 1).astype(np.float32)


def keyboard(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A laptop keyboard or remote: a plate with a regular grid of keys."""
    plate = _colour(rng, 0.05, 0.8)
    key = np.clip(plate + rng.normal(0, 0.08), 0, 1)
    img = Image.new("RGB", (w, h), tuple(int(255 * c) for c in plate))
    draw = ImageDraw.Draw(img)
    pitch = rng.uniform(10, 40)
    gap = pitch * rng.uniform(0.1, 0.25)
    y, row = -rng.uniform(0, pitch), 0
    while y < h:
        x = -rng.uniform(0, pitch) - (row % 2) * pitch / 3
        while x < w:
            draw.rounded_rectangle(
                [x, y, x + pitch - gap, y + pitch - gap],
                radius=gap,
                fill=tuple(int(255 * c) for c in key),
            )
            if rng.random() < 0.5:
                mark = tuple(int(255 * c) for c in np.clip(key + 0.4 * (0.5 - key), 0, 1))
                draw.text((x + gap, y + gap), chr(int(rng.integers(65, 91))), fill=mark)
            x += pitch
        y += pitch
        row += 1
    img = img.rotate(
        rng.uniform(-30, 30),
        resample=Image.Resampling.BILINEAR,
        fillcolor=tuple(int(255 * c) for c in plate),
    )
    return np.asarray(img).astype(np.float32) / 255


def clutter(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Large objects cut by the frame (a box, a bottle, a plate, food) over a surface."""
    under = random_surface(rng, h, w, allow_hand=False, allow_clutter=False)
    img = Image.fromarray((under * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    side = max(h, w)
    for _ in range(rng.integers(1, 4)):
        colour = tuple(int(255 * c) for c in _colour(rng))
        x, y = rng.uniform(-0.3, 1.0) * w, rng.uniform(-0.3, 1.0) * h
        a, b = rng.uniform(0.4, 1.2) * side, rng.uniform(0.3, 1.0) * side
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle([x, y, x + a, y + b], fill=colour)
        elif kind == 1:
            draw.ellipse(
                [x, y, x + a, y + b],
                fill=colour,
                outline=(240, 240, 240),
                width=int(rng.integers(0, 6)),
            )
        else:
            points = [(x + rng.uniform(0, a), y + rng.uniform(0, b)) for _ in range(6)]
            draw.polygon(points, fill=colour)
    if rng.random() < 0.5:  # food crumbs, print and edges: small high-contrast detail
        _strokes(
            draw,
            rng,
            h,
            w,
            int(rng.integers(3, 15)),
            tuple(int(v) for v in rng.integers(0, 255, 3)),
            (1, 4),
        )
    return np.asarray(img).astype(np.float32) / 255


def printed_cloth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Printed or woven patterns that repeat: checks and plaids of two crossing stripe sets,
    or motifs (dots, rings, small blobs) on a lattice. Their motifs are often the size and
    shape of a pill, so the finder must learn that a flat repeating print is not one."""
    u, v = _grid(h, w, rng.uniform(0, np.pi))
    period = rng.uniform(8.0, 50.0)
    ground, ink = _colour(rng, 0.55, 0.98), _colour(rng)
    if rng.random() < 0.55:  # checks/plaid: a second set of stripes across the first
        duty = rng.uniform(0.3, 0.6)
        a = ((u / period) % 1.0) < duty
        b = ((v / (period * rng.uniform(0.7, 1.4))) % 1.0) < duty
        density = (a.astype(np.float32) + b) / 2
        if rng.random() < 0.3:  # a thin accent line in a third colour
            accent = np.abs((u / period) % 1.0 - 0.8) < rng.uniform(0.02, 0.06)
            density = np.where(accent, 1.0, density)
            ink = (ink + _colour(rng)) / 2
    else:  # motifs on a (sometimes staggered) lattice
        row = np.floor(v / period)
        shift = 0.5 * (row % 2) if rng.random() < 0.5 else 0.0
        du = ((u / period + shift) % 1.0) - 0.5
        dv = ((v / period) % 1.0) - 0.5
        aspect = rng.uniform(1.0, 2.2)
        r = np.hypot(du * aspect, dv)
        radius = rng.uniform(0.12, 0.38)
        density = (r < radius).astype(np.float32)
        if rng.random() < 0.3:  # rings
            density *= r > radius * rng.uniform(0.5, 0.8)
    sharp = Image.fromarray((density * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5))
    )
    density = np.asarray(sharp).astype(np.float32) / 255
    weave = (
        0.04
        * np.sin(2 * np.pi * u / rng.uniform(2.0, 5.0))
        * np.sin(2 * np.pi * v / rng.uniform(2.0, 5.0))
    )
    shade = 1 + weave + 0.06 * fractal_noise(rng, h, w, 3, 4)
    img = ground + (ink - ground) * (density * rng.uniform(0.6, 1.0))[..., None]
    return np.clip(img * shade[..., None], 0, 1).astype(np.float32)


SURFACES: dict[str, Surface] = {
    "plain": plain,
    "stone": stone,
    "wood": wood,
    "fabric": fabric,
    "printed_cloth": printed_cloth,
    "paper": paper,
    "hand": hand,
    "keyboard": keyboard,
    "clutter": clutter,
}
# How often each surface is drawn: hands and plain tables are how people photograph pills.
WEIGHTS = {
    "plain": 2.0,
    "stone": 1.5,
    "wood": 1.2,
    "fabric": 1.0,
    # Not drawn for the bundled segmenter: 24 minutes of training with it (weight 1.0)
    # found checks and plaids better but lost pills on real phone photos (docs/locate.md).
    "printed_cloth": 0.0,
    "paper": 0.8,
    "hand": 2.5,
    "keyboard": 0.4,
    "clutter": 1.2,
}


def random_surface(
    rng: np.random.Generator, h: int, w: int, allow_hand: bool = True, allow_clutter: bool = True
) -> np.ndarray:
    """One surface of a randomly chosen kind (see :data:`WEIGHTS`), float32 (h, w, 3)."""
    names = [
        n for n in SURFACES if (allow_hand or n != "hand") and (allow_clutter or n != "clutter")
    ]
    p = np.array([WEIGHTS[n] for n in names])
    name = names[rng.choice(len(names), p=p / p.sum())]
    return SURFACES[name](rng, h, w).astype(np.float32, copy=False)
