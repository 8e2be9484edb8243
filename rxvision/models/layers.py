"""The spec's building blocks: feature pyramid, multi-head self-attention, classification head.

Each block follows ``shared/spec/model-architecture.md``; the few additions (fused attention,
a list-of-maps head input) are written next to the line that makes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, use_bn: bool) -> nn.Module:
    """Conv + optional BatchNorm + ReLU (the spec's ``ConvBNReLU``), via torchvision."""
    return Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        padding=kernel_size // 2,
        norm_layer=nn.BatchNorm2d if use_bn else None,
        activation_layer=nn.ReLU,
    )


class FeaturePyramidNetwork(nn.Module):
    """Top-down feature pyramid with 1x1 lateral and 3x3 output Conv-BN-ReLU blocks.

    torchvision's ``FeaturePyramidNetwork`` has no BatchNorm/ReLU in its blocks, so this is
    the spec's own version: lateral 1x1 and output 3x3 blocks, nearest upsampling by size.
    """

    def __init__(self, in_channels_list: list[int], out_channels: int, use_bn: bool = True):
        super().__init__()
        self.lateral_convs = nn.ModuleList(
            conv_bn_relu(c, out_channels, 1, use_bn) for c in in_channels_list
        )
        self.output_convs = nn.ModuleList(
            conv_bn_relu(out_channels, out_channels, 3, use_bn) for _ in in_channels_list
        )

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        last_inner = self.lateral_convs[-1](x[-1])  # (B, C, H5, W5)
        results = [self.output_convs[-1](last_inner)]
        for idx in range(len(x) - 2, -1, -1):
            inner_lateral = self.lateral_convs[idx](x[idx])  # (B, C, Hi, Wi)
            top_down = F.interpolate(last_inner, size=inner_lateral.shape[-2:], mode="nearest")
            last_inner = inner_lateral + top_down
            results.insert(0, self.output_convs[idx](last_inner))
        return results  # finest first, each (B, C, Hi, Wi)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over tokens (B, N, C), as in the spec.

    When the attention map is not requested, the fused ``scaled_dot_product_attention``
    kernel computes the same result faster; ``fused=False`` forces the explicit path
    (used for export to runtimes without a fused kernel).
    """

    def __init__(self, in_channels: int, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        if in_channels % num_heads:
            raise ValueError(f"{in_channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = in_channels // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(in_channels, in_channels * 3)
        self.proj = nn.Linear(in_channels, in_channels)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(dropout)
        self.fused = True

    def forward(
        self, x: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        attn = None
        if self.fused and not return_attention:
            p = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, heads, N, N)
            attn = attn.softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        x = self.proj_drop(self.proj(x))
        if return_attention:
            return x, attn
        return x


def _l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows of ``x`` scaled to unit length, like ``F.normalize(x, dim=1)``.

    Written with ReduceSum and a broadcast multiply because onnxruntime's symbolic shape
    inference, which int8 quantisation runs first, cannot follow the ReduceL2 (axes as an
    input) and Expand nodes that ``F.normalize`` exports to.
    """
    return x * torch.rsqrt((x * x).sum(dim=1, keepdim=True) + eps)


class CosineClassifier(nn.Module):
    """Logits ``s · (cos(x, w_c) - offset_c)``: a Linear layer on L2-normalised inputs and rows.

    Normalised classifiers suit one reference photo per class (Qi et al., 2018, "Low-shot
    learning with imprinted weights"): a new class's row is built from its mean embedding,
    and the maximum cosine is an out-of-distribution score. ``s`` (``scale``) is learnt,
    from ``init_scale``. ``offset`` is a buffer, zero for trained rows; enrollment sets it
    for imprinted rows (rxvision.library.enroll) so that they score their own pill's
    photos as highly as trained rows score theirs.
    """

    def __init__(self, in_features: int, num_classes: int, init_scale: float = 16.0):
        super().__init__()
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self.in_features = in_features
        self.out_features = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.register_buffer("offset", torch.zeros(num_classes))
        # Precision of the kept rows at inference. float16 halves the bytes read per call
        # (100,000 rows x 512: 205 -> 102 MB), which bounds a large library's head on CPU;
        # products still accumulate in float32 (logits within ~2e-3 of float32 at scale 20).
        self.inference_dtype = torch.float32

    def cosine(self, x: Tensor) -> Tensor:
        """Cosine similarity (B, num_classes) of each input with each class row (at
        inference from the kept rows of :meth:`_folded`, not renormalised per call)."""
        weight, _ = self._folded()
        cos = F.linear(_l2_normalize(x).to(weight.dtype), weight).to(x.dtype)
        return cos / self.log_scale.exp().to(cos.dtype)

    def forward(self, x: Tensor) -> Tensor:
        # s·(cos(x, w) - o) = x̂ · (s ŵ) - s·o: the weight and bias depend on parameters
        # only, so an ONNX export folds each into one constant, and inference reuses them.
        weight, bias = self._folded()
        if weight.dtype != self.weight.dtype:  # half-precision rows kept for inference
            return F.linear(_l2_normalize(x).to(weight.dtype), weight).to(x.dtype) + bias
        return F.linear(_l2_normalize(x), weight, bias)

    def _folded(self) -> tuple[Tensor, Tensor]:
        """``s ŵ`` and ``-s·o``. Without gradients (inference) they are kept until the
        parameters change: renormalising every row per call cost more than the product itself
        (100,000 rows: benchmarks/reference_topk.py)."""
        scale = self.log_scale.exp()
        if (torch.is_grad_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
                or self.weight.is_inference()):  # inference tensors keep no version count
            return _l2_normalize(self.weight) * scale, -self.offset * scale
        key = (self.weight._version, self.log_scale._version, self.offset._version,
               self.weight.data_ptr(), self.weight.dtype, self.weight.device,
               self.offset.data_ptr(), self.inference_dtype)
        cached = self.__dict__.get("_folded_cache")
        if cached is None or cached[0] != key:
            rows = _l2_normalize(self.weight) * scale
            if rows.dtype == torch.float32:  # other weights (bf16, fp16) stay as they are
                rows = rows.to(self.inference_dtype)
            cached = (key, rows, -self.offset * scale)
            self.__dict__["_folded_cache"] = cached  # not a buffer: never saved or exported
        return cached[1], cached[2]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def make_classifier(kind: str, in_features: int, num_classes: int) -> nn.Module:
    """The final layer: ``"linear"`` (the spec's nn.Linear) or ``"cosine"``."""
    if num_classes <= 0:
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_features, num_classes)
    if kind == "cosine":
        return CosineClassifier(in_features, num_classes)
    raise ValueError(f"classifier type must be 'linear' or 'cosine', got {kind!r}")


class ClassificationHead(nn.Module):
    """Global pool, dropout, Linear(C, hidden) + BN + ReLU, dropout, Linear(hidden, classes).

    Accepts one map or a list of maps; a list is pooled map by map and averaged, which is
    how the attention path and the pyramid path are combined (docs/architecture.md).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dropout_rate: float = 0.3,
        global_pool: str = "avg",
        hidden_dim: int = 512,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm1d,
        classifier_type: str = "linear",
    ):
        super().__init__()
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")
        self.global_pool = (
            nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        )
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(p=dropout_rate)
        self.fc = nn.Sequential(
            nn.Linear(in_channels, hidden_dim),
            norm_layer(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout_rate),
        )
        self.classifier = make_classifier(classifier_type, hidden_dim, num_classes)
        self.classifier_type = classifier_type
        self.num_features = hidden_dim

    def pool(self, x: Tensor | list[Tensor]) -> Tensor:
        maps = x if isinstance(x, list | tuple) else [x]
        pooled = [self.flatten(self.global_pool(m)) for m in maps]  # each (B, C)
        return torch.stack(pooled, 0).mean(0)  # (B, C)

    def forward(self, x: Tensor | list[Tensor], pre_logits: bool = False) -> Tensor:
        x = self.fc(self.dropout(self.pool(x)))  # (B, hidden)
        return x if pre_logits else self.classifier(x)  # (B, num_classes)
