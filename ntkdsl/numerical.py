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

Error bound (Cauchy–Schwarz and Parseval): truncating after T terms leaves at most
|c|^T · sqrt(t(q1, T) t(q2, T)) with t(q, T) = E[φ(√q z)²] − Σ_{n<T} a_n(q)², which the
engine computes alongside the coefficients. Each entry is summed until that bound is
below 1e-11 × sqrt(E[φ(u)²] E[φ(v)²]); entries with |c| = 1 (collinear inputs) are
one-dimensional integrals and are computed directly. An entry that cannot reach the bound
within the available terms (large variances with |c| near 1) is computed by nested
quadrature.

At any variance: every quadrature grid is graded towards φ's features (0 and its kinks) at
φ's own scale, so a variance q costs O(log q) nodes (_hd_feature_edges); the nested
quadrature runs in blocks of bounded memory under a node budget. Moments that are not
finite in float64 raise NumericalError naming the layer (_hd_check), never inf/NaN.

The engine below is Python source (numpy only) so that generated modules carry it verbatim:
this module executes the same text, so library and standalone module compute the same
numbers.
"""
from __future__ import annotations

import copyreg
import hashlib
from functools import cache

import numpy
import sympy as sp

from .activations import derivative
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
    """f at x (any shape). Where the printed formula overflows in an intermediate (exp(-x)
    over (1 + exp(-x))**2 at x = -800), f is linear to rounding (its exponentials are
    below 1e-300 there): it is extended from +-700 (_hd_asymptote). Values that stay
    non-finite are genuine, for _hd_check to report."""
    with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
        values = numpy.broadcast_to(numpy.asarray(f(x), dtype=float), x.shape)
        bad = ~numpy.isfinite(values) & (numpy.abs(x) > _HD_LINEAR_FROM)
        if bad.any():
            values = values.copy()
            values[bad] = _hd_asymptote(f, x[bad])
    return values


_HD_LINEAR_FROM = 700.0  # exp(-700) ~ 1e-304: beyond, exp terms of a sum are rounding


def _hd_asymptote(f, x):
    """f's straight-line extension beyond +-_HD_LINEAR_FROM, where f is linear on
    [+-698, +-700] to 1e-12 (a sum of polynomials of degree <= 1 and exponentially small
    terms, or below 1e-280); inf where it is not (a genuine overflow is not hidden)."""
    out = numpy.full(x.shape, numpy.inf)
    for side in (-1.0, 1.0):
        here = numpy.sign(x) == side
        if not here.any():
            continue
        y = numpy.asarray(f(side * (_HD_LINEAR_FROM - numpy.arange(3.0))), dtype=float)
        y = numpy.broadcast_to(y, (3,))
        slope, curve = y[0] - y[1], y[0] - 2 * y[1] + y[2]
        # (an absolute 1e-280 accepts exponential tails that are rounding there already)
        if numpy.all(numpy.isfinite(y)) and abs(curve) <= 1e-12 * (abs(y[0]) + abs(slope)) + 1e-280:
            out[here] = y[0] + slope * (numpy.abs(x[here]) - _HD_LINEAR_FROM)
    return out


_HD_SMALLER = "Smaller weight or bias variances (W_std, b_std) keep the pre-activations moderate."


def _hd_error(message, hint=None):
    """ntkdsl's NumericalError when ntkdsl is there (the library), else ArithmeticError
    (its base class) in a standalone module, which imports nothing else."""
    try:
        from ntkdsl.errors import NumericalError
    except ImportError:
        return ArithmeticError(message if hint is None else f"{message}\\n{hint}")
    return NumericalError(message, hint=hint)


def _hd_check(f, q, values, what):
    """Raise _hd_error naming f's layer where ``values`` (per variance q) are not finite."""
    bad = ~numpy.isfinite(values)
    if bad.any():
        at = numpy.asarray(q, dtype=float).ravel()[numpy.argmax(bad.reshape(len(q), -1).any(axis=1))]
        raise _hd_error(f"{getattr(f, 'label', 'activation')}: {what} is not finite in float64 at "
                        f"pre-activation variance q = {at:.6g} (the numerical route needs "
                        "E[phi(u)^2] finite)", _HD_SMALLER)


def _hd_fixed(f, s):
    """Coefficients and second moments for scales s = sqrt(q) on the shared grid."""
    if "table" not in _HD_CACHE:  # the grid and its weighted h_n are the same every call
        z, w = _hd_rule(_HD_EDGES)
        _HD_CACHE["table"] = (z, w, w[:, None] * _hd_hermite(z, _HD_TERMS))
    z, w, weighted = _HD_CACHE["table"]
    values = _hd_values(f, s[:, None] * z)
    return values @ weighted, (values * values) @ w


def _hd_grid_resolves(f, kinks):
    """Whether the shared grid can serve φ (at scales up to _HD_FIXED_SCALE): its kinks
    must be at 0, an edge of the grid, and none singular."""
    return not any(b != 0 for b in kinks) and not getattr(f, "singular", ())


def _hd_graded(f, s, kinks):
    """The same on grids graded towards each feature of φ (0 and its kinks) at φ's own
    scale (_hd_feature_edges): the node count grows with log(q), not with q."""
    coefficients = numpy.empty((len(s), _HD_TERMS))
    moments = numpy.empty(len(s))
    for i in range(len(s)):  # one variance at a time bounds memory; rows are few here
        edges = _hd_feature_edges(_HD_EDGES, _hd_features(f, kinks, s[i], 0.0))
        z, w = _hd_rule(edges)
        values = _hd_values(f, s[i] * z)
        coefficients[i] = _hd_project(values * w, z)
        moments[i] = (values * values) @ w
    return coefficients, moments


def _hd_project(weighted, z):
    """sum over nodes of weighted · h_n(z), n < _HD_TERMS, in blocks of nodes (the h_n
    table of a block stays below 2**18 numbers)."""
    block = max(1, 2 ** 18 // _HD_TERMS)
    return sum(weighted[i:i + block] @ _hd_hermite(z[i:i + block], _HD_TERMS)
               for i in range(0, len(z), block))


def _hd_features(f, kinks, scale, shift):
    """[(centre, width, singular)] of φ(scale·t + shift) in t: φ's features (0, where its
    nonlinearity is, and its kinks) sit at t = (b - shift)/scale and are 1/scale wide;
    f.singular lists the kinks where a derivative is unbounded (x**0.3 at 0)."""
    singular = getattr(f, "singular", ())
    width = 1.0 / numpy.maximum(numpy.abs(scale), 1e-300)
    out = []
    for b in sorted({0.0, *kinks}):
        centre = (b - shift) * width * numpy.sign(scale)
        if b == 0 or numpy.any(numpy.abs(centre) <= 15.0):  # beyond, the Gaussian weight is nil
            out.append((centre, width, b in singular))
    return out


# Panel edges around a feature of width w at distances w·2**j, j >= -1, up to 1 (geometric
# grading: a smooth φ varies on a scale that grows with the distance from its feature, so
# a panel as wide as its distance keeps 16-point Gauss-Legendre exact to rounding; beyond
# a distance of 1 the base grid resolves φ) and, towards a singular kink, down to w·2**-28
# (|x|**0.3 then integrates to 1e-12).
_HD_FIRST_STEP, _HD_SINGULAR_STEP = -1, -28


def _hd_feature_edges(base, features):
    """Sorted edges: ``base`` (last axis) plus graded edges around every feature (centre
    and width arrays broadcasting against base's leading axes), clipped to base's range.
    Per feature at most 2 · (41 + log2(1/width)) edges: the count grows with log(q)."""
    lo, hi = base[..., :1], base[..., -1:]
    parts = [base]
    for centre, width, singular in features:
        width = numpy.asarray(width, dtype=float)
        top = max(_HD_FIRST_STEP, int(numpy.ceil(numpy.log2(1.0 / width.min()))))
        steps = 2.0 ** numpy.arange(_HD_SINGULAR_STEP if singular else _HD_FIRST_STEP, top + 1)
        distance = numpy.minimum(width[..., None] * steps, 1.0)
        centre = numpy.asarray(centre, dtype=float)[..., None]
        parts += [numpy.clip(centre + distance, lo, hi), numpy.clip(centre - distance, lo, hi),
                  numpy.clip(centre, lo, hi)]
    shape = numpy.broadcast_shapes(*(p.shape[:-1] for p in parts))
    edges = numpy.concatenate([numpy.broadcast_to(p, shape + p.shape[-1:]) for p in parts], axis=-1)
    edges = numpy.sort(edges, axis=-1)
    return numpy.unique(edges) if edges.ndim == 1 else edges


_HD_CACHE = {}
# Bulk truncations the cost model considers, and what one entry left to the per-entry path
# costs in units of one Horner pass over one entry (gathers and its remaining terms; on
# the N=4096 benchmark values from 400 to 1000 were equally fast, 150 and 3000 slower).
_HD_BULK_MAX = _HD_TERMS
_HD_OUTLIER_COST = 600.0


def _hd_table(f, kinks, q):
    """(table, rows): the per-φ table of coefficients and rows[i] its row for variance
    q[i] (1-D). Rows are computed once per distinct variance and appended. A table is
    never changed: an extension is linked as its successor, and the first one linked
    wins (list.append is atomic), so tables form one chain in which rows stay valid and
    threads need no lock (a losing thread computed some rows twice and retries)."""
    table = _HD_CACHE.get((f, kinks))
    if table is None or len(table["m"]) > 200000:  # bound memory (5 kB per variance)
        table = _HD_CACHE[(f, kinks)] = _hd_new_table(f, kinks)
    table = _hd_latest(table)
    rows, found = _hd_find(table, q)
    while not found.all():
        missing, inverse = numpy.unique(q[~found], return_inverse=True)
        new = _hd_extend(table, missing)
        table["next"].append(new)
        if table["next"][0] is new:
            _HD_CACHE[(f, kinks)] = new
            rows[~found] = len(table["m"]) + inverse.ravel()  # where they were appended
            return new, rows
        table = _hd_latest(table)
        rows, found = _hd_find(table, q)
    return table, rows


def _hd_latest(table):
    """The last table of the chain ``table`` belongs to."""
    while table["next"]:
        table = table["next"][0]
    return table


def _hd_find(table, q):
    """(rows, found): the table rows of the variances q, and which it holds."""
    if not len(table["keys"]):
        return numpy.zeros(q.shape, int), numpy.zeros(q.shape, bool)
    pos = numpy.minimum(numpy.searchsorted(table["keys"], q), len(table["keys"]) - 1)
    return table["order"][pos], table["keys"][pos] == q


def _hd_new_table(f, kinks):
    """An empty table; its generation marks every table extended from it (rows stay
    valid within a generation)."""
    return {"f": f, "kinks": kinks, "q": numpy.empty(0), "keys": numpy.empty(0),
            "order": numpy.empty(0, int),
            "a": numpy.empty((0, _HD_TERMS)), "m": numpy.empty(0),
            "logt": numpy.empty((0, _HD_TERMS + 1)), "generation": object(), "next": [],
            "recent": [], "step": 1, "first": 0}


def _hd_extend(table, q):
    """A new table with rows for the (distinct, new) variances q appended."""
    a, m, tails = _hd_compute(table["f"], table["kinks"], q)
    new = dict(table, a=numpy.concatenate([table["a"], a]), m=numpy.concatenate([table["m"], m]),
               logt=numpy.concatenate([table["logt"], numpy.log(numpy.maximum(tails, 1e-300))]))
    new["q"] = numpy.concatenate([table["q"], q])  # variance of each row
    order = numpy.argsort(new["q"], kind="stable")
    new["keys"], new["order"], new["recent"] = new["q"][order], order, []
    new["step"], new["first"] = _hd_parity(new["a"])
    new["next"] = []  # its successor, once one is linked
    return new


def _hd_parity(a):
    """(2, first live term) when every live coefficient has the parity of the first (φ
    odd or even: the other half of the series vanishes), else (1, 0). A term is live
    when it can reach 1e-17 of the largest: the vanishing half is quadrature rounding,
    about 1e-16 of the largest coefficient, so its products are about 1e-32."""
    sizes = numpy.abs(a).max(axis=0) ** 2 if len(a) else numpy.zeros(a.shape[1])
    live = numpy.nonzero(sizes > 1e-17 * sizes.max())[0] if sizes.max() > 0 else [0]
    if len(live) > 1 and numpy.all(live %% 2 == live[0] %% 2):
        return 2, int(live[0])
    return 1, 0


def _hd_rows(f, kinks, q):
    """(table, rows, log of the largest relative tail over those rows for the first
    _HD_BULK_MAX + 1 truncations, 1/sqrt(q)), memoised: the chunks of a kernel matrix take
    suffixes of one array of column variances, and the answer for an array serves every
    suffix of it (its largest tail bounds the suffix's)."""
    table = _HD_CACHE.get((f, kinks))
    if table is not None and len(q):
        for entry in reversed(list(table["recent"])):  # a copy: other threads may append
            known, rows, bound, inverse = entry
            skip = len(known) - len(q)
            if skip >= 0 and known[-1] == q[-1] and numpy.array_equal(known[skip:], q):
                _hd_remember(table, entry)
                return table, rows[skip:], bound, inverse[skip:]
    table, rows = _hd_table(f, kinks, q)
    bound = table["logt"][rows, :_HD_BULK_MAX + 1].max(axis=0) if len(rows) else \
        numpy.full(_HD_BULK_MAX + 1, -numpy.inf)
    inverse = _hd_inverse_sqrt(q)
    _hd_remember(table, (q.copy(), rows, bound, inverse))
    return table, rows, bound, inverse


def _hd_remember(table, entry):
    """Keep the last few arrays used, most recent last (list operations are atomic, so
    threads need no lock; an entry may appear twice)."""
    recent = table["recent"]
    if not recent or recent[-1] is not entry:
        recent.append(entry)
        del recent[:-8]


def _hd_compute(f, kinks, q):
    """(a, m, tails) for variances q: a[i, n] = E[f(sqrt(q_i) z) h_n(z)],
    m[i] = E[f(sqrt(q_i) z)**2] and tails[i, T] = (m[i] - sum_{n<T} a[i, n]**2) / m[i],
    the relative Parseval remainder."""
    s = numpy.sqrt(numpy.maximum(q, 0.0))
    a = numpy.empty((len(s), _HD_TERMS))
    m = numpy.empty(len(s))
    fixed = (s <= _HD_FIXED_SCALE) & _hd_grid_resolves(f, kinks)
    if fixed.any():
        a[fixed], m[fixed] = _hd_fixed(f, s[fixed])
    if (~fixed).any():
        a[~fixed], m[~fixed] = _hd_graded(f, s[~fixed], kinks)
    _hd_check(f, q, m, "E[phi(u)^2]")
    _hd_check(f, q, a, "a Hermite coefficient E[phi(u) h_n(z)]")
    partial = numpy.concatenate([numpy.zeros((len(s), 1)), numpy.cumsum(a * a, axis=1)], axis=1)
    scale = numpy.where(m > 0, m, 1.0)
    tails = numpy.maximum((m[:, None] - partial) / scale[:, None], 0.0)
    # The remainder can only shrink; rounding must not make a later bound look larger.
    tails = numpy.minimum.accumulate(tails, axis=1)
    return a, m, tails


def _hd_moment(f, kinks, q):
    """E[f(sqrt(q) z)**2] elementwise: the dual at correlation 1 (x = x')."""
    q = numpy.asarray(q, dtype=float)
    table, rows = _hd_rows(f, kinks, numpy.ascontiguousarray(q.ravel()))[:2]
    return table["m"][rows].reshape(q.shape)


def _hd_inverse_sqrt(q):
    """1/sqrt(q), 0 where q = 0 (a zero input has correlation 0 with everything)."""
    with numpy.errstate(divide="ignore"):
        out = 1.0 / numpy.sqrt(q)
    out[q <= 0] = 0.0
    return out


def _hd_bulk(table, c2, bound):
    """Number of terms Horner sums for every entry of a block: the truncation that
    minimises Horner's cost plus the per-entry cost of the entries it does not cover,
    estimated on a sample of c**2. Returns (terms, reach) with reach[T - 1] the largest
    c**2 that T terms cover (nondecreasing: more terms never cover less)."""
    step, first = table["step"], table["first"]
    terms = numpy.arange(1, _HD_BULK_MAX + 1)
    with numpy.errstate(over="ignore", divide="ignore"):
        # |c|**T * tail[T] <= tol  <=>  c**2 <= (tol / tail[T]) ** (2 / T)
        limits = numpy.exp((numpy.log(_HD_TOL) - bound[1:]) * 2.0 / terms)
    limits[bound[1:] <= numpy.log(_HD_TOL)] = numpy.inf
    limits = numpy.maximum.accumulate(limits)
    sample = numpy.sort(c2.ravel()[:: max(1, c2.size // 256) | 1])
    uncovered = 1.0 - numpy.searchsorted(sample, limits, side="right") / len(sample)
    horner = numpy.maximum(terms - first + step - 1, 0) // step
    cost = 3.0 * horner + _HD_OUTLIER_COST * uncovered
    return int(numpy.argmin(cost)) + 1, limits


def _hd_horner(table, r1, r2, c, c2, stop):
    """sum_{n<stop} a[r1, n] a[r2, n] c**n over the block (rows r1, columns r2); for an
    odd or even φ the vanishing half of the terms is skipped (Horner in c**2)."""
    step, first = table["step"], table["first"]
    top = stop - 1 - (stop - 1 - first) %% step  # the last live term below stop
    if top < first:
        return numpy.zeros(c.shape)
    a1 = table["a"][r1, :stop]
    a2 = numpy.ascontiguousarray(table["a"][r2, :stop].T)
    power = c2 if step == 2 else c
    acc = numpy.multiply(a1[:, top, None], a2[None, top])
    add_outer = _hd_outer_adder(acc)
    for n in range(top - step, first - 1, -step):
        acc *= power
        add_outer(a1[:, n], a2[n])
    if first:
        acc *= c if first == 1 else c ** first
    return acc


def _hd_horner_pair(table, r1, r2, c, c2, stop):
    """(P, dP/dc) for P the sum of _hd_horner, by Horner's rule with its derivative:
    P = c**first Q(y), y = c**step, so dP/dc = first c**(first-1) Q + step c**(first+step-1)
    Q'(y), with Q' accumulated beside Q from the same terms."""
    step, first = table["step"], table["first"]
    top = stop - 1 - (stop - 1 - first) %% step
    if top < first:
        return numpy.zeros(c.shape), numpy.zeros(c.shape)
    a1 = table["a"][r1, :stop]
    a2 = numpy.ascontiguousarray(table["a"][r2, :stop].T)
    y = c2 if step == 2 else c
    acc = numpy.multiply(a1[:, top, None], a2[None, top])
    add_outer = _hd_outer_adder(acc)
    slope = None
    for n in range(top - step, first - 1, -step):
        if slope is None:
            slope = acc.copy()
        else:
            slope *= y
            slope += acc
        acc *= y
        add_outer(a1[:, n], a2[n])
    if slope is None:
        slope = numpy.zeros(c.shape)
    if step == 1:  # first is 0: P = Q
        return acc, slope
    if first == 0:
        slope *= c
        slope *= 2.0
        return acc, slope
    if first == 1:
        slope *= c2
        slope *= 2.0
        slope += acc
        acc *= c
        return acc, slope
    slope = first * c ** (first - 1) * acc + 2.0 * c ** (first + 1) * slope
    acc *= c ** first
    return acc, slope


def _hd_outer_adder(acc):
    """A function adding outer(u, v) to the C-ordered matrix acc in place: BLAS's rank-1
    update (one pass over acc, on its transpose, which is Fortran-ordered) when SciPy is
    there, else a NumPy outer product and an add (measured: 14 against 30 us for 64k
    entries)."""
    if "ger" not in _HD_CACHE:
        try:
            from scipy.linalg.blas import dger
        except ImportError:
            dger = None
        _HD_CACHE["ger"] = dger
    dger = _HD_CACHE["ger"]
    if dger is not None and acc.flags.c_contiguous and acc.ndim == 2:
        return lambda u, v: dger(1.0, v, u, a=acc.T, overwrite_a=True)
    term = numpy.empty(acc.shape)

    def add(u, v):
        numpy.multiply(u[:, None], v[None, :], out=term)
        numpy.add(acc, term, out=acc)
    return add


def _hd_terms_needed(table, r1, r2, log_c, start):
    """Smallest T >= start with |c|**T sqrt(tail1[T] tail2[T]) <= tol per entry, by
    bisection (_HD_TERMS + 1 where even all terms do not reach it)."""
    logt = table["logt"]
    goal = 2.0 * numpy.log(_HD_TOL)
    lo = numpy.full(len(r1), start)
    hi = numpy.full(len(r1), _HD_TERMS + 1)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = numpy.minimum((lo + hi) // 2, _HD_TERMS)
        with numpy.errstate(invalid="ignore"):  # 0 * log(0): not met, as for c**0 = 1
            ok = 2.0 * mid * log_c + logt[r1, mid] + logt[r2, mid] <= goal
        hi = numpy.where(open_ & ok, mid, hi)
        lo = numpy.where(open_ & ~ok, mid + 1, lo)


def _hd_series(table, r1, r2, c, start, stop):
    """sum_{start<=n<stop} a[r1[e], n] a[r2[e], n] c[e]**n for a list of entries e."""
    terms = table["a"][r1, start:stop]
    terms *= table["a"][r2, start:stop]
    acc = terms[:, -1].copy()
    for n in range(stop - start - 2, -1, -1):  # Horner, from the last term down
        acc *= c
        acc += terms[:, n]
    return acc * c ** start


def _hd_collinear(f, kinks, q1, q2, sign):
    """E[f(sqrt(q1) z) f(sign sqrt(q2) z)] entrywise: the dual at correlation +-1.
    Entries whose scales the shared grid resolves are integrated together on it."""
    s1, s2 = numpy.sqrt(q1), numpy.sqrt(q2)
    out = numpy.empty(q1.shape)
    on_grid = (numpy.maximum(s1, s2) <= _HD_FIXED_SCALE) & _hd_grid_resolves(f, kinks)
    if on_grid.any():
        if "table" not in _HD_CACHE:
            _hd_fixed(f, numpy.ones(1))  # builds the shared grid
        z, w, _ = _HD_CACHE["table"]
        left = _hd_values(f, s1[on_grid, None] * z)
        right = _hd_values(f, (sign * s2)[on_grid, None] * z)
        out[on_grid] = (left * right) @ w
    for i in numpy.nonzero(~on_grid)[0]:  # large scales: panels follow φ's features
        features = _hd_features(f, kinks, s1[i], 0.0) + _hd_features(f, kinks, sign[i] * s2[i], 0.0)
        z, w = _hd_rule(_hd_feature_edges(_HD_EDGES, features))
        out[i] = (_hd_values(f, s1[i] * z) * _hd_values(f, sign[i] * s2[i] * z)) @ w
    return out


def _hd_collinear_table(table, r1, r2, q1, q2, sign):
    """_hd_collinear, from the tabulated moments where the variances are equal: at c = 1
    the dual is E[f(u)**2], at c = -1 for odd (even) f it is -(+) that."""
    out = numpy.empty(q1.shape)
    same = q1 == q2
    if table["step"] == 1:
        same &= sign > 0
    parity = 1 if table["first"] %% 2 == 0 else -1
    out[same] = table["m"][r1[same]] * numpy.where(sign[same] > 0, 1, parity)
    rest = ~same
    if rest.any():
        out[rest] = _hd_collinear(table["f"], table["kinks"], q1[rest], q2[rest], sign[rest])
    return out


def _hd_entries(table, r1, r2, q1, q2, c, start, reach=None):
    """(values, complete) for a list of entries: the series from term ``start`` on, each
    entry summed until its bound is met; collinear entries (|c| = 1) and those the
    series cannot certify are computed whole (complete) by quadrature. ``reach`` (from
    _hd_bulk) gives each entry's number of terms under its block's bound at once; only
    entries it does not certify are bisected on their own."""
    out = numpy.zeros(c.shape)
    c2 = c * c
    # Within rounding of collinear: the 1-D integral at c = +-1 (error ~ (1 - |c|) dΓ/dc).
    collinear = c2 >= (1.0 - _HD_COLLINEAR) ** 2
    complete = collinear
    if collinear.any():
        out[collinear] = _hd_collinear_table(table, r1[collinear], r2[collinear],
                                             q1[collinear], q2[collinear],
                                             numpy.sign(c[collinear]))
        series = numpy.flatnonzero(~collinear)
        r1, r2, c, c2 = r1[series], r2[series], c[series], c2[series]
    else:
        series = None  # all of them
    need = numpy.full(len(c), _HD_TERMS + 1) if reach is None else \
        numpy.maximum(numpy.searchsorted(reach, c2) + 1, start)
    own = need >= _HD_TERMS
    if own.any():
        with numpy.errstate(divide="ignore"):
            need[own] = _hd_terms_needed(table, r1[own], r2[own],
                                         numpy.log(numpy.abs(c[own])), start)
    values = _hd_grouped(table, r1, r2, c, need, start)
    uncertified = numpy.flatnonzero(need >= _HD_TERMS)
    if uncertified.size:
        _hd_fix(table["f"], table["kinks"], q1[uncertified] if series is None else
                q1[series[uncertified]], q2[uncertified] if series is None else
                q2[series[uncertified]], c[uncertified], uncertified, values)
        complete = complete.copy()
        complete[uncertified if series is None else series[uncertified]] = True
    if series is None:
        return values, complete
    out[series] = values
    return out, complete


def _hd_grouped(table, r1, r2, c, need, start):
    """The series terms start <= n < need[e] of each entry (certified ones), summed in
    groups of similar length so a few long entries do not lengthen all; each group's
    term matrix stays below 2**18 numbers."""
    out = numpy.zeros(c.shape)
    certified = need < _HD_TERMS
    if not certified.any():
        return out
    stop = int(need[certified].max())
    if stop <= start:  # every certified entry is complete before ``start``: nothing to add
        return out
    if stop - start <= 32 and len(c) * 32 <= 2 ** 18:  # the usual case
        e = numpy.flatnonzero(certified) if not certified.all() else slice(None)
        out[e] = _hd_series(table, r1[e], r2[e], c[e], start, stop)
        return out
    order = numpy.flatnonzero(certified)
    order = order[numpy.argsort(need[order], kind="stable")]
    lengths = need[order] - start
    cuts = numpy.searchsorted(lengths, [16, 32, 64, 128, 256], side="right")
    for lo, hi in zip([0, *cuts], [*cuts, len(order)]):
        size = max(1, 2 ** 18 // max(1, int(lengths[hi - 1]) if hi > lo else 1))
        for g in range(lo, hi, size):
            e = order[g:min(g + size, hi)]
            stop = int(need[e].max())
            if stop > start:
                out[e] = _hd_series(table, r1[e], r2[e], c[e], start, stop)
    return out


def _hd_flat(f, kinks, k, q1, q2):
    """The dual for entries given as flat arrays."""
    table, rows = _hd_table(f, kinks, numpy.concatenate([q1, q2]))
    r1, r2 = rows[:len(q1)], rows[len(q1):]
    c = k * _hd_inverse_sqrt(q1) * _hd_inverse_sqrt(q2)
    return _hd_entries(table, r1, r2, q1, q2, c, 0)[0]


def _hd_dual(f, kinks, k, q1, q2):
    """E[f(u) f(v)] for (u, v) ~ N(0, [[q1, k], [k, q2]]), elementwise over broadcast
    arrays. In the kernel-matrix layout (q1 a column, q2 a row) most entries are summed
    together by Horner to a common number of terms (_hd_bulk); the entries that bound
    does not cover get their remaining terms individually."""
    k, q1, q2, shape = _hd_layout(k, q1, q2)
    if shape is not None:
        return _hd_flat(f, kinks, k, q1, q2).reshape(shape)
    table, r1, r2, bound, inverse1, inverse2 = _hd_both_rows(f, kinks, q1, q2)
    c, c2 = _hd_correlation(k, inverse1, inverse2)
    bulk, reach = _hd_bulk(table, c2, bound)
    out = _hd_horner(table, r1, r2, c, c2, bulk)
    _hd_remainder(table, r1, r2, q1, q2, c, c2, bulk, reach, out)
    return out


def _hd_dual_pair(f, fdot, kinks, k, q1, q2):
    """(E[f(u) f(v)], E[f'(u) f'(v)]) together, for a continuous f. By Price's theorem
    the second is the derivative in k of the first, so one Horner pass over the first's
    terms gives both; f' (fdot) has its own table, whose tails bound the derivative
    series and whose terms complete the entries that bound does not cover."""
    k, q1, q2, shape = _hd_layout(k, q1, q2)
    if shape is not None:
        return (_hd_flat(f, kinks, k, q1, q2).reshape(shape),
                _hd_flat(fdot, kinks, k, q1, q2).reshape(shape))
    table, r1, r2, bound, inverse1, inverse2 = _hd_both_rows(f, kinks, q1, q2)
    dtable, d1, d2, dbound, _, _ = _hd_both_rows(fdot, kinks, q1, q2)
    c, c2 = _hd_correlation(k, inverse1, inverse2)
    bulk, reach = _hd_bulk(table, c2, bound)
    dbulk, dreach = _hd_bulk(dtable, c2, dbound)
    # Terms n < stop of Γ's series give terms n < stop - 1 of the derivative series.
    stop = max(bulk, dbulk + 1)
    gamma, dot = _hd_horner_pair(table, r1, r2, c, c2, stop)
    dot *= inverse1[:, None]  # dΓ/dk = dΓ/dc / sqrt(q1 q2)
    dot *= inverse2[None, :]
    _hd_remainder(table, r1, r2, q1, q2, c, c2, stop, reach, gamma)
    _hd_remainder(dtable, d1, d2, q1, q2, c, c2, stop - 1, dreach, dot)
    # A zero variance makes c = 0 and the chain rule's 1/sqrt(q) moot: there
    # E[f'(u) f'(v)] = E[f'(u)] E[f'(v)], the first terms of f''s coefficients.
    zero1, zero2 = q1 <= 0, q2 <= 0
    if zero1.any() or zero2.any():
        first = dtable["a"][:, 0]
        dot[zero1, :] = first[d1[zero1], None] * first[None, d2]
        dot[:, zero2] = first[d1, None] * first[None, d2[zero2]]
    return gamma, dot


def _hd_layout(k, q1, q2):
    """(k, q1, q2, None) as float arrays with q1, q2 flat, for the kernel-matrix layout
    (q1 a column, q2 a row); otherwise (k, q1, q2 flattened, broadcast shape)."""
    k, q1, q2 = (numpy.asarray(v, dtype=float) for v in (k, q1, q2))
    shape = numpy.broadcast_shapes(k.shape, q1.shape, q2.shape)
    matrix = (len(shape) == 2 and q1.shape in ((shape[0], 1), (1, 1))
              and q2.shape in ((1, shape[1]), (1, 1)))
    if not matrix or 0 in shape:
        k, q1, q2 = (numpy.broadcast_to(v, shape).ravel() for v in (k, q1, q2))
        return k, q1, q2, shape
    q1 = numpy.ascontiguousarray(numpy.broadcast_to(q1, (shape[0], 1)).ravel())
    q2 = numpy.ascontiguousarray(numpy.broadcast_to(q2, (1, shape[1])).ravel())
    return numpy.broadcast_to(k, shape), q1, q2, None


def _hd_both_rows(f, kinks, q1, q2):
    """(table, rows of q1, rows of q2, the larger bound, 1/sqrt(q1), 1/sqrt(q2)), both
    within one generation of the table (a new one starts rarely)."""
    while True:
        table1, r1, bound1, inverse1 = _hd_rows(f, kinks, q1)
        table, r2, bound2, inverse2 = _hd_rows(f, kinks, q2)
        if table["generation"] is table1["generation"]:
            return table, r1, r2, numpy.maximum(bound1, bound2), inverse1, inverse2


def _hd_correlation(k, inverse1, inverse2):
    c = numpy.multiply(k, inverse1[:, None])
    c *= inverse2[None, :]
    return c, numpy.multiply(c, c)


def _hd_remainder(table, r1, r2, q1, q2, c, c2, terms, reach, out):
    """Complete ``out``, the first ``terms`` terms of the series of every entry: the
    entries beyond reach[terms - 1] get their remaining terms (or their whole value, for
    those computed directly) individually."""
    flat = numpy.flatnonzero(c2 > reach[terms - 1])
    if flat.size:
        rows, cols = numpy.divmod(flat, c.shape[1])
        rest, complete = _hd_entries(table, r1[rows], r2[cols], q1[rows], q2[cols],
                                     c.ravel()[flat], terms, reach)
        values = out.ravel()  # a view: out is a fresh contiguous array
        values[flat] = numpy.where(complete, rest, values[flat] + rest)


# The nested quadrature of _hd_direct: a standard Gaussian needs panels no wider than 1;
# beyond |z| = 14 its weight is below 1e-42. Blocks of function values stay below 2**18.
_HD_DIRECT_EDGES = numpy.linspace(-14.0, 14.0, 29)
_HD_BLOCK = 2 ** 18
_HD_DIRECT_BUDGET = 2 ** 27  # function values per entry (about 2 s): a bound on the time


def _hd_direct(f, kinks, q1, q2, c):
    """E[f(u) f(v)] for one entry by nested composite quadrature, u = s1 z1 and
    v = s2 (c z1 + s xi): the route for the few entries (large variance, |c| near 1) where
    the series cannot certify its bound. Both grids are graded towards φ's features at φ's
    own scale (_hd_feature_edges), so their sizes grow with log(q); the inner integrals
    are done in blocks of outer nodes, so memory stays bounded."""
    s1, s2, s = numpy.sqrt(q1), numpy.sqrt(q2), numpy.sqrt(max(1.0 - c * c, 0.0))
    # E[f(v) | z1] is f smoothed, centred at s2 c z1: its features are at b / (s2 c).
    outer = _hd_features(f, kinks, s1, 0.0) + _hd_features(f, kinks, s2 * c, 0.0)
    z1, w1 = _hd_rule(_hd_feature_edges(_HD_DIRECT_EDGES, outer))
    outside = _hd_values(f, s1 * z1) * w1
    total, start, used = 0.0, 0, 0
    while start < len(z1):
        # A block as long as its first row's grid allows (rows nearby reach the same kinks).
        first = _hd_feature_edges(_HD_DIRECT_EDGES,
                                  _hd_features(f, kinks, s2 * s, s2 * c * z1[start:start + 1]))
        stop = start + max(1, _HD_BLOCK // (16 * first.shape[-1]))
        shift = s2 * c * z1[start:stop]
        edges = _hd_feature_edges(_HD_DIRECT_EDGES, _hd_features(f, kinks, s2 * s, shift))
        used += 16 * edges.size
        if used > _HD_DIRECT_BUDGET:  # only φ with dozens of kinks within reach get here
            raise _hd_error(f"{getattr(f, 'label', 'activation')}: an entry with variances "
                            f"{q1:.6g}, {q2:.6g} and correlation {c:.12g} needs more than "
                            f"{_HD_DIRECT_BUDGET:.3g} quadrature nodes ({len(kinks)} kinks), "
                            "the numerical route's budget", _HD_SMALLER)
        xi, w2 = _hd_rule(edges)
        smoothed = (_hd_values(f, shift[:, None] + (s2 * s) * xi) * w2).sum(axis=1)
        total += float(outside[start:stop] @ smoothed)
        start = stop
    return total


def _hd_fix(f, kinks, q1, q2, c, entries, out):
    """out[entries] by direct quadrature: the entries whose series bound is not met (only
    near-collinear ones with large variances)."""
    for i, e in enumerate(entries.tolist()):
        out[e] = _hd_direct(f, kinks, q1[i], q2[i], c[i])
''' % {"tol": TOLERANCE, "terms": MAX_TERMS}  # noqa: UP031 - the engine is full of braces

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

        def _print_Heaviside(self, expr):
            # numpy's own step: sympy would rewrite Heaviside(f(x)) into a Piecewise whose
            # simplified conditions grow without bound for composed piecewise activations.
            at_zero = expr.args[1] if len(expr.args) > 1 else sp.Rational(1, 2)
            return f"numpy.heaviside({self._print(expr.args[0])}, {self._print(at_zero)})"

        def _print_log(self, expr):
            # log(1 + exp(a)) as logaddexp(0, a): no overflow for a > 709 (Softplus, Mish).
            arg = expr.args[0]
            if isinstance(arg, sp.Add) and len(arg.args) == 2 and sp.S.One in arg.args:
                other = arg.args[0] if arg.args[1] == 1 else arg.args[1]
                if isinstance(other, sp.exp):
                    return f"numpy.logaddexp(0, {self._print(other.args[0])})"
            return super()._print_log(expr)

    return _Printer({"fully_qualified_modules": True, "inline": True})


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
    function = _numpy_function(arg, x)
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
    change = (signs[left] != signs[right]) & (right - left == 1)
    return out | {float(_bisect(function, grid[i], grid[i + 1], signs[i])) for i in left[change]}


def _bisect(function, lo: float, hi: float, low_sign: float) -> float:
    """A sign change of ``function`` in [lo, hi] (``low_sign`` at lo) to float64 resolution:
    the bracket is at most 1/512 wide, so 64 halvings reach it."""
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        with numpy.errstate(all="ignore"):
            value = float(numpy.asarray(function(numpy.array([mid])), dtype=float).reshape(-1)[0])
        if value == 0 or not numpy.isfinite(value):
            return mid
        lo, hi = (mid, hi) if numpy.sign(value) == low_sign else (lo, mid)
    return 0.5 * (lo + hi)


def function_source(name: str, expr: sp.Expr, x: sp.Symbol, label: str = "",
                    singular: tuple[float, ...] = ()) -> str:
    """``def name(x): return <expr printed for numpy>``, broadcasting constants, with
    ``name.label`` (the layer, for error messages) and ``name.singular`` (kinks where a
    derivative of expr is unbounded, for the engine's quadrature grids)."""
    printer = _printer()
    # Common subexpressions once each: a composed activation (Gelu(approximate=True) * 3)
    # repeats its inner layers' expressions in φ' hundreds of times over, and the engine
    # evaluates φ' on millions of nodes.
    shared, (body,) = sp.cse(expr, symbols=sp.numbered_symbols("_s"), optimizations=None)
    lines = "".join(f"    {symbol} = {printer.doprint(value)}\n" for symbol, value in shared)
    return (f"def {name}({x}):\n{lines}    return {printer.doprint(body)} + 0.0 * {x}\n\n\n"
            f"{name}.label = {label!r}\n{name}.singular = {tuple(singular)!r}\n")


def singular_points(f: sp.Expr, x: sp.Symbol, points: tuple[float, ...]) -> tuple[float, ...]:
    """The points among ``points`` (kinks) next to which f'' is unbounded (x**0.3 at 0,
    sqrt|sin x| at 0): the quadrature grids are graded towards those down to 1e-12 of
    φ's scale. Decided numerically, |f''| at distances 1e-9 and 1e-7 on each side."""
    if not points:
        return ()
    second = _numpy_function(derivative(derivative(f, x), x), x)
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
    function = _numpy_function(f, x)
    for b in sorted(points, key=abs):
        for side in (-1.0, 1.0):
            with numpy.errstate(all="ignore"):
                g = numpy.array([1e-6, 1e-12]) * function(b + side * numpy.array([1e-6, 1e-12])) ** 2
            if not numpy.all(numpy.isfinite(g)) or (g[1] > 0 and g[1] >= 0.5 * g[0]):
                return b
    return None


def _numpy_function(f: sp.Expr, x: sp.Symbol):
    namespace: dict = {"numpy": numpy}
    _execute(function_source("_g", f, x), namespace)
    return namespace["_g"]


def _execute(source: str, namespace: dict) -> None:
    """Run printed sympy (never user text) in ``namespace``, with the SciPy modules it
    names (the printer writes scipy.constants.pi, scipy.special.erf) imported first."""
    import importlib
    for module in ("scipy.constants", "scipy.special"):
        if module + "." in source:
            namespace["scipy"] = importlib.import_module("scipy")
            importlib.import_module(module)
    exec(source, namespace)  # printed sympy, not user text


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
    """Shared printing for the numerical duals; subclasses carry one φ's data."""

    fresh_result = True  # the engine returns a new array: generated code may write into it

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

    def joint(self):
        """Γ and Γ̇ of a continuous φ in one pass (_hd_dual_pair)."""
        if self.dot is None or f"_pair_{self.tag}" not in self.sources:
            return None
        return self.dot(*self.args), f"_pair_{self.tag}"

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


def _tag(f: sp.Expr) -> str:
    return hashlib.sha1(sp.srepr(f).encode()).hexdigest()[:12]


def _sources(tag: str, f: sp.Expr, x: sp.Symbol, points: tuple[float, ...],
             layer: str = "") -> dict[str, str]:
    return {
        "_hd_engine": ENGINE_SOURCE,
        f"_f_{tag}": function_source(f"_f_{tag}", f, x, layer, singular_points(f, x, points)),
        f"_dual_{tag}": (f"def _dual_{tag}(k, q1, q2):\n"
                         f"    return _hd_dual(_f_{tag}, {points!r}, k, q1, q2)\n"),
        f"_moment_{tag}": (f"def _moment_{tag}(q):\n"
                           f"    return _hd_moment(_f_{tag}, {points!r}, q)\n"),
    }


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
             extra: dict[str, str] | None = None, layer: str = "") -> tuple[type, type]:
    tag = _tag(f)
    sources = {**_sources(tag, f, x, points, layer), **(extra or {})}
    data = {"tag": tag, "label": label, "points": points, "sources": sources}
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
                      f"{name} (its derivative, for the NTK)")
    pair = None if phi.has(*_DISCONTINUOUS) or infinite is not None else _pair_sources(
        _tag(phi), dot.sources, dot.tag, points)
    gamma, _ = _classes(phi, x, f"Gamma[{name}]", points, pair, name)
    gamma.dot = dot
    for path in _ROLES:  # how pickle rebuilds each class (_reduce_class)
        _follow(gamma, path).recipe = (phi, x, name, path)
    return gamma, dot


def _engine_function(cls: type):
    name = f"_f_{cls.tag}"
    if name not in _ENGINE:
        _execute(cls.sources[name], _ENGINE)
    return _ENGINE[name]


def evaluate(cls: type, k, q1, q2):
    """Numbers from a numerical dual class without code generation (tests, benchmarks)."""
    return _ENGINE["_hd_dual"](_engine_function(cls), cls.points, k, q1, q2)


def evaluate_pair(cls: type, k, q1, q2):
    """(Γ, Γ̇) from the joint route of a continuous φ's dual class (see _hd_dual_pair)."""
    if f"_pair_{cls.tag}" not in cls.sources:
        raise ValueError(f"{cls.label} has no joint route (φ is not continuous)")
    return _ENGINE["_hd_dual_pair"](_engine_function(cls), _engine_function(cls.dot),
                                    cls.points, k, q1, q2)


def bound_note(name: str) -> str:
    """What net.formula() states for the numerical route."""
    return (f"numerical: Hermite series in the correlation, up to {MAX_TERMS} terms per "
            f"entry, coefficients by quadrature once per distinct variance; "
            f"|error| <= {TOLERANCE:.0e} x sqrt(E[phi(u)^2] E[phi(v)^2]) "
            "(Cauchy-Schwarz/Parseval tail bound, checked per entry)")
