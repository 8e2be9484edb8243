"""Open-set evaluation (`evaluate --unknown`) and threshold fitting (`calibrate --thresholds`).

The model knows 12 of the 24 sample pills; the other 12 photos are the unknown pills.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rxvision.artifact import read_card, save_artifact, update_card
from rxvision.cli import main
from rxvision.data import load_dataset
from rxvision.engine.evaluate import predict
from rxvision.engine.metrics import softmax
from rxvision.engine.openset_eval import (
    OpenSetScores,
    card_thresholds,
    coverage_curve,
    open_set_study,
)
from rxvision.identify.backends import load_backend
from rxvision.identify.identifier import MESSAGE_UNKNOWN, Identifier, IdentifierError
from rxvision.identify.openset import (
    binary_auroc,
    fit_abstain_threshold,
    fit_class_centres,
    fit_ood_threshold,
    ood_scores,
)
from rxvision.models import build_model

CLI_OPTS = ["--workers", "0", "--batch-size", "8", "--no-progress"]


def _write_manifest(path: Path, rows: list[tuple[Path, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "ndc"])
        writer.writerows([str(p.resolve()), lab, lab] for p, lab in rows)
    return path


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> dict[str, Path]:
    """known.csv / unknown.csv: 12 sample pills each (alternate labels)."""
    images = load_dataset(sample_dir / "manifest.csv")
    known = set(images.labels[::2])
    out = tmp_path_factory.mktemp("openset")
    rows = [(s.path, s.label) for s in images.samples]
    return {
        "known": _write_manifest(out / "known.csv", [r for r in rows if r[1] in known]),
        "unknown": _write_manifest(out / "unknown.csv", [r for r in rows if r[1] not in known]),
    }


@pytest.fixture(scope="module")
def known_artifact(tmp_path_factory: pytest.TempPathFactory, config_factory,
                   split: dict[str, Path]) -> Path:
    """Random-weight resnet18 (64 px) whose labels are the 12 known pills. Read only."""
    labels = load_dataset(split["known"]).labels
    cfg = config_factory(num_classes=len(labels))
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_artifact(tmp_path_factory.mktemp("art") / "known12", model, cfg, labels)


@pytest.fixture(scope="module")
def known_logits(known_artifact: Path, split: dict[str, Path]) -> tuple[np.ndarray, list[str]]:
    """Raw logits of the known photos (via the Identifier) and the labels it predicts."""
    ident = Identifier.load(known_artifact)
    x = np.stack([ident.preprocess(s.path) for s in load_dataset(split["known"]).samples])
    logits, _ = ident.forward(x)
    return logits, [ident.labels[i] for i in logits.argmax(1).tolist()]


# --- the study on hand-made scores ------------------------------------------------------
def test_open_set_study_on_known_values() -> None:
    s = OpenSetScores(
        method="energy",
        known=np.arange(10, dtype=float),  # 0..9
        unknown=np.arange(5, 15, dtype=float),  # 5..14: half overlap
        known_correct=np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool),
        known_confidence=np.linspace(0.9, 0.45, 10),
        unknown_confidence=np.full(10, 0.6),
    )
    thr = {"ood_method": "energy", "abstain_threshold": 0.5, "ood_threshold": 4.0}
    study = open_set_study(s, thr, sweep=(0.5, 1.0))
    assert study["auroc"] == pytest.approx(binary_auroc(s.known, s.unknown))
    assert study["threshold_at_95_tpr"] == 9.0 and study["fpr_at_95_tpr"] == 0.5
    assert (study["n_known"], study["n_unknown"]) == (10, 10)
    rows = {r["tpr"]: r for r in study["accuracy_coverage"]}
    assert [r["threshold"] for r in study["accuracy_coverage"]] == [4.0, 4.0, 9.0]
    assert rows[0.5] == rows["card"] | {"tpr": 0.5}
    assert rows[0.5]["known_coverage"] == 0.5 and rows[0.5]["known_accuracy_on_accepted"] == 1.0
    assert rows[0.5]["unknown_rejected"] == 1.0
    assert rows[1.0]["known_accuracy_on_accepted"] == 0.5
    assert rows[1.0]["unknown_rejected"] == 0.5  # 10..14
    ab = study["abstention"]
    # Known answered: confidence >= 0.5 (first 9) and score <= 4 (first 5) -> 5, all right.
    assert ab["known_answered"] == 0.5 and ab["accuracy_on_answered"] == 1.0
    assert ab["unknown_answered"] == 0.0 and ab["precision_with_unknowns"] == 1.0
    no_ood = open_set_study(s, {**thr, "ood_threshold": None})["abstention"]
    assert no_ood["known_answered"] == 0.9 and no_ood["unknown_answered"] == 1.0
    assert no_ood["precision_with_unknowns"] == pytest.approx(5 / 19)
    curve = coverage_curve(s)
    i = int(np.searchsorted(curve["threshold"], 4.0))
    assert curve["known_coverage"][i] == 0.5 and curve["known_accuracy"][i] == 1.0
    assert curve["unknown_accepted"][i] == 0.0 and curve["known_coverage"][-1] == 1.0
    assert np.all(np.diff(curve["unknown_accepted"]) >= 0)


def test_the_studys_answers_follow_the_pipeline_conditions() -> None:
    """A weighed pill is answered only when it alone is sure (alone_confidence), and only
    photos the finder's gates pass are answered, on the known and the unknown side."""
    from rxvision.engine.evaluate import Predictions
    from rxvision.engine.openset_eval import score_predictions

    logits = np.log(np.array([[0.9, 0.05, 0.05]] * 4, np.float32))  # each 0.9 sure of 0
    known = Predictions(logits, np.array([0, 0, 0, 0]), ["a"] * 4, ["p"] * 4,
                        alone_confidence=np.array([np.nan, 0.5, 0.95, np.nan]))
    unknown = Predictions(logits, np.array([-1, -1, -1, -1]), ["u"] * 4, ["q"] * 4,
                          alone_confidence=np.array([0.3, np.nan, np.nan, np.nan]))
    s = score_predictions(known, unknown, 1.0)
    np.testing.assert_allclose(s.known_confidence, [0.9, 0.5, 0.9, 0.9], rtol=1e-5)
    np.testing.assert_allclose(s.unknown_confidence, [0.3, 0.9, 0.9, 0.9], rtol=1e-5)
    thr = {"ood_method": "energy", "abstain_threshold": 0.8, "ood_threshold": None}
    ab = open_set_study(s, thr, sweep=(1.0,))["abstention"]
    assert ab["known_answered"] == 0.75 and ab["unknown_answered"] == 0.75
    s.known_answerable = np.array([True, True, True, False])  # the finder doubts the last
    s.unknown_answerable = np.array([True, False, False, True])
    ab = open_set_study(s, thr, sweep=(1.0,))["abstention"]
    assert ab["known_answered"] == 0.5 and ab["unknown_answered"] == 0.25
    assert ab["precision_with_unknowns"] == pytest.approx(2 / 3)


def test_card_thresholds_follow_the_identifier_rules() -> None:
    assert card_thresholds({}) == {"ood_method": "energy", "abstain_threshold": 0.5,
                                   "ood_threshold": None,
                                   "source": {"abstain_threshold": "default",
                                              "ood_threshold": "none"}}
    card = {"identification": {"ood_method": "max_logit", "ood_threshold": -3.0,
                               "abstain_threshold": 0.7}}
    assert card_thresholds(card)["ood_threshold"] == -3.0
    assert card_thresholds(card)["abstain_threshold"] == 0.7
    # A threshold fitted for one score does not apply to another.
    assert card_thresholds(card, "energy")["ood_threshold"] is None


# --- evaluate --unknown -----------------------------------------------------------------
def test_evaluate_unknown_writes_open_set_json_and_report(
    known_artifact: Path, split: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out, rep = tmp_path / "m.json", tmp_path / "rep"
    rc = main(["evaluate", "--model", str(known_artifact), "--data", str(split["known"]),
               "--unknown", str(split["unknown"]), "--json", str(out), "--report", str(rep),
               *CLI_OPTS])
    assert rc == 0
    doc = json.loads(out.read_text())
    os_ = doc["open_set"]
    assert os_["score"] == "energy" and (os_["n_known"], os_["n_unknown"]) == (12, 12)
    assert 0.0 <= os_["auroc"] <= 1.0 and 0.0 <= os_["fpr_at_95_tpr"] <= 1.0
    assert os_["skipped_known_labels"] == 0 and os_["data"].endswith("unknown.csv")
    for row in os_["accuracy_coverage"]:
        assert {"tpr", "threshold", "known_coverage", "known_accuracy_on_accepted",
                "unknown_rejected"} <= set(row)
        assert row["known_coverage"] >= row["tpr"]  # each threshold keeps its TPR
        for key in ("known_coverage", "known_accuracy_on_accepted", "unknown_rejected"):
            assert 0.0 <= row[key] <= 1.0
    ab = os_["abstention"]
    assert ab["abstain_threshold"] == 0.5 and ab["ood_threshold"] is None
    assert ab["source"] == {"abstain_threshold": "default", "ood_threshold": "none"}
    for key in ("known_answered", "unknown_answered"):
        assert 0.0 <= ab[key] <= 1.0
    # Same scores as the Identifier gives photo by photo.
    ident = Identifier.load(known_artifact)
    scores = {name: [r.ood_score for r in ident.identify(
        [s.path for s in load_dataset(split[name]).samples])] for name in ("known", "unknown")}
    assert os_["auroc"] == pytest.approx(binary_auroc(scores["known"], scores["unknown"]))
    assert os_["threshold_at_95_tpr"] == pytest.approx(fit_ood_threshold(scores["known"]),
                                                       abs=1e-4)
    html = (rep / "index.html").read_text()
    assert "Unknown pills (open set)" in html and 'src="open_set.png"' in html
    assert (rep / "open_set.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "open set (energy): 12 known vs 12 unknown photos, AUROC" in printed
    assert "unknown answered" in printed


def test_evaluate_unknown_uses_card_thresholds_and_skips_known_labels(
    known_artifact: Path, copy_artifact, sample_dir: Path, split: dict[str, Path],
    tmp_path: Path,
) -> None:
    run = copy_artifact(known_artifact)
    update_card(run, identification={"ood_method": "max_logit", "ood_threshold": 1e9,
                                     "abstain_threshold": 0.0})
    out = tmp_path / "m.json"
    # The whole sample as --unknown: its 12 known pills are left out and counted.
    assert main(["evaluate", "--model", str(run), "--data", str(split["known"]),
                 "--unknown", str(sample_dir / "manifest.csv"), "--json", str(out),
                 *CLI_OPTS]) == 0
    os_ = json.loads(out.read_text())["open_set"]
    assert os_["score"] == "max_logit" and os_["skipped_known_labels"] == 12
    assert os_["n_unknown"] == 12
    card_row = [r for r in os_["accuracy_coverage"] if r["tpr"] == "card"]
    assert len(card_row) == 1 and card_row[0]["known_coverage"] == 1.0
    ab = os_["abstention"]  # nothing abstains, nothing is flagged: everything is answered
    assert ab["known_answered"] == 1.0 and ab["unknown_answered"] == 1.0
    assert ab["source"] == {"abstain_threshold": "card", "ood_threshold": "card"}


def test_evaluate_unknown_refuses_an_unknown_set_of_known_pills(
    known_artifact: Path, split: dict[str, Path], capsys
) -> None:
    rc = main(["evaluate", "--model", str(known_artifact), "--data", str(split["known"]),
               "--unknown", str(split["known"]), *CLI_OPTS])
    assert rc == 2
    assert "--unknown must show pills that are not in the model" in capsys.readouterr().err


def test_cosine_scores_come_from_one_forward_pass(
    known_artifact: Path, split: dict[str, Path], tmp_path: Path
) -> None:
    backend = load_backend(known_artifact)
    calls = []
    backend.model.forward_features = _counting(backend.model.forward_features, calls)
    images = load_dataset(split["known"])
    pred = predict(backend, images, batch_size=8, workers=0, embeddings=True, progress=False)
    assert len(calls) == 2  # 12 images, batches of 8: one pass per batch
    x = torch.from_numpy(np.stack(_preprocessed(known_artifact, images)))  # (12, 3, 64, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(pred.logits, backend(x).numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(pred.embeddings, backend.embed(x).numpy(), rtol=1e-4,
                                   atol=1e-4)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(known_artifact), "--data", str(split["known"]),
                 "--unknown", str(split["unknown"]), "--ood-method", "cosine",
                 "--json", str(out), *CLI_OPTS]) == 0
    os_ = json.loads(out.read_text())["open_set"]
    assert os_["score"] == "cosine" and 0.0 <= os_["auroc"] <= 1.0


def _counting(fn, calls: list):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)
    return wrapped


def _preprocessed(artifact: Path, images) -> list[np.ndarray]:
    ident = Identifier.load(artifact)
    return [ident.preprocess(s.path) for s in images.samples]


# --- calibrate --thresholds -------------------------------------------------------------
def test_calibrate_thresholds_writes_card_and_drives_identifier(
    known_artifact: Path, copy_artifact, split: dict[str, Path], known_logits
) -> None:
    run = copy_artifact(known_artifact)
    update_card(run, identification={"note": "kept"})
    rc = main(["calibrate", "--model", str(run), "--data", str(split["known"]), "--thresholds",
               "--target-tpr", "0.5", "--abstain-threshold", "0.2", *CLI_OPTS])
    assert rc == 0
    card = read_card(run)
    ident_card, cal = card["identification"], card["calibration"]
    assert ident_card["note"] == "kept"  # merged, not replaced
    assert ident_card["temperature"] == cal["temperature"]  # thresholds use the new T
    assert ident_card["abstain_threshold"] == 0.2 and ident_card["abstain_rule"] == "fixed"
    assert ident_card["ood_method"] == "energy" and ident_card["tpr"] == 0.5
    assert ident_card["n"] == 12 and ident_card["fitted_on"].endswith("known.csv")
    logits, _ = known_logits
    energy = ood_scores(logits, method="energy")
    assert ident_card["ood_threshold"] == pytest.approx(fit_ood_threshold(energy, 0.5),
                                                        abs=1e-4)
    # The Identifier reads them: half the known photos now score as unknown.
    ident = Identifier.load(run)
    assert ident.abstain_threshold == 0.2
    assert ident.ood_threshold == ident_card["ood_threshold"]
    results = ident.identify([s.path for s in load_dataset(split["known"]).samples])
    assert sum(r.unknown for r in results) == 6
    for r in results:
        assert r.abstain == (r.unknown or r.confidence < 0.2)
        if r.unknown:
            assert r.message == MESSAGE_UNKNOWN
    before = [r.unknown for r in Identifier.load(known_artifact).identify(
        [s.path for s in load_dataset(split["known"]).samples])]
    assert not any(before)  # no card threshold: nothing was flagged before


def test_calibrate_abstain_precision_rule_with_new_temperature(
    known_artifact: Path, copy_artifact, split: dict[str, Path], known_logits, tmp_path: Path
) -> None:
    logits, predicted = known_logits
    images = load_dataset(split["known"])
    labels = read_card(known_artifact)["labels"]
    # Views labelled so that the model is right on 8 of 12: a reachable precision target.
    rows = []
    for i, (s, guess) in enumerate(zip(images.samples, predicted, strict=True)):
        wrong = labels[(labels.index(guess) + 1) % len(labels)]
        rows.append((s.path, guess if i % 3 else wrong))
    views = _write_manifest(tmp_path / "views.csv", rows)
    run = copy_artifact(known_artifact)
    assert main(["calibrate", "--model", str(run), "--data", str(views), "--thresholds",
                 "--abstain-precision", "0.75", *CLI_OPTS]) == 0
    card = read_card(run)
    t_new = card["calibration"]["temperature"]
    assert not math.isclose(t_new, 1.0)
    targets = np.array([labels.index(lab) for _, lab in rows])
    probs = softmax(logits, t_new)
    expected = fit_abstain_threshold(probs.max(1), probs.argmax(1) == targets, 0.75)
    ident_card = card["identification"]
    assert ident_card["abstain_rule"] == "target_accuracy"
    assert ident_card["target_accuracy"] == 0.75 and ident_card["tpr"] == 0.95
    assert ident_card["abstain_threshold"] == pytest.approx(expected, rel=1e-4)
    # The threshold is one photo's own confidence, from calibrate's pass over the views;
    # these logits come from another pass (float sums differ in the last bits by thread
    # count and batch), so compare with a tolerance.
    answered = probs.max(1) >= ident_card["abstain_threshold"] - 1e-5
    assert ident_card["accuracy_on_answered"] is not None
    assert ident_card["answered"] <= answered.mean() + 1e-9  # OOD flags answer fewer


def test_calibrate_threshold_errors(known_artifact: Path, copy_artifact,
                                    split: dict[str, Path], known_logits, tmp_path: Path,
                                    capsys) -> None:
    run = copy_artifact(known_artifact)
    before = (run / "card.json").read_text()
    assert main(["calibrate", "--model", str(run), "--data", str(split["known"]),
                 "--target-tpr", "0.5", *CLI_OPTS]) == 2
    assert "add --thresholds" in capsys.readouterr().err
    _, predicted = known_logits
    labels = read_card(known_artifact)["labels"]
    images = load_dataset(split["known"])
    all_wrong = _write_manifest(tmp_path / "wrong.csv", [
        (s.path, labels[(labels.index(g) + 1) % len(labels)])
        for s, g in zip(images.samples, predicted, strict=True)])
    assert main(["calibrate", "--model", str(run), "--data", str(all_wrong), "--thresholds",
                 *CLI_OPTS]) == 2
    assert "lower --abstain-precision" in capsys.readouterr().err
    assert (run / "card.json").read_text() == before  # nothing written on failure
    with pytest.raises(SystemExit):
        main(["calibrate", "--model", str(run), "--data", str(all_wrong), "--thresholds",
              "--abstain-threshold", "0.5", "--abstain-precision", "0.9"])


# --- centred_max_logit: per-class logit centres ----------------------------------------
def test_fit_class_centres_shrinks_by_the_empirical_bayes_weight() -> None:
    # Class 0's own logits 5 and 7, class 1's 0 and 2, class 2 has no view.
    logits = torch.zeros(5, 3)
    logits[0, 0], logits[1, 0], logits[2, 1], logits[3, 1] = 5.0, 7.0, 0.0, 2.0
    targets = torch.tensor([0, 0, 1, 1, -1])  # the -1 view (unknown label) is ignored
    centres, fit = fit_class_centres(logits, targets)
    within = (1 + 1 + 1 + 1) / (4 - 2)  # squared deviations from the class means / dof
    between = np.var([6.0, 1.0]) - within * 0.5  # the noise in a mean of 2 views removed
    prior, grand = within / between, 3.5
    assert fit["prior_views"] == pytest.approx(prior) and fit["grand_mean"] == pytest.approx(grand)
    assert fit["classes_with_views"] == 2
    assert centres == pytest.approx([(12 + prior * grand) / (2 + prior),
                                     (2 + prior * grand) / (2 + prior), grand])
    with pytest.raises(ValueError, match="at least two views"):
        fit_class_centres(logits[[0, 2]], torch.tensor([0, 1]))


def test_centred_max_logit_scores_against_the_top_class_centre() -> None:
    logits = torch.tensor([[4.0, 1.0], [0.5, 2.0]])
    centres = torch.tensor([3.0, 2.5])
    # Photo 0: top class 0, 4 - 3 = 1 above its level; photo 1: class 1, 0.5 below.
    assert ood_scores(logits, method="centred_max_logit", class_centres=centres).tolist() == [
        -1.0, 0.5]
    with pytest.raises(ValueError, match="rxvision calibrate"):
        ood_scores(logits, method="centred_max_logit")
    with pytest.raises(ValueError, match="3 class centres for 2 classes"):
        ood_scores(logits, method="centred_max_logit", class_centres=torch.zeros(3))


def test_calibrate_stores_class_centres_that_drive_identifier_and_evaluate(
    known_artifact: Path, copy_artifact, split: dict[str, Path], two_view_manifest: Path,
    tmp_path: Path, capsys
) -> None:
    known_labels = set(load_dataset(split["known"]).labels)
    with open(two_view_manifest, newline="") as fh:
        rows = [(Path(r["image"]), r["label"]) for r in csv.DictReader(fh)
                if r["label"] in known_labels]
    views = _write_manifest(tmp_path / "two_views.csv", rows)  # 24 photos, 2 per class
    with pytest.raises(IdentifierError, match="rxvision calibrate"):
        Identifier.load(known_artifact, ood_method="centred_max_logit")
    run = copy_artifact(known_artifact)
    assert main(["calibrate", "--model", str(run), "--data", str(views), "--thresholds",
                 "--ood-method", "centred_max_logit", "--target-tpr", "0.5",
                 "--abstain-threshold", "0.0", *CLI_OPTS]) == 0
    assert "class centres for 12 classes" in capsys.readouterr().out
    card = read_card(run)
    ident = Identifier.load(run)
    x = np.stack([ident.preprocess(p) for p, _ in rows])
    logits, _ = ident.forward(x)
    targets = np.array([ident.labels.index(lab) for _, lab in rows])
    expected, _ = fit_class_centres(logits, targets)
    assert card["calibration"]["own_logit_means"] == pytest.approx(expected.tolist(), abs=1e-5)
    assert card["identification"]["ood_method"] == "centred_max_logit"
    assert ident.ood_method == "centred_max_logit"
    scores = [r.ood_score for r in ident.identify([p for p, _ in rows])]
    top = logits.argmax(1)
    own = logits[np.arange(len(logits)), top]
    assert scores == pytest.approx((-(own - expected[top])).tolist(), abs=1e-4)
    flagged = [r.unknown for r in ident.identify([p for p, _ in rows])]
    assert flagged == [sc > ident.ood_threshold for sc in scores]
    assert abs(sum(flagged) - 12) <= 1  # tpr 0.5 (a tie at the threshold may tip one)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(run), "--data", str(views), "--unknown",
                 str(split["unknown"]), "--json", str(out), *CLI_OPTS]) == 0
    os_ = json.loads(out.read_text())["open_set"]
    assert os_["score"] == "centred_max_logit" and (os_["n_known"], os_["n_unknown"]) == (24, 12)
    unknown = [r.ood_score for r in ident.identify(
        [s.path for s in load_dataset(split["unknown"]).samples])]
    assert os_["auroc"] == pytest.approx(binary_auroc(scores, unknown))


def test_centred_max_logit_needs_two_views_of_some_class(
    known_artifact: Path, copy_artifact, split: dict[str, Path], capsys
) -> None:
    run = copy_artifact(known_artifact)
    before = (run / "card.json").read_text()
    assert main(["calibrate", "--model", str(run), "--data", str(split["known"]), "--thresholds",
                 "--ood-method", "centred_max_logit", *CLI_OPTS]) == 2
    assert "at least two views" in capsys.readouterr().err
    assert (run / "card.json").read_text() == before
    # Without that score, one view per class only skips the centres, with a note.
    assert main(["calibrate", "--model", str(run), "--data", str(split["known"]),
                 *CLI_OPTS]) == 0
    assert "note: no per-class logit centres" in capsys.readouterr().out
    assert "own_logit_means" not in read_card(run)["calibration"]
    assert main(["evaluate", "--model", str(run), "--data", str(split["known"]), "--unknown",
                 str(split["unknown"]), "--ood-method", "centred_max_logit", *CLI_OPTS]) == 2
    assert "rxvision calibrate" in capsys.readouterr().err


def test_card_rule_on_known_counts_answers_and_wrong_answers() -> None:
    from types import SimpleNamespace

    from rxvision.engine.evaluate import Predictions
    from rxvision.engine.openset_eval import card_rule_on_known

    # Four known photos: confident right, confident wrong, unsure right, confident right
    # but with a high energy score (flagged unknown); one photo of a pill not in the model.
    logits = np.array([[9.0, 0, 0], [0, 9.0, 0], [0.2, 0, 0], [-9.0, -9.0, -6.0],
                       [5.0, 0, 0]], dtype=np.float32)
    pred = Predictions(logits, np.array([0, 0, 0, 2, -1]), ["a", "a", "a", "c", "z"],
                       ["p"] * 5)
    card = {"labels": ["a", "b", "c"], "identification": {
        "abstain_threshold": 0.6, "ood_method": "energy", "ood_threshold": 0.0}}
    backend = SimpleNamespace(card=card, temperature=1.0)
    rule = card_rule_on_known(backend, pred)
    # energy = -logsumexp: about -9 for the confident rows, +5.9 for the low one
    assert rule["answered"] == 0.5 and rule["wrong_of_answered"] == 0.5
    del card["identification"]["ood_threshold"]
    rule = card_rule_on_known(backend, pred)  # confidence alone: row 4 is answered too
    assert rule["ood_threshold"] is None
    assert rule["answered"] == 0.75 and rule["wrong_of_answered"] == 1 / 3


def test_card_rule_holds_back_what_the_finder_doubts_as_the_pipeline_does() -> None:
    from types import SimpleNamespace

    from rxvision.engine.evaluate import Predictions
    from rxvision.engine.openset_eval import card_rule_on_known
    from rxvision.identify.pipeline import MIN_PILL_PX

    # Four confident known photos: a sure pill (right), a region the finder doubts (wrong),
    # a pill too small to name (right) and a photo where nothing was found (wrong).
    logits = np.array([[9.0, 0, 0], [0, 9.0, 0], [9.0, 0, 0], [0, 0, 9.0]], dtype=np.float32)
    pred = Predictions(logits, np.array([0, 0, 0, 0]), ["a"] * 4, ["p"] * 4,
                       pill_px=np.array([120.0, 120.0, MIN_PILL_PX - 1, 0.0]),
                       finder_score=np.array([0.97, 0.85, 0.97, 0.0]))
    card = {"labels": ["a", "b", "c"], "identification": {
        "abstain_threshold": 0.6, "min_finder_score": 0.9}}
    backend = SimpleNamespace(card=card, temperature=1.0)
    rule = card_rule_on_known(backend, pred)
    assert (rule["answered_count"], rule["wrong_count"]) == (1, 0)
    assert rule["held_by_finder"] == 3 and rule["held_by_finder_wrong"] == 2
    card["identification"]["min_finder_score"] = 0.0  # no gate: the doubted region answers
    rule = card_rule_on_known(backend, pred)
    assert (rule["answered_count"], rule["wrong_count"]) == (2, 1)
    card["identification"]["min_finder_score"] = "high"
    with pytest.raises(IdentifierError, match="min_finder_score must be a number"):
        card_rule_on_known(backend, pred)
    # Predictions without finder scores (a whole-photo model): the confidence rule alone.
    pred.finder_score = None
    card["identification"]["min_finder_score"] = 0.9
    rule = card_rule_on_known(backend, pred)
    assert rule["answered_count"] == 4 and "held_by_finder" not in rule


def test_card_rule_answers_a_weighed_pair_only_when_one_region_alone_is_sure() -> None:
    """Predictions.alone_confidence (a photo's pill weighed with its other region): the
    rule needs it at the threshold too, as PillPipeline.decide does."""
    from types import SimpleNamespace

    from rxvision.engine.evaluate import Predictions
    from rxvision.engine.openset_eval import card_rule_on_known

    logits = np.array([[9.0, 0, 0], [9.0, 0, 0], [0, 9.0, 0]], dtype=np.float32)
    card = {"labels": ["a", "b", "c"], "identification": {"abstain_threshold": 0.6}}
    backend = SimpleNamespace(card=card, temperature=1.0)
    for alone, expected in (([np.nan, 0.9, 0.7], (3, 1)), ([np.nan, 0.5, 0.7], (2, 1)),
                            ([np.nan, 0.9, 0.4], (2, 0))):
        pred = Predictions(logits, np.array([0, 0, 0]), ["a"] * 3, ["p"] * 3,
                           alone_confidence=np.array(alone))
        rule = card_rule_on_known(backend, pred)
        assert (rule["answered_count"], rule["wrong_count"]) == expected
