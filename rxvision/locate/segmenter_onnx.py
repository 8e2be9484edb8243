"""Export the pill segmenter's network to ONNX and check it against PyTorch.

The graph takes the normalised image ``image`` (1, 3, H, W), H and W any multiples of 16,
and returns ``logits`` (1, 2, H, W): foreground and core, before the sigmoid. Resizing,
normalisation and the split into pills stay in Python (:class:`~rxvision.locate.Segmenter`),
so an ONNX runtime only replaces :meth:`Segmenter.net`. The exporter is the TorchScript one
(``dynamo=False``): it keeps the bilinear resizes to the feature maps' sizes symbolic, so one
file serves every working size.

Example:
    >>> report = export_onnx(Segmenter.load("models/rxvision-segmenter"), "seg.onnx")
    >>> report["parity_max_abs"]        # largest |logit| difference on a random photo
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io_utils import atomic_write
from .segmenter import Segmenter

INPUT_NAME, OUTPUT_NAME = "image", "logits"
PARITY_TOLERANCE = 1e-3  # largest |logit| difference accepted between ONNX and PyTorch


class SegmenterExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch network."""


def export_onnx(
    seg: Segmenter, path: str | Path, opset: int = 17, check_size: tuple[int, int] = (240, 320)
) -> dict[str, Any]:
    """Write ``seg.net`` as ONNX to ``path`` (atomically) and compare it with PyTorch.

    Returns:
        ``{"file", "opset", "parity_max_abs", "check_size"}``.

    Raises:
        SegmenterExportError: the ONNX outputs differ by more than
            :data:`PARITY_TOLERANCE` on a random input of ``check_size`` (H, W).
    """
    import onnx

    path = Path(path)
    net = seg.net.eval()
    example = torch.randn(1, 3, 160, 224)

    def write(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                net,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {2: "height", 3: "width"},
                    OUTPUT_NAME: {2: "height", 3: "width"},
                },
            )
        onnx.checker.check_model(str(tmp), full_check=True)

    atomic_write(path, write)
    x = torch.randn(1, 3, *check_size, generator=torch.Generator().manual_seed(0))
    difference = parity(seg, path, x)
    if difference > PARITY_TOLERANCE:
        raise SegmenterExportError(
            f"{path}: ONNX logits differ from PyTorch by {difference:.2e}"
            f" (> {PARITY_TOLERANCE}); do not use this file"
        )
    return {
        "file": str(path),
        "opset": opset,
        "parity_max_abs": difference,
        "check_size": list(check_size),
    }


def parity(seg: Segmenter, path: str | Path, x: torch.Tensor) -> float:
    """Largest |logit| difference between the ONNX file and ``seg.net`` on input ``x``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        torch_out = seg.net.eval()(x).numpy()
    return float(np.abs(onnx_out - torch_out).max())
