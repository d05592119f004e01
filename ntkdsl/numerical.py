"""The numerical route for activations without a closed-form dual: a Hermite series in the
correlation with coefficients computed once per distinct variance, and a stated error bound.

With u = √q1·z1 and v = √q2·(c·z1 + √(1−c²)·z2), Mehler's formula gives

    Γ(q1, q2, k) = E[φ(u) φ(v)] = Σ_n a_n(q1) a_n(q2) c^n,   a_n(q) = E[φ(√q z) h_n(z)],

with h_n = He_n / √n! the orthonormal Hermite polynomials. The a_n are one-dimensional
integrals of one variance each, so a kernel matrix needs them once per row, not per entry;
an entry then costs one multiply-add per term. Γ̇ = E[φ'(u) φ'(v)] is the same series for φ'
(φ' from sympy), so it is as accurate as Γ. For a continuous φ, Γ̇ = ∂Γ/∂k (Price) is also
the derivative of Γ's series, Σ n a_n(q1) a_n(q2) c^(n-1) / √(q1 q2): generated code gets
both from one Horner pass (``_hd_dual_pair``), with φ''s own series bounding the
derivative and completing the entries that bound leaves.

Error bound (Cauchy–Schwarz and Parseval): of the N = 320 tabulated terms, truncating
after T leaves at most |c|^T · sqrt(A(q1, T) A(q2, T)) + |c|^N · sqrt(R(q1) R(q2)), with
A(q, T) = Σ_{T≤n<N} a_n(q)² and R(q) = E[φ(√q z)²] − Σ_{n<N} a_n(q)², the remainder past
the table, which the engine computes alongside the coefficients. A is summed from the
back: a difference E[φ²] − Σ_{n<T} a_n² reaches rounding (or 0) within a few terms at a
small variance while a large variance's terms still count, and a tail of 0 would end the
sum too early. R is floored at its rounding level, 2⁻⁴⁶ E[φ²] (once a series has converged
the difference is rounding, 0 … 2e-15 of E[φ²] whichever way it fell). Each
entry is summed until the bound is below 1e-11 × sqrt(E[φ(u)²] E[φ(v)²]); entries with
|c| = 1 (collinear inputs) are
one-dimensional integrals and are computed directly. An entry that cannot reach the bound
within the available terms (a large variance with |c| near 1: for Tanh's φ' at q = 18.7,
|c| above 0.950 with the same variance, above 0.985 with a small one) is computed by nested
quadrature.

At any variance: every quadrature grid is graded towards φ's features (0 and its kinks) at
φ's own scale, so a variance q costs O(log q) nodes (_hd_feature_edges); the nested
quadrature runs in blocks of bounded memory under a node budget. Moments that are not
finite in float64 raise NumericalError naming the layer (_hd_check), never inf/NaN.

The engine is the runtime module ntkdsl.runtime.hermite (numpy only): compiled networks
call it, standalone modules embed its text, so library and standalone module compute the
same numbers. This module makes the sympy classes and the per-φ helper sources.
"""
from __future__ import annotations

import copyreg
import functools
import hashlib
from functools import cache
from typing import ClassVar

import numpy
import sympy as sp
from sympy.core.function import ArgumentIndexError

from .activations import derivative
from .errors import NumericalError
from .printing import compile_source, function_of, numpy_function
from .runtime import embedded_source, hermite
from .symbolic import KernelFunction

# The engine is the runtime module ntkdsl.runtime.hermite: compiled networks call its
# functions (one coefficient cache per process), standalone modules embed its text.
hermite._HD_ERROR_CLASS = NumericalError
TOLERANCE = hermite._HD_TOL  # relative truncation bound per entry (the route's stated error)
MAX_TERMS = hermite._HD_TERMS  # Hermite terms computed per variance
_ENGINE = vars(hermite)
# The φ functions of numerical dual classes evaluated without code generation (evaluate):
# the same names as in generated code, so they share the engine's tables.
_FUNCTIONS: dict = {"numpy": numpy}


_NONSMOOTH = (sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign, sp.Piecewise)


def kinks(phi: sp.Expr, x: sp.Symbol) -> tuple[float, ...]:
    """Real points where φ (or a derivative) is not smooth: the sign changes of the
    arguments of max/min/abs/step/sign (and of Piecewise conditions) in [-64, 64].
    Quadrature panels are refined there."""
    points: set[float] = set()
    for node in phi.atoms(*_NONSMOOTH):
        if isinstance(node, sp.Piecewise):
            args = [cond.lhs - cond.rhs for _, cond in node.args
                    if isinstance(cond, sp.core.relational.Relational)]
        elif isinstance(node, (sp.Max, sp.Min)):
            args = [node.args[0] - node.args[1]] if len(node.args) == 2 else []
        else:
            args = [node.args[0]]
        for arg in args:
            if arg.has(x):
                points |= _roots(arg, x)
    # The nearest ones matter most: φ(√q z) with q ~ 1 reaches |x| ~ 14 (a periodic
    # argument has infinitely many; the grids skip those a variance does not reach).
    return tuple(sorted(sorted(points, key=abs)[:MAX_KINKS]))


MAX_KINKS = 128
KINK_RANGE = 64.0


@cache
def _kink_grid() -> numpy.ndarray:
    """Where the arguments are sampled: uniform over [-64, 64] (spacing 1/512, so that
    sin(16x)'s zeros, π/16 apart, are each bracketed) and, geometrically, down to 1e-12
    around 0, where a pair of close zeros (x² - 1e-8) is likeliest."""
    uniform = numpy.linspace(-KINK_RANGE, KINK_RANGE, 2 ** 16 + 1)
    near = numpy.geomspace(1e-12, 1.0, 241)
    return numpy.unique(numpy.concatenate([uniform, near, -near]))


def _roots(arg: sp.Expr, x: sp.Symbol) -> set[float]:
    """The points in [-64, 64] where arg changes sign (a zero it only touches is no kink
    of max/min/abs, and a jump there has measure zero), found numerically: bracketed on a
    fixed grid, then bisected to float64 resolution. The work is one evaluation of arg on
    the grid, however complex arg is symbolically (sympy's solve took seconds on composed
    piecewise activations)."""
    function = numpy_function(arg, x)
    grid = _kink_grid()
    with numpy.errstate(all="ignore"):
        values = numpy.broadcast_to(numpy.asarray(function(grid), dtype=float), grid.shape)
    signs = numpy.where(numpy.isfinite(values), numpy.sign(values), 0.0)
    # A zero on the grid between nonzero neighbours is a root as it stands (x at 0; x**2
    # there too: sympy's solve found such touching zeros, and a panel edge costs nothing).
    inner = numpy.arange(1, grid.size - 1)
    isolated = inner[(signs[inner] == 0) & numpy.isfinite(values[inner])
                     & (signs[inner - 1] != 0) & (signs[inner + 1] != 0)]
    out = {float(grid[i]) for i in isolated}
    nonzero = numpy.flatnonzero(signs)
    left, right = nonzero[:-1], nonzero[1:]
    brackets = left[(signs[left] != signs[right]) & (right - left == 1)]
    # All at once: sin(exp(x)) changes sign at tens of thousands of grid points, and
    # bisecting them one by one (a numpy call per halving) took minutes.
    return out | set(_bisect(function, grid[brackets], grid[brackets + 1], signs[brackets]).tolist())


def _bisect(function, lo: numpy.ndarray, hi: numpy.ndarray, low_sign: numpy.ndarray) -> numpy.ndarray:
    """A sign change of ``function`` in each bracket [lo, hi] (``low_sign`` at lo) to float64
    resolution, all brackets at once: each is at most 1/512 wide, so 64 halvings reach it."""
    lo, hi = lo.astype(float), hi.astype(float)
    found = numpy.zeros(lo.shape, bool)  # a zero or a non-finite value hit: that point
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        open_ = ~found & (lo < mid) & (mid < hi)
        if not open_.any():
            break
        with numpy.errstate(all="ignore"):
            value = numpy.broadcast_to(numpy.asarray(function(mid), dtype=float), mid.shape)
        hit = open_ & ((value == 0) | ~numpy.isfinite(value))
        lo, hi = numpy.where(hit, mid, lo), numpy.where(hit, mid, hi)
        found |= hit
        up = open_ & ~hit & (numpy.sign(value) == low_sign)
        down = open_ & ~hit & ~up
        lo, hi = numpy.where(up, mid, lo), numpy.where(down, mid, hi)
    return numpy.where(found, lo, 0.5 * (lo + hi))


def function_source(name: str, expr: sp.Expr, x: sp.Symbol, label: str = "",
                    singular: tuple[float, ...] = ()) -> tuple[str, list[str]]:
    """(``def name(x): return <expr printed for numpy>``, broadcasting constants, with
    ``name.label`` (the layer, for error messages) and ``name.singular`` (kinks where a
    derivative of expr is unbounded, for the engine's quadrature grids); the modules it
    uses)."""
    source, modules = function_of(expr, x, name)
    return (source + f"\n\n{name}.label = {label!r}\n{name}.singular = {tuple(singular)!r}\n",
            modules)


def singular_points(f: sp.Expr, x: sp.Symbol, points: tuple[float, ...]) -> tuple[float, ...]:
    """The points among ``points`` (kinks) next to which f'' is unbounded (x**0.3 at 0,
    sqrt|sin x| at 0): the quadrature grids are graded towards those down to 1e-12 of
    φ's scale. Decided numerically, |f''| at distances 1e-9 and 1e-7 on each side."""
    if not points:
        return ()
    second = numpy_function(derivative(derivative(f, x), x), x)
    out = []
    for b in points:
        near = b + numpy.array([-1e-9, -1e-7, 1e-7, 1e-9])
        with numpy.errstate(all="ignore"):
            values = numpy.abs(second(near))
        if not numpy.all(numpy.isfinite(values)) or values.max() > 1e6:
            out.append(b)
    return tuple(out)


def square_diverges(f: sp.Expr, x: sp.Symbol, points: tuple[float, ...]) -> float | None:
    """A point next to which f**2 is not integrable (|f| ~ |x - b|**-p with p >= 1/2,
    like the derivative of max(x, 0)**0.3 at 0), else None: then E[f(u)**2] is infinite.
    Decided numerically: h·f(b ± h)**2 does not shrink from h = 1e-6 to 1e-12."""
    function = numpy_function(f, x)
    for b in sorted(points, key=abs):
        for side in (-1.0, 1.0):
            with numpy.errstate(all="ignore"):
                g = numpy.array([1e-6, 1e-12]) * function(b + side * numpy.array([1e-6, 1e-12])) ** 2
            if not numpy.all(numpy.isfinite(g)) or (g[1] > 0 and g[1] >= 0.5 * g[0]):
                return b
    return None


class _NumericalClass(type(KernelFunction)):
    """Metaclass of the numerical dual classes. Those are made at run time, one pair per
    activation, so pickle cannot find them by name; a class that carries a ``recipe``
    pickles as that recipe instead (see ``_reduce_class``) and is rebuilt on load."""


def _reduce_class(cls: type):
    """Pickle a run-time dual class as the call that rebuilds it in any process; the
    named base classes of this module pickle by name as usual."""
    recipe = cls.__dict__.get("recipe")
    return cls.__qualname__ if recipe is None else (_rebuild_class, recipe)


# pickle consults copyreg for a class's metaclass before it tries a lookup by name.
copyreg.pickle(_NumericalClass, _reduce_class)

_ROLES = ((), ("moment",), ("dot",), ("dot", "moment"))  # paths from Γ to the four classes

# This process's run-time classes by name. cloudpickle (joblib's process workers) copies a
# class by value unless its module gives it back by name; found here, it goes through
# copyreg like plain pickle, so a worker rebuilds the class its own derivation uses.
_BY_NAME: dict[str, type] = {}


def __getattr__(name: str) -> type:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def _follow(gamma: type, path: tuple[str, ...]) -> type:
    cls = gamma
    for attribute in path:
        cls = getattr(cls, attribute)
    return cls


def _rebuild_class(phi: sp.Expr, x: sp.Symbol, name: str, path: tuple[str, ...]) -> type:
    """The class at ``path`` from Γ of ``numerical_duals(phi, x, name)``; that function is
    cached, so within one process this is the very class that was pickled."""
    return _follow(numerical_duals(phi, x, name)[0], path)


class _NumericalFunction(KernelFunction, metaclass=_NumericalClass):
    """The numerical duals as sympy functions; subclasses carry one φ's data, which the
    printer (ntkdsl.printing) reads: ``tag`` (names its helpers), ``sources`` (those
    helpers' text, the engine's among them) and ``modules`` (what they import)."""

    tag = ""
    label = ""
    activation = ""          # the layer as written (its dual's subscript in formulas)
    of_derivative = False    # the dual of φ' (for the NTK) rather than of φ
    function: sp.Expr | None = None  # f of E[f(u) f(v)] (and its variable x)
    partner: sp.Expr | None = None   # g of a cross dual E[f(u) g(v)]
    x: sp.Symbol | None = None
    sources: ClassVar[dict[str, str]] = {}
    modules: ClassVar[tuple[str, ...]] = ()

    divergent = False        # E[f(u)**2] is infinite: the helpers raise NumericalError
    # E[φ^(i)(u) φ^(j)(v)] of a smooth φ: its SeriesFamily and (i, j), for the one helper
    # that computes a gradient program's duals of a layer together (None: on its own).
    family = None
    orders: tuple[int, int] | None = None

    def _sympystr(self, printer):
        return f"{self.label}({', '.join(printer._print(a) for a in self.args)})"

    def _eval_evalf(self, prec):
        """The dual of numbers (a variance that is the same for every input, after W_std=0
        or a constant activation) computed now by the engine, to its stated bound: the
        derivation folds it to a Float, as it folds closed forms of numbers, instead of
        carrying an ever larger expression of unevaluated duals from layer to layer."""
        if type(self).partner is not None or type(self).divergent:
            return None  # a cross dual (of derivatives), or one the helpers refuse
        try:
            args = [float(a) for a in self.args]
        except TypeError:
            return None
        if not all(numpy.isfinite(args)):
            return None
        return sp.Float(float(self._engine(*args)))

    def _latex(self, printer, exp=None):
        text = (rf"\operatorname{{{self.label}}}\left("
                + ", ".join(printer._print(a) for a in self.args) + r"\right)")
        return rf"{text}^{{{exp}}}" if exp is not None else text


class NumericalDual(_NumericalFunction):
    """Γ(k, q1, q2) = E[f(u) f(v)] by the Hermite series; f is φ (or φ' for Γ̇). Where
    ``sources`` hold ``_pair_<tag>``, Γ and Γ̇ (``dot``) are computed in one pass."""

    nargs = 3
    moment: type | None = None
    dot: type | None = None

    @classmethod
    def eval(cls, k, q1, q2):
        if k == q1 and q1 == q2:  # x = x': correlation exactly 1, a 1-D integral
            return cls.moment(q1)
        return None

    def _engine(self, k, q1, q2):
        return evaluate(type(self), k, q1, q2)

    def fdiff(self, argindex=1):
        if argindex == 1 and self.dot is not None:  # Price: ∂Γ/∂k = E[φ'(u) φ'(v)]
            return self.dot(*self.args)
        return _cross_partial(self, argindex)


class NumericalMoment(_NumericalFunction):
    """E[f(√q z)²]: the dual on the diagonal."""

    nargs = 1

    def _engine(self, q):
        return hermite._hd_moment(_engine_function(type(self)), type(self).points, q)

    def fdiff(self, argindex=1):
        # d/dq E[f(√q z) g(√q z)] = ½ E[(f g)''(u)] = ½ E[f''g + 2 f'g' + f g''] (Price).
        f, g = _functions(self)
        x, (q,) = type(self).x, self.args
        if argindex != 1 or not all(_smooth_enough(h, x, self.points)
                                    for h in (f, g, derivative(f, x), derivative(g, x))):
            raise ArgumentIndexError(self, argindex)
        d = functools.partial(derivative, variable=x)
        return sp.Rational(1, 2) * (cross_classes(d(d(f)), g, x, self.points, self.activation)[1](q)
                                    + 2 * cross_classes(d(f), d(g), x, self.points,
                                                        self.activation)[1](q)
                                    + cross_classes(f, d(d(g)), x, self.points,
                                                    self.activation)[1](q))


def _functions(call) -> tuple[sp.Expr, sp.Expr]:
    """(f, g) of a numerical dual or moment: E[f(u) g(v)] (g = f but for cross duals)."""
    cls = type(call)
    return cls.function, cls.partner if cls.partner is not None else cls.function


def _smooth_enough(f: sp.Expr, x: sp.Symbol, points: tuple[float, ...]) -> bool:
    """Whether f is continuous (no jumps), so that Price's theorem differentiates its dual
    with f' almost everywhere (a jump would add a point mass that derivative drops): f
    written without steps, or f taking one value on both sides of each of φ's kinks
    (Elu's φ' = Heaviside(x) + exp(min(x, 0)) Heaviside(-x) is 1 on both sides of 0)."""
    if not f.has(*_DISCONTINUOUS):
        return True
    for point in points:
        left, right = (complex(f.subs(x, point + side * 1e-9).evalf()) for side in (-1, 1))
        if abs(left - right) > 1e-6 * (1 + abs(left)):
            return False
    return True


def _cross_partial(call, argindex: int) -> sp.Expr:
    """∂/∂k, ∂/∂q1, ∂/∂q2 of E[f(u) g(v)] by Price's theorem: E[f'(u) g'(v)],
    ½ E[f''(u) g(v)], ½ E[f(u) g''(v)] — duals of two functions, by the cross series of
    the same engine (ntkdsl.runtime.hermite._hd_cross)."""
    f, g = _functions(call)
    cls = type(call)
    x = cls.x
    d = functools.partial(derivative, variable=x)
    needed = {1: (f, g), 2: (f, g, d(f)), 3: (f, g, d(g))}[argindex]
    if x is None or not all(_smooth_enough(h, x, cls.points) for h in needed):
        raise ArgumentIndexError(call, argindex)
    if argindex == 1:
        pair, half = (d(f), d(g)), 1
    elif argindex == 2:
        pair, half = (d(d(f)), g), sp.Rational(1, 2)
    else:
        pair, half = (f, d(d(g))), sp.Rational(1, 2)
    dual = cross_classes(*pair, x, cls.points, cls.activation)[0]
    if cls.family is not None and not any(h.has(*_DISCONTINUOUS) for h in pair):
        i, j = cls.orders
        dual.family, dual.orders = cls.family, {1: (i + 1, j + 1), 2: (i + 2, j),
                                                3: (i, j + 2)}[argindex]
    return half * dual(*call.args)


@functools.cache
def cross_classes(f: sp.Expr, g: sp.Expr, x: sp.Symbol, points: tuple[float, ...],
                  name: str) -> tuple[type, type]:
    """(dual, moment) classes of E[f(u) g(v)] and E[f(u) g(u)] for two functions of one
    activation (its derivatives), computed by the engine's cross series with the bound
    |error| <= TOLERANCE x sqrt(E[f(u)^2] E[g(v)^2])."""
    tf, tg = _tag(f), _tag(g)
    tag = _tag(sp.Tuple(f, g))
    sources, modules = {}, []
    for t, fn in ((tf, f), (tg, g)):
        source, used = function_source(f"_f_{t}", fn, x, name, singular_points(fn, x, points))
        sources[f"_f_{t}"] = source
        modules += used
    sources.update({
        "_hd_engine": embedded_source("hermite"),
        f"_dual_{tag}": (f"def _dual_{tag}(k, q1, q2):\n"
                         f"    return _hd_cross(_f_{tf}, _f_{tg}, {points!r}, k, q1, q2)\n"),
        f"_moment_{tag}": (f"def _moment_{tag}(q):\n"
                           f"    return _hd_cross_moment(_f_{tf}, _f_{tg}, {points!r}, q)\n"),
    })
    data = {"tag": tag, "label": f"E[{sp.sstr(f)} * {sp.sstr(g)}][{name}]", "points": points,
            "sources": sources, "modules": tuple(sorted(set(modules))), "activation": name,
            "function": f, "partner": g, "x": x}
    moment = _new_class(f"CrossMoment_{tag}", NumericalMoment, dict(data))
    dual = _new_class(f"CrossDual_{tag}", NumericalDual, dict(data, moment=moment))
    return dual, moment


class SeriesFamily:
    """The duals E[φ^(i)(u) φ^(j)(v)] of one smooth φ's derivatives: a gradient program's
    layer calls several on the same (k, q1, q2), which one helper computes together
    (``_hd_dual_group``; the printer groups the calls by ``key``). ``function(n)`` is
    (name, source, modules) of φ^(n)'s function, named as the dual classes name it."""

    def __init__(self, phi: sp.Expr, x: sp.Symbol, points: tuple[float, ...], name: str):
        self.phi, self.x, self.points, self.name = phi, x, points, name
        self.key = (_tag(phi), points)
        self._derivatives = [phi]

    def function(self, n: int) -> tuple[str, str, tuple[str, ...]]:
        while len(self._derivatives) <= n:
            self._derivatives.append(derivative(self._derivatives[-1], self.x))
        f = self._derivatives[n]
        name = f"_f_{_tag(f)}"
        source, modules = function_source(name, f, self.x, self.name,
                                          singular_points(f, self.x, self.points))
        return name, source, tuple(modules)


def _tag(f: sp.Expr) -> str:
    return hashlib.sha1(sp.srepr(f).encode()).hexdigest()[:12]


def _sources(tag: str, f: sp.Expr, x: sp.Symbol, points: tuple[float, ...],
             layer: str = "") -> tuple[dict[str, str], list[str]]:
    """(helper sources of f's dual and moment, the modules they import)."""
    f_source, modules = function_source(f"_f_{tag}", f, x, layer, singular_points(f, x, points))
    return {
        "_hd_engine": embedded_source("hermite"),
        f"_f_{tag}": f_source,
        f"_dual_{tag}": (f"def _dual_{tag}(k, q1, q2):\n"
                         f"    return _hd_dual(_f_{tag}, {points!r}, k, q1, q2)\n"),
        f"_moment_{tag}": (f"def _moment_{tag}(q):\n"
                           f"    return _hd_moment(_f_{tag}, {points!r}, q)\n"),
    }, modules


def _pair_sources(tag: str, dot: dict[str, str], dot_tag: str,
                  points: tuple[float, ...]) -> dict[str, str]:
    """The helper computing Γ and Γ̇ together, with what it calls of Γ̇'s helpers."""
    return {
        f"_f_{dot_tag}": dot[f"_f_{dot_tag}"],
        f"_pair_{tag}": (f"def _pair_{tag}(k, q1, q2):\n"
                         f"    return _hd_dual_pair(_f_{tag}, _f_{dot_tag}, {points!r}, "
                         "k, q1, q2)\n"),
    }


def _infinite_sources(tag: str, layer: str, point: float) -> dict[str, str]:
    """Γ̇'s helpers when E[φ'(u)**2] diverges: the NTK through the layer is infinite on
    the diagonal (and at zero variance), so asking for it raises NumericalError."""
    message = (f"{layer}: the NTK through this layer is infinite: phi' is not square-"
               f"integrable next to x = {point:g}, so E[phi'(u)^2] (the NTK's diagonal) "
               "diverges; kernels are computed together, so the NNGP is refused too")
    raising = f"    raise _hd_error({message!r})\n"
    return {f"_dual_{tag}": f"def _dual_{tag}(k, q1, q2):\n{raising}",
            f"_moment_{tag}": f"def _moment_{tag}(q):\n{raising}"}


def _classes(f: sp.Expr, x: sp.Symbol, label: str, points,
             extra: dict[str, str] | None = None, layer: str = "", *, activation: str = "",
             of_derivative: bool = False) -> tuple[type, type]:
    tag = _tag(f)
    sources, modules = _sources(tag, f, x, points, layer)
    sources.update(extra or {})
    data = {"tag": tag, "label": label, "points": points, "sources": sources,
            "modules": tuple(modules), "activation": activation, "of_derivative": of_derivative,
            "function": f, "x": x}
    moment = _new_class(f"Moment_{tag}", NumericalMoment, dict(data))
    dual = _new_class(f"Dual_{tag}", NumericalDual, dict(data, moment=moment))
    return dual, moment


def _new_class(name: str, base: type, data: dict) -> type:
    """A run-time class under a name no other class of this process has (one φ can come
    with several labels, e.g. Tanh and Fn("tanh(x)"), each its own classes), registered
    for lookup by name."""
    unique, number = name, 1
    while unique in _BY_NAME:
        number += 1
        unique = f"{name}_{number}"
    cls = _BY_NAME[unique] = _NumericalClass(unique, (base,), data)
    return cls


# Jumps in φ make E[φ'φ'] (with the point masses of φ' dropped) differ from ∂Γ/∂k.
_DISCONTINUOUS = (sp.Heaviside, sp.sign, sp.Piecewise, sp.floor, sp.ceiling, sp.frac)


@cache
def numerical_duals(phi: sp.Expr, x: sp.Symbol, name: str) -> tuple[type, type]:
    """(Γ, Γ̇) sympy function classes of (k, q1, q2) for activation φ; Γ differentiates
    in k to Γ̇ (Price's theorem), both computed by the Hermite-series engine. For a
    continuous φ, Γ̇ is also the derivative of Γ's series, so one helper computes both."""
    points = kinks(phi, x)
    phi_dot = derivative(phi, x)
    infinite = square_diverges(phi_dot, x, points)
    dot, _ = _classes(phi_dot, x, f"Gammadot[{name}]", points,
                      None if infinite is None else _infinite_sources(_tag(phi_dot), name, infinite),
                      f"{name} (its derivative, for the NTK)", activation=name,
                      of_derivative=True)
    pair = None if phi.has(*_DISCONTINUOUS) or infinite is not None else _pair_sources(
        _tag(phi), dot.sources, dot.tag, points)
    gamma, _ = _classes(phi, x, f"Gamma[{name}]", points, pair, name, activation=name)
    gamma.dot = dot
    if pair is not None and not derivative(phi_dot, x).has(*_DISCONTINUOUS):
        family = SeriesFamily(phi, x, points, name)  # the tangents' duals, in one call
        gamma.family, gamma.orders, dot.family, dot.orders = family, (0, 0), family, (1, 1)
    dot.divergent = dot.moment.divergent = infinite is not None
    gamma.modules = tuple(sorted({*gamma.modules, *dot.modules}))  # _pair_ calls Γ̇'s f
    for path in _ROLES:  # how pickle rebuilds each class (_reduce_class)
        _follow(gamma, path).recipe = (phi, x, name, path)
    return gamma, dot


def _engine_function(cls: type):
    name = f"_f_{cls.tag}"
    if name not in _FUNCTIONS:
        _FUNCTIONS[name] = compile_source(cls.sources[name], cls.modules)[name]
    return _FUNCTIONS[name]


def evaluate(cls: type, k, q1, q2):
    """Numbers from a numerical dual class without code generation (tests, benchmarks)."""
    return hermite._hd_dual(_engine_function(cls), cls.points, k, q1, q2)


def evaluate_pair(cls: type, k, q1, q2):
    """(Γ, Γ̇) from the joint route of a continuous φ's dual class (see _hd_dual_pair)."""
    if f"_pair_{cls.tag}" not in cls.sources:
        raise ValueError(f"{cls.label} has no joint route (φ is not continuous)")
    return hermite._hd_dual_pair(_engine_function(cls), _engine_function(cls.dot),
                                 cls.points, k, q1, q2)


def bound_note(name: str) -> str:
    """What net.formula() states for the numerical route."""
    return (f"numerical: Hermite series in the correlation, up to {MAX_TERMS} terms per "
            f"entry, coefficients by quadrature once per distinct variance; "
            f"|error| <= {TOLERANCE:.0e} x sqrt(E[phi(u)^2] E[phi(v)^2]) "
            "(Cauchy-Schwarz/Parseval tail bound, checked per entry)")
