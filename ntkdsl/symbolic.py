"""Symbolic building blocks shared by the dual activations and the derivation.

``Corr(k, q1, q2)`` is the correlation k / sqrt(q1 q2) as one sympy function, so that
(1) it evaluates to exactly 1 on the diagonal (k = q1 = q2), which gives the diagonal
recursion its exact correlation; (2) its derivative in k is known, so Price's theorem
(Γ̇ = ∂Γ/∂k) is plain symbolic differentiation; (3) the numerical printer can clip it
to [-1, 1], where rounding would otherwise push arccos/arcsin out of their domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb, factorial

import sympy as sp


class KernelFunction(sp.Function):
    """A sympy function that generated code calls by name. ``helpers()`` gives the source
    of the Python functions (numpy only) that the call needs, keyed by function name;
    codegen puts each needed helper once at the top of the generated code."""

    def helpers(self) -> dict[str, str]:
        return {}

    def joint(self) -> tuple[sp.Expr, str] | None:
        """(partner call, helper): another call that one helper, called as ``helper(*args)``,
        computes together with this one and returns second, or None. Codegen makes one
        call of the helper where a step needs both."""
        return None


class PrintedAs(KernelFunction):
    """A KernelFunction that formulas show as the expression it stands for (``shown``) and
    generated code computes by calling its helper ``call``."""

    call = ""

    def shown(self) -> sp.Expr:
        raise NotImplementedError

    def _sympystr(self, printer):
        return printer.doprint(self.shown())

    def _latex(self, printer, exp=None):
        text = printer._print(self.shown())
        return rf"\left({text}\right)^{{{exp}}}" if exp is not None else text

    def _pretty(self, printer):
        return printer._print(self.shown())

    def _numpycode(self, printer):
        return "{}({})".format(self.call, ", ".join(printer._print(a) for a in self.args))

    _pythoncode = _numpycode


_CORR_SOURCE = '''
def _corr(k, q1, q2):
    """Correlation k / sqrt(q1 q2), clipped to [-1, 1]; 0 where a variance is 0."""
    norm = numpy.sqrt(q1 * q2)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        c = numpy.where(norm > 0, k / numpy.where(norm > 0, norm, 1.0), 0.0)
    return numpy.clip(c, -1.0, 1.0)
'''.lstrip("\n")


# Used by the in-place emitter (ntkdsl.inplace), which scales a matrix by the inverse
# square roots of the variance vectors instead of dividing by an outer-product norm.
_INV_SQRT_SOURCE = '''
def _inv_sqrt(q):
    """1 / sqrt(q) for a vector of variances. A zero variance gets a huge finite factor
    instead of inf: its covariances are exactly 0 (Cauchy-Schwarz), so its correlations
    come out 0, as _corr gives them."""
    return numpy.reciprocal(numpy.sqrt(numpy.maximum(q, 1e-300)))
'''.lstrip("\n")


class Corr(PrintedAs):
    """Correlation k / sqrt(q1 q2), clipped to [-1, 1] when evaluated numerically."""

    nargs = 3
    call = "_corr"

    def helpers(self) -> dict[str, str]:
        return {"_corr": _CORR_SOURCE, "_inv_sqrt": _INV_SQRT_SOURCE}

    @classmethod
    def eval(cls, k, q1, q2):
        if q1 == q2 and k == q1:
            return sp.S.One
        if q1 == q2 and k == -q1:
            return sp.S.NegativeOne
        if all(a.is_number for a in (k, q1, q2)):
            return sp.Max(-1, sp.Min(1, k / sp.sqrt(q1 * q2)))
        return None

    def fdiff(self, argindex=1):
        _, q1, q2 = self.args
        if argindex == 1:
            return 1 / sp.sqrt(q1 * q2)
        return -self / (2 * (q1 if argindex == 2 else q2))

    def as_ratio(self) -> sp.Expr:
        k, q1, q2 = self.args
        return k / sp.sqrt(q1 * q2)

    shown = as_ratio


_EXP_SINH_SOURCE = '''
def _exp_sinh(m, d):
    """exp(m) sinh(d) as sign(d) exp(m + |d|) (1 - exp(-2|d|)) / 2: no cancellation of two
    exponentials at small d, no inf * 0 where exp(m) underflows and sinh(d) overflows."""
    size = numpy.abs(d)
    return numpy.copysign(numpy.expm1(-2 * size), d) * numpy.exp(m + size) / 2
'''.lstrip("\n")

# Where a step needs both (Γ and Γ̇ of Sin, Cos, sinh/cosh terms): one pass, two
# transcendental calls for the pair.
_EXP_SINH_COSH_SOURCE = '''
def _exp_sinh_cosh(m, d):
    """(exp(m) sinh(d), exp(m) cosh(d)) from one exp and one expm1, in place."""
    size = numpy.abs(d)
    scale = numpy.add(m, size)
    numpy.exp(scale, out=scale)
    half = numpy.multiply(size, -2, out=size)
    numpy.expm1(half, out=half)
    half *= 0.5                       # (exp(-2|d|) - 1) / 2
    sinh = numpy.copysign(half, d)
    half += 1
    same = sinh.shape == scale.shape  # m and d broadcast to d's shape
    return (numpy.multiply(sinh, scale, out=sinh if same else None),
            numpy.multiply(half, scale, out=half if same else None))
'''.lstrip("\n")

_EXP_COSH_SOURCE = '''
def _exp_cosh(m, d):
    """exp(m) cosh(d) as exp(m + |d|) (1 + exp(-2|d|)) / 2 (no inf * 0)."""
    size = numpy.abs(d)
    return numpy.exp(m + size) * (1 + numpy.exp(-2 * size)) / 2
'''.lstrip("\n")


class _ExpHyperbolic(PrintedAs):
    """exp(m)·sinh(d) or exp(m)·cosh(d) as one function, evaluated without cancellation or
    overflow (helpers above); printed as the product it stands for. Its derivatives are
    again such functions, so Price's theorem (Γ̇ = ∂Γ/∂k) keeps the form stable."""

    nargs = 2
    hyperbolic = sp.sinh

    @classmethod
    def eval(cls, m, d):
        if d == 0 or (m.is_number and d.is_number):
            return sp.exp(m) * cls.hyperbolic(d)
        if d.could_extract_minus_sign():  # one spelling each: sinh(-d) = -sinh(d)
            return (-1 if cls.hyperbolic is sp.sinh else 1) * cls(m, -d)
        return None

    def fdiff(self, argindex=1):
        m, d = self.args
        return self.func(m, d) if argindex == 1 else _PARTNER[self.func](m, d)

    def shown(self) -> sp.Expr:
        m, d = self.args
        return sp.exp(m) * self.hyperbolic(d)

    def helpers(self) -> dict[str, str]:
        return {self.call: _EXP_SINH_SOURCE if self.hyperbolic is sp.sinh else _EXP_COSH_SOURCE,
                "_exp_sinh_cosh": _EXP_SINH_COSH_SOURCE}

    def joint(self) -> tuple[sp.Expr, str] | None:
        return (ExpCosh(*self.args), "_exp_sinh_cosh") if self.hyperbolic is sp.sinh else None


class ExpSinh(_ExpHyperbolic):
    """exp(m)·sinh(d)."""
    hyperbolic = sp.sinh
    call = "_exp_sinh"


class ExpCosh(_ExpHyperbolic):
    """exp(m)·cosh(d)."""
    hyperbolic = sp.cosh
    call = "_exp_cosh"


_PARTNER = {ExpSinh: ExpCosh, ExpCosh: ExpSinh}


_AT_ZERO_VARIANCE_SOURCE = '''
def _at_zero_variance(q, zero, value):
    """``zero`` where the variance q is exactly 0 (the pre-activation is surely 0), else
    ``value``; float64 even where both are printed as integers."""
    return numpy.asarray(numpy.where(numpy.equal(q, 0.0), zero, value), dtype=numpy.float64)
'''.lstrip("\n")


class AtZeroVariance(KernelFunction):
    """``zero`` where the variance ``q`` is exactly 0, else ``value``.

    A pre-activation of variance 0 is surely 0, so an activation's dual there is its value
    at 0 (φ(0)·E[φ(v)]), which for φ with a jump at 0 (sign, steps) is not the limit of the
    dual as q → 0. The variance symbols are declared positive (for simplification), so a
    Piecewise on Eq(q, 0) would be decided False by sympy; this function keeps the test.
    Nested tests of the same q are decided by the outer one."""

    nargs = 3
    fresh_result = True  # numpy.where makes a new array: generated code may write into it

    @classmethod
    def eval(cls, q, zero, value):
        if q.is_number:
            return zero if q.is_zero else value
        zero_case, other_case = _decided(zero, q, True), _decided(value, q, False)
        if zero_case == other_case:
            return other_case
        if (zero_case, other_case) != (zero, value):
            return cls(q, zero_case, other_case)
        return None

    def helpers(self) -> dict[str, str]:
        return {"_at_zero_variance": _AT_ZERO_VARIANCE_SOURCE}

    def _numpycode(self, printer):
        return "_at_zero_variance({})".format(", ".join(printer._print(a) for a in self.args))

    _pythoncode = _numpycode

    def _sympystr(self, printer):
        q, zero, value = (printer.doprint(a) for a in self.args)
        return f"Piecewise(({zero}, Eq({q}, 0)), ({value}, True))"

    def _latex(self, printer, exp=None):
        q, zero, value = (printer._print(a) for a in self.args)
        text = (rf"\begin{{cases}} {zero} & \text{{for}}\: {q} = 0 \\ {value} & "
                r"\text{otherwise} \end{cases}")
        return rf"\left({text}\right)^{{{exp}}}" if exp is not None else text


def _decided(expr: sp.Expr, q: sp.Expr, is_zero: bool) -> sp.Expr:
    """``expr`` with every AtZeroVariance test of ``q`` replaced by its branch."""
    if not expr.has(AtZeroVariance):
        return expr
    return expr.replace(lambda e: isinstance(e, AtZeroVariance) and e.args[0] == q,
                        lambda e: e.args[1] if is_zero else e.args[2])


@dataclass(frozen=True)
class Pair:
    """The bivariate Gaussian (u, v) ~ N(0, [[q1, k], [k, q2]]) that a dual is a function of,
    with the derived quantities closed forms are written in."""

    q1: sp.Expr
    q2: sp.Expr
    k: sp.Expr

    @property
    def c(self) -> sp.Expr:
        """Correlation."""
        return Corr(self.k, self.q1, self.q2)

    @property
    def norm(self) -> sp.Expr:
        """sqrt(q1 q2); k = c * norm."""
        return sp.sqrt(self.q1 * self.q2)

    @property
    def theta(self) -> sp.Expr:
        """Angle between the two inputs, arccos(c)."""
        return sp.acos(self.c)

    @property
    def sin_theta(self) -> sp.Expr:
        return sp.sqrt(1 - self.c ** 2)

    @property
    def gram(self) -> sp.Expr:
        """q1 q2 − k², the determinant of the covariance: written as this difference it is
        exactly 0 on the diagonal (k = q1 = q2), symbolically, before any rounding."""
        return self.q1 * self.q2 - self.k ** 2

    def det_shifted(self, s: sp.Expr) -> sp.Expr:
        """det(I + s Σ) = (1 + s q1)(1 + s q2) − s² k², as 1 + s (q1 + q2) + s² (q1 q2 − k²).

        The product form subtracts two numbers of size s² q1 q2 to leave one of size s q:
        at q = 1e10 that loses ten digits, on the diagonal too (neural-tangents' form). This
        form has no such difference for s > 0 (only q1 q2 − k², whose rounding near |c| = 1
        is the inputs' own), and is exactly 1 + 2 s q on the diagonal."""
        return 1 + s * (self.q1 + self.q2) + s ** 2 * self.gram


# Floats outside this range stay floats: a rational of hundreds of digits (1e-320 ->
# 1/10^320, squared 1/10^640) makes symbolic work on a formula (factoring it for display)
# take minutes — 1.8 s for one 200-digit coefficient, 0.02 s for 100 digits — and such
# squares are not normal float64 numbers anyway.
EXACT_RANGE = (1e-30, 1e30)


def exact(value) -> sp.Expr:
    """A float as the exact decimal it was written as (1.5 -> 3/2, 0.1 -> 1/10), so formulas
    print as written and squares of standard deviations carry no rounding; magnitudes
    outside ``EXACT_RANGE`` as a sympy Float of the same value."""
    if isinstance(value, sp.Basic):
        return value
    if isinstance(value, int):
        return sp.Integer(value)
    number = float(value)
    if number == 0 or EXACT_RANGE[0] <= abs(number) <= EXACT_RANGE[1]:
        return sp.Rational(repr(number))
    return sp.Float(number)


def _double_factorial_odd(n: int) -> int:
    """(n-1)!! for even n: the n-th moment of a standard normal (0 for odd n)."""
    if n % 2:
        return 0
    return factorial(n) // (2 ** (n // 2) * factorial(n // 2))


def gaussian_moment(i: int, j: int, pair: Pair) -> sp.Expr:
    """E[u^i v^j] by Isserlis' theorem: choose m cross pairings (u with v), the remaining
    u's and v's pair among themselves."""
    total = sp.S.Zero
    for m in range(min(i, j) + 1):
        if (i - m) % 2 or (j - m) % 2:
            continue
        ways = comb(i, m) * comb(j, m) * factorial(m)
        total += (ways * _double_factorial_odd(i - m) * _double_factorial_odd(j - m)
                  * pair.k ** m * pair.q1 ** ((i - m) // 2) * pair.q2 ** ((j - m) // 2))
    return total


def _hermite_coefficients(coefs: list[sp.Expr]) -> list[sp.Expr]:
    """a_m(q) = E[p^(m)(u)] / m! for u ~ N(0, q), m = 0..degree, as polynomials in the
    placeholder ``_Q``: Σ_i c_i C(i, m) E[u^(i-m)] with E[u^j] = (j-1)!! q^(j/2)."""
    return [sum((c * comb(i, m) * _double_factorial_odd(i - m) * _Q ** ((i - m) // 2)
                 for i, c in enumerate(coefs) if i >= m and c != 0 and (i - m) % 2 == 0),
                sp.S.Zero)
            for m in range(len(coefs))]


_Q = sp.Dummy("q")


def polynomial_dual(coefficients, pair: Pair, derivative: bool = False) -> sp.Expr:
    """E[p(u) p(v)] for p(x) = Σ coefficients[i] x^i, or with ``derivative`` its ∂/∂k.

    By the Hermite (Mehler) expansion, for jointly Gaussian u, v with covariance k,
    E[f(u) g(v)] = Σ_m k^m / m! · E[f^(m)(u)] E[g^(m)(v)], a finite sum for polynomials:
    Γ = Σ_m m! k^m a_m(q1) a_m(q2) with a_m as in _hermite_coefficients — degree + 1
    terms, built directly, where expanding Isserlis' pairings of every (u^i, v^j) gave
    thousands of terms for 20 coefficients (and differentiating them took seconds)."""
    parts = _hermite_coefficients([exact(a) for a in coefficients])
    total = sp.S.Zero
    for m, a in enumerate(parts):
        if a == 0 or (derivative and m == 0):
            continue
        power = m * pair.k ** (m - 1) if derivative else pair.k ** m
        total += factorial(m) * power * a.xreplace({_Q: pair.q1}) * a.xreplace({_Q: pair.q2})
    return total
