"""Gaussian-integration duals at small variances, where their exponential form cancels.

For φ(x) = Σᵢ cᵢ x^mᵢ exp(λᵢ x) (polynomials × exp, sin, cos, sinh, cosh), the closed form of
Γ = E[φ(u) φ(v)] that ntkdsl.gaussian builds is a sum of exponentials of the variances. Where
φ vanishes to a high order at 0 and a variance is small, its terms of size 1 cancel to a
result of size q^p: sinh(x)**4 was 300% off at q = 1e-4, and one small variance is enough
(q1 = 1e-8 beside q2 = 0.5). The Mehler (Hermite) expansion separates the three variables:

    Γ = Σₙ kⁿ/n! · aₙ(q1) aₙ(q2),   aₙ(q) = E[φ⁽ⁿ⁾(u)] for u ~ N(0, q),

and each aₙ is a function of one variance: below a switch variance its Taylor series
aₙ(q) = Σⱼ φ⁽ⁿ⁺²ʲ⁾(0) (q/2)ʲ / j! (the heat equation), above it its own exponential closed
form, the switch and the series' length chosen per φ so that neither loses more than a
factor ``MAX_LOSS`` to cancellation. One small variance makes the covariance small too
(|k| ≤ √(q1 q2)), so the sum over n converges in a few terms wherever the exponential form
of Γ cancels; each entry takes the sum where its last two terms are below 2⁻⁶⁰ of it and
the exponential form elsewhere (``symbolic.SeriesWhere``), and Γ̇ = ∂Γ/∂k is the same sum
over aₙ₊₁ (Price's theorem), with its own test.

Coefficients come from 60-digit mpmath arithmetic on the exact λᵢ, cᵢ, and are rounded once,
to float64, when the code is printed.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from math import comb, factorial

import mpmath as mp
import sympy as sp
from sympy.core.symbol import Str

from .symbolic import MehlerSeries, Pair, SeriesWhere

TERMS = 32            # a_0 .. a_TERMS: Γ sums n ≤ TERMS, Γ̇ one term fewer
# (the generated helper uses the sum where its last two terms are below 2⁻⁶⁰ of it, and |k|
# is within the clip 16 / max|λ|², past which 32 terms do not converge)
MAX_LOSS = 1e3        # cancellation allowed to either form of an aₙ at the switch
MAX_SERIES = 120      # Taylor terms of one aₙ
DIGITS = 60
# Switch variances tried, in units of 1/max|λ|²: the series converges in
# about e·(max|λ|² q/2) terms, the exponential form cancels less as q grows.
_SWITCHES = tuple(2.0 ** i for i in range(-6, 7))


@dataclass(frozen=True)
class _Moment:
    """aₙ(q) as Σ_g exp(s_g q) Σ_d C_gd q^d (complex s_g = λ²/2, mpmath C_gd), and its Taylor
    coefficients ``taylor[j]`` of q^j."""

    groups: dict
    taylor: tuple

    def exact_terms(self, q):
        """The terms |C_gd q^d exp(s_g q)| and their (real) sum at q, in mpmath."""
        total, size = mp.mpf(0), mp.mpf(0)
        for s, poly in self.groups.items():
            weight = mp.exp(_mp_number(s) * q)
            for d, c in poly.items():
                term = c * q ** d * weight
                total += term
                size += abs(term)
        return mp.re(total), size


def small_variance_duals(terms, pair: Pair, exact_gamma: sp.Expr) -> tuple[sp.Expr, sp.Expr] | None:
    """(Γ, Γ̇): the exponential form ``exact_gamma`` and its k-derivative, each computed as the
    Mehler sum where that converges (see the module's doc), for φ = Σ c·x^m·exp(λx) given as
    ``terms`` [(c, m, λ, 0)]; None if no switch variance keeps both forms of every aₙ within
    MAX_LOSS (the caller then takes the numerical route)."""
    with mp.workdps(DIGITS):
        numbers = [(_mp_number(c), m, _mp_number(lam), sp.expand(lam ** 2 / 2))
                   for c, m, lam, _ in terms]
        rho = max(abs(lam) ** 2 for _, _, lam, _ in numbers)
        choice = _switch(numbers, rho)
    if choice is None:
        return None
    switch, moments = choice
    clip = min(16 / float(rho), 2.0 ** 30)
    # The table the printer's helper reads: a Python literal of float64 numbers only.
    numbers = (switch, clip, tuple(_taylor_floats(m) for m in moments),
               tuple(_group_floats(m) for m in moments))
    if not all(math.isfinite(v) for v in _flat(numbers)):
        # Coefficients past float64 (sin(1e20*x): λⁿ overflows): the exponential form alone,
        # which stays finite, as it was before this series.
        return exact_gamma, sp.diff(exact_gamma, pair.k)
    table = Str(repr(numbers))
    series = MehlerSeries(sp.Integer(0), pair.q1, pair.q2, pair.k, table)
    gamma = SeriesWhere(exact_gamma, series)
    return gamma, SeriesWhere(sp.diff(exact_gamma, pair.k), series.diff(pair.k))


@functools.cache
def _mp_number(value: sp.Expr) -> mp.mpc:
    """A sympy number (exact: exp(4)/2, 3 + I) as a DIGITS-digit mpmath complex. The
    exponents s = λ²/2 stay sympy numbers, so that equal ones group exactly; sympy's
    product of one with an mpmath number stays unevaluated when it is irrational."""
    with mp.workdps(DIGITS):
        return mp.mpc(sp.N(sp.re(value), DIGITS), sp.N(sp.im(value), DIGITS))


def _flat(nested):
    for item in nested:
        if isinstance(item, tuple):
            yield from _flat(item)
        else:
            yield item


def _taylor_floats(moment: _Moment) -> tuple[float, ...]:
    return tuple(float(t) for t in moment.taylor) if any(moment.taylor) else (0.0,)


def _group_floats(moment: _Moment) -> tuple:
    """aₙ's exponential form as ((rate, turn, p, s), ...): exp(rate q)(p(q) cos(turn q) −
    s(q) sin(turn q)), p and s by degree; a conjugate pair of exponents as one group."""
    out = []
    for s, poly in moment.groups.items():
        rate, turn = float(sp.re(s)), float(sp.im(s))
        if turn < 0:
            continue  # the conjugate's other half: 2 Re(C e^{sq}) below
        degree = max(poly, default=0)
        coefficient = [poly.get(d, 0) for d in range(degree + 1)]
        if turn == 0:
            even, odd = tuple(float(mp.re(c)) for c in coefficient), ()
        else:
            even = tuple(2 * float(mp.re(c)) for c in coefficient)
            odd = tuple(2 * float(mp.im(c)) for c in coefficient)
        if any(even) or any(odd):
            out.append((rate, turn, even, odd))
    return tuple(out)


def _moments(numbers, count: int, series: int) -> list[_Moment]:
    """aₙ for n < count, each with ``series`` Taylor terms."""
    derivatives = _taylor_at_zero(numbers, count + 2 * series)
    out = []
    for n in range(count):
        groups: dict = {}
        for c, m, lam, s in numbers:
            poly = groups.setdefault(s, {})
            # E[Dⁿ(x^m e^{λx})] = Σ_l C(n,l) m!/(m-l)! λ^(n-l) E[u^(m-l) e^{λu}], and
            # E[u^p e^{λu}] = e^{λ²q/2} Σ_(r even) C(p,r) (r-1)!! λ^(p-r) q^(p - r/2).
            for lower in range(min(n, m) + 1):
                p = m - lower
                outer = comb(n, lower) * factorial(m) // factorial(p)
                for r in range(0, p + 1, 2):
                    power = (n - lower) + (p - r)
                    coefficient = c * outer * comb(p, r) * _odd_factorial(r) * lam ** power
                    d = p - r // 2
                    poly[d] = poly.get(d, 0) + coefficient
        taylor = tuple(derivatives[n + 2 * j] / (2 ** j * factorial(j)) for j in range(series))
        out.append(_Moment(groups, taylor))
    return out


def _taylor_at_zero(numbers, count: int) -> list:
    """φ⁽ʳ⁾(0) for r < count: Dʳ(x^m e^{λx}) at 0 is r!/(r-m)! λ^(r-m)."""
    return [mp.re(sum((c * (factorial(r) // factorial(r - m)) * lam ** (r - m)
                       for c, m, lam, _ in numbers if r >= m), mp.mpc(0)))
            for r in range(count)]


def _odd_factorial(r: int) -> int:
    """(r − 1)!!, the r-th moment of a standard normal, for even r."""
    return factorial(r) // (2 ** (r // 2) * factorial(r // 2))


def _switch(numbers, rho):
    """(switch variance, moments) with the least cancellation over every aₙ, or None. The
    search compares losses to a factor MAX_LOSS, so 20 digits do for it."""
    moments = _moments(numbers, TERMS + 1, MAX_SERIES)
    best = None
    with mp.workdps(20):
        for unit in _SWITCHES:
            switch = mp.mpf(unit) / rho
            loss = max(_loss(moment, switch) for moment in moments)
            if best is None or loss < best[0]:
                best = (loss, switch)
    if best is None or best[0] > MAX_LOSS:
        return None
    switch = best[1]
    return float(switch), [_truncated(moment, switch) for moment in moments]


def _series_terms(moment: _Moment, q) -> list:
    """|taylor[j]| q^j, j = 0, 1, ..."""
    out, power = [], mp.mpf(1)
    for t in moment.taylor:
        out.append(abs(t) * power)
        power *= q
    return out


def _loss(moment: _Moment, q) -> mp.mpf:
    """The larger cancellation factor of aₙ's two forms at q (1 for aₙ ≡ 0); infinite if
    the series has not converged within MAX_SERIES terms."""
    value, size = moment.exact_terms(q)
    series = _series_terms(moment, q)
    scale = max(size, sum(series))
    if scale == 0:
        return mp.mpf(1)
    if max(series[-4:]) > mp.mpf(2) ** -64 * scale:
        return mp.inf
    value = max(abs(value), mp.mpf(10) ** -40 * scale)
    return scale / value


def _truncated(moment: _Moment, q) -> _Moment:
    """The moment with the Taylor terms that matter at q ≤ switch (relative 2⁻⁶⁴)."""
    series = _series_terms(moment, q)
    scale = sum(series)
    keep = len(series)
    while keep > 1 and sum(series[keep - 1:]) <= mp.mpf(2) ** -64 * scale:
        keep -= 1
    return _Moment(moment.groups, moment.taylor[:keep])
