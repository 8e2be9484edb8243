"""Inference: identification, open-set scores, fusion, explanations, enrollment, backends."""

from .backends import BACKENDS, OnnxBackend, TorchBackend, load_backend
from .bundled import default_model_path, resolve_model_path
from .export import ExportError, ExportReport, export_artifact, export_onnx, quantize_int8
from .identifier import Candidate, Identification, Identifier, IdentifierError
from .onnx_backend import OnnxModel

__all__ = [
    "BACKENDS",
    "Candidate",
    "ExportError",
    "ExportReport",
    "Identification",
    "Identifier",
    "IdentifierError",
    "OnnxBackend",
    "OnnxModel",
    "TorchBackend",
    "default_model_path",
    "export_artifact",
    "export_onnx",
    "load_backend",
    "quantize_int8",
    "resolve_model_path",
]
