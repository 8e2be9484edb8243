"""`rxvision evaluate`: metrics, groups, robustness sweep and an HTML report for a model."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .options import add_tta_argument, add_zoom_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..identify.bundled import add_model_argument
    from ..identify.openset import OOD_METHODS

    p = sub.add_parser("evaluate", help="measure a model on labelled images")
    add_model_argument(p)
    p.add_argument("--data", required=True, metavar="D",
                   help="labelled images: manifest CSV (image,label,...) or class folders")
    p.add_argument("--group-by", metavar="COLUMN",
                   help="repeat the headline metrics per value of this manifest column")
    p.add_argument("--json", metavar="OUT.json",
                   help="write metrics here (per-class rows go to OUT.per_class.csv)")
    p.add_argument("--report", metavar="DIR", help="write an HTML report (index.html + PNGs)")
    p.add_argument("--references", metavar="D",
                   help="reference images for the report's thumbnails (default: --data)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B")
    p.add_argument("--workers", type=int, default=2, metavar="W",
                   help="DataLoader processes decoding images (0: decode in this process)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16 autocast: ~2-3x faster on CPUs with AVX-512 BF16 (torch only)")
    p.add_argument("--corruptions", action="store_true",
                   help="also run the robustness sweep (7 corruptions x 5 severities; "
                        "35 passes over the data, so combine with --limit)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="evaluate a fixed random subset of N images (of --unknown as well)")
    p.add_argument("--unknown", metavar="D2",
                   help="photos of pills NOT in the model (manifest or class folders): "
                        "open-set AUROC of known (--data) vs unknown photos, and the "
                        "accuracy/coverage trade-off")
    p.add_argument("--ood-method", choices=OOD_METHODS,
                   help="open-set score for --unknown (default: the card's "
                        "identification.ood_method, else energy; cosine needs --backend torch)")
    add_tta_argument(p)
    add_zoom_argument(p)
    p.add_argument("--segmenter", metavar="DIR",
                   help="a model trained on pill crops (augment.framing: crop) finds each "
                        "pill with this segmenter artifact (default: the model's own "
                        "segmenter/ folder); ignored for whole-photo models")
    p.add_argument("--no-reference", action="store_true",
                   help="with an int8 ONNX export: skip evaluating its fp32 source on the same "
                        "images (by default the accuracy delta is reported)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import load_dataset
    from ..data.transforms import card_zoom
    from ..engine.corruptions import corruption_sweep
    from ..engine.evaluate import calibrated_temperature, predict, subset, summarize, write_json
    from ..engine.independent_check import own_renderer_gap
    from ..engine.openset_eval import card_rule_on_known, evaluate_open_set, resolve_method
    from ..identify.backends import load_backend
    from ..identify.bundled import resolve_model_path
    from ..identify.tta import apply_tta, calibration_mismatch

    model_dir = resolve_model_path(args.model)
    backend = load_backend(model_dir, backend=args.backend, bf16=args.precision == "bf16")
    backend, tta = apply_tta(backend, backend.card, args.tta)
    mismatch = calibration_mismatch(backend.card, tta)
    if mismatch:  # the ECE and abstention figures below then describe an unfitted card
        print(f"note: {mismatch}", file=sys.stderr)
    images = subset(load_dataset(args.data), args.limit)
    opts = {"batch_size": args.batch_size, "workers": args.workers,
            "progress": not args.no_progress, "zoom": args.zoom}
    framing, segmenter = crop_transform(backend, model_dir, args, opts)
    method = resolve_method(backend, args.ood_method) if args.unknown else None
    unknown_images = subset(load_dataset(args.unknown), args.limit) if args.unknown else None
    start = time.perf_counter()
    pred = predict(backend, images, embeddings=method == "cosine", **opts)
    seconds = time.perf_counter() - start
    require_known_labels(pred, args.data)
    temperature = calibrated_temperature(backend, pred)
    result: dict[str, Any] = {
        "model": str(model_dir), "data": str(args.data), "backend": args.backend,
        "precision": args.precision, "tta_rotations": tta,
        "zoom": args.zoom or card_zoom(backend.preprocessing),
        "framing": framing, "segmenter": segmenter,
        # a crop model's rule for two sure pills of one photo, applied above (None: none)
        "same_photo": ((backend.card.get("identification") or {}).get("same_photo")
                       if opts.get("same_photo") else None),
        **summarize(pred, backend.labels, temperature, group_by=args.group_by),
        "calibration": backend.card.get("calibration", {}),
        "seconds": round(seconds, 2), "images_per_second": round(len(pred) / seconds, 2),
    }
    add_same_pill(result, model_dir, pred, backend.labels, args.group_by)
    result["card_rule"] = card_rule_on_known(backend, pred)
    result["own_renderer"] = own_renderer_gap(backend.card, result.get("top1"))
    open_set = None
    if unknown_images is not None:
        start = time.perf_counter()
        open_set, study = evaluate_open_set(backend, pred, unknown_images, method, **opts)
        result["open_set"] = {"data": str(args.unknown), **study,
                              "seconds": round(time.perf_counter() - start, 2)}
    if args.backend == "onnx" and (backend.card.get("export") or {}).get("int8") \
            and not args.no_reference:
        result["int8_vs_fp32"] = int8_reference_study(backend.card, result, images, tta,
                                                      args.group_by, opts)
    if args.corruptions:
        start = time.perf_counter()
        result["corruptions"] = corruption_sweep(backend, images, result["top1"] or 0.0, **opts)
        result["corruptions"]["seconds"] = round(time.perf_counter() - start, 2)
    if args.json:
        write_json(result, args.json)
    if args.report:
        from ..engine.report import write_report

        refs = load_dataset(args.references) if args.references else images
        write_report(args.report, result, pred, backend.labels, temperature,
                     run_dir=model_dir, thumbnails=refs, open_set=open_set)
    print_summary(result)
    return 0


def crop_transform(backend: Any, model_dir: Any, args: argparse.Namespace,
                   opts: dict[str, Any]) -> tuple[str, str | None]:
    """For a crop model, put the pill finder's crop into ``opts``; (framing, segmenter)."""
    from ..identify.identifier import IdentifierError
    from ..identify.pipeline import crop_transform_for, model_framing

    transform = crop_transform_for(backend.card, model_dir, args.segmenter)
    if transform is None:
        return model_framing(backend.card), None
    if args.corruptions:
        raise IdentifierError("--corruptions is not implemented for models trained on pill "
                              "crops (augment.framing: crop) yet; evaluate without it")
    opts["transform"] = transform
    opts["same_photo"] = True  # answers as users get them (the card's same-photo rule)
    return "crop", str(transform.segmenter_path)


def require_known_labels(pred: Any, data: str) -> None:
    """Refuse to report metrics over zero images: every label is unknown to the model.

    Raises:
        DatasetError: no image of ``data`` has a label the model was trained or enrolled on.
    """
    from ..data import DatasetError

    if not pred.known.any():
        labels = sorted(set(pred.true_labels))
        raise DatasetError(
            f"{data}: none of its {len(pred)} images has a label the model knows (labels "
            f"{', '.join(labels[:3])}{' ...' if len(labels) > 3 else ''}); nothing to "
            "evaluate and nothing written. Evaluate on photos of the model's own pills, or "
            "enroll these first (rxvision enroll)")


def add_same_pill(result: dict[str, Any], model_dir: Any, pred: Any, labels: list[str],
                  group_by: str | None) -> None:
    """With the model's drug library: ``top1_same_pill`` / ``top5_same_pill`` beside the
    strict figures, overall and per group (a hit on an identical pill of the truth counts)."""
    from ..engine.same_pill import library_twins, same_pill_metrics

    found = library_twins(model_dir)
    if found is None:
        return
    twins, library = found
    same = same_pill_metrics(pred, labels, twins, group_by)
    result["top1_same_pill"], result["top5_same_pill"] = (same["top1_same_pill"],
                                                          same["top5_same_pill"])
    result["same_pill"] = {"library": library, "labels_with_twins": same["labels_with_twins"]}
    for value, rates in (same.get("groups") or {}).items():
        result["groups"][value].update(rates)


def int8_reference_study(card: dict[str, Any], result: dict[str, Any], images: Any, tta: int,
                         group_by: str | None, opts: dict[str, Any]) -> dict[str, Any]:
    """Evaluate an int8 export's fp32 source on the same images; the accuracy delta."""
    from ..deploy.int8_reference import compare, fp32_source
    from ..engine.evaluate import calibrated_temperature, predict, summarize
    from ..identify.backends import load_backend
    from ..identify.tta import with_rotations

    source, reason = fp32_source(card)
    if source is None:
        return {"available": False, "reason": reason}
    reference = with_rotations(load_backend(source, backend="torch"), tta)
    pred = predict(reference, images, **{**opts, "desc": "fp32 reference"})
    fp32 = summarize(pred, reference.labels, calibrated_temperature(reference, pred),
                     group_by=group_by)
    return compare(result, fp32, source)


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def ece_floor(m: dict[str, Any]) -> str:
    """One line setting a measured ECE beside what chance alone gives at that N."""
    floor = m["ece_if_calibrated"]
    return (f"a perfectly calibrated model with these confidences would score ece "
            f"{floor['mean']:.4f} on {m['n']} photos (95% of draws under {floor['p95']:.4f}): "
            "an ece near that is as calibrated as this many photos can show")


def print_summary(result: dict[str, Any]) -> None:
    """A few lines a person reads at a glance."""
    print(f"{result['n']} images in {result['seconds']} s ({result['images_per_second']} img/s),"
          f" T = {result.get('temperature_rule') or format(result['temperature'], '.4g')}")
    print("  " + "  ".join(f"{k} {_f(result[k])}" for k in
                           ("top1", "top5", "f1_macro", "f1_weighted", "roc_auc_macro")))
    if "top1_same_pill" in result:
        print(f"  top1_same_pill {_f(result['top1_same_pill'])}  top5_same_pill "
              f"{_f(result['top5_same_pill'])} (a hit on an identical pill counts; "
              f"{result['same_pill']['labels_with_twins']} true labels have twins)")
    print("  " + "  ".join(f"{k} {_f(result[k])}" for k in ("nll", "ece", "brier"))
          + (f"  (at T = 1: nll {_f(result['uncalibrated']['nll'])}  ece "
             f"{_f(result['uncalibrated']['ece'])})" if "uncalibrated" in result else ""))
    if result.get("ece_if_calibrated"):
        print(f"  {ece_floor(result)}")
    cov = result["accuracy_at_coverage"]
    print("  accuracy at coverage " + "  ".join(f"{q}: {_f(v)}" for q, v in cov.items()))
    own = result.get("own_renderer")
    if own:
        print(f"  training renderer's validation views (card): top-1 {_f(own['val_top1'])}; "
              f"these photos {_f(result['top1'])}: {own['gap_points']:+.1f} points "
              "(on independent photos, the gap the training renderer hides)")
    rule = result.get("card_rule")
    if rule:
        ood = ("no open-set threshold" if rule["ood_threshold"] is None
               else f"{rule['ood_method']} <= {rule['ood_threshold']:.4g}")
        gate = ("" if "held_by_finder" not in rule else
                f", finder score >= {rule['min_finder_score']:.3g} and pill >= "
                f"{rule['min_pill_px']} px")
        print(f"  card rule (p >= {rule['abstain_threshold']:.4g}, {ood}{gate}): answered "
              f"{_f(rule['answered'])} of known photos ({rule['answered_count']}), wrong "
              f"{_f(rule['wrong_of_answered'])} of those answers ({rule['wrong_count']})")
        if rule.get("held_by_finder"):
            print(f"  the finder's gates held back {rule['held_by_finder']} answers "
                  f"({rule['held_by_finder_wrong']} of them wrong)")
    unknown = result["unknown_labels"]
    if unknown["count"]:
        print(f"  {unknown['count']} images with {len(unknown['labels'])} labels unknown to "
              "the model were left out")
    for name, m in (result.get("groups") or {}).items():
        same = (f"  top1_same_pill {_f(m['top1_same_pill'])}  top5_same_pill "
                f"{_f(m['top5_same_pill'])}" if "top1_same_pill" in m else "")
        floor = (f" (calibrated: {m['ece_if_calibrated']['mean']:.3f})"
                 if m.get("ece_if_calibrated") else "")
        print(f"  [{result['group_by']}={name}] n {m['n']}  top1 {_f(m['top1'])}  "
              f"top5 {_f(m['top5'])}  ece {_f(m['ece'])}{floor}{same}")
    print_open_set(result.get("open_set"))
    if "int8_vs_fp32" in result:
        from ..deploy.int8_reference import format_comparison

        print(format_comparison(result["int8_vs_fp32"]))
    sweep = result.get("corruptions")
    if sweep:
        print(f"  corruptions: mCE {_f(sweep['mce'])}  mean accuracy "
              f"{_f(sweep['mean_accuracy'])} (clean {_f(sweep['clean_top1'])})")
        wrong = sweep.get("answered_wrong")
        if wrong:
            cells = [(v, c, s) for c, by in wrong.items() for s, v in by.items()]
            worst = max(cells)
            print(f"  answered wrongly under the card's rule: clean "
                  f"{_f(sweep['clean']['answered_wrong'])}, mean over corruptions "
                  f"{_f(sum(v for v, _, _ in cells) / len(cells))}, worst {_f(worst[0])} "
                  f"({worst[1]} severity {worst[2]})")


def print_open_set(study: dict[str, Any] | None) -> None:
    """The --unknown study in three lines."""
    if not study:
        return
    print(f"  open set ({study['score']}): {study['n_known']} known vs {study['n_unknown']} "
          f"unknown photos, AUROC {_f(study['auroc'])}, unknown let through at 95% TPR "
          f"{_f(study['fpr_at_95_tpr'])}"
          + (f" ({study['skipped_known_labels']} --unknown photos of known pills left out)"
             if study.get("skipped_known_labels") else ""))
    ab = study["abstention"]
    ood = ("no OOD threshold in the card" if ab["ood_threshold"] is None
           else f"ood_threshold {ab['ood_threshold']:.4g}")
    print(f"  card rule (abstain_threshold {ab['abstain_threshold']:.4g}, {ood}): "
          f"known answered {_f(ab['known_answered'])}, top-1 on answered "
          f"{_f(ab['accuracy_on_answered'])}, unknown answered {_f(ab['unknown_answered'])}")
