"""The few array operations the decision step needs, in NumPy.

Identification decides on small arrays (a batch of photos by the library's labels) after
the forward pass, so the decisions run in NumPy for both backends: the ONNX serving path
then never imports torch (about 700 MB resident). The imprint's fusion normalises with the
same functions. Inputs may be anything ``np.asarray``
takes, a CPU torch tensor included; outputs are NumPy arrays.

Example:
    >>> lp = log_softmax(np.array([[2.0, 1.0, 0.0]]))
    >>> values, indices = top_k(np.exp(lp[0]), 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_array(x: Any, dtype: Any = np.float32) -> np.ndarray:
    """``x`` (NumPy, a CPU torch tensor, a list) as a NumPy array of ``dtype``."""
    if hasattr(x, "detach"):  # a torch tensor: leave autograd and the device first
        x = x.detach().cpu()
    return np.asarray(x, dtype=dtype)


def logsumexp(x: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """``log(sum(exp(x)))`` along ``axis``, without overflow."""
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    out = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(x: Any, axis: int = -1) -> np.ndarray:
    """Normalised log-probabilities of ``x`` along ``axis`` (same dtype, float32 at least)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x - logsumexp(x, axis, keepdims=True)


_FEW = 16  # top_k's argmax passes serve k up to this


def top_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of a 1-D array, largest first, and their indices.

    Ties keep index order, so the ranking is the same on every run.
    """
    values = np.asarray(values).ravel()
    k = min(int(k), values.size)
    if k <= _FEW and values.size > 8 * k and np.issubdtype(values.dtype, np.floating):
        # A few of many (an answer's top 5 of a large library): k passes of argmax, each
        # taking the first of equal values, beat a partition of the whole array 10-20x.
        work = values.copy()
        picked = np.empty(k, dtype=np.intp)
        for j in range(k):
            picked[j] = int(np.argmax(work))
            work[picked[j]] = -np.inf
        if len(set(picked.tolist())) == k and not np.isnan(values[picked]).any():
            return values[picked], picked
    # Partial selection, O(C), then sort only the k kept; of the values equal to the k-th
    # largest, the first ones by index (a partition alone keeps an arbitrary few of them).
    kept = np.arange(values.size)
    if k < values.size:
        kept = np.argpartition(-values, k - 1)[:k]
        kth = values[kept].min()
        above = np.flatnonzero(values > kth)
        exact = np.concatenate([above, np.flatnonzero(values == kth)[: k - above.size]])
        if exact.size == k:  # not so with NaN, which compares unequal to everything
            kept = exact
    order = np.lexsort((kept, -values[kept]))
    indices = kept[order]
    return values[indices], indices
