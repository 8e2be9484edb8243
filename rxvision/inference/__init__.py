"""Inference: export, enrollment and benchmarks (identification moved to rxvision.identify)."""

from ..identify.backends import BACKENDS, OnnxBackend, TorchBackend, load_backend
from ..identify.bundled import default_model_path, resolve_model_path
from ..identify.identifier import Candidate, Identification, Identifier, IdentifierError
from ..identify.onnx_backend import OnnxModel
from .export import ExportError, ExportReport, export_artifact, export_onnx, quantize_int8

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
