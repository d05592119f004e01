"""The Hermite-series engine of the numerical route (see ntkdsl.numerical for the method
and its error bound): coefficient tables per activation and variance, the bulk Horner
summation of a kernel matrix, the per-entry completion and the nested quadrature of the
entries the series cannot certify.

Part of ntkdsl's runtime: NumPy only (SciPy's BLAS rank-1 update when it is installed),
nothing from ntkdsl. The library imports this module, so every compiled network shares
one coefficient cache (_HD_CACHE) per process; standalone modules embed its text
verbatim (ntkdsl.runtime.embedded_source), so both compute the same numbers. Names keep
their _hd_ prefix because generated code calls them in a standalone module's namespace.
"""
import numpy

_HD_TOL = 1e-11  # relative truncation bound per entry (the route's stated error)
_HD_TERMS = 320  # Hermite terms computed per variance
_HD_COLLINEAR = 1e-12
# The rounding level of a Parseval remainder m - sum_n a_n**2 relative to m (64 ulps of 1;
# the computed difference of a converged series is 0 .. 2e-15): no table's tail falls below.
_HD_ROUNDING = 2.0 ** -46
_HD_GL_X, _HD_GL_W = numpy.polynomial.legendre.leggauss(16)
# Fixed panels of width 1/4 on [-14, 14] (edge at 0): exp(-z**2/4) bounds every h_n term
# beyond, below 1e-21, for a φ of moderate growth.
_HD_REACH = 14.0
_HD_EDGES = numpy.linspace(-_HD_REACH, _HD_REACH, 113)
# A φ growing like exp(λ|x|) (sinh(x)**40, x**20*exp(x), cosh(x)**k) puts the mass of
# φ(√(q) z)² near z = 2λ√(q), possibly past 14 (sinh(x)**40 at q = 0.05: z ≈ 18). _hd_reach
# probes φ at whole z out to _HD_MAX_REACH and widens the grid to where the mass left out
# is below _HD_TAIL of the moment — by Cauchy–Schwarz each coefficient is then off by at
# most sqrt(_HD_TAIL) = 1e-12 of sqrt(E[φ²]) — or refuses: past z = 37 the Gaussian weight
# (1e-298) underflows float64, so no float64 quadrature reaches that mass.
_HD_MAX_REACH = 37.0
_HD_PROBE = numpy.arange(0.0, _HD_MAX_REACH)
_HD_TAIL = 1e-24
# The fixed grid resolves φ(sqrt(q) z) while sqrt(q) is at most this (features of φ at scale 1 in
# x are 1/sqrt(q) wide in z); beyond it, and for kinks away from 0, panels follow φ's scale.
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


# Makes the exception of _hd_error from (message, hint): None in a standalone module (an
# ArithmeticError), ntkdsl's NumericalError (an ArithmeticError too) once the library has
# imported this module (ntkdsl.numerical sets it; the runtime imports nothing of ntkdsl).
_HD_ERROR_CLASS: type | None = None


def _hd_error(message, hint=None):
    """The exception for a computation the engine cannot carry out reliably."""
    if _HD_ERROR_CLASS is None:
        return ArithmeticError(message if hint is None else f"{message}\n{hint}")
    return _HD_ERROR_CLASS(message, hint=hint)


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


def _hd_graded(f, s, kinks, reach=None):
    """The same on grids graded towards each feature of φ (0 and its kinks) at φ's own
    scale (_hd_feature_edges): the node count grows with log(q), not with q. ``reach``
    (per scale, from _hd_reach) widens a row's grid past |z| = 14."""
    coefficients = numpy.empty((len(s), _HD_TERMS))
    moments = numpy.empty(len(s))
    for i in range(len(s)):  # one variance at a time bounds memory; rows are few here
        wide = _HD_REACH if reach is None else reach[i]
        edges = _hd_feature_edges(_hd_base(wide), _hd_features(f, kinks, s[i], 0.0, wide))
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


def _hd_features(f, kinks, scale, shift, reach=_HD_REACH):
    """[(centre, width, singular)] of φ(scale·t + shift) in t: φ's features (0, where its
    nonlinearity is, and its kinks) sit at t = (b - shift)/scale and are 1/scale wide, those
    within the grid's ``reach`` (and a margin); f.singular lists the kinks where a
    derivative is unbounded (x**0.3 at 0)."""
    singular = getattr(f, "singular", ())
    width = 1.0 / numpy.maximum(numpy.abs(scale), 1e-300)
    out = []
    for b in sorted({0.0, *kinks}):
        centre = (b - shift) * width * numpy.sign(scale)
        if b == 0 or numpy.any(numpy.abs(centre) <= reach + 1.0):  # beyond, the weight is nil
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


def _hd_base(reach):
    """The base grid's edges: panels of width 1/4 on [-reach, reach] (_HD_EDGES at 14)."""
    if reach <= _HD_REACH:
        return _HD_EDGES
    return numpy.linspace(-reach, reach, round(8 * reach) + 1)


def _hd_reach(f, s, q, core=None):
    """Per scale s = sqrt(q): the half-width (in z) of the grid that E[f(s z)**2] needs,
    _HD_REACH unless f grows so fast that more than _HD_TAIL of that moment lies beyond
    (then the first whole z past which it does not, plus one for the spacing of the
    probes). ``core`` (the moment on the base grid) helps estimate the moment; the probes'
    own sum is the other estimate. Raises _hd_error where that mass is past _HD_MAX_REACH
    or not finite in float64."""
    z = _HD_PROBE
    x = numpy.asarray(s, dtype=float)[:, None] * numpy.concatenate([z, -z])
    with numpy.errstate(all="ignore"):
        log_f = numpy.log(numpy.abs(_hd_values(f, x)))
        mass = numpy.exp(2.0 * log_f - numpy.tile(z * z, 2) / 2) / numpy.sqrt(2 * numpy.pi)
    mass = numpy.where(numpy.isnan(mass), numpy.inf, mass)
    mass = mass[:, :len(z)] + mass[:, len(z):]  # both sides of each |z|
    tail = numpy.cumsum(mass[:, ::-1], axis=1)[:, ::-1]  # the probes' mass from |z| on
    total = tail[:, 0] if core is None else numpy.maximum(tail[:, 0], core)
    first = int(_HD_REACH)
    ok = tail[:, first:] <= _HD_TAIL * total[:, None]
    ok[~numpy.isfinite(total)] = False
    bad = ~ok.any(axis=1)
    if bad.any():
        at = numpy.asarray(q, dtype=float).ravel()[numpy.argmax(bad)]
        raise _hd_error(
            f"{getattr(f, 'label', 'activation')}: at pre-activation variance q = {at:.6g}, "
            f"E[phi(u)^2] has its mass beyond {_HD_MAX_REACH:g} standard deviations (phi grows "
            "like an exponential of a large multiple of u), past where float64 can weigh the "
            "Gaussian: the numerical route cannot integrate it", _HD_SMALLER)
    j = numpy.argmax(ok, axis=1)
    return numpy.where(j == 0, _HD_REACH, z[first + j] + 1.0)


_HD_CACHE: dict = {}
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
    key = _hd_key(f, kinks)
    table = _HD_CACHE.get(key)
    if table is None or len(table["m"]) > 200000:  # bound memory (5 kB per variance)
        table = _HD_CACHE[key] = _hd_new_table(kinks)
    table = _hd_latest(table)
    rows, found = _hd_find(table, q)
    while not found.all():
        missing, inverse = numpy.unique(q[~found], return_inverse=True)
        new = _hd_extend(table, f, missing)
        table["next"].append(new)
        if table["next"][0] is new:
            _HD_CACHE[key] = new
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


def _hd_key(f, kinks):
    """The cache key of f's table. The library names the functions it generates after a
    hash of their formula (_f_<hash>): every network defines its own function object of
    one name, and all share one table (one cache per process); another callable is its
    own key."""
    name = getattr(f, "__name__", "")
    return (name if name.startswith("_f_") else f, kinks)


def _hd_new_table(kinks):
    """An empty table; its generation marks every table extended from it (rows stay
    valid within a generation)."""
    return {"kinks": kinks, "q": numpy.empty(0), "keys": numpy.empty(0),
            "order": numpy.empty(0, int),
            "a": numpy.empty((0, _HD_TERMS)), "m": numpy.empty(0), "rest": numpy.empty(0),
            "logt": numpy.empty((0, _HD_TERMS + 1)), "generation": object(), "next": [],
            "recent": [], "step": 1, "first": 0}


def _hd_extend(table, f, q):
    """A new table with rows for the (distinct, new) variances q of f appended (f names
    the layer in errors: tables are shared by the layers of one formula)."""
    a, m, tails, rest = _hd_compute(f, table["kinks"], q)
    new = dict(table, a=numpy.concatenate([table["a"], a]), m=numpy.concatenate([table["m"], m]),
               logt=numpy.concatenate([table["logt"], numpy.log(numpy.maximum(tails, 1e-300))]),
               rest=numpy.concatenate([table["rest"], rest]))
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
    if len(live) > 1 and numpy.all(live % 2 == live[0] % 2):
        return 2, int(live[0])
    return 1, 0


def _hd_rows(f, kinks, q):
    """(table, rows, log of the largest relative tail over those rows for the first
    _HD_BULK_MAX + 1 truncations, 1/sqrt(q)), memoised: the chunks of a kernel matrix take
    suffixes of one array of column variances, and the answer for an array serves every
    suffix of it (its largest tail bounds the suffix's)."""
    table = _HD_CACHE.get(_hd_key(f, kinks))
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
    """(a, m, tails, rest) for variances q: a[i, n] = E[f(sqrt(q_i) z) h_n(z)],
    m[i] = E[f(sqrt(q_i) z)**2], the relative Parseval remainders tails[i, T] = (m[i] -
    sum_{n<T} a[i, n]**2) / m[i], computed as sum_{T<=n<N} a[i, n]**2 / m[i] + rest[i],
    and rest[i] = tails[i, N] (N = _HD_TERMS), the part past the table (at least
    _HD_ROUNDING, while m > 0), which _hd_tail_ok bounds apart."""
    s = numpy.sqrt(numpy.maximum(q, 0.0))
    a = numpy.empty((len(s), _HD_TERMS))
    m = numpy.empty(len(s))
    fixed = (s <= _HD_FIXED_SCALE) & _hd_grid_resolves(f, kinks)
    if fixed.any():
        a[fixed], m[fixed] = _hd_fixed(f, s[fixed])
    if (~fixed).any():
        a[~fixed], m[~fixed] = _hd_graded(f, s[~fixed], kinks)
    _hd_check(f, q, m, "E[phi(u)^2]")
    reach = _hd_reach(f, s, q, m)
    wide = reach > _HD_REACH
    if wide.any():  # φ's far tail matters at these variances: their rows on wider grids
        a[wide], m[wide] = _hd_graded(f, s[wide], kinks, reach[wide])
        _hd_check(f, q, m, "E[phi(u)^2]")
    _hd_check(f, q, a, "a Hermite coefficient E[phi(u) h_n(z)]")
    scale = numpy.where(m > 0, m, 1.0)
    # The remainder past the table, m - sum_n a_n**2: at a small variance the series has
    # converged by then and the difference is rounding (0 .. 2e-15 of m, whichever way the
    # rounding fell), so it is floored at _HD_ROUNDING of m -- it can not be resolved below.
    rest = numpy.maximum(m - (a * a).sum(axis=1), 0.0) / scale + _HD_ROUNDING * (m > 0)
    # Below that, the tails are the sums of the squares left (from the back): a difference
    # m - sum_{n<T} a_n**2 is rounding once it falls to 1e-16 of m (or 0, clipped), while
    # the terms still count against a slowly converging series of the other variance.
    squares = a * a / scale[:, None]
    tails = numpy.empty((len(s), _HD_TERMS + 1))
    tails[:, _HD_TERMS] = 0.0
    tails[:, :_HD_TERMS] = numpy.cumsum(squares[:, ::-1], axis=1)[:, ::-1]
    tails += rest[:, None]
    return a, m, tails, rest


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
    top = stop - 1 - (stop - 1 - first) % step  # the last live term below stop
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
    top = stop - 1 - (stop - 1 - first) % step
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


def _hd_terms_needed(table, r1, r2, log_c, start, other=None):
    """Smallest T >= start whose truncation _hd_tail_ok certifies per entry, by bisection
    (_HD_TERMS + 1 where even all terms do not); rows r2 are of the table ``other`` where
    given (a cross dual's second function)."""
    other = table if other is None else other
    rest1, rest2 = table["rest"][r1], other["rest"][r2]
    with numpy.errstate(invalid="ignore", under="ignore"):
        far = numpy.exp(_HD_TERMS * log_c) * numpy.sqrt(rest1 * rest2)
    lo = numpy.full(len(r1), start)
    hi = numpy.full(len(r1), _HD_TERMS + 1)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = numpy.minimum((lo + hi) // 2, _HD_TERMS)
        ok = _hd_tail_ok(table["logt"][r1, mid], rest1, other["logt"][r2, mid], rest2,
                         mid, log_c, far)
        hi = numpy.where(open_ & ok, mid, hi)
        lo = numpy.where(open_ & ~ok, mid + 1, lo)


def _hd_tail_ok(logt1, rest1, logt2, rest2, terms, log_c, far):
    """Whether T = ``terms`` terms of sum_n a1_n a2_n c**n are within _HD_TOL sqrt(m1 m2)
    of the sum, per entry (logt, rest: the rows' log tails at T and rests; far:
    |c|**N sqrt(rest1 rest2), N = _HD_TERMS). By Cauchy-Schwarz on the terms T <= n < N and
    on those past the table apart, the error is at most |c|**T sqrt(A1 A2) + far, A the
    relative sum of a_n**2 over T <= n < N (the tail less the rest). One product of the
    tails, |c|**T sqrt(t1[T] t2[T]), bounds that too, but it would take a small variance's
    rest (its rounding floor) times a large variance's slowly falling tail at every T."""
    t1, t2 = numpy.exp(logt1), numpy.exp(logt2)
    # A = t - rest, plus 1e-12 t for the rounding of the logarithm (harmless: terms of
    # A below 1e-12 rest are below 1e-14 of the bound)
    a1 = numpy.maximum(t1 - rest1, 0.0) + 1e-12 * t1
    a2 = numpy.maximum(t2 - rest2, 0.0) + 1e-12 * t2
    with numpy.errstate(invalid="ignore", under="ignore"):
        power = numpy.exp(numpy.where(terms > 0, terms * log_c, 0.0))  # c**0 = 1, also at c = 0
    return power * numpy.sqrt(a1 * a2) + far <= _HD_TOL


def _hd_series(table, r1, r2, c, start, stop, other=None):
    """sum_{start<=n<stop} a[r1[e], n] a[r2[e], n] c[e]**n for a list of entries e (the
    second factor from the table ``other`` where given)."""
    terms = table["a"][r1, start:stop]
    terms *= (table if other is None else other)["a"][r2, start:stop]
    acc = terms[:, -1].copy()
    for n in range(stop - start - 2, -1, -1):  # Horner, from the last term down
        acc *= c
        acc += terms[:, n]
    return acc * c ** start


def _hd_collinear(f, kinks, q1, q2, sign, g=None):
    """E[f(sqrt(q1) z) g(sign sqrt(q2) z)] entrywise (g = f by default): the dual at
    correlation +-1. Entries whose scales the shared grid resolves are integrated together
    on it."""
    g = f if g is None else g
    s1, s2 = numpy.sqrt(q1), numpy.sqrt(q2)
    out = numpy.empty(q1.shape)
    reach = numpy.maximum(_hd_reach(f, s1, q1), _hd_reach(g, s2, q2))
    on_grid = ((numpy.maximum(s1, s2) <= _HD_FIXED_SCALE) & _hd_grid_resolves(f, kinks)
               & _hd_grid_resolves(g, kinks) & (reach <= _HD_REACH))
    if on_grid.any():
        if "table" not in _HD_CACHE:
            _hd_fixed(f, numpy.ones(1))  # builds the shared grid
        z, w, _ = _HD_CACHE["table"]
        left = _hd_values(f, s1[on_grid, None] * z)
        right = _hd_values(g, (sign * s2)[on_grid, None] * z)
        out[on_grid] = (left * right) @ w
    for i in numpy.nonzero(~on_grid)[0]:  # large scales: panels follow φ's features
        features = (_hd_features(f, kinks, s1[i], 0.0, reach[i])
                    + _hd_features(g, kinks, sign[i] * s2[i], 0.0, reach[i]))
        z, w = _hd_rule(_hd_feature_edges(_hd_base(reach[i]), features))
        out[i] = (_hd_values(f, s1[i] * z) * _hd_values(g, sign[i] * s2[i] * z)) @ w
    return out


def _hd_collinear_table(table, f, r1, r2, q1, q2, sign):
    """_hd_collinear, from the tabulated moments where the variances are equal: at c = 1
    the dual is E[f(u)**2], at c = -1 for odd (even) f it is -(+) that."""
    out = numpy.empty(q1.shape)
    same = q1 == q2
    if table["step"] == 1:
        same &= sign > 0
    parity = 1 if table["first"] % 2 == 0 else -1
    out[same] = table["m"][r1[same]] * numpy.where(sign[same] > 0, 1, parity)
    rest = ~same
    if rest.any():
        out[rest] = _hd_collinear(f, table["kinks"], q1[rest], q2[rest], sign[rest])
    return out


def _hd_entries(table, f, r1, r2, q1, q2, c, start, reach=None, g=None, other=None):
    """(values, complete) for a list of entries: the series from term ``start`` on, each
    entry summed until its bound is met; collinear entries (|c| = 1) and those the
    series cannot certify are computed whole (complete) by quadrature. ``reach`` (from
    _hd_bulk) gives each entry's number of terms under its block's bound at once; only
    entries it does not certify are bisected on their own. With ``g``, rows r2 are of
    g's table ``other`` (a cross dual E[f(u) g(v)], _hd_cross_entries), none collinear."""
    out = numpy.zeros(c.shape)
    c2 = c * c
    # Within rounding of collinear: the 1-D integral at c = +-1 (error ~ (1 - |c|) dΓ/dc).
    collinear = c2 >= (1.0 - _HD_COLLINEAR) ** 2
    complete = collinear
    if collinear.any():
        out[collinear] = _hd_collinear_table(table, f, r1[collinear], r2[collinear],
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
                                         numpy.log(numpy.abs(c[own])), start, other)
    values = _hd_grouped(table, r1, r2, c, need, start, other)
    uncertified = numpy.flatnonzero(need >= _HD_TERMS)
    if uncertified.size:
        _hd_fix(f, table["kinks"], q1[uncertified] if series is None else
                q1[series[uncertified]], q2[uncertified] if series is None else
                q2[series[uncertified]], c[uncertified], uncertified, values, g)
        complete = complete.copy()
        complete[uncertified if series is None else series[uncertified]] = True
    if series is None:
        return values, complete
    out[series] = values
    return out, complete


def _hd_grouped(table, r1, r2, c, need, start, other=None):
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
        out[e] = _hd_series(table, r1[e], r2[e], c[e], start, stop, other)
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
                out[e] = _hd_series(table, r1[e], r2[e], c[e], start, stop, other)
    return out


def _hd_flat(f, kinks, k, q1, q2):
    """The dual for entries given as flat arrays."""
    table, rows = _hd_table(f, kinks, numpy.concatenate([q1, q2]))
    r1, r2 = rows[:len(q1)], rows[len(q1):]
    c = k * _hd_inverse_sqrt(q1) * _hd_inverse_sqrt(q2)
    return _hd_entries(table, f, r1, r2, q1, q2, c, 0)[0]


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
    _hd_remainder(table, f, r1, r2, q1, q2, c, c2, bulk, reach, out)
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
    _hd_remainder(table, f, r1, r2, q1, q2, c, c2, stop, reach, gamma)
    _hd_remainder(dtable, fdot, d1, d2, q1, q2, c, c2, stop - 1, dreach, dot)
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


def _hd_remainder(table, f, r1, r2, q1, q2, c, c2, terms, reach, out):
    """Complete ``out``, the first ``terms`` terms of the series of every entry: the
    entries beyond reach[terms - 1] get their remaining terms (or their whole value, for
    those computed directly) individually."""
    flat = numpy.flatnonzero(c2 > reach[terms - 1])
    if flat.size:
        rows, cols = numpy.divmod(flat, c.shape[1])
        rest, complete = _hd_entries(table, f, r1[rows], r2[cols], q1[rows], q2[cols],
                                     c.ravel()[flat], terms, reach)
        values = out.ravel()  # a view: out is a fresh contiguous array
        values[flat] = numpy.where(complete, rest, values[flat] + rest)


# The nested quadrature of _hd_direct: a standard Gaussian needs panels no wider than 1;
# beyond |z| = 14 its weight is below 1e-42. Blocks of function values stay below 2**18.
_HD_DIRECT_EDGES = numpy.linspace(-14.0, 14.0, 29)
_HD_BLOCK = 2 ** 18
_HD_DIRECT_BUDGET = 2 ** 24  # function values per call (about 0.25 s; the test suite needs 9.4e6)


def _hd_direct_plan(f, kinks, q1, q2, c, g):
    """The grids of one entry's nested quadrature, nothing evaluated yet: ((outer nodes,
    their weights, blocks of (start, stop, inner edges), s1, s2 c, s2 s), the number of
    function values they take). Planning stops once that passes _HD_DIRECT_BUDGET."""
    s1, s2, s = numpy.sqrt(q1), numpy.sqrt(q2), numpy.sqrt(max(1.0 - c * c, 0.0))
    # E[g(v) | z1] is g smoothed, centred at s2 c z1: its features are at b / (s2 c).
    outer = _hd_features(f, kinks, s1, 0.0) + _hd_features(g, kinks, s2 * c, 0.0)
    z1, w1 = _hd_rule(_hd_feature_edges(_HD_DIRECT_EDGES, outer))
    blocks, start, used = [], 0, z1.size
    while start < len(z1) and used <= _HD_DIRECT_BUDGET:
        # A block as long as its first row's grid allows (rows nearby reach the same kinks).
        first = _hd_feature_edges(_HD_DIRECT_EDGES,
                                  _hd_features(g, kinks, s2 * s, s2 * c * z1[start:start + 1]))
        stop = start + max(1, _HD_BLOCK // (16 * first.shape[-1]))
        edges = _hd_feature_edges(_HD_DIRECT_EDGES,
                                  _hd_features(g, kinks, s2 * s, s2 * c * z1[start:stop]))
        blocks.append((start, stop, edges))
        used += 16 * edges.size
        start = stop
    return (z1, w1, blocks, s1, s2 * c, s2 * s), used


def _hd_direct_run(f, g, plan):
    """E[f(u) g(v)] on the grids of a plan: the inner integrals in blocks of outer nodes,
    so memory stays bounded."""
    z1, w1, blocks, s1, centre, spread = plan
    outside = _hd_values(f, s1 * z1) * w1
    total = 0.0
    for start, stop, edges in blocks:
        xi, w2 = _hd_rule(edges)
        shift = centre * z1[start:stop]
        smoothed = (_hd_values(g, shift[:, None] + spread * xi) * w2).sum(axis=1)
        total += float(outside[start:stop] @ smoothed)
    return total


def _hd_direct(f, kinks, q1, q2, c, g=None):
    """E[f(u) g(v)] for the entries of flat arrays by nested composite quadrature,
    u = s1 z1 and v = s2 (c z1 + s xi): the route for the few entries (large variance, |c|
    near 1) where the series cannot certify its bound. Both grids are graded towards φ's
    features at φ's own scale (_hd_feature_edges), so their sizes grow with log(q). Every
    entry's grids are laid out before any function value is computed: past
    _HD_DIRECT_BUDGET values for the call it is refused there, so the time it may take is
    bounded before it starts."""
    same = g is None or g is f
    g = f if g is None else g  # E[f(u) g(v)]: g is the inner function
    q1, q2, c = (numpy.atleast_1d(numpy.asarray(v, dtype=float)) for v in (q1, q2, c))
    # Each distinct entry once, and once per process: a kernel matrix holds (i, j) and
    # (j, i) (equal for E[f(u) f(v)]), a layer's near-collinear pairs recur in the next
    # evaluation of the same inputs (kernels, then a cross kernel), and layers of equal
    # parameters at converged variances ask for the same entries.
    if same:
        q1, q2 = numpy.minimum(q1, q2), numpy.maximum(q1, q2)
    memo = _HD_CACHE.setdefault("direct", {})
    if len(memo) > _HD_DIRECT_MEMO:
        memo.clear()
    prefix = (_hd_key(f, kinks), _hd_key(g, kinks))
    keys = [prefix + entry for entry in zip(q1.tolist(), q2.tolist(), c.tolist())]
    # Read the shared memo once into this call's own dict: another thread may clear it.
    known = {key: value for key in keys if (value := memo.get(key)) is not None}
    todo = {}
    for i, key in enumerate(keys):
        if key not in known:
            todo.setdefault(key, i)
    if todo:
        first = numpy.array(list(todo.values()))
        values = _hd_direct_new(f, g, kinks, q1[first], q2[first], c[first])
        new = dict(zip(todo, values.tolist()))
        memo.update(new)
        known.update(new)
    return numpy.array([known[key] for key in keys])


_HD_DIRECT_MEMO = 100000  # entries _hd_direct remembers (then it starts again)
# The nested quadrature of one evaluation of a network, all its layers together (about
# 1.3 s at 50 million nodes a second), in a _hd_budget scope; without one, each call has
# _HD_DIRECT_BUDGET. The library's compiled networks evaluate in such scopes
# (ntkdsl.limits.MAX_QUADRATURE_NODES is this value).
_HD_NETWORK_BUDGET = 2 ** 26


# The budget scopes' thread-local state: a ``threading.local`` that the library's evaluation
# installs (a runtime module imports only numpy); None in a standalone module, where each
# call keeps its own budget only.
_HD_SCOPE = None


def _hd_scope():
    """This thread's budget state (see _HD_SCOPE), or None."""
    return _HD_SCOPE


class _hd_budget:
    """A scope (``with _hd_budget():``) in which every nested quadrature of this thread
    draws on one budget of _HD_NETWORK_BUDGET nodes, planned before its function values
    are computed: one evaluation of a network's layers. A scope inside another shares the
    outer one's."""

    def __enter__(self):
        self.scope = _hd_scope()
        self.outer = None if self.scope is None else getattr(self.scope, "left", None)
        if self.scope is not None and self.outer is None:
            self.scope.left = _HD_NETWORK_BUDGET
        return self

    def __exit__(self, *exc):
        if self.scope is not None and self.outer is None:
            self.scope.left = None
        return False


def _hd_direct_new(f, g, kinks, q1, q2, c):
    """_hd_direct for entries not computed before, under the budget."""
    plans, used = [], 0
    scope = _hd_scope()
    left = getattr(scope, "left", None)  # what the network's evaluation has left, if scoped
    for i in range(len(c)):
        plan, cost = _hd_direct_plan(f, kinks, q1[i], q2[i], c[i], g)
        used += cost
        if used > _HD_DIRECT_BUDGET:  # many kinks within reach, or extreme variances
            raise _hd_error(
                f"{getattr(f, 'label', 'activation')}: {len(c)} entries with variances up to "
                f"{max(q1.max(), q2.max()):.6g} and correlations up to {numpy.abs(c).max():.12g} "
                f"need more than {_HD_DIRECT_BUDGET:.3g} quadrature nodes ({len(kinks)} kinks), "
                "the numerical route's budget", _HD_SMALLER)
        if left is not None and used > left:  # the layers before used the rest
            raise _hd_error(
                f"{getattr(f, 'label', 'activation')}: {len(c)} entries with variances up to "
                f"{max(q1.max(), q2.max()):.6g} and correlations up to {numpy.abs(c).max():.12g} "
                f"need {used:.3g} quadrature nodes, and the numerical-route layers before it "
                f"have used {_HD_NETWORK_BUDGET - left:.3g} of the {_HD_NETWORK_BUDGET:.3g} that "
                "one evaluation of a network may take (ntkdsl.limits.MAX_QUADRATURE_NODES): "
                "near-collinear inputs at large variances through many layers without a closed "
                "form", "Fewer such layers, smaller weight or bias variances (W_std, b_std), "
                "or an activation with a closed form (Relu, Erf, Gelu, ...).")
        plans.append(plan)
    if left is not None:
        scope.left = left - used
    # After the budget (nothing of φ is evaluated before that refusal).
    far = (_hd_reach(f, numpy.sqrt(q1), q1) > _HD_REACH) | (_hd_reach(g, numpy.sqrt(q2), q2) > _HD_REACH)
    if far.any():  # its grids end at |z| = 14 (widening them squares the node count)
        raise _hd_error(
            f"{getattr(f, 'label', 'activation')}: entries with variances ({q1[far][0]:.6g}, "
            f"{q2[far][0]:.6g}) and correlation {c[far][0]:.12g} need the nested quadrature, "
            "and phi(u)^2 has its mass beyond 14 standard deviations there (phi grows like an "
            "exponential of a large multiple of u), where that quadrature does not reach",
            _HD_SMALLER)
    return numpy.array([_hd_direct_run(f, g, plan) for plan in plans])


def _hd_fix(f, kinks, q1, q2, c, entries, out, g=None):
    """out[entries] by direct quadrature: the entries whose series bound is not met (only
    near-collinear ones with large variances)."""
    out[entries] = _hd_direct(f, kinks, q1, q2, c, g)


# ---------------------------------------------------------------------------------------
# Cross duals E[f(u) g(v)]: the derivatives of a dual in the variances (kernel gradients)
# ---------------------------------------------------------------------------------------

_HD_CROSS_BLOCK = 4096  # entries summed together (a block's term matrix: entries x terms)


def _hd_cross_rows(f, kinks, q):
    """(table, row of each q, relative tails' logs of each q) for a flat array q."""
    distinct, inverse = numpy.unique(q, return_inverse=True)
    table, rows = _hd_table(f, kinks, distinct)
    rows = rows[inverse.ravel()]
    return table, rows


def _hd_cross(f, g, kinks, k, q1, q2):
    """E[f(u) g(v)] for (u, v) ~ N(0, [[q1, k], [k, q2]]), elementwise over broadcast
    arrays, by the Hermite series sum_n a_n^f(q1) a_n^g(q2) c^n. Each entry is summed until
    its Cauchy-Schwarz tail bound (_hd_tail_ok, from the tails relative to E[f(u)^2] and
    E[g(v)^2], as for the dual of one function) is below _HD_TOL;
    collinear entries are the 1-D integral, the entries the series cannot certify are
    computed by nested quadrature. So |error| <= _HD_TOL sqrt(E[f(u)^2] E[g(v)^2]).
    In the kernel-matrix layout most entries are summed together by Horner to a common
    number of terms (_hd_bulk, with the larger of the two tables' tails); the entries
    beyond its reach are computed on their own."""
    k, q1, q2, shape = _hd_layout(k, q1, q2)
    if shape is not None:
        return _hd_cross_flat(f, g, kinks, k, q1, q2).reshape(shape)
    ftable, r1, fbound, inverse1 = _hd_rows(f, kinks, q1)
    gtable, r2, gbound, inverse2 = _hd_rows(g, kinks, q2)
    c, c2 = _hd_correlation(k, inverse1, inverse2)
    plain = {"step": 1, "first": 0}  # the product of two series has no parity to skip
    bulk, reach = _hd_bulk(plain, c2, numpy.maximum(fbound, gbound))
    a1 = ftable["a"][r1, :bulk]
    a2 = numpy.ascontiguousarray(gtable["a"][r2, :bulk].T)
    out = numpy.multiply(a1[:, bulk - 1, None], a2[None, bulk - 1])
    add_outer = _hd_outer_adder(out)
    for n in range(bulk - 2, -1, -1):
        out *= c
        add_outer(a1[:, n], a2[n])
    flat = numpy.flatnonzero(c2 > reach[bulk - 1])
    if flat.size:
        rows, cols = numpy.divmod(flat, c.shape[1])
        out.ravel()[flat] = _hd_cross_flat(f, g, kinks, k[rows, cols], q1[rows], q2[cols])
    return out


def _hd_cross_flat(f, g, kinks, k, q1, q2):
    """_hd_cross for flat arrays of entries, each summed to its own certified length."""
    ftable, r1 = _hd_cross_rows(f, kinks, q1)
    gtable, r2 = _hd_cross_rows(g, kinks, q2)
    c = numpy.clip(k * _hd_inverse_sqrt(q1) * _hd_inverse_sqrt(q2), -1.0, 1.0)
    out = numpy.empty(c.shape)
    collinear = c * c >= (1.0 - _HD_COLLINEAR) ** 2
    if collinear.any():
        out[collinear] = _hd_cross_collinear(f, g, kinks, q1[collinear], q2[collinear],
                                             c[collinear])
    series = numpy.flatnonzero(~collinear)
    for s in range(0, len(series), _HD_CROSS_BLOCK):
        e = series[s:s + _HD_CROSS_BLOCK]
        out[e] = _hd_cross_block(ftable, gtable, f, g, kinks, r1[e], r2[e], q1[e], q2[e], c[e])
    return out


def _hd_cross_collinear(f, g, kinks, q1, q2, c):
    """E[f(u) g(v)] at correlations c = +-1: with equal variances and c = +1 (a
    self-kernel's diagonal) the cross moment, remembered per variance; else integrated."""
    out = numpy.empty(c.shape)
    moment = (c > 0) & (q1 == q2)
    if moment.any():
        out[moment] = _hd_cross_moment(f, g, kinks, q1[moment])
    if not moment.all():
        rest = ~moment
        out[rest] = _hd_collinear(f, kinks, q1[rest], q2[rest], numpy.sign(c[rest]), g)
    return out


def _hd_cross_entries(f, g, ftable, gtable, r1, r2, q1, q2, c, start, reach):
    """(values, complete) as _hd_entries gives them, for E[f(u) g(v)] at a list of entries
    (rows r1 of f's table, r2 of g's): the series from term ``start`` on, each entry summed
    until its bound is met; collinear entries, and those no length certifies, whole."""
    out = numpy.zeros(c.shape)
    complete = c * c >= (1.0 - _HD_COLLINEAR) ** 2
    if complete.any():
        out[complete] = _hd_cross_collinear(f, g, ftable["kinks"], q1[complete], q2[complete],
                                            c[complete])
    series = numpy.flatnonzero(~complete)
    if series.size:
        out[series], done = _hd_entries(ftable, f, r1[series], r2[series], q1[series],
                                        q2[series], c[series], start, reach, g, gtable)
        complete[series] = done
    return out, complete


def _hd_cross_block(ftable, gtable, f, g, kinks, r1, r2, q1, q2, c):
    """The series of a block of entries, each to its own certified length; the entries
    no length certifies by nested quadrature."""
    with numpy.errstate(divide="ignore", invalid="ignore"):
        log_c = numpy.log(numpy.abs(c))
    need = _hd_terms_needed(ftable, r1, r2, log_c, 0, gtable)
    out = numpy.zeros(len(c))
    certified = need <= _HD_TERMS
    if certified.any():
        stop = max(int(need[certified].max()), 1)
        terms = ftable["a"][r1, :stop] * gtable["a"][r2, :stop]
        terms[numpy.arange(stop)[None, :] >= need[:, None]] = 0.0  # each entry's own length
        acc = terms[:, -1].copy()
        for n in range(stop - 2, -1, -1):
            acc *= c
            acc += terms[:, n]
        out[certified] = acc[certified]
    uncertified = numpy.flatnonzero(~certified)
    if uncertified.size:
        out[uncertified] = _hd_direct(f, kinks, q1[uncertified], q2[uncertified], c[uncertified], g)
    return out


def _hd_cross_moment(f, g, kinks, q):
    """E[f(sqrt(q) z) g(sqrt(q) z)] elementwise: the cross dual at correlation 1, once per
    distinct variance per process (kept like the coefficient tables: the chunks of a
    kernel matrix ask for the same variances again and again)."""
    q = numpy.asarray(q, dtype=float)
    distinct, inverse = numpy.unique(q.ravel(), return_inverse=True)
    key = ("cross moment", _hd_key(f, kinks), _hd_key(g, kinks))
    known = _HD_CACHE.get(key)
    if known is None or len(known) > 200000:  # bound memory, as for the tables
        known = _HD_CACHE[key] = {}
    missing = [v for v in distinct.tolist() if v not in known]
    if missing:
        points = numpy.array(missing)
        values = _hd_collinear(f, kinks, points, points, numpy.ones(len(points)), g)
        known.update(zip(missing, values.tolist()))
    return numpy.array([known[v] for v in distinct.tolist()])[inverse.ravel()].reshape(q.shape)


# ---------------------------------------------------------------------------------------
# A layer's duals together: the kernel's and its tangents' series in one call
# ---------------------------------------------------------------------------------------

def _hd_dual_group(fs, kinks, specs, k, q1, q2):
    """Several duals E[φ^(i)(u) φ^(j)(v)] on the same (k, q1, q2), one per spec (i, j, m),
    in one call (fs[n] is φ^(n), the n-th derivative of a smooth φ): a gradient program's
    layer asks for Γ, Γ̇ and the duals of φ's derivatives its tangents need. By Price's
    theorem E[φ^(i)(u) φ^(j)(v)] is the m-th derivative in k of the series of
    E[φ^(i-m)(u) φ^(j-m)(v)], so the specs of one such base share one Horner pass that
    carries its derivatives beside it (_hd_group_horner), and all share the correlation,
    the table rows and the per-call work. Each spec's truncation is chosen and certified
    from the tails of φ^(i) and φ^(j), as _hd_dual (i = j) and _hd_cross (i != j) do, and the
    entries that bound does not cover get their remaining terms on their own (_hd_remainder;
    _hd_cross_entries for i != j), so every result has the bound of the call it replaces
    (Γ and Γ̇ are _hd_dual_pair's numbers). Returns the arrays in the order of ``specs``."""
    k, q1, q2, shape = _hd_layout(k, q1, q2)
    if shape is not None:
        return tuple((_hd_flat(fs[i], kinks, k, q1, q2) if i == j else
                      _hd_cross_flat(fs[i], fs[j], kinks, k, q1, q2)).reshape(shape)
                     for i, j, _ in specs)
    sides = {}
    for n in sorted({n for i, j, m in specs for n in (i, j, i - m, j - m)}):
        table, r1, r2, bound, inverse1, inverse2 = _hd_both_rows(fs[n], kinks, q1, q2)
        sides[n] = (table, r1, r2, bound)
    c, c2 = _hd_correlation(k, inverse1, inverse2)
    reaches, stops, wanted = [], {}, {}
    for i, j, m in specs:
        parity = sides[i][0] if i == j else _hd_product_parity(sides[i][0], sides[j][0])
        bulk, reach = _hd_bulk(parity, c2, numpy.maximum(sides[i][3], sides[j][3]))
        reaches.append(reach)
        # Terms n < stop of the base series give terms n < stop - m of its m-th derivative.
        # A second derivative does not lengthen a base its value or slope is read from
        # (Γ and Γ̇ stay _hd_dual_pair's numbers): its entries beyond get their own terms.
        base = (i - m, j - m)
        target = stops if m < 2 else wanted
        target[base] = min(max(target.get(base, 0), bulk + m), _HD_TERMS)
    for base, stop in wanted.items():
        stops[base] = stops.get(base, stop)
    derivatives = {}
    for base, stop in stops.items():
        orders = sorted({m for i, j, m in specs if (i - m, j - m) == base})
        derivatives[base] = _hd_group_horner(sides[base[0]][0], sides[base[0]][1],
                                             sides[base[1]][0], sides[base[1]][2],
                                             c, c2, stop, orders)
    out = []
    for (i, j, m), reach in zip(specs, reaches):
        base = (i - m, j - m)
        value = derivatives[base][m]
        for _ in range(m):  # d/dk = d/dc / sqrt(q1 q2)
            value *= inverse1[:, None]
            value *= inverse2[None, :]
        terms = stops[base] - m
        if i == j:
            table, r1, r2, _ = sides[i]
            _hd_remainder(table, fs[i], r1, r2, q1, q2, c, c2, terms, reach, value)
        else:  # the cross dual's remainder, as _hd_remainder completes a dual's
            flat = numpy.flatnonzero(c2 > reach[terms - 1])
            if flat.size:
                rows, cols = numpy.divmod(flat, c.shape[1])
                rest, complete = _hd_cross_entries(
                    fs[i], fs[j], sides[i][0], sides[j][0], sides[i][1][rows],
                    sides[j][2][cols], q1[rows], q2[cols], c.ravel()[flat], terms, reach)
                values = value.ravel()  # a view: value is a fresh contiguous array
                values[flat] = numpy.where(complete, rest, values[flat] + rest)
        if m:
            # At a zero variance c = 0 and the chain rule's 1/sqrt(q) is moot: u = 0, so
            # the dual is E[φ^(i)(u)] E[φ^(j)(v)], the first coefficients of both.
            zero1, zero2 = q1 <= 0, q2 <= 0
            if zero1.any() or zero2.any():
                first1 = sides[i][0]["a"][sides[i][1], 0]
                first2 = sides[j][0]["a"][sides[j][2], 0]
                value[zero1, :] = first1[zero1, None] * first2[None, :]
                value[:, zero2] = first1[:, None] * first2[None, zero2]
        out.append(value)
    return tuple(out)


def _hd_product_parity(table1, table2):
    """The parity of the series sum_n a1_n a2_n c**n for _hd_bulk's cost model: that of
    both tables where they have one (φ^(i), φ^(j) both odd or both even: Horner sums
    half the terms), else none."""
    if table1["step"] == 2 and table2["step"] == 2 and table1["first"] % 2 == table2["first"] % 2:
        return {"step": 2, "first": table1["first"] % 2}
    return {"step": 1, "first": 0}


def _hd_group_horner(table1, r1, table2, r2, c, c2, stop, orders):
    """{m: d^m/dc^m P} for m in ``orders``, P = sum_{n<stop} a1[r1, n] a2[r2, n] c**n over
    the block, by Horner's rule carrying the Taylor coefficients D_r = R^(r)/r! of
    R(y) beside R. When both tables have one parity (odd or even φ^(n)), P = c**p R(c**2)
    with p = 0 or 1 and only the live half of the terms is summed."""
    top_order = max(orders)
    step1, step2 = table1["step"], table2["step"]
    p = table1["first"] % 2
    if step1 == 2 and step2 == 2 and table2["first"] % 2 == p and top_order <= 2:
        step, y = 2, c2
    else:
        step, p, y = 1, 0, c
    top = stop - 1 - (stop - 1 - p) % step
    if top < p:
        return {m: numpy.zeros(c.shape) for m in orders}
    a1 = table1["a"][r1, :stop]
    a2 = numpy.ascontiguousarray(table2["a"][r2, :stop].T)
    acc = numpy.multiply(a1[:, top, None], a2[None, top])
    add_outer = _hd_outer_adder(acc)
    taylor = [acc] + [None] * top_order
    for n in range(top - step, p - 1, -step):
        for r in range(top_order, 0, -1):
            if taylor[r] is not None:
                taylor[r] *= y
                taylor[r] += taylor[r - 1]
            elif taylor[r - 1] is not None:
                taylor[r] = taylor[r - 1].copy()
        acc *= y
        add_outer(a1[:, n], a2[n])
    d = [t if t is not None else numpy.zeros(c.shape) for t in taylor]
    if step == 1:  # P = R: P^(m) = m! D_m
        return {m: d[m] * float(numpy.prod(numpy.arange(1, m + 1))) if m > 1 else d[m]
                for m in orders}
    out = {}
    for m in orders:
        if m == 0:
            out[0] = d[0] * c if p else d[0]
        elif m == 1:  # P = R(y): 2c R'; P = c R(y): R + 2y R'
            out[1] = 2.0 * c * d[1] if not p else d[0] + 2.0 * c2 * d[1]
        else:  # P'' = 2R' + 4y R'' (p = 0), 6c R' + 4cy R'' (p = 1), with R'' = 2 D_2
            out[2] = (2.0 * d[1] + 8.0 * c2 * d[2]) if not p else c * (6.0 * d[1] + 8.0 * c2 * d[2])
    return out
