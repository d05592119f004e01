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

from .runtime import embedded_source


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


class Corr(KernelFunction):
    """Correlation k / sqrt(q1 q2), clipped to [-1, 1] when evaluated numerically."""

    nargs = 3

    def helpers(self) -> dict[str, str]:
        # _corr and the in-place emitter's _inv_sqrt (ntkdsl.inplace), from the runtime.
        return {"_corr": embedded_source("correlation")}

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
