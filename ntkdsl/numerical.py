"""The numerical route for activations without a closed-form dual: a Hermite series in the
correlation with coefficients computed once per distinct variance, and a stated error bound.

With u = √q1·z1 and v = √q2·(c·z1 + √(1−c²)·z2), Mehler's formula gives

    Γ(q1, q2, k) = E[φ(u) φ(v)] = Σ_n a_n(q1) a_n(q2) c^n,   a_n(q) = E[φ(√q z) h_n(z)],

with h_n = He_n / √n! the orthonormal Hermite polynomials. The a_n are one-dimensional
integrals of one variance each, so a kernel matrix needs them once per row, not per entry;
an entry then costs one multiply-add per term. Γ̇ = E[φ'(u) φ'(v)] is the same series for φ'
(φ' from sympy), so it is as accurate as Γ.

Error bound (Cauchy–Schwarz and Parseval): truncating after T terms leaves at most
|c|^T · sqrt(t(q1, T) t(q2, T)) with t(q, T) = E[φ(√q z)²] − Σ_{n<T} a_n(q)², which the
engine computes alongside the coefficients. Each entry is summed until that bound is
below 1e-11 × sqrt(E[φ(u)²] E[φ(v)²]); entries with |c| = 1 (collinear inputs) are
one-dimensional integrals and are computed directly. If an entry cannot reach the bound
within the available terms (very large variances with |c| near 1), a warning names the
bound reached.

The engine below is Python source (numpy only) so that generated modules carry it verbatim:
this module executes the same text, so library and standalone module compute the same
numbers.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy
import sympy as sp

from .symbolic import KernelFunction

TOLERANCE = 1e-11   # relative truncation bound per entry (the route's stated error)
MAX_TERMS = 320     # Hermite terms computed per variance

ENGINE_SOURCE = '''
_HD_TOL = %(tol)r
_HD_TERMS = %(terms)d
_HD_COLLINEAR = 1e-12
_HD_GL_X, _HD_GL_W = numpy.polynomial.legendre.leggauss(16)
# Fixed panels of width 1/4 on [-14, 14] (edge at 0): exp(-z**2/4) bounds every h_n term
# beyond, below 1e-21.
_HD_EDGES = numpy.linspace(-14.0, 14.0, 113)
# The fixed grid resolves φ(√q z) while √q is at most this (features of φ at scale 1 in
# x are 1/√q wide in z); beyond it, and for kinks away from 0, panels follow φ's scale.
_HD_FIXED_SCALE = 10.0


def _hd_rule(edges):
    """Composite 16-point Gauss-Legendre nodes and N(0, 1)-weights over panels between
    consecutive edges (last axis)."""
    lo, hi = edges[..., :-1, None], edges[..., 1:, None]
    half = (hi - lo) / 2
    z = (lo + hi) / 2 + half * _HD_GL_X
    w = half * _HD_GL_W * numpy.exp(-z * z / 2) / numpy.sqrt(2 * numpy.pi)
    shape = edges.shape[:-1] + (-1,)
    return z.reshape(shape), w.reshape(shape)


def _hd_hermite(z, count):
    """h_n(z) = He_n(z)/sqrt(n!) for n < count on a new last axis (stable recurrence)."""
    out = numpy.empty(z.shape + (count,))
    out[..., 0] = 1.0
    out[..., 1] = z
    for n in range(1, count - 1):
        out[..., n + 1] = (z * out[..., n] - numpy.sqrt(n) * out[..., n - 1]) / numpy.sqrt(n + 1)
    return out


def _hd_values(f, x):
    with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return numpy.broadcast_to(numpy.asarray(f(x), dtype=float), x.shape)


def _hd_fixed(f, s):
    """Coefficients and second moments for scales s = sqrt(q) on the shared grid."""
    if "table" not in _HD_CACHE:  # the grid and its weighted h_n are the same every call
        z, w = _hd_rule(_HD_EDGES)
        _HD_CACHE["table"] = (z, w, w[:, None] * _hd_hermite(z, _HD_TERMS))
    z, w, weighted = _HD_CACHE["table"]
    values = _hd_values(f, s[:, None] * z)
    return values @ weighted, (values * values) @ w


def _hd_graded(f, s, kinks):
    """The same on grids refined around each kink of φ (and 0) at φ's own scale."""
    steps = numpy.arange(-24, 25) * 0.5
    points = numpy.concatenate([(b + steps)[None, :] / s[:, None] for b in (0.0,) + kinks],
                               axis=1)
    edges = numpy.sort(numpy.concatenate(
        [numpy.broadcast_to(_HD_EDGES, (len(s), len(_HD_EDGES))),
         numpy.clip(points, -14.0, 14.0)], axis=1), axis=1)
    coefficients = numpy.empty((len(s), _HD_TERMS))
    moments = numpy.empty(len(s))
    for i in range(len(s)):  # one variance at a time bounds memory; rows are few here
        z, w = _hd_rule(edges[i])
        values = _hd_values(f, s[i] * z)
        coefficients[i] = (values * w) @ _hd_hermite(z, _HD_TERMS)
        moments[i] = (values * values) @ w
    return coefficients, moments


_HD_CACHE = {}


def _hd_coefficients(f, kinks, q):
    """(a, m, tails): a[i, n] = E[f(sqrt(q_i) z) h_n(z)], m[i] = E[f(sqrt(q_i) z)**2] and
    tails[i, T] = (m[i] - sum_{n<T} a[i, n]**2) / m[i], the relative Parseval remainder.
    Computed once per distinct variance: kernels are evaluated in blocks that share
    their rows' and columns' variances."""
    key = (f, kinks, q.tobytes())
    recent = _HD_CACHE.setdefault("recent", {})
    if key in recent:  # chunks of one block share their columns' variances
        return recent[key]
    if len(recent) > 64:
        recent.clear()
    recent[key] = result = _hd_lookup(f, kinks, q)
    return result


def _hd_lookup(f, kinks, q):
    """_hd_coefficients through the per-variance cache."""
    cache = _HD_CACHE.setdefault((f, kinks), {})
    if len(cache) > 200000:  # bound memory (about 5 kB per variance)
        cache.clear()
    missing = numpy.array([v for v in q.tolist() if v not in cache], dtype=float)
    if missing.size:
        for v, a, m, t in zip(missing.tolist(), *_hd_compute(f, kinks, missing)):
            cache[v] = (a, m, t)
    rows = [cache[v] for v in q.tolist()]
    return (numpy.array([r[0] for r in rows]), numpy.array([r[1] for r in rows]),
            numpy.array([r[2] for r in rows]))


def _hd_compute(f, kinks, q):
    """_hd_coefficients without the cache."""
    s = numpy.sqrt(numpy.maximum(q, 0.0))
    a = numpy.empty((len(s), _HD_TERMS))
    m = numpy.empty(len(s))
    fixed = (s <= _HD_FIXED_SCALE) & (not any(b != 0 for b in kinks))
    if fixed.any():
        a[fixed], m[fixed] = _hd_fixed(f, s[fixed])
    if (~fixed).any():
        a[~fixed], m[~fixed] = _hd_graded(f, s[~fixed], kinks)
    partial = numpy.concatenate([numpy.zeros((len(s), 1)), numpy.cumsum(a * a, axis=1)], axis=1)
    scale = numpy.where(m > 0, m, 1.0)
    tails = numpy.maximum((m[:, None] - partial) / scale[:, None], 0.0)
    # The remainder can only shrink; rounding must not make a later bound look larger.
    tails = numpy.minimum.accumulate(tails, axis=1)
    return a, m, tails


def _hd_moment(f, kinks, q):
    """E[f(sqrt(q) z)**2] elementwise: the dual at correlation 1 (x = x')."""
    q = numpy.asarray(q, dtype=float)
    values, inverse = numpy.unique(q.ravel(), return_inverse=True)
    return _hd_coefficients(f, kinks, values)[1][inverse].reshape(q.shape)


def _hd_terms_needed(bound, c_abs):
    """Smallest T with c_abs**T * bound[T] <= _HD_TOL (len(bound) if none)."""
    with numpy.errstate(divide="ignore"):
        logs = numpy.log(numpy.maximum(bound, 1e-300))
        ok = numpy.log(numpy.maximum(c_abs, 1e-300))[..., None] * numpy.arange(bound.shape[-1]) \\
            + logs <= numpy.log(_HD_TOL)
    return numpy.where(ok.any(axis=-1), ok.argmax(axis=-1), bound.shape[-1])


def _hd_horner(a1, a2, c, stop):
    """sum_{n<stop} a1[:, n] a2[:, n] c**n for rows of a1 and columns of a2 (2-D c);
    for an odd or even φ the vanishing half of the terms is skipped (Horner in c**2)."""
    sizes = numpy.abs(a1[:, :stop]).max(axis=0) * numpy.abs(a2[:, :stop]).max(axis=0)
    live = numpy.nonzero(sizes > 1e-17 * sizes.max())[0] if sizes.max() > 0 else [0]
    step = 2 if len(live) > 1 and numpy.all(live %% 2 == live[0] %% 2) else 1
    first = int(live[0]) if step == 2 else 0
    power = c * c if step == 2 else c
    acc = numpy.zeros(c.shape)
    term = numpy.empty(c.shape)
    for n in range(stop - 1 - (stop - 1 - first) %% step, first - 1, -step):
        acc *= power
        numpy.multiply(a1[:, n, None], a2[None, :, n], out=term)
        acc += term
    return acc * c ** first if first else acc


def _hd_entries(a1, a2, c, start, stop):
    """sum_{start<=n<stop} a1[e, n] a2[e, n] c[e]**n for a list of entries e."""
    total = numpy.zeros(c.shape)
    power = c ** start
    for n in range(start, stop):
        total += a1[:, n] * a2[:, n] * power
        power = power * c
    return total


def _hd_collinear(f, kinks, q1, q2, sign):
    """E[f(sqrt(q1) z) f(sign sqrt(q2) z)] entrywise: the dual at correlation +-1.
    Entries whose scales the shared grid resolves are integrated together on it."""
    s1, s2 = numpy.sqrt(q1), numpy.sqrt(q2)
    out = numpy.empty(q1.shape)
    on_grid = (numpy.maximum(s1, s2) <= _HD_FIXED_SCALE) & (not any(b != 0 for b in kinks))
    if on_grid.any():
        if "table" not in _HD_CACHE:
            _hd_fixed(f, numpy.ones(1))  # builds the shared grid
        z, w, _ = _HD_CACHE["table"]
        left = _hd_values(f, s1[on_grid, None] * z)
        right = _hd_values(f, (sign * s2)[on_grid, None] * z)
        out[on_grid] = (left * right) @ w
    for i in numpy.nonzero(~on_grid)[0]:  # large scales: panels follow φ's features
        scale = max(s1[i], s2[i])
        points = [(b + numpy.arange(-48, 49) * 0.25) / t for b in (0.0,) + kinks
                  for t in (s1[i], s2[i]) if t > 0]
        edges = numpy.sort(numpy.concatenate([_HD_EDGES] + ([numpy.clip(
            numpy.concatenate(points), -14, 14)] if scale > 1 else [])))
        z, w = _hd_rule(edges)
        out[i] = (_hd_values(f, s1[i] * z) * _hd_values(f, sign[i] * s2[i] * z)) @ w
    return out


def _hd_correlation(k, q1, q2):
    norm = numpy.sqrt(q1 * q2)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        return numpy.clip(numpy.where(norm > 0, k / numpy.where(norm > 0, norm, 1), 0.0), -1, 1)


def _hd_flat(f, kinks, k, q1, q2, start=0, a1=None, a2=None, t1=None, t2=None):
    """The series from term ``start`` on for entries given as flat arrays, each summed
    until its own bound is met; collinear entries (|c| = 1) by direct integration."""
    if a1 is None:
        u, inverse = numpy.unique(numpy.concatenate([q1, q2]), return_inverse=True)
        a, _, t = _hd_coefficients(f, kinks, u)
        a1, a2 = a[inverse[:len(q1)]], a[inverse[len(q1):]]
        t1, t2 = t[inverse[:len(q1)]], t[inverse[len(q1):]]
    c = _hd_correlation(k, q1, q2)
    out = numpy.zeros(c.shape)
    # Within rounding of collinear: the 1-D integral at c = +-1 (error ~ (1 - |c|) dΓ/dc).
    collinear = numpy.abs(c) >= 1.0 - _HD_COLLINEAR
    complete = collinear.copy()  # entries computed whole, not as a remainder from start
    series = ~collinear
    if series.any():
        tails = numpy.sqrt(t1[series] * t2[series])
        need = _hd_terms_needed(tails, numpy.abs(c[series]))
        stop = int(min(need.max(), _HD_TERMS))
        part = _hd_entries(a1[series], a2[series], c[series], start, max(start, stop))
        _hd_fix(f, kinks, need, q1[series], q2[series], c[series], part)
        out[series] = part
        complete[series] = need >= _HD_TERMS
    if collinear.any():
        out[collinear] = _hd_collinear(f, kinks, q1[collinear], q2[collinear],
                                       numpy.sign(c[collinear]))
    return out, complete


def _hd_dual(f, kinks, k, q1, q2):
    """E[f(u) f(v)] for (u, v) ~ N(0, [[q1, k], [k, q2]]), elementwise over broadcast
    arrays. In the kernel-matrix layout (q1 a column, q2 a row) most entries are summed
    together by Horner to the number of terms the 99th percentile of |c| needs; the
    entries that bound does not cover get their remaining terms individually."""
    k, q1, q2 = (numpy.asarray(v, dtype=float) for v in (k, q1, q2))
    shape = numpy.broadcast_shapes(k.shape, q1.shape, q2.shape)
    matrix = (len(shape) == 2 and q1.shape in ((shape[0], 1), (1, 1))
              and q2.shape in ((1, shape[1]), (1, 1)))
    if not matrix:
        k, q1, q2 = (numpy.broadcast_to(v, shape).ravel() for v in (k, q1, q2))
        return _hd_flat(f, kinks, k, q1, q2)[0].reshape(shape)
    q1 = numpy.broadcast_to(q1, (shape[0], 1)).ravel()
    q2 = numpy.broadcast_to(q2, (1, shape[1])).ravel()
    u1, i1 = numpy.unique(q1, return_inverse=True)
    u2, i2 = numpy.unique(q2, return_inverse=True)
    a1, _, t1 = (v[i1.ravel()] for v in _hd_coefficients(f, kinks, u1))
    a2, _, t2 = (v[i2.ravel()] for v in _hd_coefficients(f, kinks, u2))
    c = _hd_correlation(numpy.broadcast_to(k, shape), q1[:, None], q2[None, :])
    bound = numpy.maximum(t1.max(axis=0), t2.max(axis=0))
    c_abs = numpy.abs(c)
    sample = c_abs.ravel()[:: max(1, c_abs.size // 20000)]
    bulk = max(1, min(int(_hd_terms_needed(bound, numpy.quantile(sample, 0.99))), _HD_TERMS))
    out = _hd_horner(a1, a2, c, bulk)
    limit = (_HD_TOL / bound[bulk]) ** (1.0 / bulk) if bulk < _HD_TERMS and \
        bound[bulk] > _HD_TOL else (2.0 if bulk < _HD_TERMS else -1.0)
    rows, cols = numpy.nonzero(c_abs > limit)
    if rows.size:
        rest, complete = _hd_flat(f, kinks, numpy.broadcast_to(k, shape)[rows, cols],
                                  q1[rows], q2[cols], bulk, a1[rows], a2[cols],
                                  t1[rows], t2[cols])
        out[rows, cols] = numpy.where(complete, rest, out[rows, cols] + rest)
    return out


def _hd_edges(centres, widths):
    """Sorted panel edges: the fixed grid plus, around each centre, 97 edges a quarter
    of its width apart (the scale of φ's features there), clipped to the grid's range."""
    steps = numpy.arange(-48, 49) * 0.25
    extra = [numpy.clip(c[..., None] + steps * w[..., None], -14.0, 14.0)
             for c, w in zip(centres, widths)]
    base = numpy.broadcast_to(_HD_EDGES, extra[0].shape[:-1] + _HD_EDGES.shape)
    return numpy.sort(numpy.concatenate([base] + extra, axis=-1), axis=-1)


def _hd_direct(f, kinks, q1, q2, c):
    """E[f(u) f(v)] for one entry by nested composite quadrature, refined where f(u), or
    the conditional mean of f(v), changes on φ's own scale: the route for the few entries
    (large variance, |c| near 1) where the series cannot certify its bound."""
    s1, s2, s = numpy.sqrt(q1), numpy.sqrt(q2), numpy.sqrt(max(1.0 - c * c, 0.0))
    points = (0.0,) + kinks
    one = numpy.ones(())
    outer = _hd_edges([b / s1 * one for b in points] + [b / (s2 * max(abs(c), 1e-300)) * one
                                                     for b in points],
                      [one / s1] * len(points) + [one / (s2 * max(abs(c), 1e-300))] * len(points))
    z1, w1 = _hd_rule(outer)
    # Inner variable xi: v = s2 (c z1 + s xi); f's features sit at xi = (b/s2 - c z1)/s.
    inner = _hd_edges([(b / s2 - c * z1) / s for b in points],
                      [numpy.full(z1.shape, 1.0 / (s2 * s))] * len(points))
    xi, w2 = _hd_rule(inner)
    smoothed = (_hd_values(f, s2 * (c * z1[:, None] + s * xi)) * w2).sum(axis=1)
    return float((_hd_values(f, s1 * z1) * smoothed) @ w1)


def _hd_fix(f, kinks, need, q1, q2, c, out):
    """Replace the entries whose series bound is not met by direct quadrature."""
    for i in numpy.nonzero(need >= _HD_TERMS)[0]:  # only near-collinear, large-variance
        out[i] = _hd_direct(f, kinks, q1[i], q2[i], c[i])
''' % {"tol": TOLERANCE, "terms": MAX_TERMS}

_ENGINE: dict = {"numpy": numpy}
exec(compile(ENGINE_SOURCE, "<ntkdsl numerical engine>", "exec"), _ENGINE)  # our own text


def _printer():
    """SciPy printer whose max/min are elementwise numpy calls (sympy's default for Max
    needs functools, which generated modules do not import)."""
    from sympy.printing.numpy import SciPyPrinter

    class _Printer(SciPyPrinter):
        def _fold(self, name, args):
            out = self._print(args[0])
            for arg in args[1:]:
                out = f"numpy.{name}({out}, {self._print(arg)})"
            return out

        def _print_Max(self, expr):
            return self._fold("maximum", expr.args)

        def _print_Min(self, expr):
            return self._fold("minimum", expr.args)

    return _Printer({"fully_qualified_modules": True, "inline": True})


_NONSMOOTH = (sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign, sp.Piecewise)


def kinks(phi: sp.Expr, x: sp.Symbol) -> tuple[float, ...]:
    """Real points where φ (or a derivative) is not smooth: zeros of the arguments of
    max/min/abs/step/sign. Quadrature panels are refined there."""
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
            try:
                roots = sp.solve(sp.Eq(arg, 0), x)
            except (NotImplementedError, TypeError, ValueError):
                roots = []
            points |= {float(r) for r in roots if r.is_real and r.is_finite}
    return tuple(sorted(points))


def derivative(phi: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """φ' almost everywhere: the point masses of step/sign derivatives are dropped, as
    automatic differentiation of a finite network drops them."""
    return sp.diff(phi, x).replace(sp.DiracDelta, lambda *args: sp.S.Zero)


def function_source(name: str, expr: sp.Expr, x: sp.Symbol) -> str:
    """``def name(x): return <expr printed for numpy>``, broadcasting constants."""
    body = _printer().doprint(expr)
    return f"def {name}({x}):\n    return {body} + 0.0 * {x}\n"


class _NumericalFunction(KernelFunction):
    """Shared printing for the numerical duals; subclasses carry one φ's data."""

    tag = ""
    label = ""
    helper_prefix = ""

    def _call(self, printer) -> str:
        args = ", ".join(printer._print(a) for a in self.args)
        return f"{self.helper_prefix}{self.tag}({args})"

    def _numpycode(self, printer):
        return self._call(printer)

    _pythoncode = _numpycode

    def _sympystr(self, printer):
        return f"{self.label}({', '.join(printer._print(a) for a in self.args)})"

    def _latex(self, printer, exp=None):
        text = (rf"\operatorname{{{self.label}}}\left("
                + ", ".join(printer._print(a) for a in self.args) + r"\right)")
        return rf"{text}^{{{exp}}}" if exp is not None else text


class NumericalDual(_NumericalFunction):
    """Γ(k, q1, q2) = E[f(u) f(v)] by the Hermite series; f is φ (or φ' for Γ̇)."""

    nargs = 3
    helper_prefix = "_dual_"
    moment: type | None = None
    dot: type | None = None

    @classmethod
    def eval(cls, k, q1, q2):
        if k == q1 and q1 == q2:  # x = x': correlation exactly 1, a 1-D integral
            return cls.moment(q1)
        return None

    def fdiff(self, argindex=1):
        if argindex == 1 and self.dot is not None:  # Price: ∂Γ/∂k = E[φ'(u) φ'(v)]
            return self.dot(*self.args)
        raise sp.ArgumentIndexError(self, argindex)

    def helpers(self) -> dict[str, str]:
        return self.sources


class NumericalMoment(_NumericalFunction):
    """E[f(√q z)²]: the dual on the diagonal."""

    nargs = 1
    helper_prefix = "_moment_"

    def helpers(self) -> dict[str, str]:
        return self.sources


def _sources(tag: str, f: sp.Expr, x: sp.Symbol, points: tuple[float, ...]) -> dict[str, str]:
    return {
        "_hd_engine": ENGINE_SOURCE,
        f"_f_{tag}": function_source(f"_f_{tag}", f, x),
        f"_dual_{tag}": (f"def _dual_{tag}(k, q1, q2):\n"
                         f"    return _hd_dual(_f_{tag}, {points!r}, k, q1, q2)\n"),
        f"_moment_{tag}": (f"def _moment_{tag}(q):\n"
                           f"    return _hd_moment(_f_{tag}, {points!r}, q)\n"),
    }


def _classes(f: sp.Expr, x: sp.Symbol, label: str, points) -> tuple[type, type]:
    tag = hashlib.sha1(sp.srepr(f).encode()).hexdigest()[:12]
    data = {"tag": tag, "label": label, "points": points, "sources": _sources(tag, f, x, points)}
    moment = type(f"Moment_{tag}", (NumericalMoment,), dict(data))
    dual = type(f"Dual_{tag}", (NumericalDual,), dict(data, moment=moment))
    return dual, moment


@lru_cache(maxsize=None)
def numerical_duals(phi: sp.Expr, x: sp.Symbol, name: str) -> tuple[type, type]:
    """(Γ, Γ̇) sympy function classes of (k, q1, q2) for activation φ; Γ differentiates
    in k to Γ̇ (Price's theorem), both computed by the Hermite-series engine."""
    points = kinks(phi, x)
    dot, _ = _classes(derivative(phi, x), x, f"Gammadot[{name}]", points)
    gamma, _ = _classes(phi, x, f"Gamma[{name}]", points)
    gamma.dot = dot
    return gamma, dot


def evaluate(cls: type, k, q1, q2):
    """Numbers from a numerical dual class without code generation (tests, benchmarks)."""
    name = f"_f_{cls.tag}"
    if name not in _ENGINE:
        exec(cls.sources[name], _ENGINE)  # printed sympy, not user text
    return _ENGINE["_hd_dual"](_ENGINE[name], cls.points, k, q1, q2)


def bound_note(name: str) -> str:
    """What net.formula() states for the numerical route."""
    return (f"numerical: Hermite series in the correlation, up to {MAX_TERMS} terms per "
            f"entry, coefficients by quadrature once per distinct variance; "
            f"|error| <= {TOLERANCE:.0e} x sqrt(E[phi(u)^2] E[phi(v)^2]) "
            "(Cauchy-Schwarz/Parseval tail bound, checked per entry)")
