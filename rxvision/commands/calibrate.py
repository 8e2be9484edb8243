"""`rxvision calibrate`: fit the temperature, the per-class logit centres (for the
``centred_max_logit`` open-set score) and, with --thresholds, the abstention and open-set
thresholds on held-out views, and store them in the card.

With ``--tta N`` everything is fitted on logits averaged over N right-angle rotations, and
the card records ``calibration.tta = N``: the default of every command that identifies."""

from __future__ import annotations

import argparse
from typing import Any

from .options import TTA_CHOICES

THRESHOLD_OPTIONS = ("target_tpr", "abstain_precision", "abstain_threshold", "ood_method")


def _data_name(args: argparse.Namespace) -> str:
    """The calibration data as the card records it: "a.csv" or "a.csv + b.csv"."""
    return " + ".join(str(d) for d in args.data)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc


def _fraction(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _positive_fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = _number(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..identify.openset import OOD_METHODS

    p = sub.add_parser(
        "calibrate", help="fit temperature scaling, per-class logit centres (and "
                          "identification thresholds) on held-out photos; store them in the "
                          "model")
    p.add_argument("--model", required=True, metavar="RUN",
                   help="model artifact directory (its card.json is updated)")
    p.add_argument("--data", required=True, metavar="D", nargs="+",
                   help="held-out labelled views (not training images), e.g. from "
                        "`rxvision data render-independent`; several manifests are fitted "
                        "on as one set (e.g. renders at 512 and 1024 px, for the size "
                        "temperature)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B")
    p.add_argument("--workers", type=int, default=2, metavar="W")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--limit", type=int, metavar="N", help="use a fixed random subset of N images")
    p.add_argument("--segmenter", metavar="DIR",
                   help="pill finder for a model trained on pill crops (default: the "
                        "model's own segmenter/ folder)")
    p.add_argument("--tta", type=int, choices=TTA_CHOICES, metavar="N",
                   help="fit on logits averaged over N right-angle rotations and make N the "
                        "model's default (calibration.tta; default: the card's current "
                        "value, else 1)")
    p.add_argument("--size-temperature", action=argparse.BooleanOptionalAction, default=None,
                   help="also fit a temperature that depends on the pill's size in the photo "
                        "(calibration.size_temperature; models trained on pill crops). "
                        "Default: fit it when the photos' pill sizes vary enough (mix "
                        "resolutions, e.g. 512 and 1024 px renders), else say so and drop "
                        "any stored one; --no-size-temperature drops it")
    p.add_argument("--dry-run", action="store_true", help="print the fit; leave the card as is")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t = p.add_argument_group(
        "identification thresholds (with --thresholds; fitted after, and with, the new T)")
    t.add_argument("--thresholds", action="store_true",
                   help="also fit identification.ood_threshold and abstain_threshold")
    t.add_argument("--target-tpr", type=_positive_fraction, metavar="F",
                   help="share of known views kept below the OOD threshold (default 0.95)")
    abstain = t.add_mutually_exclusive_group()
    abstain.add_argument("--abstain-precision", type=_fraction, metavar="P",
                         help="abstain threshold = the lowest calibrated confidence at which "
                              "the answers it accepts are right at least this often "
                              "(default 0.99)")
    abstain.add_argument("--abstain-threshold", type=_fraction, metavar="P",
                         help="store this abstain threshold instead of fitting one")
    t.add_argument("--ood-method", choices=OOD_METHODS,
                   help="open-set score (default: the card's, else energy)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..artifact import update_card
    from ..data import DatasetError, load_datasets
    from ..engine.calibration import calibrate
    from ..engine.evaluate import predict, subset
    from ..engine.openset_eval import resolve_method
    from ..identify.backends import load_backend
    from ..identify.identifier import IdentifierError
    from ..identify.openset import fit_class_centres
    from ..identify.pipeline import crop_transform_for
    from ..identify.temperature import SizeTemperature, row_temperatures
    from ..identify.tta import apply_tta
    from ..library.enroll_fit import own_class_cosine
    from ..models.layers import CosineClassifier

    given = [f"--{name.replace('_', '-')}" for name in THRESHOLD_OPTIONS
             if getattr(args, name) is not None]
    if given and not args.thresholds:
        raise IdentifierError(f"{', '.join(given)} apply to threshold fitting: add --thresholds")
    backend = load_backend(args.model, backend="torch", bf16=args.precision == "bf16")
    backend, tta = apply_tta(backend, backend.card, args.tta)
    method = (resolve_method(backend, args.ood_method, centres_in_card=False)
              if args.thresholds else None)
    images = subset(load_datasets(args.data), args.limit)
    transform = crop_transform_for(backend.card, backend.path, args.segmenter)
    pred = predict(backend, images, batch_size=args.batch_size, workers=args.workers,
                   embeddings=method == "cosine", progress=not args.no_progress,
                   desc="calibrate", transform=transform)
    known = pred.known
    if not known.any():
        raise DatasetError(f"{_data_name(args)}: none of its labels are in the model; "
                           "calibrate on views of the model's own classes")
    fit = calibrate(pred.logits[known], pred.targets[known])
    record = {**fit, "fitted_on": _data_name(args), "tta": tta}
    head = backend.model.get_classifier()
    if isinstance(head, CosineClassifier):  # what `rxvision enroll --offset auto` matches
        record["own_class_cosine"] = own_class_cosine(
            torch.from_numpy(pred.logits), torch.from_numpy(pred.targets), head)
    try:  # centres for the centred_max_logit open-set score
        centres, centre_fit = fit_class_centres(pred.logits[known], pred.targets[known])
        record["own_logit_means"] = [round(float(c), 6) for c in centres]
        record["own_logit_means_fit"] = centre_fit
    except ValueError as exc:
        if method == "centred_max_logit":
            raise DatasetError(f"{_data_name(args)}: {exc}; the centred_max_logit score needs "
                               "them (render more views per pill: rxvision data synth "
                               "--views 2)"
                               ) from exc
        print(f"note: no per-class logit centres ({exc})")
    if (~known).any():
        record["skipped_unknown"] = int((~known).sum())
    print(f"T = {fit['temperature']:.4f} on {fit['n']} images"
          f"{f' x {tta} rotations' if tta > 1 else ''}: "
          f"NLL {fit['nll_before']:.4f} -> {fit['nll_after']:.4f}, "
          f"ECE {fit['ece_before']:.4f} -> {fit['ece_after']:.4f} (a calibrated model: "
          f"{fit['ece_if_calibrated']:.4f} at this N)"
          + (f"; own-class cosine {record['own_class_cosine']:.4f}"
             if "own_class_cosine" in record else ""))
    if "own_logit_means_fit" in record:
        cf = record["own_logit_means_fit"]
        print(f"class centres for {cf['classes_with_views']} classes: mean own logit "
              f"{cf['grand_mean']:.4f}, prior weight {cf['prior_views']:.3f} views")
    by_size = fit_by_size(backend.card, pred, fit["temperature"], args)
    if by_size is not None:
        record["size_temperature"] = by_size
    identification = None
    if args.thresholds:
        temps = row_temperatures(fit["temperature"],
                                 SizeTemperature.from_card({"calibration": record}),
                                 pred.pill_px)
        identification = fit_identification(backend, pred, temps, method, args,
                                            record.get("own_logit_means"))
        identification.update(temperature=fit["temperature"], by_size=by_size is not None)
    else:
        _warn_stale_thresholds(backend.card, fit["temperature"], by_size is not None)
    if not args.dry_run:
        # Keep other calibration entries (e.g. abstention thresholds) other tools stored.
        fields: dict[str, Any] = {"calibration": {**backend.card.get("calibration", {}),
                                                  **record}}
        if by_size is None:  # a stored one was fitted with another T: never keep it stale
            fields["calibration"].pop("size_temperature", None)
        if identification is not None:
            fields["identification"] = {**backend.card.get("identification", {}),
                                        **identification}
            drop_typed_imprint_rule(fields["identification"])
            drop_same_photo_rule(fields["identification"])
        update_card(args.model, **fields)
        print(f"wrote {' and '.join(fields)} into {args.model}/card.json")
    return 0


def fit_by_size(card: dict[str, Any], pred: Any, single: float, args: argparse.Namespace
                ) -> dict[str, Any] | None:
    """The card's ``calibration.size_temperature`` fitted on ``pred`` (a crop model's
    photos, with their pill sizes), or None: not asked for, or (by default) the sizes vary
    too little, which is said. ``--size-temperature`` makes both an error."""
    from ..data import DatasetError
    from ..engine.calibration import SizeSpreadError, calibrate_by_size
    from ..identify.identifier import IdentifierError
    from ..identify.pipeline import size_temperature_range
    from ..identify.temperature import SizeTemperature

    if args.size_temperature is False:
        return None
    if pred.pill_px is None:
        if args.size_temperature:
            raise IdentifierError("--size-temperature needs a model trained on pill crops: "
                                  "its pill finder measures each pill's size")
        return None
    known = pred.known
    px_min, px_max = size_temperature_range(card["preprocessing"])
    try:
        fit = calibrate_by_size(pred.logits[known], pred.targets[known], pred.pill_px[known],
                                px_min, px_max, single)
    except SizeSpreadError as exc:
        if args.size_temperature:
            raise DatasetError(f"{_data_name(args)}: {exc}") from exc
        print(f"note: no size temperature ({exc}); one T = {single:.4g} for every pill size")
        return None
    model = SizeTemperature.from_card({"calibration": {"size_temperature": fit}})
    print(f"size temperature: {model.describe()} on {fit['n_sized']} photos (pills "
          f"{fit['px_p10']:.0f}-{fit['px_p90']:.0f} px, 10th-90th percentile): NLL "
          f"{fit['nll_single']:.4f} -> {fit['nll_by_size']:.4f}, ECE {fit['ece_single']:.4f} "
          f"-> {fit['ece_by_size']:.4f} against the single T")
    return fit


def fit_identification(backend: Any, pred: Any, temperature: Any, method: str,
                       args: argparse.Namespace, class_centres: list[float] | None = None
                       ) -> dict[str, Any]:
    """Fit the card's ``identification`` thresholds with the freshly fitted temperature
    (one, or one per photo by pill size) (and, for ``centred_max_logit``, the freshly
    fitted class centres)."""
    import torch

    from ..data import DatasetError
    from ..identify.openset import class_prototypes, fit_thresholds

    tpr = 0.95 if args.target_tpr is None else args.target_tpr
    precision = 0.99 if args.abstain_precision is None else args.abstain_precision
    prototypes = (class_prototypes(backend.model.get_classifier().weight).cpu()
                  if method == "cosine" else None)
    try:
        fit = fit_thresholds(pred.logits, pred.targets, temperature, method, pred.embeddings,
                             prototypes, tpr, precision, args.abstain_threshold,
                             None if class_centres is None else torch.tensor(class_centres))
    except ValueError as exc:  # the only data-dependent failure: precision out of reach
        raise DatasetError(f"{_data_name(args)}: {exc}; lower --abstain-precision or set "
                           "--abstain-threshold P") from exc
    fit.update(fitted_on=_data_name(args))
    rule = (f"fixed {fit['abstain_threshold']:.4g}" if fit["abstain_rule"] == "fixed"
            else f"{fit['abstain_threshold']:.4g} (accepted answers >= {precision:.2%} right)")
    print(f"abstain_threshold {rule}; {method} ood_threshold {fit['ood_threshold']:.4g} "
          f"(keeps {tpr:.0%} of known views); on these {fit['n']} views: answered "
          f"{fit['answered']:.4f}, top-1 on answered "
          + ("n/a" if fit["accuracy_on_answered"] is None
             else f"{fit['accuracy_on_answered']:.4f}"))
    return fit


TYPED_IMPRINT_RULE = ("typed_photo_power", "typed_abstain_threshold",
                      "typed_photo_power_fitted_on")


def drop_typed_imprint_rule(identification: dict[str, Any]) -> None:
    """The typed-imprint rule was fitted on the old calibration's confidences: drop it (the
    photo keeps full weight and the new abstention threshold applies) and say how to refit."""
    dropped = [identification.pop(key) for key in TYPED_IMPRINT_RULE if key in identification]
    if dropped:
        print("note: dropped the card's typed-imprint rule (typed_photo_power, "
              "typed_abstain_threshold), fitted for the old thresholds; refit it with "
              "benchmarks/typed_photo_power.py --write")


def drop_same_photo_rule(identification: dict[str, Any]) -> None:
    """The same-photo rule's temperature was fitted on the old calibration's probabilities:
    drop it (a photo's pills are then answered alone) and say how to refit."""
    if identification.pop("same_photo", None) is not None:
        print("note: dropped the card's same-photo rule (identification.same_photo), fitted "
              "on the old calibration; refit it with benchmarks/fit_same_photo.py --write")


def _warn_stale_thresholds(card: dict[str, Any], temperature: float, by_size: bool) -> None:
    """Abstain thresholds are on calibrated confidence: a new T (or a size temperature
    added or dropped) changes what they mean."""
    ident = card.get("identification") or {}
    fitted_t = ident.get("temperature")
    if "abstain_threshold" in ident and (fitted_t is None or abs(fitted_t - temperature)
                                         > 1e-6 * max(1.0, temperature)
                                         or bool(ident.get("by_size")) != by_size):
        print("note: the card's identification.abstain_threshold was fitted "
              + ("at an unrecorded temperature" if fitted_t is None else f"at T = {fitted_t:.4g}")
              + "; rerun with --thresholds to refit it for the new T")
