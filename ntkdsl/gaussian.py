"""Closed-form duals by rules of Gaussian integration, for activations written as
expressions (Fn) or registered without a closed form.

Rules, tried in order:
1. A registry entry with a closed form, up to a constant factor (Fn("2*relu(x)")):
   Γ = α² Γ_ψ.
2. Linearity over elementary terms. φ is expanded (sin, cos, sinh, cosh as complex
   exponentials) into Σ cᵢ x^mᵢ exp(λᵢ x + βᵢ x²); then Γ = Σᵢⱼ cᵢ cⱼ E[u^mᵢ e^(λᵢu+βᵢu²)
   v^mⱼ e^(λⱼv+βⱼv²)]; each cross term is a moment of the Gaussian tilted by its
   exponential (``_moment``), a polynomial φ the Hermite sum of symbolic.polynomial_dual.
   This covers polynomials × exponentials × trigonometric terms, with scaled and shifted
   arguments.
Γ̇ then follows by differentiation in k (Price's theorem) in the derivation.
"""
from __future__ import annotations

import warnings
from functools import cache
from math import comb

import numpy as np
import sympy as sp

from .printing import numpy_function
from .small_variance import small_variance_duals
from .symbolic import ExpCosh, ExpSinh, Pair, gaussian_moment, polynomial_dual


def closed_form_dual(phi: sp.Expr, x: sp.Symbol, pair: Pair,
                     registry) -> tuple[sp.Expr, sp.Expr | None] | None:
    """(Γ, Γ̇) for φ by the rules above, or None if they do not apply. Γ̇ is None where
    the caller should differentiate Γ (Price's theorem); a polynomial φ gets its Γ̇ from
    the Hermite sum directly, since sympy's diff of a degree-40 Γ takes minutes, and a
    multiple of a registry entry that writes its Γ̇ out gets that form, scaled."""
    scaled = _registry_multiple(phi, x, registry)
    if scaled is not None:
        # α·ψ: Γ = α² Γ_ψ and Γ̇ = α² Γ̇_ψ in ψ's own form where it writes one (Abs's
        # (2/π) arcsin c; differentiating its Γ subtracts 1 from 1 as c → 0).
        factor, spec = scaled
        dot = factor ** 2 * spec.dual_dot(pair) if spec.dual_dot is not None else None
        return factor ** 2 * spec.dual(pair), dot
    terms = elementary_terms(phi, x)
    if terms is None:
        return None
    if all(lam == 0 and beta == 0 for _, _, lam, beta in terms):
        return _polynomial(terms, pair)
    gamma = _elementary_dual(terms, pair)
    if gamma is None or any(beta != 0 for _, _, _, beta in terms):
        return None if gamma is None else (gamma, None)
    # Polynomials × exponentials × sin/cos/sinh/cosh: the exponential form cancels at small
    # variances, where the Mehler series takes over (None: neither is safe; numerical route).
    return small_variance_duals(terms, pair, gamma)


# Points where φ and a registry entry ψ are compared before any symbolic work: φ = α·ψ
# needs φ(p)·ψ(p₀) = φ(p₀)·ψ(p) at each of them (both signs, away from 0 and kinks).
_SCREEN = (-1.7, -0.6, 0.45, 1.3, 2.2)


def _registry_multiple(phi: sp.Expr, x: sp.Symbol, registry):
    """(α, spec) if φ = α·ψ for a parameterless registry entry ψ with a closed form.

    sympy's simplify of φ/ψ is unbounded (35 s for a composed Gelu), so it runs only for
    an entry whose ratio to φ is constant at the screening points; a false "no" costs
    nothing but speed, since the later routes are exact too."""
    phi_values = _values(phi, x)
    if phi_values is None:
        return None
    kinds = _kinds(phi)
    for spec in {id(s): s for s in registry.values()}.values():
        if spec.dual is None or spec.params or not _proportional(phi_values, _entry_values(spec, x)):
            continue
        # simplify is unbounded even on small bodies (minutes for min(sign(x), exp(cosh(..)))
        # against Sign): only a φ made of ψ's own functions gets it, where the only work
        # is rearranging them (a φ = α·ψ of other functions is left to the exact routes).
        if not kinds <= _kinds(spec.phi()):
            continue
        ratio = sp.simplify(phi / spec.phi())
        if ratio.is_number and ratio.is_real and ratio != 0:
            return ratio, spec
    return None


def _kinds(expr: sp.Expr) -> set[type]:
    """The functions expr is made of (exp, erf, Max, sign, ...; not +, *, ** or atoms)."""
    return {type(node) for node in sp.preorder_traversal(expr)
            if not (node.is_Atom or isinstance(node, (sp.Add, sp.Mul, sp.Pow)))}


def _values(expr: sp.Expr, x: sp.Symbol) -> tuple[float, ...] | None:
    """expr at the screening points in float64 (bounded work, where 30-digit evaluation of
    exp(1e8·exp(1e8·x)) takes seconds), or None if it is not finite and real there."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # ntkdsl's printer: sympy's lambdify prints a step as a Piecewise whose conditions
            # it simplifies, unboundedly (minutes for a step of a trigonometric expression).
            values = np.asarray(numpy_function(expr, x)(np.array(_SCREEN)), dtype=float)
        except (ArithmeticError, ValueError, TypeError):
            return None
    values = np.broadcast_to(values, (len(_SCREEN),))
    return tuple(values.tolist()) if np.isfinite(values).all() else None


@cache
def _entry_values(spec, x: sp.Symbol) -> tuple[float, ...] | None:
    return _values(spec.phi(), x)


def _proportional(a: tuple[float, ...], b: tuple[float, ...] | None) -> bool:
    """a = α·b for one α ≠ 0 (to 1e-9 of the values' size, float64 evaluations): every 2×2
    minor vanishes against the point where b is largest."""
    if b is None:
        return False
    ref = max(range(len(b)), key=lambda i: abs(b[i]))
    if abs(b[ref]) == 0 or abs(a[ref]) == 0:
        return False
    return all(abs(ai * b[ref] - a[ref] * bi) <= 1e-9 * abs(a[ref] * b[ref]) for ai, bi in zip(a, b))


def elementary_terms(phi: sp.Expr, x: sp.Symbol):
    """φ as [(c, m, λ, β)] meaning Σ c·x^m·exp(λx + βx²), or None if it is not of that
    form (λ may be complex: trigonometric factors)."""
    profile = _profile(phi, x) if _elementary_shape(phi, x) else None
    if _work(profile) > WORK_BUDGET:
        # Before expanding: sin(sin(x)) rewritten as exponentials never ends, and
        # x**20*exp(x) or sinh(x)**40 took minutes (the numerical route takes seconds).
        return None
    if all(key == (0j, 0j) for key in profile):
        # A polynomial: expanded with its irrational constants as 30-digit numbers, no
        # rewriting or powsimp. Those took 19 s, and Poly 13 s, for (x + log(1529/500000))**100
        # (min(x + log(0.003058), x)**100, a fuzz finding): exact constants only grow the
        # symbolic sums the float64 code is printed from ((pi - 1.59)**16 likewise).
        terms = [_term(t, x) for t in sp.Add.make_args(sp.expand(_numeric_constants(phi, x)))]
        return None if None in terms else terms
    rewritten = phi.rewrite(sp.sin, sp.exp).rewrite(sp.cos, sp.exp)
    rewritten = rewritten.rewrite(sp.sinh, sp.exp).rewrite(sp.cosh, sp.exp)
    expanded = sp.expand(sp.powsimp(sp.expand(rewritten), combine="exp"))
    terms = []
    for term in sp.Add.make_args(expanded):
        parsed = _term(sp.powsimp(term, combine="exp"), x)
        if parsed is None:
            return None
        terms.append(parsed)
    return terms


def _numeric_constants(e: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """e with every largest part free of x that is not a rational number (pi, log(3),
    sqrt(2) + 1.5) as a 30-digit Float."""
    if not e.has(x):
        return e if e.is_Rational else sp.Float(sp.N(e, 30), 30)
    return e.func(*(_numeric_constants(a, x) for a in e.args)) if e.args else e


_EXPONENTIALS = (sp.exp, sp.sin, sp.cos, sp.sinh, sp.cosh)

# Work units the expansion may take, each about 0.6 ms of compile time (measured: sinh(x)**16,
# 289 pairs of terms, 2.4 s; x**8*exp(x), one term of degree 8, 4.1 s; sinh(x)**12 and
# x**4*sin(x) about 1 s): past it φ goes to the numerical route.
WORK_BUDGET = 2_000


def _work(profile: dict | None) -> float:
    """The expansion's work for φ, from the terms it will have, counted without expanding:
    a pair of terms (i, j) costs 10 + (mᵢ + 1)² (mⱼ + 1)² (the size of the tilted moment's
    polynomial) where either has an exponential, 10 for two plain powers of x (an Isserlis
    number: a polynomial φ is a Hermite sum, cheap at degree 100). ``profile`` is φ's
    ``_profile``, None for too many terms or a φ not of that shape."""
    if profile is None:
        return float("inf")
    return sum(10 + (0 if key_i == key_j == (0j, 0j) else ((m_i + 1) * (m_j + 1)) ** 2)
               for key_i, m_i in profile.items() for key_j, m_j in profile.items())


# Past this many distinct terms the work is over budget whatever their degrees.
_MAX_PROFILE = int(WORK_BUDGET ** 0.5)


def _profile(phi: sp.Expr, x: sp.Symbol) -> dict | None:
    """{(λ, β): highest m} over the terms x^m exp(λx + βx²) that φ expands into, with
    exponents as complex floats (terms whose exponents coincide merge, as expanding merges
    them: sinh(x)**40 has 41 terms, not 2⁴⁰), or None once there are too many. φ has
    ``_elementary_shape``."""
    if not phi.has(x):
        return {(0j, 0j): 0}
    if phi == x:
        return {(0j, 0j): 1}
    if isinstance(phi, sp.Add):
        out: dict = {}
        for arg in phi.args:
            part = _profile(arg, x)
            if part is None:
                return None
            for key, m in part.items():
                out[key] = max(m, out.get(key, 0))
        return out if len(out) <= _MAX_PROFILE else None
    if isinstance(phi, sp.Mul):
        out = {(0j, 0j): 0}
        for arg in phi.args:
            out = _product(out, _profile(arg, x))
            if out is None:
                return None
        return out
    if phi.is_Pow:
        base, out = _profile(phi.base, x), {(0j, 0j): 0}
        for _ in range(int(phi.exp)):
            out = _product(out, base)
            if out is None:
                return None
        return out
    (arg,) = phi.args
    poly = sp.Poly(arg, x)
    lam, beta = (complex(poly.coeff_monomial(x ** d)) for d in (1, 2))
    if isinstance(phi, sp.exp):
        return {(lam, beta): 0}
    turn = 1j if isinstance(phi, (sp.sin, sp.cos)) else 1
    return {(turn * lam, turn * beta): 0, (-turn * lam, -turn * beta): 0}


def _product(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return None
    out: dict = {}
    for (la, ba), ma in a.items():
        for (lb, bb), mb in b.items():
            key = (_rounded(la + lb), _rounded(ba + bb))
            out[key] = max(ma + mb, out.get(key, 0))
    return out if len(out) <= _MAX_PROFILE else None


def _rounded(z: complex) -> complex:
    return complex(round(z.real, 9), round(z.imag, 9))


def _elementary_shape(phi: sp.Expr, x: sp.Symbol) -> bool:
    """Whether φ can be Σ c·x^m·exp(λx + βx²) at all, by its tree alone: sums, products and
    whole non-negative powers of x-terms, over exp/sin/cos/sinh/cosh of polynomials of
    degree at most 2 in x."""
    if not phi.has(x) or phi == x:
        return True
    if isinstance(phi, (sp.Add, sp.Mul)):
        return all(_elementary_shape(arg, x) for arg in phi.args)
    if phi.is_Pow:
        return bool(phi.exp.is_Integer and phi.exp >= 0 and _elementary_shape(phi.base, x))
    if isinstance(phi, _EXPONENTIALS):
        (arg,) = phi.args
        return bool(arg.is_polynomial(x) and sp.degree(arg, x) <= 2)
    return False


def _term(term: sp.Expr, x: sp.Symbol):
    coefficient, m, exponent = sp.S.One, 0, sp.S.Zero
    for factor in sp.Mul.make_args(term):
        if not factor.has(x):
            coefficient *= factor
        elif factor == x:
            m += 1
        elif factor.is_Pow and factor.base == x and factor.exp.is_Integer and factor.exp > 0:
            m += int(factor.exp)
        elif isinstance(factor, sp.exp):
            exponent += factor.args[0]
        else:
            return None
    if exponent.has(x) and not exponent.is_polynomial(x):
        return None
    poly = sp.Poly(sp.expand(exponent), x) if exponent.has(x) else None
    if poly is not None and (poly.degree() > 2 or any(cf.has(x) for cf in poly.all_coeffs())):
        return None
    coeffs = dict(zip(poly.monoms(), poly.coeffs())) if poly is not None else {}
    coefficient *= sp.exp(coeffs.get((0,), sp.S.Zero) if poly is not None else exponent)
    return coefficient, m, coeffs.get((1,), sp.S.Zero), coeffs.get((2,), sp.S.Zero)


def _elementary_dual(terms, pair: Pair) -> sp.Expr | None:
    if any(not b.is_real for _, _, _, b in terms):
        # sin/cos of a quadratic (complex β): the moments' imaginary parts are nested complex
        # radicals whose cancellation sympy's simplify proves only in seconds to minutes
        # (Fn("sin(x**2)"): 12 s); the numerical route is certified and bounded.
        return None
    total = sp.S.Zero
    for c1, m1, l1, b1 in terms:
        for c2, m2, l2, b2 in terms:
            total += c1 * c2 * _moment(m1, m2, l1, l2, b1, b2, pair)
    total = sp.expand(total)
    if total.has(sp.I):
        # Conjugate exponentials pair up; what is left of I must cancel exactly.
        real, imaginary = sp.expand_complex(total).as_real_imag()
        if sp.simplify(imaginary) != 0:
            return None
        total = sp.expand(real)
    return _paired_exponentials(total)


def _paired_exponentials(total: sp.Expr) -> sp.Expr:
    """Σ cᵢ exp(Eᵢ) with each term's exponentials merged into one (expanding splits
    exp(k − q) into exp(k)·exp(−q), inf·0 once k > 709), and each pair c(exp(E₁) ∓ exp(E₂))
    written as 2c exp(m) sinh(d) or cosh(d), m = (E₁ + E₂)/2, d = (E₁ − E₂)/2, by
    ExpSinh/ExpCosh: the difference of two exponentials ≈ 1 at a small variance keeps its
    digits, and so does its derivative in k."""
    groups: dict[sp.Expr, sp.Expr] = {}
    for term in sp.Add.make_args(total):
        factors = sp.Mul.make_args(sp.powsimp(term, combine="exp"))
        exponent = sp.expand(sum((f.args[0] for f in factors if isinstance(f, sp.exp)), sp.S.Zero))
        rest = sp.Mul(*(f for f in factors if not isinstance(f, sp.exp)))
        groups[exponent] = groups.get(exponent, sp.S.Zero) + rest
    out, left = sp.S.Zero, sorted(groups, key=sp.default_sort_key)
    while left:
        first = left.pop(0)
        c = groups[first]
        partner = next((e for e in left if groups[e] in (c, -c)), None)
        if partner is None:
            out += c * sp.exp(first)
            continue
        left.remove(partner)
        mean, half = sp.expand((first + partner) / 2), sp.expand((first - partner) / 2)
        pair = ExpCosh if groups[partner] == c else ExpSinh
        out += 2 * c * pair(mean, half)
    return out


# Terms of the polynomial route's Hermite sum, Σ_m (the terms of a_m(q)): past it a polynomial
# goes to the numerical route (whose series ends at its degree). Measured: a dense degree 36
# (361 terms) compiles in 1.2 s, (x+1)**40 (441) in 0.6 s, a dense degree 64 of decimal
# coefficients — (Polynomial([5 coefficients])) * 3, 1,089 terms — in 4.4 s; Monomial(100)
# has 51 terms and a Polynomial of MAX_COEFFICIENTS (20) coefficients at most 110.
POLYNOMIAL_TERMS = 600


def _hermite_terms(coefficients) -> int:
    """Σ_m of the terms of a_m(q) = Σ_(i >= m, i - m even) c_i C(i, m) E[u^(i-m)] (the size of
    symbolic.polynomial_dual's sum), from which coefficients are nonzero."""
    nonzero = [c != 0 for c in coefficients]
    # a_m and a_(m+2) share every term but c_m's: count from the top, per parity
    counts = [0, 0]
    total = 0
    for m in range(len(nonzero) - 1, -1, -1):
        counts[m % 2] += nonzero[m]
        total += counts[m % 2]
    return total


def _polynomial(terms, pair: Pair) -> tuple[sp.Expr, sp.Expr] | None:
    """A polynomial φ (real coefficients): (Γ, Γ̇) as the Hermite sums of
    symbolic.polynomial_dual, or None (the numerical route) past POLYNOMIAL_TERMS."""
    coefficients = [sp.S.Zero] * (max(m for _, m, _, _ in terms) + 1)
    for c, m, _, _ in terms:
        coefficients[m] += c
    if not all(c.is_real for c in coefficients) or _hermite_terms(coefficients) > POLYNOMIAL_TERMS:
        return None
    return polynomial_dual(coefficients, pair), polynomial_dual(coefficients, pair, derivative=True)


@cache
def _moment(m1: int, m2: int, l1: sp.Expr, l2: sp.Expr, b1: sp.Expr, b2: sp.Expr,
            pair: Pair) -> sp.Expr:
    """E[u^m1 v^m2 exp(l1 u + b1 u² + l2 v + b2 v²)] for (u, v) ~ N(0, Σ).

    The exponential tilts the Gaussian: the weight exp(λᵀz + zᵀBz) turns N(0, Σ) into
    N(μ, Σ') with Σ' = A⁻¹Σ, A = I − 2ΣB, μ = Σ'λ, times det(A)^(-1/2) exp(½ λᵀΣ'λ);
    the polynomial factor is then a moment of N(μ, Σ'): a binomial sum over the mean
    times Isserlis' central moments. Direct, where differentiating the generating function
    m1 + m2 times took a minute for x^16."""
    sigma = sp.Matrix([[pair.q1, pair.k], [pair.k, pair.q2]])
    prefactor = sp.S.One
    if b1 or b2:
        a = sp.eye(2) - 2 * sigma * sp.diag(b1, b2)
        sigma, prefactor = a.inv() * sigma, 1 / sp.sqrt(a.det())
    lam = sp.Matrix([l1, l2])
    mean = sigma * lam
    tilted = Pair(sigma[0, 0], sigma[1, 1], sigma[0, 1])
    central = sp.S.Zero
    for i in range(m1 + 1):
        for j in range(m2 + 1):
            shift = mean[0] ** (m1 - i) * mean[1] ** (m2 - j)
            if shift != 0:
                central += comb(m1, i) * comb(m2, j) * shift * gaussian_moment(i, j, tilted)
    return prefactor * sp.exp(sp.expand((lam.T * sigma * lam)[0, 0]) / 2) * central
