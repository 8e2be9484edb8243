"""Deployment: ONNX export, int8 quantisation, its accuracy check and speed benchmarks."""

from .export import ExportError, ExportReport, export_artifact, export_onnx, quantize_int8

__all__ = ["ExportError", "ExportReport", "export_artifact", "export_onnx", "quantize_int8"]
