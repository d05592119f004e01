"""A ReLU layer's two maps in one helper (``_relu_maps``, which generated code calls where
a step's NNGP and NTK are exactly sqrt(q1) sqrt(q2) J_1(c)/(2π) and t J_0(c)/(2π)): bit for
bit the numbers of the correlation, the arc-cosine helper and the two products computed
apart, as the in-place emitter writes them otherwise, at every correlation (the series
branch near c = −1, both ends exactly, zero variances) and in float32."""
from __future__ import annotations

import numpy as np
import pytest

import ntkdsl
from ntkdsl.printing import _RELU_MAPS_SOURCE, _arccosine_helpers
from ntkdsl.runtime import embedded_source

CONV = "(Conv(4, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu) * 2 > GlobalAvgPool > Dense(1)"


def _helpers() -> dict:
    namespace: dict = {}
    exec("\n\n".join(["import numpy", embedded_source("correlation"),
                      *_arccosine_helpers(1).values(), _RELU_MAPS_SOURCE]), namespace)
    return namespace


def _apart(h: dict, k, t, q1, q2):
    """The maps as the emitter writes them without the helper."""
    c = np.multiply(k, h["_inv_sqrt"](q1))
    np.multiply(c, h["_inv_sqrt"](q2), out=c)
    np.clip(c, -1.0, 1.0, out=c)
    nngp, ntk = h["_arccosine1_0"](1, c)
    np.multiply(nngp, np.sqrt(q1), out=nngp)
    np.multiply(nngp, np.sqrt(q2), out=nngp)
    np.multiply(ntk, t, out=ntk)
    return nngp, ntk


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_maps_are_the_numbers_of_the_parts_computed_apart(dtype):
    rng = np.random.default_rng(3)
    q1 = rng.uniform(0.1, 4.0, (40, 1))
    q2 = rng.uniform(0.1, 4.0, (1, 30))
    if dtype == np.float64:  # a zero variance: its covariances are 0 (float32 has no 1e-300)
        q1[5] = 0.0
    c = rng.uniform(-1.0, 1.0, (40, 30))
    c[:, :3] = [-1.0, 1.0, -0.9999999]
    k = c * np.sqrt(q1 * q2)
    k[:, 4] = np.sqrt(q1 * q2)[:, 4] * (1 + 1e-15)  # past 1 by rounding: clipped
    t = rng.uniform(0.5, 2.0, (40, 30))
    q1, q2, k, t = (a.astype(dtype) for a in (q1, q2, k, t))
    assert (c < -np.cos(1.0)).any()  # the series branch runs
    h = _helpers()
    maps = h["_relu_maps"](k, t, -h["_inv_sqrt"](q1), h["_inv_sqrt"](q2), np.sqrt(q1), np.sqrt(q2))
    for got, want in zip(maps, _apart(h, k, t, q1, q2)):
        assert got.dtype == want.dtype == dtype
        assert np.array_equal(got, want)
    if dtype == np.float64:
        assert maps[0][5].tolist() == [0.0] * 30


def test_relu_steps_of_pair_programs_call_the_helper_and_keep_the_library_numbers():
    net = ntkdsl.compile(CONV)
    pair = net.source[net.source.index("def pair("):net.source.index("def diagonal(")]
    assert pair.count("_relu_maps(") == 2 and "_arccosine1_0(" not in pair
    x = np.random.default_rng(0).standard_normal((5, 6, 6, 2))
    nngp, ntk = net.kernels(x, x[::-1] + 0.5)
    # The NNGP alone has no NTK maps: the arc-cosine helper's path, the same NNGP.
    np.testing.assert_array_equal(net.nngp(x, x[::-1] + 0.5), nngp)
    assert np.isfinite(ntk).all()
