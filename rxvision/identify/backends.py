"""One interface over a PyTorch artifact and an ONNX export, for evaluate/predict/serve.

Both backends read labels, preprocessing and calibration from the card, so switching
backend never changes what the pixels look like.

The ONNX backend takes and returns NumPy arrays (torch tensors as well) and never imports
torch; the torch backend imports it when it loads.

Example:
    >>> model = load_backend("exports/x", backend="onnx")
    >>> x = torch.stack([EvalTransform(model.preprocessing)(img)])
    >>> probs = (model(x) / model.temperature).softmax(1)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..artifact import Artifact, ArtifactError, load_artifact, read_card

if TYPE_CHECKING:
    import torch

    from .onnx_backend import OnnxModel

BACKENDS = ("torch", "onnx")


class Backend(Protocol):
    """What evaluate, predict and serve need from a model."""

    name: str
    labels: list[str]
    label_metadata: list[dict[str, str]]
    preprocessing: dict[str, Any]
    card: dict[str, Any]

    @property
    def temperature(self) -> float: ...

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


class _CardFields:
    """Labels, preprocessing and temperature read from a card."""

    card: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return list(self.card["labels"])

    @property
    def label_metadata(self) -> list[dict[str, str]]:
        return self.card.get("label_metadata") or [{} for _ in self.labels]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.card["preprocessing"]

    @property
    def temperature(self) -> float:
        return float(self.card.get("calibration", {}).get("temperature", 1.0))


class TorchBackend(_CardFields):
    """A PyTorch artifact in eval mode; ``bf16`` opts into bfloat16 autocast on CPU."""

    name = "torch"

    def __init__(self, artifact: Artifact, bf16: bool = False):
        self.artifact = artifact
        self.model = artifact.model.eval()
        self.card = artifact.card
        self.path = artifact.path
        self.bf16 = bf16

    def _autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch (B, 3, H, W) -> float32 logits (B, classes)."""
        import torch

        with torch.inference_mode(), self._autocast():
            return self.model(torch.as_tensor(batch).float()).float()

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch (B, 3, H, W) -> float32 pre-logit embeddings (B, D)."""
        import torch

        with torch.inference_mode(), self._autocast():
            maps = self.model.forward_features(torch.as_tensor(batch).float())
            return self.model.forward_head(maps, pre_logits=True).float()

    def logits_and_embeddings(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: batch (B, 3, H, W) -> float32 logits (B, classes) and embeddings (B, D).

        The logits are the classifier applied to the returned embeddings, i.e. exactly
        ``model(batch)``; open-set scores that need both then cost one forward pass.
        """
        import torch

        with torch.inference_mode(), self._autocast():
            maps = self.model.forward_features(torch.as_tensor(batch).float())
            emb = self.model.forward_head(maps, pre_logits=True)  # (B, D)
            logits = self.model.get_classifier()(emb)  # (B, classes)
            return logits.float(), emb.float()


class OnnxBackend(_CardFields):
    """An exported ``model.onnx`` + ``card.json`` directory run by onnxruntime."""

    name = "onnx"

    def __init__(self, model: OnnxModel):
        if model.card is None:
            raise ArtifactError(f"{model.path}: an ONNX backend needs its exported card")
        self.model = model
        self.card = model.card
        self.path = model.path.parent

    @property
    def int8(self) -> bool:
        return bool(self.card["export"].get("int8"))

    def __call__(self, batch: Any) -> Any:
        """Preprocessed batch (B, 3, H, W) -> float32 logits (B, classes), NumPy for NumPy."""
        return self.model(batch)


def load_backend(
    path: str | Path,
    backend: str = "torch",
    *,
    threads: int | None = None,
    bf16: bool = False,
) -> TorchBackend | OnnxBackend:
    """Load a model directory for inference.

    Args:
        path: a PyTorch artifact (``backend="torch"``) or an ONNX export (``"onnx"``).
        backend: ``"torch"`` or ``"onnx"``.
        threads: intra-op threads for onnxruntime (None: its default); ignored by torch.
        bf16: bfloat16 autocast for the torch backend (opt-in; fp32 otherwise).
    """
    if backend not in BACKENDS:
        raise ArtifactError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(path)
    if backend == "onnx":
        if bf16:
            raise ArtifactError("bf16 applies to the torch backend only")
        from .onnx_backend import OnnxModel

        return OnnxBackend(OnnxModel.from_directory(path, threads=threads))
    if "export" in read_card(path):
        raise ArtifactError(f"{path} is an ONNX export; load it with backend='onnx' "
                            "(--backend onnx), or point to the PyTorch artifact it came from")
    return TorchBackend(load_artifact(path), bf16=bf16)
