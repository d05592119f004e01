"""Issue 12: closed-form duals stay accurate at any variance, diagonals included.

Every closed form Γ and its NTK factor Γ̇ = ∂Γ/∂k, evaluated by the generated NumPy code
the library runs (the pair program's code, fed (n, 1) columns, which broadcast as its
column/row/matrix layout does; the diagonal program's, fed variances), and whole networks,
against a 50-digit mpmath evaluation at the same float64
inputs of textbook formulas written here independently of ntkdsl's (and themselves checked
against quadrature at moderate variance below).

What float64 can resolve. The inputs (q1, q2, k) are float64 numbers, exact as given, but
any evaluation of Γ in floating point rounds them at least once, so no float64 program can
be expected to do better than the spread of the exact Γ over inputs one rounding away:
``floor = Σᵢ max |Γ(.., xᵢ(1 ± u), ..) − Γ(..)|``, u = 2⁻⁵³ (perturbations that leave the
covariance valid, |k| ≤ sqrt(q1 q2); at a square-root singularity, |c| = 1, this is the
sqrt(u) the singularity amplifies a rounding to, where a condition number would be
infinite). k is moved by 2u rather than u: the correlation k / sqrt(q1 q2) every closed form
is written in is itself rounded (a square root and a division at least), which matters
where Γ vanishes like a high power of 1 + c (RectifiedMonomial(5) at c = −1: (1 + c)^5.5,
so two roundings of c instead of one are a factor 45). An entry must be within
``1e-10 |Γ| + 16 floor`` of the exact value: 1e-10 relative wherever the floor is below
that (float64 can resolve it), a small multiple of the floor where it is not — and nothing
below float64's normal range (1e-300) counts.
"""
from __future__ import annotations

import functools
import itertools
import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

import ntkdsl
from ntkdsl import parse
from ntkdsl.derivation import _PLACEHOLDER, DIAG_INPUT, PAIR_INPUTS, Assignment, D, Program, Step, dual_maps
from ntkdsl.generate import compile_program

DIGITS = 50
U = 2.0 ** -53
RELATIVE = 1e-10
FLOOR_MULTIPLE = 16
TINY = 1e-300

# ---------------------------------------------------------------------------------------
# Independent references: Γ and Γ̇ as mpmath functions of (q1, q2, k) at 50 digits
# ---------------------------------------------------------------------------------------


def _angle(q1, q2, k):
    """(θ, sin θ) of the correlation k / sqrt(q1 q2), sin θ without forming 1 − c²."""
    norm = mp.sqrt(q1 * q2)
    return mp.acos(k / norm), mp.sqrt(q1 * q2 - k * k) / norm


@functools.cache
def _cho_saul_j(n):
    """J_n = (−1)^n sin^(2n+1) θ ((1/sin θ) ∂/∂θ)^n ((π − θ)/sin θ), Cho & Saul's (2009)
    definition, with (1/sin θ) ∂/∂θ = −∂/∂c: sin^(2n+1) θ (∂/∂c)^n (arccos(−c)/sqrt(1 − c²)),
    differentiated by sympy (not ntkdsl's polynomials), as an mpmath function of (c, sin θ)."""
    c, s = sp.symbols("c s")
    f = sp.acos(-c) / sp.sqrt(1 - c ** 2)
    for _ in range(n):
        f = sp.diff(f, c)
    return sp.lambdify((c, s), sp.expand(s ** (2 * n + 1) * f.subs(sp.sqrt(1 - c ** 2), s)), "mpmath")


def _arccos_j(n, theta, s):
    """J_n(θ) (s = sin θ): the textbook forms for n ≤ 3, Cho & Saul's definition above."""
    c, rest = mp.cos(theta), mp.pi - theta
    if n <= 3:
        return {0: rest,
                1: s + rest * c,
                2: 3 * s * c + rest * (1 + 2 * c ** 2),
                3: 4 * s ** 3 + 15 * s * c ** 2 + rest * (9 * s ** 2 * c + 15 * c ** 3)}[n]
    if s == 0:  # the limits: J_n(0) = π (2n − 1)!! (E[relu(u)^2n] = (2n − 1)!! q^n / 2), J_n(π) = 0
        return mp.pi * mp.fac2(2 * n - 1) if c > 0 else mp.mpf(0)
    return _cho_saul_j(n)(c, s)


def _relu_moment(n, q1, q2, k):
    """E[relu(u)^n relu(v)^n] = (q1 q2)^(n/2) J_n(θ) / (2π), J_n of Cho & Saul (2009).
    Near c = −1 its terms of size π − θ cancel to one of size (π − θ)^(2n+1): evaluated with
    about 16n more digits (π − θ ≥ 1e-8 at the floats next to −1; the inputs are exact)."""
    with mp.workdps(mp.mp.dps + 16 * n + 10):
        theta, s = _angle(q1, q2, k)
        value = mp.sqrt(q1 * q2) ** n * _arccos_j(n, theta, s) / (2 * mp.pi)
    return +value


def _abrelu(a, b):
    """φ = b relu(x) − a relu(−x): E[relu(u) relu(−v)] is the order-1 moment at −k."""
    def gamma(q1, q2, k):
        return ((a * a + b * b) * _relu_moment(1, q1, q2, k)
                - 2 * a * b * _relu_moment(1, q1, q2, -k))

    def dot(q1, q2, k):
        theta = _angle(q1, q2, k)[0]
        return ((a * a + b * b) * (mp.pi - theta) + 2 * a * b * theta) / (2 * mp.pi)
    return gamma, dot


def _rectified(n):
    return (lambda q1, q2, k: _relu_moment(n, q1, q2, k),
            lambda q1, q2, k: n * n * _relu_moment(n - 1, q1, q2, k) if n else mp.mpf(0))


def _erf(a, b, c):
    def det(q1, q2, k):
        return (1 + 2 * b * b * q1) * (1 + 2 * b * b * q2) - 4 * b ** 4 * k * k
    return (lambda q1, q2, k: 2 * a * a / mp.pi * mp.asin(
                2 * b * b * k / mp.sqrt((1 + 2 * b * b * q1) * (1 + 2 * b * b * q2))) + c * c,
            lambda q1, q2, k: 4 * a * a * b * b / (mp.pi * mp.sqrt(det(q1, q2, k))))


def _trig(a, b, c, sign):
    """a sin(bx + c) (sign = −1) or a cos(bx + c) (sign = +1): E[cos(b(u ∓ v))] terms."""
    def parts(q1, q2, k):
        minus = mp.exp(-b * b * (q1 + q2 - 2 * k) / 2)
        plus = mp.exp(-b * b * (q1 + q2 + 2 * k) / 2) * mp.cos(2 * c)
        return minus, plus

    def gamma(q1, q2, k):
        minus, plus = parts(q1, q2, k)
        return a * a / 2 * (minus + sign * plus)

    def dot(q1, q2, k):
        minus, plus = parts(q1, q2, k)
        return a * a * b * b / 2 * (minus - sign * plus)
    return gamma, dot


def _exp(a, b):
    def gamma(q1, q2, k):
        return a * a * mp.exp(b * b * (q1 + q2 + 2 * k) / 2)
    return gamma, lambda q1, q2, k: b * b * gamma(q1, q2, k)


def _tilted(b, q1, q2, k):
    """(E[exp(b(u² + v²))], E[u v exp(b(u² + v²))]): the weight turns N(0, Σ) into
    N(0, (Σ⁻¹ − 2b)⁻¹) times det(I − 2bΣ)^(-1/2)."""
    sigma = mp.matrix([[q1, k], [k, q2]])
    a = mp.eye(2) - 2 * b * sigma
    weight = 1 / mp.sqrt(mp.det(a))
    return weight, weight * (mp.inverse(a) * sigma)[0, 1]


def _gaussian(a, b):
    return (lambda q1, q2, k: a * a * _tilted(b, q1, q2, k)[0],
            lambda q1, q2, k: 4 * a * a * b * b * _tilted(b, q1, q2, k)[1])


def _gelu():
    """E[uΦ(u) vΦ(v)] in the form of neural-tangents' stax.Gelu (checked by quadrature)."""
    def gamma(q1, q2, k):
        outer = (1 + q1) * (1 + q2)
        delta = mp.sqrt(outer - k * k)
        return k / 4 + ((k * k + q1 * q2 * delta ** 2) / (outer * delta)
                        + k * mp.asin(k / mp.sqrt(outer))) / (2 * mp.pi)
    # Γ is analytic in k across |c| = 1 (|k| < sqrt((1 + q1)(1 + q2))): a central difference.
    return gamma, lambda q1, q2, k: mp.diff(lambda kk: gamma(q1, q2, kk), k)


def _isserlis(i, j, q1, q2, k):
    """E[u^i v^j]: m cross pairings, the rest paired within u's and within v's."""
    total = mp.mpf(0)
    for m in range(min(i, j) + 1):
        if (i - m) % 2 == 0 and (j - m) % 2 == 0:
            total += (math.comb(i, m) * math.comb(j, m) * math.factorial(m)
                      * mp.fac2(i - m - 1) * mp.fac2(j - m - 1)
                      * k ** m * q1 ** ((i - m) // 2) * q2 ** ((j - m) // 2))
    return total


def _polynomial(coef):
    coef = [mp.mpf(c) for c in coef]
    pairs = [(i, j) for i in range(len(coef)) for j in range(len(coef)) if coef[i] and coef[j]]

    def gamma(q1, q2, k):
        return sum((coef[i] * coef[j] * _isserlis(i, j, q1, q2, k) for i, j in pairs), mp.mpf(0))

    def dot(q1, q2, k):  # E[p'(u) p'(v)]
        return sum((i * j * coef[i] * coef[j] * _isserlis(i - 1, j - 1, q1, q2, k)
                    for i, j in pairs if i and j), mp.mpf(0))
    return gamma, dot


def _sign():
    return (lambda q1, q2, k: 2 / mp.pi * mp.asin(k / mp.sqrt(q1 * q2)),
            lambda q1, q2, k: mp.mpf(0))


def _scaled(factor, pair):
    gamma, dot = pair
    return (lambda *s: factor ** 2 * gamma(*s)), (lambda *s: factor ** 2 * dot(*s))


def _x_gaussian(b):
    """φ = x exp(b x²): Γ = E[uv e^(b(u²+v²))]; φ' = (1 + 2b x²) e^(b x²) by Price's
    theorem once more: Γ̇ = ∂Γ/∂k, a central difference (Γ is analytic in k there)."""
    def gamma(q1, q2, k):
        return _tilted(b, q1, q2, k)[1]
    return gamma, lambda q1, q2, k: mp.diff(lambda kk: gamma(q1, q2, kk), k)


F = mp.mpf
REFERENCES = {
    "Relu": _abrelu(F(0), F(1)),
    "LeakyRelu(0.1)": _abrelu(F("0.1"), F(1)),
    "ABRelu(-0.5, 2.0)": _abrelu(F("-0.5"), F(2)),
    # relu(−x) scaled: J_1 cancels at c = −1 as for Relu; and nearly Relu with ab < 0, > 0
    "ABRelu(1.5, 0.0)": _abrelu(F("1.5"), F(0)),
    "ABRelu(-0.001, 1.0)": _abrelu(F("-0.001"), F(1)),
    "LeakyRelu(0.001)": _abrelu(F("0.001"), F(1)),
    "Abs": _abrelu(F(-1), F(1)),
    "Erf": _erf(F(1), F(1), F(0)),
    "Erf(b=2)": _erf(F(1), F(2), F(0)),
    "Erf(a=1.5, b=0.7, c=0.2)": _erf(F("1.5"), F("0.7"), F("0.2")),
    "Sin": _trig(F(1), F(1), F(0), -1),
    "Sin(a=2.0, b=0.5, c=0.3)": _trig(F(2), F("0.5"), F("0.3"), -1),
    "Cos(b=1.5, c=-0.4)": _trig(F(1), F("1.5"), F("-0.4"), 1),
    "Exp(a=0.7, b=0.6)": _exp(F("0.7"), F("0.6")),
    "Gaussian": _gaussian(F(1), F(-1)),
    "Gaussian(a=2.0, b=-0.3)": _gaussian(F(2), F("-0.3")),
    "Gelu": _gelu(),
    "Sign": _sign(),
    "Monomial(3)": _polynomial([0, 0, 0, 1]),
    "RectifiedMonomial(0)": _rectified(0),
    "RectifiedMonomial(1)": _rectified(1),
    "RectifiedMonomial(2)": _rectified(2),
    "RectifiedMonomial(3)": _rectified(3),
    "RectifiedMonomial(4)": _rectified(4),
    "RectifiedMonomial(5)": _rectified(5),
    "Polynomial([0.1, 1.0, 0.5, -0.2])": _polynomial(["0.1", "1.0", "0.5", "-0.2"]),
    # The Gaussian-integration rules (ntkdsl.gaussian) on expressions
    'Fn("2*relu(x)")': _scaled(F(2), _abrelu(F(0), F(1))),
    # Abs's Γ̇ = (2/π) arcsin c scaled, not ∂Γ/∂k of the scaled Γ (1 − 1 at c → 0)
    'Fn("2*abs(x)")': _scaled(F(2), _abrelu(F(-1), F(1))),
    'Fn("sin(x)")': _trig(F(1), F(1), F(0), -1),
    'Fn("cosh(x/4)")': (lambda q1, q2, k: (_exp(F(1), F("0.25"))[0](q1, q2, k)
                                            + _exp(F(1), F("0.25"))[0](q1, q2, -k)) / 2,
                        lambda q1, q2, k: (_exp(F(1), F("0.25"))[0](q1, q2, k)
                                           - _exp(F(1), F("0.25"))[0](q1, q2, -k)) / 32),
    'Fn("x*exp(-x**2)")': _x_gaussian(F(-1)),
    'Fn("x**3 - 3*x")': _polynomial([0, -3, 0, 1]),
}

# ---------------------------------------------------------------------------------------
# The regimes: variances 1e-8 .. 1e10, q1 ≪ q2 (powers of 4, so that c = ±1 is exact in
# float64), correlations 0, ±0.5, ±(1 − 1e-6), ±1; and the diagonal program
# ---------------------------------------------------------------------------------------

VARIANCES = [1.3e-8, 2.7e-4, 0.7, 1.7e3, 3.1e6, 9.1e9, 4.0 ** 17]
MIXED = [(4.0 ** -13, 4.0 ** 17), (4.0 ** -5, 4.0 ** 10), (1.0, 4.0 ** 17)]
CORRELATIONS = [0.0, 0.5, -0.5, 1 - 1e-6, -(1 - 1e-6), 1.0, -1.0]
# Where the arc-cosine family's closed forms cancel (issue 12): J_n(θ) vanishes like
# (π − θ)^(2n+1) as c → −1 (π − θ from 1 down to 1.5e-7); its sin θ term carries rounding of
# 1 − c² as c → 1; Abs's Γ̇ = (2/π) arcsin c at c → 0.
ARCCOS_CORRELATIONS = [-0.54, -0.56, -0.9, -(1 - 2.0 ** -20), -(1 - 1e-9), -(1 - 2.0 ** -40),
                       -(1 - 1e-14), 1 - 1e-12, 1 - 2.0 ** -50, 1e-10, -3e-12]
ARCCOS_FAMILY = {name for name in REFERENCES
                 if name.startswith(("Relu", "LeakyRelu", "ABRelu", "Abs", "RectifiedMonomial"))
                 or "relu" in name or "abs" in name}


def pair_points(correlations=CORRELATIONS):
    """(q1, q2, k) float64 triples of every regime."""
    out = []
    for q1, q2 in [(q, q) for q in VARIANCES] + MIXED + [(b, a) for a, b in MIXED]:
        norm = q1 if q1 == q2 else math.sqrt(q1 * q2)  # exact: q, or a power of 2
        out += [(q1, q2, c * norm) for c in correlations]
    return np.array(out)


def _program(expressions, diagonal: bool) -> dict:
    """The generated code of one activation step alone, as the library prints it."""
    if diagonal:
        names, inputs = ("q_1", "t_1"), (DIAG_INPUT, D)
    else:
        names, inputs = ("K_1", "T_1"), (*PAIR_INPUTS, D)
    targets = [sp.Symbol(n, real=True) for n in names]
    program = Program(inputs, (Step("dual", tuple(map(Assignment, targets, expressions))),),
                      tuple(targets))
    return compile_program(program, "f")


def library_duals(text: str, points: np.ndarray, diagonal: bool):
    """(Γ, Γ̇) by the library's generated code at the points ((q1, q2, k) rows, or
    variances for the diagonal)."""
    gamma, dot, route = dual_maps(parse(f"Dense(1) > {text}").layers[1])
    assert route.startswith("closed form"), (text, route)
    p = _PLACEHOLDER
    if diagonal:
        q = DIAG_INPUT
        at = {p.q1: q, p.q2: q, p.k: q}
        fn = _program([gamma.xreplace(at), dot.xreplace(at)], True)
        with np.errstate(all="ignore"):
            values = fn(points.copy(), 1)
        return [np.broadcast_to(np.asarray(v, float), points.shape) for v in values]
    at = dict(zip((p.q1, p.q2, p.k), PAIR_INPUTS))
    fn = _program([gamma.xreplace(at), dot.xreplace(at)], False)
    # Columns, rows and matrices broadcast alike when every input is an (n, 1) column.
    columns = [points[:, i:i + 1].copy() for i in range(3)]
    with np.errstate(all="ignore"):
        values = fn(*columns, 1)
    return [np.broadcast_to(np.asarray(v, float), (len(points), 1))[:, 0] for v in values]


def _floor(f, args) -> mp.mpf:
    """Σᵢ max over xᵢ(1 ± u) (k: 2u) of |f(perturbed) − f(args)|, valid covariances only."""
    base, total = f(*args), mp.mpf(0)
    for i in range(len(args)):
        spread = mp.mpf(0)
        step = mp.mpf(2 * U if i == 2 else U)
        for s in (1, -1):
            moved = list(args)
            moved[i] = args[i] * (1 + s * step)
            if len(moved) == 3 and moved[2] ** 2 > moved[0] * moved[1]:
                continue
            spread = max(spread, abs(f(*moved) - base))
        total += spread
    return total


def _overflows(gamma, args) -> bool:
    with mp.workdps(DIGITS):
        return abs(gamma(*[mp.mpf(float(a)) for a in args])) > 1e300


def check(got: float, f, args) -> str | None:
    """None if ``got`` is within the tolerance of f(args), else what is wrong."""
    with mp.workdps(DIGITS):
        args = [mp.mpf(float(a)) for a in args]
        exact = f(*args)
        if abs(exact) > 1e300:
            return None  # past float64's range: the library raises NumericalError there
        if not np.isfinite(got):
            return f"got {got}, exact {mp.nstr(exact, 17)}"
        bound = RELATIVE * abs(exact) + FLOOR_MULTIPLE * _floor(f, args) + TINY
        error = abs(mp.mpf(got) - exact)
        if error <= bound:
            return None
        return (f"got {got!r}, exact {mp.nstr(exact, 17)}: error {mp.nstr(error, 3)} > "
                f"bound {mp.nstr(bound, 3)}")


def _failures(text, diagonal):
    gamma_ref, dot_ref = REFERENCES[text]
    diag = lambda f: (lambda q: f(q, q, q))
    if diagonal:
        points = np.array(VARIANCES)
    else:
        points = pair_points(CORRELATIONS + ARCCOS_CORRELATIONS * (text in ARCCOS_FAMILY))
    refs = (diag(gamma_ref), diag(dot_ref)) if diagonal else (gamma_ref, dot_ref)
    return failures_against(text, points, refs, diagonal)


def failures_against(text, points, refs, diagonal):
    """What is wrong with the library's (Γ, Γ̇) of ``text`` at ``points`` against the
    references ``refs`` (mpmath functions of (q1, q2, k), or of q on the diagonal)."""
    failures = []
    for name, got, ref in zip(("Γ", "Γ̇"), library_duals(text, points, diagonal), refs):
        for value, point in zip(got, points):
            args = (point,) if diagonal else tuple(point)
            if _overflows(refs[0], args) or (not diagonal and any(
                    _overflows(refs[0], (q, q, q)) for q in args[:2])):
                # Γ, or the variance after the layer (Γ at (q, q, q)), overflows: the library
                # raises NumericalError there (test_limits.py)
                continue
            problem = check(float(value), ref, args)
            if problem:
                failures.append(f"{name} at {args}: {problem}")
    return failures


@pytest.mark.parametrize("text", list(REFERENCES))
@pytest.mark.parametrize("diagonal", [False, True], ids=["pair", "diagonal"])
def test_dual_within_float64_resolution(text, diagonal):
    failures = _failures(text, diagonal)
    assert not failures, f"{len(failures)} entries:\n" + "\n".join(failures[:8])


# ---------------------------------------------------------------------------------------
# The arc-cosine helper alone: J_n(c)/(2π) at float64 correlations, against 50 digits
# ---------------------------------------------------------------------------------------

# φ = π − θ from 1e-8 (c within 5e-17 of −1) to π (c = 1), across the switch between the
# series (φ < 1) and the closed form, and c = ±1 exactly.
HELPER_ANGLES = np.concatenate([np.geomspace(1e-8, np.pi, 400), [0.999999, 1.0, 1.000001]])


def _helper(n):
    from ntkdsl.symbolic import ArcCosine
    c = sp.Symbol("c")
    program = Program((c,), (Step("j", (Assignment(sp.Symbol("J"), ArcCosine(n, c)),)),),
                      (sp.Symbol("J"), sp.S.Zero))
    return compile_program(program, "f")


@pytest.mark.parametrize("n", range(6))
def test_arccosine_helper_to_the_last_digits(n):
    """Given the float c, the helper is within 2e-13 relative of J_n(c)/(2π) wherever it
    is not 0: no cancellation at c → −1 (J_n ~ (π − θ)^(2n+1); RectifiedMonomial(3) at
    c = −1 and q = 1e6 was 652 for 0), none at c → 1 (sin θ from (1 − c)(1 + c)), exactly 0
    at c = −1 and exactly J_1(0)/(2π) = 1/2 at c = 1 (collinear inputs stay collinear)."""
    c = np.concatenate([-np.cos(HELPER_ANGLES), [-1.0, 1.0, -1 + 2.0 ** -52, 1 - 2.0 ** -53]])
    got = np.asarray(_helper(n)(c)[0], float)
    bad = []
    for value, point in zip(got, c):
        with mp.workdps(DIGITS + 16 * n + 10):
            point = mp.mpf(float(point))
            exact = _arccos_j(n, mp.acos(point), mp.sqrt((1 - point) * (1 + point))) / (2 * mp.pi)
            if abs(value - exact) > 2e-13 * abs(exact):
                bad.append(f"c = {float(point)!r}: got {value!r}, exact {mp.nstr(exact, 17)}")
    assert not bad, "\n".join(bad[:8])
    assert got[-4] == 0.0 and (n != 1 or got[-3] == 0.5)


def test_cho_saul_definition_matches_textbook_forms():
    """The references' J_4, J_5 (Cho & Saul's definition, differentiated by sympy) are the
    same function as the textbook J_0..J_3 where both are written out."""
    with mp.workdps(60):
        for n in range(4):
            for theta in (mp.mpf("0.3"), mp.mpf("1.7"), mp.mpf("2.9")):
                s = mp.sin(theta)
                assert abs(_cho_saul_j(n)(mp.cos(theta), s) - _arccos_j(n, theta, s)) < mp.mpf(10) ** -50


# ---------------------------------------------------------------------------------------
# The references themselves, against quadrature at a moderate variance
# ---------------------------------------------------------------------------------------

# One entry per reference formula (the others are these with other parameters or scales);
# the kinked ones are slow to integrate.
QUADRATURE_CHECKED = ["ABRelu(-0.5, 2.0)", "RectifiedMonomial(1)", "RectifiedMonomial(2)",
                      "RectifiedMonomial(3)", "Erf(a=1.5, b=0.7, c=0.2)", "Sin(a=2.0, b=0.5, c=0.3)",
                      "Cos(b=1.5, c=-0.4)", "Exp(a=0.7, b=0.6)", "Gaussian(a=2.0, b=-0.3)", "Gelu",
                      "Sign", "Polynomial([0.1, 1.0, 0.5, -0.2])", 'Fn("cosh(x/4)")',
                      'Fn("x*exp(-x**2)")']


@pytest.mark.parametrize("text", QUADRATURE_CHECKED)
def test_reference_matches_quadrature(text):
    from test_duals import _derivative, _numeric, gaussian_expectation

    from ntkdsl import activations
    node = parse(f"Dense(1) > {text}").layers[1]
    spec = activations.lookup(node.name)
    q1, q2, rho = 0.7, 1.3, 0.35
    k = rho * math.sqrt(q1 * q2)
    phi, dphi = _numeric(spec.phi(**node.kwargs)), _derivative(spec, node.kwargs)
    gamma_ref, dot_ref = REFERENCES[text]
    with mp.workdps(DIGITS):
        args = [mp.mpf(v) for v in (q1, q2, k)]
        want = float(gamma_ref(*args)), float(dot_ref(*args))
    assert want[0] == pytest.approx(gaussian_expectation(phi, phi, q1, q2, rho), rel=1e-9, abs=1e-12)
    dot = 0.0 if dphi is None else gaussian_expectation(_numeric(dphi), _numeric(dphi), q1, q2, rho)
    assert want[1] == pytest.approx(dot, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------
# Whole networks: the issue's cases, NNGP, NTK and diagonal against the 50-digit recursion
# ---------------------------------------------------------------------------------------

ISSUE_X = np.array([[1000.0, 300.0], [200.0, 900.0]])


@pytest.mark.parametrize("scale", [1.0, 10.0])
@pytest.mark.parametrize("text", ["Gelu", "Erf(b=2)", "Gaussian", "Gaussian(a=2.0, b=-0.3)",
                                  "Erf(a=1.5, b=0.7, c=0.2)", "Sin(a=2.0, b=0.5, c=0.3)"])
def test_network_kernels_at_large_variance(text, scale):
    """Dense(1) > φ > Dense(1) on the issue's x (and x × 10): k ← Γ, t ← Γ + k Γ̇ with the
    input statistics x·x'/d, exact in float64 here. The old forms were 3.8e-10 (x) and 6.4e-7
    (x × 10) off on Gelu's diagonal NTK."""
    x = ISSUE_X * scale
    net = ntkdsl.compile(f"Dense(1) > {text} > Dense(1)")
    gamma, dot = REFERENCES[text]
    ntk = lambda q1, q2, k: gamma(q1, q2, k) + k * dot(q1, q2, k)
    nngp, tangent = net.kernels(x)
    diag_nngp, diag_ntk = net.diagonal(x)
    problems = []
    for i in range(2):
        q = float(x[i] @ x[i] / 2)
        problems += [check(diag_nngp[i], lambda v: gamma(v, v, v), (q,)),
                     check(diag_ntk[i], lambda v: ntk(v, v, v), (q,)),
                     check(nngp[i, i], lambda v: gamma(v, v, v), (q,)),
                     check(tangent[i, i], lambda v: ntk(v, v, v), (q,))]
    point = (float(x[0] @ x[0] / 2), float(x[1] @ x[1] / 2), float(x[0] @ x[1] / 2))
    problems += [check(nngp[0, 1], gamma, point), check(tangent[0, 1], ntk, point)]
    assert not [p for p in problems if p], problems


# ---------------------------------------------------------------------------------------
# A multiple of a registry entry takes the entry's Γ̇ form (Fn("2*abs(x)"), issue 12)
# ---------------------------------------------------------------------------------------

def _abs_moments_by_quadrature(q1, q2, c):
    """(E[|u||v|], E[sign(u) sign(v)]) for (u, v) ~ N(0, [[q1, k], [k, q2]]), c = k/√(q1 q2):
    v given u = √q1 z is N(√q2 c z, q2 s²), s = √(1 − c²), whose |·| and sign have the folded
    normal's mean and erf(c z/(s√2)); the outer integral over z by adaptive quadrature,
    cut at 0 and at 4ⁱ times the inner scale s/|c| over which the integrand turns."""
    from scipy.integrate import quad
    from scipy.special import erf
    s = math.sqrt(max(0.0, (1 - c) * (1 + c)))
    density = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def folded(z):  # E[|c z + s w|], w ~ N(0, 1)
        mu = c * z
        if s == 0:
            return abs(mu)
        return (s * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * s * s))
                + mu * erf(mu / (s * math.sqrt(2))))

    def signs(z):  # E[sign(z) sign(c z + s w)]
        inner = math.copysign(1.0, c * z) if s == 0 else erf(c * z / (s * math.sqrt(2)))
        return math.copysign(1.0, z) * inner

    turn = s / abs(c) if c and s else 1.0
    cuts = [0.0] + [turn * 4.0 ** i for i in range(40) if turn * 4.0 ** i < 40] + [40.0]
    total = [0.0, 0.0]
    for lo, hi in itertools.pairwise(cuts):
        for i, f in enumerate((lambda z: z * folded(z), signs)):
            total[i] += quad(lambda z: f(z) * density(z), lo, hi,  # noqa: B023
                             epsabs=0, epsrel=1e-13, limit=400)[0]
    # the integrands are even in z (c z and z change sign together)
    return 2 * math.sqrt(q1 * q2) * total[0], 2 * total[1]


@pytest.mark.parametrize("c", [0.0, 1e-10, -3e-12, 0.35, 1 - 1e-12, -(1 - 1e-12), 1.0, -1.0])
def test_scaled_abs_takes_the_arcsine_form_of_abs(c):
    """Fn("2*abs(x)"): Γ = 4 Γ_Abs and Γ̇ = 4 Γ̇_Abs = (8/π) arcsin c, by the library's code,
    against quadrature of E[φ(u)φ(v)] and E[φ'(u)φ'(v)] = 4 E[sign(u) sign(v)]. Γ̇ was ∂Γ/∂k of
    the scaled Γ, 16 (π − arccos c)/(2π) − 4: at c = 1e-10, 2e-7 relative off."""
    q1, q2 = 0.25, 4.0  # k = c exactly
    point = np.array([[q1, q2, c]])
    gamma, dot = (v[0] for v in library_duals('Fn("2*abs(x)")', point, diagonal=False))
    abs_gamma, abs_dot = (v[0] for v in library_duals("Abs", point, diagonal=False))
    assert dot == 4 * abs_dot and gamma == pytest.approx(4 * abs_gamma, rel=1e-15)
    moment, signs = _abs_moments_by_quadrature(q1, q2, c)
    assert gamma == pytest.approx(4 * moment, rel=1e-12)
    assert dot == pytest.approx(4 * signs, rel=1e-11, abs=1e-300)
