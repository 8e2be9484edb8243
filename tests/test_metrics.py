"""Every metric in rxvision.engine.metrics against scikit-learn (or a plain-loop reference)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from rxvision.engine import metrics as M

C = 12
LABELS = [f"c{i}" for i in range(C)]


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray]:
    """300 samples, 12 classes, of which classes 9-11 never occur as targets."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 9, size=300)
    logits = rng.normal(size=(300, C)) * 2
    logits[np.arange(300), targets] += 2.0  # better than chance, still many mistakes
    return M.softmax(logits), targets


def ece_reference(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """Textbook ECE with an explicit loop over (lo, hi] bins."""
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == targets[inside]).mean()
                                         - conf[inside].mean())
    return total


def test_softmax_rows_sum_to_one_and_temperature_softens() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    p1, p3 = M.softmax(logits), M.softmax(logits, 3.0)
    np.testing.assert_allclose(p1.sum(1), 1.0)
    assert np.isfinite(p1).all()
    assert p3[0].max() < p1[0].max()
    with pytest.raises(ValueError, match="temperature"):
        M.softmax(logits, 0.0)


def test_topk_matches_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    for k in (1, 3, 5):
        expected = skm.top_k_accuracy_score(targets, probs, k=k, labels=range(C))
        assert M.topk_accuracy(probs, targets, k) == pytest.approx(expected)
    assert M.topk_accuracy(probs, targets, 1) == pytest.approx(
        skm.accuracy_score(targets, probs.argmax(1)))
    assert M.topk_accuracy(probs, targets, 50) == 1.0  # k capped at the number of classes


def test_top1_agrees_with_argmax_on_ties() -> None:
    probs = np.full((4, 3), 1 / 3)
    targets = np.array([0, 1, 2, 0])
    assert M.topk_accuracy(probs, targets, 1) == pytest.approx(0.5)  # argmax is class 0
    assert M.topk_accuracy(probs, targets, 2) == pytest.approx(0.75)


def test_f1_matches_sklearn_with_absent_classes(case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    preds = probs.argmax(1)
    assert set(preds) - set(targets), "case should predict classes absent from the targets"
    macro, weighted = M.f1_scores(targets, preds, C)
    assert macro == pytest.approx(skm.f1_score(targets, preds, average="macro", zero_division=0))
    assert weighted == pytest.approx(
        skm.f1_score(targets, preds, average="weighted", zero_division=0))


def test_per_class_matches_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    preds = probs.argmax(1)
    p, r, f, s, _ = M.precision_recall_support(targets, preds, C)
    ep, er, ef, es = skm.precision_recall_fscore_support(targets, preds, labels=range(C),
                                                          zero_division=0)
    np.testing.assert_allclose(p, ep)
    np.testing.assert_allclose(r, er)
    np.testing.assert_allclose(f, ef)
    np.testing.assert_array_equal(s, es)
    rows = M.per_class_table(probs, targets, LABELS)
    seen = set(targets) | set(preds)
    assert [row["label"] for row in rows] == [LABELS[c] for c in sorted(seen)]
    assert sum(row["support"] for row in rows) == len(targets)
    np.testing.assert_array_equal(M.confusion_matrix(targets, preds, C),
                                  skm.confusion_matrix(targets, preds, labels=range(C)))


def test_roc_auc_matches_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    present = np.unique(targets)
    expected = np.mean([skm.roc_auc_score(targets == c, probs[:, c]) for c in present])
    assert M.roc_auc_ovr(probs, targets) == pytest.approx(expected)
    # With every class present it is scikit-learn's macro one-vs-rest AUC.
    rng = np.random.default_rng(1)
    full_t = np.concatenate([np.arange(C), rng.integers(0, C, 100)])
    full_p = M.softmax(rng.normal(size=(len(full_t), C)))
    assert M.roc_auc_ovr(full_p, full_t) == pytest.approx(
        skm.roc_auc_score(full_t, full_p, multi_class="ovr", average="macro"))


def test_roc_auc_handles_tied_scores() -> None:
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    targets = np.array([0, 1, 0, 1])
    expected = np.mean([skm.roc_auc_score(targets == c, probs[:, c]) for c in (0, 1)])
    assert M.roc_auc_ovr(probs, targets) == pytest.approx(expected)


def test_nll_brier_ece_match_references(case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    assert M.nll(probs, targets) == pytest.approx(skm.log_loss(targets, probs, labels=range(C)))
    assert M.brier(probs, targets) == pytest.approx(
        skm.brier_score_loss(targets, probs, labels=range(C), scale_by_half=False))
    onehot = np.eye(C)[targets]
    assert M.brier(probs, targets) == pytest.approx(((probs - onehot) ** 2).sum(1).mean())
    assert M.ece(probs, targets) == pytest.approx(ece_reference(probs, targets))
    bins = M.calibration_bins(probs, targets)
    assert bins["count"].sum() == len(targets) and len(bins["count"]) == 15


def test_ece_zero_when_confidence_equals_accuracy() -> None:
    # Two samples at confidence 0.5, one right: accuracy equals confidence in that bin.
    probs = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
    assert M.ece(probs, np.array([0, 1])) == pytest.approx(0.0)
    assert M.ece(probs, np.array([1, 1])) == pytest.approx(0.5)


def test_accuracy_at_coverage() -> None:
    # Confidences 0.9 (right), 0.8 (right), 0.7 (wrong), 0.6 (wrong), sorted descending.
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    targets = np.array([0, 1, 1, 0])
    acc = M.accuracy_at_coverage(probs, targets)
    assert acc == {"0.5": 1.0, "0.8": pytest.approx(2 / 4), "0.9": pytest.approx(2 / 4),
                   "1.0": 0.5}  # ceil(0.8 * 4) = 4 photos
    cov, curve = M.coverage_curve(probs, targets)
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve, [1.0, 1.0, 2 / 3, 0.5])


def test_most_confused_counts_match_confusion_matrix(case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    preds = probs.argmax(1)
    pairs = M.most_confused(targets, preds, LABELS, top=5)
    cm = skm.confusion_matrix(targets, preds, labels=range(C))
    np.fill_diagonal(cm, 0)
    assert [p["count"] for p in pairs] == sorted(cm.ravel(), reverse=True)[:5]
    for p in pairs:
        assert cm[LABELS.index(p["true"]), LABELS.index(p["predicted"])] == p["count"]
    assert M.most_confused(targets, targets, LABELS) == []


def test_compute_metrics_keys_and_consistency(case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, targets = case
    out = M.compute_metrics(probs, targets, LABELS)
    assert tuple(out) == M.HEADLINE_KEYS
    assert out["n"] == 300
    assert out["accuracy_at_coverage"]["1.0"] == pytest.approx(out["top1"])
    assert set(out["accuracy_at_coverage"]) == {"0.5", "0.8", "0.9", "1.0"}
    with pytest.raises(ValueError, match="labels"):
        M.compute_metrics(probs, targets, LABELS[:-1])


def test_single_class_edge_case() -> None:
    """All targets one class: ROC AUC is undefined (None); F1 and the rest still work."""
    rng = np.random.default_rng(2)
    probs = M.softmax(rng.normal(size=(20, 4)))
    targets = np.full(20, 2)
    preds = probs.argmax(1)
    out = M.compute_metrics(probs, targets, ["a", "b", "c", "d"])
    assert out["roc_auc_macro"] is None
    assert out["f1_macro"] == pytest.approx(
        skm.f1_score(targets, preds, average="macro", zero_division=0))
    assert out["f1_weighted"] == pytest.approx(
        skm.f1_score(targets, preds, average="weighted", zero_division=0))
    assert np.isfinite([out["nll"], out["ece"], out["brier"], out["top1"]]).all()


def test_empty_and_invalid_inputs() -> None:
    out = M.compute_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int), ["a", "b", "c"])
    assert out["n"] == 0 and out["top1"] is None and out["accuracy_at_coverage"]["0.5"] is None
    with pytest.raises(ValueError, match="unknown"):
        M.compute_metrics(np.full((2, 3), 1 / 3), np.array([0, -1]), ["a", "b", "c"])
    with pytest.raises(ValueError, match="expected"):
        M.nll(np.ones(3), np.array([0]))


def _drawn_right(conf: np.ndarray, right_prob: np.ndarray,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probs whose top-1 confidence is ``conf`` (class 0 the top), and targets that are
    class 0 with probability ``right_prob`` (else class 1)."""
    rng = np.random.default_rng(seed)
    probs = np.empty((len(conf), 4))
    probs[:, 0] = conf
    probs[:, 1:] = ((1 - conf) / 3)[:, None]
    return probs, np.where(rng.random(len(conf)) < right_prob, 0, 1)


def test_ece_if_calibrated_is_chance_level_for_a_calibrated_model() -> None:
    """A model right exactly as often as it says scores an ECE around the floor, not 0; the
    floor shrinks with N; an overconfident model lies far above the floor's p95."""
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 1.0, size=400)
    floor = M.ece_if_calibrated(_drawn_right(conf, conf, 0)[0])
    assert 0.03 < floor["mean"] < floor["p95"] < 0.12
    assert M.ece_if_calibrated(_drawn_right(conf, conf, 0)[0]) == floor  # seeded
    measured = [M.ece(*_drawn_right(conf, conf, s)) for s in range(40)]
    assert np.mean(measured) == pytest.approx(floor["mean"], rel=0.25)
    assert np.mean(np.array(measured) <= floor["p95"]) >= 0.85
    big = rng.uniform(0.3, 1.0, size=6400)
    assert M.ece_if_calibrated(_drawn_right(big, big, 0)[0])["mean"] < floor["mean"] / 3
    overconfident = M.ece(*_drawn_right(conf, conf - 0.2, 1))
    assert overconfident > floor["p95"] + 0.05


def test_consistency_bands_hold_a_calibrated_model_and_narrow_with_n() -> None:
    """Per bin, a calibrated model's accuracy falls inside the 90% band about 90% of the time
    (checked over bins and seeds); bands are wider for fewer samples; empty bins are NaN."""
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.4, 0.95, size=600)
    probs = _drawn_right(conf, conf, 0)[0]
    low, high = M.consistency_bands(probs)
    assert np.isnan(low[:5]).all() and np.isnan(high[:5]).all()  # no confidence under 0.33
    filled = ~np.isnan(low)
    assert (low[filled] <= high[filled]).all()
    inside = []
    for seed in range(30):
        bins = M.calibration_bins(*_drawn_right(conf, conf, seed))
        inside.append((bins["accuracy"][filled] >= low[filled] - 1e-9)
                      & (bins["accuracy"][filled] <= high[filled] + 1e-9))
    assert 0.8 <= np.mean(inside) <= 1.0
    few_low, few_high = M.consistency_bands(probs[:60])
    both = filled & ~np.isnan(few_low)
    assert np.mean((few_high - few_low)[both]) > 1.5 * np.mean((high - low)[both])
