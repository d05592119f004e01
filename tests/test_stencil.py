"""The stencil runtime's window sums: the flattened fast path ('SAME', stride 1, contiguous)
against zero-padded window sums written out per offset (an independent computation), and
bit for bit against the general strided path; the global pool against a plain sum."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from ntkdsl.runtime import stencil

CASES = [((8, 8, 8, 8, 1, 16), (0, 2)), ((8, 8, 8, 8, 1, 16), (1, 3)),
         ((5, 7, 5, 7, 2, 3), (1, 3)), ((5, 7, 5, 7, 2, 3), (0, 2)), ((6, 4, 3), (0,)),
         ((6, 4, 3), (1,)), ((1, 9, 1, 9, 1, 2), (1, 3)), ((9, 1, 4), (0,))]


def _padded_sums(x: np.ndarray, axes: tuple[int, ...], window: int) -> np.ndarray:
    """Output position j of each moved axis sums inputs j + o - low, o < window, zero
    outside: the input padded with zeros, then one slice per offset."""
    low = (window - 1) // 2
    pad = [(0, 0)] * x.ndim
    for axis in axes:
        pad[axis] = (low, window - 1 - low)
    padded = np.pad(x, pad)
    total = np.zeros_like(x)
    for offset in range(window):
        index = [slice(None)] * x.ndim
        for axis in axes:
            index[axis] = slice(offset, offset + x.shape[axis])
        total += padded[tuple(index)]
    return total


@pytest.mark.parametrize(("shape", "axes"), CASES)
@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 10])
def test_flat_window_sums_match_zero_padded_sums_and_the_strided_path(shape, axes, window):
    x = np.random.default_rng(window).standard_normal(shape)
    fast = stencil._st_sum_windows(x, axes, window, 1, "SAME")
    np.testing.assert_allclose(fast, _padded_sums(x, axes, window), rtol=1e-13, atol=1e-13)
    # A Fortran-ordered copy takes the strided path: the same sums in the same order.
    strided = stencil._st_sum_windows(np.asfortranarray(x), axes, window, 1, "SAME")
    assert np.array_equal(fast, strided)


def test_global_pool_is_the_mean_over_every_pair_of_positions():
    x = np.random.default_rng(1).standard_normal((3, 4, 3, 4, 2, 5))
    expected = np.mean([x[p + q] for p, q in itertools.product(
        itertools.product(range(3), range(4)), repeat=2)], axis=0)
    np.testing.assert_allclose(stencil._st_global_pool(x, True), expected, rtol=1e-13)
    np.testing.assert_allclose(stencil._st_global_pool(x, False), expected * 144, rtol=1e-13)
