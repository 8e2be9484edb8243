"""Run an exported ONNX model with onnxruntime, called like a PyTorch forward.

NumPy in, NumPy out; a torch tensor in, a torch tensor out. This module never imports
torch itself, so serving an export does not load it.

Example:
    >>> model = OnnxModel.from_directory("exports/x")  # model.onnx + card.json
    >>> logits = model(np.zeros((4, 3, 224, 224), np.float32))  # (4, classes) array
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..artifact import ArtifactError, read_card, sha256_file

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """All graph optimisations on; ``threads`` intra-op threads (None: ORT's default)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1  # one image graph, no parallel branches worth a pool
    if threads:
        so.intra_op_num_threads = int(threads)
    return so


class OnnxModel:
    """An onnxruntime CPU session over a (B, 3, H, W) float -> (B, classes) model.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None: onnxruntime's default, one per physical core).
        card: the card of the exported directory, when loaded through :meth:`from_directory`.
    """

    def __init__(self, path: str | Path, threads: int | None = None,
                 card: dict[str, Any] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"ONNX model not found: {self.path}")
        self.session = ort.InferenceSession(
            str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape  # ['batch', 3, H, W]
        self.input_shape = tuple(d if isinstance(d, int) else None for d in shape)
        self.card = card

    @classmethod
    def from_directory(cls, directory: str | Path, threads: int | None = None) -> OnnxModel:
        """Load an exported directory, refusing a model file that does not match its card."""
        directory = Path(directory)
        card = read_card(directory)
        info = card.get("export")
        if not info or info.get("format") != "onnx":
            raise ArtifactError(
                f"{directory} is not an ONNX export (its card has no 'export' section); "
                f"create one with: rxvision export --model {directory} --format onnx --out DIR"
            )
        path = directory / info.get("file", "model.onnx")
        if not path.is_file():
            raise ArtifactError(f"{directory}: {path.name} is missing")
        if info.get("sha256") and sha256_file(path) != info["sha256"]:
            raise ArtifactError(f"{path}: SHA-256 does not match the card; the file is "
                                "corrupt or was replaced")
        return cls(path, threads=threads, card=card)

    def _check(self, x: np.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        for got, want in zip(x.shape[1:], self.input_shape[1:], strict=True):
            if want is not None and got != want:
                expected = ", ".join(str(d) for d in self.input_shape[1:])
                raise ValueError(f"expected input of shape (B, {expected}), got {tuple(x.shape)}")

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        """float32 array (B, 3, H, W) -> logits array (B, classes)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._check(x)
        return self.session.run(None, {self.input_name: x})[0]

    def __call__(self, x: Any) -> Any:
        """Batch (B, 3, H, W) -> float32 logits (B, classes), like a torch forward: a NumPy
        array for a NumPy batch, a torch tensor for a torch batch."""
        if isinstance(x, np.ndarray):
            return self.run_numpy(x)
        import torch  # a torch batch: torch is loaded already

        out = self.run_numpy(x.detach().to("cpu", torch.float32).contiguous().numpy())
        return torch.from_numpy(out)
