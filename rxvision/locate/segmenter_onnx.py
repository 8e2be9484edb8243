"""Export the pill segmenter's network to ONNX, check it against PyTorch, and run it.

The graph takes the normalised image ``image`` (1, 3, H, W), H and W any multiples of 16,
and returns ``logits`` (1, 2, H, W): foreground and core, before the sigmoid. Resizing,
normalisation and the split into pills stay in Python (:class:`~rxvision.locate.Segmenter`),
so ONNX only replaces the network: ``Segmenter.load(path, backend="onnx")`` runs the
``model.onnx`` that :func:`export_onnx` recorded in the segmenter's card (file, SHA-256,
parity) through onnxruntime, about 3x faster than PyTorch eager on this CPU. The exporter
is the TorchScript one (``dynamo=False``): the dynamo exporter gives the same graph and
parity but took 90 s instead of 10 s here, too slow for the test suite.

Example:
    >>> seg = Segmenter.load("models/rxvision-segmenter")
    >>> export_onnx(seg, "models/rxvision-segmenter/model.onnx",
    ...             record_in="models/rxvision-segmenter")["parity_max_abs"]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..artifact import ArtifactError, sha256_file
from ..io_utils import atomic_write, atomic_write_json
from .segmenter import CARD_NAME, ONNX_NAME, Segmenter, read_segmenter_card

if TYPE_CHECKING:
    import torch

INPUT_NAME, OUTPUT_NAME = "image", "logits"
PARITY_TOLERANCE = 1e-3  # largest |logit| difference accepted between ONNX and PyTorch


class SegmenterExportError(RuntimeError):
    """The exported graph does not reproduce the PyTorch network."""


def export_onnx(
    seg: Segmenter,
    path: str | Path,
    opset: int = 17,
    check_size: tuple[int, int] = (240, 320),
    record_in: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``seg.net`` as ONNX to ``path`` (atomically) and compare it with PyTorch.

    Args:
        record_in: a segmenter directory whose card gets an ``onnx`` entry (file name,
            SHA-256, opset, parity); ``path`` must lie in that directory.

    Returns:
        ``{"file", "opset", "parity_max_abs", "check_size"}``.

    Raises:
        SegmenterExportError: the ONNX outputs differ by more than
            :data:`PARITY_TOLERANCE` on a random input of ``check_size`` (H, W).
    """
    import onnx
    import torch

    path = Path(path)
    if record_in is not None and path.resolve().parent != Path(record_in).resolve():
        raise ValueError(f"{path} must lie in {record_in} to be recorded in its card")
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
    report = {
        "file": str(path),
        "opset": opset,
        "parity_max_abs": difference,
        "check_size": list(check_size),
    }
    if record_in is not None:
        card = read_segmenter_card(record_in)
        card["onnx"] = {
            **report,
            "file": path.name,
            "sha256": sha256_file(path),
            "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}",
        }
        atomic_write_json(Path(record_in) / CARD_NAME, card)
    return report


def _session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is None:  # as many threads as torch uses (when it is loaded): on a shared
        torch = sys.modules.get("torch")  # CPU more threads wait on each other
        threads = torch.get_num_threads() if torch is not None else 0
    options.intra_op_num_threads = threads  # 0: onnxruntime's default
    options.inter_op_num_threads = 1
    # One pass per photo: threads that busy-wait for a next pass would only take the CPU
    # from the decoding, reading and classifying around it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(seg: Segmenter, path: str | Path, x: torch.Tensor) -> float:
    """Largest |logit| difference between the ONNX file and ``seg.net`` on input ``x``."""
    import torch

    (onnx_out,) = _session(Path(path)).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        torch_out = seg.net.eval()(x).numpy()
    return float(np.abs(onnx_out - torch_out).max())


def onnx_runner(directory: Path, card: dict[str, Any], threads: int | None = None
                ) -> Callable[[np.ndarray], np.ndarray]:
    """The network as an onnxruntime session on the card's recorded, hash-checked export:
    normalised input (1, 3, h, w) -> logits (1, 2, h, w), NumPy in and out.

    Raises:
        ArtifactError: the card records no export, or the file is missing or was replaced.
    """
    entry = card.get("onnx")
    if not entry:
        raise ArtifactError(
            f"{directory}: no ONNX export recorded in the card; run "
            f"`rxvision segmenter export --segmenter {directory}` first"
        )
    path = Path(directory) / entry.get("file", ONNX_NAME)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; run `rxvision segmenter export` again")
    if sha256_file(path) != entry.get("sha256"):
        raise ArtifactError(
            f"{path}: SHA-256 does not match the card; the file is corrupt "
            "or was replaced; run `rxvision segmenter export` again"
        )
    session = _session(path, threads)

    def run(x: np.ndarray) -> np.ndarray:
        (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x)})
        return logits

    return run
