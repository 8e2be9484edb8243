"""RxVisionModel: timm backbone -> feature pyramid -> self-attention -> classification head.

Data flow for a 224x224 image with the spec's ResNet50 (see docs/architecture.md):

    image (B, 3, 224, 224)
    backbone features_only, out_indices (2, 3, 4):
        C3 (B, 512, 28, 28), C4 (B, 1024, 14, 14), C5 (B, 2048, 7, 7)
    FPN (256 ch): P3 (B, 256, 28, 28), P4 (B, 256, 14, 14), P5 (B, 256, 7, 7)
    tokens = P5 flattened (B, 49, 256) -> LayerNorm -> 8-head self-attention, residual
    head: global pool of [P3, P4, attended P5], averaged (B, 256) -> dropout
          -> Linear 512 + BN + ReLU -> dropout (pre-logits, B, 512) -> Linear (B, classes)
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import Tensor, nn

from ..config import ArchitectureConfig, Config, ConfigError
from .layers import (
    ClassificationHead,
    FeaturePyramidNetwork,
    MultiHeadSelfAttention,
    make_classifier,
)
from .pretrained import create_backbone

# Stages at or below this stride are frozen by ``freeze_layers``: stem and first stage
# hold generic edge/colour filters that one photo per class cannot improve.
FREEZE_MAX_REDUCTION = 4


class RxVisionModel(nn.Module):
    """The RxVision classifier with attention and FPN (shared/spec/model-architecture.md).

    Example:
        >>> model = RxVisionModel(num_classes=10, backbone="resnet18", pretrained=False)
        >>> logits, attn = model(torch.randn(2, 3, 128, 128), return_attention=True)
        >>> logits.shape, attn.shape
        (torch.Size([2, 10]), torch.Size([2, 8, 16, 16]))
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        pretrained: bool | str = True,
        dropout_rate: float = 0.3,
        out_indices: tuple[int, ...] | list[int] = (2, 3, 4),
        fpn_channels: int = 256,
        use_batch_norm: bool = True,
        num_heads: int = 8,
        attention_dropout: float = 0.1,
        global_pool: str = "avg",
        hidden_dim: int = 512,
        freeze_layers: bool = False,
        classifier_type: str = "linear",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = create_backbone(backbone, pretrained, list(out_indices))
        self.feature_info = self.backbone.feature_info
        self.feature_dims: list[int] = self.feature_info.channels()
        self.fpn = FeaturePyramidNetwork(self.feature_dims, fpn_channels, use_bn=use_batch_norm)
        self.attention_norm = nn.LayerNorm(fpn_channels)
        self.attention = MultiHeadSelfAttention(fpn_channels, num_heads, attention_dropout)
        self.classifier = ClassificationHead(
            fpn_channels, num_classes, dropout_rate, global_pool, hidden_dim,
            classifier_type=classifier_type,
        )
        self.num_features = hidden_dim
        self.frozen_parameters: list[str] = self._freeze_early_stages() if freeze_layers else []
        self.train()  # put frozen BatchNorms in eval mode from the start, not only after .train()

    @classmethod
    def from_config(cls, arch: ArchitectureConfig | Config, num_classes: int) -> RxVisionModel:
        """Build from the ``architecture`` section of a config."""
        a = arch.architecture if isinstance(arch, Config) else arch
        return cls(
            num_classes=num_classes,
            backbone=a.backbone.name,
            pretrained=a.backbone.pretrained,
            dropout_rate=a.classifier.dropout_rate,
            out_indices=a.backbone.output_indices,
            fpn_channels=a.fpn.out_channels,
            use_batch_norm=a.fpn.use_batch_norm,
            num_heads=a.attention.num_heads,
            attention_dropout=a.attention.dropout,
            global_pool=a.classifier.global_pool,
            hidden_dim=a.classifier.hidden_dim,
            freeze_layers=a.backbone.freeze_layers,
            classifier_type=a.classifier.type,
        )

    # --- freezing -------------------------------------------------------------------------
    def _freeze_early_stages(self) -> list[str]:
        """Freeze the stem and every stage with stride <= FREEZE_MAX_REDUCTION."""
        info = self.feature_info.info
        later = [i["module"] for i in info if i["reduction"] > FREEZE_MAX_REDUCTION]
        if not later:
            return []
        boundary = later[0]  # first module whose stride exceeds the limit, e.g. "layer2"
        # timm's FeatureListNet flattens the first level of Sequentials ("stages.1" becomes
        # "stages_1"), so match either spelling; modules are visited in registration order.
        names = {boundary, boundary.replace(".", "_", 1)}
        frozen = []
        for mod_name, module in self.backbone.named_modules():
            if mod_name in names:
                return frozen
            for p_name, param in module.named_parameters(recurse=False):
                param.requires_grad_(False)
                frozen.append(f"backbone.{mod_name}.{p_name}" if mod_name else f"backbone.{p_name}")
        raise ConfigError(
            f"freeze_layers: stage {boundary!r} not found in backbone "
            f"{type(self.backbone).__name__}; set architecture.backbone.freeze_layers=false"
        )

    def train(self, mode: bool = True) -> RxVisionModel:
        super().train(mode)
        if mode and self.frozen_parameters:
            # Frozen stages keep their ImageNet BatchNorm statistics.
            for module in self.backbone.modules():
                is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
                if is_bn and module.weight is not None and not module.weight.requires_grad:
                    module.eval()
        return self

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"num_params": total, "trainable_params": trainable}

    # --- forward (timm vocabulary) -------------------------------------------------------
    def forward_features(
        self, x: Tensor, return_attention: bool = False
    ) -> list[Tensor] | tuple[list[Tensor], Tensor]:
        """Pyramid maps with the coarsest level refined by self-attention.

        Returns ``[P3, P4, P5']`` (finest first, each (B, C, Hi, Wi)) and, when asked,
        the attention map (B, heads, N, N) with N = H5 * W5.
        """
        pyramid = self.fpn(self.backbone(x))
        top = pyramid[-1]  # (B, C, h, w)
        B, C, h, w = top.shape
        tokens = top.flatten(2).transpose(1, 2)  # (B, N, C), N = h * w
        out = self.attention(self.attention_norm(tokens), return_attention=return_attention)
        attended, attn = out if return_attention else (out, None)
        tokens = tokens + attended  # residual keeps pretrained features at initialisation
        top = tokens.transpose(1, 2).reshape(B, C, h, w)  # (B, C, h, w)
        maps = [*pyramid[:-1], top]
        return (maps, attn) if return_attention else maps

    def forward_head(self, maps: list[Tensor], pre_logits: bool = False) -> Tensor:
        """Logits (B, classes), or the pre-logit embedding (B, hidden_dim)."""
        return self.classifier(maps, pre_logits=pre_logits)

    def forward(self, x: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if return_attention:
            maps, attn = self.forward_features(x, return_attention=True)
            return self.forward_head(maps), attn
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier.classifier = make_classifier(
            self.classifier.classifier_type, self.num_features, num_classes
        )

    def set_fused_attention(self, fused: bool) -> None:
        """Use (True) or avoid (False) the fused SDPA kernel, e.g. for ONNX export."""
        self.attention.fused = fused

    def data_config(self, input_size: list[int] | tuple[int, int]) -> dict[str, Any]:
        """Preprocessing derived from the backbone's pretrained config (timm)."""
        cfg = timm.data.resolve_data_config(model=self.backbone)
        return {
            "input_size": [int(input_size[0]), int(input_size[1])],
            "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]],
            "interpolation": str(cfg.get("interpolation", "bilinear")),
        }

    @torch.no_grad()
    def describe(self, input_size: tuple[int, int] = (224, 224)) -> dict[str, Any]:
        """Shapes and counts for one input of ``input_size`` (runs one eval forward pass)."""
        was_training = self.training
        self.eval()
        x = torch.zeros(1, 3, *input_size)
        feats = self.backbone(x)
        logits, attn = self(x, return_attention=True)
        self.train(was_training)
        return {
            **self.parameter_counts(),
            "frozen_parameters": len(self.frozen_parameters),
            "feature_channels": self.feature_dims,
            "feature_strides": self.feature_info.reduction(),
            "feature_shapes": [list(f.shape) for f in feats],
            "num_tokens": int(attn.shape[-1]),
            "output_shape": list(logits.shape),
            "attention_shape": list(attn.shape),
            "embedding_dim": self.num_features,
        }


def build_model(cfg: Config, num_classes: int | None = None) -> RxVisionModel:
    """Build the model a config describes (``num_classes`` defaults to the config's)."""
    return RxVisionModel.from_config(cfg, num_classes or cfg.training.num_classes)


__all__ = ["RxVisionModel", "build_model", "timm"]
