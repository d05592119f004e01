"""The NumPy backend's printer: sympy expressions -> NumPy/SciPy source.

One printer class owns every target-specific piece of generated code: how a correlation
(``Corr``) and the numerical duals are called, the helper functions those calls need, and
the modules the printed code uses — all recorded while printing, as sympy's own printers
record ``module_imports``. Kernel programs (ntkdsl.generate), the numerical route's φ
functions (ntkdsl.numerical) and finite networks' activations (ntkdsl.finite) all print
through it, so every sympy -> NumPy path handles Max, log1p-type forms and constants alike.

A new target (JAX, CuPy) is a new printer with its runtime; nothing upstream changes.

This module imports sympy, ntkdsl.symbolic, ntkdsl.spatial and ntkdsl.runtime only: the
numerical route, which sits beside the derivation, prints through it too.
"""
from __future__ import annotations

import hashlib
import importlib
import math
from functools import cache

import sympy as sp
from sympy.printing.numpy import SciPyPrinter

from .runtime import embedded_source
from .spatial import SpatialOp, WithDiagonal
from .symbolic import (
    SERIES_BELOW,
    ArcCosine,
    AtZeroVariance,
    ExpCosh,
    ExpSinh,
    PrintedAs,
    SeriesWhere,
    arccos_polynomials,
    arccos_series,
)

# Modules generated code may name (sympy's SciPy printer writes e.g. scipy.special.erf,
# scipy.constants.pi); a module is imported only when the printer used it.
IMPORTABLE = ("functools", "math", "numpy", "scipy.constants", "scipy.special")

_EXP_SINH_SOURCE = '''
def _exp_sinh(m, d):
    """exp(m) sinh(d) as sign(d) exp(m + |d|) (1 - exp(-2|d|)) / 2: no cancellation of two
    exponentials at small d, no inf * 0 where exp(m) underflows and sinh(d) overflows."""
    size = numpy.abs(d)
    return numpy.copysign(numpy.expm1(-2 * size), d) * numpy.exp(m + size) / 2
'''.lstrip("\n")

# Where a step needs both (Γ and Γ̇ of Sin, Cos, sinh/cosh terms): one pass, two
# transcendental calls for the pair.
_EXP_SINH_COSH_SOURCE = '''
def _exp_sinh_cosh(m, d):
    """(exp(m) sinh(d), exp(m) cosh(d)) from one exp and one expm1, in place."""
    size = numpy.abs(d)
    scale = numpy.add(m, size)
    numpy.exp(scale, out=scale)
    half = numpy.multiply(size, -2, out=size)
    numpy.expm1(half, out=half)
    half *= 0.5                       # (exp(-2|d|) - 1) / 2
    sinh = numpy.copysign(half, d)
    half += 1
    same = sinh.shape == scale.shape  # m and d broadcast to d's shape
    return (numpy.multiply(sinh, scale, out=sinh if same else None),
            numpy.multiply(half, scale, out=half if same else None))
'''.lstrip("\n")

_EXP_COSH_SOURCE = '''
def _exp_cosh(m, d):
    """exp(m) cosh(d) as exp(m + |d|) (1 + exp(-2|d|)) / 2 (no inf * 0)."""
    size = numpy.abs(d)
    return numpy.exp(m + size) * (1 + numpy.exp(-2 * size)) / 2
'''.lstrip("\n")


_MEHLER_SERIES_SOURCE = '''
def _mehler_series(order, q1, q2, k, table):
    """sum over n of k**n / n! a_(n+order)(q1) a_(n+order)(q2), a_n(q) = E[phi^(n)(u)]
    for u ~ N(0, q) from ``table`` = (switch, clip, taylor, groups): below the switch a_n is
    the polynomial taylor[n] in q, above it sum exp(rate q) (p(q) cos(turn q) - s(q)
    sin(turn q)) over groups[n] = ((rate, turn, p, s), ...). NaN where |k| > clip or the
    last two terms exceed 2**-60 of the sum (not converged)."""
    switch, clip, taylor, groups = table
    a, b = _mehler_moments(q1, table)[order:], _mehler_moments(q2, table)[order:]
    k = numpy.asarray(k, dtype=numpy.float64)
    inside = numpy.abs(k) <= clip
    kc = numpy.where(inside, k, 0.0)
    m = len(a)
    with numpy.errstate(over="ignore", invalid="ignore"):
        total = numpy.array(a[m - 1] * b[m - 1] + 0.0 * kc, dtype=numpy.float64)  # 0-d too
        for n in range(m - 2, -1, -1):
            total *= kc
            total *= 1.0 / (n + 1)
            total += a[n] * b[n]
        tail, factorial = 0.0 * kc, 1.0
        for n in range(1, m):
            factorial *= n
            if n >= m - 2:
                tail += numpy.abs(a[n] * b[n] * kc ** n) / factorial
        total[~(inside & (tail <= 2.0 ** -60 * numpy.abs(total)))] = numpy.nan
    return total


def _mehler_moments(q, table):
    """[a_0(q), a_1(q), ...] for _mehler_series."""
    switch, _, taylor, groups = table
    q = numpy.asarray(q, dtype=numpy.float64)
    below = q <= switch
    low = numpy.where(below, q, 0.0)
    out = []
    with numpy.errstate(over="ignore", invalid="ignore"):
        for coefficients, parts in zip(taylor, groups):
            series = _mehler_horner(coefficients, low)
            exact = 0.0 * q
            for rate, turn, even, odd in parts:
                value = _mehler_horner(even, q)
                if turn:
                    value = value * numpy.cos(turn * q) - _mehler_horner(odd, q) * numpy.sin(turn * q)
                exact = exact + numpy.exp(rate * q) * value
            out.append(numpy.where(below, series, exact))
    return out


def _mehler_horner(coefficients, q):
    """coefficients[0] + coefficients[1] q + ... by Horner."""
    total = 0.0 * q
    for c in coefficients[::-1]:
        total = total * q + c
    return total
'''.lstrip("\n")


_AT_ZERO_VARIANCE_SOURCE = '''
def _at_zero_variance(q, zero, value):
    """``zero`` where the variance q is exactly 0 (the pre-activation is surely 0), else
    ``value``; float64 even where both are printed as integers."""
    return numpy.asarray(numpy.where(numpy.equal(q, 0.0), zero, value), dtype=numpy.float64)
'''.lstrip("\n")


# The arc-cosine kernels J_n/(2π) (symbolic.ArcCosine): per order, one straight-line
# function generated from J_n's integer polynomials and series (generated code calls it for
# every block of a kernel matrix, so it makes as few passes over c as the textbook form).
_TURN = 1 / (2 * math.pi)

# The closed form's parts at correlations c = cos θ, Cho & Saul's J_n = A_n(c)·φ +
# B_n(c)·sin φ with φ = π − θ: turns = φ/(2π), φ as arccos(−c) (to the last digit as
# φ → 0; exactly 1/2 at c = 1), sine = sin φ/(2π) as √((1 − c)(1 + c))/(2π) (accurate as
# c → 1), free = a buffer of c's shape; near = the entries where φ < SERIES_BELOW, whose
# two terms of size φ cancel (the series takes them, from their φ), or None: one reduction
# (the smallest φ) finds out, so a block without such entries costs no mask. Both parts
# are scaled before they are combined, so rounding is relative to the result. The
# arithmetic operators make the buffers, in c's precision (float32 where the caller
# evaluates in float32); a 0-d c is computed as a one-entry array (the work is in place).
_PARTS_LINES = [
    "turns = -c",
    "numpy.arccos(turns, out=turns)",
    f"near = turns < {SERIES_BELOW!r} if turns.size and turns.min() < {SERIES_BELOW!r} else None",
    "if near is not None:",
    "    phi = turns[near]",
    f"turns *= {_TURN!r}",
    "sine = 1.0 - c",
    "free = 1.0 + c",
    "sine *= free",
    "numpy.sqrt(sine, out=sine)",
    f"sine *= {_TURN!r}",
]

_ARCCOSINE_SERIES_SOURCE = '''
def _arccosine_series(coefficients, phi, power):
    """phi**power * (coefficients[0] + coefficients[1] phi**2 + ...): J_n / (2 pi) where
    its closed form cancels (phi -> 0), by Horner in phi**2."""
    square = phi * phi
    total = numpy.full_like(phi, coefficients[-1])
    for coefficient in coefficients[-2::-1]:
        total *= square
        total += coefficient
    total *= phi ** power
    return total
'''.lstrip("\n")

_ARCCOSINE0_SOURCE = '''
def _arccosine0(n, c):
    """J_0 / (2 pi) = arccos(-c) / (2 pi) at correlations c (n = 0, the order)."""
    turns = numpy.negative(c, out=numpy.empty_like(c))
    numpy.arccos(turns, out=turns)
    turns *= 1 / (2 * numpy.pi)
    return turns
'''.lstrip("\n")


def _horner_lines(coefficients: list[int], factor: str, out: str) -> list[str]:
    """Statements setting the array ``out`` to ``factor`` · p(c), p of degree ≥ 1 with these
    integer coefficients (highest first), by Horner in place."""
    lines = [f"numpy.multiply({factor}, c, out={out})"]
    if coefficients[0] != 1:
        lines.append(f"{out} *= {coefficients[0]}")
    for position, coefficient in enumerate(coefficients[1:], 2):
        if coefficient:
            lines.append(f"{out} += {factor}" if coefficient == 1 else
                         f"{out} += {coefficient} * {factor}")
        if position < len(coefficients):
            lines.append(f"{out} *= c")
    return lines


def _closed_form_lines(n: int, out: str) -> list[str]:
    """Statements computing J_n/(2π) (n ≥ 1) by its closed form into the array ``out`` from
    the parts (_PARTS_LINES)."""
    a, b = (tuple(int(v) for v in p.all_coeffs()) for p in arccos_polynomials(n))
    lines = _horner_lines(list(a), "turns", out)
    if len(b) == 1:
        return lines + [f"{out} += sine" if b[0] == 1 else f"{out} += {b[0]} * sine"]
    return lines + _horner_lines(list(b), "sine", "free") + [f"{out} += free"]


def _series_line(n: int, out: str) -> str:
    """The statement (under ``if near is not None``) putting the series of J_n/(2π) (n ≥ 1)
    where ``near``."""
    series = ", ".join(repr(float(sp.N(s / (2 * sp.pi), 30))) for s in arccos_series(n))
    return f"    {out}[near] = _arccosine_series(({series},), phi, {2 * n + 1})"


_FUNCTION_DOC = """Cho & Saul's closed form A(c) phi + B(c) sin(phi), phi = pi - theta, from
    phi = arccos(-c) and sin(phi) = sqrt((1 - c)(1 + c)), and where phi < 1, whose two terms
    would cancel, a series in phi."""


def _arccosine_function(name: str, doc: str, n: int, orders: tuple[int, ...],
                        sine: bool = False) -> str:
    """Source of ``name``(n, c): J_k/(2π) for each order k of ``orders`` (n, or n and n − 1),
    from one computation of the parts; with ``sine`` also the part sin(φ)/(2π) =
    sqrt(1 − c²)/(2π), which J_0's slope 1/(2π sqrt(1 − c²)) reads (kernel gradients)."""
    results = ["turns" if k == 0 else buffer for k, buffer in zip(orders, ("value", "lower"))]
    results += ["sine"] if sine else []
    scalar = (f"{name}(n, numpy.reshape(c, 1)).reshape(())" if len(orders) == 1 else
              f"tuple(v.reshape(()) for v in {name}(n, numpy.reshape(c, 1)))")
    lines = ["if numpy.ndim(c) == 0:", f"    return {scalar}", *_PARTS_LINES]
    # Without a B_k of degree ≥ 1 to evaluate, free is no one's scratch: it takes J_n.
    scratch = any(len(arccos_polynomials(k)[1].all_coeffs()) > 1 for k in orders if k)
    lines.append("value = numpy.empty_like(c)" if scratch else "value = free")
    for k, buffer in zip(orders, results):
        if k:  # J_0/(2π) is the part turns itself
            lines += ([] if buffer == "value" else [f"{buffer} = numpy.empty_like(c)"])
            lines += _closed_form_lines(k, buffer)
    lines += ["if near is not None:", *(_series_line(k, out) for k, out in zip(orders, results) if k)]
    lines.append(f"return {', '.join(results)}")
    return (f'def {name}(n, c):\n    """{doc} at correlations c = cos(theta), n = {n} as '
            f'written.\n    {_FUNCTION_DOC}"""\n'
            + "".join(f"    {line}\n" for line in lines))


def _arccosine_source(n: int) -> str:
    """Source of _arccosine<n>(n, c) = J_n/(2π) and _arccosine<n>_<n−1>(n, c) = (J_n/(2π),
    J_(n−1)/(2π)), straight-line code (no loops over the orders)."""
    return "\n\n".join([
        _arccosine_function(f"_arccosine{n}", f"J_{n} / (2 pi)", n, (n,)),
        _arccosine_function(f"_arccosine{n}_{n - 1}", f"(J_{n} / (2 pi), J_{n - 1} / (2 pi))",
                            n, (n, n - 1))])


def _relu_maps_source() -> str:
    """Source of ``_relu_maps(k, t, negated, inverse, root1, root2)``: a ReLU layer's two
    maps of a kernel array k with variances q1 (column) and q2 (row), given as
    −1/sqrt(q1), 1/sqrt(q2), sqrt(q1) and sqrt(q2), at the correlations c = k / sqrt(q1 q2),
    clipped to [-1, 1]: sqrt(q1) sqrt(q2) J_1(c)/(2π) and t J_0(c)/(2π) (t the NTK array).
    The same operations on the same values as the correlation, ``_arccosine1_0`` and the
    two products apart, so the same numbers, less one pass: the correlation is made
    negated (its column factor is −1/sqrt(q1), exact), and φ = arccos(−c) is taken on it
    directly instead of on a negated copy; c φ/(2π) is −(−c)(φ/(2π)), exactly."""
    body = [
        "minus = numpy.multiply(k, negated)",
        "numpy.multiply(minus, inverse, out=minus)",
        "numpy.clip(minus, -1.0, 1.0, out=minus)",
        "turns = numpy.arccos(minus)",
        *_PARTS_LINES[2:6],
        "value = numpy.multiply(minus, turns)",
        "sine = 1.0 + minus",
        "numpy.subtract(1.0, minus, out=minus)",
        "sine *= minus",
        "numpy.sqrt(sine, out=sine)",
        f"sine *= {_TURN!r}",
        "numpy.subtract(sine, value, out=value)",
        "if near is not None:",
        _series_line(1, "value"),
        "value *= root1",
        "value *= root2",
        "turns *= t",
        "return value, turns",
    ]
    doc = ('"""(sqrt(q1 q2) J_1(c) / (2 pi), t J_0(c) / (2 pi)) at the correlations\n'
           '    c = k / sqrt(q1 q2) of kernel arrays k, clipped to [-1, 1]: a ReLU layer\'s\n'
           '    maps, as _arccosine1_0 and the products, from minus = -c. negated is\n'
           '    -1 / sqrt(q1) (a column), inverse 1 / sqrt(q2) (a row), root1 and root2\n'
           '    sqrt(q1) and sqrt(q2)."""')
    return (f"def _relu_maps(k, t, negated, inverse, root1, root2):\n    {doc}\n"
            + "".join(f"    {line}\n" for line in body))


@cache
def _arccosine_sine_source(n: int) -> str:
    """Source of _arccosine<n>_<n−1>_sine(n, c): _arccosine<n>_<n−1>'s two values and
    sqrt(1 − c²)/(2π), the part both are made from."""
    return _arccosine_function(f"_arccosine{n}_{n - 1}_sine",
                               f"(J_{n} / (2 pi), J_{n - 1} / (2 pi), sqrt(1 - c**2) / (2 pi))",
                               n, (n, n - 1), sine=True)


@cache
def _arccosine_helpers(n: int) -> dict[str, str]:
    """Helper name -> source for ArcCosine(n, c) and its joint call with order n − 1."""
    if n == 0:
        return {"_arccosine0": _ARCCOSINE0_SOURCE}
    return {"_arccosine_series": _ARCCOSINE_SERIES_SOURCE, f"_arccosine{n}": _arccosine_source(n)}


_RELU_MAPS_SOURCE = _relu_maps_source()


# Helper name -> source. _corr and the in-place emitter's _inv_sqrt are one runtime module's
# text (ntkdsl.runtime.correlation), kept under the name _corr.
_HELPER_KEYS = {"_inv_sqrt": "_corr"}
_HELPER_SOURCES = {"_corr": embedded_source("correlation"),
                   "_stencil": embedded_source("stencil"),
                   "_exp_sinh": _EXP_SINH_SOURCE, "_exp_cosh": _EXP_COSH_SOURCE,
                   "_exp_sinh_cosh": _EXP_SINH_COSH_SOURCE,
                   "_at_zero_variance": _AT_ZERO_VARIANCE_SOURCE,
                   "_mehler_series": _MEHLER_SERIES_SOURCE}


_INT64_LIMIT = 2 ** 63


class NumPyPrinter(SciPyPrinter):
    """SciPy printer with full-precision floats, modules named ``numpy``/``scipy``, and
    elementwise max/min. While printing it records ``helpers`` (name -> source of each
    helper function the printed code calls), the modules it used (``imports()``) and
    whether it called the numerical engine (``numerical``).

    ``names`` maps symbols to the text they print as (code generation prints a template
    step once with numbered slots in place of its variables)."""

    def __init__(self, names: dict | None = None):
        super().__init__({"fully_qualified_modules": True, "inline": True})
        self.names: dict = {} if names is None else names
        self.helpers: dict[str, str] = {}
        self.numerical = False

    # -- what the printed code needs -----------------------------------------------------
    def imports(self) -> list[str]:
        """The modules of ``IMPORTABLE`` the printed code refers to, in a fixed order."""
        return [m for m in IMPORTABLE if m in self.module_imports]

    def record(self, other: Needs) -> None:
        """Take over what code printed elsewhere needs (a cached template step's code)."""
        self.helpers.update(other.helpers)
        for module in other.imports:
            self.module_imports.setdefault(module, set())  # the module is used
        self.numerical |= other.numerical

    def needs(self) -> Needs:
        return Needs(dict(self.helpers), tuple(self.imports()), self.numerical)

    def ufunc(self, qualified: str) -> str:
        """A module-qualified function name (``numpy.multiply``), its module recorded."""
        return self._module_format(qualified)

    def helper(self, name: str) -> str:
        """The name of one of this printer's own helpers (``_corr``, ``_inv_sqrt``), which
        is then part of the output."""
        key = _HELPER_KEYS.get(name, name)
        self.helpers[key] = _HELPER_SOURCES[key]
        self._module_format("numpy.sqrt")  # the helpers are numpy code
        return name

    @staticmethod
    def fresh_result(func) -> bool:
        """Whether a call of ``func`` returns a new array that nothing else refers to, so
        generated code may overwrite it (the numerical engine's results, numpy.where's)."""
        if isinstance(func, type) and issubclass(func, SpatialOp):
            return not func.view
        return _numerical_kind(func) is not None or func in (AtZeroVariance, ArcCosine,
                                                             WithDiagonal, SeriesWhere)

    def affine_call(self, op: SpatialOp, array: str, scale: str, shift: str) -> str:
        """The call of a spatial op's helper that also scales and shifts its result (the
        helper of a convolution or pooling layer takes ``scale`` and ``shift``)."""
        self.helper("_stencil")
        params = "".join(f", {value!r}" for value in op.params)
        return f"{op.helper}({array}{params}, {scale}, {shift})"

    @staticmethod
    def joint(call: sp.Expr, arrays: bool = True) -> tuple[sp.Expr, str] | None:
        """(partner call, helper): where one helper, called as ``helper(*args)``, computes
        ``call`` (first) and the partner (second) together, else None — Γ and Γ̇ of a
        continuous φ on the numerical route (``_hd_dual_pair``), J_n and J_(n−1) of the
        arc-cosine family (``_arccosine<n>_<n−1>``), exp(m)·sinh(d) with
        exp(m)·cosh(d) (``_exp_sinh_cosh``, which works in place: only where the call's
        values are ``arrays``, a matrix)."""
        if isinstance(call, ExpSinh):
            return (ExpCosh(*call.args), "_exp_sinh_cosh") if arrays else None
        if isinstance(call, ArcCosine):  # J_n and J_(n-1): Γ and Γ̇ of the arc-cosine family
            n, c = call.args
            return (ArcCosine(n - 1, c), f"_arccosine{n}_{n - 1}") if n > 0 else None
        cls = type(call)
        if (_numerical_kind(cls) != "dual" or getattr(cls, "dot", None) is None
                or f"_pair_{cls.tag}" not in cls.sources):
            return None
        return cls.dot(*call.args), f"_pair_{cls.tag}"

    @staticmethod
    def arccosine_slope(call: sp.Expr) -> sp.Expr | None:
        """1 − c² for the joint call of J_1 and J_0 at c: J_0's slope 1/(2π sqrt(1 − c²)),
        in a gradient program, then reads the square root the helper computes anyway."""
        if isinstance(call, ArcCosine) and call.args[0] == 1:
            return 1 - call.args[1] ** 2
        return None

    def joint_helper(self, call: sp.Expr, sine: bool = False) -> str:
        """The helper of ``joint(call)``, recorded as used with what it needs; with ``sine``
        (J_1 and J_0) the one that also returns sqrt(1 − c²)/(2π) (``arccosine_slope``)."""
        partner, helper = self.joint(call)
        if isinstance(call, ExpSinh):
            return self.helper(helper)
        if isinstance(call, ArcCosine):
            self._record_arccosine(int(call.args[0]))
            if sine:
                helper = f"{helper}_sine"
                self.helpers[helper] = _arccosine_sine_source(int(call.args[0]))
            return helper
        self._record_numerical(type(call))
        self._record_numerical(type(partner))
        return helper

    @staticmethod
    def series_groups(calls) -> list[list[sp.Expr]]:
        """The numerical duals among ``calls`` that one helper computes together
        (``_hd_dual_group``): those of one smooth φ's derivatives (one SeriesFamily of
        ntkdsl.numerical) on the same arguments, where they are more than Γ and Γ̇ (a
        gradient program's layer), in a fixed order."""
        groups: dict = {}
        for call in sorted(calls, key=sp.default_sort_key):
            family = getattr(type(call), "family", None)
            if _numerical_kind(type(call)) == "dual" and family is not None:
                groups.setdefault((family.key, call.args), []).append(call)
        return [group for group in groups.values()
                if len(group) > 1 and {type(c).orders for c in group} - {(0, 0), (1, 1)}]

    def group_helper(self, group) -> str:
        """The helper computing a group of ``series_groups`` (in that order), its source
        and what it calls recorded. Each E[φ^(i)(u) φ^(j)(v)] is asked for as the m-th
        derivative in k (Price) of the series of E[φ^(i-m)(u) φ^(j-m)(v)], m = min(i, j):
        E[φ''φ''] from Γ's own pass."""
        family = type(group[0]).family
        specs = tuple((i, j, min(i, j)) for i, j in (type(c).orders for c in group))
        for call in group:
            self._record_numerical(type(call))
        names = []
        for n in range(max(max(i, j) for i, j, _ in specs) + 1):
            name, source, modules = family.function(n)
            if name not in self.helpers:  # the dual classes' own text, where they have it
                self.helpers[name] = source
                for module in modules:
                    self.module_imports.setdefault(module, set())
            names.append(name)
        tag = hashlib.sha1(repr((family.key, specs)).encode()).hexdigest()[:12]
        helper = f"_group_{tag}"
        self.helpers[helper] = (f"def {helper}(k, q1, q2):\n"
                                f"    return _hd_dual_group(({', '.join(names)},), "
                                f"{family.points!r}, {specs!r}, k, q1, q2)\n")
        return helper

    # -- printing --------------------------------------------------------------------------
    def _print_Symbol(self, expr):
        name = self.names.get(expr)
        return name if name is not None else super()._print_Symbol(expr)

    _print_Dummy = _print_Symbol

    def _print_Float(self, expr):
        # A constant past float64's range (exp(2e100), the variance after Exp of a constant
        # pre-activation) is infinite in float64: numpy.inf, which the evaluation's
        # finiteness check turns into a NumericalError (repr gave "inf": a NameError).
        value = float(expr)
        return repr(value) if math.isfinite(value) else self._infinity(value)

    def _infinity(self, value: float) -> str:
        if math.isnan(value):
            return self._module_format("numpy.nan")
        return self._module_format("numpy.inf") if value > 0 else f"(-{self._module_format('numpy.inf')})"

    def _print_Integer(self, expr):
        # NumPy takes a Python int beyond int64 as an object, which its ufuncs refuse
        # (numpy.sqrt(2**70) is a TypeError): such an integer is printed as the float it
        # rounds to (inf past float64's range, which the evaluation's finiteness check turns
        # into a NumericalError). Rationals keep exact numerators and denominators.
        value = int(expr)
        if abs(value) < _INT64_LIMIT:
            return str(value)
        try:
            return repr(float(value))
        except OverflowError:
            return self._infinity(value)

    def _print_Pi(self, expr):
        return self._module_format("numpy.pi")

    def _fold(self, name: str, args) -> str:
        out = self._print(args[0])
        for arg in args[1:]:
            out = f"{self._module_format('numpy.' + name)}({out}, {self._print(arg)})"
        return out

    def _print_Max(self, expr):
        return self._fold("maximum", expr.args)

    def _print_Min(self, expr):
        return self._fold("minimum", expr.args)

    def _print_Heaviside(self, expr):
        # numpy's own step: sympy would rewrite Heaviside(f(x)) into a Piecewise whose
        # simplified conditions grow without bound for composed piecewise activations (Elu * 3).
        at_zero = expr.args[1] if len(expr.args) > 1 else sp.Rational(1, 2)
        heaviside = self._module_format("numpy.heaviside")
        return f"{heaviside}({self._print(expr.args[0])}, {self._print(at_zero)})"

    def _print_log(self, expr):
        # log(1 + exp(a)) as logaddexp(0, a): no overflow for a > 709 (Softplus, Mish).
        arg = expr.args[0]
        if isinstance(arg, sp.Add) and len(arg.args) == 2 and sp.S.One in arg.args:
            other = arg.args[0] if arg.args[1] == 1 else arg.args[1]
            if isinstance(other, sp.exp):
                return f"{self._module_format('numpy.logaddexp')}(0, {self._print(other.args[0])})"
        return super()._print_log(expr)

    def _print_AtZeroVariance(self, expr):
        return self._call(self.helper("_at_zero_variance"), expr.args)

    def _print_SeriesWhere(self, expr):
        # Both forms everywhere, one pick per entry: each is finite where the other is used.
        exact, series, *checks = (self._print(a) for a in expr.args)
        absolute = self._module_format("numpy.abs")
        holds = " & ".join([f"~{self._module_format('numpy.isnan')}({series})"]
                           + [f"({absolute}({small}) <= {absolute}({bound}))"
                              for small, bound in zip(checks[::2], checks[1::2])])
        return f"{self._module_format('numpy.where')}({holds}, {series}, {exact})"

    def _print_MehlerSeries(self, expr):
        order, q1, q2, k, table = expr.args
        return f"{self.helper('_mehler_series')}({order}, {self._print(q1)}, {self._print(q2)}, " \
               f"{self._print(k)}, {table.name})"

    def _print_ArcCosine(self, expr):
        self._record_arccosine(int(expr.args[0]))
        return self._call(f"{expr.call}{int(expr.args[0])}", expr.args)

    def relu_maps_helper(self) -> str:
        """The helper of a ReLU layer's two maps (``_relu_maps``), recorded as used with
        what it calls."""
        self.helpers["_arccosine_series"] = _ARCCOSINE_SERIES_SOURCE
        self.helpers["_relu_maps"] = _RELU_MAPS_SOURCE
        self._module_format("numpy.arccos")
        return "_relu_maps"

    def _record_arccosine(self, n: int) -> None:
        self.helpers.update(_arccosine_helpers(n))
        self._module_format("numpy.arccos")  # the helpers are numpy code

    def _call(self, name: str, args) -> str:
        return f"{name}({', '.join(self._print(a) for a in args)})"

    def _print_Function(self, expr):
        # sympy dispatches a Function subclass on its own name only: Corr, exp(m)·sinh(d),
        # ... and the run-time classes of each φ's numerical dual come here.
        if isinstance(expr, PrintedAs):  # one helper each
            return self._call(self.helper(expr.call), expr.args)
        if isinstance(expr, (SpatialOp, WithDiagonal)):  # ntkdsl.runtime.stencil's helpers
            self.helper("_stencil")
            return self._call(expr.helper, expr.args)[:-1] + "".join(
                f", {value!r}" for value in getattr(expr, "params", ())) + ")"
        kind = _numerical_kind(type(expr))
        if kind is None:
            return super()._print_Function(expr)
        self._record_numerical(type(expr))
        return self._call(f"_{kind}_{expr.tag}", expr.args)

    def _record_numerical(self, cls) -> None:
        """A numerical dual or moment is called: its helpers' sources (the engine's among
        them) and modules are then needed."""
        self.helpers.update(cls.sources)
        for module in ("numpy", *cls.modules):
            self.module_imports.setdefault(module, set())  # the module is used
        self.numerical = True


def _numerical_kind(func) -> str | None:
    """'dual' or 'moment' for a numerical-route function class, else None. Recognised by
    the base classes' names: ntkdsl.numerical prints through this module, so importing it
    here would make a cycle."""
    names = {c.__name__ for c in getattr(func, "__mro__", ())}
    if "NumericalDual" in names:
        return "dual"
    if "NumericalMoment" in names:
        return "moment"
    return None


class Needs:
    """What a piece of printed code needs around it: helper sources, modules, and whether
    it calls the numerical engine."""

    __slots__ = ("helpers", "imports", "numerical")

    def __init__(self, helpers: dict[str, str], imports: tuple[str, ...], numerical: bool):
        self.helpers, self.imports, self.numerical = helpers, imports, numerical


def helpers_text(helpers: dict[str, str]) -> str:
    """The helper sources, each once, in a deterministic order."""
    return "\n\n".join(helpers[name] for name in sorted(helpers))


def compile_source(source: str, modules, name: str = "<ntkdsl generated>",
                   runtime: dict | None = None) -> dict:
    """Execute generated source (never user text: only printed sympy expressions, literals
    and escaped comments) with the modules it uses imported, and return its namespace, which
    starts as ``runtime`` (the runtime functions it calls, ``ntkdsl.runtime.bindings``)."""
    namespace: dict = dict(runtime or {})
    for module in ["numpy", *modules]:
        importlib.import_module(module)
        top = module.split(".")[0]
        namespace[top] = importlib.import_module(top)
    exec(compile(source, name, "exec"), namespace)  # printed code, not user text
    return namespace


def function_of(expr: sp.Expr, x: sp.Symbol, name: str = "_f") -> tuple[str, list[str]]:
    """(source of ``def name(x): return <expr> + 0.0 * x``, modules it uses): adding
    ``0.0 * x`` broadcasts a constant expression to the input's shape."""
    printer = NumPyPrinter()
    # Common subexpressions once each: a composed activation (Gelu(approximate=True) * 3)
    # repeats its inner layers' expressions in φ' hundreds of times over, and the numerical
    # route evaluates φ' on millions of nodes.
    shared, (body,) = sp.cse(expr, symbols=sp.numbered_symbols("_s"), optimizations=None)
    lines = "".join(f"    {symbol} = {printer.doprint(value)}\n" for symbol, value in shared)
    return (f"def {name}({x}):\n{lines}    return {printer.doprint(body)} + 0.0 * {x}\n",
            printer.imports())


def numpy_function(expr: sp.Expr, x: sp.Symbol):
    """``expr`` as a NumPy function of ``x`` (same shape as x, constants broadcast)."""
    source, modules = function_of(expr, x)
    return compile_source(source, modules, "<ntkdsl printed function>")["_f"]
