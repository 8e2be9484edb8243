"""top_k: the k largest, largest first, equal values in index order, on either path."""

from __future__ import annotations

import numpy as np
import pytest

from rxvision.logmath import top_k


def reference(values: np.ndarray, k: int) -> np.ndarray:
    return np.lexsort((np.arange(values.size), -values))[:k]


@pytest.mark.parametrize("k", [1, 5, 16, 17, 40])
@pytest.mark.parametrize("seed", range(5))
def test_top_k_matches_a_full_sort_with_ties(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 30, size=500).astype(np.float32)  # many equal values
    got_values, got = top_k(values, k)
    np.testing.assert_array_equal(got, reference(values, k))
    np.testing.assert_array_equal(got_values, values[got])


def test_top_k_with_minus_infinity_and_nan() -> None:
    values = np.full(200, -np.inf, dtype=np.float32)
    values[[7, 3]] = [0.5, 0.9]
    _, got = top_k(values, 5)  # more asked for than finite values: -inf in index order
    np.testing.assert_array_equal(got, [3, 7, 0, 1, 2])
    values[10] = np.nan
    _, got = top_k(values, 3)
    assert got.size == 3 and 3 in got


def test_top_k_of_a_short_or_integer_array() -> None:
    np.testing.assert_array_equal(top_k(np.array([1, 3, 2]), 5)[1], [1, 2, 0])
    np.testing.assert_array_equal(top_k(np.arange(100), 3)[1], [99, 98, 97])
