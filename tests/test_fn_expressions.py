"""Fn expressions: the grammar maps text to sympy exactly, hostile or malformed text runs
nothing and gets ntkdsl's own error with a position, and Fn kernels equal the built-ins."""
from __future__ import annotations

import os

import numpy as np
import pytest
import sympy as sp

import ntkdsl
from ntkdsl.errors import ExpressionError, NTKDSLError
from ntkdsl.expressions import parse_expression, x


@pytest.mark.parametrize("text, expected", [
    ("x*tanh(x)", x * sp.tanh(x)),
    ("sin(x) + 0.5*x", sp.sin(x) + x / 2),
    ("-x**2 + 1", 1 - x ** 2),
    ("2^3*x", 8 * x),
    ("x**-1.5*0 + x", x),
    ("max(x, 0.5) - min(x, -1)", sp.Max(x, sp.Rational(1, 2)) - sp.Min(x, -1)),
    ("sigmoid(x)", 1 / (1 + sp.exp(-x))),
    ("softplus(2*x)", sp.log(1 + sp.exp(2 * x))),
    ("relu(x - 1) + step(x) + sign(x) + abs(x)",
     sp.Max(x - 1, 0) + sp.Heaviside(x, 1) + sp.sign(x) + sp.Abs(x)),
    ("erf(x/sqrt(2)) * exp(-x**2/4) + log(1 + x**2) + cos(pi*x) + e", sp.erf(x / sp.sqrt(2))
     * sp.exp(-x ** 2 / 4) + sp.log(1 + x ** 2) + sp.cos(sp.pi * x) + sp.E),
    ("1e-3 * x", x / 1000),
])
def test_expressions_map_to_sympy(text, expected):
    assert sp.simplify(parse_expression(text) - expected) == 0


HOSTILE = [
    "__import__('os').system('touch pwned')",
    "__import__(\"os\").system(\"touch pwned\")",
    "exec('open(\"pwned\", \"w\")')",
    "open('pwned', 'w')",
    "x.__class__",
    "lambda: 1",
    "[x for x in ()]",
    "x; import os",
    "os.system",
    "eval(x)",
    "globals()",
    "Symbol(x)",
    "sympify(x)",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_rejected_and_runs_nothing(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arch = "Dense(8) > Fn(" + repr(text).replace("\\'", "'") + ") > Dense(1)"
    with pytest.raises(NTKDSLError):
        ntkdsl.compile(arch)
    with pytest.raises(ExpressionError):
        parse_expression(text)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text, message, column, hint", [
    ("x*tonh(x)", "unknown function 'tonh'", 3, "tanh(a)"),
    ("x + y", "unknown name 'y'", 5, "variable x"),
    ("x +", "unexpected end", 4, "expected"),
    ("max(x)", "takes 2 argument", 1, "max(a, b)"),
    ("log(x)", "not real at x", 1, "real"),
    ("sqrt(x)", "not real at x", 1, "real"),
    ("1/x", "not finite at x = 0", 1, "finite"),
    ("exp(x**2)", "diverge", 1, "exp(x**2)"),
    ("x*exp(x**2/100)", "diverge", 1, "grow slower"),
    ("", "empty", 1, "Fn("),
])
def test_errors_point_into_the_architecture(text, message, column, hint):
    arch = f'Dense(8) >\n  Fn("{text}")'
    with pytest.raises(ExpressionError) as info:
        ntkdsl.parse(arch)
    err = info.value
    assert message in err.message and hint in str(err)
    assert err.line == 2 and err.column == 6 + column  # '  Fn("' is 6 characters
    assert "^" in str(err)


def test_keyword_argument_positions():
    with pytest.raises(ExpressionError) as info:
        ntkdsl.parse('Dense(8) > Fn(expr="x + foo")')
    assert info.value.column == len('Dense(8) > Fn(expr="x + ') + 1


@pytest.mark.parametrize("fn, builtin", [
    ("relu(x)", "Relu"), ("erf(x)", "Erf"), ("sin(x)", "Sin"), ("abs(x)", "Abs"),
    ("tanh(x)", "Tanh"), ("x*sigmoid(x)", "Silu"), ("softplus(x)", "Softplus"),
    ("x**3", "Monomial(3)"),
])
def test_fn_kernels_equal_the_builtins(fn, builtin):
    x1 = np.random.default_rng(3).standard_normal((5, 4))
    a = ntkdsl.compile(f'Dense(8, W_std=1.3, b_std=0.2) > Fn("{fn}") > Dense(1)').kernels(x1)
    b = ntkdsl.compile(f"Dense(8, W_std=1.3, b_std=0.2) > {builtin} > Dense(1)").kernels(x1)
    for got, want in zip(a, b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("fn, route", [
    ("sin(x) + 0.5*x", "closed form"), ("2*relu(x)", "closed form"),
    ("x*exp(-x**2/2)", "closed form"), ("cos(2*x + 1) + x**3", "closed form"),
    ("x*tanh(x)", "numerical"),
])
def test_formula_states_the_route(fn, route):
    text = str(ntkdsl.compile(f'Dense(8) > Fn("{fn}") > Dense(1)').formula("ntk"))
    assert f"[{route}" in text


def test_rules_give_exact_elementary_duals():
    """E[φ(u)φ(v)] for φ = x·exp(-x²/2) + cos(2x + 1), against a 2-D Gauss–Hermite rule
    (exact to rounding for these entire integrands at small variance)."""
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    f = lambda t: t * np.exp(-t ** 2 / 2) + np.cos(2 * t + 1)
    net = ntkdsl.compile('Dense(8, b_std=0.3) > Fn("x*exp(-x**2/2) + cos(2*x + 1)")')
    x1 = np.array([[0.3, -0.2], [0.1, 0.4]])
    got = net.nngp(x1)
    q = (x1 ** 2).sum(1) / 2 + 0.09
    k = x1[0] @ x1[1] / 2 + 0.09
    c, s = k / np.sqrt(q[0] * q[1]), np.sqrt(1 - k ** 2 / (q[0] * q[1]))
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    want = (w[:, None] * w[None, :] * f(np.sqrt(q[0]) * z1)
            * f(np.sqrt(q[1]) * (c * z1 + s * z2))).sum()
    assert abs(got[0, 1] - want) <= 1e-13


def test_composition_is_the_dual_of_the_composed_function():
    x1 = np.random.default_rng(4).standard_normal((4, 3))
    a = ntkdsl.compile("Dense(8, b_std=0.1) > Relu > Sin > Dense(1)").kernels(x1)
    b = ntkdsl.compile('Dense(8, b_std=0.1) > Fn("sin(relu(x))") > Dense(1)').kernels(x1)
    for got, want in zip(a, b):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("body, scale", [("sign(x)", 1.0), ("3*sign(x)", 3.0), ("2*step(x) - 1", 1.0)])
def test_fn_with_zero_derivative_is_the_arcsine_kernel(body, scale):
    """φ' = 0 almost everywhere: Γ̇ = 0 as for Sign (∂Γ/∂k of the arcsine is infinite on
    the diagonal; it used to leak out of the printer as KeyError: 'ComplexInfinity')."""
    x = np.random.default_rng(3).standard_normal((5, 3))
    x[3], x[4] = x[0], -x[1]  # an identical and an opposite pair
    net = ntkdsl.compile(f'Dense(8) > Fn("{body}") > Dense(1)')
    k = x @ x.T / 3
    c = np.clip(k / np.sqrt(np.outer(np.diag(k), np.diag(k))), -1, 1)
    nngp = scale ** 2 * 2 / np.pi * np.arcsin(c)
    # The opposite pair is a "loose" entry (DESIGN §5): c is -1 only to within rounding.
    tight = np.ones(c.shape, bool)
    tight[1, 4] = tight[4, 1] = False
    for got in (net.nngp(x), net.ntk(x)):  # the NTK is the readout's term only: Γ̇ = 0
        np.testing.assert_allclose(got[tight], nngp[tight], rtol=1e-10, atol=1e-12)
        assert np.abs(got - nngp)[~tight].max() <= 1e-7 * scale ** 2


def test_composed_activations_with_vanishing_derivative_add_nothing_to_the_ntk():
    """Sign > Sign (and Sign * 3) compose to sign∘sign = sign: the same kernels as one Sign,
    with Γ̇ = 0 as for Sign itself (it raised a sympy KeyError before)."""
    x = np.random.default_rng(3).standard_normal((5, 3))
    one = ntkdsl.compile("Dense(1, b_std=1.74) > Sign > Dense(8, W_std=0.215, b_std=1)")
    for arch in ["Dense(1, b_std=1.74) > (Sign) * 3 > Dense(8, W_std=0.215, b_std=1)",
                 "Dense(1, b_std=1.74) > Sign > Sign > Dense(8, W_std=0.215, b_std=1)"]:
        net = ntkdsl.compile(arch)
        np.testing.assert_allclose(net.nngp(x), one.nngp(x), rtol=1e-13)
        np.testing.assert_allclose(net.ntk(x), one.ntk(x), rtol=1e-13)
