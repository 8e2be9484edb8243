"""Identification: the Identifier, fusion, open set, calibrated abstention, explanations."""

# Backends resolve on first use: importing the Identifier loads neither torch nor
# onnxruntime (the ONNX serving path never imports torch).

import importlib
from typing import Any

from .bundled import default_model_path, resolve_model_path
from .identifier import Candidate, Identification, Identifier, IdentifierError

_LAZY = {"BACKENDS": ".backends", "OnnxBackend": ".backends", "TorchBackend": ".backends",
         "load_backend": ".backends", "OnnxModel": ".onnx_backend"}

__all__ = [
    "BACKENDS",
    "Candidate",
    "Identification",
    "Identifier",
    "IdentifierError",
    "OnnxBackend",
    "OnnxModel",
    "TorchBackend",
    "default_model_path",
    "load_backend",
    "resolve_model_path",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
