"""The numerical dual against an independent 2-D quadrature (scipy's adaptive dblquad in
decorrelated coordinates) across correlations -1..1 and variances 1e-3..1e3, for Γ and Γ̇;
plus the generated helper standing alone with numpy."""
from __future__ import annotations

import types

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

import ntkdsl
from ntkdsl import numerical
from ntkdsl.activations import x

CORRELATIONS = (-1.0, -0.999, -0.6, 0.0, 0.3, 0.9, 0.99, 1.0)
VARIANCE_PAIRS = ((1e-3, 2e-3), (0.5, 2.0), (3.0, 3.0), (40.0, 25.0), (1e3, 8e2))


def quad2(f, q1, q2, c):
    """E[f(u) f(v)] by adaptive quadrature over (z1, z2), breaking at the z1 = 0 kink
    scale; collinear pairs as a 1-D integral."""
    s = np.sqrt(max(1 - c * c, 0.0))
    dens = lambda z: np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    pts = sorted({0.0, *(t / np.sqrt(q1) for t in (-3, -1, 1, 3))})
    if s == 0:
        g = lambda z: f(np.sqrt(q1) * z) * f(np.sign(c) * np.sqrt(q2) * z) * dens(z)
        return integrate.quad(g, -12, 12, points=pts, limit=400, epsabs=1e-15, epsrel=1e-13)[0]

    def inner(z1):
        g = lambda z2: f(np.sqrt(q2) * (c * z1 + s * z2)) * dens(z2)
        centre = -c * z1 / s
        p = sorted({centre + t / (np.sqrt(q2) * s) for t in (-3, -1, 0, 1, 3)})
        p = [v for v in p if -12 < v < 12]
        return integrate.quad(g, -12, 12, points=p, limit=400, epsabs=1e-15,
                              epsrel=1e-13)[0]

    h = lambda z1: f(np.sqrt(q1) * z1) * dens(z1) * inner(z1)
    return integrate.quad(h, -12, 12, points=pts, limit=400, epsabs=1e-15, epsrel=1e-13)[0]


def SECH2(t):  # as TANH; 1/cosh(t)**2 overflows in cosh for |t| > 710
    e = np.exp(-2 * abs(t))
    return 4 * e / (1 + e) ** 2


TANH = np.tanh


@pytest.mark.parametrize("q1, q2", VARIANCE_PAIRS)
def test_tanh_dual_and_derivative_across_correlations_and_variances(q1, q2):
    gamma, dot = numerical.numerical_duals(sp.tanh(x), x, "Tanh")
    c = np.array(CORRELATIONS)
    k = c * np.sqrt(q1 * q2)
    args = (k[None, :], np.full((1, 1), q1), np.full((1, 1), q2))
    got, got_dot = numerical.evaluate(gamma, *args)[0], numerical.evaluate(dot, *args)[0]
    # The joint route generated code takes: Γ̇ as the derivative of Γ's series.
    joint, joint_dot = (v[0] for v in numerical.evaluate_pair(gamma, *args))
    for i, ci in enumerate(c):
        want = quad2(TANH, q1, q2, ci)
        want_dot = quad2(SECH2, q1, q2, ci)
        for g, g_dot in ((got, got_dot), (joint, joint_dot)):
            assert abs(g[i] - want) <= 1e-9 * max(abs(want), 1e-3), (ci, g[i], want)
            assert abs(g_dot[i] - want_dot) <= 1e-9 * max(abs(want_dot), 1e-3), ci


@pytest.mark.parametrize("expr, f, f_dot", [
    ("x*tanh(x)", lambda t: t * np.tanh(t), lambda t: np.tanh(t) + t * SECH2(t)),
    ("relu(x - 1)", lambda t: np.maximum(t - 1, 0), lambda t: (t > 1) * 1.0),
    ("log(1 + exp(x))", lambda t: np.logaddexp(0, t), lambda t: 0.5 * (1 + np.tanh(t / 2))),
])
@pytest.mark.parametrize("q, c", [(0.7, 0.5), (5.0, -0.95), (200.0, 0.8)])
def test_other_activations(expr, f, f_dot, q, c):
    """Γ, and Γ̇ by the joint route (derivative of Γ's series, kinks included)."""
    from ntkdsl.expressions import parse_expression
    gamma, _ = numerical.numerical_duals(parse_expression(expr), x, expr)
    k = c * np.sqrt(q * 1.3 * q)
    args = np.array([[k]]), np.array([[q]]), np.array([[1.3 * q]])
    got = numerical.evaluate(gamma, *args)
    want = quad2(f, q, 1.3 * q, c)
    assert abs(got[0, 0] - want) <= 1e-9 * max(abs(want), 1e-3)
    joint_dot = numerical.evaluate_pair(gamma, *args)[1]
    want_dot = quad2(f_dot, q, 1.3 * q, c)
    assert abs(joint_dot[0, 0] - want_dot) <= 1e-9 * max(abs(want_dot), 1e-3)


def test_kernel_matrix_layout_matches_entrywise_values():
    """Horner over the matrix with a bulk truncation gives the entrywise sums."""
    gamma, _ = numerical.numerical_duals(sp.tanh(x), x, "Tanh")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 5)) * rng.uniform(0.1, 8, (30, 1))
    q = (a * a).sum(1) / 5
    k = a @ a.T / 5
    matrix = numerical.evaluate(gamma, k, q[:, None], q[None, :])
    flat = numerical.evaluate(gamma, k.ravel(), np.repeat(q, 30), np.tile(q, 30))
    # Both are certified to 1e-11 x sqrt(E[phi(u)^2] E[phi(v)^2]); they differ by truncation.
    np.testing.assert_allclose(matrix.ravel(), flat, rtol=0, atol=2e-11)


def test_standalone_module_has_the_same_numbers():
    arch = "Dense(16, W_std=1.5, b_std=0.1) > Mish > Dense(16) > Elu(alpha=0.5) > Dense(1)"
    source = ntkdsl.codegen(arch)
    module = types.ModuleType("standalone")
    exec(compile(source, "standalone", "exec"), module.__dict__)  # our generated code
    x1 = np.random.default_rng(1).standard_normal((6, 3))
    np.testing.assert_allclose(module.ntk(x1), ntkdsl.compile(arch).ntk(x1), rtol=1e-13)
    assert not [line for line in source.splitlines()
                if line.startswith(("import", "from")) and "numpy" not in line]


def test_joint_route_equals_separate_duals_with_zero_variances_and_collinear_pairs():
    """Γ̇ as the derivative of Γ's series (one pass for both) against Γ̇ from φ''s own
    series (checked against quadrature above): rows and columns with zero variance,
    collinear and opposite pairs, variances from 1e-3 to 1e3."""
    gamma, dot = numerical.numerical_duals(sp.tanh(x), x, "Tanh")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 4)) * np.geomspace(0.03, 30, 40)[:, None]
    a[5], a[6], a[7] = 0.0, a[8], -2 * a[9]
    q, k = (a * a).sum(1) / 4, a @ a.T / 4
    args = (k[:25], q[:25, None], q[None, :])
    got, got_dot = numerical.evaluate_pair(gamma, *args)
    want, want_dot = numerical.evaluate(gamma, *args), numerical.evaluate(dot, *args)
    m, m_dot = (np.sqrt(np.outer(f(q[:25]), f(q))) for f in (
        lambda v: numerical.evaluate(gamma, v, v, v), lambda v: numerical.evaluate(dot, v, v, v)))
    assert np.abs(got - want).max() <= 1e-10 * m.max()
    assert (np.abs(got_dot - want_dot) <= 1e-9 * m_dot).all()
    # An input of zero variance: E[tanh'(0) tanh'(v)] = E[sech^2(sqrt(q2) z)] (1-D).
    def weighted(z, scale):
        return SECH2(scale * z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)

    for j in (0, 12, 24):
        ref = integrate.quad(weighted, -12, 12, args=(np.sqrt(q[j]),), limit=400,
                             epsabs=1e-15)[0]
        assert abs(got_dot[5, j] - ref) <= 1e-10 and abs(got_dot[j, 5] - ref) <= 1e-10


def test_generated_code_computes_gamma_and_derivative_in_one_call():
    """Tanh (continuous): one _pair_ call per layer and no call of Γ̇'s own series; an
    activation with a jump keeps two calls (there E[φ'φ'] is not ∂Γ/∂k)."""
    smooth = ntkdsl.compile("(Dense(8) > Tanh) * 2 > Dense(1)").source
    body = smooth[smooth.index("def pair("):smooth.index("def diagonal(")]
    gamma, dot = numerical.numerical_duals(sp.tanh(x), x, "Tanh")
    assert body.count(f"= _pair_{gamma.tag}(") == 2 and f"_dual_{dot.tag}(" not in body
    jump = ntkdsl.compile('Dense(8) > Fn("tanh(x) + 0.1*sign(x)") > Dense(1)').source
    assert "_pair_" not in jump and jump.count("= _dual_") == 2


def test_a_layers_tangent_duals_in_one_call_equal_the_separate_series():
    """_hd_dual_group (a gradient program's Tanh layer: Γ, Γ̇ and the five duals of φ's
    derivatives its tangents need, E[φ'''φ'] as the k-derivative of E[φ''φ]'s series and
    E[φ''φ''] as the second of Γ's) against each dual from its own series: zero variances,
    collinear and opposite pairs, variances from 1e-3 to 1e3, the kernel-matrix layout and
    flat entries."""
    from ntkdsl.runtime import hermite

    gamma, _ = numerical.numerical_duals(sp.tanh(x), x, "Tanh")
    fs = []
    for n in range(4):
        name, source, modules = gamma.family.function(n)
        fs.append(numerical.compile_source(source, modules)[name])
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 4)) * np.geomspace(0.03, 30, 40)[:, None]
    a[5], a[6], a[7] = 0.0, a[8], -2 * a[9]
    q, k = (a * a).sum(1) / 4, a @ a.T / 4
    args = (k[:25], q[:25, None], q[None, :])
    specs = ((0, 0, 0), (1, 1, 1), (2, 0, 0), (0, 2, 0), (2, 2, 2), (3, 1, 1), (1, 3, 1))
    got = hermite._hd_dual_group(tuple(fs), (), specs, *args)
    flat = hermite._hd_dual_group(tuple(fs), (), specs, *(np.broadcast_to(v, k[:25].shape).ravel()
                                                          for v in args))
    for (i, j, _), value, entries in zip(specs, got, flat):
        want = (hermite._hd_dual(fs[i], (), *args) if i == j else
                hermite._hd_cross(fs[i], fs[j], (), *args))
        scale = np.sqrt(np.outer(hermite._hd_moment(fs[i], (), q[:25]),
                                 hermite._hd_moment(fs[j], (), q)))
        scale[scale == 0] = 1.0  # φ(0) = φ''(0) = 0: a zero row's duals are 0
        # Each is certified to 1e-11 of scale (with q = 0.006 among the variances: its
        # tails once fell to rounding, 0, within a few terms, and the separate series
        # stopped early at (20, 6), checked below, the layouts 5e-10 apart at q1 = 0.03).
        assert (np.abs(value - want) <= 2.001e-11 * scale).all(), (i, j)
        assert (np.abs(entries.reshape(value.shape) - want) <= 2.001e-11 * scale).all(), (i, j)
    # E[φ''(u) φ(v)] at q1 = 1.41, q2 = 0.006, c = 0.957: the series to all its terms (they
    # fall below 1e-22 by n = 60), as a 180 x 180 Gauss-Hermite product rule gives it.
    z, w = np.polynomial.hermite_e.hermegauss(180)
    w = np.outer(w, w) / (2 * np.pi)
    q1, q2 = q[20], q[6]
    c = k[20, 6] / np.sqrt(q1 * q2)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    exact = (fs[2](np.sqrt(q1) * z1) * fs[0](np.sqrt(q2) * (c * z1 + np.sqrt(1 - c * c) * z2))
             * w).sum()
    assert abs(got[2][20, 6] - exact) <= 1e-12
    bound = 1e-11 * np.sqrt(hermite._hd_moment(fs[2], (), q1) * hermite._hd_moment(fs[0], (), q2))
    cross = hermite._hd_cross(fs[2], fs[0], (), *args)
    assert abs(cross[20, 6] - exact) <= bound + 1e-15, (cross[20, 6] - exact, bound)


def test_a_gradient_program_computes_a_layers_duals_in_one_call():
    """The NTK's gradient program: one _group_ call per Tanh layer, which replaces the
    kernel's _pair_ call and every cross dual's own."""
    from ntkdsl.templates import ArchTemplate

    net = ntkdsl.compile(ArchTemplate("(Dense(8, W_std={w}, b_std={b}) > Tanh) * 2 > Dense(1)",
                                      w=1.2, b=0.1), gradients=["w", "b"])
    for kind in ("nngp", "ntk"):
        source = net.gradient_kernels(kind).source
        body = source[source.index("def pair("):source.index("def diagonal(")]
        assert body.count("= _group_") == 2 and "_dual_" not in body and "_pair_" not in body
