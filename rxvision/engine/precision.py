"""Mixed precision choice: bf16 autocast where the hardware runs it fast, else fp32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``auto`` into bf16 or fp32 for ``device``; refuse fp16 on CPU."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("training.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
    return precision


@contextlib.contextmanager
def autocast_context(device: torch.device, precision: str) -> Iterator[None]:
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device.type, dtype=dtype):
        yield
