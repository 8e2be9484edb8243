"""Evaluation library, corruption sweep, report and the `rxvision evaluate` command.

Runs a random-weight resnet18 (64 px) artifact over data/sample (24 real pill photos)
with an added ``mode`` column, so every path is exercised in seconds.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rxvision.data import DatasetError, load_dataset, load_image
from rxvision.engine import corruptions as CR
from rxvision.engine.evaluate import predict, subset, summarize, write_json
from rxvision.engine.metrics import HEADLINE_KEYS, compute_metrics, softmax
from rxvision.engine.report import write_report
from rxvision.identify.backends import TorchBackend, load_backend
from rxvision.locate import EvalTransform

UNKNOWN = "99999-0000-00"


@pytest.fixture
def manifest(tmp_path: Path, sample_dir: Path) -> Path:
    """The sample manifest with a ``mode`` column and 3 rows relabelled to an unknown pill."""
    with open(sample_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        row["image"] = str((sample_dir / row["image"]).resolve())
        row["mode"] = "both" if i % 3 else "one"
        if i in (4, 5, 6):
            row["label"] = UNKNOWN
    out = tmp_path / "manifest.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.fixture
def backend(sample_artifact: Path) -> TorchBackend:
    return load_backend(sample_artifact)


@pytest.fixture
def pred(backend: TorchBackend, manifest: Path):
    return predict(backend, load_dataset(manifest), batch_size=8, workers=0, progress=False)


def test_predict_matches_direct_forward(backend: TorchBackend, manifest: Path, pred) -> None:
    images = load_dataset(manifest)
    assert pred.logits.shape == (24, 24) and pred.logits.dtype == np.float32
    assert pred.columns["mode"][:3] == ["one", "both", "both"]
    assert (pred.targets == -1).sum() == 3 and pred.true_labels[4] == UNKNOWN
    transform = EvalTransform(backend.preprocessing)
    x = torch.stack([transform(load_image(s.path)) for s in images.samples[:5]])
    with torch.inference_mode():
        direct = backend(x).numpy()
    np.testing.assert_allclose(pred.logits[:5], direct, rtol=1e-4, atol=1e-4)


def test_predict_with_workers_and_embeddings(backend: TorchBackend, manifest: Path,
                                             pred) -> None:
    images = subset(load_dataset(manifest), 10)
    out = predict(backend, images, batch_size=4, workers=2, embeddings=True, progress=False)
    index = [pred.paths.index(p) for p in out.paths]
    np.testing.assert_allclose(out.logits, pred.logits[index], rtol=1e-4, atol=1e-4)
    assert out.embeddings is not None and out.embeddings.shape == (10, 512)


def test_bf16_backend_tracks_fp32(sample_artifact: Path, manifest: Path, pred) -> None:
    bf16 = load_backend(sample_artifact, bf16=True)
    out = predict(bf16, load_dataset(manifest), batch_size=8, workers=0, progress=False)
    scale = np.abs(pred.logits).max()
    assert np.abs(out.logits - pred.logits).max() < 0.1 * scale


def test_subset_is_fixed_random_and_ordered(manifest: Path) -> None:
    images = load_dataset(manifest)
    a, b = subset(images, 7), subset(images, 7)
    assert [s.path for s in a.samples] == [s.path for s in b.samples]
    order = [images.samples.index(s) for s in a.samples]
    assert order == sorted(order) and order != list(range(7))
    with pytest.raises(DatasetError):
        subset(images, 0)


def test_summarize_groups_and_unknown_labels(backend: TorchBackend, pred) -> None:
    result = summarize(pred, backend.labels, temperature=2.0, group_by="mode")
    assert set(HEADLINE_KEYS) <= set(result)
    assert result["n"] == 21  # 24 photos - 3 with a label the model lacks
    assert result["unknown_labels"] == {"count": 3, "labels": [UNKNOWN]}
    assert set(result["groups"]) == {"one", "both"}
    assert sum(g["n"] for g in result["groups"].values()) == 21
    assert sum(g["unknown"] for g in result["groups"].values()) == 3
    known = pred.targets >= 0
    one = (np.array(pred.columns["mode"]) == "one") & known
    expected = compute_metrics(softmax(pred.logits[one], 2.0), pred.targets[one], backend.labels)
    for key in HEADLINE_KEYS:
        assert result["groups"]["one"][key] == pytest.approx(expected[key])
    assert result["temperature"] == 2.0 and result["uncalibrated"]["ece"] >= 0
    assert sum(r["support"] for r in result["per_class"]) == 21
    with pytest.raises(DatasetError, match="no such column"):
        summarize(pred, backend.labels, group_by="side")
    by_label_meta = summarize(pred, backend.labels, group_by="ndc")  # a label metadata column
    assert sum(g["n"] for g in by_label_meta["groups"].values()) == 21


def test_summarize_with_no_known_labels(backend: TorchBackend, pred) -> None:
    pred.targets[:] = -1
    result = summarize(pred, backend.labels, group_by="mode")
    assert result["n"] == 0 and result["top1"] is None
    assert result["unknown_labels"]["count"] == 24
    assert all(g["n"] == 0 for g in result["groups"].values())


def test_write_json_is_strict_with_csv(backend: TorchBackend, pred, tmp_path: Path) -> None:
    result = summarize(pred, backend.labels, group_by="mode")
    result["roc_auc_macro"] = float("nan")
    path = write_json(result, tmp_path / "out" / "m.json")
    doc = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert doc["roc_auc_macro"] is None and "per_class" not in doc
    with open(path.with_name(doc["per_class_csv"]), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(result["per_class"]) and rows[0].keys() >= {"label", "recall"}


def test_corruptions_each_changes_image_and_keeps_size() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert len(CR.CORRUPTIONS) == 7
    for name in CR.CORRUPTIONS:
        outs = [CR.corrupt(img, name, s) for s in CR.SEVERITIES]
        for out in outs:
            assert out.size == img.size and out.mode == "RGB"
        diffs = [np.abs(np.asarray(o, float) - np.asarray(img, float)).mean() for o in outs]
        assert diffs[0] > 0, name
        assert diffs[-1] >= diffs[0] * 0.9, name  # severity 5 at least as harsh as 1
    a, b = CR.corrupt(img, "noise", 3, seed=1), CR.corrupt(img, "noise", 3, seed=1)
    assert np.array_equal(np.asarray(a), np.asarray(b))  # reproducible
    with pytest.raises(ValueError):
        CR.corrupt(img, "fog", 1)


def test_summarize_sweep_mce_definition() -> None:
    acc = np.full((7, 5), 0.6)
    acc[0] = 0.8  # blur costs nothing relative to the clean 0.8
    out = CR.summarize_sweep(acc, clean_top1=0.8, n=10)
    assert out["corruption_error"]["blur"] == pytest.approx(1.0)
    assert out["corruption_error"]["noise"] == pytest.approx(0.4 / 0.2)
    assert out["mce"] == pytest.approx((1.0 + 6 * 2.0) / 7)
    assert CR.summarize_sweep(acc, clean_top1=1.0, n=10)["mce"] is None


def test_corruption_sweep_runs(backend: TorchBackend, manifest: Path) -> None:
    images = subset(load_dataset(manifest), 4)
    out = CR.corruption_sweep(backend, images, clean_top1=0.5, batch_size=35, workers=0,
                              progress=False)
    assert out["n"] == sum(s.label in backend.labels for s in images.samples)
    assert len(out["accuracy"]) == 7
    assert all(list(v) == ["1", "2", "3", "4", "5"] for v in out["accuracy"].values())
    assert out["mce"] is not None and out["mce"] >= 0


def test_corruption_sweep_counts_answers_under_the_card_rule(backend: TorchBackend,
                                                             manifest: Path) -> None:
    images = subset(load_dataset(manifest), 3)
    opts = {"batch_size": 36, "workers": 0, "progress": False}
    card = backend.card
    backend.card = {**card, "identification": {"abstain_threshold": 0.0}}
    always = CR.corruption_sweep(backend, images, clean_top1=0.5, **opts)
    backend.card = {**card, "identification": {"abstain_threshold": 1.0 + 1e-6}}
    never = CR.corruption_sweep(backend, images, clean_top1=0.5, **opts)
    backend.card = card
    # Answering everything: every mistake is a wrong answer; answering nothing: none is.
    for name, by_sev in always["accuracy"].items():
        for sev, acc in by_sev.items():
            assert always["answered"][name][sev] == 1.0
            assert always["answered_wrong"][name][sev] == pytest.approx(1.0 - acc)
            assert never["answered"][name][sev] == never["answered_wrong"][name][sev] == 0.0
    assert always["clean"]["answered_wrong"] == pytest.approx(1.0 - always["clean"]["top1"])
    assert always["rule"]["abstain_threshold"] == 0.0
    # The clean view is the unmodified photo: the same top-1 as the evaluation's own pass.
    pred = predict(backend, images, batch_size=8, workers=0, progress=False)
    assert always["clean"]["top1"] == pytest.approx(summarize(pred, backend.labels, 1.0)["top1"])


def test_report_references_existing_pngs(backend: TorchBackend, pred, manifest: Path,
                                         tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text(
        '{"epoch": 1, "train_loss": 3.1, "lr": 0.001}\nnot json\n'
        '{"epoch": 2, "train_loss": 2.5, "val_loss": 2.9, "val_top1": 0.2, "lr": 0.0005}\n')
    pred.logits[:, 0] += 3.0  # many mistakes into class 0, so there are confused pairs
    result = summarize(pred, backend.labels, temperature=1.7, group_by="mode")
    result["corruptions"] = sweep = CR.summarize_sweep(np.full((7, 5), 0.3), 0.5, 21)
    sweep["clean"] = {"top1": 0.5, "answered": 0.7, "answered_wrong": 0.1}
    sweep["answered_wrong"] = {c: dict.fromkeys(by, 0.2) for c, by in sweep["accuracy"].items()}
    out = write_report(tmp_path / "rep", result, pred, backend.labels, 1.7, run_dir=run,
                       thumbnails=load_dataset(manifest))
    page = out.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"reliability.png", "coverage.png", "confusion.png", "groups.png", "training.png",
            "corruptions.png"} <= set(images)
    for name in images:
        with Image.open(out.parent / name) as im:
            assert im.size[0] > 100
    assert "after temperature scaling (T = 1.7)" in page
    assert "answered wrongly" in page and "(clean: 0.1000)" in page
    assert "1 unreadable lines skipped" in page and UNKNOWN in page
    assert (out.parent / "per_class.csv").is_file()


def test_evaluate_command_end_to_end(sample_artifact: Path, sample_dir: Path, manifest: Path,
                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rxvision.cli import main

    rc = main(["evaluate", "--model", str(sample_artifact), "--data", str(manifest),
               "--group-by", "mode", "--json", str(tmp_path / "m.json"),
               "--report", str(tmp_path / "rep"), "--workers", "0", "--batch-size", "8",
               "--corruptions", "--limit", "6", "--no-progress",
               "--references", str(sample_dir / "manifest.csv")])
    assert rc == 0
    doc = json.loads((tmp_path / "m.json").read_text())
    assert set(HEADLINE_KEYS) | {"groups", "unknown_labels", "corruptions"} <= set(doc)
    assert set(doc["accuracy_at_coverage"]) == {"0.5", "0.8", "0.9", "1.0"}
    assert doc["n"] + doc["unknown_labels"]["count"] == 6
    assert len(doc["corruptions"]["accuracy"]) == 7
    page = (tmp_path / "rep" / "index.html").read_text()
    for name in re.findall(r'<img src="([^"]+)"', page):
        assert (tmp_path / "rep" / name).is_file()
    assert "ece if calibrated" in page
    out = capsys.readouterr().out
    assert "top1" in out
    floor = doc["ece_if_calibrated"]
    assert 0 < floor["mean"] <= floor["p95"]
    assert f"would score ece {floor['mean']:.4f} on {doc['n']} photos" in out


def test_evaluate_command_reports_missing_group_column(sample_artifact: Path, manifest: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    from rxvision.cli import main

    rc = main(["evaluate", "--model", str(sample_artifact), "--data", str(manifest),
               "--group-by", "nope", "--workers", "0", "--limit", "2", "--no-progress"])
    assert rc == 2 and "no such column" in capsys.readouterr().err


def test_evaluate_command_refuses_data_with_no_known_label(
        sample_artifact: Path, sample_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    # Regression (issue 19): 0 images evaluated still exited 0 and wrote its JSON.
    from rxvision.cli import main

    with open(sample_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:3]
    data = tmp_path / "strangers.csv"
    with open(data, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "label"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"image": str(sample_dir / row["image"]), "label": f"stranger{i}"})
    out, report = tmp_path / "m.json", tmp_path / "rep"
    rc = main(["evaluate", "--model", str(sample_artifact), "--data", str(data), "--json",
               str(out), "--report", str(report), "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "none of its 3 images has a label the model knows" in err and "stranger0" in err
    assert not out.exists() and not report.exists()
    assert not (tmp_path / "per_class.csv").exists()


def test_same_pill_hits_count_identical_pills() -> None:
    from rxvision.engine.evaluate import Predictions
    from rxvision.engine.same_pill import same_pill_metrics

    logits = np.array([[0.0, 2.0, 1.0], [0.0, 2.0, 1.0], [3.0, 0.0, 1.0]], np.float32)
    pred = Predictions(logits, np.array([0, 2, 0]), ["a", "c", "a"], ["x", "y", "z"],
                       columns={"mode": ["one", "one", "both"]})
    twins = {"a": frozenset({"b"}), "b": frozenset({"a"})}
    out = same_pill_metrics(pred, ["a", "b", "c"], twins, group_by="mode")
    # sample 0: true a, predicted b (a's twin): a strict miss, a same-pill hit
    assert out["top1_same_pill"] == pytest.approx(2 / 3) and out["top5_same_pill"] == 1.0
    assert out["groups"]["one"]["top1_same_pill"] == 0.5
    assert out["groups"]["both"]["top1_same_pill"] == 1.0
    assert out["labels_with_twins"] == 1


def test_evaluate_reports_same_pill_figures_with_a_library(
    sample_artifact: Path, sample_dir: Path, manifest: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    import shutil

    from rxvision.cli import main
    from rxvision.library.for_model import build_model_library

    model = tmp_path / "model"
    shutil.copytree(sample_artifact, model)
    with open(sample_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # every pill looks the same: one identical-pill group
        row.update(imprint="X;1", color="WHITE", shape="ROUND", size_mm="10")
    facts = tmp_path / "facts.csv"
    with open(facts, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    build_model_library(facts, model)
    assert main(["evaluate", "--model", str(model), "--data", str(manifest), "--group-by",
                 "mode", "--json", str(tmp_path / "m.json"), "--workers", "0",
                 "--no-progress"]) == 0
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["top1_same_pill"] == 1.0 and doc["top5_same_pill"] == 1.0
    assert doc["top1"] < 1.0  # random weights: the strict figure stays what it is
    assert all(g["top1_same_pill"] == 1.0 for g in doc["groups"].values())
    assert doc["same_pill"]["labels_with_twins"] == 21  # the known labels of the data
    assert "top1_same_pill 1.0000" in capsys.readouterr().out


def test_evaluate_sets_the_training_renderers_figure_beside_its_own() -> None:
    from rxvision.engine.independent_check import own_renderer_gap

    card = {"metrics": {"validation": {"val_top1": 0.9, "val_top1_one": 0.85}}}
    gap = own_renderer_gap(card, 0.4)
    assert gap["val_top1"] == 0.9 and gap["val_top1_one"] == 0.85
    assert gap["gap_points"] == 50.0
    assert own_renderer_gap({"metrics": {}}, 0.4) is None  # no validation in the card
    assert own_renderer_gap(card, None) is None  # nothing known was evaluated
