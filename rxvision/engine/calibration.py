"""Temperature scaling (Guo et al., 2017): one scalar T so that softmax(logits / T) is honest.

T is fitted by minimising the negative log-likelihood of held-out views. The NLL is convex
in 1/T, hence unimodal in log T, so a bounded 1-D search over log T finds the global
minimum without tuning (LBFGS on the same objective reaches the same point but needs a
learning rate and can overshoot on near-separable logits).

Example:
    >>> T = fit_temperature(val_logits, val_targets)   # training loop, validation views
    >>> probs = softmax(test_logits, T)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from .metrics import ece, nll, softmax

T_MIN, T_MAX = 0.05, 20.0  # search bounds; a fit at a bound means the data cannot pin T


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


def _nll_at(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    z = logits / temperature
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
    """Fit T and measure it: ``{temperature, nll_before, nll_after, ece_before, ece_after, n}``.

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
        "n": len(targets),
    }
