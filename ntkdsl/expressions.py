"""Activation expressions (the text inside ``Fn("...")``) -> sympy expressions in ``x``.

The syntax is grammars/expression.lark; each rule becomes a sympy node built here from a
whitelist of names. Nothing the user writes is evaluated as Python (no eval, exec or
sympify), so no string can run code: an unknown name is an error, not a lookup.

Errors point into the architecture string: ``parse_expression(text, source, offset)``
takes the position of the expression text inside the architecture source.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache

import lark
import sympy as sp
from lark import Transformer, v_args

from . import limits
from .errors import ExpressionError, Span
from .grammars import deeper_than, grammar

# The variable of every activation: Fn's expressions and the registry's φ (ntkdsl.activations
# imports it from here) are sympy expressions in this one symbol.
x = sp.Symbol("x", real=True)


def _sigmoid(a: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-a))


def _softplus(a: sp.Expr) -> sp.Expr:
    return sp.log(1 + sp.exp(a))


# name -> (number of arguments, builder). The only functions an expression can call.
FUNCTIONS: dict[str, tuple[int, Callable[..., sp.Expr]]] = {
    "exp": (1, sp.exp), "log": (1, sp.log), "sqrt": (1, sp.sqrt), "abs": (1, sp.Abs),
    "sin": (1, sp.sin), "cos": (1, sp.cos),
    "sinh": (1, sp.sinh), "cosh": (1, sp.cosh), "tanh": (1, sp.tanh),
    "erf": (1, sp.erf), "erfc": (1, sp.erfc), "atan": (1, sp.atan), "arctan": (1, sp.atan),
    "sigmoid": (1, _sigmoid), "softplus": (1, _softplus),
    "relu": (1, lambda a: sp.Max(a, 0)), "step": (1, lambda a: sp.Heaviside(a, 1)),
    "sign": (1, sp.sign), "max": (2, sp.Max), "min": (2, sp.Min),
}
CONSTANTS: dict[str, sp.Expr] = {"x": x, "pi": sp.pi, "e": sp.E}


def valid_names() -> str:
    """The names an expression may use, for error hints."""
    return ("variable x; constants pi, e; functions "
            + ", ".join(f"{n}({', '.join('ab'[:k])})" for n, (k, _) in FUNCTIONS.items()))


@dataclass(frozen=True)
class _Where:
    """Maps positions in the expression text to spans in the architecture source."""

    source: str
    offset: int

    def span(self, start: int, end: int) -> Span:
        return Span.at(self.source, self.offset + start, self.offset + max(end, start + 1))

    def error(self, message: str, start: int, end: int, hint: str | None = None):
        return ExpressionError(message, source=self.source, span=self.span(start, end),
                               hint=hint)


class _ToSympy(Transformer):
    """Parse tree -> sympy, one method per grammar alternative."""

    def __init__(self, where: _Where):
        super().__init__()
        self.where = where

    def number(self, children):
        (tok,) = children
        # Checked before sympy reads it: Rational("1e999999999") would build a huge integer.
        text = str(tok)
        value = float(text) if len(text) <= limits.MAX_NUMBER_LENGTH else 0.0
        problem = limits.number_problem(text, value)
        if problem:
            raise self.where.error(problem, tok.start_pos, tok.end_pos)
        return sp.Rational(text)  # exact: "0.1" is 1/10, as the user wrote it

    def name(self, children):
        (tok,) = children
        value = CONSTANTS.get(str(tok))
        if value is None:
            hint = ("is a function: call it, e.g. " + str(tok) + "(x)"
                    if str(tok) in FUNCTIONS else "valid: " + valid_names())
            raise self.where.error(f"unknown name '{tok}'", tok.start_pos, tok.end_pos, hint)
        return value

    @v_args(meta=True)
    def call(self, meta, children):
        tok, *args = children
        entry = FUNCTIONS.get(str(tok))
        if entry is None:
            raise self.where.error(f"unknown function '{tok}'", tok.start_pos, tok.end_pos,
                                   "valid: " + valid_names())
        arity, build = entry
        if len(args) != arity:
            raise self.where.error(f"{tok}() takes {arity} argument(s), got {len(args)}",
                                   tok.start_pos, tok.end_pos, "valid: " + valid_names())
        try:
            value = build(*args)
        except OverflowError:
            # mpmath evaluating a constant such as cosh(sinh(1.97**100)) to compare it
            raise self.where.error(f"{tok}() cannot evaluate its arguments: a constant among them is "
                                   "far beyond float64's range", meta.start_pos,
                                   meta.end_pos, "constants in an activation must stay within "
                                   "float64's range (about 1.8e308)") from None
        except (ValueError, TypeError) as err:
            # max/min of a constant that is not real (sqrt(sin(pi**2)) is imaginary): sympy
            # says "not comparable".
            raise self.where.error(f"{tok}() cannot compare its arguments ({err})", meta.start_pos,
                                   meta.end_pos, "the arguments of max and min must be real for "
                                   "every real x") from None
        return self._defined(value, meta)

    @v_args(meta=True)
    def add(self, meta, c):
        return self._defined(c[0] + c[1], meta)

    @v_args(meta=True)
    def sub(self, meta, c):
        return self._defined(c[0] - c[1], meta)

    @v_args(meta=True)
    def mul(self, meta, c):
        return self._bounded(self._defined(c[0] * c[1], meta), meta)

    @v_args(meta=True)
    def div(self, meta, c):
        return self._bounded(self._defined(c[0] / c[1], meta), meta)

    def neg(self, c):
        return -c[0]

    @v_args(meta=True)
    def pow(self, meta, c):
        base, exponent = c
        if exponent.is_number and exponent.is_real:
            # sympy distributes a power over a product's constant factors: (2*x)**1000000
            # would compute 2**1000000, an integer of 300,000 digits, so they are bounded too.
            constant = base if base.is_number else base.as_independent(x, as_Add=False)[0]
            self._check_constant_power(constant, exponent, meta)
        return self._bounded(self._defined(base ** exponent, meta), meta)

    def _check_constant_power(self, base: sp.Expr, exponent: sp.Expr, meta) -> None:
        """Bound a number a ** p before sympy computes it: 9**9**9 would be an integer of
        370 million digits."""
        if base != 0 and base.is_real:
            magnitude = abs(float(exponent)) * abs(float(sp.log(sp.Abs(base), 10)))
            if magnitude > 300:
                raise self.where.error(
                    f"{base}**{exponent} is beyond the float64 range", meta.start_pos,
                    meta.end_pos, "a constant must be between 1e-300 and 1e300 in magnitude")

    def _bounded(self, result: sp.Expr, meta) -> sp.Expr:
        """A power or product whose value has a degree past the limit is refused where it
        is formed, before anything expands it: the value counts, not how it is written, so
        (x**20)**2 is x**40 and x**60/x**30 is x**30 (sympy combines powers of one base
        symbolically, at no cost)."""
        found = degree(result)
        if found > limits.MAX_FN_DEGREE:
            raise self.where.error(
                f"this part has degree {found:g} in x (it is {_short(result)}); the limit is "
                f"{limits.MAX_FN_DEGREE} (ntkdsl.limits.MAX_FN_DEGREE)", meta.start_pos,
                meta.end_pos, "the degree counts each function call of x as one factor: "
                "x**40 and sinh(x)**40 have degree 40, exp(40*x) has degree 1")
        return result

    def _defined(self, result: sp.Expr, meta) -> sp.Expr:
        """sympy's undefined values (zoo from 1/0, nan from 0*zoo, ...) are refused where
        they arise, never passed on to the derivation."""
        if result.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            raise self.where.error("this part of the expression is undefined (a division by "
                                   "zero or an infinite value)", meta.start_pos, meta.end_pos,
                                   "an activation must be a finite real function of every real x")
        return result


@lru_cache(maxsize=4096)
def degree(expr: sp.Expr) -> float:
    """The degree of ``expr`` in x, each function call of x counting as one factor: what a
    polynomial expansion of it would reach (x**3*sin(x)**2 is 5, (x + 1)**-4 is 4,
    abs(x)**0.5 is 0.5, exp(x**2) is 1)."""
    if not expr.has(x):
        return 0.0
    if expr == x:
        return 1.0
    if expr.is_Add:
        return max(degree(term) for term in expr.args)
    if expr.is_Mul:
        return sum(degree(factor) for factor in expr.args)
    if expr.is_Pow and expr.exp.is_number and expr.exp.is_real:
        return abs(float(expr.exp)) * degree(expr.base)
    return 1.0  # a function of x, or a power with x in its exponent: one factor


def _short(expr: sp.Expr, most: int = 60) -> str:
    text = str(expr)
    return text if len(text) <= most else text[:most - 3] + "..."


_NAMES = {"NAME": "a name", "NUMBER": "a number", "LPAR": "'('", "RPAR": "')'",
          "COMMA": "','", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'",
          "__ANON_0": "'**'", "CIRCUMFLEX": "'^'", "$END": "the end of the expression"}


def _syntax_error(text: str, err: lark.exceptions.UnexpectedInput, where: _Where):
    token = getattr(err, "token", None)
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        pos = err.pos_in_stream
        found, end = repr(text[pos]), pos + 1
    elif token is None or token.type == "$END":
        found, pos, end = "end of the expression", len(text), len(text) + 1
    else:
        found, pos, end = repr(str(token)), token.start_pos, token.end_pos
    expected = sorted({_NAMES.get(t, t) for t in (getattr(err, "expected", None)
                                                   or getattr(err, "allowed", None) or ())})
    hint = ("expected " + " or ".join(expected) + "; " if expected else "") + \
        "an expression in x such as \"x*tanh(x)\""
    return where.error(f"unexpected {found}", pos, end, hint)


def parse_expression(text: str, source: str | None = None, offset: int = 0) -> sp.Expr:
    """φ as a sympy expression in ``x`` (the module symbol ``ntkdsl.expressions.x``).

    ``source``/``offset``: the architecture string and where ``text`` starts in it, so that
    errors point there. Raises ExpressionError for bad syntax, unknown names, expressions
    that are not real and finite, or whose Gaussian moments diverge."""
    where = _Where(text if source is None else source, 0 if source is None else offset)
    if not text.strip():
        raise where.error("the expression is empty", 0, 0, "e.g. Fn(\"x*tanh(x)\")")
    expr = _parse(text, where)
    check_activation(expr, lambda msg, hint: where.error(msg, 0, len(text), hint))
    if not expr.has(x) and not expr.is_Rational:
        # A constant φ as the real number it is (checked above), to 30 digits: as an exact
        # expression the derivation's rewriting could turn sin(erfc(e)) into complex
        # exponentials that float64 code cannot take (logaddexp of a complex number).
        expr = sp.Float(sp.re(at_point(expr, 0.0)), 30)
    return expr


def _parse(text: str, where: _Where) -> sp.Expr:
    if len(text) > limits.MAX_FN_LENGTH:
        raise where.error(f"the expression has {len(text)} characters; the limit is "
                          f"{limits.MAX_FN_LENGTH} (ntkdsl.limits.MAX_FN_LENGTH)",
                          limits.MAX_FN_LENGTH, limits.MAX_FN_LENGTH + 1)
    try:
        tree = grammar("expression").parse(text)
    except lark.exceptions.UnexpectedInput as err:
        raise _syntax_error(text, err, where) from None
    _check_size(tree, text, where)
    try:
        result = _ToSympy(where).transform(tree)
    except lark.exceptions.VisitError as err:
        if isinstance(err.orig_exc, ExpressionError):
            raise err.orig_exc from None
        raise
    return sp.sympify(result) if not isinstance(result, sp.Basic) else result


# A chain a + b - c or a * b / c is one level of nesting, however long (sympy flattens it).
_CHAINS = (frozenset({"add", "sub"}), frozenset({"mul", "div"}))


def _syntax_level(parent: str, child: str) -> int:
    return 0 if any(parent in group and child in group for group in _CHAINS) else 1


def _call_level(parent: str, child: str) -> int:
    return 1 if child == "call" else 0


def _check_size(tree: lark.Tree | lark.Token, text: str, where: _Where) -> None:
    """Nesting depth, nesting of function calls and node count, measured without
    recursion, before the transformer (which recurses once per level) and sympy see the
    tree."""
    if not isinstance(tree, lark.Tree):
        return  # a lone number or name
    for limit, level, what, name in (
            (limits.MAX_FN_DEPTH, _syntax_level, "is nested", "MAX_FN_DEPTH"),
            (limits.MAX_FN_CALL_DEPTH, _call_level, "has function calls nested",
             "MAX_FN_CALL_DEPTH")):
        too_deep = deeper_than(tree, limit, level)
        if too_deep is not None:
            raise where.error(f"the expression {what} more than {limit} levels deep "
                              f"(ntkdsl.limits.{name})", too_deep.meta.start_pos,
                              too_deep.meta.end_pos)
    nodes = sum(1 + sum(isinstance(c, lark.Token) for c in t.children) for t in tree.iter_subtrees())
    if nodes > limits.MAX_FN_NODES:
        raise where.error(f"the expression has {nodes} parts (numbers, names, operators, "
                          f"calls); the limit is {limits.MAX_FN_NODES} "
                          "(ntkdsl.limits.MAX_FN_NODES)", 0, len(text))


# ---------------------------------------------------------------------------------------
# Validity: a real, finite function of x whose Gaussian moments exist for every variance
# ---------------------------------------------------------------------------------------

# Points where φ must be real and finite (0 and both signs over many scales).
_PROBE = sorted({s * v for s in (-1, 1) for v in (0, 1e-3, 0.1, 0.5, 1, 1.7, 3, 10, 100)})


def check_activation(expr: sp.Expr, fail: Callable[[str, str], Exception]) -> None:
    """Raise ``fail(message, hint)`` unless ``expr`` is a usable activation."""
    extra = expr.free_symbols - {x}
    if extra:
        raise fail("the expression has symbols other than x: "
                   + ", ".join(sorted(map(str, extra))), "write an expression in x only")
    _check_growth(expr, fail)
    for value in _PROBE:
        y = value_at(expr, value)
        if y is None:
            raise fail(f"the expression is not finite at x = {value:g}",
                       "an activation must be a finite real function of every real x")
        real, imaginary = y.as_real_imag()
        # 30 digits of a real value can leave an imaginary part of rounding size.
        if abs(imaginary) > sp.Float(1e-20) * max(abs(real), 1):
            raise fail(f"the expression is not real at x = {value:g} (value {sp.N(y, 6)})",
                       "an activation must be real for every real x; e.g. use "
                       "sqrt(abs(x)) or log(1 + exp(x))")


def value_at(expr: sp.Expr, value: float, symbol: sp.Symbol = x) -> sp.Expr | None:
    """φ(value) to 30 digits as a sympy number (not rounded to float64: sinh(100)**40 is
    finite, 1e1700), or None where it is undefined or infinite."""
    try:
        y = at_point(expr, value, symbol)
    except (ValueError, TypeError, ArithmeticError):
        return None  # e.g. Min(zoo, 0) at x = 0: "the argument 'zoo' is not comparable"
    if not y.is_number or y.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        return None
    return y


# Past this magnitude a function's argument is taken at its limit: mpmath's erfc of
# exp(1e10) (Fn("erfc(exp(x)**1e6)") at x = 1e4) loops for minutes, exp of exp(1e4)
# would need ln 2 to 10**4342 digits. These few stay cheap at any magnitude (log of a
# number is its exponent times ln 2) and keep their values.
_HUGE_ARGUMENT = sp.Float(1e300)
_CHEAP_AT_ANY_SIZE = (sp.log, sp.Abs, sp.sign, sp.Heaviside)


def at_point(expr: sp.Expr, value: float, symbol: sp.Symbol = x) -> sp.Expr:
    """``expr`` at ``symbol`` = value, to 30 digits, evaluated from the leaves up so that a
    function of one argument beyond ±1e300 gets its value at ±oo (erfc: 0, tanh: ±1,
    exp: oo or 0) instead of mpmath's, which can take minutes there (log and the other
    _CHEAP_AT_ANY_SIZE are evaluated as they are); ValueError where there is no limit
    (sin(oo)): float64 code would compute NaN there."""
    def value_of(e: sp.Expr) -> sp.Expr:
        if not e.has(symbol):
            return e
        if e == symbol:
            return sp.Float(value, 30)
        args = [value_of(a) for a in e.args]
        if isinstance(e, sp.Function) and len(args) == 1 and not isinstance(e, _CHEAP_AT_ANY_SIZE):
            a = sp.N(args[0], 30)
            if a.is_real and abs(a) > _HUGE_ARGUMENT:
                return e.func(sp.oo if a > 0 else -sp.oo)
            if a.is_number and not a.is_real and abs(a) > _HUGE_ARGUMENT:
                raise ValueError(f"{e.func} of a complex number beyond 1e300")
        out = e.func(*args)
        # Each node a 30-digit number, not an exact expression of the nodes below: sympy's
        # automatic simplification of exact values (cosh(cosh(100*I*atan(pi)))**0.5 asks
        # is_positive, which reduced a huge argument modulo 2*pi symbolically) hung.
        if isinstance(out, sp.Expr) and out.is_number:
            out = sp.N(out, 30)
        return out

    y = sp.N(value_of(expr), 30)
    if y.has(sp.AccumBounds):
        raise ValueError(f"{expr} has no value at x = {value:g} within float64's range")
    return y


# Far points where the growth of log|φ| is measured, farthest first.
_FAR = (1e4, 1e3, 1e2)


def _check_growth(expr: sp.Expr, fail) -> None:
    """E[φ(√q z)²] is finite for every q only if log|φ| grows slower than x²: the ratio
    r(R) = log|φ(R)| / R² tends to a constant a > 0 for exp(a·x²)-type growth, however small
    a is, and falls like 1/R for exp(λ·x)-type growth (sinh(x)**40: 40/R), like log(R)/R²
    for polynomials. So φ diverges where r stays positive from one far point to the next
    (ten times farther) instead of falling at least as 1/√R does; a φ that can be
    evaluated at one far point only is held to r < 1e-3 there."""
    for sign in (-1, 1):
        ratios = _far_ratios(expr, sign)
        if not ratios:
            raise fail(f"the activation has no value at x = {sign * _FAR[-1]:g} or farther out "
                       "(sin or cos of a value beyond 1e300, ...), so its Gaussian moments "
                       "cannot be established", "an activation must be a finite real function "
                       "of every real x, computable in float64")
        if ratios[0] == sp.oo:
            diverges = True
        elif len(ratios) == 1 or ratios[1] <= 0:
            diverges = bool(ratios[0] > sp.Float(1e-3))
        else:
            diverges = bool(ratios[0] > 0 and ratios[0] * _FALL > ratios[1])
        if diverges:
            raise fail("the Gaussian moments of this activation diverge: it grows like "
                       "exp(x**2) or faster", "an activation must grow slower than "
                       "exp(a*x**2) for every a > 0, e.g. exp(x) or x**3 are fine, "
                       "exp(x**2) is not")


# r(R) must fall by more than this factor from R/10 to R: sqrt(10), halfway (on a log scale)
# between exp(a·x²) (1) and exp(λ·x) (10).
_FALL = sp.sqrt(10)


def _far_ratios(expr: sp.Expr, sign: int) -> list[sp.Expr]:
    """log|φ(x)| / x² at the farthest two of x = ±1e4, ±1e3, ±1e2 where sympy can evaluate φ
    (erfc(exp(3x)) at 1e4 is too small even for mpmath's exponents), farthest first; oo
    where φ is infinite. Compared in sympy, since log|φ| of exp(exp(x))-type values is beyond
    float range."""
    ratios: list[sp.Expr] = []
    for far in _FAR:
        try:
            y = at_point(expr, sign * far)
        except (ValueError, TypeError, ArithmeticError):
            continue
        if y.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
            return ratios or [sp.oo]
        ratios.append(sp.log(sp.Abs(y)) / far ** 2 if y != 0 else sp.S.Zero)
        if len(ratios) == 2:
            break
    return ratios


@cache
def phi_of_text(text: str) -> sp.Expr:
    """φ for an Fn expression already validated when the architecture was parsed."""
    return parse_expression(text)
