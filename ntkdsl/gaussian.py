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

from functools import cache
from math import comb

import sympy as sp

from .symbolic import ExpCosh, ExpSinh, Pair, gaussian_moment, polynomial_dual


def closed_form_dual(phi: sp.Expr, x: sp.Symbol, pair: Pair, registry) -> sp.Expr | None:
    """Γ for φ by the rules above, or None if they do not apply."""
    scaled = _registry_multiple(phi, registry)
    if scaled is not None:
        factor, spec = scaled
        return factor ** 2 * spec.dual(pair)
    terms = elementary_terms(phi, x)
    if terms is None:
        return None
    return _elementary_dual(terms, pair)


def _registry_multiple(phi: sp.Expr, registry):
    """(α, spec) if φ = α·ψ for a parameterless registry entry ψ with a closed form."""
    for spec in {id(s): s for s in registry.values()}.values():
        if spec.dual is None or spec.params:
            continue
        ratio = sp.simplify(phi / spec.phi())
        if ratio.is_number and ratio.is_real and ratio != 0:
            return ratio, spec
    return None


def elementary_terms(phi: sp.Expr, x: sp.Symbol):
    """φ as [(c, m, λ, β)] meaning Σ c·x^m·exp(λx + βx²), or None if it is not of that
    form (λ may be complex: trigonometric factors)."""
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
    if all(lam == 0 and beta == 0 for _, _, lam, beta in terms):
        return _polynomial(terms, pair)
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


def _polynomial(terms, pair: Pair) -> sp.Expr | None:
    """A polynomial φ (real coefficients): the Hermite sum of symbolic.polynomial_dual."""
    coefficients = [sp.S.Zero] * (max(m for _, m, _, _ in terms) + 1)
    for c, m, _, _ in terms:
        coefficients[m] += c
    if not all(c.is_real for c in coefficients):
        return None
    return polynomial_dual(coefficients, pair)


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
