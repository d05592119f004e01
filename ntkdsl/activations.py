"""The activation registry: one entry per activation.

An entry is φ as a sympy expression in ``x`` and, where one is known, the closed-form dual
Γ(q1, q2, k) = E[φ(u) φ(v)] for (u, v) ~ N(0, [[q1, k], [k, q2]]). The NTK factor
Γ̇ = E[φ'(u) φ'(v)] is never written by hand: it is ∂Γ/∂k (Price's theorem), taken
symbolically by the derivation — except for activations whose derivative is zero almost
everywhere (Sign, steps), where Γ̇ = 0 as automatic differentiation of a finite network
gives (``zero_derivative``).

To add an activation, add one ``register(Activation(...))`` call below.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from . import limits
from .expressions import parse_expression, phi_of_text, x  # x: the one variable of every φ
from .params import Param
from .symbolic import ArcCosine, ExpCosh, ExpSinh, Pair, exact, polynomial_dual


class atan2(sp.atan2):
    """sympy's atan2, except that the angle of two legs stays an angle: of expressions, as
    written (sympy rewrites atan2(y, x) of signed symbols as atan(y/x) + π, a division by x,
    which is 0 at a zero variance: Gelu's diagonal atan2(√(1 + 2q), −q) divided by q = 0);
    of numbers whose signs sympy cannot decide (constant variances fed through a numerical
    moment, after a Dense with W_std=0), too: sympy would rewrite it as
    -I·log((x + I·y)/sqrt(x² + y²)), complex arithmetic in the generated code (a
    ComplexWarning, the real part cast) and seconds of printing."""

    @classmethod
    def eval(cls, y, x):
        if not (y.is_number and x.is_number):
            return None
        value = super().eval(y, x)
        return None if value is not None and value.has(sp.I) else value


@dataclass(frozen=True)
class ActivationSpec:
    """One registry entry. ``phi(**params)`` gives φ in ``x``; ``dual(pair, **params)`` gives
    Γ in closed form, or is None when no closed form is known."""

    name: str
    params: tuple[Param, ...]
    phi: Callable[..., sp.Expr]
    dual: Callable[..., sp.Expr] | None = None
    # ∂Γ/∂k written out, only where plain differentiation leaves a removable 0/0 or terms
    # that cancel in floating point.
    dual_dot: Callable[..., sp.Expr] | None = None
    zero_derivative: Callable[..., bool] = field(default=lambda **_: False)
    aliases: tuple[str, ...] = ()
    # check(values, spans, source) for arguments that need more than a type check (the
    # expression of Fn), raising an error that points into the architecture string.
    check: Callable[..., None] | None = None


REGISTRY: dict[str, ActivationSpec] = {}


def register(spec: ActivationSpec) -> ActivationSpec:
    for name in (spec.name, *spec.aliases):
        REGISTRY[name.lower()] = spec
    return spec


def lookup(name: str) -> ActivationSpec | None:
    """The entry for ``name`` (case-insensitive), or None."""
    return REGISTRY.get(name.lower())


# ---------------------------------------------------------------------------------------
# Closed-form duals
# ---------------------------------------------------------------------------------------

def abrelu_dual(p: Pair, a: Any, b: Any) -> sp.Expr:
    """φ = a·min(x, 0) + b·max(x, 0) = b·relu(x) − a·relu(−x): with E[relu(u) relu(v)] =
    √(q1 q2) J_1(c)/(2π) and J_1(−c) = J_1(c) − πc, Γ = (a − b)² √(q1 q2) J_1(c)/(2π) + ab·k.
    Relu's J_1 vanishes like (π − θ)³ at c → −1; as ``ArcCosine`` (J_1/(2π)) it stays accurate.
    The two terms never cancel badly: for ab < 0 they have the same sign where Γ is small
    (c < 0), for ab > 0 Γ changes sign (LeakyRelu) where k is large enough for its rounding
    to dominate. Γ̇ = ∂Γ/∂k = (a − b)² J_0(c)/(2π) + ab: a sum of positive terms for
    ab ≥ 0; for ab < 0 see ``abrelu_dual_dot``."""
    a, b = exact(a), exact(b)
    return (a - b) ** 2 * p.norm * ArcCosine(1, p.c) + a * b * p.k


def abrelu_dual_dot(p: Pair, a: Any, b: Any) -> sp.Expr:
    """∂Γ/∂k: plain differentiation for ab ≥ 0; for ab < 0 (Abs, ABRelu(−0.5, 2)) as
    (a + b)²/4 + (a − b)² arcsin(c)/(2π) — the same as (a − b)² J_0(c)/(2π) + ab, since
    J_0 = π/2 + arcsin c, but Abs's (2/π) arcsin(c) keeps its digits as c → 0, where that
    form subtracts 1 from 1."""
    if not (exact(a) * exact(b)).is_negative:
        return sp.diff(abrelu_dual(p, a, b), p.k)
    a, b = exact(a), exact(b)
    return (a + b) ** 2 / 4 + (a - b) ** 2 * sp.asin(p.c) / (2 * sp.pi)


def rectified_monomial_dual(p: Pair, degree: int) -> sp.Expr:
    """E[relu(u)^n relu(v)^n] = (q1 q2)^(n/2) J_n(θ) / (2π), J_n of Cho & Saul (2009) as
    ``ArcCosine`` (J_n/(2π) from exact integer polynomials; accurate at c → −1, where J_n
    vanishes like (π − θ)^(2n+1))."""
    return p.norm ** degree * ArcCosine(degree, p.c)


def rectified_monomial_dual_dot(p: Pair, degree: int) -> sp.Expr:
    """∂Γ/∂k for RectifiedMonomial: by Price's theorem n² E[relu(u)^(n-1) relu(v)^(n-1)]
    (the derivative of relu^n is n relu^(n-1)), i.e. n² (q1 q2)^((n-1)/2) J_(n-1)(θ) / (2π)
    — what differentiating ArcCosine gives, written out so that degree 0 (the step) is 0."""
    if degree == 0:
        return sp.S.Zero
    return degree ** 2 * rectified_monomial_dual(p, degree - 1)


def erf_dual(p: Pair, a: Any, b: Any, c: Any) -> sp.Expr:
    """2a²/π · arcsin(s k / sqrt((1 + s q1)(1 + s q2))) + c², s = 2b², written as the angle
    atan2(s k, sqrt(det(I + s Σ))): the arcsine of a ratio within rounding of 1 (large
    variance, nearly collinear inputs) amplifies that rounding by its square-root
    singularity; the angle of two accurate legs does not."""
    a, b, c = exact(a), exact(b), exact(c)
    scale = 2 * b ** 2
    return 2 * a ** 2 / sp.pi * atan2(scale * p.k, sp.sqrt(p.det_shifted(scale))) + c ** 2


def erf_dual_dot(p: Pair, a: Any, b: Any, c: Any) -> sp.Expr:
    """∂Γ/∂k, differentiated and cancelled: 4a²b² / (π sqrt(det(I + 2b²Σ))). Plain
    differentiation of the angle leaves (1 + s q1)(1 + s q2) over itself in a sum."""
    return sp.cancel(sp.diff(erf_dual(p, a, b, c), p.k))


def _hyperbolic_moments(p: Pair, b: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(exp(m) sinh(d), exp(m) cosh(d)), m = −b²(q1 + q2)/2, d = b² k: half the difference
    and half the sum of E[cos(b(u − v))] = exp(m + d) and E[cos(b(u + v))] = exp(m − d), the
    Gaussian characteristic function. As ``ExpSinh``/``ExpCosh``: subtracting the two
    exponentials loses every digit of a small variance (both are ≈ 1), and the product
    exp(m)·sinh(d) overflows to inf·0 at a large one."""
    m, d = -b ** 2 * (p.q1 + p.q2) / 2, b ** 2 * p.k
    return ExpSinh(m, d), ExpCosh(m, d)


def sin_dual(p: Pair, a: Any, b: Any, c: Any) -> sp.Expr:
    """a²/2 (E[cos(b(u − v))] − cos(2c) E[cos(b(u + v))]) = a² (cos²c e^m sinh d + sin²c e^m
    cosh d): a sum of two accurate terms for c = 0 (the odd sine) or k ≥ 0."""
    a, b, c = exact(a), exact(b), exact(c)
    sinh, cosh = _hyperbolic_moments(p, b)
    return a ** 2 * (sp.cos(c) ** 2 * sinh + sp.sin(c) ** 2 * cosh)


def cos_dual(p: Pair, a: Any, b: Any, c: Any) -> sp.Expr:
    """a²/2 (E[cos(b(u − v))] + cos(2c) E[cos(b(u + v))]) = a² (sin²c e^m sinh d + cos²c e^m
    cosh d)."""
    a, b, c = exact(a), exact(b), exact(c)
    sinh, cosh = _hyperbolic_moments(p, b)
    return a ** 2 * (sp.sin(c) ** 2 * sinh + sp.cos(c) ** 2 * cosh)


def exp_dual(p: Pair, a: Any, b: Any) -> sp.Expr:
    a, b = exact(a), exact(b)
    return a ** 2 * sp.exp(b ** 2 * (p.q1 + p.q2 + 2 * p.k) / 2)


def gaussian_dual(p: Pair, a: Any, b: Any) -> sp.Expr:
    """φ = a·exp(b x²): E = a² / sqrt(det(I − 2b Σ))."""
    a, b = exact(a), exact(b)
    return a ** 2 / sp.sqrt(p.det_shifted(-2 * b))


def gelu_dual(p: Pair) -> sp.Expr:
    """φ = x Φ(x), the exact (erf) Gelu; neural-tangents uses this dual for both values of
    ``approximate``: k/4 + (k arcsin(k / sqrt((1 + q1)(1 + q2))) + (k² + q1 q2 δ²) / ((1 +
    q1)(1 + q2) δ)) / (2π) with δ = sqrt((1 + q1)(1 + q2) − k²). Rewritten so that no step
    loses digits at large variance (that form lost 4e-10 of the diagonal NTK at q = 5e5):
    δ² from ``Pair.det_shifted`` (exact on the diagonal), and k/4 + k arcsin(..)/(2π) as
    k·atan2(δ, −k)/(2π) — π/2 + arcsin as the angle of two accurate legs, which does not
    cancel k/4 at k ≈ −q."""
    outer = (1 + p.q1) * (1 + p.q2)
    delta = sp.sqrt(p.det_shifted(1))
    return (p.k * atan2(delta, -p.k)
            + (p.k ** 2 + p.q1 * p.q2 * delta ** 2) / (outer * delta)) / (2 * sp.pi)


def gelu_dual_dot(p: Pair) -> sp.Expr:
    """∂Γ/∂k collected by hand: (atan2(δ, −k) + k (k² + (3 + q1 + q2) δ²) / ((1 + q1)(1 + q2)
    δ³)) / (2π). Plain differentiation gives terms of size k/δ that cancel to one of size
    1/δ² (ten digits at q = 1e10); the test checks this against ∂Γ/∂k of the textbook form."""
    outer = (1 + p.q1) * (1 + p.q2)
    delta2 = p.det_shifted(1)
    return (atan2(sp.sqrt(delta2), -p.k)
            + p.k * (p.k ** 2 + (3 + p.q1 + p.q2) * delta2) / (outer * delta2 ** sp.Rational(3, 2))
            ) / (2 * sp.pi)


def sign_dual(p: Pair) -> sp.Expr:
    return 2 / sp.pi * sp.asin(p.c)


# ---------------------------------------------------------------------------------------
# The entries (names, parameters and defaults as in neural-tangents' stax)
# ---------------------------------------------------------------------------------------

def _gaussian_b_check(b: float) -> str | None:
    # E[exp(2 b u²)] for u ~ N(0, q) exists only while 4 b q < 1: with b > 0 the kernel would
    # be undefined (NaN) for every input variance past 1/(4b) — refused, as Fn refuses
    # exp(x**2)-type growth.
    return None if b <= 0 else ("must be <= 0: for b > 0 the Gaussian moments E[phi(u)^2] "
                                "diverge once the pre-activation variance reaches 1/(4 b)")


def _coefficients_check(coef: tuple) -> str | None:
    return (None if len(coef) <= limits.MAX_COEFFICIENTS else
            f"must have at most {limits.MAX_COEFFICIENTS} coefficients (degree "
            f"{limits.MAX_COEFFICIENTS - 1}; ntkdsl.limits.MAX_COEFFICIENTS)")


_ABC = (Param("a", "float", 1.0), Param("b", "float", 1.0), Param("c", "float", 0.0))

register(ActivationSpec(
    "Relu", (), phi=lambda: sp.Max(x, 0), dual=lambda p: abrelu_dual(p, 0, 1)))
register(ActivationSpec(
    "LeakyRelu", (Param("alpha", "float"),),
    phi=lambda alpha: sp.Max(x, 0) + exact(alpha) * sp.Min(x, 0),
    dual=lambda p, alpha: abrelu_dual(p, alpha, 1),
    dual_dot=lambda p, alpha: abrelu_dual_dot(p, alpha, 1)))
register(ActivationSpec(
    "ABRelu", (Param("a", "float"), Param("b", "float")),
    phi=lambda a, b: exact(a) * sp.Min(x, 0) + exact(b) * sp.Max(x, 0),
    dual=abrelu_dual, dual_dot=abrelu_dual_dot))
register(ActivationSpec(
    "Abs", (), phi=lambda: sp.Abs(x), dual=lambda p: abrelu_dual(p, -1, 1),
    dual_dot=lambda p: abrelu_dual_dot(p, -1, 1)))
register(ActivationSpec(
    "Erf", _ABC, phi=lambda a, b, c: exact(a) * sp.erf(exact(b) * x) + exact(c),
    dual=erf_dual, dual_dot=erf_dual_dot))
register(ActivationSpec(
    "Sin", _ABC, phi=lambda a, b, c: exact(a) * sp.sin(exact(b) * x + exact(c)),
    dual=sin_dual))
register(ActivationSpec(
    "Cos", _ABC, phi=lambda a, b, c: exact(a) * sp.cos(exact(b) * x + exact(c)),
    dual=cos_dual))
register(ActivationSpec(
    "Exp", (Param("a", "float", 1.0), Param("b", "float", 1.0)),
    phi=lambda a, b: exact(a) * sp.exp(exact(b) * x), dual=exp_dual))
register(ActivationSpec(
    "Gaussian", (Param("a", "float", 1.0), Param("b", "float", -1.0, check=_gaussian_b_check)),
    phi=lambda a, b: exact(a) * sp.exp(exact(b) * x ** 2), dual=gaussian_dual))
register(ActivationSpec(
    "Gelu", (Param("approximate", "bool", False),),
    phi=lambda approximate: (x / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + exact(0.044715) * x ** 3)))
                             if approximate else x / 2 * (1 + sp.erf(x / sp.sqrt(2)))),
    # The tanh approximation has no closed-form dual (neural-tangents reuses the exact
    # one for it; ntkdsl gives the kernel of the function actually written).
    dual=lambda p, approximate: None if approximate else gelu_dual(p),
    dual_dot=lambda p, approximate: None if approximate else gelu_dual_dot(p)))
# Sign's derivative is 0 almost everywhere, so it adds nothing to the NTK.
register(ActivationSpec(
    "Sign", (), phi=lambda: sp.sign(x), dual=sign_dual, zero_derivative=lambda: True))
register(ActivationSpec(
    "Monomial",
    (Param("degree", "int", check=limits.at_most(limits.MAX_DEGREE, "ntkdsl.limits.MAX_DEGREE")),),
    phi=lambda degree: x ** degree,
    dual=lambda p, degree: polynomial_dual([0] * degree + [1], p),
    dual_dot=lambda p, degree: polynomial_dual([0] * degree + [1], p, derivative=True)))
# max(x, 0)^degree; degree 0 is the step, whose derivative is 0 almost everywhere.
register(ActivationSpec(
    "RectifiedMonomial", (Param("degree", "int", check=limits.at_most(
        limits.MAX_RECTIFIED_DEGREE, "ntkdsl.limits.MAX_RECTIFIED_DEGREE")),),
    phi=lambda degree: sp.Heaviside(x, 1) if degree == 0 else sp.Max(x, 0) ** degree,
    dual=rectified_monomial_dual, dual_dot=rectified_monomial_dual_dot,
    zero_derivative=lambda degree: degree == 0))
register(ActivationSpec(
    "Polynomial", (Param("coef", "floats", check=_coefficients_check),),
    phi=lambda coef: sum(exact(a) * x ** i for i, a in enumerate(coef)),
    dual=lambda p, coef: polynomial_dual(coef, p),
    dual_dot=lambda p, coef: polynomial_dual(coef, p, derivative=True)))


# ---------------------------------------------------------------------------------------
# Activations without a known closed form: routed to the Gaussian-integration rules, then
# to the numerical dual (see derivation.dual_maps)
# ---------------------------------------------------------------------------------------

def _softplus(a: sp.Expr) -> sp.Expr:
    return sp.log(1 + sp.exp(a))


register(ActivationSpec("Tanh", (), phi=lambda: sp.tanh(x)))
register(ActivationSpec("Sigmoid", (), phi=lambda: 1 / (1 + sp.exp(-x))))
register(ActivationSpec("Softplus", (), phi=lambda: _softplus(x)))
register(ActivationSpec("Silu", (), phi=lambda: x / (1 + sp.exp(-x)), aliases=("Swish",)))
register(ActivationSpec(
    "Elu", (Param("alpha", "float", 1.0),),
    phi=lambda alpha: sp.Max(x, 0) + exact(alpha) * (sp.exp(sp.Min(x, 0)) - 1)))
register(ActivationSpec("Mish", (), phi=lambda: x * sp.tanh(_softplus(x))))


def _fn_phi(expr: str) -> sp.Expr:
    return phi_of_text(expr)


def _fn_check(values: dict, spans: dict, source: str) -> None:
    """Parse the expression where it is written, so errors point into the architecture."""
    span = spans.get("expr")
    # The literal is the first quoted text of the argument (after "expr=" if named).
    quotes = [i for i in (source.find('"', span.start), source.find("'", span.start))
              if i >= 0] if span is not None else []
    offset = min(quotes) + 1 if quotes else 0
    parse_expression(values["expr"], source if span is not None else None, offset)


def derivative(phi: sp.Expr, variable: sp.Symbol = x) -> sp.Expr:
    """φ' almost everywhere — the one φ' of ntkdsl (the NTK's Γ̇, the numerical route's φ' and
    φ'', the finite networks' backward pass): the Dirac deltas that steps and sign differentiate
    into are dropped, as automatic differentiation of a finite network drops them (DESIGN §2)."""
    out = sp.diff(phi, variable).replace(sp.DiracDelta, lambda *args: sp.S.Zero)
    # sympy leaves d/dx sign(f) (floor, ceiling, step) unevaluated where it cannot tell that f is
    # real (a Derivative no printer prints); it is 0 almost everywhere like the deltas.
    if out.has(sp.Derivative):
        out = out.replace(lambda e: isinstance(e, sp.Derivative) and isinstance(e.expr, _STEPWISE),
                          lambda e: sp.S.Zero)
        out = out.replace(lambda e: isinstance(e, sp.Subs) and e.expr == 0, lambda e: sp.S.Zero)
    return out


_STEPWISE = (sp.sign, sp.Heaviside, sp.floor, sp.ceiling)


def derivative_vanishes(phi: sp.Expr) -> bool:
    """φ' = 0 almost everywhere (sign, step and their combinations): then Γ̇ = 0, as for
    Sign — ∂Γ/∂k would be the derivative of an arcsine, infinite at correlation 1."""
    return derivative(phi) == 0


def _fn_zero_derivative(expr: str) -> bool:
    return derivative_vanishes(_fn_phi(expr))


register(ActivationSpec(
    "Fn", (Param("expr", "str"),), phi=_fn_phi, check=_fn_check, zero_derivative=_fn_zero_derivative))
