"""ONNX export, parity with PyTorch, int8 quantisation and the inference backends."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from rxvision import cli
from rxvision.artifact import ArtifactError, load_artifact, read_card, save_artifact
from rxvision.config import Config
from rxvision.data import load_dataset, load_image
from rxvision.deploy.export import (
    ArrayCalibrationReader,
    ExportError,
    export_artifact,
    export_onnx,
    quantize_int8,
)
from rxvision.deploy.int8_reference import compare, format_comparison
from rxvision.identify.backends import load_backend
from rxvision.identify.onnx_backend import OnnxModel
from rxvision.locate import EvalTransform
from rxvision.models import build_model

# int8 agreement threshold on the 24 sample photos. The fixture model is fitted to them, so
# its top-1 margins are wide and int8 noise should flip none; 90% leaves room for one or
# two flips on images whose two best classes stay close after a few steps of fitting.
INT8_MIN_AGREEMENT = 0.9


def sample_batch(manifest: Path, preprocessing: dict, n: int | None = None) -> torch.Tensor:
    transform = EvalTransform(preprocessing)
    samples = load_dataset(manifest).samples[:n]
    return torch.stack([transform(load_image(s.path)) for s in samples])  # (N, 3, H, W)


def fit_classifier(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   steps: int) -> None:
    """Fit the final layer alone on the (frozen, random) embeddings of ``x``."""
    with torch.no_grad():
        emb = model.forward_head(model.forward_features(x), pre_logits=True)  # (N, 512)
    head = model.get_classifier()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(emb), y).backward()
        opt.step()


@pytest.fixture(scope="module")
def manifest(sample_dir: Path) -> Path:
    return sample_dir / "manifest.csv"


@pytest.fixture(scope="module")
def fitted_artifact(
    tmp_path_factory: pytest.TempPathFactory, manifest: Path,
    config_factory: Callable[..., Config],
) -> Path:
    """resnet18 at 64 px whose classifier is fitted to the sample, so predictions have margins.

    Random weights give near-tied logits whose top-1 flips under any numeric noise; fitting
    the last Linear layer on the (random, frozen) 512-d embeddings of the 24 photos takes a
    second and separates every class, which makes top-1 agreement a meaningful check.
    """
    images = load_dataset(manifest)
    cfg = config_factory(num_classes=images.num_classes)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = sample_batch(manifest, model.data_config(cfg.training.input_size))
    y = torch.tensor(images.targets())
    fit_classifier(model, x, y, steps=400)
    assert (model(x).argmax(1) == y).all()
    out = tmp_path_factory.mktemp("export") / "fitted"
    return save_artifact(out, model, cfg, images.labels, label_metadata=images.label_metadata,
                         calibration={"temperature": 1.7}, metrics={"top1": 0.5})


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fp32_export(fitted_artifact: Path, manifest: Path) -> tuple[Path, str]:
    out = fitted_artifact.parent / "fp32"
    code, stdout, stderr = run_cli(["export", "--model", str(fitted_artifact), "--format", "onnx",
                                    "--parity-data", str(manifest), "--out", str(out)])
    assert code == 0, stderr
    return out, stdout


@pytest.fixture(scope="module")
def int8_export(fitted_artifact: Path, manifest: Path):
    out = fitted_artifact.parent / "int8"
    report = export_artifact(fitted_artifact, out, int8=True, calibration=manifest,
                             num_calibration=16, num_parity=24)
    return out, report


def test_onnx_file_is_valid_with_dynamic_batch(fp32_export: tuple[Path, str]) -> None:
    model = onnx.load(str(fp32_export[0] / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch axis
    assert [d.dim_value for d in dims[1:]] == [3, 64, 64]
    # Exported unfused: plain matmul + softmax, no fused attention contrib op.
    ops = {n.op_type for n in model.graph.node}
    assert {"MatMul", "Softmax"} <= ops


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_logits_match_pytorch(fp32_export: tuple[Path, str], fitted_artifact: Path,
                                   manifest: Path, batch: int) -> None:
    art = load_artifact(fitted_artifact)
    x = sample_batch(manifest, art.preprocessing, batch)
    with torch.no_grad():
        ref = art.model(x)
    got = OnnxModel(fp32_export[0] / "model.onnx")(x)
    assert got.shape == (batch, len(art.labels))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_export_prints_parity_and_copies_card(fp32_export: tuple[Path, str],
                                              fitted_artifact: Path) -> None:
    out, stdout = fp32_export
    assert "max |logit diff|" in stdout and "top-1 agreement 100.0%" in stdout
    src, card = read_card(fitted_artifact), read_card(out)
    for key in ("labels", "label_metadata", "preprocessing", "calibration", "metrics", "config"):
        assert card[key] == src[key]
    assert "weights" not in card  # the torch weights are not in this folder
    export = card["export"]
    assert export["format"] == "onnx" and export["int8"] is False and export["opset"] >= 17
    assert export["source"]["weights_sha256"] == src["weights"]["sha256"]
    assert export["parity"]["images"] == 24
    assert export["parity"]["fp32_top1_agreement"] == 1.0
    assert export["parity"]["fp32_max_abs_logit_diff"] < 1e-4


def test_int8_model_runs_and_agrees(int8_export, fitted_artifact: Path, fp32_export,
                                    manifest: Path) -> None:
    out, report = int8_export
    card = read_card(out)
    assert card["export"]["int8"] is True
    q = card["export"]["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] is True and q["calibration_images"] == 16
    assert q["float_convs"] == 3
    # 24 parity images: 8 never seen by calibration, 16 also used for it (recorded).
    assert report.parity_images == 24 and report.parity_images_in_calibration == 16
    assert report.int8_top1_agreement >= INT8_MIN_AGREEMENT
    fp32_size = (fp32_export[0] / "model.onnx").stat().st_size
    assert (out / "model.onnx").stat().st_size < fp32_size / 2.5  # int8 weights
    graph_ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "QuantizeLinear" in graph_ops and "DequantizeLinear" in graph_ops

    onnx_backend = load_backend(out, backend="onnx")
    torch_backend = load_backend(fitted_artifact, backend="torch")
    x = sample_batch(manifest, onnx_backend.preprocessing)
    agree = (onnx_backend(x).argmax(1) == torch_backend(x).argmax(1)).float().mean()
    assert agree >= INT8_MIN_AGREEMENT


def test_evaluating_int8_reports_the_delta_to_its_fp32_source(
        int8_export, fp32_export, fitted_artifact: Path, manifest: Path, tmp_path: Path) -> None:
    out, _ = int8_export
    args = ["--data", str(manifest), "--no-progress", "--workers", "0"]
    results, printed = {}, {}
    for name, model, backend in (("int8", out, "onnx"), ("fp32", fitted_artifact, "torch")):
        path = tmp_path / f"{name}.json"
        code, printed[name], stderr = run_cli(["evaluate", "--model", str(model), "--backend",
                                               backend, "--json", str(path), *args])
        assert code == 0, stderr
        results[name] = json.loads(path.read_text())
    study = results["int8"]["int8_vs_fp32"]
    # The reference is the export's source, evaluated on the same images in the same run.
    assert study["fp32_source"] == str(fitted_artifact)
    assert study["fp32_top1"] == results["fp32"]["top1"]
    assert study["int8_top1"] == results["int8"]["top1"]
    assert study["delta_top1_points"] == pytest.approx(
        100 * (results["int8"]["top1"] - results["fp32"]["top1"]), abs=0.01)
    assert f"int8 vs fp32 ({fitted_artifact})" in printed["int8"]
    assert "int8_vs_fp32" not in results["fp32"]  # only int8 exports get the study
    code, _, _ = run_cli(["evaluate", "--model", str(fp32_export[0]), "--backend", "onnx",
                          "--json", str(tmp_path / "f.json"), *args])
    assert code == 0 and "int8_vs_fp32" not in json.loads((tmp_path / "f.json").read_text())
    # A moved or changed source is reported, never silently replaced by another model.
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    card = json.loads((moved / "card.json").read_text())
    card["export"]["source"]["weights_sha256"] = "0" * 64
    (moved / "card.json").write_text(json.dumps(card))
    code, stdout, stderr = run_cli(["evaluate", "--model", str(moved), "--backend", "onnx",
                                    "--json", str(tmp_path / "m.json"), *args])
    assert code == 0, stderr
    missing = json.loads((tmp_path / "m.json").read_text())["int8_vs_fp32"]
    assert missing["available"] is False and "000000000000 not found" in missing["reason"]
    assert "no fp32 reference" in stdout


def test_int8_comparison_per_group() -> None:
    int8 = {"top1": 0.90, "top5": 0.99, "ece": 0.02,
            "groups": {"both": {"top1": 0.95}, "one": {"top1": 0.85}}}
    fp32 = {"top1": 0.92, "top5": 0.99, "ece": 0.01,
            "groups": {"both": {"top1": 0.96}, "one": {"top1": 0.88}}}
    study = compare(int8, fp32, Path("runs/src"))
    assert study["delta_top1_points"] == -2.0 and study["delta_top5_points"] == 0.0
    assert study["groups"]["one"] == {"fp32_top1": 0.88, "int8_top1": 0.85,
                                      "delta_top1_points": -3.0}
    line = format_comparison(study)
    assert "-2.00 pt" in line and "[both] -1.00 pt" in line and "[one] -3.00 pt" in line


def test_backends_share_the_card_interface(fp32_export, fitted_artifact: Path,
                                           manifest: Path) -> None:
    onnx_b = load_backend(fp32_export[0], backend="onnx")
    torch_b = load_backend(fitted_artifact, backend="torch")
    for b in (onnx_b, torch_b):
        assert b.temperature == pytest.approx(1.7)
        assert len(b.labels) == 24 and b.label_metadata[0]["ndc"]
        assert b.preprocessing["input_size"] == [64, 64]
    x = sample_batch(manifest, torch_b.preprocessing, 5)
    cl = x.contiguous(memory_format=torch.channels_last)  # what evaluate hands backends
    torch.testing.assert_close(onnx_b(cl), torch_b(x), atol=1e-4, rtol=1e-4)
    assert torch_b.embed(x).shape == (5, 512)


def test_bf16_autocast_keeps_top1(fitted_artifact: Path, manifest: Path) -> None:
    fp32 = load_backend(fitted_artifact, backend="torch")
    bf16 = load_backend(fitted_artifact, backend="torch", bf16=True)
    x = sample_batch(manifest, fp32.preprocessing)
    assert torch.equal(bf16(x).argmax(1), fp32(x).argmax(1))


def test_backend_errors(fp32_export, fitted_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="rxvision export"):
        load_backend(fitted_artifact, backend="onnx")  # a torch artifact, not an export
    with pytest.raises(ArtifactError, match="backend='onnx'"):
        load_backend(fp32_export[0], backend="torch")
    with pytest.raises(ArtifactError, match="unknown backend"):
        load_backend(fitted_artifact, backend="tensorrt")
    tampered = tmp_path / "tampered"
    shutil.copytree(fp32_export[0], tampered)
    with open(tampered / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_backend(tampered, backend="onnx")
    model = OnnxModel(fp32_export[0] / "model.onnx")
    with pytest.raises(ValueError, match="expected input of shape"):
        model(np.zeros((1, 3, 32, 32), np.float32))


def test_export_errors(fitted_artifact: Path, manifest: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(["export", "--model", str(tmp_path / "missing"), "--format", "onnx",
                            "--parity-data", str(manifest), "--out", str(tmp_path / "o")])
    assert code == 2 and "not found" in err
    code, _, err = run_cli(["export", "--model", str(fitted_artifact), "--int8",
                            "--out", str(tmp_path / "o")])
    assert code == 2 and "--int8 needs calibration images" in err
    with pytest.raises(ExportError, match="real images"):
        export_artifact(fitted_artifact, tmp_path / "o")
    with pytest.raises(ExportError, match="is the source artifact"):
        export_artifact(fitted_artifact, fitted_artifact, parity_data=manifest)
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(torch.nn.Conv2d(3, 4, 1), tmp_path / "m.onnx", (32, 32), opset=16)
    assert not (tmp_path / "o").exists()


def test_leading_convolutions_stay_float(fp32_export, manifest: Path, tmp_path: Path,
                                         fitted_artifact: Path) -> None:
    """``float_convs=N`` keeps the first N Conv nodes (graph order) off the int8 path."""
    fp32 = fp32_export[0] / "model.onnx"
    x = sample_batch(manifest, read_card(fitted_artifact)["preprocessing"], 4).numpy()

    def conv_weight_sources(float_convs: int) -> list[bool]:
        out = tmp_path / f"q{float_convs}.onnx"
        settings = quantize_int8(fp32, out, ArrayCalibrationReader([x[i:i + 1] for i in range(4)]),
                                 float_convs=float_convs)
        assert settings["float_convs"] == float_convs
        graph = onnx.load(str(out)).graph
        dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        return [n.input[1] in dequantized for n in graph.node if n.op_type == "Conv"]

    assert all(conv_weight_sources(0))
    quantized = conv_weight_sources(2)
    assert quantized[:2] == [False, False] and all(quantized[2:]) and len(quantized) > 2
    with pytest.raises(ExportError, match="--float-convs must be >= 0"):
        export_artifact(fitted_artifact, tmp_path / "neg", int8=True, calibration=manifest,
                        float_convs=-1)
    assert not (tmp_path / "neg").exists()


def test_export_card_is_json_with_versions(fp32_export) -> None:
    card = json.loads((fp32_export[0] / "card.json").read_text())
    assert card["export"]["onnxruntime"] and card["export"]["exporter"].startswith("torch.onnx")


def test_cosine_classifier_exports_and_quantises(
    tmp_path: Path, manifest: Path, config_factory: Callable[..., Config]
) -> None:
    """The c3pi-1k recipe's cosine final layer: ONNX parity, and int8 keeps top-1."""
    images = load_dataset(manifest)
    cfg = config_factory(num_classes=images.num_classes)
    cfg.architecture.classifier.type = "cosine"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = sample_batch(manifest, model.data_config(cfg.training.input_size))
    y = torch.tensor(images.targets())
    fit_classifier(model, x, y, steps=300)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()
        # Enrolled rows carry a cosine offset (exported as the Gemm bias): set some.
        model.get_classifier().offset[::3] = 0.05
        ref = model(x)
    art = save_artifact(tmp_path / "cos", model, cfg, images.labels)
    fp32 = export_artifact(art, tmp_path / "fp32", num_parity=4, parity_data=manifest)
    got = OnnxModel(tmp_path / "fp32" / "model.onnx")(x)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert fp32.top1_agreement == 1.0 and fp32.max_abs_logit_diff < 1e-3
    export_artifact(art, tmp_path / "int8", int8=True, calibration=manifest, num_calibration=16,
                    num_parity=24)
    q = OnnxModel(tmp_path / "int8" / "model.onnx")(x)
    agreement = float((q.argmax(1) == ref.argmax(1)).float().mean())
    assert agreement >= INT8_MIN_AGREEMENT


# Predict with and serve an export in a fresh interpreter; list the heavy modules it loaded.
_ONNX_SERVE_PROBE = """
import sys
from fastapi.testclient import TestClient
from rxvision.cli import main
from rxvision.serve import create_app
from rxvision.serve.settings import ServeSettings

assert main(["predict", "--model", sys.argv[1], "--backend", "onnx", "--json", sys.argv[2]]) == 0

settings = ServeSettings(model=sys.argv[1], backend="onnx", tta=1, warmup=True)
with TestClient(create_app(settings)) as client:
    with open(sys.argv[2], "rb") as fh:
        r = client.post("/v1/identify", files={"image": ("pill.jpg", fh, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pills"], body
print(sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules))
"""


def test_a_crop_model_exports_with_its_pill_finder(artifact_factory, config_factory,
                                                  manifest: Path, tmp_path: Path) -> None:
    """The export of a crop model carries segmenter/ with its ONNX graph (made when the
    finder had none), so it predicts and serves as the artifact does, and predicting with
    or serving it imports neither torch nor timm (issue 19: the ONNX path's memory)."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    from rxvision.identify.pipeline import SEGMENTER_DIR, PillPipeline
    from rxvision.locate.segmenter import read_segmenter_card

    labels = [s.label for s in load_dataset(manifest).samples]
    cfg = config_factory(num_classes=len(labels), overrides=["augment.framing=crop"])
    model = artifact_factory("crop", labels=labels, config=cfg)
    finder = model / SEGMENTER_DIR
    shutil.copytree(REPO_ROOT / "models" / "rxvision-segmenter", finder)
    card = json.loads((finder / "card.json").read_text())
    del card["onnx"]  # a finder trained here and never exported: the export makes its graph
    (finder / "card.json").write_text(json.dumps(card))
    (finder / "model.onnx").unlink()
    out = tmp_path / "export"
    export_artifact(model, out, parity_data=manifest, num_parity=4)
    onnx_entry = read_segmenter_card(out / SEGMENTER_DIR)["onnx"]
    assert (out / SEGMENTER_DIR / onnx_entry["file"]).is_file()
    assert onnx_entry["parity_max_abs"] < 1e-3
    assert not (finder / "model.onnx").exists()  # the source artifact is left as it was
    pipeline = PillPipeline.load(out, backend="onnx", tta=1)
    assert pipeline.segmenter.net is None  # the finder runs its ONNX graph, not PyTorch
    sample = load_dataset(manifest).samples[0].path
    answer = pipeline.identify(load_image(sample), topk=2)
    assert answer.retake is None and len(answer.pills[0].identification.candidates) == 2
    probe = subprocess.run([sys.executable, "-c", _ONNX_SERVE_PROBE, str(out), str(sample)],
                           capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip().splitlines()[-1] == "[]", probe.stdout
