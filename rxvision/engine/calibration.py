"""Temperature scaling (Guo et al., 2017): one scalar T so that softmax(logits / T) is honest.

T is fitted by minimising the negative log-likelihood of held-out views. The NLL is convex
in 1/T, hence unimodal in log T, so a bounded 1-D search over log T finds the global
minimum without tuning (LBFGS on the same objective reaches the same point but needs a
learning rate and can overshoot on near-separable logits).

A crop model also gets a temperature by the pill's size in the photo
(:func:`fit_size_temperature`, :mod:`rxvision.identify.temperature`): two parameters fitted
the same way, by NLL, on photos whose pill sizes vary.

Example:
    >>> T = fit_temperature(val_logits, val_targets)   # training loop, validation views
    >>> probs = softmax(test_logits, T)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar

from ..identify.temperature import SizeTemperature
from .metrics import ece, ece_if_calibrated, nll, softmax

T_MIN, T_MAX = 0.05, 20.0  # search bounds; a fit at a bound means the data cannot pin T
SLOPE_BOUND = 3.0  # |d ln T / d ln px|: a steeper fit means the sizes cannot pin the slope
MIN_SIZE_SPREAD = 1.5  # the 90th over the 10th percentile of clipped sizes a fit needs
MIN_SIZED_PHOTOS = 50


class SizeSpreadError(ValueError):
    """The calibration photos' pill sizes vary too little to fit a size temperature."""


def _as_numpy(logits: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor
              ) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.ndim != 2 or targets.shape != (len(logits),):
        raise ValueError(f"expected logits (N, C) and targets (N,), got {logits.shape} and "
                         f"{targets.shape}")
    if len(targets) == 0:
        raise ValueError("cannot fit a temperature on zero samples")
    if targets.min() < 0 or targets.max() >= logits.shape[1]:
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}); drop unknown labels first")
    if not np.isfinite(logits).all():
        raise ValueError("logits contain NaN or infinity")
    return logits, targets


def _nll_at(logits: np.ndarray, targets: np.ndarray, temperature: float | np.ndarray
            ) -> float:
    z = logits / (temperature[:, None] if isinstance(temperature, np.ndarray) else temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float((log_norm - z[np.arange(len(targets)), targets]).mean())


def fit_temperature(logits: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                    ) -> float:
    """The temperature T in [0.05, 20] minimising NLL of ``softmax(logits / T)``.

    Args:
        logits: (N, C) raw model outputs on held-out data (not the training images).
        targets: (N,) class indices in ``[0, C)``.

    Returns:
        T as a float; T > 1 softens over-confident models, T < 1 sharpens.
    """
    logits, targets = _as_numpy(logits, targets)
    result = minimize_scalar(
        lambda log_t: _nll_at(logits, targets, math.exp(log_t)),
        bounds=(math.log(T_MIN), math.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def calibrate(logits: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
              ) -> dict[str, Any]:
    """Fit T and measure it: ``{temperature, nll_before, nll_after, ece_before, ece_after,
    ece_if_calibrated, n}``; ``ece_if_calibrated`` is what a perfectly calibrated model with
    the fitted confidences scores on this many images (:func:`~.metrics.ece_if_calibrated`).

    "Before" is T = 1 (raw softmax). Fitting and measuring on the same data shows how much
    scaling helps; judge it on separate data with ``rxvision evaluate``.
    """
    logits, targets = _as_numpy(logits, targets)
    temperature = fit_temperature(logits, targets)
    before, after = softmax(logits, 1.0), softmax(logits, temperature)
    return {
        "temperature": temperature,
        "nll_before": nll(before, targets),
        "nll_after": nll(after, targets),
        "ece_before": ece(before, targets),
        "ece_after": ece(after, targets),
        "ece_if_calibrated": ece_if_calibrated(after)["mean"],
        "n": len(targets),
    }


def fit_size_temperature(logits: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                         pill_px: np.ndarray, px_min: float, px_max: float
                         ) -> SizeTemperature:
    """The size temperature (:class:`~rxvision.identify.temperature.SizeTemperature`)
    minimising NLL over photos whose pill size is known (``pill_px`` > 0; others are left
    out: they keep the single temperature).

    Args:
        logits, targets: as for :func:`fit_temperature`.
        pill_px: (N,) each photo's pill size, longer side of its box in decoded pixels.
        px_min, px_max: the clip range (the pipeline's smallest answerable pill; the
            crop's own pill size, above which a crop holds no more detail).

    Raises:
        SizeSpreadError: fewer than 50 photos with a size, or their sizes (clipped) span
            less than a factor 1.5 between the 10th and 90th percentile.
    """
    logits, targets = _as_numpy(logits, targets)
    px = np.asarray(pill_px, dtype=np.float64).ravel()
    if px.shape != targets.shape:
        raise ValueError(f"{px.size} pill sizes for {targets.size} photos")
    sized = np.isfinite(px) & (px > 0)
    if sized.sum() < MIN_SIZED_PHOTOS:
        raise SizeSpreadError(f"only {int(sized.sum())} photos with a found pill; a size "
                              f"temperature needs at least {MIN_SIZED_PHOTOS}")
    logits, targets, px = logits[sized], targets[sized], px[sized]
    lo, hi = np.percentile(np.clip(px, px_min, px_max), [10, 90])
    if hi / lo < MIN_SIZE_SPREAD:
        raise SizeSpreadError(
            f"the pills span {lo:.0f}-{hi:.0f} px (10th-90th percentile, clipped to "
            f"{px_min:.0f}-{px_max:.0f}): too narrow to fit how T changes with size; "
            "calibrate on photos of several resolutions (e.g. `rxvision data "
            "render-independent --size 512` and `--size 1024`, both given to --data)")

    def objective(params: np.ndarray) -> float:
        model = SizeTemperature(float(params[0]), float(params[1]), px_min, px_max)
        return _nll_at(logits, targets, model(px))

    start = math.log(fit_temperature(logits, targets))
    result = minimize(objective, np.array([start, 0.0]), method="L-BFGS-B",
                      bounds=[(math.log(T_MIN), math.log(T_MAX)),
                              (-SLOPE_BOUND, SLOPE_BOUND)])
    return SizeTemperature(float(result.x[0]), float(result.x[1]), px_min, px_max)


def calibrate_by_size(logits: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                      pill_px: np.ndarray, px_min: float, px_max: float,
                      single: float) -> dict[str, Any]:
    """Fit a size temperature and measure it against the ``single`` temperature on the
    same photos: ``{**SizeTemperature.to_dict(), nll_single, nll_by_size, ece_single,
    ece_by_size, n_sized, px_p10, px_p90}`` (judge it on separate data with evaluate)."""
    from ..identify.temperature import row_temperatures

    by_size = fit_size_temperature(logits, targets, pill_px, px_min, px_max)
    logits, targets = _as_numpy(logits, targets)
    px = np.asarray(pill_px, dtype=np.float64).ravel()
    single_p = softmax(logits, single)
    sized_p = softmax(logits, row_temperatures(single, by_size, px))
    p10, p90 = np.percentile(px[px > 0], [10, 90])
    return {**by_size.to_dict(), "nll_single": nll(single_p, targets),
            "nll_by_size": nll(sized_p, targets), "ece_single": ece(single_p, targets),
            "ece_by_size": ece(sized_p, targets), "n_sized": int((px > 0).sum()),
            "px_p10": round(float(p10), 1), "px_p90": round(float(p90), 1)}
