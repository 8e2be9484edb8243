"""Phone-view synthesis contract: shapes, forced modes, seeded determinism, held-out views."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from rxvision.data import load_dataset, load_image
from rxvision.data.synth import PhoneViewSynthesizer, SynthParams, _side_tensor, motion_kernels
from rxvision.data.transforms import fill_colour
from rxvision.engine.train import validation_views

SIZE = (64, 64)
# The synthesiser's JPEG step uses torchvision.io, which announces its future move to
# torchcodec on every call; that says nothing about these contracts.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


@pytest.fixture(scope="module")
def sample_synth(sample_dir: Path) -> PhoneViewSynthesizer:
    refs = [load_image(s.path) for s in load_dataset(sample_dir / "manifest.csv").samples]
    return PhoneViewSynthesizer.from_images(refs, SIZE)


@pytest.fixture(scope="module")
def two_colour_synth() -> PhoneViewSynthesizer:
    """A studio-style photo whose front is red and back is blue, on grey with no rulers."""
    img = Image.new("RGB", (300, 225), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    draw.ellipse((50, 40, 150, 170), fill=(220, 30, 30))
    draw.ellipse((180, 40, 280, 170), fill=(30, 30, 220))
    return PhoneViewSynthesizer.from_images([img], (96, 96))


def _render(synth: PhoneViewSynthesizer, seed: int, n: int = 8,
            modes: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    classes = torch.arange(n) % len(synth)
    return synth.render(classes, torch.Generator().manual_seed(seed), modes)


def test_render_shape_dtype_and_forced_modes(sample_synth: PhoneViewSynthesizer) -> None:
    assert len(sample_synth) == 24
    assert int(sample_synth.num_sides.min()) == 2  # every sample photo split in two
    modes = ["one", "both", "both", "one", "one", "both"]
    views, got = _render(sample_synth, 0, 6, modes)
    assert views.shape == (6, 3, *SIZE) and views.dtype == torch.uint8
    assert got == modes
    # Views are images, not constants: each has real contrast.
    assert (views.float().flatten(1).std(1) > 3).all()


def test_random_modes_follow_one_side_prob(sample_synth: PhoneViewSynthesizer) -> None:
    _, modes = _render(sample_synth, 1, 64)
    assert set(modes) == {"one", "both"} and 12 < modes.count("one") < 52
    only_both = PhoneViewSynthesizer(sample_synth.sides, sample_synth.num_sides, SIZE,
                                     SynthParams(one_side_prob=0.0))
    assert set(_render(only_both, 1, 16)[1]) == {"both"}


def test_bad_modes_raise(sample_synth: PhoneViewSynthesizer) -> None:
    with pytest.raises(ValueError, match="'one'/'both'"):
        _render(sample_synth, 0, 2, ["one", "front"])
    with pytest.raises(ValueError, match="2 values"):
        _render(sample_synth, 0, 2, ["one"])


def test_same_seed_same_views_different_seed_different(sample_synth: PhoneViewSynthesizer
                                                       ) -> None:
    a, ma = _render(sample_synth, 7)
    b, mb = _render(sample_synth, 7)
    c, _ = _render(sample_synth, 8)
    assert torch.equal(a, b) and ma == mb
    assert (a.float() - c.float()).abs().mean() > 10


def test_one_side_views_show_one_side(two_colour_synth: PhoneViewSynthesizer) -> None:
    """The red front and blue back: 'one' views show exactly one colour, 'both' views both."""
    assert int(two_colour_synth.num_sides[0]) == 2
    n = 16
    classes = torch.zeros(n, dtype=torch.long)
    areas = {}
    for mode in ("one", "both"):
        one = torch.full((n,), mode == "one")
        pills, alpha = two_colour_synth._place_pills(classes, one, torch.Generator().manual_seed(3))
        assert pills.shape == (n, 3, 96, 96) and alpha.shape == (n, 1, 96, 96)
        solid = alpha[:, 0] > 0.9
        red = ((pills[:, 0] > 0.6) & (pills[:, 2] < 0.4) & solid).flatten(1).sum(1)
        blue = ((pills[:, 2] > 0.6) & (pills[:, 0] < 0.4) & solid).flatten(1).sum(1)
        if mode == "one":
            assert ((red > 50) ^ (blue > 50)).all()  # one side, never both
            assert ((red == 0) | (blue == 0)).all()
            assert (red > 50).any() and (blue > 50).any()  # either side can be the one shown
        else:
            assert ((red > 50) & (blue > 50)).all()
        areas[mode] = alpha.flatten(1).mean(1)
    # A single side is framed closer (SynthParams.one_size > both_size), so it is larger
    # than either side of a two-side view.
    assert areas["one"].mean() > areas["both"].mean() / 2


def test_forced_sides_pick_the_side_and_keep_the_random_stream(
        two_colour_synth: PhoneViewSynthesizer) -> None:
    """``sides`` chooses front or back of a one-side view; the seed's other draws stay put."""
    n = 8
    classes = torch.zeros(n, dtype=torch.long)
    one = torch.ones(n, dtype=torch.bool)
    shown = {}
    for side in (0, 1):
        pills, alpha = two_colour_synth._place_pills(
            classes, one, torch.Generator().manual_seed(3), torch.full((n,), side))
        solid = alpha[:, 0] > 0.9
        red = ((pills[:, 0] > 0.6) & (pills[:, 2] < 0.4) & solid).flatten(1).sum(1)
        blue = ((pills[:, 2] > 0.6) & (pills[:, 0] < 0.4) & solid).flatten(1).sum(1)
        assert ((red > 50) ^ (blue > 50)).all()
        shown[side] = bool((red > 50).all()), bool((blue > 50).all())
    assert shown[0] != shown[1] and all(any(v) for v in shown.values())  # each all one colour
    # Forcing the side the seed would have drawn anyway renders the very same views, and the
    # generator ends in the same state.
    g_free, g_forced = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    free, _ = two_colour_synth.render(classes, g_free, ["one"] * n)
    forced, _ = two_colour_synth.render(classes, g_forced, ["one"] * n,
                                        torch.zeros(n, dtype=torch.long))
    assert torch.rand(1, generator=g_free) == torch.rand(1, generator=g_forced)
    same = (free.float() - forced.float()).flatten(1).abs().mean(1) < 1e-6
    assert same.any() and not same.all()  # the views whose drawn side was 0 are unchanged
    with pytest.raises(ValueError, match="0 or 1"):
        two_colour_synth.render(classes, torch.Generator(), ["one"] * n, torch.full((n,), 2))


def test_cut_edges_have_no_dark_fringe() -> None:
    # A white side on a transparent canvas: resampled edge pixels keep the side's colour.
    side = _side_tensor(Image.new("RGBA", (120, 60), (255, 255, 255, 255)))
    synth = PhoneViewSynthesizer(torch.stack([torch.stack([side, side])]), torch.tensor([2]),
                                 (96, 96))
    one = torch.ones(8, dtype=torch.bool)
    pills, alpha = synth._place_pills(torch.zeros(8, dtype=torch.long), one,
                                      torch.Generator().manual_seed(0))
    colour = pills / alpha.clamp(min=1e-6)  # pills come premultiplied by alpha
    edge = ((alpha > 0.05) & (alpha < 0.95)).expand_as(colour)
    assert edge.any()
    assert float(colour[edge].min()) > 0.98


def test_unsegmented_reference_is_drawn_once() -> None:
    # When the cutout falls back to one crop (both sides inside it), 'both' must not
    # draw that crop twice.
    blank = Image.new("RGB", (300, 225), (128, 128, 128))
    synth = PhoneViewSynthesizer.from_images([blank], (96, 96))
    assert int(synth.num_sides[0]) == 1
    classes = torch.zeros(4, dtype=torch.long)
    _, a_both = synth._place_pills(classes, torch.zeros(4, dtype=torch.bool),
                                   torch.Generator().manual_seed(0))
    from scipy import ndimage

    for a in a_both[:, 0].numpy():
        assert ndimage.label(a > 0.5)[1] == 1


def test_validation_views_are_fixed_and_apart_from_training(
        sample_synth: PhoneViewSynthesizer) -> None:
    targets = torch.arange(24)
    val = validation_views(sample_synth, targets, views_per_image=2, seed=1234, batch=16)
    again = validation_views(sample_synth, targets, views_per_image=2, seed=1234, batch=16)
    assert val.images.shape == (48, 3, *SIZE) and val.images.dtype == torch.uint8
    assert torch.equal(val.images, again.images)
    # Every image once with both sides and once with one; one view per image is half each.
    assert val.modes == ["both", "one"] * 12 + ["one", "both"] * 12
    single = validation_views(sample_synth, targets, views_per_image=1, seed=1234, batch=16)
    assert single.modes.count("both") == single.modes.count("one") == 12
    assert torch.equal(val.targets, targets.repeat(2))
    # Another seed gives other views of the same pills.
    other = validation_views(sample_synth, targets, views_per_image=2, seed=1235, batch=16)
    assert (val.images.float() - other.images.float()).abs().mean() > 10
    # A training generator (seeded from the run seed, epoch and rank) draws different views
    # of the same classes and modes.
    index = torch.arange(24).repeat(2)
    for train_seed in (42 * 1_000_003 + 1, 0, 1):
        g = torch.Generator().manual_seed(train_seed)
        train_views = torch.cat([sample_synth.render(index[i:i + 16], g, val.modes[i:i + 16])[0]
                                 for i in range(0, 48, 16)])
        diff = (train_views.float() - val.images.float()).abs().flatten(1).mean(1)
        assert (diff > 5).all()


def test_strength_zero_still_renders(sample_synth: PhoneViewSynthesizer) -> None:
    calm = PhoneViewSynthesizer(sample_synth.sides, sample_synth.num_sides, SIZE,
                                SynthParams(strength=0.0))
    views, _ = _render(calm, 0, 8)
    assert views.shape == (8, 3, *SIZE) and views.dtype == torch.uint8
    assert (views.float().flatten(1).std(1) > 3).all()
    strong = PhoneViewSynthesizer(sample_synth.sides, sample_synth.num_sides, SIZE,
                                  SynthParams(strength=1.5))
    assert _render(strong, 0, 8)[0].shape == views.shape


def test_non_square_output_and_fill() -> None:
    img = Image.new("RGB", (300, 225), (128, 128, 128))
    ImageDraw.Draw(img).ellipse((60, 40, 160, 170), fill=(240, 240, 240))
    ImageDraw.Draw(img).ellipse((180, 40, 280, 170), fill=(240, 240, 240))
    synth = PhoneViewSynthesizer.from_images([img], (48, 80))
    views, _ = synth.render(torch.zeros(3, dtype=torch.long), torch.Generator().manual_seed(0))
    assert views.shape == (3, 3, 48, 80)
    assert fill_colour([0.485, 0.456, 0.406]) == (124, 116, 104)
    assert np.isfinite(views.numpy()).all()


def test_broadcast_affine_grid_equals_torch_affine_grid(
        sample_synth: PhoneViewSynthesizer) -> None:
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(3))
    H, W = sample_synth.size
    expected = torch.nn.functional.affine_grid(theta, [5, 4, H, W], align_corners=False)
    torch.testing.assert_close(sample_synth._affine_grid(theta), expected, atol=1e-5, rtol=0)


def test_crop_framing_shows_one_side_alone_on_the_studio_grey(sample_dir: Path) -> None:
    """framing=crop renders what rxvision.locate.normalised_crop makes of a photo."""
    from rxvision.config import AugmentConfig
    from rxvision.data.synth import C3PI_GREY, CROP_FILL

    params = SynthParams.for_training(AugmentConfig(framing="crop"))
    assert params.one_side_prob == 1.0 and params.one_size == CROP_FILL
    assert params.letterbox_prob == 0.0
    refs = [load_image(s.path) for s in load_dataset(sample_dir / "manifest.csv").samples[:4]]
    crop = PhoneViewSynthesizer.from_images(refs, (96, 96), params)
    views, modes = crop.render(torch.arange(4), torch.Generator().manual_seed(3))
    assert modes == ["one"] * 4
    grey = round(C3PI_GREY * 255)
    # The frame's corners lie outside every pill: exactly the studio grey, whatever the
    # surface, light, noise and JPEG of the photo underneath.
    corners = views[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == grey).all()
    # ... while the pill in the middle is not grey.
    assert (views[:, :, 40:56, 40:56].float() - grey).abs().mean() > 3


def test_a_glint_brightens_the_pill_and_nothing_else(sample_dir: Path) -> None:
    from rxvision.config import AugmentConfig
    from rxvision.data.synth import CROP_LOWRES_SCALE

    params = SynthParams.for_training(AugmentConfig(framing="crop"))
    assert params.highlight_prob > 0 and params.lowres_scale == CROP_LOWRES_SCALE
    assert SynthParams().highlight_prob == 0.0  # photo framing draws no glint
    refs = [load_image(s.path) for s in load_dataset(sample_dir / "manifest.csv").samples[:4]]
    synth = PhoneViewSynthesizer.from_images(
        refs, (64, 64), SynthParams(highlight_prob=1.0))
    img = torch.full((4, 3, 64, 64), 0.4)
    alpha = torch.zeros(4, 1, 64, 64)
    alpha[:, :, 16:48, 16:48] = 1.0  # a square "pill" in the middle
    out = synth._highlight(img.clone(), alpha, torch.Generator().manual_seed(0))
    assert torch.equal(out[..., :16, :], img[..., :16, :])  # the surface is untouched
    assert (out >= img).all() and (out <= 1).all()  # screen blend: brighter, never clipped
    assert (out[..., 16:48, 16:48] - 0.4).amax(dim=(1, 2, 3)).min() > 0.05  # every pill shines


def test_unknown_framing_is_a_config_error() -> None:
    from rxvision.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=r"augment\.framing"):
        config_from_dict({"augment": {"framing": "poster"}})


def test_side_pixels_set_the_detail_each_side_keeps() -> None:
    """augment.side_pixels: a 280 px side kept at 288 px keeps its detail (a 1 px stripe
    stays 1 px); at the old 160 it is shrunk, and the stripe blurs into its neighbours."""
    from rxvision.config import AugmentConfig, ConfigError, config_from_dict

    photo = Image.new("RGB", (300, 225), (117, 117, 117))
    draw = ImageDraw.Draw(photo)
    for top in (10, 115):  # two sides, each 280 px long
        draw.rectangle([15, top, 294, top + 85], fill=(240, 240, 240))
        for x in range(30, 280, 2):
            draw.line([x, top + 15, x, top + 70], fill=(20, 20, 20))  # 1 px stripes, 1 apart
    for pixels, sharp in ((288, True), (160, False)):
        params = SynthParams.for_training(AugmentConfig(framing="crop", side_pixels=pixels))
        synth = PhoneViewSynthesizer.from_images([photo], (224, 224), params)
        assert synth.sides.shape[-1] == pixels
        rgb = synth.sides[0, 0, :3].float()
        row = rgb[:, pixels // 2].mean(0)  # across the stripes, mid-height
        middle = row[pixels // 4: 3 * pixels // 4]  # stripes only, not the side's ends
        contrast = float(middle.max() - middle.min())
        assert (contrast > 180) == sharp, (pixels, contrast)
    with pytest.raises(ConfigError, match=r"augment\.side_pixels"):
        config_from_dict({"augment": {"side_pixels": 32}})


def test_crop_lowres_prob_sets_the_share_of_soft_crops() -> None:
    """augment.crop_lowres_prob reaches the crop framing's low-resolution share (0.7 by
    default, as before it was a setting); the photo framing keeps its own."""
    from rxvision.config import AugmentConfig, ConfigError, config_from_dict
    from rxvision.data.synth import CROP_LOWRES_PROB

    assert SynthParams.for_training(AugmentConfig(framing="crop")).lowres_prob == CROP_LOWRES_PROB
    for share in (0.0, 0.4, 1.0):
        crop = SynthParams.for_training(AugmentConfig(framing="crop", crop_lowres_prob=share))
        assert crop.lowres_prob == share
        photo = SynthParams.for_training(AugmentConfig(crop_lowres_prob=share))
        assert photo.lowres_prob == SynthParams().lowres_prob
    with pytest.raises(ConfigError, match=r"augment\.crop_lowres_prob"):
        config_from_dict({"augment": {"crop_lowres_prob": 1.5}})


def test_crop_framing_validates_on_one_side_views(sample_dir: Path) -> None:
    from rxvision.config import AugmentConfig

    refs = [load_image(s.path) for s in load_dataset(sample_dir / "manifest.csv").samples[:4]]
    params = SynthParams.for_training(AugmentConfig(framing="crop"))
    synth = PhoneViewSynthesizer.from_images(refs, (64, 64), params)
    val = validation_views(synth, torch.arange(4), views_per_image=2, seed=5, batch=8)
    assert val.modes == ["one"] * 8


@pytest.mark.parametrize("sensor_pixels", [False, True])
def test_crop_views_enlarge_the_sensors_noise_with_the_pill(two_colour_synth, sensor_pixels):
    """A crop of a pill that lay small in the photo enlarges the photo's noise with it:
    neighbouring pixels of its noise agree. Added after the enlargement they do not."""
    params = SynthParams(blur_prob=0.0, lowres_prob=1.0, lowres_scale=(0.3, 0.3),
                         noise_prob=1.0, noise_std=0.05, letterbox_prob=0.0,
                         sensor_pixels=sensor_pixels)
    synth = PhoneViewSynthesizer(two_colour_synth.sides, two_colour_synth.num_sides,
                                 (96, 96), params)
    grey = torch.full((4, 3, 96, 96), 0.5)
    out, compressed = synth._degrade(grey.clone(), torch.Generator().manual_seed(0))
    noise = (out - 0.5)[..., 8:-8, 8:-8]
    lag1 = float((noise[..., 1:] * noise[..., :-1]).mean() / (noise * noise).mean())
    if sensor_pixels:
        assert lag1 > 0.6  # one sensor pixel spans ~3 crop pixels
    else:
        assert abs(lag1) < 0.1
    assert not compressed.any()  # no JPEG plan given: nothing compressed yet


def test_crop_framing_compresses_small_views_once(two_colour_synth):
    params = SynthParams(framing="crop", jpeg_prob=1.0).for_framing()
    assert params.sensor_pixels and params.lowres_prob > 0
    synth = PhoneViewSynthesizer(two_colour_synth.sides, two_colour_synth.num_sides,
                                 (96, 96), params)
    g = torch.Generator().manual_seed(1)
    plan = synth._jpeg_plan(g, 16)
    _, compressed = synth._degrade(torch.full((16, 3, 96, 96), 0.5), g, plan)
    assert compressed.any() and not compressed.all()  # the low-resolution ones, at their size
    views, _ = synth.render(torch.zeros(6, dtype=torch.long), torch.Generator().manual_seed(2))
    again, _ = synth.render(torch.zeros(6, dtype=torch.long), torch.Generator().manual_seed(2))
    assert views.dtype == torch.uint8 and torch.equal(views, again)


def test_crop_framing_compresses_nearly_every_view():
    """Phones save JPEG: crop framing raises the JPEG share, never lowers a higher one."""
    assert SynthParams(framing="crop").for_framing().jpeg_prob >= 0.9 > SynthParams().jpeg_prob
    assert SynthParams(framing="crop", jpeg_prob=1.0).for_framing().jpeg_prob == 1.0


def test_motion_kernels_are_normalised_line_segments():
    k = motion_kernels(torch.tensor([6.0, 6.0, 1.0]), torch.tensor([0.0, math.pi / 2, 0.3]))
    assert k.shape[0] == 3 and k.shape[1] == k.shape[2] and k.shape[1] % 2 == 1
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(3))
    c = k.shape[1] // 2
    horizontal, vertical = k[0], k[1]
    assert torch.allclose(horizontal.sum(0)[c - 2 : c + 3], horizontal[c, c - 2 : c + 3])  # one row
    assert float(horizontal[c].sum()) > 0.99 and float(horizontal[:, c].sum()) < 0.2
    assert torch.allclose(vertical, horizontal.T, atol=1e-5)  # a quarter turn
    with pytest.raises(ValueError, match="positive length"):
        motion_kernels(torch.tensor([0.0]), torch.tensor([0.0]))


def test_motion_blur_smears_along_its_line_only(two_colour_synth):
    """A horizontal smear spreads a vertical edge and leaves a horizontal edge sharp."""
    params = SynthParams(blur_prob=0.0, lowres_prob=0.0, noise_prob=0.0, letterbox_prob=0.0,
                         motion_prob=1.0, motion_px=(9.0, 9.0))
    synth = PhoneViewSynthesizer(two_colour_synth.sides, two_colour_synth.num_sides,
                                 (64, 64), params)
    img = torch.zeros(2, 3, 64, 64)
    img[0, :, :, 32:] = 1  # a vertical edge
    img[1, :, 32:, :] = 1  # a horizontal edge
    angle = torch.zeros(2)
    out = img.clone()
    for i in range(2):  # the same horizontal smear on both, through the kernel the synth uses
        k = motion_kernels(torch.tensor([9.0]), angle[i : i + 1])[0]
        r = k.shape[0] // 2
        padded = F.pad(img[i : i + 1], (r, r, r, r), mode="replicate")
        out[i] = F.conv2d(padded, k.expand(3, 1, -1, -1), groups=3)[0]
    assert 0.2 < float(out[0, 0, 10, 30]) < 0.5 and 0.5 < float(out[0, 0, 10, 33]) < 0.8
    assert torch.equal(out[1], img[1])  # along the edge: nothing moves
    # The synth smears every view when asked, and a seed renders the same smear.
    a, _ = synth._degrade(img.clone(), torch.Generator().manual_seed(3))
    b, _ = synth._degrade(img.clone(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, img)


def test_crop_framing_shakes_some_views():
    crop = SynthParams(framing="crop").for_framing()
    assert crop.motion_prob >= 0.3 and crop.motion_px[1] > crop.motion_px[0] > 0
    assert SynthParams().motion_prob == 0.0  # photo framing keeps its random stream


def test_finder_masks_wander_off_the_true_edge_only_near_it(two_colour_synth):
    """Some crop masks are coarsened and wobbled like a finder's: they differ from the true
    mask along its outline (bites and bulges), never far inside or outside the pill, and a
    seed draws the same ones."""
    from rxvision.data.synth import CROP_MASK_COARSE, CROP_MASK_NOISE_PROB

    size = 96
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - 47.5) ** 2 + (xx - 47.5) ** 2) < 30**2).float()
    mask = disc.expand(64, 1, size, size).clone()
    out = two_colour_synth._finder_mask(mask, torch.Generator().manual_seed(4))
    again = two_colour_synth._finder_mask(mask, torch.Generator().manual_seed(4))
    assert torch.equal(out, again) and set(out.unique().tolist()) <= {0.0, 1.0}
    changed = (out != mask).flatten(1).any(dim=1)
    # About CROP_MASK_NOISE_PROB of the views (0.6 of 64: 38.4, sd 3.9) are changed.
    assert abs(int(changed.sum()) - CROP_MASK_NOISE_PROB * 64) < 16
    radius = ((yy - 47.5) ** 2 + (xx - 47.5) ** 2).sqrt()
    moved = (out != mask).any(dim=0)[0]
    assert moved.any()
    # Only near the edge: within two blocks of the coarsest grid (a block's average is
    # spread over its neighbours when enlarged again).
    assert float(radius[moved].min()) > 30 - 2 * CROP_MASK_COARSE[1]
    assert float(radius[moved].max()) < 30 + 2 * CROP_MASK_COARSE[1]
    assert float((radius[moved] - 30).abs().median()) < CROP_MASK_COARSE[1] / 2
    # The outline wanders both ways: some views lose pill pixels, some gain surface ones.
    assert ((mask - out) > 0).flatten(1).any(1).sum() > 0
    assert ((out - mask) > 0).flatten(1).any(1).sum() > 0
