"""Every closed-form dual Γ and its NTK factor Γ̇ against an independent computation:
nested adaptive quadrature of E[φ(u)φ(v)] and E[φ'(u)φ'(v)] over the bivariate Gaussian,
with φ and φ' lambdified from the registry's sympy φ (not from the duals under test)."""
import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from ntkdsl import activations, parse
from ntkdsl.derivation import _PLACEHOLDER, Assignment, Program, Step, dual_maps
from ntkdsl.generate import compile_program

CASES = [
    "Relu", "LeakyRelu(0.1)", "ABRelu(-0.5, 2.0)", "Abs", "Erf", "Erf(a=1.5, b=0.7, c=0.2)",
    "Sin", "Sin(a=2.0, b=0.5, c=0.3)", "Cos(b=1.5, c=-0.4)", "Exp(a=0.7, b=0.6)",
    "Gaussian", "Gaussian(a=2.0, b=-0.3)", "Gelu", "Sign", "Monomial(3)", "Monomial(0)",
    "RectifiedMonomial(0)", "RectifiedMonomial(1)", "RectifiedMonomial(2)",
    "RectifiedMonomial(3)", "Polynomial([0.1, 1.0, 0.5, -0.2])",
]
# (q1, q2, correlation), including the endpoints ±1 where naive formulas are 0/0.
POINTS = [(0.7, 1.3, 0.35), (2.0, 0.5, -0.8), (1.1, 1.1, 0.999), (0.9, 1.6, 1.0),
          (1.2, 0.8, -1.0)]


def _numeric(expr):
    """φ as a NumPy function; Heaviside/sign/Max print as np.heaviside/np.sign/np.maximum."""
    return sp.lambdify(activations.x, expr, modules=["numpy", "scipy"])


def _derivative(spec, params):
    if spec.zero_derivative(**params):
        return None  # convention: Γ̇ = 0 for Sign and steps
    phi = spec.phi(**params)
    return sp.diff(phi, activations.x).replace(sp.DiracDelta, lambda *a: 0)


def gaussian_expectation(f, g, q1, q2, rho):
    """E[f(u) g(v)], (u, v) ~ N(0, [[q1, k], [k, q2]]), rho = k / sqrt(q1 q2), by nested
    adaptive quadrature in standard normal coordinates (breakpoints at the kinks u = 0,
    v = 0)."""
    s1, s2 = math.sqrt(q1), math.sqrt(q2)
    r = math.sqrt(max(0.0, 1.0 - rho * rho))
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def inner(z1):
        u = s1 * z1
        if r == 0.0:
            return float(f(u)) * float(g(rho * s2 * z1))
        kink = -rho * z1 / r
        val, _ = integrate.quad(lambda z2: float(g(s2 * (rho * z1 + r * z2))) * pdf(z2),
                                -12, 12, points=[kink] if abs(kink) < 12 else None,
                                epsabs=1e-13, epsrel=1e-12, limit=200)
        return float(f(u)) * val

    val, _ = integrate.quad(lambda z1: inner(z1) * pdf(z1), -12, 12, points=[0.0],
                            epsabs=1e-13, epsrel=1e-12, limit=200)
    return val


def _numpy_dual(expr, q1, q2, k):
    """The dual through the same generated-code path the library uses."""
    p = _PLACEHOLDER
    program = Program((p.q1, p.q2, p.k), (Step("dual", (Assignment(sp.Symbol("G"), expr),)),),
                      (sp.Symbol("G"), sp.S.Zero))
    f = compile_program(program, "f")
    return float(np.asarray(f(np.float64(q1), np.float64(q2), np.float64(k))[0]))


@pytest.mark.parametrize("text", CASES)
@pytest.mark.parametrize("point", POINTS, ids=lambda p: f"q1={p[0]},q2={p[1]},c={p[2]}")
def test_dual_matches_quadrature(text, point):
    node = parse(f"Dense(1) > {text}").layers[1]
    spec, params = activations.lookup(node.name), node.kwargs
    gamma, gamma_dot, route = dual_maps(node)
    assert route == "closed form"
    q1, q2, rho = point
    k = rho * math.sqrt(q1 * q2)
    phi = _numeric(spec.phi(**params))
    want = gaussian_expectation(phi, phi, q1, q2, rho)
    got = _numpy_dual(gamma, q1, q2, k)
    assert got == pytest.approx(want, rel=1e-8, abs=1e-10)

    dphi = _derivative(spec, params)
    want_dot = 0.0 if dphi is None else gaussian_expectation(
        _numeric(dphi), _numeric(dphi), q1, q2, rho)
    got_dot = _numpy_dual(gamma_dot, q1, q2, k)
    assert np.isfinite(got_dot)
    assert got_dot == pytest.approx(want_dot, rel=1e-8, abs=1e-10)
