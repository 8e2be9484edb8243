"""Find every pill in a photo: a mask, a box and a score per pill.

:class:`Segmenter` wraps the network (:mod:`rxvision.locate.segnet`) with its card: the
photo is resized so that its longer side is the card's ``input_longest`` (both sides
rounded to a multiple of 16), normalised with the encoder's mean/std, and the two predicted
maps are split into pills (:mod:`rxvision.locate.instances`). Each pill's mask is brought
back to the photo's resolution inside its box, so boxes are not quantised to the working
grid. A card may name further working sides (``extra_longest``): the photo is segmented at
each of them too, and their pills are added where they overlap none found before (the
network was trained at one scale; a large pill that a finer side loses is kept by a
coarser one, and crowds that a coarse side merges are parted by a finer one).

A segmenter is a model artifact like the classifier: a directory with ``model.safetensors``
and ``card.json`` (network config, preprocessing, thresholds, metrics, training record,
software versions and the weights' SHA-256). Loading refuses pickles, corrupt or replaced
weights and weights that do not fit the card. ``Segmenter.load(path, backend="onnx")``
runs the directory's checked ``model.onnx`` and never imports torch or the network.

Example:
    >>> seg = Segmenter.load("models/rxvision-segmenter")
    >>> for pill in seg.find(photo):
    ...     print(pill.box, pill.score, pill.mask.shape)
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..artifact import (
    ArtifactError,
    load_state_dict_safely,
    read_card_json,
    sha256_file,
    software_versions,
)
from ..io_utils import atomic_directory, atomic_write, atomic_write_json
from .instances import InstanceThresholds, split_instances
from .scoring import box_iou

if TYPE_CHECKING:  # the network (torch, timm) loads only for the torch backend and training
    from .segnet import PillSegNet

Runner = Callable[[np.ndarray], np.ndarray]  # normalised (1, 3, h, w) -> logits (1, 2, h, w)

SEGMENTER_DIR = "segmenter"  # a crop model artifact's own pill finder, beside its card.json
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "card.json"
CARD_FORMAT = "rxvision-segmenter-card/1"
ONNX_NAME = "model.onnx"
MULTIPLE = 16  # the encoder's output stride: working sizes are multiples of it
DEFAULT_INPUT_LONGEST = 320
MIN_LONGEST = 32
# A pill found at an extra working side is added unless its box overlaps one already found
# by at least this IoU (session 16: 0.3 on the real phone photos' development split).
EXTRA_SIDE_OVERLAP = 0.3


@dataclass(frozen=True)
class PillRegion:
    """One pill in a photo.

    Attributes:
        box: (x0, y0, x1, y1) in photo pixels, x1/y1 exclusive.
        mask: bool array (y1 - y0, x1 - x0): the pill's pixels inside ``box``.
        score: mean foreground probability over the pill, in [0, 1].
        extra_side: found at one of the card's extra working sides (where the main side
            found nothing overlapping it); :func:`most_pill_like` takes such a region as
            a photo's one pill only when the main side found none.
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    score: float
    extra_side: bool = False

    def full_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The mask in a whole photo of ``size`` (width, height): bool (height, width)."""
        w, h = size
        out = np.zeros((h, w), dtype=bool)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.mask
        return out


def working_size(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(width, height) the network sees a photo of ``size`` at: longer side ``longest``."""
    w, h = size
    k = longest / max(w, h)
    return (
        max(MULTIPLE, round(w * k / MULTIPLE) * MULTIPLE),
        max(MULTIPLE, round(h * k / MULTIPLE) * MULTIPLE),
    )


def working_sides(longest: Any, extra: Any = ()) -> tuple[int, ...]:
    """``(longest, *extra)`` as ints: distinct and each at least ``MIN_LONGEST`` pixels.

    Raises:
        ValueError: a side that is not an integer, too small, or repeated.
    """
    sides = (int(longest), *(int(s) for s in extra))
    if min(sides) < MIN_LONGEST or len(set(sides)) != len(sides):
        raise ValueError(f"working sides must be distinct and at least {MIN_LONGEST} pixels, "
                         f"got {list(sides)}")
    return sides


class Segmenter:
    """A trained pill segmenter and its card; see the module docstring.

    Args:
        net: the PyTorch network; None for a segmenter loaded to run ONNX only (then
            ``runner`` and ``data`` are required).
        runner: runs the network on the normalised input (NumPy in and out); default: ``net``.
        data: the input's ``mean`` and ``std``; default: the network's.
        extra_longest: further working sides, segmented after ``input_longest`` in this
            order (``thresholds.min_area`` is in pixels at ``input_longest`` and scales
            with the square of the side).
    """

    def __init__(
        self,
        net: PillSegNet | None,
        input_longest: int = DEFAULT_INPUT_LONGEST,
        thresholds: InstanceThresholds | None = None,
        card: dict[str, Any] | None = None,
        *,
        runner: Runner | None = None,
        data: dict[str, Any] | None = None,
        extra_longest: tuple[int, ...] = (),
    ):
        if net is None and (runner is None or data is None):
            raise ValueError("a segmenter without its network needs a runner and mean/std")
        sides = working_sides(input_longest, extra_longest)
        self.net = net.eval() if net is not None else None
        self.input_longest = sides[0]
        self.extra_longest = sides[1:]
        self.thresholds = thresholds or InstanceThresholds()
        data = data or net.data_config()
        self.mean = np.asarray(data["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(data["std"], dtype=np.float32).reshape(1, 3, 1, 1)
        self.card = card or {}
        self.runner: Runner = runner or self._torch_forward

    def _torch_forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.net(torch.from_numpy(x)).numpy()

    def _require_net(self, what: str) -> PillSegNet:
        if self.net is None:
            raise ArtifactError(f"{what} needs the segmenter's PyTorch network; this one was "
                                "loaded to run ONNX only (load it with backend='torch')")
        return self.net

    # -- artifact ---------------------------------------------------------------------------

    def card_dict(
        self, metrics: dict[str, Any] | None = None, training: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The card's content except the weights record."""
        from .segnet import OUTPUTS

        net = self._require_net("writing a card")
        return {
            "format": CARD_FORMAT,
            "kind": "pill-segmenter",
            "config": net.config.to_dict(),
            "outputs": list(OUTPUTS),
            "preprocessing": {
                "input_longest": self.input_longest,
                **({"extra_longest": list(self.extra_longest)} if self.extra_longest else {}),
                "multiple": MULTIPLE,
                "interpolation": "bilinear",
                **net.data_config(),
            },
            "thresholds": self.thresholds.to_dict(),
            "metrics": metrics if metrics is not None else self.card.get("metrics", {}),
            "training": training if training is not None else self.card.get("training", {}),
            "parameters": sum(p.numel() for p in net.parameters()),
            "versions": software_versions(),
        }

    def save(
        self,
        directory: str | Path,
        metrics: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``model.safetensors`` and ``card.json`` atomically into ``directory``."""
        from safetensors.torch import save_file

        net = self._require_net("saving")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        weights = directory / WEIGHTS_NAME
        atomic_write(weights, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        card = self.card_dict(metrics, training)
        card["weights"] = {"file": WEIGHTS_NAME, "sha256": sha256_file(weights), "dtype": "float32"}
        atomic_write_json(directory / CARD_NAME, card)
        self.card = card
        return directory

    @classmethod
    def load(cls, directory: str | Path, backend: str = "torch", threads: int | None = None
             ) -> Segmenter:
        """Rebuild a segmenter from its directory (CPU, eval mode).

        Args:
            directory: holds ``card.json`` and ``model.safetensors``.
            backend: ``torch``, or ``onnx`` to run the network through onnxruntime from the
                directory's ``model.onnx`` (written by ``rxvision segmenter export``; about
                3x faster on a CPU, same output within 1e-5). ``onnx`` reads neither the
                weights nor torch: the segmenter can run but not be saved or trained.
            threads: onnx: intra-op threads of the session (None: as many as torch uses
                when it is loaded, else onnxruntime's default).

        Raises:
            ArtifactError: missing or invalid card, corrupt, replaced or pickled weights,
                weights that do not fit the card's network, or (onnx) no checked export.
        """
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        directory = Path(directory)
        card = read_segmenter_card(directory)
        try:
            thresholds = InstanceThresholds.from_dict(card["thresholds"])
            longest, *rest = working_sides(card["preprocessing"]["input_longest"],
                                           card["preprocessing"].get("extra_longest", []))
            extra = tuple(rest)
            data = {k: [float(v) for v in card["preprocessing"][k]] for k in ("mean", "std")}
            if any(len(v) != 3 for v in data.values()):
                raise ValueError("mean and std need 3 values each")
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{directory}: segmenter card is invalid: {exc!r}") from exc
        if backend == "onnx":
            from .segmenter_onnx import onnx_runner

            return cls(None, longest, thresholds, card,
                       runner=onnx_runner(directory, card, threads), data=data,
                       extra_longest=extra)
        from .segnet import PillSegNet, SegNetConfig

        try:
            config = SegNetConfig.from_dict({**card["config"], "pretrained": "none"})
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{directory}: segmenter card is invalid: {exc!r}") from exc
        weights = card.get("weights", {})
        state = load_state_dict_safely(
            directory / weights.get("file", WEIGHTS_NAME), weights.get("sha256")
        )
        net = PillSegNet(config)
        own = net.state_dict()
        if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
            missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            raise ArtifactError(
                f"{directory}: weights do not fit the card's network "
                f"(missing {missing[:3]}, unexpected {extra[:3]})"
            )
        net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
        net.config.pretrained = card["config"].get("pretrained", "none")
        return cls(net, longest, thresholds, card, extra_longest=extra)

    # -- inference --------------------------------------------------------------------------

    def prepare(self, image: Image.Image, longest: int | None = None) -> np.ndarray:
        """The photo as the network's input (1, 3, h, w), normalised, at working side
        ``longest`` (default ``input_longest``)."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"find() takes a PIL image, got {type(image).__name__}")
        image = image.convert("RGB")
        size = working_size(image.size, longest or self.input_longest)
        if image.size != size:
            factor = min(image.size[0] // size[0], image.size[1] // size[1])
            if factor >= 2:  # box-reduce a large photo first: much faster, no aliasing
                image = image.reduce(factor)
            image = image.resize(size, Image.Resampling.BILINEAR)
        return self.normalize(np.asarray(image).transpose(2, 0, 1)[None])

    def normalize(self, images: Any) -> Any:
        """uint8 images (B, 3, h, w) -> the network's normalised float32 input: a NumPy
        array for an array, a torch tensor for a tensor (training)."""
        if isinstance(images, np.ndarray):
            return np.ascontiguousarray(
                (images.astype(np.float32) / np.float32(255) - self.mean) / self.std)
        import torch  # a torch batch: torch is loaded already

        mean, std = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        return (images.float() / 255 - mean.to(images.device)) / std.to(images.device)

    def probabilities(self, image: Image.Image, longest: int | None = None) -> np.ndarray:
        """Foreground and core probabilities (2, h, w) at working side ``longest``
        (default ``input_longest``)."""
        logits = np.asarray(self.runner(self.prepare(image, longest)), dtype=np.float32)[0]
        return 1.0 / (1.0 + np.exp(-logits))

    def find(self, image: Image.Image) -> list[PillRegion]:
        """Every pill in ``image``, best score first; an empty list when there is none.

        Pills found at ``input_longest`` first; each extra working side adds the pills
        whose boxes overlap none already found by ``EXTRA_SIDE_OVERLAP`` IoU or more.
        """
        regions = regions_from_maps(self.probabilities(image), image.size, self.thresholds)
        for side in self.extra_longest:
            scale = (side / self.input_longest) ** 2
            thresholds = replace(
                self.thresholds, min_area=max(1, round(self.thresholds.min_area * scale)))
            found = regions_from_maps(self.probabilities(image, side), image.size, thresholds)
            regions += [replace(r, extra_side=True) for r in found
                        if all(box_iou(r.box, q.box) < EXTRA_SIDE_OVERLAP for q in regions)]
        return sorted(regions, key=lambda r: -r.score)


def regions_from_maps(
    maps: np.ndarray, size: tuple[int, int], thresholds: InstanceThresholds
) -> list[PillRegion]:
    """Pills from the probability maps (2, h, w) of a photo of ``size`` (width, height)."""
    foreground, core = maps
    labels, scores = split_instances(foreground, core, thresholds)
    h, w = labels.shape
    sx, sy = size[0] / w, size[1] / h
    regions = []
    for index, score in enumerate(scores, start=1):
        ys, xs = np.nonzero(labels == index)
        # One working pixel of margin: the soft edge decides where the mask ends.
        wx0, wy0 = max(0, xs.min() - 1), max(0, ys.min() - 1)
        wx1, wy1 = min(w, xs.max() + 2), min(h, ys.max() + 2)
        mine = labels[wy0:wy1, wx0:wx1]
        soft = np.where((mine == index) | (mine == 0), foreground[wy0:wy1, wx0:wx1], 0.0)
        # Photo pixels whose area lies within the working crop (PIL needs the box inside).
        x0, y0 = math.ceil(wx0 * sx), math.ceil(wy0 * sy)
        x1, y1 = min(size[0], math.floor(wx1 * sx)), min(size[1], math.floor(wy1 * sy))
        if x1 <= x0 or y1 <= y0:
            continue
        # Resample the crop so that working pixel centres land on photo pixel centres
        # (clamped: rounding may put an edge a hair outside the crop, which PIL refuses).
        cw, ch = wx1 - wx0, wy1 - wy0
        up = Image.fromarray(soft.astype(np.float32), "F").resize(
            (x1 - x0, y1 - y0),
            Image.Resampling.BILINEAR,
            box=(
                max(0.0, x0 / sx - wx0),
                max(0.0, y0 / sy - wy0),
                min(float(cw), x1 / sx - wx0),
                min(float(ch), y1 / sy - wy0),
            ),
        )
        mask = np.asarray(up) > thresholds.foreground
        if not mask.any():
            continue
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        mask = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
        regions.append(PillRegion(box, mask, score))
    return sorted(regions, key=lambda r: r.score, reverse=True)


def pill_likeness(region: PillRegion) -> float:
    """How much a region looks like "the pill" of a photo: the finder's score weighted by
    the square root of its area, so that a whole pill wins over a small speck the finder is
    a little surer of."""
    return region.score * float(region.mask.sum()) ** 0.5


def most_pill_like_regions(regions: list[PillRegion], k: int) -> list[PillRegion]:
    """The ``k`` regions most like "the pill" of a photo that shows one, most first (see
    :func:`most_pill_like`); fewer when fewer were found."""
    main = [r for r in regions if not r.extra_side] or regions
    return sorted(main, key=pill_likeness, reverse=True)[:k]


def most_pill_like(regions: list[PillRegion]) -> PillRegion:
    """The region to take as "the pill" of a photo that shows one, by the finder alone
    (:func:`pill_likeness`). Regions of the card's main working side come first: one found
    only at an extra side is taken when the main side found none (extra sides add the pills
    the main side misses in crowds and at other scales, and more false regions with them).
    Evaluation and front/back pairs then let the classifier choose between the first two
    (:func:`rxvision.identify.pipeline.pick_the_pill`).

    Raises:
        ValueError: ``regions`` is empty.
    """
    if not regions:
        raise ValueError("no region to choose from")
    return most_pill_like_regions(regions, 1)[0]


def attach_segmenter(model_dir: str | Path, segmenter: str | Path) -> Path:
    """Copy a pill finder into a crop model's folder as its own ``segmenter/`` (atomically;
    replacing one already there made of the same files), so the model predicts, serves,
    evaluates and exports as a whole."""
    source, target = Path(segmenter), Path(model_dir) / SEGMENTER_DIR
    if not (source / CARD_NAME).is_file():
        raise FileNotFoundError(f"{source}: no pill finder there (no {CARD_NAME})")
    with atomic_directory(target, replaceable={p.name for p in source.iterdir()}) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
    return target


def carry_segmenter(source_model: str | Path, target_model: str | Path) -> Path | None:
    """Give a model derived from ``source_model`` (enrolled, re-headed) the source's pill
    finder, when it has one; returns where it was copied, or None."""
    own = Path(source_model) / SEGMENTER_DIR
    return attach_segmenter(target_model, own) if own.is_dir() else None


def read_segmenter_card(directory: str | Path) -> dict[str, Any]:
    """The card of a segmenter directory, checked for its format."""
    path, card = read_card_json(directory, "segmenter", "a segmenter")
    if card.get("format") != CARD_FORMAT:
        raise ArtifactError(
            f"{path}: format {card.get('format')!r} is not a segmenter card "
            f"({CARD_FORMAT}); a classifier directory was given?"
        )
    return card
