"""Compilation bounded and linear in the architecture's size (issue 12): structural checks
(each layer's step is a template built once and renamed, generated code grows by the same
statements per layer, constants and coefficients stay small) and the numbers of the cases
that used to explode, against independent computations (plain float recursions, Gauss–
Hermite quadrature). No timed tests: benchmarks/compile_speed.py measures the times."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate
from scipy.special import erf
from scipy.stats import norm

import ntkdsl
from ntkdsl.activations import x as X
from ntkdsl.ast import Activation
from ntkdsl.derivation import _PLACEHOLDER, _at, derive, dual_maps, phi_of
from ntkdsl.parser import parse
from ntkdsl.symbolic import exact

RELU = "(Dense(8, W_std=1.4, b_std=0.1) > Relu) * {L} > Dense(1)"


def _inputs():
    rng = np.random.default_rng(12)
    x1, x2 = rng.standard_normal((4, 8)), rng.standard_normal((3, 8))
    x2[0] = -x1[0]
    return x1, x2


def _statements(source: str, function: str = "pair") -> int:
    body = source.split(f"def {function}(", 1)[1].split("\ndef ", 1)[0]
    return sum(1 for line in body.splitlines()[2:]
               if line.strip() and not line.strip().startswith(("#", "del ")))


# ---------------------------------------------------------------------------------------
# Structure: constant work per layer
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", ["Dense(8, b_std=0.1) > Relu", "Dense(8) > Erf",
                                   "Dense(8) > LayerNorm > Relu",
                                   "Dense(8) > (Relu > Dense(8) + Identity)"])
def test_generated_statements_grow_by_the_same_count_per_layer(block):
    counts = {}
    for repeats in (10, 20, 40):
        arch = f"({block}) * {repeats} > Dense(1)"
        source = ntkdsl.compile(arch).source
        counts[repeats] = (_statements(source), _statements(source, "diagonal"))
    for kind in (0, 1):
        per_block = (counts[20][kind] - counts[10][kind]) / 10
        assert per_block > 0
        assert counts[40][kind] - counts[20][kind] == 20 * per_block


def test_a_thousand_layers_make_ten_times_the_program_of_a_hundred():
    small = ntkdsl.compile(RELU.format(L=100)).source
    large = ntkdsl.compile(RELU.format(L=1000)).source
    for function in ("pair", "diagonal"):
        ratio = _statements(large, function) / _statements(small, function)
        assert 9.9 < ratio < 10.01


@pytest.mark.parametrize("diagonal", [False, True])
def test_each_kind_of_layer_is_derived_once_and_renamed(diagonal):
    """Steps are templates: the number of distinct ones does not grow with depth, and
    every step of one template has expressions of one size."""
    found = {}
    for repeats in (5, 300):
        program = derive(parse(RELU.format(L=repeats)), diagonal=diagonal)
        templates = {step.assignments.template for step in program.steps}
        found[repeats] = len(templates)
        sizes: dict = {}
        for step in program.steps[-6:]:
            ops = sum(sp.count_ops(a.expr) for a in step.assignments)
            sizes.setdefault(step.assignments.template, set()).add(ops)
        assert all(len(s) == 1 for s in sizes.values())
    assert found[300] == found[5] <= 4


SIGN_GELU = "Dense(16) > Sign > Dense(256, b_std=0.7) > (Gelu > Dense(64, b_std=0.8)) * {L} > Dense(1)"


def test_constants_through_many_layers_do_not_grow():
    """After Sign the variances are numbers; Gelu's dual of numbers used to nest deeper with
    every layer (85 s to compile three). Folded, the largest step stays the same size."""
    largest = {}
    for repeats in (3, 8):
        program = derive(parse(SIGN_GELU.format(L=repeats)))
        largest[repeats] = max(sp.count_ops(a.expr) for s in program.steps
                               for a in s.assignments)
    assert largest[8] == largest[3] < 150


def test_tiny_and_huge_stds_stay_small_numbers():
    """1e-45 as an exact rational squared is 1/10^90 (1e-320 was 1/10^640: factoring a
    formula over it took minutes; the language now refuses magnitudes below 1e-50). Outside
    1e-30..1e30 a std is kept as the float it is."""
    assert exact(1e-320).is_Float and float(exact(1e-320)) == 1e-320
    assert exact(3e40).is_Float and exact(0.1) == sp.Rational(1, 10)
    net = ntkdsl.compile("Dense(8) > Relu > Dense(8, b_std=1e-45)")
    for step in net.program.steps:
        for a in step.assignments:
            for r in a.expr.atoms(sp.Rational):
                assert max(abs(r.p), r.q) < 10 ** 60
    text = str(net.formula("ntk")) + ntkdsl.codegen("Dense(8) > Relu > Dense(8, b_std=1e-45)")
    assert "b_std=1e-45" in text
    x1, x2 = _inputs()
    plain = ntkdsl.compile("Dense(8) > Relu > Dense(8)")  # the last layer's b² adds 1e-90
    np.testing.assert_allclose(net.ntk(x1, x2), plain.ntk(x1, x2) + 1e-90, rtol=1e-13)


# ---------------------------------------------------------------------------------------
# Numbers: deep networks against a plain float recursion
# ---------------------------------------------------------------------------------------

def _relu_recursion(x1, x2, repeats, w2=1.96, b2=0.01):
    d = x1.shape[1]
    q1 = (x1 * x1).sum(1)[:, None] / d
    q2 = (x2 * x2).sum(1)[None, :] / d
    k, t = x1 @ x2.T / d, 0.0
    for _ in range(repeats):
        q1, q2, k = w2 * q1 + b2, w2 * q2 + b2, w2 * k + b2
        t = k + w2 * t
        c = np.clip(k / np.sqrt(q1 * q2), -1, 1)
        theta = np.arccos(c)
        k = np.sqrt(q1 * q2) * (np.sin(theta) + (np.pi - theta) * c) / (2 * np.pi)
        t = t * (np.pi - theta) / (2 * np.pi)
        q1, q2 = q1 / 2, q2 / 2
    return k, k + t


def test_a_thousand_relu_layers_against_a_float_recursion():
    x1, x2 = _inputs()
    net = ntkdsl.compile(RELU.format(L=1000))
    nngp, ntk = _relu_recursion(x1, x2, 1000)
    # After many ReLU layers every correlation is within ~1e-8 of 1, where arccos turns the
    # last-digit rounding of either computation into ~1e-7 relative differences.
    np.testing.assert_allclose(net.nngp(x1, x2), nngp, rtol=1e-6)
    np.testing.assert_allclose(net.ntk(x1, x2), ntk, rtol=1e-6)


def test_a_thousand_erf_layers_against_a_float_recursion():
    """Erf keeps correlations away from 1 (its arcsine argument stays below 2q/(1+2q)), so
    the comparison is to rounding."""
    x1, x2 = _inputs()
    net = ntkdsl.compile("(Dense(8, W_std=1.2, b_std=0.1) > Erf) * 1000 > Dense(1)")
    d = x1.shape[1]
    q1 = (x1 * x1).sum(1)[:, None] / d
    q2 = (x2 * x2).sum(1)[None, :] / d
    k, t = x1 @ x2.T / d, 0.0
    for _ in range(1000):
        q1, q2, k = 1.44 * q1 + 0.01, 1.44 * q2 + 0.01, 1.44 * k + 0.01
        t = k + 1.44 * t
        norm = np.sqrt((1 + 2 * q1) * (1 + 2 * q2))
        t = t * 4 / np.pi / np.sqrt(norm ** 2 - 4 * k * k)
        k = 2 / np.pi * np.arcsin(2 * k / norm)
        q1, q2 = (2 / np.pi * np.arcsin(2 * q / (1 + 2 * q)) for q in (q1, q2))
    np.testing.assert_allclose(net.nngp(x1, x2), k, rtol=1e-10)
    np.testing.assert_allclose(net.ntk(x1, x2), k + t, rtol=1e-10)


def _gauss_hermite_dual(f, g, q1, q2, k, nodes=120):
    """E[f(u) g(v)] for (u, v) ~ N(0, [[q1, k], [k, q2]]) by a tensor Gauss–Hermite rule."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    a, b = np.meshgrid(z, z, indexing="ij")
    u = math.sqrt(q1) * a
    rho = k / math.sqrt(q1 * q2)
    v = math.sqrt(q2) * (rho * a + math.sqrt(max(1 - rho * rho, 0.0)) * b)
    return float(np.einsum("i,j,ij->", w, w, f(u) * g(v)))


def _gelu(u):
    return u * (1 + erf(u / math.sqrt(2))) / 2


def _gelu_prime(u):
    return (1 + erf(u / math.sqrt(2))) / 2 + u * np.exp(-u * u / 2) / math.sqrt(2 * math.pi)


def test_sign_then_gelu_layers_against_a_quadrature_recursion():
    x1, x2 = _inputs()
    got_k, got_t = ntkdsl.compile(SIGN_GELU.format(L=3)).kernels(x1, x2)
    d = x1.shape[1]
    for i, j in [(1, 2), (0, 0), (3, 1)]:
        q1, q2, k = x1[i] @ x1[i] / d, x2[j] @ x2[j] / d, x1[i] @ x2[j] / d
        # Sign: the arcsine kernel; variances exactly 1; nothing for the NTK (φ' = 0).
        k = 2 / math.pi * math.asin(max(-1.0, min(1.0, k / math.sqrt(q1 * q2))))
        q1 = q2 = 1.0
        q1, q2, k = q1 + 0.49, q2 + 0.49, k + 0.49   # Dense(256, b_std=0.7)
        t = k
        for _ in range(3):                            # (Gelu > Dense(64, b_std=0.8)) * 3
            gamma_dot = _gauss_hermite_dual(_gelu_prime, _gelu_prime, q1, q2, k)
            k, t = _gauss_hermite_dual(_gelu, _gelu, q1, q2, k), t * gamma_dot
            q1, q2 = (_gauss_hermite_dual(_gelu, _gelu, q, q, q) for q in (q1, q2))
            q1, q2, k = q1 + 0.64, q2 + 0.64, k + 0.64
            t = k + t
        assert got_k[i, j] == pytest.approx(k, rel=1e-10)
        assert got_t[i, j] == pytest.approx(k + t, rel=1e-10)   # Dense(1)


# ---------------------------------------------------------------------------------------
# Duals that used to take seconds: against quadrature
# ---------------------------------------------------------------------------------------

PAIRS = [(1.3, 0.7, 0.4), (1.3, 0.7, -0.9), (0.8, 1.1, 0.0), (1.0, 1.0, 1.0), (0.6, 0.6, -0.6)]


def _activation(arch: str) -> Activation:
    return next(layer for layer in parse(arch).layers if isinstance(layer, Activation))


def _dual_values(node, q1, q2, k):
    gamma, gamma_dot, _ = dual_maps(node)
    return float(_at(gamma, q1, q2, k)), float(_at(gamma_dot, q1, q2, k))


@pytest.mark.parametrize("arch", [
    "Dense(8) > Polynomial([" + ", ".join(str(round(0.1 * i - 1, 1)) for i in range(20)) + "]) > Dense(1)",
    'Dense(8) > Fn("x**16") > Dense(1)',
    'Dense(8) > Fn("x**3*exp(x/3) - x**2") > Dense(1)',
    'Dense(8) > Fn("x**2*cos(x) + x") > Dense(1)',
])
def test_polynomial_and_elementary_duals_against_quadrature(arch):
    node = _activation(arch)
    phi = sp.lambdify(X, phi_of(node), "numpy")
    dphi = sp.lambdify(X, sp.diff(phi_of(node), X), "numpy")
    for q1, q2, k in PAIRS:
        gamma, gamma_dot = _dual_values(node, q1, q2, k)
        for got, f in [(gamma, phi), (gamma_dot, dphi)]:
            # |E[f(u) f(v)]| <= sqrt(E[f(u)²] E[f(v)²]): the scale rounding is relative to.
            scale = math.sqrt(_gauss_hermite_dual(f, f, q1, q1, q1)
                              * _gauss_hermite_dual(f, f, q2, q2, q2))
            assert got == pytest.approx(_gauss_hermite_dual(f, f, q1, q2, k),
                                        rel=1e-9, abs=1e-12 * scale)


def test_polynomial_dual_is_a_hermite_sum_of_degree_plus_one_terms():
    coef = [0.1 * i - 1 for i in range(20)]
    gamma, _, _ = dual_maps(_activation(f"Dense(8) > Polynomial({coef}) > Dense(1)"))
    assert len(sp.Add.make_args(gamma)) <= len(coef)
    assert sp.Poly(gamma, _PLACEHOLDER.k).degree() == len(coef) - 1


def _truncated_moments(n, t):
    """M_j = ∫_t^∞ b^j φ(b) db for j = 0..n (M_j = t^(j-1) φ(t) + (j-1) M_(j-2))."""
    moments = [norm.sf(t), norm.pdf(t)]
    for j in range(2, n + 1):
        moments.append(t ** (j - 1) * norm.pdf(t) + (j - 1) * moments[j - 2])
    return moments


def _relu_power_dual(n, q1, q2, k):
    """E[relu(u)^n relu(v)^n] with u = sqrt(q1) a, v = sqrt(q2) (rho a + s b), a and b
    independent standard normals: the b-expectation over b > -rho a / s by truncated
    normal moments, the a-integral by adaptive quadrature."""
    rho = k / math.sqrt(q1 * q2)
    s = math.sqrt(max(1 - rho * rho, 0.0))

    def inner(a):
        if s == 0:  # v = sqrt(q2) rho a; relu(v)^0 is the step, 0 for v <= 0
            return (rho * a) ** n if rho * a > 0 else 0.0
        moments = _truncated_moments(n, -rho * a / s)
        return sum(math.comb(n, j) * (rho * a) ** (n - j) * s ** j * moments[j]
                   for j in range(n + 1))

    outer = integrate.quad(lambda a: a ** n * norm.pdf(a) * inner(a), 0, np.inf,
                           epsabs=1e-14, epsrel=1e-13, limit=200)[0]
    return (q1 * q2) ** (n / 2) * outer


@pytest.mark.parametrize("degree", [1, 2, 3, 5])
def test_rectified_monomial_against_quadrature(degree):
    node = _activation(f"Dense(8) > RectifiedMonomial({degree}) > Dense(1)")
    for q1, q2, k in PAIRS:
        gamma, gamma_dot = _dual_values(node, q1, q2, k)
        assert gamma == pytest.approx(_relu_power_dual(degree, q1, q2, k), rel=1e-9, abs=1e-12)
        # Price's theorem: Γ̇ = E[(relu^n)'(u) (relu^n)'(v)] = n² E[relu^(n-1) relu^(n-1)].
        expected_dot = degree ** 2 * _relu_power_dual(degree - 1, q1, q2, k)
        assert gamma_dot == pytest.approx(expected_dot, rel=1e-9, abs=1e-12)


def test_rectified_monomial_5_is_finite_and_exact_on_identical_inputs():
    """The NTK of identical inputs was NaN (945 c / sqrt(1 - c²) terms at c = 1)."""
    x1, _ = _inputs()
    net = ntkdsl.compile("Dense(8) > RectifiedMonomial(5) > Dense(1)")
    nngp, ntk = net.kernels(x1)
    q = (x1 * x1).sum(1) / x1.shape[1]
    # E[relu(u)^10] = E[u^10] / 2 = 945 q^5 / 2; Γ̇ = 25 E[relu(u)^8] = 25 · 105 q^4 / 2.
    np.testing.assert_allclose(np.diag(nngp), 945 * q ** 5 / 2, rtol=1e-13)
    np.testing.assert_allclose(np.diag(ntk), 945 * q ** 5 / 2 + q * 25 * 105 * q ** 4 / 2,
                               rtol=1e-13)
    assert np.isfinite(ntk).all()


def test_codegen_of_the_named_cases_runs_and_matches_the_library():
    """The standalone modules of the cases (with their whole derivation in the docstring)
    compute the library's numbers."""
    x1, x2 = _inputs()
    for arch in ["Dense(8) > RectifiedMonomial(5) > Dense(1)", SIGN_GELU.format(L=3)]:
        namespace: dict = {}
        exec(compile(ntkdsl.codegen(arch), "<standalone>", "exec"), namespace)  # imports numpy itself
        got = namespace["kernels"](x1, x2)
        expected = ntkdsl.compile(arch).kernels(x1, x2)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-13)


def test_template_caches_stay_bounded(monkeypatch):
    """A cache that is full starts afresh; networks compiled before keep their templates."""
    from ntkdsl.derivation import _TEMPLATES, TemplateCache
    monkeypatch.setattr(TemplateCache, "LIMIT", 3)
    _TEMPLATES.clear()
    x1, x2 = _inputs()
    first = ntkdsl.compile("Dense(8, W_std=1.1) > Relu > Dense(8, W_std=1.2) > Erf > Dense(1)")
    for width in range(2, 8):
        ntkdsl.compile(f"Dense({width}, W_std=1.3) > Sin > Dense(1, b_std=0.{width})")
        assert len(_TEMPLATES) <= 3
    again = derive(parse(first.arch))
    assert len(again.steps) == len(first.program.steps)
    assert [tuple(s.assignments) for s in again.steps] == [tuple(s.assignments)
                                                           for s in first.program.steps]
    assert np.isfinite(first.ntk(x1, x2)).all()
