"""Phone-style views synthesised from one studio reference photo per pill.

Training and validation in the low-shot setting (one C3PI studio photo per pill) need
views that look like phone photos. :class:`PhoneViewSynthesizer` cuts each pill side out
of its reference (:mod:`rxvision.data.cutout`) once, then composes whole batches in torch:

- one side or both sides of the pill, each rotated through 360 degrees, scaled, sheared
  (mild perspective) and placed on a procedural background (flat, gradient, mottled,
  grain) with a soft drop shadow;
- uneven lighting, brightness, contrast, gamma, colour cast and saturation;
- Gaussian blur, motion blur (hand shake), low resolution, sensor noise, JPEG compression,
  letterbox bands.

Batches are built with ``grid_sample`` and convolutions, so synthesis costs a few percent
of a training step and needs no DataLoader workers on a 2-core CPU. Every random draw
comes from an explicit ``torch.Generator``: validation views use their own fixed seed and
never share a stream with training draws.

Example:
    >>> synth = PhoneViewSynthesizer.from_images([img_a, img_b], size=(224, 224))
    >>> views, modes = synth.render(torch.tensor([0, 1, 1]), torch.Generator().manual_seed(0))
    >>> views.shape, views.dtype, modes
    (torch.Size([3, 3, 224, 224]), torch.uint8, ['both', 'one', 'both'])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import decode_jpeg, encode_jpeg

from .cutout import cut_out_sides

SIDE_CANVAS = 160  # stored pixels along a side's longest dimension (augment.side_pixels)
# "crop" framing (rxvision.locate.normalised_crop): the pill's longer side over the frame's,
# around the crop's 0.8 (the pill finder's boxes vary), and the studio grey it sits on.
CROP_FILL = (0.72, 0.88)
C3PI_GREY = 117 / 255
# The pill finder's mask edge is off by this many pixels (negative: eroded). Its masks on
# patterned surfaces keep a rim of the surface more often than they cut into the pill.
MASK_ERROR_PX = (-2, 5)
# A finder predicts its mask at a working resolution well below a pill crop's (320 px for
# the whole photo) and its edge wanders: bites out of the pill, bulges of the surface. On
# this share of crop views the mask is coarsened by a factor drawn from CROP_MASK_COARSE
# (crop pixels per working pixel) and its edge moved by low-frequency noise of amplitude
# CROP_MASK_WOBBLE (a share of the coarse edge ramp); see _finder_mask.
CROP_MASK_NOISE_PROB = 0.6
CROP_MASK_COARSE = (3, 12)
CROP_MASK_WOBBLE = (0.1, 0.45)
# A pill 40-120 px long in a photo, enlarged to ~180 px of a 224 px crop: 0.2-0.7 of the detail.
CROP_LOWRES_SCALE = (0.2, 0.7)
CROP_LOWRES_PROB = 0.7  # share of crop views made that soft (augment.crop_lowres_prob)
# Share of crop-framed views JPEG-compressed (at the sensor's pixels when low-resolution).
CROP_JPEG_PROB = 0.9
# Hand shake: a share of crop-framed views smeared along a line this many crop pixels long
# (a 224 px crop of a pill 60-120 px long in the photo: 1-6 px of shake in the photo).
CROP_MOTION_PROB = 0.3
CROP_MOTION_PX = (2.0, 12.0)


@dataclass
class SynthParams:
    """Ranges of the phone-photo model; ``strength`` scales the photometric ones."""

    strength: float = 1.0
    one_side_prob: float = 0.5
    both_size: tuple[float, float] = (0.30, 0.46)  # pill length / image width, both sides
    one_size: tuple[float, float] = (0.45, 0.85)  # the same with one side
    shear: float = 0.12
    shadow_prob: float = 0.6
    blur_prob: float = 0.5
    blur_sigma: float = 1.6
    motion_prob: float = 0.0  # a straight-line smear at a random angle (see _motion_blur)
    motion_px: tuple[float, float] = (2.0, 8.0)  # its length in pixels of the view
    noise_prob: float = 0.5
    noise_std: float = 0.035
    lowres_prob: float = 0.25
    lowres_scale: tuple[float, float] = (0.35, 0.7)  # down-then-up factor of a lowres view
    highlight_prob: float = 0.0  # a specular glint on the pill (see _highlight)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (35, 95)
    letterbox_prob: float = 0.15
    studio_background_prob: float = 0.1
    framing: str = "photo"  # "crop": the pill by its mask on the C3PI grey (see _to_crop)
    # Noise and JPEG at the sensor's pixels: on a low-resolution view they are added before
    # it is enlarged, as a crop enlarges a small pill's noise and JPEG blocks with it.
    sensor_pixels: bool = False
    # Pixels kept along each cut-out side's longer dimension (see AugmentConfig.side_pixels).
    side_pixels: int = SIDE_CANVAS
    # Share of "crop" views made low resolution (lowres_prob is the "photo" framing's).
    crop_lowres_prob: float = CROP_LOWRES_PROB

    @classmethod
    def for_training(cls, augment: Any, strength: float | None = None) -> SynthParams:
        """The ranges `rxvision train` renders with, from a config's ``augment`` section
        (``strength`` overrides its strength, as ``data preview --strength`` does)."""
        params = cls(strength=augment.strength if strength is None else strength,
                     one_side_prob=augment.one_side_prob, blur_sigma=augment.blur_sigma,
                     noise_std=augment.noise_std, framing=augment.framing,
                     side_pixels=augment.side_pixels,
                     crop_lowres_prob=augment.crop_lowres_prob)
        return params.for_framing()

    def for_framing(self) -> SynthParams:
        """These ranges, with a "crop" framing's own: one side, centred, ~0.8 of the frame."""
        if self.framing == "photo":
            return self
        if self.framing != "crop":
            raise ValueError(f"framing must be 'photo' or 'crop', got {self.framing!r}")
        # A crop enlarges whatever the photo holds of the pill, so most crops of a pill
        # that lay small in the photo are soft: heavier and more frequent low resolution,
        # with the sensor's noise and JPEG blocks enlarged alike; a photo nearly always
        # carries sensor noise, and a phone saves nearly every photo as JPEG (or HEIC), so
        # nine crops in ten carry its blocks (session 14: JPEG 95 instead of 35-90 was worth
        # 5 points to the eighth version on independent renders). Glossy coats and gel caps
        # catch the light: a glint on half the crops. A hand-held phone shakes: a smear
        # along a line on three crops in ten (the eighth version lost 4 points to blur on
        # independent renders, which blur along lines as well; training blurred round only;
        # 8 epochs with the smear moved independent top-1 by under a point, session 15:
        # kept because phones do shake, not for a measured gain).
        return dataclasses.replace(self, one_side_prob=1.0, one_size=CROP_FILL,
                                   motion_prob=max(self.motion_prob, CROP_MOTION_PROB),
                                   motion_px=CROP_MOTION_PX,
                                   letterbox_prob=0.0, lowres_prob=self.crop_lowres_prob,
                                   lowres_scale=CROP_LOWRES_SCALE, highlight_prob=0.5,
                                   sensor_pixels=True, noise_prob=0.8,
                                   jpeg_prob=max(self.jpeg_prob, CROP_JPEG_PROB))


def motion_kernels(length: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Normalised (n, K, K) kernels of anti-aliased line segments ``length`` pixels long at
    ``angle`` radians, centred; K is odd and fits the longest."""
    if length.shape != angle.shape or length.dim() != 1 or bool((length <= 0).any()):
        raise ValueError("motion blur needs one positive length per angle")
    r = math.ceil(float(length.max()) / 2) + 1
    axis = torch.arange(-r, r + 1, dtype=torch.float32)
    v, u = torch.meshgrid(axis, axis, indexing="ij")  # rows (y), columns (x)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    along = u * cos + v * sin  # distance along the line from the centre
    across = (v * cos - u * sin).abs()  # distance from the line
    half = (length / 2).view(-1, 1, 1)
    k = (1 - across).clamp(min=0) * (half + 0.5 - along.abs()).clamp(0, 1)
    return k / k.sum(dim=(1, 2), keepdim=True)


def _side_tensor(side: Image.Image, canvas: int = SIDE_CANVAS) -> torch.Tensor:
    """RGBA side -> (4, canvas, canvas) premultiplied uint8, aspect kept, centred, padded."""
    s = side.copy()
    scale = canvas / max(s.size)
    s = s.resize((max(1, round(s.width * scale)), max(1, round(s.height * scale))),
                 Image.Resampling.BICUBIC)
    out = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    out.paste(s, ((canvas - s.width) // 2, (canvas - s.height) // 2))
    rgba = torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)
    # Premultiplied alpha, so resampling never blends colour with the transparent padding
    # (that would draw a dark ring round every cut edge).
    rgb = (rgba[:3].float() * rgba[3:].float() / 255).round().to(torch.uint8)
    return torch.cat([rgb, rgba[3:]])


class PhoneViewSynthesizer:
    """Render batches of phone-style views of reference pills (see module docstring)."""

    def __init__(self, sides: torch.Tensor, num_sides: torch.Tensor, size: tuple[int, int],
                 params: SynthParams | None = None, fill: tuple[int, int, int] = (124, 116, 104)):
        self.sides = sides  # (C, 2, 4, S, S) uint8, RGB premultiplied by alpha
        self.num_sides = num_sides  # (C,) 1 or 2
        self.size = (int(size[0]), int(size[1]))
        self.params = params or SynthParams()
        self.fill = torch.tensor(fill, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
        H, W = self.size
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
        self._yy, self._xx = yy, xx  # (H, W) normalised coordinates, reused every batch
        # Pixel-centre coordinates in [-1, 1], as grid_sample reads them (align_corners=False).
        self._grid_x = (torch.arange(W) * 2 + 1) / W - 1
        self._grid_y = (torch.arange(H) * 2 + 1) / H - 1
        # Sensor noise is drawn as a random window of one fixed bank (a fresh normal draw per
        # pixel cost more than a third of the rendering time). Seeded, so views stay
        # reproducible; offsets and per-view strengths still come from the caller's stream.
        self._noise_bank = torch.randn((3, 2 * H, 2 * W),
                                       generator=torch.Generator().manual_seed(0))

    @classmethod
    def from_images(cls, images: list[Image.Image], size: tuple[int, int],
                    params: SynthParams | None = None,
                    fill: tuple[int, int, int] = (124, 116, 104)) -> PhoneViewSynthesizer:
        """Cut out the sides of each reference image (index = class index), each kept at
        ``params.side_pixels`` along its longer dimension."""
        canvas = (params or SynthParams()).side_pixels
        tensors, counts = [], []
        for img in images:
            cut = cut_out_sides(img)
            sides = [_side_tensor(s, canvas) for s in cut.sides[:2]]
            counts.append(len(sides))
            if len(sides) == 1:
                sides.append(sides[0])
            tensors.append(torch.stack(sides))
        return cls(torch.stack(tensors), torch.tensor(counts), size, params, fill)

    def __len__(self) -> int:
        return self.sides.shape[0]

    # --- random helpers ------------------------------------------------------------------
    @staticmethod
    def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g)

    @staticmethod
    def _p(g: torch.Generator, n: int, p: float) -> torch.Tensor:
        return torch.rand(n, generator=g) < p

    # --- rendering -----------------------------------------------------------------------
    def render(self, classes: torch.Tensor, g: torch.Generator,
               modes: list[str] | None = None, sides: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, list[str]]:
        """Views (B, 3, H, W) uint8 of ``classes``; ``modes`` forces 'one'/'both' per view.

        ``sides`` (B,) of 0/1 forces which stored side a one-side view shows (and which comes
        first in a both-sides view) for references with two stored sides; left out, it is
        random. Either way the generator advances the same, so a seed renders the same views.
        """
        B = classes.numel()
        if sides is not None and (
                sides.shape != (B,) or not bool(((sides == 0) | (sides == 1)).all())):
            raise ValueError(f"sides must be {B} values of 0 or 1, got {sides.tolist()!r}")
        p = self.params
        if modes is None:
            one = self._p(g, B, p.one_side_prob)
        else:
            if len(modes) != B or not set(modes) <= {"one", "both"}:
                raise ValueError(f"modes must be {B} values of 'one'/'both', got {modes!r}")
            one = torch.tensor([m == "one" for m in modes], dtype=torch.bool)
        bg = self._background(B, g)  # (B, 3, H, W) float
        # pills (B, 3, H, W) come premultiplied by their coverage alpha (B, 1, H, W).
        pills, alpha = self._place_pills(classes, one, g, sides)
        bg = self._shadow(bg, alpha, g)
        img = bg * (1 - alpha) + pills  # "over" with premultiplied pill colour
        if p.highlight_prob > 0:  # drawn only then: other framings keep their random stream
            img = self._highlight(img, alpha, g)
        img = self._photometric(img, g)
        if p.sensor_pixels:  # JPEG is decided first: a low-resolution view is compressed small
            plan = self._jpeg_plan(g, B)
            img, compressed = self._degrade(img, g, plan)
        else:
            img, compressed = self._degrade(img, g)
            plan = self._jpeg_plan(g, B)
        out = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        out = self._jpeg(out, plan[0] & ~compressed, plan[1])
        if p.framing == "crop":
            out = self._to_crop(out, alpha, g)
        return out, ["one" if o else "both" for o in one.tolist()]

    def _to_crop(self, img: torch.Tensor, alpha: torch.Tensor, g: torch.Generator
                 ) -> torch.Tensor:
        """What the normalised crop keeps of a photo: the pill by a slightly wrong mask,
        pasted on the C3PI grey after the photo's light, blur, noise and JPEG.

        The mask is eroded or dilated within ``MASK_ERROR_PX`` (a dilated mask keeps a
        rim of the surface around the pill, as a real pill finder's mask may), on
        ``CROP_MASK_NOISE_PROB`` of the views coarsened and wobbled as a finder's is
        (:meth:`_finder_mask`), and its edge softened as ``normalised_crop`` softens it.
        """
        B = img.shape[0]
        shift = torch.randint(MASK_ERROR_PX[0], MASK_ERROR_PX[1] + 1, (B,), generator=g)
        mask = alpha.clone()
        for k in shift.unique().tolist():
            rows = shift == k
            if k > 0:  # dilate
                mask[rows] = F.max_pool2d(alpha[rows], 2 * k + 1, stride=1, padding=k)
            elif k < 0:  # erode
                mask[rows] = -F.max_pool2d(-alpha[rows], -2 * k + 1, stride=1, padding=-k)
        mask = self._finder_mask(mask, g)
        mask = F.avg_pool2d(F.pad(mask, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        out = img.float() / 255 * mask + C3PI_GREY * (1 - mask)
        return (out.clamp(0, 1) * 255).round().to(torch.uint8)

    def _finder_mask(self, mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``mask`` (B, 1, H, W) as a pill finder might return it, on a random share of rows.

        The mask is averaged over blocks of ``d`` crop pixels (``CROP_MASK_COARSE``) and
        enlarged again, which gives its edge a ramp about ``d`` pixels wide and the finder's
        blocky outline; low-frequency noise (a 7 x 7 grid, amplitude ``CROP_MASK_WOBBLE``)
        added before thresholding at 0.5 moves the edge in and out along the outline by up
        to about ``amplitude * d`` pixels: bites out of the pill and bulges of the surface.
        """
        B, _, H, W = mask.shape
        on = self._p(g, B, CROP_MASK_NOISE_PROB)
        block = torch.randint(CROP_MASK_COARSE[0], CROP_MASK_COARSE[1] + 1, (B,), generator=g)
        amplitude = self._u(g, B, *CROP_MASK_WOBBLE).view(B, 1, 1, 1)
        wobble = F.interpolate(torch.rand(B, 1, 7, 7, generator=g) * 2 - 1, size=(H, W),
                               mode="bicubic", align_corners=False)
        out = mask.clone()
        for d in block[on].unique().tolist():
            rows = on & (block == d)
            coarse = F.interpolate(
                F.avg_pool2d(mask[rows], d, stride=d, ceil_mode=True), size=(H, W),
                mode="bilinear", align_corners=False)
            out[rows] = (coarse + amplitude[rows] * wobble[rows] > 0.5).float()
        return out

    def _background(self, B: int, g: torch.Generator) -> torch.Tensor:
        H, W = self.size
        p = self.params
        level = self._u(g, B, 0.12, 0.95).view(B, 1, 1, 1)
        tint = (torch.randn(B, 3, 1, 1, generator=g) * 0.10).clamp(-0.3, 0.3)
        base = (level + tint).expand(B, 3, H, W)
        # Low-frequency blotches plus grain, built at quarter resolution and upsampled once
        # (bilinear upsampling is linear, so this equals upsampling each and adding).
        quarter = (max(1, H // 4), max(1, W // 4))
        low = F.interpolate(torch.rand(B, 3, 3, 3, generator=g) - 0.5, size=quarter,
                            mode="bilinear", align_corners=False)
        low = low * self._u(g, B, 0.0, 0.35).view(B, 1, 1, 1)
        grain = torch.rand(B, 1, *quarter, generator=g) - 0.5
        low = low + grain * self._u(g, B, 0.0, 0.18).view(B, 1, 1, 1)
        base = base + F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
        # Wood/fabric-like stripes on some backgrounds (computed for those views only).
        phi = self._u(g, B, 0, math.pi).view(B, 1, 1)
        freq = self._u(g, B, 4, 40).view(B, 1, 1)
        on = self._p(g, B, 0.3)
        amp = self._u(g, B, 0.0, 0.08).view(B, 1, 1, 1)
        if on.any():
            yy, xx = self._yy, self._xx
            arg = freq[on] * (xx * torch.cos(phi[on]) + yy * torch.sin(phi[on]))
            base[on] += torch.sin(arg).unsqueeze(1) * amp[on]
        studio = self._p(g, B, p.studio_background_prob).view(B, 1, 1, 1)
        grey = self._u(g, B, 0.42, 0.55).view(B, 1, 1, 1).expand(B, 3, H, W)
        return torch.where(studio, grey, base).clamp(0, 1)

    def _place_pills(self, classes: torch.Tensor, one: torch.Tensor, g: torch.Generator,
                     sides: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = self.size
        p = self.params
        B = classes.numel()
        aspect = W / H  # normalised y spans a shorter distance when W > H
        size_both = self._u(g, B, *p.both_size)
        size_one = self._u(g, B, *p.one_size)
        d = torch.where(one, size_one, size_both)  # pill length / image width
        # Centres: two sides apart along a random direction, or one side near the middle.
        direction = self._u(g, B, 0, 2 * math.pi)
        r = torch.where(one, torch.zeros(B), d * self._u(g, B, 1.0, 1.2))
        slack = (1 - r - d).clamp(min=0)
        mx = (torch.rand(B, generator=g) * 2 - 1) * slack * 0.8
        my = (torch.rand(B, generator=g) * 2 - 1) * slack * 0.8
        ux, uy = torch.cos(direction), torch.sin(direction)
        centres = [(mx + ux * r, my + uy * r), (mx - ux * r, my - uy * r)]
        # Which stored side goes in each slot: both -> random order; one -> a random side.
        two_sides = self.num_sides[classes] == 2
        first = torch.where(two_sides, (torch.rand(B, generator=g) < 0.5).long(), 0)
        if sides is not None:  # drawn above anyway: the rest of the stream stays the same
            first = torch.where(two_sides, sides.long(), 0)
        slots = [first, 1 - first]
        rgb_sum = alpha_sum = torch.zeros(0)
        # The second slot shows only in 'both' views of references with two sides (an
        # unsegmented reference already holds both sides in one crop); it is warped for
        # those views only.
        shown = [torch.ones(B, dtype=torch.bool), ~one & two_sides]
        for k in range(2):
            theta = self._affine(d, centres[k], aspect, g)
            rows = shown[k]
            n = int(rows.sum())
            if n == 0:
                continue
            # Stored premultiplied (see _side_tensor), so bilinear resampling is exact.
            src = self.sides[classes[rows], slots[k][rows]].float() / 255.0  # (n, 4, S, S)
            grid = self._affine_grid(theta[rows])
            warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)  # (n, 4, H, W) premultiplied
            if k == 0:
                rgb_sum, alpha_sum = warped[:, :3], warped[:, 3:4]
            else:
                # Slot 0 lies on top where the sides overlap ("over" on premultiplied colour).
                cover = 1 - alpha_sum[rows]
                rgb_sum[rows] += warped[:, :3] * cover
                alpha_sum[rows] += warped[:, 3:4] * cover
        return rgb_sum, alpha_sum

    def _affine_grid(self, theta: torch.Tensor) -> torch.Tensor:
        """``F.affine_grid(theta, (n, C, H, W), align_corners=False)`` by broadcasting.

        The same sampling grid (within float rounding, tested), about 10x faster on CPU
        than the batched matrix product behind ``affine_grid``.
        """
        n = theta.shape[0]
        xs, ys = self._grid_x.view(1, 1, -1), self._grid_y.view(1, -1, 1)
        t = theta.view(n, 6, 1, 1).unbind(1)  # a, b, c, d, e, f of [[a, b, c], [d, e, f]]
        gx = t[0] * xs + (t[1] * ys + t[2])
        gy = t[3] * xs + (t[4] * ys + t[5])
        return torch.stack([gx, gy], dim=-1)  # (n, H, W, 2)

    def _affine(self, d: torch.Tensor, centre: tuple[torch.Tensor, torch.Tensor], aspect: float,
                g: torch.Generator) -> torch.Tensor:
        """Output->source sampling matrices (B, 2, 3) for a rotated, sheared side."""
        B = d.numel()
        angle = self._u(g, B, 0, 2 * math.pi)
        c, s = torch.cos(angle), torch.sin(angle)
        sh = self._u(g, B, -self.params.shear, self.params.shear)
        stretch = 1 + self._u(g, B, -self.params.shear, self.params.shear)
        # Output coords (x, y*1/aspect in pixels-equivalent) -> rotate -> scale to source.
        m = torch.zeros(B, 2, 2)
        m[:, 0, 0], m[:, 0, 1] = c * stretch, (-s + sh) / aspect
        m[:, 1, 0], m[:, 1, 1] = s, c / stretch / aspect
        m = m / d.view(B, 1, 1)
        cx, cy = centre
        t = -(m @ torch.stack([cx, cy * aspect], dim=1).unsqueeze(-1)).squeeze(-1)
        return torch.cat([m, t.unsqueeze(-1)], dim=2)

    def _highlight(self, img: torch.Tensor, alpha: torch.Tensor, g: torch.Generator
                   ) -> torch.Tensor:
        """A specular glint: a soft white spot somewhere on the pill, screen-blended.

        Its centre lies near the pill's centroid (spread by the pill's own extent), its
        radius is 5-35% of that extent and its peak 25-85% of the way to white.
        """
        B = img.shape[0]
        H, W = self.size
        yy, xx = self._yy.view(1, 1, H, W), self._xx.view(1, 1, H, W)  # in [-1, 1]
        mass = alpha.sum(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        cx = (alpha * xx).sum(dim=(2, 3), keepdim=True) / mass
        cy = (alpha * yy).sum(dim=(2, 3), keepdim=True) / mass
        spread = (((alpha * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum(dim=(2, 3), keepdim=True)
                   / mass).sqrt()).clamp(min=1e-3)
        jx = torch.randn(B, 1, 1, 1, generator=g) * 0.5
        jy = torch.randn(B, 1, 1, 1, generator=g) * 0.5
        radius = spread * self._u(g, B, 0.05, 0.35).view(B, 1, 1, 1)
        peak = self._u(g, B, 0.25, 0.85).view(B, 1, 1, 1)
        on = self._p(g, B, self.params.highlight_prob).float().view(B, 1, 1, 1)
        d2 = (xx - cx - jx * spread) ** 2 + (yy - cy - jy * spread) ** 2
        glint = on * peak * alpha * torch.exp(-d2 / (2 * radius**2))
        return img + glint * (1 - img)

    def _shadow(self, bg: torch.Tensor, alpha: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        B, _, H, W = bg.shape
        p = self.params
        shift = (self._u(g, 2, -0.04, 0.04) * torch.tensor([H, W])).round().long().tolist()
        shadow = torch.roll(alpha, shifts=(shift[0], shift[1]), dims=(2, 3))
        # Blur at quarter resolution: a soft shadow has no fine detail to lose.
        small = F.avg_pool2d(shadow, 4)
        small = F.avg_pool2d(F.avg_pool2d(small, 3, 1, 1), 3, 1, 1)
        shadow = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
        on = self._p(g, B, p.shadow_prob).float().view(B, 1, 1, 1)
        depth = self._u(g, B, 0.15, 0.55).view(B, 1, 1, 1) * min(p.strength, 1.5)
        return bg * (1 - on * depth * shadow)

    def _photometric(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        B = img.shape[0]
        st = self.params.strength

        def jitter(spread: float) -> torch.Tensor:
            return 1 + self._u(g, B, -spread * st, spread * st).view(B, 1, 1, 1)

        # Uneven light: a linear gradient across the frame.
        yy, xx = self._yy, self._xx
        phi = self._u(g, B, 0, 2 * math.pi).view(B, 1, 1)
        ramp = (xx * torch.cos(phi) + yy * torch.sin(phi)).unsqueeze(1)
        light = 1 + ramp * self._u(g, B, 0, 0.25 * st).view(B, 1, 1, 1)
        img = img * (light * jitter(0.3))  # uneven light x brightness, one pass
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        c = jitter(0.3)  # contrast about the image mean
        gray = img.mean(dim=1, keepdim=True)
        sat = jitter(0.35)  # saturation about the pixel's grey
        cast = 1 + (torch.randn(B, 3, 1, 1, generator=g) * 0.06 * st).clamp(-0.2, 0.2)
        # Contrast, then saturation, then the white-balance cast are all linear, so they are
        # applied as one map: ((img - gray)·c·sat + gray·c + mean·(1 - c))·cast
        #                   = img·(c·sat·cast) + gray·(c·(1 - sat)·cast) + mean·(1 - c)·cast.
        out = torch.addcmul(mean * (1 - c) * cast, gray, c * (1 - sat) * cast)
        img = torch.addcmul(out, img, c * sat * cast).clamp_(0, 1)
        # Tone curve (gamma) on half the views: the power is the costliest photometric op.
        gamma = torch.exp(self._u(g, B, -0.25 * st, 0.25 * st)).view(B, 1, 1, 1)
        curved = self._p(g, B, 0.5)
        if curved.any():
            img[curved] = img[curved].clamp(1e-4, 1) ** gamma[curved]
        return img

    def _degrade(self, img: torch.Tensor, g: torch.Generator,
                 jpeg: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Blur, low resolution, sensor noise, letterbox bands; and which views were already
        JPEG-compressed (with ``sensor_pixels``: low-resolution views, at their small size,
        by the ``jpeg`` plan (on, quality))."""
        B, C, H, W = img.shape
        p = self.params
        st = min(p.strength, 1.5)
        # Gaussian blur, one sigma per image, as a grouped separable convolution.
        sigma = self._u(g, B, 0.3, max(0.31, p.blur_sigma * st))
        blurred = self._p(g, B, p.blur_prob)
        nb = int(blurred.sum())
        if nb:  # only the blurred views pay for the convolution
            radius = max(4, math.ceil(2.5 * p.blur_sigma * st))  # 4 for the default 1.6
            x = torch.arange(-radius, radius + 1, dtype=torch.float32)
            k = torch.exp(-(x.view(1, -1) ** 2) / (2 * sigma[blurred].view(-1, 1) ** 2))
            k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (nb*C, K)
            flat = img[blurred].reshape(1, nb * C, H, W)
            flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"),
                            k.view(nb * C, 1, 1, -1), groups=nb * C)
            flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"),
                            k.view(nb * C, 1, -1, 1), groups=nb * C)
            img[blurred] = flat.view(nb, C, H, W)
        if p.motion_prob > 0:  # drawn only then: other settings keep their random stream
            img = self._motion_blur(img, g)
        # Low resolution: down- then up-sample a subset of the batch.
        low = self._p(g, B, p.lowres_prob)
        f = float(self._u(g, 1, *p.lowres_scale)) if low.any() else 1.0
        noisy = self._p(g, B, p.noise_prob)
        std = self._u(g, B, 0.005, p.noise_std * st).view(B, 1, 1, 1)
        offsets = torch.randint(0, min(H, W), (B, 2), generator=g)
        compressed = torch.zeros(B, dtype=torch.bool)
        if low.any():
            small = F.interpolate(img[low], scale_factor=f, mode="bilinear", antialias=True)
            if p.sensor_pixels:  # noise and JPEG at the sensor's pixels, enlarged with them
                rows = torch.nonzero(low).flatten()
                self._add_noise(small, noisy[rows], std[rows], offsets[rows])
                if jpeg is not None:
                    on, quality = jpeg[0][rows], jpeg[1][rows]
                    small = self._compress_float(small, on, quality)
                    compressed[rows[on]] = True
                noisy = noisy & ~low
            img[low] = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
        self._add_noise(img, noisy, std, offsets)
        # Letterbox bands, as the evaluation transform adds for non-square photos.
        band = self._p(g, B, p.letterbox_prob)
        for i in torch.nonzero(band).flatten().tolist():
            frac = float(self._u(g, 1, 0.05, 0.125))
            if bool(self._p(g, 1, 0.5)):
                n = int(H * frac)
                img[i, :, :n] = self.fill[0]
                img[i, :, H - n :] = self.fill[0]
            else:
                n = int(W * frac)
                img[i, :, :, :n] = self.fill[0]
                img[i, :, :, W - n :] = self.fill[0]
        return img, compressed

    def _motion_blur(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Smear ``motion_prob`` of the views along a line (hand shake during the exposure):
        one length in ``motion_px`` and one angle per view, as a grouped 2-D convolution."""
        B, C, H, W = img.shape
        p = self.params
        moved = self._p(g, B, p.motion_prob)
        n = int(moved.sum())
        if not n:
            return img
        length = self._u(g, n, *p.motion_px)
        angle = self._u(g, n, 0.0, math.pi)
        kernels = motion_kernels(length, angle)  # (n, K, K)
        r = kernels.shape[-1] // 2
        flat = F.pad(img[moved].reshape(1, n * C, H, W), (r, r, r, r), mode="replicate")
        weight = kernels.repeat_interleave(C, 0).unsqueeze(1)  # (n*C, 1, K, K)
        img[moved] = F.conv2d(flat, weight, groups=n * C).view(n, C, H, W)
        return img

    def _add_noise(self, img: torch.Tensor, noisy: torch.Tensor, std: torch.Tensor,
                   offsets: torch.Tensor) -> None:
        """Add a window of the noise bank to each ``noisy`` view of ``img`` (in place)."""
        h, w = img.shape[-2:]
        for i in torch.nonzero(noisy).flatten().tolist():
            y, x = offsets[i].tolist()
            img[i].add_(self._noise_bank[:, y : y + h, x : x + w], alpha=float(std[i]))

    def _jpeg_plan(self, g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Which of ``n`` views are JPEG-compressed, and at what quality."""
        p = self.params
        on = self._p(g, n, p.jpeg_prob)
        q = torch.randint(p.jpeg_quality[0], p.jpeg_quality[1] + 1, (n,), generator=g)
        return on, q

    def _compress_float(self, img: torch.Tensor, on: torch.Tensor, quality: torch.Tensor
                        ) -> torch.Tensor:
        """JPEG round trip of the ``on`` views of a float (n, 3, h, w) batch in [0, 1]."""
        out = img.clone()
        if on.any():
            u8 = (img[on].clamp(0, 1) * 255).round().to(torch.uint8)
            out[on] = self._jpeg(u8, torch.ones(len(u8), dtype=torch.bool), quality[on]) / 255
        return out

    @staticmethod
    def _jpeg(img: torch.Tensor, on: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """JPEG round trip of the ``on`` views of a uint8 batch, in place."""
        for i in torch.nonzero(on).flatten().tolist():
            img[i] = decode_jpeg(encode_jpeg(img[i], quality=int(quality[i])))
        return img

