"""Things in a photo that are not pills, for the segmenter to learn to leave out.

A phone photo of a pill also shows fingers, sleeves, a laptop's edge, a cable, a pen, a
cup or the print on a shirt. Each is drawn here as a shape (mostly larger than a pill,
often cut by the frame, or long and thin, or hollow) filled with a flat colour or one of
the procedural surfaces, shaded as a rounded object and casting a soft shadow. They are
painted onto a composite before the pills and never labelled.

Example:
    >>> add_distractors(np.random.default_rng(0), canvas)   # canvas (H, W, 3) float, in place
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage

from .textures import SKIN_TONES, random_surface

Shape = Callable[[np.random.Generator, int, int], np.ndarray]


def _mask(draw_fn: Callable[[ImageDraw.ImageDraw], None], h: int, w: int) -> np.ndarray:
    mask = Image.new("L", (w, h), 0)
    draw_fn(ImageDraw.Draw(mask))
    return np.asarray(mask) > 127


def finger(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A finger or thumb reaching in from the frame's edge, with a rounded tip."""
    side = max(h, w)
    width = rng.uniform(0.12, 0.3) * side
    angle = rng.uniform(0, 2 * np.pi)
    tip = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h])
    base = tip + 2 * side * np.array([np.cos(angle), np.sin(angle)])

    def draw(d: ImageDraw.ImageDraw) -> None:
        d.line([tuple(tip), tuple(base)], fill=255, width=int(width))
        r = width / 2
        d.ellipse([tip[0] - r, tip[1] - r, tip[0] + r, tip[1] + r], fill=255)

    return _mask(draw, h, w)


def slab(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A laptop, book, box or phone: a large turned rectangle, usually cut by the frame."""
    side = max(h, w)
    a, b = rng.uniform(0.5, 1.5) * side, rng.uniform(0.3, 1.0) * side
    cx, cy = rng.uniform(-0.3, 1.3) * w, rng.uniform(-0.3, 1.3) * h
    t = rng.uniform(0, np.pi)
    corners = [(-a / 2, -b / 2), (a / 2, -b / 2), (a / 2, b / 2), (-a / 2, b / 2)]
    points = [
        (cx + x * np.cos(t) - y * np.sin(t), cy + x * np.sin(t) + y * np.cos(t)) for x, y in corners
    ]
    return _mask(lambda d: d.polygon(points, fill=255), h, w)


def round_thing(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A plate, cup, bottle cap or coin-sized disc's bigger cousins; sometimes a ring."""
    side = max(h, w)
    r = rng.uniform(0.4, 0.9) * side  # larger than most pills: a pill may fill 0.6
    cx, cy = rng.uniform(0, 1) * w, rng.uniform(0, 1) * h
    box = [cx - r, cy - r * rng.uniform(0.6, 1), cx + r, cy + r * rng.uniform(0.6, 1)]
    if rng.random() < 0.4:
        thick = int(rng.uniform(0.05, 0.2) * r) + 2
        return _mask(lambda d: d.ellipse(box, outline=255, width=thick), h, w)
    return _mask(lambda d: d.ellipse(box, fill=255), h, w)


def stick(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A pen, cable, strap or phone edge: long and thin, straight or wandering."""
    side = max(h, w)
    width = int(rng.uniform(0.01, 0.06) * side) + 1
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    heading = rng.uniform(0, 2 * np.pi)
    points = [(x, y)]
    bend = rng.uniform(0, 0.5)
    for _ in range(12):
        heading += rng.normal(0, bend)
        x, y = x + 0.15 * side * np.cos(heading), y + 0.15 * side * np.sin(heading)
        points.append((x, y))
    return _mask(lambda d: d.line(points, fill=255, width=width, joint="curve"), h, w)


def print_marks(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Letters and a logo as printed on a shirt, a box or a label."""
    side = max(h, w)
    font = ImageFont.load_default(size=max(8, int(rng.uniform(0.08, 0.3) * side)))
    text = "".join(chr(int(c)) for c in rng.integers(65, 91, int(rng.integers(2, 8))))
    x, y = rng.uniform(-0.2, 0.8) * w, rng.uniform(-0.1, 0.9) * h

    def draw(d: ImageDraw.ImageDraw) -> None:
        d.text((x, y), text, fill=255, font=font)
        if rng.random() < 0.5:
            r = rng.uniform(0.1, 0.3) * side
            d.ellipse(
                [x, y - r, x + 2 * r, y + r],
                outline=255,
                width=int(rng.uniform(0.02, 0.06) * side) + 1,
            )

    return _mask(draw, h, w)


SHAPES: dict[str, Shape] = {
    "finger": finger,
    "slab": slab,
    "round": round_thing,
    "stick": stick,
    "print": print_marks,
}
WEIGHTS = {"finger": 2.0, "slab": 1.0, "round": 0.5, "stick": 1.0, "print": 0.7}


def _fill(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """What the shape is made of: skin for fingers, else a flat colour or a surface."""
    if kind == "finger":
        tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.85, 1.1)
        return np.broadcast_to(tone, (h, w, 3)).astype(np.float32)
    if rng.random() < 0.5:
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        return np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
    return random_surface(rng, h, w, allow_hand=False, allow_clutter=False)


def add_distractors(
    rng: np.random.Generator,
    canvas: np.ndarray,
    count: int | None = None,
) -> None:
    """Paint ``count`` (default 0-4, random) non-pill objects onto ``canvas`` in place."""
    h, w, _ = canvas.shape
    if count is None:
        count = int(rng.choice(5, p=[0.3, 0.3, 0.2, 0.12, 0.08]))
    names = list(SHAPES)
    p = np.array([WEIGHTS[n] for n in names])
    for _ in range(count):
        kind = names[rng.choice(len(names), p=p / p.sum())]
        mask = SHAPES[kind](rng, h, w)
        if not mask.any():
            continue
        # Rounded objects are lit on top and dark at their rims.
        depth = ndimage.distance_transform_edt(np.pad(mask, 1, mode="edge"))[1:-1, 1:-1]
        rim = np.clip(depth / rng.uniform(2, 0.08 * max(h, w) + 3), 0, 1) ** 0.5
        shade = (0.55 + 0.45 * rim)[..., None]
        fill = _fill(rng, kind, h, w) * shade
        if kind != "print" and rng.random() < 0.8:
            shadow = Image.fromarray(mask.astype(np.uint8) * 255).filter(
                ImageFilter.GaussianBlur(rng.uniform(1, 0.05 * max(h, w) + 1))
            )
            dx, dy = (rng.normal(0, 0.02, 2) * max(h, w)).astype(int)
            shadow = np.roll(np.asarray(shadow, np.float32) / 255, (dy, dx), axis=(0, 1))
            canvas *= 1 - rng.uniform(0.2, 0.5) * shadow[..., None]
        alpha = (
            np.asarray(
                Image.fromarray(mask.astype(np.uint8) * 255).filter(
                    ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))
                ),
                np.float32,
            )[..., None]
            / 255
        )
        canvas[:] = canvas * (1 - alpha) + fill * alpha
