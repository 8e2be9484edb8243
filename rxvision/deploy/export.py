"""ONNX export, parity check against PyTorch and int8 static quantisation.

An exported model directory holds ``model.onnx`` and ``card.json``: the source artifact's
card (labels, label metadata, preprocessing, calibration, metrics) with its ``weights``
entry replaced by an ``export`` section (format, int8, opset, file hash, parity numbers).

Exporter: ``torch.onnx.export(dynamo=True)``, the default in torch 2.x, works for this
model (its onnxscript optimizer folds BatchNorm into the convolutions); the TorchScript
exporter is deprecated, so it is not used. Attention is exported unfused (explicit
matmul + softmax) so every runtime and the quantiser see plain operators.

int8: ``onnxruntime.quantization.quantize_static`` in QDQ format, per-channel int8 weights
and uint8 activations (the fast U8S8 path on x86), MinMax calibration on real images run
through the card's :class:`~rxvision.data.EvalTransform`. LayerNormalization and Softmax stay
float: they are tiny and quantising them only costs accuracy. So do the first
:data:`DEFAULT_FLOAT_CONVS` convolutions (``float_convs``), which cost the most accuracy
when quantised and little time when not.

Example:
    >>> report = export_artifact("runs/x", "exports/x", int8=True,
    ...                          calibration="data/sample/manifest.csv")
    >>> report.int8_top1_agreement
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from ..artifact import CARD_NAME, load_artifact, read_card, sha256_file
from ..data import load_dataset, load_image
from ..identify.onnx_backend import INPUT_NAME, OUTPUT_NAME, OnnxModel
from ..identify.pipeline import SEGMENTER_DIR
from ..io_utils import atomic_directory, atomic_write
from ..library.database import LIBRARY_NAME, copy_library
from ..locate import EvalTransform
from ..locate.segmenter import ONNX_NAME as SEGMENTER_ONNX
from ..locate.segmenter import Segmenter, read_segmenter_card
from ..locate.segmenter_onnx import export_onnx as export_segmenter

ONNX_NAME = "model.onnx"
DEFAULT_OPSET = 18
MIN_OPSET = 17
# Operators left in float by the quantiser (see the module docstring).
FLOAT_OPS = ("LayerNormalization", "Softmax")
# Leading convolutions (graph order) left in float: the stem and the first block see raw
# pixels and high-resolution maps, where one scale per activation tensor costs the most.
# Measured on the bundled model (docs/benchmarks.md): all-int8 top-1 0.796, first conv float
# 0.828, first 3 float 0.840, fp32 0.844 (500 held-out calibration-set views).
DEFAULT_FLOAT_CONVS = 3


class ExportError(ValueError):
    """An export request is impossible or its inputs are missing."""


@dataclass
class ExportReport:
    """What an export wrote and how closely the ONNX model follows PyTorch."""

    path: Path
    int8: bool
    opset: int
    size_mb: float
    parity_images: int
    max_abs_logit_diff: float  # fp32 ONNX vs PyTorch
    top1_agreement: float  # fp32 ONNX vs PyTorch
    calibration_images: int = 0
    int8_max_abs_logit_diff: float | None = None  # int8 ONNX vs PyTorch fp32
    int8_top1_agreement: float | None = None
    parity_images_in_calibration: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


# --- export -------------------------------------------------------------------------------
def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int] | list[int],
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` (B, 3, H, W) -> (B, classes) to ONNX with a dynamic batch axis.

    Any ``nn.Module`` works (the plain timm baselines of the benchmark too); RxVision
    models are exported with the unfused attention path, and their previous setting is
    restored afterwards. The file is checked with ``onnx.checker`` and written atomically.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    was_training = model.training
    fused = getattr(getattr(model, "attention", None), "fused", None)
    model.eval()
    if fused is not None:
        model.set_fused_attention(False)
    # Trace with batch 2 so the exporter cannot specialise the batch axis to 1.
    example = torch.zeros(2, 3, *input_size)
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
            )
    finally:
        if fused is not None:
            model.set_fused_attention(fused)
        model.train(was_training)
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    return atomic_write(path, lambda p: onnx.save_model(proto, str(p)))


# --- calibration data ---------------------------------------------------------------------
def image_batches(
    paths: list[Path], preprocessing: dict[str, Any], batch_size: int = 8
) -> Iterator[torch.Tensor]:
    """Decode and preprocess images exactly as evaluation does; yield (B, 3, H, W)."""
    transform = EvalTransform(preprocessing)
    for i in range(0, len(paths), batch_size):
        yield torch.stack([transform(load_image(p)) for p in paths[i:i + batch_size]])


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed real images to onnxruntime's calibrator, one at a time."""

    def __init__(self, paths: list[Path], preprocessing: dict[str, Any]):
        self._batches = image_batches(paths, preprocessing, batch_size=1)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch.numpy()}


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds given arrays (e.g. random inputs for speed benchmarks) to the calibrator."""

    def __init__(self, arrays: list[np.ndarray]):
        self._arrays = iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._arrays, None)
        return None if x is None else {INPUT_NAME: x}


def split_images(
    dataset: str | Path, num_calibration: int, num_parity: int, seed: int = 0
) -> tuple[list[Path], list[Path], int]:
    """Pick calibration and parity images from a dataset (seeded, spread over classes).

    Parity images are taken from images not used for calibration first; when the set is
    too small they wrap around into the calibration images. Returns the two lists and
    how many parity images are also calibration images.
    """
    paths = [s.path for s in load_dataset(dataset).samples]
    order = [paths[i] for i in np.random.default_rng(seed).permutation(len(paths))]
    calib = order[:num_calibration]
    rest = order[num_calibration:] + calib
    parity = rest[:num_parity]
    overlap = max(0, len(parity) - (len(order) - len(calib)))
    return calib, parity, overlap


# --- int8 ---------------------------------------------------------------------------------
def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    reader: CalibrationDataReader,
    method: CalibrationMethod = CalibrationMethod.MinMax,
    float_convs: int = DEFAULT_FLOAT_CONVS,
) -> dict[str, Any]:
    """Static QDQ int8 quantisation of an fp32 ONNX file; return the settings used.

    ``quant_pre_process`` (symbolic shape inference + ORT's basic graph optimisations)
    runs first, as onnxruntime recommends, so the quantiser sees fused, shaped nodes.
    """
    with tempfile.TemporaryDirectory(prefix="rxvision-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        if float_convs < 0:
            raise ExportError(f"float_convs must be >= 0, got {float_convs}")
        graph = onnx.load(str(pre)).graph
        keep_float = [n.name for n in graph.node if n.op_type in FLOAT_OPS]
        keep_float += [n.name for n in graph.node if n.op_type == "Conv"][:float_convs]
        settings = {
            "format": "QDQ",
            "per_channel": True,
            "weight_type": "int8",
            "activation_type": "uint8",
            "reduce_range": False,
            "calibrate_method": method.name,
            "float_ops": list(FLOAT_OPS),
            "float_convs": float_convs,
        }
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre), str(quantized), reader,
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float, calibrate_method=method,
        )
        onnx.checker.check_model(str(quantized))
        atomic_write(out_path, lambda p: p.write_bytes(quantized.read_bytes()))
    return settings


# --- parity -------------------------------------------------------------------------------
def compare_logits(
    reference: torch.Tensor, candidate: torch.Tensor
) -> tuple[float, float]:
    """Max absolute logit difference and top-1 agreement of two (N, classes) tensors."""
    diff = float((reference - candidate).abs().max())
    agree = float((reference.argmax(1) == candidate.argmax(1)).float().mean())
    return diff, agree


@torch.no_grad()
def run_parity(
    model: nn.Module, onnx_model: OnnxModel, batches: list[torch.Tensor]
) -> tuple[float, float]:
    """Compare an ONNX model with the PyTorch model (eval mode) on preprocessed batches."""
    model.eval()
    ref = torch.cat([model(b) for b in batches])
    got = torch.cat([onnx_model(b) for b in batches])
    return compare_logits(ref, got)


# --- artifact -> exported directory -------------------------------------------------------
def export_artifact(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "onnx",
    int8: bool = False,
    calibration: str | Path | None = None,
    parity_data: str | Path | None = None,
    num_calibration: int = 128,
    num_parity: int = 32,
    opset: int = DEFAULT_OPSET,
    float_convs: int = DEFAULT_FLOAT_CONVS,
) -> ExportReport:
    """Export a trained artifact to ``out_dir`` (``model.onnx`` + ``card.json``, and the
    model's drug library ``library.sqlite`` when it has one).

    Args:
        model_dir: an artifact written by :func:`rxvision.artifact.save_artifact`.
        out_dir: destination folder (created; must differ from ``model_dir``).
        fmt: only ``"onnx"`` so far.
        int8: write the int8 QDQ model instead of fp32; needs ``calibration``.
        calibration: dataset (manifest CSV or class folders) whose images calibrate int8.
        parity_data: dataset for the PyTorch parity check (default: ``calibration``).
        num_calibration: images used for calibration.
        num_parity: images used for the parity check.
        opset: ONNX opset, at least 17.
        float_convs: int8 only: leading convolutions kept in float.
    """
    if fmt != "onnx":
        raise ExportError(f"unknown export format {fmt!r}; supported: onnx")
    if int8 and calibration is None:
        raise ExportError("--int8 needs calibration images: pass --calibration DATASET "
                          "(a manifest CSV or class folders of real photos)")
    if parity_data is None and calibration is None:
        raise ExportError("the parity check needs real images: pass --parity-data DATASET "
                          "(or --calibration DATASET), e.g. data/sample/manifest.csv")
    if num_calibration < 1 or num_parity < 1:
        raise ExportError("--num-calibration and --num-parity must be >= 1")
    if float_convs < 0:
        raise ExportError(f"--float-convs must be >= 0, got {float_convs}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise ExportError(f"--out {out_dir} is the source artifact; choose another folder")
    artifact = load_artifact(model_dir)
    pre = artifact.preprocessing

    shared = parity_data is None or (calibration is not None
                                     and Path(parity_data) == Path(calibration))
    if shared:  # one dataset serves both: parity images avoid calibration images if it can
        n_cal = num_calibration if int8 else 0
        calib_paths, parity_paths, overlap = split_images(
            parity_data or calibration, n_cal, num_parity)
    else:
        parity_paths, overlap = split_images(parity_data, 0, num_parity)[1], 0
        calib_paths = split_images(calibration, num_calibration, 0)[0] if int8 else []
    batches = list(image_batches(parity_paths, pre))

    # The export is built in a temporary sibling of out_dir and renamed into place as a
    # whole: a crash or kill -9 leaves the old export or the new one, never a mix.
    try:
        with (tempfile.TemporaryDirectory(prefix="rxvision-export-") as tmp,
              atomic_directory(out_dir, replaceable={ONNX_NAME, CARD_NAME, LIBRARY_NAME,
                                                     SEGMENTER_DIR})
              as staging):
            fp32_path = export_onnx(artifact.model, Path(tmp) / "fp32.onnx", pre["input_size"],
                                    opset)
            max_diff, agree = run_parity(artifact.model, OnnxModel(fp32_path), batches)
            report = ExportReport(staging / ONNX_NAME, int8, opset, 0.0, len(parity_paths),
                                  max_diff, agree)
            quant: dict[str, Any] | None = None
            if int8:
                int8_path = Path(tmp) / "int8.onnx"
                quant = quantize_int8(fp32_path, int8_path,
                                      ImageCalibrationReader(calib_paths, pre),
                                      float_convs=float_convs)
                diff8, agree8 = run_parity(artifact.model, OnnxModel(int8_path), batches)
                report.calibration_images = len(calib_paths)
                report.int8_max_abs_logit_diff, report.int8_top1_agreement = diff8, agree8
                report.parity_images_in_calibration = overlap
            shutil.copyfile(int8_path if int8 else fp32_path, report.path)
            if (model_dir / LIBRARY_NAME).is_file():  # facts and look-alikes travel along
                copy_library(model_dir / LIBRARY_NAME, staging / LIBRARY_NAME)
            if (model_dir / SEGMENTER_DIR).is_dir():  # a crop model's pill finder too
                shutil.copytree(model_dir / SEGMENTER_DIR, staging / SEGMENTER_DIR)
                ensure_segmenter_onnx(staging / SEGMENTER_DIR)
            report.size_mb = report.path.stat().st_size / 1e6
            card = exported_card(read_card(model_dir), model_dir, report, quant, calibration,
                                 parity_data or calibration)
            (staging / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    except FileExistsError as exc:
        raise ExportError(f"--out: {exc}") from exc
    report.path = out_dir / ONNX_NAME
    return report


def ensure_segmenter_onnx(directory: Path) -> None:
    """Give a copied pill finder its checked ``model.onnx`` when its card records none, so
    that the export runs with ``--backend onnx`` without torch (its own finder included)."""
    if read_segmenter_card(directory).get("onnx"):
        return
    export_segmenter(Segmenter.load(directory), directory / SEGMENTER_ONNX, record_in=directory)


def exported_card(
    source_card: dict[str, Any],
    source_dir: Path,
    report: ExportReport,
    quantization: dict[str, Any] | None,
    calibration: str | Path | None,
    parity_data: str | Path | None,
) -> dict[str, Any]:
    """The source card with ``weights`` replaced by an ``export`` section."""
    card = dict(source_card)
    weights = card.pop("weights", {})
    card["export"] = {
        "format": "onnx",
        "file": ONNX_NAME,
        "sha256": sha256_file(report.path),
        "int8": report.int8,
        "opset": report.opset,
        "size_mb": round(report.size_mb, 3),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "dynamic_batch": True,
        "source": {"path": str(source_dir), "weights_sha256": weights.get("sha256")},
        "parity": {
            "reference": "PyTorch fp32 (eval mode) on the same preprocessed images",
            "data": str(parity_data) if parity_data else None,
            "images": report.parity_images,
            "fp32_max_abs_logit_diff": report.max_abs_logit_diff,
            "fp32_top1_agreement": report.top1_agreement,
            "int8_max_abs_logit_diff": report.int8_max_abs_logit_diff,
            "int8_top1_agreement": report.int8_top1_agreement,
            "images_also_used_for_calibration": report.parity_images_in_calibration,
        },
        "quantization": None if quantization is None else {
            **quantization,
            "calibration_data": str(calibration),
            "calibration_images": report.calibration_images,
        },
    }
    return card
