"""Issue 12: the numerical route at any variance — Γ and Γ̇ against independent adaptive
quadrature (scipy.integrate.quad, in the activation's own variable x with breakpoints at
its features) at variances 1e-6 .. 1e6 and mixed q1 << q2, correlations -1 .. 1; bounded
grids and memory as q grows; finite results or NumericalError for the issue's networks."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import integrate

import ntkdsl
from ntkdsl import activations, numerical
from ntkdsl.errors import NumericalError
from ntkdsl.expressions import parse_expression

x = activations.x
SQRT2PI = np.sqrt(2 * np.pi)
SIG = lambda t: 0.5 * (1 + np.tanh(t / 2))
SECH2 = lambda t: 1 / np.cosh(np.clip(t, -350, 350)) ** 2
GELU_A = np.sqrt(2 / np.pi)

# name -> (sympy φ, φ, φ') with φ and φ' written independently of the library's printing.
CASES = {
    "Tanh": (activations.lookup("Tanh").phi(), np.tanh, SECH2),
    "Softplus": (activations.lookup("Softplus").phi(), lambda t: np.logaddexp(0, t), SIG),
    "Silu": (activations.lookup("Silu").phi(), lambda t: t * SIG(t),
             lambda t: SIG(t) * (1 + t * SIG(-t))),
    "Elu": (activations.lookup("Elu").phi(alpha=1.0),
            lambda t: np.where(t > 0, t, np.expm1(np.minimum(t, 0))),
            lambda t: np.where(t > 0, 1.0, np.exp(np.minimum(t, 0)))),
    "Gelu": (activations.lookup("Gelu").phi(approximate=True),
             lambda t: 0.5 * t * (1 + np.tanh(GELU_A * (t + 0.044715 * t ** 3))),
             lambda t: 0.5 * (1 + np.tanh(GELU_A * (t + 0.044715 * t ** 3)))
             + 0.5 * t * SECH2(GELU_A * (t + 0.044715 * t ** 3)) * GELU_A * (1 + 3 * 0.044715 * t ** 2)),
    "Mish": (activations.lookup("Mish").phi(), lambda t: t * np.tanh(np.logaddexp(0, t)),
             lambda t: np.tanh(np.logaddexp(0, t)) + t * SECH2(np.logaddexp(0, t)) * SIG(t)),
    "Sigmoid": (activations.lookup("Sigmoid").phi(), SIG, lambda t: SIG(t) * SIG(-t)),
    "Fn(x*tanh(x))": (parse_expression("x*tanh(x)"), lambda t: t * np.tanh(t),
                      lambda t: np.tanh(t) + t * SECH2(t)),
    "Fn(relu(x-1))": (parse_expression("relu(x - 1)"), lambda t: np.maximum(t - 1, 0),
                      lambda t: (t > 1) * 1.0),
}
FEATURES = (-40.0, -5.0, -1.0, 0.0, 1.0, 5.0, 40.0)  # where these φ are nonlinear (in x)


def _quad(g, lo, hi, points):
    inside = sorted({p for p in points if lo < p < hi})
    value, _ = integrate.quad(g, lo, hi, points=inside or None, limit=500, epsabs=0, epsrel=1e-13)
    return value


def gaussian_mean(f, mean, std, points=FEATURES):
    """E[f(mean + std t)], t ~ N(0, 1), integrated in y = mean + std t."""
    if std == 0:
        return float(f(np.array(mean)))
    lo, hi = mean - 14 * std, mean + 14 * std
    density = lambda y: np.exp(-0.5 * ((y - mean) / std) ** 2) / (SQRT2PI * std)
    return _quad(lambda y: f(y) * density(y), lo, hi, points)


def reference(f, q1, q2, c, points=FEATURES):
    """E[f(u) f(v)] for (u, v) Gaussian with variances q1, q2 and correlation c: 1-D at
    c = 0, +-1, nested (E[f(v) | u] inside) otherwise; ``points``: f's features in x."""
    s1, s2 = np.sqrt(q1), np.sqrt(q2)
    if c == 0:
        return gaussian_mean(f, 0, s1, points) * gaussian_mean(f, 0, s2, points)
    if abs(c) == 1:
        return gaussian_mean(lambda y: f(y) * f(c * s2 / s1 * y), 0, s1,
                             sorted({*points, *(p * s1 / s2 for p in points)}))
    std = s2 * np.sqrt(1 - c * c)
    return gaussian_mean(lambda y: f(y) * np.vectorize(
        lambda u: gaussian_mean(f, c * s2 / s1 * u, std, points))(y), 0, s1, points)


def _classes(name):
    return numerical.numerical_duals(CASES[name][0], x, name)


def _check(name, q1, q2, c):
    _, f, f_dot = CASES[name]
    gamma, dot = _classes(name)
    k = c * np.sqrt(q1 * q2)
    args = np.array([[k]]), np.array([[q1]]), np.array([[q2]])
    scale = np.sqrt(reference(f, q1, q1, 1.0) * reference(f, q2, q2, 1.0))
    assert abs(numerical.evaluate(gamma, *args)[0, 0] - reference(f, q1, q2, c)) <= 1e-9 * scale
    if f_dot is not None:
        scale_dot = np.sqrt(reference(f_dot, q1, q1, 1.0) * reference(f_dot, q2, q2, 1.0))
        want = reference(f_dot, q1, q2, c)
        assert abs(numerical.evaluate(dot, *args)[0, 0] - want) <= 1e-9 * scale_dot
        assert abs(numerical.evaluate_pair(gamma, *args)[1][0, 0] - want) <= 1e-9 * scale_dot


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("q1, q2", [(1e-6, 1e-6), (1.0, 1.0), (1e2, 1e2), (1e4, 1e4), (1e6, 1e6),
                                    (1e-2, 1e4), (1e6, 3.0)])
@pytest.mark.parametrize("c", [-1.0, 0.0, 1.0])
def test_collinear_and_independent_entries_at_any_variance(name, q1, q2, c):
    _check(name, q1, q2, c)


@pytest.mark.parametrize("name", ["Tanh", "Softplus", "Elu", "Gelu", "Fn(relu(x-1))"])
@pytest.mark.parametrize("q1, q2, c", [(1e2, 1e2, 0.999), (1e4, 1e4, -0.9995), (1e6, 1e6, 0.99)])
def test_correlated_entries_at_large_variance(name, q1, q2, c):
    """The entries the series cannot certify at large variance (|c| near 1) go to the
    graded nested quadrature."""
    _check(name, q1, q2, c)


def test_grids_and_memory_stay_bounded_as_the_variance_grows():
    """Grid sizes grow with log(q) and are capped; the nested quadrature works in blocks:
    peak memory of an uncertified entry at q = 1e12 stays below 64 MB (it was 1.75 GB)."""
    engine = numerical._ENGINE
    gamma, _ = _classes("Elu")
    f = numerical._engine_function(gamma)
    variances = 10.0 ** np.arange(0, 301, 20)
    for q in variances:  # two features (0 and Elu's kink there), each log2(sqrt(q)) + 3 levels
        edges = engine["_hd_feature_edges"](engine["_HD_EDGES"],
                                            engine["_hd_features"](f, (0.0,), np.sqrt(q), 0.0))
        assert edges.size <= len(engine["_HD_EDGES"]) + 2 * (2 * (np.log2(np.sqrt(q)) + 4) + 1)
    assert numerical.MAX_TERMS == engine["_HD_TERMS"] == 320
    tracemalloc.start()
    try:
        value = engine["_hd_direct"](f, (0.0,), 1e12, 1e12, 0.9999)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20
    want = reference(CASES["Elu"][1], 1e12, 1e12, 0.9999)
    assert abs(value - want) <= 1e-9 * reference(CASES["Elu"][1], 1e12, 1e12, 1.0)


def _fuzz_input():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 3))
    data[2], data[3], data[1] = 0.0, data[0], data[1] * 30
    return data


@pytest.mark.parametrize("arch", [
    "Dense(512, b_std=2) > Elu > Dense(1)",
    "Dense(8) > Softplus > Dense(8, b_std=65536) > Silu > Dense(1)",
    "Dense(8, W_std=1e5) > Gelu(approximate=True) > Dense(1)",
    "Dense(8, W_std=100) > Mish > Dense(1)",
])
def test_issue_networks_give_finite_kernels(arch):
    net = ntkdsl.compile(arch)
    data = _fuzz_input()
    for kernel in (*net.kernels(data), net.ntk(data[:2], data[1:])):
        assert np.isfinite(kernel).all()


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_issue_networks_against_a_quadrature_recursion():
    """The issue's Elu (23 s, 1.75 GB) and Softplus > b_std=65536 > Silu (9 s, NaN)
    networks on a 3×4 input: NNGP and NTK entries against the layer recursion with every
    dual by nested adaptive quadrature (the Silu pair at q ≈ 4.3e9, c = 1 − 1.5e-10)."""
    data = np.random.default_rng(3).standard_normal((3, 4))
    k0 = data @ data.T / 4
    entries = [(0, 0), (0, 1)]

    def dual(name, q1, q2, k, same):
        _, f, f_dot = CASES[name]
        c = 1.0 if same else k / np.sqrt(q1 * q2)
        return reference(f, q1, q2, c), reference(f_dot, q1, q2, c)

    nngp, ntk = ntkdsl.compile("Dense(512, b_std=2) > Elu > Dense(1)").kernels(data)
    for i, j in entries:
        k1 = k0 + 4  # Dense(512, b_std=2); its NTK is k1
        gamma, gamma_dot = dual("Elu", k1[i, i], k1[j, j], k1[i, j], i == j)
        assert nngp[i, j] == pytest.approx(gamma, rel=1e-9)
        assert ntk[i, j] == pytest.approx(gamma + k1[i, j] * gamma_dot, rel=1e-9)
    net = ntkdsl.compile("Dense(8) > Softplus > Dense(8, b_std=65536) > Silu > Dense(1)")
    nngp, ntk = net.kernels(data)
    for i, j in entries:
        gamma, gamma_dot = dual("Softplus", k0[i, i], k0[j, j], k0[i, j], i == j)
        softplus = CASES["Softplus"][1]
        v1, v2 = (reference(softplus, k0[m, m], k0[m, m], 1.0) for m in (i, j))
        bias = 65536.0 ** 2
        q1, q2, k = v1 + bias, v2 + bias, gamma + bias
        t = k + k0[i, j] * gamma_dot
        gamma, gamma_dot = dual("Silu", q1, q2, k, i == j)
        assert nngp[i, j] == pytest.approx(gamma, rel=1e-9)
        assert ntk[i, j] == pytest.approx(gamma + t * gamma_dot, rel=1e-9)


def test_huge_weights_reach_the_relu_and_sign_limits():
    """At q ~ 1e60 Softplus is Relu and Tanh is Sign to far below 1e-9 relative (their
    differences are O(1) next to sqrt(q) = 1e30): closed forms as the independent check."""
    data = _fuzz_input()[[0, 1, 3]]  # Sign's closed form gives 1 at zero variance (sign(0) = 0)
    for smooth, limit, kinds in (("Softplus", "Relu", ("nngp", "ntk")), ("Tanh", "Sign", ("nngp",))):
        got = ntkdsl.compile(f"Dense(64, W_std=1e30) > {smooth} > Dense(1)")
        want = ntkdsl.compile(f"Dense(64, W_std=1e30) > {limit} > Dense(1)")
        for kind in kinds:
            a, b = getattr(got, kind)(data), getattr(want, kind)(data)
            assert np.all(np.abs(a - b) <= 1e-9 * np.abs(b).max())


def test_overflowing_moments_raise_numerical_error_naming_the_layer():
    net = ntkdsl.compile('Dense(8, W_std=30) > Fn("exp(x)*tanh(x)") > Dense(1)')
    with pytest.raises(NumericalError, match=r'Fn\(expr="exp\(x\)\*tanh\(x\)"\).*not finite'):
        net.nngp(_fuzz_input())


@pytest.mark.parametrize("expr, power", [("abs(sin(x))**0.5", None), ("max(x, 0)**0.3", 0.3)])
def test_singular_activations_diagonal_and_infinite_ntk(expr, power):
    """sqrt|sin x| (kinks at every multiple of pi) and max(x, 0)**0.3 (infinite slope at
    0): Γ on the diagonal and off it against quadrature; E[φ'²] diverges at 0, so the
    NTK's diagonal is infinite and the network's kernels raise NumericalError instead of
    holding NaN."""
    if power is None:
        f, points = (lambda t: np.sqrt(np.abs(np.sin(t)))), tuple(np.pi * np.arange(-40, 41))
    else:
        f, points = (lambda t: np.maximum(t, 0) ** power), (0.0,)
    gamma, _ = numerical.numerical_duals(parse_expression(expr), x, expr)
    for q in (1e-6, 0.3, 1.0, 50.0):
        want = reference(f, q, q, 1.0, points)
        got = numerical.evaluate(gamma, np.array([[q * (1 - 1e-15)]]), np.array([[q]]), np.array([[q]]))
        assert abs(got[0, 0] - want) <= 1e-9 * want
    for q, c in ((1e-6, 0.3), (0.3, -0.8)):
        got = numerical.evaluate(gamma, np.array([[c * q]]), np.array([[q]]), np.array([[q]]))
        assert abs(got[0, 0] - reference(f, q, q, c, points)) <= 1e-9 * reference(f, q, q, 1.0, points)
    if power is None:  # 40 kinks within reach of a near-collinear entry: past the budget, refused
        with pytest.raises(NumericalError, match="budget"):
            numerical._ENGINE["_hd_direct"](numerical._engine_function(gamma), gamma.points, 50.0, 50.0, 0.99)
    net = ntkdsl.compile(f'Dense(8, W_std=1.3) > Fn("{expr}") > Dense(1)')
    for kernel in (net.ntk, net.nngp):
        with pytest.raises(NumericalError, match=r"infinite.*x = 0"):
            kernel(_fuzz_input())


def test_numerical_dual_of_an_input_independent_variance():
    """After a constant activation every variance is a number: the numerical dual of those
    numbers is computed by the program (constant folding used to evalf it: a TypeError),
    and equals 1-D quadrature of E[silu(u)²] and E[silu'(u)²] (every correlation is 1)."""
    arch = ("Dense(64, W_std=0.0852, b_std=0.6658) > Polynomial(coef=[-0.363]) > "
            "Dense(64, W_std=2.07) > Silu > Dense(1, W_std=1.248, b_std=2.97)")
    x = np.random.default_rng(0).standard_normal((4, 3))
    nngp, ntk = ntkdsl.compile(arch).kernels(x)
    q = 2.07 ** 2 * 0.363 ** 2
    sig = lambda u: 1 / (1 + np.exp(-u))
    moment = lambda f: integrate.quad(lambda z: f(np.sqrt(q) * z) ** 2 * np.exp(-z * z / 2)
                                      / np.sqrt(2 * np.pi), -40, 40, epsabs=1e-14)[0]
    k = 1.248 ** 2 * moment(lambda u: u * sig(u)) + 2.97 ** 2
    t = k + 1.248 ** 2 * q * moment(lambda u: sig(u) * (1 + u * (1 - sig(u))))
    np.testing.assert_allclose(nngp, np.full((4, 4), k), rtol=1e-10)
    np.testing.assert_allclose(ntk, np.full((4, 4), t), rtol=1e-10)
