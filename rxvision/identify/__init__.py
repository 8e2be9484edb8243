"""Identification: the Identifier, fusion, open set, calibrated abstention, explanations."""

from .backends import BACKENDS, OnnxBackend, TorchBackend, load_backend
from .bundled import default_model_path, resolve_model_path
from .identifier import Candidate, Identification, Identifier, IdentifierError
from .onnx_backend import OnnxModel

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
