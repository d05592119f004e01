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


class Corr(KernelFunction):
    """Correlation k / sqrt(q1 q2), clipped to [-1, 1] when evaluated numerically."""

    nargs = 3

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

    def _sympystr(self, printer):
        return printer.doprint(self.as_ratio())

    def _latex(self, printer, exp=None):
        text = printer._print(self.as_ratio())
        return rf"\left({text}\right)^{{{exp}}}" if exp is not None else text

    def _pretty(self, printer):
        return printer._print(self.as_ratio())

    def _numpycode(self, printer):
        return "_corr({})".format(", ".join(printer._print(a) for a in self.args))

    _pythoncode = _numpycode


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
