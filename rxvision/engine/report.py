"""HTML evaluation report: ``index.html`` beside the PNG plots it shows.

The page is meant to be read alone: headline metrics, calibration (reliability diagram
before/after temperature scaling), how accuracy grows as the model may abstain
(accuracy-coverage), which pills it confuses (confusion matrix of the most-confused
classes, with a reference thumbnail of each), per-group results, training curves from the
run's ``log.jsonl`` and the corruption sweep. Every section explains what it shows.
Plots use matplotlib's Agg canvas directly (no pyplot global state); files are atomic.

Example:
    >>> write_report("rep", result, pred, backend.labels, backend.temperature,
    ...              run_dir="runs/c3pi", thumbnails=load_dataset("refs/manifest.csv"))
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from ..data import ImageDecodeError, ImageSet, load_image
from ..io_utils import atomic_write, atomic_write_text
from . import metrics as M
from .evaluate import Predictions, per_class_csv
from .openset_eval import OpenSetScores, coverage_curve

MAX_CONFUSED_CLASSES = 10
THUMB_PX = 72


def _save(fig: Figure, path: Path) -> str:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    # bbox "tight" also takes in thumbnails drawn outside the axes.
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100, bbox_inches="tight",
                                             pad_inches=0.15))
    return path.name


# --- plots ------------------------------------------------------------------------------
def plot_reliability(pred: Predictions, temperature: float | np.ndarray, path: Path) -> str:
    """Reliability diagram at T = 1 and, if the model is calibrated, at its T (one, or one
    per photo)."""
    known = pred.known
    targets = pred.targets[known]
    temps = [1.0] if _is_one(temperature) else [1.0, temperature]
    fig = Figure(figsize=(5 * len(temps), 4.6))
    for i, t in enumerate(temps):
        ax = fig.add_subplot(1, len(temps), i + 1)
        probs = M.softmax(pred.logits[known], M.rows_of(t, known))
        bins = M.calibration_bins(probs, targets)
        centers = (bins["edges"][:-1] + bins["edges"][1:]) / 2
        width = bins["edges"][1] - bins["edges"][0]
        filled = bins["count"] > 0
        ax.bar(centers[filled], bins["accuracy"][filled], width=width * 0.95, color="#4c72b0",
               edgecolor="k", linewidth=0.4, label="accuracy in bin")
        ax.bar(centers[filled], (bins["confidence"] - bins["accuracy"])[filled],
               bottom=bins["accuracy"][filled], width=width * 0.95, color="#dd8452", alpha=0.5,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        low, high = M.consistency_bands(probs)
        ax.vlines(centers[filled], low[filled], high[filled], color="k", linewidth=1.6,
                  label="a calibrated model here (90% of draws)")
        title = ("before calibration (T = 1)" if i == 0
                 else f"after calibration (T = {M.describe_temperature(t)})")
        ax.set_title(f"{title}\nECE = {M.ece(probs, targets):.4f} (a calibrated model: "
                     f"{M.ece_if_calibrated(probs)['mean']:.4f})", fontsize=10)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax2 = ax.twinx()
        ax2.plot(centers, bins["count"] / max(1, bins["count"].sum()), "g.-", linewidth=0.8,
                 label="share of photos")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("share of photos", color="g")
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_coverage(pred: Predictions, temperature: float | np.ndarray, path: Path) -> str:
    """Accuracy on the most confident fraction of photos, against that fraction."""
    known = pred.known
    probs = M.softmax(pred.logits[known], M.rows_of(temperature, known))
    cov, acc = M.coverage_curve(probs, pred.targets[known])
    fig = Figure(figsize=(6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(cov, acc, color="#4c72b0")
    for q, a in M.accuracy_at_coverage(probs, pred.targets[known]).items():
        ax.plot([float(q)], [a], "o", color="#c44e52")
        ax.annotate(f"{a:.3f}", (float(q), a), textcoords="offset points", xytext=(-8, -14),
                    fontsize=8)
    ax.set_xlabel("coverage (fraction of photos answered, most confident first)")
    ax.set_ylabel("accuracy on answered photos")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(max(0.0, float(acc.min()) - 0.05), 1.01)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _thumbnail(images: ImageSet | None, label: str) -> np.ndarray | None:
    """The first image of ``label`` in ``images`` as an RGB array THUMB_PX wide."""
    if images is None:
        return None
    for s in images.samples:
        if s.label == label:
            try:
                img = load_image(s.path)
            except ImageDecodeError:
                return None  # a broken reference image costs only its thumbnail
            img.thumbnail((THUMB_PX, THUMB_PX))
            return np.asarray(img)
    return None


def plot_confusion(pred: Predictions, result: dict[str, Any], labels: list[str], path: Path,
                   thumbnails: ImageSet | None) -> str | None:
    """Confusion counts among the classes of the most-confused pairs, with thumbnails."""
    classes: list[str] = []
    for pair in result.get("most_confused", []):
        for lab in (pair["true"], pair["predicted"]):
            if lab not in classes and len(classes) < MAX_CONFUSED_CLASSES:
                classes.append(lab)
    if len(classes) < 2:
        return None
    index = {lab: i for i, lab in enumerate(labels)}
    idx = np.array([index[c] for c in classes])
    known = pred.known
    cm = M.confusion_matrix(pred.targets[known], pred.logits[known].argmax(1), len(labels))
    sub = cm[np.ix_(idx, idx)]
    k = len(classes)
    size = 2.0 + 0.8 * k
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(sub, cmap="Blues")  # counts are written in the cells: no colour bar needed
    for i in range(k):
        for j in range(k):
            if sub[i, j]:
                ax.text(j, i, str(sub[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if sub[i, j] > sub.max() / 2 else "black")
    ax.set_xticks(range(k), classes, rotation=60, ha="left", fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    # Names on top/right, thumbnails on bottom/left, so neither hides the other.
    ax.xaxis.tick_top()
    ax.yaxis.tick_right()
    ax.xaxis.set_label_position("top")
    ax.yaxis.set_label_position("right")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i, lab in enumerate(classes):
        thumb = _thumbnail(thumbnails, lab)
        if thumb is None:
            continue
        zoom = 0.55
        ax.add_artist(AnnotationBbox(OffsetImage(thumb, zoom=zoom), (0, i),
                                     xycoords=("axes fraction", "data"), box_alignment=(1, 0.5),
                                     xybox=(-4, 0), boxcoords="offset points", frameon=False))
        ax.add_artist(AnnotationBbox(OffsetImage(thumb, zoom=zoom), (i, 0),
                                     xycoords=("data", "axes fraction"), box_alignment=(0.5, 1),
                                     xybox=(0, -4), boxcoords="offset points", frameon=False))
    return _save(fig, path)


def plot_groups(result: dict[str, Any], path: Path) -> str | None:
    """Bars of the main metrics for each value of the group-by column."""
    groups = {k: v for k, v in (result.get("groups") or {}).items() if v.get("n")}
    if not groups:
        return None
    keys = ["top1", "top5", "f1_macro", "ece"]
    names = list(groups)
    fig = Figure(figsize=(max(5.0, 1.6 * len(names) + 2), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        vals = [groups[g][key] if groups[g][key] is not None else 0.0 for g in names]
        bars = ax.bar(np.arange(len(names)) + (j - (len(keys) - 1) / 2) * width, vals, width,
                      label=key)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(names)), [f"{g}\n(n={groups[g]['n']})" for g in names])
    ax.set_ylim(0, 1.15)
    ax.set_xlabel(result.get("group_by", "group"))
    ax.legend(fontsize=8, ncols=len(keys), loc="upper center")
    return _save(fig, path)


def read_training_log(run_dir: str | Path | None) -> tuple[list[dict[str, Any]], int]:
    """Records of ``RUN/log.jsonl`` (JSON objects, one per line) and the unreadable count."""
    if run_dir is None or not (Path(run_dir) / "log.jsonl").is_file():
        return [], 0
    records, bad = [], 0
    for line in (Path(run_dir) / "log.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


def _numeric(rec: dict[str, Any], key: str) -> float | None:
    v = rec.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) \
        and math.isfinite(v) else None


def plot_training(records: list[dict[str, Any]], path: Path) -> str | None:
    """Loss, accuracy and learning-rate curves; any numeric keys present are drawn."""
    keys = sorted({k for r in records for k, v in r.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)} - {"epoch", "step"})
    panels = {
        "loss": [k for k in keys if "loss" in k or "nll" in k],
        "accuracy / score": [k for k in keys if any(t in k for t in ("acc", "top", "f1"))],
        "learning rate": [k for k in keys if k == "lr" or k.endswith("_lr")],
    }
    panels = {name: ks for name, ks in panels.items() if ks}
    if not panels:
        return None
    # x is the epoch when records carry one (records without it, e.g. DDP checksums, are
    # skipped), else the record's position in the log.
    by_epoch = any(_numeric(r, "epoch") is not None for r in records)
    xs_all = [_numeric(r, "epoch") if by_epoch else float(n) for n, r in enumerate(records)]
    fig = Figure(figsize=(5 * len(panels), 3.8))
    for i, (name, ks) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in ks:
            pts = [(x, _numeric(r, key)) for x, r in zip(xs_all, records, strict=True)]
            pts = [(x, y) for x, y in pts if x is not None and y is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, ".-", label=key, markersize=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch" if by_epoch else "record")
        if name == "learning rate":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_corruptions(sweep: dict[str, Any], path: Path) -> str:
    """Top-1 per corruption against severity, with the clean top-1 as a reference line, and
    (when the sweep has them) the photos answered wrongly under the card's rule."""
    wrong = sweep.get("answered_wrong")
    fig = Figure(figsize=(11, 4.2) if wrong else (6.5, 4.2))
    panels = [("accuracy", "top-1 accuracy", sweep["clean_top1"])]
    if wrong:
        panels.append(("answered_wrong", "answered wrongly (fraction of photos)",
                       sweep["clean"]["answered_wrong"]))
    for i, (key, ylabel, clean) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for name, by_sev in sweep[key].items():
            ax.plot([int(s) for s in by_sev], list(by_sev.values()), "o-", label=name,
                    markersize=4)
        ax.axhline(clean, color="k", linestyle="--", label="clean")
        ax.set_xticks([1, 2, 3, 4, 5])
        ax.set_xlabel("severity")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.02 if key == "accuracy" else None)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncols=2)
    return _save(fig, path)


def plot_open_set(scores: OpenSetScores, study: dict[str, Any], path: Path) -> str:
    """Known vs unknown photos: ROC of the open-set score, and accuracy/coverage with unknowns.

    The card's OOD threshold (if any) is marked on both panels.
    """
    from sklearn.metrics import roc_curve

    y = np.r_[np.zeros(scores.known.size), np.ones(scores.unknown.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[scores.known, scores.unknown])
    curve = coverage_curve(scores)
    card = study["abstention"].get("ood_threshold")
    fig = Figure(figsize=(11, 4.4))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(fpr, tpr, color="#4c72b0", label=f"{scores.method} (AUROC {study['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance")
    if card is not None:
        ax.plot([float((scores.known > card).mean())], [float((scores.unknown > card).mean())],
                "o", color="#c44e52", label="card threshold")
    ax.set_xlabel("known photos flagged unknown")
    ax.set_ylabel("unknown photos flagged unknown")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(curve["known_coverage"], curve["known_accuracy"], color="#4c72b0",
            label="top-1 on accepted known photos")
    ax.plot(curve["known_coverage"], curve["unknown_accepted"], color="#c44e52",
            linestyle="--", label="unknown photos accepted")
    if card is not None:
        row = next(r for r in study["accuracy_coverage"] if r["tpr"] == "card")
        ax.axvline(row["known_coverage"], color="k", linestyle=":", label="card threshold")
    ax.set_xlabel("known photos accepted (coverage), as the score threshold rises")
    ax.set_ylabel("fraction")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _open_set_section(scores: OpenSetScores, study: dict[str, Any], out: Path) -> str:
    ab = study["abstention"]
    text = (f"Photos of pills the model does not know ({study['n_unknown']}) against photos "
            f"of known pills ({study['n_known']}), told apart by the <code>"
            f"{html.escape(study['score'])}</code> score (higher = more likely unknown). "
            f"AUROC {_fmt(study['auroc'])}; at the threshold that keeps 95% of known photos, "
            f"{_fmt(study['fpr_at_95_tpr'])} of unknown photos get through. With the card's "
            f"rule (answer when confidence &ge; {_fmt(ab['abstain_threshold'])}"
            + (f" and score &le; {_fmt(ab['ood_threshold'])}" if ab["ood_threshold"] is not None
               else "; no OOD threshold in the card")
            + f"): {_fmt(ab['known_answered'])} of known photos are answered with top-1 "
            f"{_fmt(ab['accuracy_on_answered'])}, and {_fmt(ab['unknown_answered'])} of "
            f"unknown photos are (wrongly) answered.")
    rows = [[r["tpr"], r["threshold"], r["known_coverage"], r["known_accuracy_on_accepted"],
             r["unknown_rejected"]] for r in study["accuracy_coverage"]]
    return _section("Unknown pills (open set)", text,
                    _img(plot_open_set(scores, study, out / "open_set.png"))
                    + _table(["known TPR", "threshold", "known accepted", "top-1 on accepted",
                              "unknown rejected"], rows))


# --- HTML -------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


HEADLINE_HELP = {
    "n": "photos with a label the model knows", "top1": "top-1 accuracy",
    "top5": "the right pill among the 5 most probable", "f1_macro": "F1, mean over classes",
    "f1_weighted": "F1, classes weighted by photo count",
    "roc_auc_macro": "one-vs-rest ROC AUC, mean over classes present",
    "nll": "negative log-likelihood (lower is better)",
    "ece": "expected calibration error, 15 bins (lower is better)",
    "brier": "multiclass Brier score (0 best, 2 worst)",
}


def _section(title: str, text: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2><p>{text}</p>{body}"


def _is_one(temperature: float | np.ndarray) -> bool:
    """Whether the model is uncalibrated (T = 1 for every photo)."""
    return bool(np.allclose(temperature, 1.0))


def _img(name: str | None) -> str:
    return f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' if name else ""


def write_report(
    out_dir: str | Path,
    result: dict[str, Any],
    pred: Predictions,
    labels: list[str],
    temperature: float | np.ndarray,
    run_dir: str | Path | None = None,
    thumbnails: ImageSet | None = None,
    title: str = "RxVision evaluation",
    open_set: OpenSetScores | None = None,
) -> Path:
    """Write ``index.html``, its PNGs and ``per_class.csv`` into ``out_dir``.

    Args:
        result: :func:`~rxvision.engine.evaluate.summarize` output (plus "corruptions" and
            "calibration" when available).
        pred: the predictions ``result`` was computed from.
        labels, temperature: the model's labels and calibrated temperature (one, or one
            per photo of ``pred``: a size temperature).
        run_dir: model directory; its ``log.jsonl`` gives the training curves.
        thumbnails: images whose first photo per label illustrates the confusion matrix.
        open_set: scores behind ``result["open_set"]`` (``evaluate --unknown``), plotted.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    source = result.get("data")
    if source:
        parts.append(f"<p>Model <code>{html.escape(str(result.get('model', '')))}</code> on "
                     f"<code>{html.escape(str(source))}</code>.</p>")
    rows = [[k, result.get(k), HEADLINE_HELP[k]] for k in HEADLINE_HELP]
    floor = result.get("ece_if_calibrated")
    if floor:
        rows.insert(list(HEADLINE_HELP).index("ece") + 1, [
            "ece if calibrated", floor["mean"],
            f"what a perfectly calibrated model with these confidences scores on this many "
            f"photos (95% of draws under {floor['p95']:.4f}): ECE is biased upward on small sets"])
    rows += [[f"accuracy at {float(q):.0%} coverage", v,
              "accuracy on the most confident share of photos"]
             for q, v in (result.get("accuracy_at_coverage") or {}).items()]
    parts.append(_section("Headline metrics",
                          f"Probabilities are softmax(logits / T) with the model's T = "
                          f"{M.describe_temperature(temperature)}.",
                          _table(["metric", "value", "meaning"], rows)))
    unknown = result.get("unknown_labels") or {}
    if unknown.get("count"):
        shown = ", ".join(html.escape(x) for x in unknown["labels"][:50])
        more = " ..." if len(unknown["labels"]) > 50 else ""
        parts.append(_section("Labels the model does not know",
                              f"{unknown['count']} photos carry one of {len(unknown['labels'])}"
                              f" labels missing from the model; they are left out of every "
                              f"metric above: {shown}{more}", ""))
    has_known = bool(pred.known.any())
    if has_known:
        cal = result.get("calibration") or {}
        cal_text = ("Bars show the accuracy of photos grouped by confidence; a calibrated model"
                    " follows the diagonal (a photo shown at 90% is right 90% of the time).")
        if not _is_one(temperature):
            cal_text += (f" Left: raw softmax (T = 1); right: after temperature scaling "
                         f"(T = {M.describe_temperature(temperature)}).")
        raw = result.get("uncalibrated") or {}
        if raw and not _is_one(temperature):
            cal_text += (f" On this data: ECE {_fmt(raw.get('ece'))} before, "
                         f"{_fmt(result.get('ece'))} after; NLL {_fmt(raw.get('nll'))} before, "
                         f"{_fmt(result.get('nll'))} after.")
        if cal.get("fitted_on"):
            fitted = [f"{name} {_fmt(cal[key])}" for key, name in (
                ("ece_before", "ECE before"), ("ece_after", "ECE after"),
                ("nll_before", "NLL before"), ("nll_after", "NLL after")) if key in cal]
            cal_text += (f" T was fitted on <code>{html.escape(str(cal['fitted_on']))}</code>"
                         f" (n = {_fmt(cal.get('n'))})"
                         + (": " + ", ".join(fitted) if fitted else "") + ".")
        parts.append(_section("Calibration", cal_text,
                              _img(plot_reliability(pred, temperature, out / "reliability.png"))))
        parts.append(_section(
            "Accuracy against coverage",
            "If the app may answer \"not sure\" for the least confident photos, this is the "
            "accuracy on the photos it does answer.",
            _img(plot_coverage(pred, temperature, out / "coverage.png"))))
        confusion = plot_confusion(pred, result, labels, out / "confusion.png", thumbnails)
        pairs = [[p["true"], p["predicted"], p["count"]] for p in result.get("most_confused", [])]
        parts.append(_section(
            "Most-confused pills",
            "Counts among the classes of the most frequent mistakes (row: true pill, column: "
            "predicted pill), each with a reference thumbnail.",
            _img(confusion) + _table(["true", "predicted", "photos"], pairs)))
    if result.get("groups"):
        rows = [[g, m.get("n"), m.get("top1"), m.get("top5"), m.get("f1_macro"), m.get("ece"),
                 m.get("unknown")] for g, m in result["groups"].items()]
        parts.append(_section(
            f"By {result.get('group_by', 'group')}",
            "The headline metrics for each value of this column of the data.",
            _img(plot_groups(result, out / "groups.png"))
            + _table(["group", "n", "top1", "top5", "f1_macro", "ece", "unknown"], rows)))
    if open_set is not None and result.get("open_set"):
        parts.append(_open_set_section(open_set, result["open_set"], out))
    sweep = result.get("corruptions")
    if sweep:
        rows = [[c, *by.values(), sweep["corruption_error"][c]]
                for c, by in sweep["accuracy"].items()]
        tables = _table(["corruption", "s1", "s2", "s3", "s4", "s5", "CE"], rows)
        wrong = sweep.get("answered_wrong")
        if wrong:
            tables += _table(["answered wrongly", "s1", "s2", "s3", "s4", "s5"],
                             [[c, *by.values()] for c, by in wrong.items()])
        parts.append(_section(
            "Robustness to corruptions",
            f"Top-1 on {sweep['n']} photos under each corruption at severities 1-5. "
            f"mCE = {_fmt(sweep['mce'])}, mean corrupted accuracy = "
            f"{_fmt(sweep['mean_accuracy'])}. Definition: {html.escape(sweep['definition'])}."
            + (" Right: the fraction of photos the card's rule (abstain and open-set "
               "thresholds) answers with a wrong pill; the rest are right or 'not sure' "
               f"(clean: {_fmt(sweep['clean']['answered_wrong'])})." if wrong else ""),
            _img(plot_corruptions(sweep, out / "corruptions.png")) + tables))
    records, bad = read_training_log(run_dir)
    curves = plot_training(records, out / "training.png") if records else None
    if curves:
        note = f" ({bad} unreadable lines skipped)" if bad else ""
        parts.append(_section("Training curves",
                              f"From the run's log.jsonl, {len(records)} records{note}.",
                              _img(curves)))
    atomic_write_text(out / "per_class.csv", per_class_csv(result.get("per_class", [])))
    parts.append('<p>Per-class precision, recall and support: '
                 '<a href="per_class.csv">per_class.csv</a>.</p>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;"
             "padding:3px 8px;font-size:13px}img{max-width:100%;display:block}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
    return atomic_write_text(out / "index.html", page)
