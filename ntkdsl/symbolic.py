"""Symbolic building blocks shared by the dual activations and the derivation.

``Corr(k, q1, q2)`` is the correlation k / sqrt(q1 q2) as one sympy function, so that
(1) it evaluates to exactly 1 on the diagonal (k = q1 = q2), which gives the diagonal
recursion its exact correlation; (2) its derivative in k is known, so Price's theorem
(Γ̇ = ∂Γ/∂k) is plain symbolic differentiation; (3) the NumPy printer can clip it
to [-1, 1], where rounding would otherwise push arccos/arcsin out of their domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from math import comb, factorial

import sympy as sp
from sympy.printing.precedence import precedence


class KernelFunction(sp.Function):
    """A sympy function that generated code calls by name. It holds only mathematics
    (evaluation, derivatives, display); how a target calls it, and the helper code that
    call needs, belong to the target's printer (ntkdsl.printing)."""


class PrintedAs(KernelFunction):
    """A KernelFunction that formulas show as the expression it stands for (``shown``) and
    generated code computes by calling the helper the printer knows by ``call``."""

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


class AttributedSymbol(sp.Symbol):
    """A sympy Symbol carrying attributes, named in order by the class's ``attributes``: two
    are equal only if their names, assumptions and attributes all agree, they pickle with
    their attributes, and they sort and print as the plain Symbol of their name.

    The last because sympy orders the terms of a sum or product by class name, then by
    content, and that order is the order of floating-point operations in generated code:
    under the name "Symbol" (set on every subclass; pickle finds a class by its
    ``__qualname__``) these symbols sort as the plain symbols they stand for did. Among
    symbols of one name and assumptions sympy compares the rest of the content item by item
    with < and >, so each attribute enters it as (its type's name, its repr): orderable
    whatever the attribute is (an int layer and a template's str one, a role, None)."""

    attributes: tuple[str, ...] = ()

    def __new__(cls, name: str, *values, **assumptions):
        if len(values) != len(cls.attributes):
            raise TypeError(f"{cls.__qualname__} takes {cls.attributes} after the name, "
                            f"got {len(values)} values")
        obj = sp.Symbol.__xnew__(cls, name, **assumptions)
        for attribute, value in zip(cls.attributes, values):
            setattr(obj, attribute, value)
        obj._content = tuple((type(v).__name__, repr(v)) for v in values)
        return obj

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__name__ = "Symbol"

    def _hashable_content(self):
        return super()._hashable_content() + self._content

    def __getnewargs_ex__(self):
        return (self.name, *(getattr(self, a) for a in self.attributes)), self.assumptions0


class Corr(PrintedAs):
    """Correlation k / sqrt(q1 q2), clipped to [-1, 1] when evaluated numerically."""

    nargs = 3
    call = "_corr"

    @classmethod
    def eval(cls, k, q1, q2):
        numbers = all(a.is_number for a in (k, q1, q2))
        if numbers and q1 * q2 == 0:
            # As the runtime's _corr: a variance of exactly 0 (every input, after a Dense
            # with W_std=0 and no bias) has correlation 0, not the 1 of Corr(q, q, q): Sign
            # made K = 1 beside variances 0, and the next Corr divided by sqrt(0).
            return sp.S.Zero
        if q1 == q2 and k == q1:
            return sp.S.One
        if q1 == q2 and k == -q1:
            return sp.S.NegativeOne
        if numbers and not any(a.has(KernelFunction) for a in (k, q1, q2)):
            return sp.Max(-1, sp.Min(1, k / sp.sqrt(q1 * q2)))
        # A number that generated code computes (a numerical-route moment of constants,
        # Γ[Mish](1/4)) stays a correlation, clipped at run time like any other: sympy's
        # Max/Min raised "not comparable" for it (and evaluating it to compare ran for minutes).
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


class _ExpHyperbolic(PrintedAs):
    """exp(m)·sinh(d) or exp(m)·cosh(d) as one function, evaluated without cancellation or
    overflow (the NumPy printer's helpers); shown as the product it stands for. Its derivatives are
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


class ExpSinh(_ExpHyperbolic):
    """exp(m)·sinh(d)."""
    hyperbolic = sp.sinh
    call = "_exp_sinh"


class ExpCosh(_ExpHyperbolic):
    """exp(m)·cosh(d)."""
    hyperbolic = sp.cosh
    call = "_exp_cosh"


_PARTNER = {ExpSinh: ExpCosh, ExpCosh: ExpSinh}


class SeriesWhere(PrintedAs):
    """``exact`` (a closed form), computed entry by entry as ``series`` — a sum equal to it
    — where the series is not NaN and every check |small| ≤ |bound| holds, and as ``exact``
    elsewhere: SeriesWhere(exact, series, small₁, bound₁, ...).

    Closed forms written as sums of exponentials cancel where the variance is small (the
    dual of sinh(x)**4 is of size q⁴ and its terms of size 1); the series keeps the digits
    there (ntkdsl.small_variance builds both). The two are the same function, so formulas
    show ``exact``, and a derivative is the pair of derivatives under the same checks. The
    checks are plain arguments, not sympy's Abs and Max, whose evaluation on long sums
    takes minutes."""

    @classmethod
    def eval(cls, exact, series, *checks):
        if len(checks) % 2:
            raise TypeError("SeriesWhere takes (exact, series) and pairs (small, bound)")
        if checks and all(c.is_number and not c.has(KernelFunction) for c in checks):
            values = [complex(c) for c in checks]
            holds = all(abs(s) <= abs(b) for s, b in zip(values[::2], values[1::2]))
            return series if holds else exact
        return None

    def _eval_derivative(self, s):
        exact, series, *checks = self.args
        return SeriesWhere(exact.diff(s), series.diff(s), *checks)

    def _eval_evalf(self, prec):
        # sympy's own evaluation of the closed form, at any precision it needs
        return self.args[0]._eval_evalf(prec)

    def shown(self) -> sp.Expr:
        return self.args[0]

    @property
    def precedence(self) -> int:
        return precedence(self.shown())


class MehlerSeries(KernelFunction):
    """Σₙ kⁿ/n! aₙ₊ᵣ(q1) aₙ₊ᵣ(q2) — MehlerSeries(r, q1, q2, k, table) — the Mehler expansion
    of E[φ⁽ʳ⁾(u) φ⁽ʳ⁾(v)] with aₙ(q) = E[φ⁽ⁿ⁾(u)], u ~ N(0, q), each aₙ given by ``table``
    (a ``Str``: the Python literal of its Taylor and exponential coefficients, which
    ntkdsl.small_variance makes and the printer's helper reads). NaN where the series has
    not converged (|k| past the table's clip, or the last two terms above 2⁻⁶⁰ of the sum):
    ``SeriesWhere`` takes the closed form there. ∂/∂k raises r by one (Price's theorem)."""

    nargs = 5

    def _eval_derivative(self, s):
        order, q1, q2, k, table = self.args
        if q1.has(s) or q2.has(s):  # not needed: only Price's theorem differentiates a dual
            raise NotImplementedError("MehlerSeries is differentiated in k only")
        return k.diff(s) * MehlerSeries(order + 1, q1, q2, k, table)

    def _sympystr(self, printer):
        order, q1, q2, k, _ = (printer.doprint(a) for a in self.args)
        return f"MehlerSeries({order}, {q1}, {q2}, {k})"


_C = sp.Symbol("c")


@cache
def arccos_polynomials(n: int) -> tuple[sp.Poly, sp.Poly]:
    """(A_n, B_n) with Cho & Saul's J_n(θ) = A_n(c)·(π − θ) + B_n(c)·sin θ, c = cos θ.

    J_n = sin^(2n+1) θ · (d/dc)^n [(π − θ) / sin θ]; writing the n-th derivative as
    (A_n (π − θ) + B_n sin θ) / sin^(2n+1) θ and differentiating once more gives
    A_(n+1) = (1 − c²) A_n' + (2n + 1) c A_n and B_(n+1) = A_n + (1 − c²) B_n' + 2n c B_n:
    exact integer polynomials in n steps, where differentiating and simplifying in θ took
    seconds for n = 5 and left 0/0 terms at c = ±1."""
    a, b = sp.Poly(1, _C), sp.Poly(0, _C)
    one_minus_c2, c = sp.Poly(1 - _C ** 2, _C), sp.Poly(_C, _C)
    for m in range(n):
        a, b = (one_minus_c2 * a.diff(_C) + (2 * m + 1) * c * a,
                a + one_minus_c2 * b.diff(_C) + 2 * m * c * b)
    return a, b


# Below this φ = π − θ the helper sums J_n's series in φ instead of the closed form, whose
# two terms of size φ cancel there to one of size φ^(2n+1): at φ = 1 (c = −0.54) the closed
# form loses at most a factor 505 (RectifiedMonomial(5); Relu 4.6) to that cancellation,
# and 9 (Relu) to 14 (degree 5) terms of the series are exact to SERIES_ERROR.
SERIES_BELOW = 1.0
SERIES_ERROR = 1e-17


@cache
def arccos_series(n: int) -> tuple[sp.Rational, ...]:
    """Coefficients s_m with J_n = φ^(2n+1) Σ_m s_m φ^(2m), truncated where the rest is at
    most SERIES_ERROR of J_n for every φ ≤ SERIES_BELOW.

    J_n is entire in φ, and dJ_n/dφ = (dJ_n/dc)(dc/dφ) = n² J_(n−1) sin φ with J_0 = φ and
    J_n(0) = 0 (n ≥ 1): each order is n² ∫₀^φ J_(n−1)(t) sin t dt — exact rational arithmetic
    on power series. Relative to φ^(2n+1) the omitted terms grow with φ and J_n falls, so the
    bound at φ = SERIES_BELOW holds below it."""
    size = 2 * n + 30  # more terms than any order needs; the tail bound below decides
    coefficients = [sp.Integer(1)] + [sp.Integer(0)] * (size - 1)   # of φ^(2p+1); J_0 = φ
    sine = [sp.Integer(-1) ** j / sp.factorial(2 * j + 1) for j in range(size)]
    for order in range(1, n + 1):
        coefficients = [sp.Integer(0)] + [
            sp.Integer(order) ** 2 / (2 * p + 1)
            * sum((sine[j] * coefficients[p - 1 - j] for j in range(p)), sp.Integer(0))
            for p in range(1, size)]
    coefficients = coefficients[n:]
    x2 = sp.Rational(SERIES_BELOW) ** 2
    value = sum(a * x2 ** m for m, a in enumerate(coefficients))  # J_n(SERIES_BELOW), to 1e-40
    for terms in range(1, size):
        tail = sum(abs(a) * x2 ** m for m, a in enumerate(coefficients[terms:], terms))
        if tail <= SERIES_ERROR * value:
            return tuple(coefficients[:terms])
    raise AssertionError(f"J_{n}'s series needs more than {size} terms")  # pragma: no cover


def arccosine_closed(n: int, c: sp.Expr) -> sp.Expr:
    """J_n/(2π) at correlation c in the usual arc-cosine form, (A_n(c)(π − arccos c) +
    B_n(c)·√(1 − c²))/(2π), expanded over c, θ and sin θ."""
    a, b = arccos_polynomials(n)
    return sp.expand(a.as_expr().xreplace({_C: c}) * (sp.pi - sp.acos(c))
                     + b.as_expr().xreplace({_C: c}) * sp.sqrt(1 - c ** 2)) / (2 * sp.pi)


class ArcCosine(PrintedAs):
    """The arc-cosine kernel of order n at correlation c = cos θ: J_n(θ)/(2π), with J_n of
    Cho & Saul (2009) — E[relu(u)^n relu(v)^n] for unit variances, so the dual of relu^n is
    (q1 q2)^(n/2) ArcCosine(n, c); J_0 = π − θ.

    Formulas show it as the usual (A_n(c)(π − θ) + B_n(c) sin θ)/(2π); the NumPy printer calls
    a helper that is accurate where that form cancels (θ → π, c → −1, where J_n vanishes like
    (π − θ)^(2n+1)). It is exactly 1/2 at c = 1 for n ≤ 1, so a kernel of collinear inputs
    stays exactly collinear into the next layer, as the arccos form kept it. Its derivative
    is n² ArcCosine(n − 1, c) (Price's theorem for relu^n), so the NTK factor of every
    arc-cosine dual is again such a function, and one helper call gives both."""

    nargs = 2
    call = "_arccosine"  # the printer appends the order: one straight-line helper per order

    @classmethod
    def eval(cls, n, c):
        if not (n.is_Integer and n >= 0):
            raise TypeError(f"ArcCosine's order must be a non-negative integer, got {n}")
        if c.is_number:  # the diagonal (c = 1) and c = -1 are exact: A_n(1)/2, and 0
            return arccosine_closed(int(n), c)
        return None

    def fdiff(self, argindex=2):
        n, c = self.args
        if argindex != 2:
            raise sp.ArgumentIndexError(self, argindex)
        return n ** 2 * ArcCosine(n - 1, c) if n > 0 else 1 / (2 * sp.pi * sp.sqrt(1 - c ** 2))

    def shown(self) -> sp.Expr:
        return arccosine_closed(int(self.args[0]), self.args[1])

    @property
    def precedence(self) -> int:
        """That of the expression it is shown as (sympy's printers parenthesise by it)."""
        return precedence(self.shown())


class AtZeroVariance(KernelFunction):
    """``zero`` where the variance ``q`` is exactly 0, else ``value``.

    A pre-activation of variance 0 is surely 0, so an activation's dual there is its value
    at 0 (φ(0)·E[φ(v)]), which for φ with a jump at 0 (sign, steps) is not the limit of the
    dual as q → 0. The variance symbols are declared positive (for simplification), so a
    Piecewise on Eq(q, 0) would be decided False by sympy; this function keeps the test.
    Nested tests of the same q are decided by the outer one."""

    nargs = 3

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
