"""AST -> kernel program: the symbolic derivation of the NNGP and NTK (DESIGN §2).

Each layer is one small rule mapping the kernel state (q1, q2, k, t) to the next; the rules
are composed into straight-line ``Program``s with one fresh symbol per layer output, so a
deep network stays a short program instead of an exponentially large expression.

Two programs come out of one AST:
* the *pair* program, over (q1, q2, K, T) for two inputs x and x';
* the *diagonal* program, over (q, t) for x = x', where every correlation is exactly 1
  (``Corr(q, q, q)`` evaluates to 1), so identical inputs get exact values instead of the
  arccos(1 − ε) amplification of rounding.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache, singledispatch

import sympy as sp

from . import activations, expressions, gaussian, limits, numerical, spatial
from .ast import (
    SPATIAL_TYPES,
    Activation,
    Conv,
    Dense,
    Flatten,
    GlobalPool,
    Identity,
    LayerNorm,
    Node,
    Pool,
    Repeat,
    Serial,
    Sum,
    input_axes,
    walk,
)
from .errors import ArchitectureError, LayerValueError, NumericalError, Span
from .program import (
    DIAGONAL_NTK,
    INPUT_STATISTICS,
    NNGP,
    NTK,
    POSITION_PAIRS,
    SAME_POSITIONS,
    SCALAR,
    SELF,
    SELF1,
    SELF2,
    VARIANCE,
    VARIANCE1,
    VARIANCE2,
    Assignment,
    AxisChain,
    Bound,
    KernelVariable,
    Layout,
    Program,
    SameShapeCheck,
    SpatialPlan,
    Step,
    StructuredOp,
    Template,
    TemplateCache,
    WindowCheck,
    state_variable,
)
from .symbolic import AtZeroVariance, Corr, Pair, exact

# Input statistics: q1_0 = x·x/d, q2_0 = x'·x'/d, K_0 = x·x'/d; d = number of features.
D = KernelVariable("d", SCALAR, positive=True, integer=True)


@dataclass(frozen=True)
class State:
    """The kernel state between layers plus what the rules need to check validity.

    For a convolutional architecture ``layout`` is that of k and t (same positions, or
    position pairs where a pooling layer follows); q1 and q2 are then the variances at each
    position, and with position pairs s1 and s2 hold the covariance of x (of x') with
    itself between every two positions. ``shape`` is how each spatial axis's size came
    about (``AxisChain``s): it is not part of a layer's map (templates ignore it)."""

    q1: sp.Expr
    q2: sp.Expr
    k: sp.Expr
    t: sp.Expr
    width: sp.Expr
    gaussian: bool = False      # pre-activations are Gaussian (after a Dense)
    dense_ended: bool = False   # last layer was a Dense: independent of sibling branches
    last: str = "the raw inputs"
    layout: Layout | None = None
    s1: sp.Expr | None = None
    s2: sp.Expr | None = None
    shape: tuple[AxisChain, ...] = ()


# The state's kernel variables and its width, in the order templates see them.
FIELDS = ("q1", "q2", "k", "t", "s1", "s2", "width")
_PAIR_FIELDS = (("q1", VARIANCE1), ("q2", VARIANCE2), ("s1", SELF1), ("s2", SELF2),
                ("k", NNGP), ("t", NTK))
_DIAGONAL_FIELDS = (("q1", VARIANCE), ("s1", SELF), ("t", DIAGONAL_NTK))


def _field_layout(state: State, field: str) -> Layout | None:
    """The layout of a state variable: variances sit at positions, self covariances at
    position pairs, kernels as the state's layout."""
    if state.layout is None:
        return None
    if field in ("q1", "q2"):
        return SAME_POSITIONS
    if field in ("s1", "s2"):
        return POSITION_PAIRS
    return state.layout


# Sympy numbers that are not rationals (sqrt(2)/pi, asin(3/5), ...) stay exact while they
# are small; a larger one is folded to a 30-digit Float, so constants fed through many
# layers (after a Sign, whose variances are exactly 1) do not grow with depth; so is one
# with a rational whose numerator or denominator passes 2**53: each layer of a constant
# variance multiplies the digits (b_std=1e-50 is 1/10**100 squared; Monomial(5) raises them
# to the fifth power), and 1,000 such layers made integers of thousands of digits, minutes
# of arithmetic and printing (past 4,300 digits Python refuses to print an int at all).
_MAX_CONSTANT_OPS = 8
_CONSTANT_DIGITS = 30
_MAX_EXACT_INTEGER = 2 ** 53


def fold_constant(value: sp.Expr) -> sp.Expr:
    """A numeric value kept as it is when small or rational, else evaluated to a Float."""
    if value.is_Float:
        return value
    small = all(abs(r.p) < _MAX_EXACT_INTEGER and r.q < _MAX_EXACT_INTEGER
                for r in value.atoms(sp.Rational))
    if value.is_Rational:
        return value if small else sp.Float(value, _CONSTANT_DIGITS)
    # A numerical dual of numbers is computed now (its evalf runs the engine), however small
    # its expression: kept, it would be the seed of a larger one in every later layer.
    numerical_dual = value.has(numerical.NumericalDual, numerical.NumericalMoment)
    if small and not numerical_dual and sp.count_ops(value) <= _MAX_CONSTANT_OPS:
        return value
    folded = value.evalf(_CONSTANT_DIGITS)
    # A dual the engine cannot compute now (a cross dual of derivatives, one whose moments
    # diverge) stays as it is and is computed, or refused, by the generated code.
    return sp.Float(folded, _CONSTANT_DIGITS) if folded.is_Float else value


class _Builder:
    """Records each layer's new state as fresh symbols (SSA) and collects the steps."""

    def __init__(self, diagonal: bool, source: str, suffix=None):
        self.diagonal, self.source = diagonal, source
        self.steps: list[Step] = []
        self.suffix = suffix  # recording a template: targets are named <name>_<suffix>
        # Pooling layers still to come (position pairs are needed up to the last one), and
        # what the spatial plan collects (see ``_plan``).
        self.pools_left = 0
        self.windows: list[WindowCheck] = []
        self.sums: list[SameShapeCheck] = []
        self.layouts: list[tuple[Layout, tuple[AxisChain, ...]]] = []
        # The latest spatial variable of each (field, layout, shape): the grid on which a
        # constant that follows exact zeros is placed (see ``_on_grid``).
        self.grids: dict[tuple, sp.Symbol] = {}

    def _remember(self, state: State) -> None:
        for field in FIELDS[:-1]:  # not the width
            value, layout = getattr(state, field), _field_layout(state, field)
            if layout is not None and isinstance(value, sp.Symbol):
                self.grids[field, layout, state.shape] = value

    def commit(self, label: str, old: State, new: State, note: str = "",
               span: Span | None = None) -> State:
        index = self.suffix if self.suffix is not None else len(self.steps) + 1
        self._remember(old)
        assignments, values = [], {}
        for field, role in _DIAGONAL_FIELDS if self.diagonal else _PAIR_FIELDS:
            expr = getattr(new, field)
            if expr is None:
                continue
            if expr.is_number:
                expr = fold_constant(expr)
            layout = _field_layout(new, field)
            if layout is not None and expr.is_number and expr != 0:
                expr = self._on_grid(expr, getattr(old, field), label,
                                     (field, layout, new.shape), span)
            if expr == getattr(old, field) or expr.is_number or isinstance(expr, sp.Symbol):
                values[field] = expr
                continue
            symbol = state_variable(role, index, layout)
            assignments.append(Assignment(symbol, expr))
            values[field] = symbol
        if self.diagonal:
            values["q2"] = values["q1"]
            values["k"] = values["s1"] if new.layout == POSITION_PAIRS else values["q1"]
            if new.s1 is not None:
                values["s2"] = values["s1"]
        if assignments:
            self.steps.append(Step(label, tuple(assignments), note))
        return replace(new, **values)

    def _on_grid(self, value: sp.Expr, before: sp.Expr | None, label: str,
                 grid: tuple, span: Span | None) -> sp.Expr:
        """A constant on the spatial grid (the variances after a Sign are exactly 1 at every
        position): the value times ones of the shape the variable had before this
        (element-wise) layer, so the next convolution knows where its padding falls. After
        exact zeros (``Dense(8, W_std=0) > Exp``) there is no variable before it: the ones
        take the shape of the latest variable of the same field, layout and shape (``grid``);
        a template (placeholders, no history) leaves the number for ``layer`` to place."""
        if isinstance(before, sp.Symbol):
            return value * spatial.ones(before)
        if grid in self.grids:
            return value * spatial.ones(self.grids[grid])
        if self.suffix is not None:
            return value
        raise ArchitectureError(
            f"{label}: every value here is the constant {value} at every position, after "
            "values that were exactly 0, and no earlier value has this spatial shape to "
            "place it on (a 'VALID' or strided window changed the shape since)",
            source=self.source, span=span,
            hint="use W_std > 0 or a bias before this layer, or padding='SAME' in between")

    def layer(self, node, states: tuple[State, ...], rule) -> State:
        """``rule(node, *states, builder)`` for one layer, through its template: the rule
        runs once per (layer, pattern of its input state) over placeholders, and each
        layer of that kind renames the template's step — constant work per layer."""
        key, inputs = _pattern(states)
        cache_key = (self.diagonal, type(node), node, key)
        template = _TEMPLATES.get(cache_key)
        for state in states:
            self._remember(state)
        if template is None:
            template = _record(node, _over_placeholders(states, inputs), rule, self)
            _TEMPLATES[cache_key] = template
        if template.step is None:
            binding = dict(zip(template.inputs, inputs))
        else:
            index = len(self.steps) + 1
            binding = dict(zip(template.inputs, inputs))
            binding.update({t: t.at(index) for t in template.targets})
            self.steps.append(Step(str(node), Bound(template, binding), template.step.note))
        out = template.output
        out = replace(out, shape=_next_shape(node, states),
                      **{f: _rebound(getattr(out, f), binding) for f in FIELDS})
        if any(_unplaced(out, f) for f in FIELDS):  # the template left constants to place
            out = self.commit(str(node), states[0], out,
                              template.step.note if template.step else "", node.span)
        self._check_constants(node, out)
        self._plan(node, states, out)
        return out

    def _check_constants(self, node, out: State) -> None:
        """A kernel value that is the same constant for every input (after W_std=0, a
        Sign, a constant activation) is inlined in the generated code, not computed as a
        layer's variable: past float64's range it would be an inf that no layer's variable
        shows, so it is refused here, naming the layer."""
        for field, what in _CONSTANT_FIELDS:
            value = getattr(out, field)
            if value is None or not value.is_number or value.is_Rational:
                continue
            try:
                finite = math.isfinite(float(value))
            except (TypeError, ValueError):  # a numerical dual of constants: computed at run time
                continue
            if not finite:
                raise NumericalError(
                    f"the {what} after {node} is the same constant for every input, "
                    f"{_magnitude(value)}, beyond float64's range (about "
                    f"{limits.FLOAT64_MAX:.2g})", source=self.source, span=node.span,
                    hint="use smaller weight or activation scales (W_std, b_std, the "
                         "activation's parameters) before this layer")

    def _plan(self, node, states: tuple[State, ...], out: State) -> None:
        """What the spatial plan needs of this layer: a 'VALID' window must fit its input,
        the branches of a sum must agree, and every spatial state counts for memory."""
        if isinstance(node, (Conv, Pool)) and node.padding == "VALID":
            window = node.filter_shape if isinstance(node, Conv) else node.window_shape
            self.windows.append(WindowCheck(str(node), node.span, window, states[0].shape))
        if isinstance(node, Sum) and states[0].layout is not None:
            self.sums.append(SameShapeCheck("this sum", node.span,
                                            tuple(o.shape for o in states[1:])))
        if out.layout is not None:
            self.layouts.append((out.layout, out.shape))

    def error(self, message: str, node: Node, hint: str | None = None) -> ArchitectureError:
        return ArchitectureError(message, source=self.source, span=node.span, hint=hint)


def _magnitude(value: sp.Expr) -> str:
    """A number past float64 in words: its power of ten (the number itself can have more
    digits in its exponent than Python prints), or NaN."""
    try:
        exponent = float(sp.log(sp.Abs(value), 10))
    except (TypeError, ValueError):
        return "not a number"
    if math.isnan(exponent):
        return "not a number"
    return f"about 10**{exponent:.4g}" if math.isfinite(exponent) else "infinite"


# The state values a constant can take, and what to call them in an error.
_CONSTANT_FIELDS = (("q1", "variance"), ("q2", "variance"), ("k", "NNGP"), ("t", "NTK"))


# ---------------------------------------------------------------------------------------
# Step templates
# ---------------------------------------------------------------------------------------

TEMPLATE_SUFFIX = "r"        # the layer of a template's targets: q1_r, K_r, ...
_TEMPLATES = TemplateCache()


def _symbol_key(symbol: KernelVariable) -> tuple:
    """What a placeholder must share with the variable it stands for: its role (which
    fixes its shape in generated code), layout and assumptions."""
    return symbol.role, symbol.layout, frozenset(symbol.assumptions0.items())


def _unplaced(state: State, field: str) -> bool:
    """A nonzero number in a spatial variable: a constant not yet on its grid."""
    value = getattr(state, field)
    return (field != "width" and _field_layout(state, field) is not None
            and value is not None and value.is_number and value != 0)


def _pattern(states: tuple[State, ...]) -> tuple[tuple, tuple[sp.Symbol, ...]]:
    """(key, symbols): the key is the states with each distinct symbol (but the width d)
    replaced by its first-occurrence index and kind — numbers and flags as they are;
    ``symbols`` are the distinct symbols in that order."""
    index: dict[sp.Symbol, int] = {}
    key = []
    for state in states:
        for value in (getattr(state, f) for f in FIELDS):
            if isinstance(value, sp.Symbol) and value != D:
                key.append((index.setdefault(value, len(index)), _symbol_key(value)))
            else:
                key.append(value)
        key.append((state.gaussian, state.dense_ended, state.last, state.layout))
    return tuple(key), tuple(index)


def _over_placeholders(states: tuple[State, ...], symbols: tuple[sp.Symbol, ...]):
    """(placeholders, states): each variable replaced by one of the same role, layout and
    assumptions, named <prefix>_p<i>."""
    placeholders = []
    for i, symbol in enumerate(symbols):
        role, layout, assumptions = _symbol_key(symbol)
        placeholders.append(KernelVariable(f"{role.prefix}_p{i}", role, None, layout,
                                     **dict(assumptions)))
    rename = dict(zip(symbols, placeholders))
    return tuple(placeholders), tuple(
        replace(s, **{f: rename.get(getattr(s, f), getattr(s, f)) for f in FIELDS})
        for s in states)


def _record(node, placeholders, rule, b: _Builder) -> Template:
    """Run the rule once over placeholder states (errors name the actual layer)."""
    inputs, states = placeholders
    recorder = _Builder(b.diagonal, b.source, suffix=TEMPLATE_SUFFIX)
    output = rule(node, *states, b=recorder)
    assert len(recorder.steps) <= 1, "a templated rule commits one step"
    return Template(inputs, recorder.steps[0] if recorder.steps else None, output)


# ---------------------------------------------------------------------------------------
# One rule per construct
# ---------------------------------------------------------------------------------------

@singledispatch
def apply(node: Node, state: State, b: _Builder) -> State:
    raise TypeError(f"no kernel rule for {type(node).__name__}")  # pragma: no cover


def _rebound(value: sp.Expr | None, binding: dict) -> sp.Expr | None:
    """A template's output value in one layer's variables (a width after Flatten is an
    expression of a variance: its number of positions)."""
    if value is None or isinstance(value, sp.Symbol):
        return binding.get(value, value)
    return value.xreplace(binding) if value.free_symbols & binding.keys() else value


def _next_shape(node, states: tuple[State, ...]) -> tuple[AxisChain, ...]:
    """How each spatial axis's size came about after ``node`` (a sum: as its first branch
    ends; the evaluation checks that the others agree)."""
    if isinstance(node, Sum):
        return states[1].shape
    shape = states[0].shape
    if isinstance(node, (Conv, Pool)):
        window = node.filter_shape if isinstance(node, Conv) else node.window_shape
        return tuple(chain + ((w, stride, node.padding),)
                     for chain, w, stride in zip(shape, window, node.strides))
    if isinstance(node, (Flatten, GlobalPool)):
        return ()
    return shape


def _templated(rule):
    """The rule for a single layer, run through its template (``_Builder.layer``)."""
    def apply_layer(node, s: State, b: _Builder) -> State:
        return b.layer(node, (s,), rule)
    return apply_layer


def _affine(node: Dense | Conv):
    """The map m -> W_std² m + b_std² of a layer's weights and bias, and W_std²."""
    w2 = exact(node.W_std) ** 2
    bias2 = exact(node.b_std) ** 2 if node.b_std is not None else 0
    return (lambda m: w2 * m + bias2), w2


def _dense(node: Dense, s: State, b: _Builder) -> State:
    """A Dense layer; on spatial inputs it acts on the channels at each position (a 1x1
    convolution), so it maps every entry, position pairs included, alike."""
    affine, w2 = _affine(node)
    k = affine(s.k)
    if node.parameterization == "standard":
        # Gradients of W (scaled by 1/sqrt(n_in) at initialisation) see n_in times the
        # incoming covariance; a bias, present whenever b_std is given, adds 1.
        t = s.width * s.k + w2 * s.t + (1 if node.b_std is not None else 0)
    else:
        t = k + w2 * s.t
    new = replace(s, q1=affine(s.q1), q2=affine(s.q2), k=k, t=t, width=sp.Integer(node.width),
                  gaussian=True, dense_ended=True, last="Dense",
                  s1=None if s.s1 is None else affine(s.s1),
                  s2=None if s.s2 is None else affine(s.s2))
    return b.commit(str(node), s, new)


def _needs_grid(node: Node, s: State, b: _Builder) -> None:
    """A convolution or pooling layer needs spatial axes: not after Flatten or a global
    pool, nor in a fully-connected network."""
    if s.layout is None:
        raise spatial.no_spatial_axes(str(node), s.last, source=b.source, span=node.span)


def _conv(node: Conv, s: State, b: _Builder) -> State:
    """Dense's map with the covariance averaged over the filter window, the same offset at
    both positions (DESIGN §2): K <- W_std² mean_window(K) + b_std², and the NTK
    T <- K_new + W_std² mean_window(T) (standard parameterisation: the fan-in, channels
    times filter size, times mean_window(K), plus 1 for a bias)."""
    _needs_grid(node, s, b)
    affine, w2 = _affine(node)
    pairs = s.layout == POSITION_PAIRS

    def window(m: sp.Expr, on_pairs: bool) -> sp.Expr:
        return spatial.conv(m, node.filter_shape, node.strides, node.padding, on_pairs)

    def mapped(m: sp.Expr | None, on_pairs: bool) -> sp.Expr | None:
        if m is None:
            return None
        out = affine(window(m, on_pairs))
        if out.is_number and out != 0:  # W_std = 0: the bias at every output position
            return out * spatial.ones(window(m, on_pairs)) if not m.is_number else out
        return out

    k = mapped(s.k, pairs)
    if node.parameterization == "standard":
        fan_in = s.width * sp.Mul(*node.filter_shape)
        t = fan_in * window(s.k, pairs) + w2 * window(s.t, pairs) + (
            1 if node.b_std is not None else 0)
    else:
        t = k + w2 * window(s.t, pairs)
    new = replace(s, q1=mapped(s.q1, False), q2=mapped(s.q2, False), k=k, t=t,
                  s1=mapped(s.s1, True), s2=mapped(s.s2, True),
                  width=sp.Integer(node.out_chan), gaussian=True, dense_ended=True,
                  last="Conv")
    return b.commit(str(node), s, new)


def _pool(node: Pool, s: State, b: _Builder) -> State:
    """Average (or sum) pooling: each position of a pair pooled over its own window. The
    variances after it come from the pooled covariance of each input with itself."""
    _needs_grid(node, s, b)
    assert s.layout == POSITION_PAIRS, "pooling is derived on position pairs"

    def pooled(m: sp.Expr | None) -> sp.Expr | None:
        if m is None:
            return None
        return spatial.pool(m, node.window_shape, node.strides, node.padding,
                            node.reduce == "avg")

    s1, s2 = pooled(s.s1), pooled(s.s2)
    new = replace(s, q1=spatial.diagonal(s1), q2=spatial.diagonal(s2), s1=s1, s2=s2,
                  k=pooled(s.k), t=pooled(s.t), last=node.name)
    return b.commit(str(node), s, new)


def _global_pool(node: GlobalPool, s: State, b: _Builder) -> State:
    """Global average (or sum) pooling: the mean (or sum) over every pair of positions;
    one feature vector per input is left, with the channels as its width."""
    _needs_grid(node, s, b)
    assert s.layout == POSITION_PAIRS, "global pooling is derived on position pairs"
    average = node.reduce == "avg"
    new = replace(s, q1=spatial.global_pool(s.s1, average),
                  q2=spatial.global_pool(s.s2, average), k=spatial.global_pool(s.k, average),
                  t=spatial.global_pool(s.t, average), s1=None, s2=None, layout=None,
                  last=node.name)
    return b.commit(str(node), s, new)


def _flatten(node: Flatten, s: State, b: _Builder) -> State:
    """Flatten: the mean over positions of the same-position covariances (neural-tangents'
    stax.Flatten); the width is channels times positions. Its features are Gaussian but not
    alike across positions, so an activation cannot follow it directly (as in
    neural-tangents)."""
    _needs_grid(node, s, b)
    pairs = s.layout == POSITION_PAIRS
    # The number of positions is read from an array of the inputs' variances (or, where
    # those are exactly 0, from the kernel): it depends on the inputs' shape.
    counted = s.q1 if isinstance(s.q1, sp.Symbol) else s.k
    width = s.width * (spatial.positions(counted, pairs and counted is s.k)
                       if isinstance(counted, sp.Symbol) else 1)
    new = replace(s, q1=spatial.flatten(s.q1, False), q2=spatial.flatten(s.q2, False),
                  k=spatial.flatten(s.k, pairs), t=spatial.flatten(s.t, pairs), s1=None,
                  s2=None, layout=None, width=width, gaussian=False, last="Flatten")
    return b.commit(str(node), s, new)


@dataclass(frozen=True)
class SamePositions:
    """Not a layer: the switch from position pairs to same positions after the last
    pooling layer, from where on no position of x meets another of x'."""

    span: object = dataclasses.field(default=None, compare=False)

    def __str__(self) -> str:
        return "(same positions from here on: no pooling follows)"


def _same_positions(node: SamePositions, s: State, b: _Builder) -> State:
    new = replace(s, k=spatial.diagonal(s.k), t=spatial.diagonal(s.t), s1=None, s2=None,
                  layout=SAME_POSITIONS)
    return b.commit(str(node), s, new)


@dataclass(frozen=True)
class Composite:
    """Consecutive activations φ₁ > φ₂ > ...: one activation, the composition φₙ∘…∘φ₁
    (the intermediate values are not Gaussian, so only the composite has a dual)."""

    parts: tuple[Activation, ...]
    span: object = dataclasses.field(default=None, compare=False)  # not part of the dual

    @property
    def name(self) -> str:
        """The parts as written; a run that repeats one block reads as that repeat
        (``Relu * 3``, ``(Relu > Sin) * 2``), as the user wrote it."""
        count = len(self.parts)
        for period in range(1, count // 2 + 1):
            if count % period == 0 and self.parts == self.parts[:period] * (count // period):
                block = " > ".join(str(p) for p in self.parts[:period])
                return f"({block}) * {count // period}" if period > 1 else f"{block} * {count}"
        return " > ".join(str(p) for p in self.parts)

    def __str__(self) -> str:
        return self.name


def phi_of(node: Activation | Composite) -> sp.Expr:
    """φ of an activation (or of a composition) as a sympy expression in ``x``."""
    if isinstance(node, Composite):
        phi = activations.x
        for part in node.parts:
            phi = phi_of(part).xreplace({activations.x: phi})
        return phi
    return activations.lookup(node.name).phi(**node.kwargs)


@cache
def dual_maps(node: Activation | Composite) -> tuple[sp.Expr, sp.Expr, str]:
    """(Γ, Γ̇, route) for an activation, in the placeholder pair (Q1, Q2, K).

    Routes in order: the registry's closed form; Gaussian-integration rules on φ
    (ntkdsl.gaussian); the numerical Hermite-series dual (ntkdsl.numerical). A closed form
    of φ with a jump at 0 gets its exact values at a zero variance (``_exact_at_zero``); one
    whose Gaussian mean has no closed form goes to the numerical route, which is exact
    there by construction (its engine evaluates φ(√q z) at q = 0: φ(0) itself)."""
    spec = None if isinstance(node, Composite) else activations.lookup(node.name)
    gamma = spec.dual(_PLACEHOLDER, **node.kwargs) if spec and spec.dual else None
    route, known_dot = "closed form", None
    if gamma is None:
        phi = phi_of(node)
        gamma, known_dot = gaussian.closed_form_dual(phi, activations.x, _PLACEHOLDER,
                                                     activations.REGISTRY) or (None, None)
        route = "closed form (Gaussian integration rules)"
    jump = zero_variance_case(node) if gamma is not None else None
    if jump is not None and jump.mean is None:
        gamma = None
    if gamma is None:
        dual, dot = numerical.numerical_duals(phi_of(node), activations.x, str(node))
        args = (_PLACEHOLDER.k, _PLACEHOLDER.q1, _PLACEHOLDER.q2)
        return dual(*args), dot(*args), numerical.bound_note(str(node))
    if (spec.zero_derivative(**node.kwargs) if spec
            else activations.derivative_vanishes(phi_of(node))):
        gamma_dot = sp.S.Zero  # φ' = 0 a.e. (Sign, steps, compositions of them)
    elif spec and spec.dual_dot is not None:
        gamma_dot = spec.dual_dot(_PLACEHOLDER, **node.kwargs)
    elif known_dot is not None:
        gamma_dot = known_dot
    else:
        gamma_dot = sp.diff(gamma, _PLACEHOLDER.k)  # Price's theorem
    # Γ̇ keeps its limit at a zero variance: the NTK of a pre-activation that is surely 0
    # is 0 (its gradients vanish with it), so Γ̇ there multiplies an exact 0.
    return (gamma if jump is None else _exact_at_zero(gamma, jump)), gamma_dot, route


_PLACEHOLDER = Pair(sp.Symbol("Q1", positive=True), sp.Symbol("Q2", positive=True),
                    sp.Symbol("K", real=True))


# ---------------------------------------------------------------------------------------
# Zero variance: a pre-activation of variance exactly 0 is exactly 0
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZeroVarianceCase:
    """What an activation φ with a jump at 0 computes on a pre-activation that is surely 0:
    ``value`` = φ(0), and ``mean`` = E[φ(√Q z)] in the placeholder ``MEAN_VARIANCE`` (None
    when sympy finds no closed form). Then E[φ(u)²] = φ(0)² and Γ = φ(0)·E[φ(v)] where
    q1 = 0, where the limit q → 0 averages φ's two sides of the jump instead."""

    value: sp.Expr
    mean: sp.Expr | None

    def mean_at(self, q: sp.Expr, exact_at_zero: bool = True) -> sp.Expr:
        """E[φ(√q z)], exactly φ(0) at q = 0 unless ``exact_at_zero`` is false (the limit)."""
        assert self.mean is not None, "a jump without a closed-form mean is numerical"
        mean = self.mean.xreplace({MEAN_VARIANCE: q})
        return AtZeroVariance(q, self.value, mean) if exact_at_zero else mean


MEAN_VARIANCE = sp.Symbol("Q", positive=True)
_T = sp.Symbol("t", positive=True)
# Functions whose jumps make φ discontinuous (everything else the grammar writes is
# continuous wherever it is finite).
_JUMPS = (sp.Heaviside, sp.sign, sp.Piecewise, sp.floor, sp.ceiling, sp.frac)


def jumps_at_zero(phi: sp.Expr) -> bool:
    """φ is discontinuous at 0: φ(0) differs from a one-sided limit there (sign, steps;
    not relu or x*sign(x)). Undecidable limits count as a jump: the exact zero-variance
    value is right for any φ, only dearer."""
    if not phi.has(*_JUMPS):
        return False
    at_zero = phi.subs(activations.x, 0)
    try:
        sides = [_one_sided_limit(phi, side) for side in (1, -1)]
    except (NotImplementedError, ValueError, TypeError):
        return True
    return any((limit - at_zero) != 0 for limit in sides)


def _one_sided_limit(phi: sp.Expr, side: int) -> sp.Expr:
    """lim φ(side·t) as t → 0+; φ(side·t) for t > 0 is often free of t already (sign,
    steps), which saves sympy's limit."""
    near = phi.xreplace({activations.x: side * _T})
    return near if not near.has(_T) else sp.limit(near, _T, 0, "+")


@cache
def zero_variance_case(node: Activation | Composite) -> ZeroVarianceCase | None:
    """The zero-variance values of an activation with a jump at 0, else None."""
    phi = phi_of(node)
    if not jumps_at_zero(phi):
        return None
    return ZeroVarianceCase(phi.subs(activations.x, 0), gaussian_mean(phi))


def gaussian_mean(phi: sp.Expr) -> sp.Expr | None:
    """E[φ(√Q z)], z ~ N(0, 1), in ``MEAN_VARIANCE``, or None without a closed form. By
    symmetry it is E[φ(√Q t) + φ(-√Q t)] / 2 over the half-normal t: for a piecewise-constant
    φ (Sign, steps) that sum is a constant, and sympy's integration (0.4 s on first use) is
    needed only otherwise."""
    scaled = sp.sqrt(MEAN_VARIANCE) * _T
    both_sides = sp.simplify(phi.xreplace({activations.x: scaled})
                             + phi.xreplace({activations.x: -scaled}))
    if not both_sides.has(_T):
        return both_sides / 2
    density = sp.exp(-_T ** 2 / 2) * sp.sqrt(2 / sp.pi)  # the half-normal's
    mean = sp.integrate(both_sides * density, (_T, 0, sp.oo)) / 2
    return None if mean.has(sp.Integral, sp.nan, sp.zoo, sp.oo) else sp.simplify(mean)


def _exact_at_zero(gamma: sp.Expr, jump: ZeroVarianceCase) -> sp.Expr:
    """Γ with φ(0)·E[φ(v)] where q1 = 0 (and symmetrically where q2 = 0), unless Γ gives
    that already: generated code computes a correlation of 0 where a variance is 0, so
    Sign's arcsine is 0 = sign(0)·E[sign(v)] there and needs no test on the matrix."""
    p = _PLACEHOLDER
    at_zero = gamma.replace(Corr, lambda *args: sp.S.Zero).xreplace({p.q1: 0, p.k: 0})
    wanted = jump.value * jump.mean_at(p.q2, exact_at_zero=False)
    if not at_zero.has(sp.nan, sp.zoo) and sp.simplify(at_zero - wanted) == 0:
        return gamma
    return AtZeroVariance(p.q1, jump.value * jump.mean_at(p.q2),
                          AtZeroVariance(p.q2, jump.value * jump.mean_at(p.q1), gamma))


def _variance(gamma: sp.Expr, q: sp.Expr, jump: ZeroVarianceCase | None) -> sp.Expr:
    """E[φ(u)²] for u ~ N(0, q): Γ at q1 = q2 = k = q, where the correlation is exactly 1
    symbolically, so φ with a jump gets φ(0)² at q = 0 explicitly."""
    value = _at(gamma, q, q, q)
    return value if jump is None else AtZeroVariance(q, jump.value ** 2, value)


def _at(expr: sp.Expr, q1: sp.Expr, q2: sp.Expr, k: sp.Expr) -> sp.Expr:
    p = _PLACEHOLDER
    return expr.xreplace({p.q1: q1, p.q2: q2, p.k: k})


def _activation(node: Activation | Composite, s: State, b: _Builder) -> State:
    if not s.gaussian:
        if s.last == "the raw inputs":
            raise b.error(f"{node.name} is applied to the raw inputs; an activation needs "
                          "Gaussian pre-activations", node,
                          hint=f"put a Dense before it, e.g. Dense(512) > {node}")
        raise b.error(f"{node.name} follows {s.last}, whose output is not Gaussian", node,
                      hint=f"put a Dense between them, e.g. {s.last} > Dense(512) > {node}; "
                           "activations written one after another in a chain compose")
    gamma, gamma_dot, route = dual_maps(node)
    jump = zero_variance_case(node) if route.startswith("closed form") else None
    q1, q2 = _variance(gamma, s.q1, jump), _variance(gamma, s.q2, jump)
    if s.layout == POSITION_PAIRS:
        new = _over_pairs(s, b, q1, q2, lambda u, v, m: _at(gamma, u, v, m),
                          lambda u, v, m, t: t * _at(gamma_dot, u, v, m))
    else:
        new = replace(s, q1=q1, q2=q2, k=_at(gamma, s.q1, s.q2, s.k),
                      t=s.t * _at(gamma_dot, s.q1, s.q2, s.k))
    new = replace(new, gaussian=False, dense_ended=False, last=node.name)
    return b.commit(str(node), s, new, note=route)


def _over_pairs(s: State, b: _Builder, q1: sp.Expr, q2: sp.Expr, nngp, ntk) -> State:
    """An element-wise map on position pairs: ``nngp(u, v, m)`` of the covariance m between
    positions with variances u (first position) and v (second), ``ntk(u, v, m, t)`` of the
    NTK t there; q1, q2 are the new variances. The covariance of each input with itself
    keeps them as its same-position entries (correlation exactly 1 there, as on the
    diagonal of a fully-connected kernel); so does the NTK of an input with itself."""
    first, second = spatial.at_first, spatial.at_second

    def self_map(q: sp.Expr, m: sp.Expr, exact: sp.Expr) -> sp.Expr:
        return spatial.with_diagonal(nngp(first(q), second(q), m), exact)

    k = nngp(first(s.q1), second(s.q2), s.k)
    t = ntk(first(s.q1), second(s.q2), s.k, s.t)
    if b.diagonal:  # x' = x: q2 = q1, k = s1; the NTK's same-position entries exact too
        t = spatial.with_diagonal(t, ntk(s.q1, s.q1, s.q1, spatial.diagonal(s.t)))
    return replace(s, q1=q1, q2=q2, k=k, t=t, s1=self_map(s.q1, s.s1, q1),
                   s2=self_map(s.q2, s.s2, q2))


@apply.register
def _identity(node: Identity, s: State, b: _Builder) -> State:
    return s


def _layer_norm(node: LayerNorm, s: State, b: _Builder) -> State:
    if not s.gaussian:
        # A real LayerNorm subtracts the mean over features; for zero-mean Gaussian
        # features that mean vanishes at infinite width, after an activation it does not
        # (as in neural-tangents, which requires Gaussian inputs here too).
        raise b.error(f"LayerNorm needs Gaussian inputs, but it follows {s.last}", node,
                      hint="put it right after a Dense, e.g. Dense(512) > LayerNorm > Relu")
    eps = exact(node.eps)

    def scale(u: sp.Expr, v: sp.Expr) -> sp.Expr:
        return sp.sqrt((eps + u) * (eps + v))

    q1, q2 = s.q1 / (eps + s.q1), s.q2 / (eps + s.q2)
    if s.layout == POSITION_PAIRS:
        new = _over_pairs(s, b, q1, q2, lambda u, v, m: m / scale(u, v),
                          lambda u, v, m, t: t / scale(u, v))
    else:
        new = replace(s, q1=q1, q2=q2, k=s.k / scale(s.q1, s.q2), t=s.t / scale(s.q1, s.q2))
    return b.commit(str(node), s, replace(new, dense_ended=False))


apply.register(Dense, _templated(_dense))
apply.register(Activation, _templated(_activation))
apply.register(Composite, _templated(_activation))
apply.register(LayerNorm, _templated(_layer_norm))
apply.register(Conv, _templated(_conv))
apply.register(Pool, _templated(_pool))
apply.register(GlobalPool, _templated(_global_pool))
apply.register(Flatten, _templated(_flatten))
apply.register(SamePositions, _templated(_same_positions))

_POOLS = (Pool, GlobalPool)


def _apply_layer(layer: Node, s: State, b: _Builder) -> State:
    """``apply``, after switching from position pairs to same positions once no pooling
    layer is left (the cheap layout for the rest of the network)."""
    if s.layout == POSITION_PAIRS and b.pools_left == 0:
        s = apply(SamePositions(), s, b)
    out = apply(layer, s, b)
    if isinstance(layer, _POOLS):
        b.pools_left -= 1
    return out


@apply.register(Serial)
@apply.register(Repeat)
def _serial(node: Serial | Repeat, s: State, b: _Builder) -> State:
    for layer in _compose_runs(_written_out(node)):
        if isinstance(layer, Composite):
            _check_composed(layer, b.source)
        s = _apply_layer(layer, s, b)
    return s


def _check_composed(run: Composite, source: str) -> None:
    """A run of activations composes into one φ: at most MAX_COMPOSED parts, and of a
    degree in x within MAX_FN_DEGREE, as an Fn of the same expression would be (each
    function call one factor): (Polynomial([1, 1, 1])) * 8 is of degree 256, and the
    Gaussian-integration rules expanding it ran for minutes."""
    if len(run.parts) > limits.MAX_COMPOSED:
        raise _too_many_composed(run, source)
    found = expressions.degree(phi_of(run))
    if found > limits.MAX_FN_DEGREE:
        raise LayerValueError(
            f"{run.name} composes into one activation of degree {found:g} in x; the limit is "
            f"{limits.MAX_FN_DEGREE} (ntkdsl.limits.MAX_FN_DEGREE, as for Fn)", source=source,
            span=_run_span(run, source),
            hint="put a Dense between activations, or compose fewer polynomial ones")


def _count_pools(node: Node) -> int:
    """Pooling layers as the derivation meets them (repeats written out, branches too)."""
    if isinstance(node, _POOLS):
        return 1
    if isinstance(node, Repeat):
        return node.times * _count_pools(node.body)
    return sum(_count_pools(child) for child in node.children())


def _run_span(run: Composite, source: str) -> Span | None:
    spans = [p.span for p in run.parts if p.span is not None]
    return Span.at(source, min(s.start for s in spans), max(s.end for s in spans)) if spans else None


def _too_many_composed(run: Composite, source: str) -> LayerValueError:
    return LayerValueError(
        f"{len(run.parts)} activations in a row compose into one activation; the limit is "
        f"{limits.MAX_COMPOSED}", source=source, span=_run_span(run, source),
        hint="put a Dense between activations, or write the composition as one Fn(...)")


def _written_out(node: Node) -> list[Node]:
    """The chain of layers a Serial or Repeat stands for, as if its text were written out:
    parentheses dropped and every repetition copied, so that ``Relu * 2`` means
    ``Relu > Relu`` and ``Relu > (Sin > Cos)`` means ``Relu > Sin > Cos`` (a Sum stays one
    layer of the chain; its branches are chains of their own)."""
    if isinstance(node, Repeat):
        return _written_out(node.body) * node.times
    if isinstance(node, Serial):
        return [layer for part in node.children() for layer in _written_out(part)]
    return [node]


def activation_layers(node: Node) -> Iterator[Activation | Composite]:
    """The activation layers as the derivation applies them, in order: each run of
    activations written one after another is one Composite (``Relu > Sin`` is sin∘relu),
    repeats are written out, and the branches of sums are searched too."""
    for layer in _compose_runs(_written_out(node)):
        if isinstance(layer, (Activation, Composite)):
            yield layer
        else:
            for child in layer.children():
                yield from activation_layers(child)


def _compose_runs(layers) -> list[Node]:
    """Runs of consecutive activations become one Composite activation."""
    out: list = []
    for layer in layers:
        if isinstance(layer, Activation) and out and isinstance(out[-1], (Activation, Composite)):
            previous = out.pop()
            parts = previous.parts if isinstance(previous, Composite) else (previous,)
            out.append(Composite(parts + (layer,), previous.span))
        else:
            out.append(layer)
    return out


@apply.register
def _sum(node: Sum, s: State, b: _Builder) -> State:
    # A branch is independent of its siblings only through a Dense of its own: the
    # state entering the sum is shared by all branches, whatever produced it.
    entering = replace(s, dense_ended=False)
    outs = [_apply_layer(branch, entering, b) for branch in node.branches]
    layouts = {o.layout for o in outs}
    if None in layouts and len(layouts) > 1:
        raise b.error("some branches of this sum end without spatial axes (after Flatten or "
                      "a global pool) and others with them", node,
                      hint="flatten or pool after the sum instead")
    if len(layouts) > 1:  # the last pooling layer was in an earlier branch
        outs = [apply(SamePositions(), o, b) if o.layout == POSITION_PAIRS else o for o in outs]
    return b.layer(node, (s, *outs), _sum_of)


def _sum_of(node: Sum, s: State, *outs: State, b: _Builder) -> State:
    """The state after a sum, from the state entering it and its branches' states."""
    free = [i for i, o in enumerate(outs) if not o.dense_ended]
    if len(free) > 1:
        i, j = free[0], free[1]
        raise b.error(
            f"branches {i + 1} and {j + 1} of this sum are correlated (neither ends in a "
            "Dense), so their kernels do not add", node,
            hint="every branch but one must end in its own Dense (the one may be Identity), "
                 "e.g. Relu > Dense(512) + Identity")
    widths = {o.width for o in outs if o.width.is_Integer}
    if len(widths) > 1:
        raise b.error("branches of a sum must have the same width, got "
                      + ", ".join(str(w) for w in sorted(widths)), node)
    width = widths.pop() if widths else s.width
    pairs = outs[0].layout == POSITION_PAIRS
    new = replace(outs[0], q1=sum(o.q1 for o in outs), q2=sum(o.q2 for o in outs),
                  k=sum(o.k for o in outs), t=sum(o.t for o in outs), width=width,
                  s1=sum(o.s1 for o in outs) if pairs else None,
                  s2=sum(o.s2 for o in outs) if pairs else None,
                  gaussian=all(o.gaussian for o in outs), dense_ended=False, last="a sum")
    return b.commit(str(node), s, new)


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------

# The inputs' assumptions are as they always were (they fix the templates' placeholders).
PAIR_INPUTS = (KernelVariable("q1_0", VARIANCE1, 0, positive=True),
               KernelVariable("q2_0", VARIANCE2, 0, positive=True), KernelVariable("K_0", NNGP, 0, real=True))
DIAG_INPUT = KernelVariable("q_0", VARIANCE, 0, positive=True)


def _spatial_inputs(layout: Layout, diagonal: bool) -> tuple[KernelVariable, ...]:
    """The input statistics of a convolutional network: the variances at each position,
    with position pairs each input's covariance with itself across positions, and the
    kernel (same positions or position pairs)."""
    if diagonal:
        q = KernelVariable("q_0", VARIANCE, 0, SAME_POSITIONS, positive=True)
        return (q,) if not layout.pairs else (q, KernelVariable("Q_0", SELF, 0, layout, real=True))
    variances = (KernelVariable("q1_0", VARIANCE1, 0, SAME_POSITIONS, positive=True),
                 KernelVariable("q2_0", VARIANCE2, 0, SAME_POSITIONS, positive=True))
    selves = (KernelVariable("Q1_0", SELF1, 0, layout, real=True),
              KernelVariable("Q2_0", SELF2, 0, layout, real=True)) if layout.pairs else ()
    return (*variances, *selves, KernelVariable("K_0", NNGP, 0, layout, real=True))


def _start(ast: Node, source: str, diagonal: bool) -> tuple[State, tuple]:
    """The state of the inputs, and the program's inputs (the statistics and d)."""
    if not any(isinstance(n, SPATIAL_TYPES) for n in walk(ast)):
        if diagonal:
            return State(DIAG_INPUT, DIAG_INPUT, DIAG_INPUT, sp.S.Zero, D), (DIAG_INPUT, D)
        return State(*PAIR_INPUTS, sp.S.Zero, D), (*PAIR_INPUTS, D)
    layout = POSITION_PAIRS if _count_pools(ast) else SAME_POSITIONS
    stats = _spatial_inputs(layout, diagonal)
    shape = ((),) * (input_axes(ast, source)[0] or 0)
    if diagonal:
        q, self_cov = stats[0], (stats[1] if layout.pairs else None)
        start = State(q, q, self_cov if layout.pairs else q, sp.S.Zero, D, layout=layout,
                      s1=self_cov, s2=self_cov, shape=shape)
    else:
        q1, q2 = stats[:2]
        s1, s2 = stats[2:4] if layout.pairs else (None, None)
        start = State(q1, q2, stats[-1], sp.S.Zero, D, layout=layout, s1=s1, s2=s2,
                      shape=shape)
    return start, (*stats, D)


def derive(ast: Node, source: str = "", diagonal: bool = False) -> Program:
    """The pair (or diagonal) kernel program of an architecture."""
    builder = _Builder(diagonal, source)
    start, inputs = _start(ast, source, diagonal)
    builder.pools_left = _count_pools(ast)
    end = _apply_layer(ast, start, builder)
    if end.layout is not None:
        raise ArchitectureError(
            f"the network ends with spatial axes (after {end.last}): its kernel would be one "
            "per pair of positions", source=source, span=getattr(ast, "span", None),
            hint="end a convolutional network with Flatten or a global pool and a readout, "
                 "e.g. ... > GlobalAvgPool > Dense(1)")
    outputs = (end.q1 if diagonal else end.k, end.t)
    plan = None
    if start.layout is not None:
        axes, fixed_by = input_axes(ast, source)
        plan = SpatialPlan(source, axes, fixed_by, start.layout, tuple(builder.windows),
                           tuple(builder.sums), tuple(builder.layouts))
    statistics = StructuredOp(INPUT_STATISTICS, inputs,
                              () if plan is None else (("layout", start.layout),))
    return Program(inputs, tuple(builder.steps), outputs, statistics, plan)
