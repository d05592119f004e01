"""Issue 12, "every input bounded, finite and exact": every size that drives time or memory
has a documented limit (ntkdsl.limits), refused with ntkdsl's own exception and a caret
under the offending text before any work starts; inputs just inside each limit still give
the right numbers (checked against an independent computation); an overflow during
evaluation is a NumericalError naming the layer, never a silent inf/NaN."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from numpy.polynomial.hermite_e import hermegauss
from scipy.integrate import dblquad, quad

import ntkdsl
from ntkdsl import limits
from ntkdsl.errors import ExpressionError, LayerValueError, NumericalError

ROOT = Path(__file__).resolve().parent.parent

# (architecture, exception class, the text the caret must be under, a fragment of the message)
REFUSED = [
    ("Dense(3) > (Sigmoid) * 1000 > Dense(8)", "LayerValueError", "Sigmoid",
     f"the limit is {limits.MAX_COMPOSED}"),  # was a RecursionError in sympy
    ("(Dense(512) > Relu) * 100000000 > Dense(1)", "LayerValueError", "100000000",
     f"at most {limits.MAX_REPEAT}"),
    ("(Dense(512) > Relu) * 1251 > Dense(1)", "LayerValueError",
     "(Dense(512) > Relu) * 1251", f"the limit is {limits.MAX_LAYERS}"),  # the repeat alone is over
    ("Dense(8) * 2500 > Relu > Dense(8) * 2500", "LayerValueError",
     "Dense(8) * 2500 > Relu > Dense(8) * 2500", "5001 layers"),  # only the whole is over
    ("((Relu * 2000) * 2000) * 2000", "LayerValueError", "(Relu * 2000) * 2000",
     "8000000000 layers once its repeats are written out"),
    ("Dense(8) > Monomial(1000000) > Dense(1)", "LayerValueError", "1000000",
     f"<= {limits.MAX_DEGREE}"),
    ("Dense(8) > Monomial(degree=1e30) > Dense(1)", "LayerValueError", "degree=1e30",
     f"<= {limits.MAX_DEGREE}"),
    ("Dense(8) > RectifiedMonomial(6) > Dense(1)", "LayerValueError", "6",
     f"<= {limits.MAX_RECTIFIED_DEGREE}"),
    ("Dense(8) > Polynomial([" + ", ".join(["0.5"] * 21) + "]) > Dense(1)", "LayerValueError",
     "[" + ", ".join(["0.5"] * 21) + "]", f"at most {limits.MAX_COEFFICIENTS} coefficients"),
    ("Dense(8, W_std=1" + "0" * 5000 + ")", "LayerValueError", "1" + "0" * 5000,
     f"at most {limits.MAX_NUMBER_LENGTH} characters"),
    ("Dense(" + "9" * 400 + ") > Relu > Dense(1)", "LayerValueError", "9" * 400,
     f"at most {limits.MAX_NUMBER_LENGTH} characters"),
    ("Dense(8, W_std=0." + "0" * 60 + "1)", "LayerValueError", "0." + "0" * 60 + "1",
     "magnitude between 1e-50 and 1e+50"),
    ("Dense(512, W_std=1e308) > Exp > Dense(1)", "LayerValueError", "1e308",
     "magnitude between 1e-50 and 1e+50"),
    ("Dense(8, W_std=1e309)", "LayerValueError", "1e309", "1.7976931348623157e+308"),
    ("Dense(8, b_std=1e-320) > Relu > Dense(1)", "LayerValueError", "1e-320", "write 0"),
    ("Dense(2000000000) > Relu > Dense(1)", "LayerValueError", "2000000000",
     f"<= {limits.MAX_WIDTH}"),
    ("Dense(8) > Gaussian(a=1, b=1) > Dense(1)", "LayerValueError", "b=1", "must be <= 0"),
    ("(Dense(8) > " * 150 + "Relu" + ")" * 150, "ArchitectureSyntaxError", None,
     f"more than {limits.MAX_NESTING} levels"),
    ("Dense(8) > " * 10000 + "Dense(1)", "ArchitectureSyntaxError", None,
     f"the limit is {limits.MAX_SOURCE_LENGTH}"),
    ('Dense(8) > Fn("min((x) ** (-1), x)") > Dense(1)', "ExpressionError",
     "min((x) ** (-1), x)", "not finite at x = 0"),
    ('Dense(8) > Fn("1/0 + x") > Dense(1)', "ExpressionError", "1/0", "undefined"),
    ('Dense(8) > Fn("9**9**9") > Dense(1)', "ExpressionError", "9**9**9", "float64 range"),
    ('Dense(8) > Fn("x**1000000") > Dense(1)', "ExpressionError", "x**1000000",
     f"degree 1e+06 in x (it is x**1000000); the limit is {limits.MAX_FN_DEGREE}"),
    # The degree of the value, however it is written (each exponent of these is 20).
    ('Dense(8) > Fn("(x**20)**20") > Dense(1)', "ExpressionError", "(x**20)**20",
     "degree 400 in x (it is x**400)"),
    ('Dense(8) > Fn("' + "*".join(["x**20"] * 6) + '") > Dense(1)', "ExpressionError",
     "*".join(["x**20"] * 6), "degree 120 in x"),
    ('Dense(8) > Fn("(1 + sin(x))**60/(2 + cos(x))**60") > Dense(1)', "ExpressionError",
     "(1 + sin(x))**60/(2 + cos(x))**60", "degree 120 in x"),
    ('Dense(8) > Fn("exp(1e-6*x**2)") > Dense(1)', "ExpressionError", "exp(1e-6*x**2)",
     "diverge"),  # accepted before: its moments are infinite past q = 250,000
    ('Dense(8) > Fn("1e40**8 * x") > Dense(1)', "ExpressionError", "1e40**8", "float64 range"),
    ('Dense(8) > Fn("1e400*x") > Dense(1)', "ExpressionError", "1e400", "float64 range"),
    ('Dense(8) > Fn("' + "-" * 1500 + 'x") > Dense(1)', "ExpressionError", None,
     f"nested more than {limits.MAX_FN_DEPTH} levels"),
    ('Dense(8) > Fn("' + "sin(" * 7 + "x" + ")" * 7 + '") > Dense(1)', "ExpressionError",
     "sin(x)", f"function calls nested more than {limits.MAX_FN_CALL_DEPTH}"),
    ('Dense(8) > Fn("' + "+".join(["x"] * 134) + '") > Dense(1)', "ExpressionError",
     "+".join(["x"] * 134), f"the limit is {limits.MAX_FN_NODES}"),
    ('Dense(8) > Fn("x' + " " * 2500 + '") > Dense(1)', "ExpressionError", None,
     f"the limit is {limits.MAX_FN_LENGTH}"),
]

_RUNNER = r"""
import json, sys
import ntkdsl
out = []
for arch in json.loads(sys.stdin.read()):
    try:
        ntkdsl.compile(arch)
        out.append({"kind": "compiled"})
    except ntkdsl.NTKDSLError as err:
        out.append({"kind": type(err).__name__, "start": err.span.start, "end": err.span.end,
                    "line": err.line, "column": err.column, "text": str(err)})
    except BaseException as err:
        out.append({"kind": "foreign " + type(err).__name__, "text": str(err)[:300]})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def refusals() -> dict[str, dict]:
    """Every REFUSED input compiled in one child process: a hang (the old behaviour of
    several) fails the tests instead of stalling them. The timeout is a hang guard only."""
    archs = [case[0] for case in REFUSED]
    done = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(archs), text=True,
                          capture_output=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(zip(archs, json.loads(done.stdout)))


def _expected_span(arch: str, target: str | None, found: dict) -> tuple[int, int]:
    if target is None:  # the limit's own position: checked by the message and the caret
        return found["start"], found["end"]
    if target == "sin(x)":  # the innermost call past the limit
        start = arch.index("sin(" * (limits.MAX_FN_CALL_DEPTH + 1)) + 4 * limits.MAX_FN_CALL_DEPTH
        return start, arch.index(")", start) + 1
    start = arch.index(target)
    return start, start + len(target)


@pytest.mark.parametrize("arch, kind, target, fragment", REFUSED,
                         ids=[f"{i}:{c[0][:40]}" for i, c in enumerate(REFUSED)])
def test_limits_are_refused_with_a_caret(refusals, arch, kind, target, fragment):
    found = refusals[arch]
    assert found["kind"] == kind, found
    assert fragment in found["text"], found["text"][:500]
    assert (found["start"], found["end"]) == _expected_span(arch, target, found), found["text"][:500]
    assert found["line"] == 1 and found["column"] == found["start"] + 1
    caret_line = found["text"].split("\n")[2]
    assert caret_line.strip().startswith("^")


def test_limit_positions_of_length_and_depth(refusals):
    """Length limits point at the first character past the limit, depth limits at the
    subtree past it."""
    source = "Dense(8) > " * 10000 + "Dense(1)"
    assert refusals[source]["start"] == limits.MAX_SOURCE_LENGTH
    fn = 'Dense(8) > Fn("x' + " " * 2500 + '") > Dense(1)'
    assert refusals[fn]["start"] == fn.index('"') + 1 + limits.MAX_FN_LENGTH
    deep = 'Dense(8) > Fn("' + "-" * 1500 + 'x") > Dense(1)'
    # The subtree below MAX_FN_DEPTH levels starts at the (MAX_FN_DEPTH + 1)-th minus.
    assert refusals[deep]["start"] == deep.index('"') + 1 + limits.MAX_FN_DEPTH
    nested = "(Dense(8) > " * 150 + "Relu" + ")" * 150
    start = refusals[nested]["start"]
    assert nested[start:].startswith("Dense(8) > (") and nested[:start].count("(") > limits.MAX_NESTING // 2


# ------------------------------------------------------------- just inside every limit --

def _inputs(d: int = 4) -> np.ndarray:
    x = np.random.default_rng(7).standard_normal((5, d))
    x[3] = -x[0]  # an exactly opposite pair
    return x


def _stats(x: np.ndarray):
    d = x.shape[1]
    k = x @ x.T / d
    q = np.diag(k)
    return q[:, None], q[None, :], k


def _gauss_pair(phi, q1, q2, k, points: int = 60):
    """E[φ(u) φ(v)] for (u, v) ~ N(0, [[q1, k], [k, q2]]) entrywise, by a tensor
    Gauss–Hermite rule (exact for polynomials of degree < 2·points in each variable)."""
    z, w = hermegauss(points)
    w = w / w.sum()
    c = np.clip(k / np.sqrt(q1 * q2), -1, 1)
    z1, z2 = z[:, None], z[None, :]
    out = np.empty(np.broadcast(q1, q2, k).shape)
    for idx in np.ndindex(out.shape):
        a, b, cc = np.broadcast_to(q1, out.shape)[idx], np.broadcast_to(q2, out.shape)[idx], c[idx]
        u = np.sqrt(a) * z1
        v = np.sqrt(b) * (cc * z1 + np.sqrt(max(0.0, 1 - cc * cc)) * z2)
        out[idx] = (w[:, None] * w[None, :] * phi(u) * phi(v)).sum()
    return out


def test_layers_and_repeat_just_inside_the_limits():
    """MAX_LAYERS layers with a repeat count of MAX_REPEAT compile and follow the written-out
    recursion: Dense(8) (no bias) keeps K, and each adds K to the NTK."""
    x = _inputs()
    body = limits.MAX_LAYERS - 1
    net = ntkdsl.compile(f"Dense(8) * {body} > Dense(1, W_std=1.5, b_std=0.5)")
    _, _, k = _stats(x)
    np.testing.assert_allclose(net.nngp(x), 2.25 * k + 0.25, rtol=1e-12)
    np.testing.assert_allclose(net.ntk(x), (2.25 * k + 0.25) + 2.25 * body * k, rtol=1e-12)
    ntkdsl.parser.parse(f"Identity * {limits.MAX_REPEAT}")
    with pytest.raises(LayerValueError):
        ntkdsl.parser.parse(f"Identity * {limits.MAX_REPEAT + 1}")
    with pytest.raises(LayerValueError):
        ntkdsl.parser.parse(f"Dense(8) * {limits.MAX_LAYERS} > Dense(1)")


def test_extreme_magnitudes_just_inside_are_exact():
    """W_std = 1e50 and b_std = 1e-50 (the magnitude limits) give the arc-cosine recursion
    written out in numpy."""
    x = _inputs()
    net = ntkdsl.compile("Dense(8, W_std=1e50, b_std=1e-50) > Relu > Dense(1, W_std=1e-50)")
    q1, q2, k = _stats(x)
    w2, b2 = 1e100, 1e-100
    q1, q2, k = w2 * q1 + b2, w2 * q2 + b2, w2 * k + b2
    c = np.clip(k / np.sqrt(q1 * q2), -1, 1)
    theta = np.arccos(c)
    relu = np.sqrt(q1 * q2) * (np.sin(theta) + (np.pi - theta) * c) / (2 * np.pi)
    relu_dot = (np.pi - theta) / (2 * np.pi)
    nngp = 1e-100 * relu
    ntk = nngp + 1e-100 * k * relu_dot
    # Pairs within rounding of c = ±1 follow DESIGN §5's loose rule (arccos has an infinite
    # slope there, so any float64 evaluation differs by ~1e-9 of the largest entry).
    loose = np.abs(c) > 1 - 1e-9
    for got, ref in ((net.nngp(x), nngp), (net.ntk(x), ntk)):
        np.testing.assert_allclose(got[~loose], ref[~loose], rtol=1e-10, atol=1e-15 * ref.max())
        assert np.all(np.abs(got - ref)[loose] <= 1e-7 * ref.max())


def _monomial_gamma(n: int, q1, q2, c):
    """E[u^n v^n] by the Hermite (Mehler) expansion x^n = Σ_j a_j He_j(x),
    a_j = n! / (j! 2^((n-j)/2) ((n-j)/2)!): E = (q1 q2)^(n/2) Σ_j a_j² j! c^j —
    independent of the Isserlis sum ntkdsl uses."""
    total = np.zeros(np.broadcast(q1, q2, c).shape)
    for j in range(n % 2, n + 1, 2):
        m = (n - j) // 2
        log_a = math.lgamma(n + 1) - math.lgamma(j + 1) - m * math.log(2) - math.lgamma(m + 1)
        total += math.exp(2 * log_a + math.lgamma(j + 1)) * c ** j
    return (q1 * q2) ** (n / 2) * total


def test_monomial_of_the_largest_degree():
    n = limits.MAX_DEGREE
    x = _inputs()
    x /= np.sqrt((x ** 2).mean(axis=1, keepdims=True))  # unit variances: values ~ (2n-1)!!
    x[1] *= 0.9
    net = ntkdsl.compile(f"Dense(8) > Monomial({n}) > Dense(1)")
    q1, q2, k = _stats(x)
    c = np.clip(k / np.sqrt(q1 * q2), -1, 1)
    gamma = _monomial_gamma(n, q1, q2, c)
    gamma_dot = n ** 2 * _monomial_gamma(n - 1, q1, q2, c)
    np.testing.assert_allclose(net.nngp(x), gamma, rtol=1e-10)
    np.testing.assert_allclose(net.ntk(x), gamma + k * gamma_dot, rtol=1e-10)


def test_polynomial_of_the_most_coefficients():
    coef = [((-1) ** i) * 0.7 ** i for i in range(limits.MAX_COEFFICIENTS)]
    x = _inputs()
    net = ntkdsl.compile(f"Dense(8) > Polynomial({coef}) > Dense(1)")
    q1, q2, k = _stats(x)
    p = np.polynomial.Polynomial(coef)
    gamma = _gauss_pair(p, q1, q2, k)
    gamma_dot = _gauss_pair(p.deriv(), q1, q2, k)
    np.testing.assert_allclose(net.nngp(x), gamma, rtol=1e-10)
    np.testing.assert_allclose(net.ntk(x), gamma + k * gamma_dot, rtol=1e-10)


def test_fn_just_inside_the_size_limits():
    """The longest, deepest and largest Fn bodies compile: -…-x (MAX_FN_DEPTH levels),
    x + … + x (just under MAX_FN_NODES nodes), padded to MAX_FN_LENGTH characters."""
    x = _inputs()
    _, _, k = _stats(x)
    deep = "-" * (limits.MAX_FN_DEPTH - 1) + "x"  # odd: -x
    terms = (limits.MAX_FN_NODES + 1) // 3  # n names, n tokens, n - 1 additions
    wide = "+".join(["x"] * terms)
    for body, scale in ((deep, 1), (wide, terms), ("x" + " " * (limits.MAX_FN_LENGTH - 1), 1)):
        net = ntkdsl.compile(f'Dense(8) > Fn("{body}") > Dense(1)')
        np.testing.assert_allclose(net.nngp(x), scale ** 2 * k, rtol=1e-12)
        np.testing.assert_allclose(net.ntk(x), scale ** 2 * k + scale ** 2 * k, rtol=1e-12)
    with pytest.raises(ExpressionError):
        ntkdsl.compile('Dense(8) > Fn("' + "-" * limits.MAX_FN_DEPTH + 'x") > Dense(1)')
    with pytest.raises(ExpressionError):
        ntkdsl.compile('Dense(8) > Fn("' + "+".join(["x"] * (terms + 1)) + '") > Dense(1)')


def test_fn_calls_nested_to_the_limit():
    depth = limits.MAX_FN_CALL_DEPTH
    body = "sin(" * depth + "x" + ")" * depth
    x = _inputs()
    net = ntkdsl.compile(f'Dense(8) > Fn("{body}") > Dense(1)')

    def phi(v):
        for _ in range(depth):
            v = np.sin(v)
        return v

    _, _, k = _stats(x)
    got = net.nngp(x)
    density = lambda z: np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    for i, j in ((0, 0), (1, 1), (0, 1), (1, 4), (0, 3)):  # (0, 3): opposite inputs
        su, c = np.sqrt(k[i, i]), k[i, j] / np.sqrt(k[i, i] * k[j, j])
        sv, s = np.sqrt(k[j, j]), np.sqrt(max(0.0, 1 - c * c))
        if i == j:
            ref = quad(lambda z: phi(su * z) ** 2 * density(z), -40, 40, epsrel=1e-13,  # noqa: B023
                       epsabs=0, limit=500)[0]
        else:
            ref = dblquad(lambda z2, z1: phi(su * z1) * phi(sv * (c * z1 + s * z2))  # noqa: B023
                          * density(z1) * density(z2), -12, 12, -12, 12,
                          epsabs=1e-14, epsrel=1e-12)[0]
        assert abs(got[i, j] - ref) <= 1e-9 * abs(got[i, i]), (i, j, got[i, j], ref)


def test_fn_power_of_a_power_at_the_degree_limit():
    """(x**50)**2 is x**100, the largest degree (its exponents alone used to be the limit:
    x**40 was refused): its kernels against the Mehler series of test_monomial_of_the_largest_degree."""
    n = limits.MAX_FN_DEGREE
    x = _inputs()
    x /= np.sqrt((x ** 2).mean(axis=1, keepdims=True))
    x[1] *= 0.9
    net = ntkdsl.compile(f'Dense(8) > Fn("(x**{n // 2})**2") > Dense(1)')
    q1, q2, k = _stats(x)
    c = np.clip(k / np.sqrt(q1 * q2), -1, 1)
    gamma = _monomial_gamma(n, q1, q2, c)
    np.testing.assert_allclose(net.nngp(x), gamma, rtol=1e-10)
    np.testing.assert_allclose(net.ntk(x), gamma + k * n ** 2 * _monomial_gamma(n - 1, q1, q2, c),
                               rtol=1e-10)


def test_fn_degree_limit():
    n, x_ = limits.MAX_FN_DEGREE, ntkdsl.expressions.x
    assert ntkdsl.expressions.parse_expression(f"x**{n}") == x_ ** n
    assert ntkdsl.expressions.parse_expression(f"(x**{n // 2})**2") == x_ ** n
    # Each power and product formed counts with its value: x**100/x**60 is x**40.
    assert ntkdsl.expressions.parse_expression(f"x**{n}/x**60") == x_ ** (n - 60)
    for text in (f"x**{n + 1}", f"(x**{n // 2})**2*x", f"sinh(x)**{n + 1}", f"(x + 1)**-{n + 1}"):
        with pytest.raises(ExpressionError, match=f"degree {n + 1} in x"):
            ntkdsl.expressions.parse_expression(text)


def _exponential_sum_duals(terms, q1, q2, k):
    """(Γ, Γ̇) of φ = Σ c·exp(a·x), from E[exp(a u + b v)] = exp((a² q1 + b² q2 + 2ab k)/2)
    summed in 50-digit mpmath (the terms of sinh(x)**12 cancel), entry by entry."""
    import mpmath
    with mpmath.workdps(50):
        def entry(a, b, c):
            a, b, c = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(c)
            gamma = gamma_dot = mpmath.mpf(0)
            for c1, a1 in terms:
                for c2, a2 in terms:
                    e = mpmath.exp((a1 * a1 * a + a2 * a2 * b + 2 * a1 * a2 * c) / 2)
                    gamma, gamma_dot = gamma + c1 * c2 * e, gamma_dot + c1 * c2 * a1 * a2 * e
            return float(gamma), float(gamma_dot)
        shape = np.broadcast(q1, q2, k).shape
        out = [entry(*(np.broadcast_to(v, shape)[i] for v in (q1, q2, k))) for i in np.ndindex(shape)]
    return tuple(np.array(part).reshape(shape) for part in zip(*out))


@pytest.mark.parametrize("text, terms", [
    # refused before: exp(800) is past float64 at the probe point x = 100 (its 30-digit
    # value is finite, as is every moment)
    ("exp(8*x)", [(1, 8)]),
    # refused before as "grows like exp(x**2)": log|φ(x)|/x² is 12/x, above the old fixed
    # threshold 1e-3 at x = 1e4; (sinh(x)**20)**2 of issue 12 is the same case
    ("(sinh(x)**6)**2", [(math.comb(12, j) * (-1) ** j / 2 ** 12, 12 - 2 * j) for j in range(13)]),
])
def test_fn_exponential_growth_is_accepted_with_its_exact_kernel(text, terms):
    x = _inputs()
    net = ntkdsl.compile(f'Dense(4, W_std=0.5) > Fn("{text}") > Dense(1)')
    q1, q2, k = (0.25 * v for v in _stats(x))
    gamma, gamma_dot = _exponential_sum_duals(terms, q1, q2, k)
    nngp, ntk = net.kernels(x)
    np.testing.assert_allclose(nngp, gamma, rtol=1e-12)
    np.testing.assert_allclose(ntk, gamma + k * gamma_dot, rtol=1e-12)


def test_fn_growth_check_tells_exponential_from_gaussian_growth():
    parse = ntkdsl.expressions.parse_expression
    x_ = ntkdsl.expressions.x
    assert parse("(sinh(x)**20)**2") == sp.sinh(x_) ** 40
    for text in ("exp(40*x)", "cosh(x)**50", "x**100", "exp(abs(x)**1.4)", "erfc(exp(3*x))"):
        parse(text)
    # exp(a·x²) for any a > 0, however small, diverges once q > 1/(4a); so does growth
    # as fast as exp(|x|**1.9), whose moments overflow float64 at every variance
    for text in ("exp(x**2)", "exp(1e-9*x**2)", "x**3*exp(x**2/100)", "exp(abs(x)**1.9)",
                 "exp(exp(x))", "cosh(x**2)"):
        with pytest.raises(ExpressionError, match="diverge"):
            parse(text)


def test_fn_far_evaluation_underflow_is_not_divergence():
    """erfc(exp(3x)) is bounded; far out it is too small for sympy to evaluate at 1e4
    (once an OverflowError from inside the check), which is no reason to refuse it."""
    ntkdsl.expressions.parse_expression("erfc(exp(3*x))")
    with pytest.raises(ExpressionError, match="diverge"):
        ntkdsl.expressions.parse_expression("exp(0.01*x**2)")


def test_gaussian_b_zero_and_negative_are_fine():
    x = _inputs()
    net = ntkdsl.compile("Dense(8) > Gaussian(a=1.0, b=-0.5) > Dense(1)")
    q1, q2, k = _stats(x)
    gamma = _gauss_pair(lambda v: np.exp(-0.5 * v ** 2), q1, q2, k)
    np.testing.assert_allclose(net.nngp(x), gamma, rtol=1e-10)


# ------------------------------------------------------------- overflow at evaluation --

def test_overflow_is_a_numerical_error_naming_the_layer():
    """exp(b²·q) overflows float64 for large variances: a NumericalError that names the
    layer, where the kernel used to hold inf."""
    net = ntkdsl.compile("Dense(8, W_std=20) > Relu > Dense(8, b_std=0.1) > Exp > Dense(1)")
    x = _inputs()
    with pytest.raises(NumericalError) as err:
        net.kernels(x)
    assert "step 4: Exp(a=1.0, b=1.0)" in str(err.value)
    with pytest.raises(NumericalError):
        net.diagonal(x)
    small = x / 100  # the same network at small variances is finite
    assert np.isfinite(net.ntk(small)).all()


def test_composed_runs_just_inside_the_limit():
    """MAX_COMPOSED activations in a row compose: relu∘…∘relu is relu."""
    x = _inputs()
    many = ntkdsl.compile(f"Dense(8, b_std=0.1) > Relu * {limits.MAX_COMPOSED} > Dense(1)")
    one = ntkdsl.compile("Dense(8, b_std=0.1) > Relu > Dense(1)")
    np.testing.assert_allclose(many.nngp(x), one.nngp(x), rtol=1e-13)
    np.testing.assert_allclose(many.ntk(x), one.ntk(x), rtol=1e-13)


def test_an_overflow_that_stops_the_program_is_a_numerical_error():
    """Exp of a large constant variance (after Sign) into the numerical route overflowed to
    inf inside the engine and stopped it with a bare OverflowError."""
    arch = ("Dense(512, parameterization='standard') > Sign > Dense(512, W_std=1.99, b_std=25.7) "
            "> Exp(0.05992) > Dense(8, W_std=2.397, b_std=0.003483) > Silu > Dense(512, W_std=3)")
    x = _inputs()
    with pytest.raises(NumericalError, match="overflowed float64"):
        ntkdsl.compile(arch).kernels(x)


def test_a_nan_that_stops_the_program_is_a_numerical_error_naming_the_layer():
    """exp(b² q) past float64 inside LayerNorm's normalisation gave NaN, and the numerical
    route's int(nan) a bare ValueError."""
    arch = ("Dense(1, W_std=11.39) > Exp(1e-12, b=231.6) > Dense(2, W_std=2, "
            "parameterization='standard') > LayerNorm > Dense(1) > Sigmoid > Dense(8, W_std=12.18)")
    with pytest.raises(NumericalError, match=r"step 2: Exp"):
        ntkdsl.compile(arch).kernels(_inputs())


# ------------------------------------------------- no numpy warnings on the user's stderr --

@pytest.mark.parametrize("arch", [
    # closed forms overflowing (exp(b² q)): the NumericalError is the report
    "Dense(8, W_std=20) > Relu > Dense(8, b_std=0.1) > Exp > Dense(1)",
    "Dense(64, b_std=11.48) > Exp(-1.12, -1.34) > Dense(512) > Dense(1, b_std=0.458)",
    # the numerical engine's moments overflowing (inf·0 in its projections)
    "Dense(8, b_std=1.33, parameterization='standard') > Tanh > Dense(8, W_std=3) > "
    "(Exp(b=1.4)) * 3 > Dense(512, W_std=1.31, b_std=0.871)",
    "Dense(512, W_std=2.62) > Exp(-2.58, 1.14) > Dense(512) > Dense(1, W_std=0.1718, b_std=2.72)"
    " > Mish > Dense(1, W_std=0.001497, b_std=3)",
])
def test_an_overflowing_kernel_is_an_error_without_numpy_warnings(arch):
    """Found by evaluating the fuzzer's valid architectures with RuntimeWarnings recorded:
    numpy printed "overflow encountered in exp" (and "invalid value in matmul") to stderr
    for every chunk before the NumericalError that reports the same thing."""
    net = ntkdsl.compile(arch)
    for evaluate in (net.kernels, net.diagonal):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(NumericalError):
                evaluate(_inputs() * 30)
        assert [str(w.message) for w in caught] == []


def test_an_overflowing_convolutional_kernel_is_an_error_without_numpy_warnings():
    """The same for images: the side, pair and diagonal functions of a convolutional
    program run in the checked floating-point state too."""
    net = ntkdsl.compile("Conv(4, (3, 3), W_std=20) > Relu > Conv(4, (3, 3), b_std=0.1) > Exp > "
                         "GlobalAvgPool > Dense(1)")
    images = np.random.default_rng(0).standard_normal((3, 6, 6, 2)) * 30
    for evaluate in (net.kernels, net.diagonal):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(NumericalError, match="not finite"):
                evaluate(images)
        assert [str(w.message) for w in caught] == []


def test_gelu_at_a_zero_variance_divides_by_nothing():
    """Gelu's diagonal was printed as pi - atan(sqrt(1 + 2q)/q): a division by zero (and its
    warning) on a zero row, right only because arctan(inf) is pi/2. The angle stays
    atan2(sqrt(1 + 2q), -q) now; the values against Gauss-Hermite quadrature."""
    from scipy.special import erf
    gelu = lambda v: v * (1 + erf(v / np.sqrt(2))) / 2
    net = ntkdsl.compile("Dense(4) > Gelu > Dense(1)")
    assert "arctan2" in net.source.split("def diagonal", 1)[1]
    x = _inputs()
    x[2] = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nngp = net.nngp(x)
        diagonal, _ = net.diagonal(x)
    assert [str(w.message) for w in caught] == []
    assert (nngp[2] == 0).all() and diagonal[2] == 0  # gelu(0) = 0
    rows = [0, 1, 3, 4]
    expected = _gauss_pair(gelu, *_stats(x[rows]))
    np.testing.assert_allclose(nngp[np.ix_(rows, rows)], expected, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(diagonal[rows], np.diag(expected), rtol=1e-10)


# ------------------------------------------------- issue 12's remaining named cases --

def test_exp_b_50_is_exact_where_finite_and_an_error_where_not():
    """Issue 12: Exp(b=50) gave inf/NaN without an error. Its kernel is
    exp(b²(q1 + q2 + 2k)/2): exact (against that closed form, Γ̇ = b²Γ) at variances where
    it is finite, a NumericalError naming the layer where it is not."""
    net = ntkdsl.compile("Dense(4) > Exp(b=50) > Dense(1)")
    x = _inputs() * 0.01                         # q ~ 1e-4: exp(2500 q) ~ 1.3
    q1, q2, k = _stats(x)
    gamma = np.exp(1250 * (q1 + q2 + 2 * k))
    nngp, ntk = net.kernels(x)
    np.testing.assert_allclose(nngp, gamma, rtol=1e-13)
    np.testing.assert_allclose(ntk, gamma + k * 2500 * gamma, rtol=1e-12)
    np.testing.assert_allclose(net.diagonal(x)[0], np.diag(gamma), rtol=1e-13)
    with pytest.raises(NumericalError, match=r"step 1: Exp\(a=1.0, b=50.0\) is not finite"):
        net.kernels(_inputs())                   # q ~ 1: exp(2500) is past float64


def test_a_constant_past_float64_is_infinite_not_a_name_error():
    """Issue 12: "NameError: inf inside generated code". After Dense(W_std=0, b_std=1e50) the
    variance is the constant 1e100 and Exp's E[exp(2u)] = exp(2e100), folded to a Float that
    was printed as `inf`: a NameError from the generated code. A constant past float64 is
    now a NumericalError when compiling (and generating a module), naming the layer: the
    same value for every input, no input can make it finite."""
    arch = "Dense(8, W_std=0, b_std=1e50) > Exp > Dense(1)"
    x = _inputs()
    for make in (ntkdsl.compile, ntkdsl.codegen):
        with pytest.raises(NumericalError, match=r"the variance after Exp.* is the same constant"):
            make(arch)
    # The same network one step inside float64: b_std = 10 gives the constant exp(200).
    small = ntkdsl.compile("Dense(8, W_std=0, b_std=10) > Exp > Dense(1)")
    np.testing.assert_allclose(small.nngp(x), np.full((5, 5), np.exp(200.0)), rtol=1e-13)


def test_codegen_of_a_subnormal_bias_is_refused_at_once():
    """Issue 12: codegen("Dense(8) > Relu > Dense(8, b_std=1e-320)") ran past 30 s. A
    subnormal is refused with its caret, before any derivation (CPU time as a hang guard)."""
    arch = "Dense(8) > Relu > Dense(8, b_std=1e-320)"
    start = time.process_time()
    with pytest.raises(LayerValueError, match="write 0") as err:
        ntkdsl.codegen(arch)
    assert time.process_time() - start < 5
    assert (err.value.span.start, err.value.span.end) == (arch.index("1e-320"), arch.index("1e-320") + 6)
