"""Identifier API, abstention, open-set flag, pair fusion and the `rxvision predict` CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rxvision.artifact import ArtifactError, update_card
from rxvision.cli import main
from rxvision.data import ImageDecodeError, load_dataset
from rxvision.identify import bundled
from rxvision.identify.fusion import (
    SamePhotoRule,
    fuse_log_probs,
    fuse_ood_scores,
    fuse_same_photo,
    same_pill_log_ratio,
)
from rxvision.identify.identifier import (
    MESSAGE_OK,
    MESSAGE_UNKNOWN,
    MESSAGE_UNSURE,
    Identifier,
    IdentifierError,
)
from rxvision.identify.openset import (
    binary_auroc,
    class_prototypes,
    fit_abstain_threshold,
    fit_ood_threshold,
    ood_scores,
    open_set_metrics,
)


@pytest.fixture(scope="module")
def images(sample_dir: Path) -> list[Path]:
    return [s.path for s in load_dataset(sample_dir / "manifest.csv").samples]


@pytest.fixture(scope="module")
def ident(sample_artifact: Path) -> Identifier:
    return Identifier.load(sample_artifact)


# --- Identifier API ---------------------------------------------------------------------
def test_identify_typed_results_with_calibrated_probabilities(
    sample_artifact: Path, copy_artifact, images: list[Path]
) -> None:
    run = copy_artifact(sample_artifact)
    update_card(run, calibration={"temperature": 2.0})
    ident = Identifier.load(run)
    [res] = ident.identify(images[0], topk=3)
    assert [c.rank for c in res.candidates] == [1, 2, 3]
    probs = [c.probability for c in res.candidates]
    assert probs == sorted(probs, reverse=True)
    assert res.confidence == probs[0]
    assert res.candidates[0].metadata["ndc"] == res.candidates[0].label  # sample: label = NDC
    # Probabilities are softmax(logits / T) of the model's own forward pass.
    x = torch.from_numpy(ident.preprocess(images[0])[None])
    with torch.no_grad():
        expected = torch.softmax(ident.model(x) / 2.0, dim=1)[0]
    label_index = ident.labels.index(res.candidates[0].label)
    assert math.isclose(probs[0], float(expected[label_index]), rel_tol=1e-5)
    assert set(res.timings_ms) == {"preprocess", "forward", "postprocess", "total"}
    assert res.source == str(images[0])


def test_identify_accepts_path_bytes_and_pil(ident: Identifier, images: list[Path]) -> None:
    from PIL import Image

    by_path, by_bytes, by_pil = ident.identify(
        [images[1], images[1].read_bytes(), Image.open(images[1])], topk=2)
    for other in (by_bytes, by_pil):
        assert other.candidates[0].label == by_path.candidates[0].label
        assert math.isclose(other.confidence, by_path.confidence, rel_tol=1e-5)
    with pytest.raises(IdentifierError, match="expected a path, bytes or PIL"):
        ident.identify_batch([123])  # type: ignore[list-item]


def test_identify_batch_runs_one_forward_pass(sample_artifact: Path, images: list[Path]) -> None:
    ident = Identifier.load(sample_artifact)
    calls = []
    runner = ident.runner

    def counting(batch: torch.Tensor):
        calls.append(batch.shape[0])
        return runner(batch)

    ident.runner = counting
    batch = ident.identify_batch(images[:5], topk=1)
    assert calls == [5]
    singles = [ident.identify(p, topk=1)[0] for p in images[:5]]
    for b, s in zip(batch, singles, strict=True):
        assert b.candidates[0].label == s.candidates[0].label
        assert math.isclose(b.confidence, s.confidence, rel_tol=1e-4)


def test_iter_identify_reports_bad_images_and_continues(
    ident: Identifier, images: list[Path], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = list(ident.iter_identify([images[0], bad, images[1]], topk=2, batch_size=2))
    assert [type(r).__name__ for _, r in out] == ["Identification", "ImageDecodeError",
                                                  "Identification"]
    assert "broken.jpg" in str(out[1][1])
    with pytest.raises(ImageDecodeError, match=r"broken\.jpg"):
        ident.identify(bad)


def test_abstain_threshold_paths(sample_artifact: Path, images: list[Path]) -> None:
    always = Identifier.load(sample_artifact, abstain_threshold=1.0).identify(images[:3])
    assert all(r.abstain and not r.unknown and r.message == MESSAGE_UNSURE for r in always)
    never = Identifier.load(sample_artifact, abstain_threshold=0.0).identify(images[:3])
    assert all(not r.abstain and r.message == MESSAGE_OK for r in never)
    with pytest.raises(IdentifierError, match="abstain threshold"):
        Identifier.load(sample_artifact, abstain_threshold=1.5)


def test_unknown_flag_from_threshold_and_card(
    sample_artifact: Path, copy_artifact, images: list[Path]
) -> None:
    base = Identifier.load(sample_artifact, abstain_threshold=0.0)
    assert base.ood_threshold is None  # no threshold in the card: nothing is flagged
    scores = [r.ood_score for r in base.identify(images[:4])]
    cut = float(np.median(scores))
    flagged = Identifier.load(sample_artifact, abstain_threshold=0.0, ood_threshold=cut)
    for r, s in zip(flagged.identify(images[:4]), scores, strict=True):
        assert r.unknown == (s > cut)
        assert r.abstain == r.unknown  # unknown pills are never presented as answers
        assert r.message == (MESSAGE_UNKNOWN if r.unknown else MESSAGE_OK)
    run = copy_artifact(sample_artifact)
    update_card(run, identification={"ood_method": "max_logit", "ood_threshold": -1e9,
                                     "abstain_threshold": 0.0})
    from_card = Identifier.load(run)
    assert from_card.ood_method == "max_logit"
    assert all(r.unknown for r in from_card.identify(images[:2]))
    # A card threshold fitted for one score does not apply to another.
    assert Identifier.load(run, ood_method="energy").ood_threshold is None


def test_ood_scores_known_values() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    energy = ood_scores(logits, method="energy")
    np.testing.assert_allclose(energy, -torch.logsumexp(torch.from_numpy(logits), 1).numpy(),
                               rtol=1e-6)
    assert energy[0] < energy[1]  # the confident row looks more familiar
    np.testing.assert_array_equal(ood_scores(logits, method="max_logit"), [-2.0, 0.0])
    # A torch tensor is taken as it is (the evaluation passes its logits as tensors).
    np.testing.assert_array_equal(ood_scores(torch.from_numpy(logits), method="max_logit"),
                                  [-2.0, 0.0])
    protos = class_prototypes(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    emb = np.array([[5.0, 0.0], [1.0, 1.0]])
    cos = ood_scores(logits[:, :2], emb, protos, method="cosine")
    np.testing.assert_allclose(cos, [0.0, 1 - 1 / math.sqrt(2)], atol=1e-6)
    with pytest.raises(ValueError, match="unknown OOD method"):
        ood_scores(logits, method="entropy")


def test_fit_thresholds_and_auroc() -> None:
    known = np.arange(1, 101, dtype=float)
    assert fit_ood_threshold(known, tpr=0.95) == 95.0
    assert (known <= fit_ood_threshold(known, 0.95)).mean() == 0.95
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 0, 1, 0])
    assert fit_abstain_threshold(conf, correct, target_accuracy=0.75) == 0.6
    assert fit_abstain_threshold(conf, correct, target_accuracy=1.0) == 0.8
    with pytest.raises(ValueError, match="no confidence threshold"):
        fit_abstain_threshold(conf, np.zeros(5), target_accuracy=0.5)
    assert binary_auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert binary_auroc([0.8, 0.9], [0.1, 0.2]) == 0.0
    m = open_set_metrics(known, [50.0, 96.0, 200.0, 300.0], tpr=0.95)
    assert m["threshold"] == 95.0 and m["fpr_at_tpr"] == 0.25 and m["n_unknown"] == 4
    assert 0.5 < m["auroc"] < 1.0


# --- pair fusion --------------------------------------------------------------------------
def test_fusion_is_a_normalised_product_of_experts() -> None:
    front = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    back = np.log(np.array([0.2, 0.6, 0.2], dtype=np.float32))
    fused = np.exp(fuse_log_probs(front, back))
    expected = np.array([0.10, 0.18, 0.04]) / 0.32
    np.testing.assert_allclose(fused, expected, atol=1e-6)
    assert math.isclose(float(fused.sum()), 1.0, rel_tol=1e-6)
    flat = np.log(np.full(3, 1 / 3))  # an uninformative side changes nothing
    np.testing.assert_allclose(np.exp(fuse_log_probs(front, flat)), np.exp(front), atol=1e-6)
    assert fuse_ood_scores(-4.0, -2.0) == -3.0
    with pytest.raises(ValueError, match="disagree"):
        fuse_log_probs(front, back[:2])


def test_two_pills_of_one_photo_are_weighed_by_how_likely_they_are_one_pill() -> None:
    """p(same | a, b) = C sum p_a p_b odds against 'different' (uniform prior); the answer is
    w * (product at T) + (1 - w) * own: two confident, agreeing regions sharpen each other,
    two confident, different ones leave each its own answer."""
    c = 50
    sure = np.full(c, np.log(0.1 / (c - 1)))
    sure[3] = np.log(0.9)  # 0.9 on class 3
    other = np.roll(sure, 10)  # 0.9 on class 13
    flat = np.full(c, -np.log(c))
    assert math.isclose(float(same_pill_log_ratio(flat, flat)), 0.0, abs_tol=1e-5)  # no evidence
    assert float(same_pill_log_ratio(sure, sure)) > np.log(30)
    mixed, w = fuse_same_photo(sure, sure, temperature=1.0, prior=0.5)
    assert float(w) > 0.97 and float(np.exp(mixed[3])) > 0.95 > 0.9  # sharper than alone
    mixed, w = fuse_same_photo(sure, other, temperature=1.0, prior=0.5)
    assert float(w) < 0.2  # C * sum p_a p_b = 0.19 here: 50 classes, 0.1 spread over each
    assert int(np.argmax(mixed)) == 3 and 0.8 < float(np.exp(mixed[3])) <= 0.9
    cooler, _ = fuse_same_photo(sure, sure, temperature=2.0, prior=0.5)
    assert np.exp(cooler[3]) < np.exp(fuse_same_photo(sure, sure, 1.0, 0.5)[0][3])
    batch = np.stack([sure, other])
    mixed, w = fuse_same_photo(batch, batch[::-1], 1.5, 0.5)  # leading dimensions
    assert mixed.shape == batch.shape and w.shape == (2,)
    np.testing.assert_allclose(np.exp(mixed).sum(-1), 1.0, rtol=1e-5)
    for bad in ((0.0, 0.5), (1.0, 0.0), (1.0, 1.0)):
        with pytest.raises(ValueError, match="temperature > 0"):
            fuse_same_photo(sure, sure, *bad)
    with pytest.raises(ValueError, match="disagree"):
        same_pill_log_ratio(sure, sure[:10])


@pytest.mark.parametrize("entry, problem", [
    ("1.5", "must be an object"),
    ({"temperature": 1.5}, "numeric temperature and prior"),
    ({"temperature": "warm", "prior": 0.5}, "numeric temperature and prior"),
    ({"temperature": -1, "prior": 0.5}, "temperature > 0"),
    ({"temperature": 1.5, "prior": 1.0}, "0 < prior < 1"),
])
def test_a_malformed_same_photo_rule_is_refused(entry: object, problem: str) -> None:
    assert SamePhotoRule.from_card({}) is None  # no rule: regions answered alone
    assert SamePhotoRule.from_card({"same_photo": {"temperature": 1.5, "prior": 0.5}}) == \
        SamePhotoRule(1.5, 0.5)
    with pytest.raises(ValueError, match=problem):
        SamePhotoRule.from_card({"same_photo": entry})


def test_identify_pair_fuses_both_views(ident: Identifier, images: list[Path]) -> None:
    pair = ident.identify_pair(images[0], images[1], topk=len(ident.labels))
    batch = np.stack([ident.preprocess(images[0]), ident.preprocess(images[1])])
    logits, _ = ident.forward(batch)
    lp = ident.log_probs(logits)
    expected = np.exp(fuse_log_probs(lp[0], lp[1]))
    got = {c.label: c.probability for c in pair.candidates}
    for i, label in enumerate(ident.labels):
        assert math.isclose(got[label], float(expected[i]), rel_tol=1e-5, abs_tol=1e-7)
    scores = ident.ood(logits)
    assert math.isclose(pair.ood_score, float(scores.mean()), rel_tol=1e-5)
    assert " + " in (pair.source or "")


# --- bundled default ----------------------------------------------------------------------
def test_bundled_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                         sample_artifact: Path) -> None:
    monkeypatch.setattr(bundled, "bundled_model_dir", lambda: tmp_path / "missing")
    with pytest.raises(ArtifactError, match="no --model given and no bundled model"):
        bundled.default_model_path()
    assert bundled.resolve_model_path("runs/x") == Path("runs/x")
    monkeypatch.setattr(bundled, "bundled_model_dir", lambda: sample_artifact)
    assert Identifier.load().labels == Identifier.load(sample_artifact).labels
    real = Path(bundled.__file__).resolve().parents[2] / "models" / "rxvision-c3pi-4k"
    monkeypatch.undo()
    assert bundled.bundled_model_dir() == real


# --- CLI -----------------------------------------------------------------------------------
def test_predict_cli_json_schema(sample_artifact: Path, images: list[Path], capsys) -> None:
    rc = main(["predict", "--model", str(sample_artifact), "--json", "--topk", "5",
               str(images[0]), str(images[1])])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in rows] == [str(images[0]), str(images[1])]
    for row in rows:
        assert {"abstain", "unknown", "message", "confidence", "ood_score", "topk"} <= set(row)
        assert len(row["topk"]) == 5
        for entry in row["topk"]:
            assert {"rank", "label", "probability", "metadata", "abstain", "unknown"} <= set(entry)
            assert isinstance(entry["abstain"], bool) and 0.0 <= entry["probability"] <= 1.0
            assert entry["metadata"]["ndc"]


def test_predict_cli_text_and_pair(sample_artifact: Path, images: list[Path], capsys) -> None:
    assert main(["predict", "--model", str(sample_artifact), str(images[0])]) == 0
    out = capsys.readouterr().out
    assert str(images[0]) in out and "1. " in out and "p=" in out
    rc = main(["predict", "--model", str(sample_artifact), "--pair", "--json", "--topk", "2",
               str(images[0]), str(images[1])])
    assert rc == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["image"] == f"{images[0]} + {images[1]}" and len(row["topk"]) == 2
    assert main(["predict", "--model", str(sample_artifact), "--pair", str(images[0])]) == 2
    assert "two by two" in capsys.readouterr().err


def test_predict_batch_folder_csv_and_jsonl(
    sample_artifact: Path, images: list[Path], tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in images[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out_csv = tmp_path / "out" / "results.csv"
    rc = main(["predict", "--model", str(sample_artifact), str(folder), "--out", str(out_csv),
               "--topk", "3", "--no-progress"])
    assert rc == 1  # one bad image: reported, the rest written, non-zero exit
    err = capsys.readouterr().err
    assert "zz_broken.png" in err and "1 of 4 input(s) failed" in err
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 4
    assert rows[-1]["image"].endswith("zz_broken.png") and rows[-1]["error"]
    assert all(r["label_1"] and r["ndc_3"] and not r["error"] for r in rows[:3])
    assert not list(out_csv.parent.glob(".*tmp"))  # atomic: no temp files left behind

    out_jsonl = tmp_path / "results.jsonl"
    rc = main(["predict", "--model", str(sample_artifact), str(images[0].parents[1] /
               "manifest.csv"), "--out", str(out_jsonl), "--topk", "1", "--no-progress"])
    assert rc == 0
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert len(lines) == len(images)
    assert all(r["true_label"] and len(r["topk"]) == 1 for r in lines)


def test_predict_bad_inputs(sample_artifact: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    assert main(["predict", "--model", str(sample_artifact), str(bad)]) == 1
    assert "empty.jpg: empty file" in capsys.readouterr().err
    assert main(["predict", "--model", str(sample_artifact), str(tmp_path / "nope.jpg")]) == 1
    assert "nope.jpg: no such file" in capsys.readouterr().err
    assert main(["predict", "--model", str(sample_artifact), "--out", "x.txt", str(bad)]) == 2
    assert "--out must end in .csv or .jsonl" in capsys.readouterr().err
    monkeypatch.setattr(bundled, "bundled_model_dir", lambda: tmp_path / "no-model")
    assert main(["predict", str(bad)]) == 2
    assert "no bundled model found" in capsys.readouterr().err


def test_identifier_fit_thresholds(sample_artifact: Path, sample_dir: Path) -> None:
    ident = Identifier.load(sample_artifact)
    data = load_dataset(sample_dir / "manifest.csv")
    fit = ident.fit_thresholds(data, tpr=0.5, target_accuracy=0.0)
    assert fit["n"] == len(data) and fit["ood_method"] == "energy"
    assert fit["fitted_on"].endswith("manifest.csv")
    tuned = Identifier.load(sample_artifact, abstain_threshold=fit["abstain_threshold"],
                            ood_threshold=fit["ood_threshold"])
    results = tuned.identify([s.path for s in data.samples])
    assert not any(r.confidence < tuned.abstain_threshold for r in results)
    assert sum(r.unknown for r in results) == len(data) // 2  # tpr 0.5 keeps half below
    with pytest.raises(ValueError, match="no confidence threshold"):
        ident.fit_thresholds(data, target_accuracy=1.01)


def test_onnx_backend_matches_torch(sample_artifact: Path, sample_dir: Path, images: list[Path],
                                    tmp_path: Path) -> None:
    from rxvision.deploy.export import export_artifact

    export_artifact(sample_artifact, tmp_path / "onnx", parity_data=sample_dir / "manifest.csv",
                    num_parity=2)
    torch_id = Identifier.load(sample_artifact)
    onnx_id = Identifier.load(tmp_path / "onnx", backend="onnx", threads=1)
    for a, b in zip(torch_id.identify(images[:3]), onnx_id.identify(images[:3]), strict=True):
        assert a.top.label == b.top.label
        assert math.isclose(a.confidence, b.confidence, rel_tol=1e-3)
        assert math.isclose(a.ood_score, b.ood_score, rel_tol=1e-3)
    assert onnx_id.identify_pair(images[0], images[1]).candidates
    with pytest.raises(IdentifierError, match=r"explain\(\) needs the torch model"):
        onnx_id.explain(images[0])
    with pytest.raises(IdentifierError, match="cosine OOD score needs embeddings"):
        Identifier.load(tmp_path / "onnx", backend="onnx", ood_method="cosine")
    with pytest.raises(ArtifactError, match="is an ONNX export"):
        Identifier.load(tmp_path / "onnx")
