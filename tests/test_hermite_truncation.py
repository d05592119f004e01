"""The Hermite engine's per-entry truncation where the two variances are far apart: a
small variance's coefficients fall fast, so its relative Parseval tail reaches rounding
within a few terms while the other variance's series still converges slowly. The
computed tail m - sum_{n<T} a_n**2 of the small one was then rounding (0, clipped, or
1e-15, whichever way it fell) and the product bound |c|^T sqrt(t1 t2) stopped the series
too early: 40-125 times the stated bound off for φ' of Tanh at q1 = 0.03, q2 = 18.7.
Every dual the engine gives (Γ, Γ̇ by their own series and jointly, the cross duals and
a layer's group of them), in the kernel-matrix layout both ways round and as flat
entries, against an independent quadrature: |error| <= 1e-11 sqrt(E[f(u)²] E[g(v)²]) plus
a rounding allowance."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from ntkdsl import activations, numerical
from ntkdsl.expressions import parse_expression
from ntkdsl.runtime import hermite

x = activations.x
EPS = np.finfo(float).eps


def _sech2(t):  # 1/cosh(t)**2 without overflow
    e = np.exp(-2 * np.abs(t))
    return 4 * e / (1 + e) ** 2


def _sigmoid(t):
    return 0.5 * (1 + np.tanh(t / 2))


# name -> (φ for the library, (φ, φ', φ'') written independently of its printing)
CASES = {
    "Tanh": (sp.tanh(x), (np.tanh, _sech2, lambda t: -2 * np.tanh(t) * _sech2(t))),
    "Softplus": (activations.lookup("Softplus").phi(),
                 (lambda t: np.logaddexp(0, t), _sigmoid,
                  lambda t: _sigmoid(t) * _sigmoid(-t))),
    "Fn": (parse_expression("x*tanh(x)"),
           (lambda t: t * np.tanh(t), lambda t: np.tanh(t) + t * _sech2(t),
            lambda t: 2 * _sech2(t) * (1 - t * np.tanh(t)))),
}
# Many small variances: whether a row's computed tail fell to 0 or to 1e-15 is chance.
SMALL = np.array([0.002, 0.0031, 0.0047, 0.006, 0.0093, 0.014, 0.022, 0.03, 0.0426, 0.05])
LARGE = np.array([1.41, 5.0, 18.7, 60.0])
CORRELATIONS = np.array([-0.999, -0.99, -0.97, -0.94, -0.5, 0.3, 0.9, 0.99, 0.9995])

# The reference: v = sqrt(Q) z2 on composite 16-point Gauss-Legendre panels of width 1/16
# over [-14, 14] (φ at Q <= 60 has features >= 0.13 wide in z2), u | z2 = sqrt(q)(c z2 + s z1)
# by 48-point Gauss-Hermite in z1 (φ at q <= 0.05 is smooth on that scale). Checked
# against scipy's nested adaptive quadrature (tests/test_numerical_duals.py's quad2) to
# 2e-16 at (q, Q) = (0.03, 18.7), (0.002, 60), (0.05, 5), c = -0.999, -0.94, 0.99.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_LO, _HI = np.linspace(-14.0, 14.0, 449)[:-1, None], np.linspace(-14.0, 14.0, 449)[1:, None]
Z2 = ((_LO + _HI) / 2 + (_HI - _LO) / 2 * _GL_X).ravel()
W2 = ((_HI - _LO) / 2 * _GL_W).ravel() * np.exp(-Z2 * Z2 / 2) / np.sqrt(2 * np.pi)
Z1, W1 = np.polynomial.hermite_e.hermegauss(48)
W1 = W1 / np.sqrt(2 * np.pi)


def reference(f_small, g_large, q, big, c):
    """E[f_small(u) g_large(v)], (u, v) ~ N(0, [[q, k], [k, big]]) at correlations c (1-D),
    for each q (1-D) and big (1-D): shape (len(q), len(big), len(c))."""
    s = np.sqrt(1 - c * c)
    t = c[:, None, None] * Z2[:, None] + s[:, None, None] * Z1  # (c, z2, z1)
    inner = np.stack([f_small(np.sqrt(v) * t) @ W1 for v in q])  # (q, c, z2), 25 MB at a time
    outer = g_large(np.sqrt(np.asarray(big, dtype=float))[:, None] * Z2) * W2  # (big, z2)
    return np.einsum("icz,jz->ijc", inner, outer)


def moment(f, q):
    return (f(np.sqrt(np.asarray(q, dtype=float))[:, None] * Z2) ** 2) @ W2


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    phi, exact = CASES[request.param]
    gamma, _ = numerical.numerical_duals(phi, x, request.param)
    fs = []
    for n in range(3):
        name, source, modules = gamma.family.function(n)
        fs.append(numerical.compile_source(source, modules)[name])
    return request.param, tuple(fs), exact


def _layout(big):
    """Rows the small variances, a column per correlation at the large variance ``big``
    (one call per large variance: the entries near collinear at large variances go to the
    nested quadrature, whose budget is per call)."""
    k = CORRELATIONS[None, :] * np.sqrt(SMALL[:, None] * big)
    return k, SMALL[:, None], np.full((1, len(CORRELATIONS)), big)


def _check(name, got, want, scale, what):
    bound = hermite._HD_TOL * scale
    allowance = 16 * EPS * np.maximum(np.abs(want), scale)  # Horner's and the reference's rounding
    excess = np.abs(got - want) / (bound + allowance)
    assert excess.max() <= 1.0, (name, what, float(excess.max()),
                                 np.unravel_index(np.argmax(excess), excess.shape))
    return float(excess.max())


@pytest.mark.parametrize("big", LARGE)
def test_duals_of_one_function_hold_their_bound(case, big):
    """Γ and Γ̇ by their own series (_hd_dual) and jointly (_hd_dual_pair): the small
    variance's rows against the large variance's columns, the transpose, flat entries."""
    name, fs, exact = case
    k, q1, q2 = _layout(big)
    for n in (0, 1):
        want = reference(exact[n], exact[n], SMALL, [big], CORRELATIONS)[:, 0]
        scale = np.sqrt(moment(exact[n], SMALL) * moment(exact[n], [big]))[:, None]
        _check(name, hermite._hd_dual(fs[n], (), k, q1, q2), want, scale, (n, "rows"))
        _check(name, hermite._hd_dual(fs[n], (), k.T, q2.T, q1.T), want.T, scale.T, (n, "columns"))
        flat = hermite._hd_dual(fs[n], (), k.ravel(), np.broadcast_to(q1, k.shape).ravel(),
                                np.broadcast_to(q2, k.shape).ravel())
        _check(name, flat.reshape(k.shape), want, scale, (n, "flat"))
        if n == 0:
            pair = hermite._hd_dual_pair(fs[0], fs[1], (), k, q1, q2)
            pair_t = hermite._hd_dual_pair(fs[0], fs[1], (), k.T, q2.T, q1.T)
        _check(name, pair[n], want, scale, (n, "pair"))
        _check(name, pair_t[n], want.T, scale.T, (n, "pair, columns"))


@pytest.mark.parametrize("big", LARGE)
def test_cross_duals_and_a_layers_group_hold_their_bound(case, big):
    """E[φ''(u) φ(v)] and E[φ(u) φ''(v)] by _hd_cross and _hd_dual_group (with Γ and Γ̇ in
    the same group), the small variance on either side, matrix and flat layouts."""
    name, fs, exact = case
    k, q1, q2 = _layout(big)
    m = [(moment(exact[n], SMALL), moment(exact[n], [big])) for n in range(3)]
    specs = ((0, 0, 0), (1, 1, 1), (2, 0, 0), (0, 2, 0))
    group = hermite._hd_dual_group(fs, (), specs, k, q1, q2)
    group_t = hermite._hd_dual_group(fs, (), specs, k.T, q2.T, q1.T)
    for spec, value, value_t in zip(specs, group, group_t):
        i, j, _ = spec
        # rows small: φ^(i) at the small variance; in the transpose φ^(i) is at the large
        want = reference(exact[i], exact[j], SMALL, [big], CORRELATIONS)[:, 0]
        want_t = reference(exact[j], exact[i], SMALL, [big], CORRELATIONS)[:, 0].T
        scale = np.sqrt(m[i][0] * m[j][1])[:, None]
        scale_t = np.sqrt(m[i][1] * m[j][0])[None, :]
        _check(name, value, want, scale, (spec, "group"))
        _check(name, value_t, want_t, scale_t, (spec, "group, columns"))
        if i != j:
            _check(name, hermite._hd_cross(fs[i], fs[j], (), k, q1, q2), want, scale,
                   (spec, "cross"))
            _check(name, hermite._hd_cross(fs[i], fs[j], (), k.T, q2.T, q1.T), want_t,
                   scale_t, (spec, "cross, columns"))
            flat = hermite._hd_cross(fs[i], fs[j], (), k.ravel(),
                                     np.broadcast_to(q1, k.shape).ravel(),
                                     np.broadcast_to(q2, k.shape).ravel())
            _check(name, flat.reshape(k.shape), want, scale, (spec, "cross, flat"))


def test_tails_never_vanish_and_bound_what_is_left():
    """A table's relative tails: never below the rounding floor while m > 0, nonincreasing,
    and at least the sum of the squares of the coefficients left (the old difference
    m - sum_{n<T} a_n**2 fell to 0 within 20 terms at q = 0.03)."""
    gamma, _ = numerical.numerical_duals(sp.tanh(x), x, "Tanh")
    name, source, modules = gamma.family.function(1)
    f = numerical.compile_source(source, modules)[name]
    q = np.concatenate([SMALL, LARGE])
    a, m, tails, rest = hermite._hd_compute(f, (), q)
    assert (tails >= hermite._HD_ROUNDING).all() and (rest >= hermite._HD_ROUNDING).all()
    assert (np.diff(tails, axis=1) <= 0).all()
    left = np.cumsum((a * a)[:, ::-1], axis=1)[:, ::-1] / m[:, None]
    assert (tails[:, :-1] >= left * (1 - 1e-13)).all()
    np.testing.assert_allclose(tails[:, 0], 1.0, rtol=1e-12)
