"""The kernel program: straight-line steps of typed ops over role-tagged variables.

The derivation (ntkdsl.derivation) emits a ``Program``; code generation, formulas,
evaluation and standalone modules read roles, layers and liveness from it — never from
variable names or generated text.

* A ``KernelVariable`` is a sympy symbol that knows its ``role`` (variance of x, variance of x',
  NNGP, NTK, a scalar; on the diagonal, the variance of x with itself and its NTK; for
  convolutional networks the covariance of x with itself across positions), the
  ``layer`` (step number) that assigns it, and its ``layout``: None for one value per
  pair of inputs, ``SAME_POSITIONS`` for one per spatial position (the same position of x
  and x'), ``POSITION_PAIRS`` for one per pair of positions. Its name is only for printing.
* Two kinds of op: an ``ElementwiseOp`` (a sympy expression assigned to a variable) and a
  ``StructuredOp`` (a named linear map with parameters: the input statistics from x and
  x'). Convolution, pooling and flattening are structured linear ops too, written inside
  expressions as functions of one variable (ntkdsl.spatial: ``K_2 = 2*conv3x3(K_1) +
  1/100``), so that a layer's step stays one map from the state before to the state after.
* A ``Step`` is the ops one layer makes; ``Program.live()`` keeps the ones the outputs need.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import sympy as sp

from .errors import ShapeError, Span
from .spatial import check_valid_window, shape_text
from .symbolic import AttributedSymbol


@dataclass(frozen=True)
class Layout:
    """Where a kernel variable's values sit on the spatial grid: at the same position of x
    and x' (``pairs`` False), or at every pair of positions. The number of spatial axes is
    the inputs' (an architecture may fix it, see ``SpatialPlan``)."""

    pairs: bool

    def __repr__(self) -> str:
        return "position pairs" if self.pairs else "same positions"


SAME_POSITIONS = Layout(False)
POSITION_PAIRS = Layout(True)


@dataclass(frozen=True, eq=False)
class Role:
    """What a variable holds: ``name`` for people, ``prefix`` for its printed name,
    ``depends_on`` which inputs (x, x') it is a function of — that fixes its shape in a
    kernel matrix program: x alone a column, x' alone a row, both a matrix, none a scalar."""

    name: str
    prefix: str
    depends_on: frozenset[str]
    positive: bool = False

    def __repr__(self) -> str:
        return f"Role({self.name!r})"

    def __reduce__(self):
        # Roles compare by identity (fast: every variable comparison compares them); a
        # pickled role comes back as the very constant of this module.
        return role_named, (self.name,)


_X, _XP = frozenset({"x"}), frozenset({"x'"})
VARIANCE1 = Role("variance of x", "q1", _X, positive=True)
VARIANCE2 = Role("variance of x'", "q2", _XP, positive=True)
NNGP = Role("NNGP", "K", _X | _XP)
NTK = Role("NTK", "T", _X | _XP)
SCALAR = Role("scalar", "", frozenset())
# The diagonal program pairs x with itself: its variance is its NNGP.
VARIANCE = Role("variance of x (= NNGP of x with itself)", "q", _X, positive=True)
DIAGONAL_NTK = Role("NTK of x with itself", "t", _X)
# Pooling mixes positions, so it needs each input's covariance with itself between every
# two positions (its same-position entries are the variances).
SELF1 = Role("covariance of x across positions", "Q1", _X)
SELF2 = Role("covariance of x' across positions", "Q2", _XP)
SELF = Role("covariance of x across positions (with itself)", "Q", _X)
PAIR_ROLES = (VARIANCE1, VARIANCE2, NNGP, NTK)
DIAGONAL_ROLES = (VARIANCE, DIAGONAL_NTK)
SELF_ROLES = (SELF1, SELF2, SELF)
# Common subexpressions code generation names (_x0, _x1, ...): program-internal values.
TEMPORARY = Role("temporary", "_x", frozenset())
# The derivative of a state variable with respect to one of the architecture's numbers
# (ntkdsl.tangents): the same inputs as the variable, so the same shape in generated code.
TANGENT = {role: Role(f"derivative of the {role.name}", "d" + role.prefix, role.depends_on)
           for role in (*PAIR_ROLES, *DIAGONAL_ROLES, *SELF_ROLES)}
# A number of the architecture that a gradient program takes as an input (a scalar, after
# every other input of the functions generated from it).
PARAMETER = Role("parameter of the architecture", "theta", frozenset())
ROLES = (*PAIR_ROLES, SCALAR, *DIAGONAL_ROLES, *SELF_ROLES, TEMPORARY, *TANGENT.values(),
         PARAMETER)
# A value of x alone computed from x' alone's rule, and back (the two are one map).
MIRRORED = {VARIANCE1: VARIANCE2, VARIANCE2: VARIANCE1, SELF1: SELF2, SELF2: SELF1}
MIRRORED.update({TANGENT[a]: TANGENT[b] for a, b in MIRRORED.items()})


def role_named(name: str) -> Role:
    """The role of that name."""
    return next(r for r in ROLES if r.name == name)


class KernelVariable(AttributedSymbol):
    """A symbol of a kernel program with its role, layer and layout. Two variables are the
    same only if all of these agree (and the name and assumptions, as for any symbol)."""

    attributes = ("role", "layer", "layout")
    role: Role
    layer: int | str | None
    layout: object

    def __new__(cls, name: str, role: Role, layer: int | str | None = None,
                layout: object = None, **assumptions):
        return super().__new__(cls, name, role, layer, layout, **assumptions)

    def at(self, layer: int | str | None) -> KernelVariable:
        """The variable of the same role assigned by ``layer``."""
        return state_variable(self.role, layer, self.layout)


@lru_cache(maxsize=1 << 16)
def state_variable(role: Role, layer: int | str | None, layout: object = None) -> KernelVariable:
    """The kernel-state variable of ``role`` after step ``layer``: real, and positive
    exactly when the role is a variance (cached: a deep network asks for many)."""
    return KernelVariable(f"{role.prefix}_{layer}", role, layer, layout, real=True,
                          positive=role.positive)


@dataclass(frozen=True)
class ElementwiseOp:
    """``target = expr``, elementwise over whatever layout the variables have."""

    target: sp.Symbol
    expr: sp.Expr


Assignment = ElementwiseOp  # the name the rules and tests use


@dataclass(frozen=True)
class StructuredOp:
    """A named linear map from data to variables (``targets``), with parameters: today the
    input statistics (``INPUT_STATISTICS``) that the evaluation computes from x and x'."""

    name: str
    targets: tuple[sp.Symbol, ...]
    params: tuple[tuple[str, object], ...] = ()


INPUT_STATISTICS = "input statistics"  # q1 = x.x/d, q2 = x'.x'/d, K = x.x'/d, and d


@dataclass(frozen=True)
class Step:
    """The ops one layer makes; ``label`` is the layer as written, ``note`` says how its
    dual was obtained (e.g. "closed form") where that is worth stating.

    A derived step's ``assignments`` are a ``Bound`` template: the layer's map is built
    once per kind of layer over placeholder variables and only renamed for each layer, so
    its expressions are materialised only when asked for (formulas), and code generation
    reuses the template's code."""

    label: str
    assignments: tuple[ElementwiseOp, ...]
    note: str = ""

    @property
    def targets(self) -> list[sp.Symbol]:
        if isinstance(self.assignments, Bound):
            return self.assignments.targets
        return [a.target for a in self.assignments]

    @property
    def layer(self) -> int | str | None:
        """The step number: the layer of the variables it assigns."""
        return getattr(self.targets[0], "layer", None) if self.targets else None

    def reads(self, i: int) -> set[sp.Symbol]:
        """The symbols the i-th assignment reads (without materialising a template)."""
        if isinstance(self.assignments, Bound):
            return self.assignments.free_symbols(i)
        return set(self.assignments[i].expr.free_symbols)

    def restricted(self, live: tuple[int, ...]) -> Step:
        """The step with only the assignments at positions ``live``."""
        if isinstance(self.assignments, Bound):
            return Step(self.label, self.assignments.restricted(live), self.note)
        return Step(self.label, tuple(self.assignments[i] for i in live), self.note)


# ---------------------------------------------------------------------------------------
# The spatial plan: what a convolutional architecture asks of its inputs' shape
# ---------------------------------------------------------------------------------------

# How one spatial axis's size changes from the inputs to a layer: the windows passed on
# the way, each (window, stride, padding), in order.
AxisChain = tuple[tuple[int, int, str], ...]


def axis_size(n: int, chain: AxisChain) -> int:
    """The size along an axis of n input positions after the windows of ``chain`` (XLA's
    rule: 'VALID' keeps whole windows, 'SAME' and 'CIRCULAR' ceil(n / stride))."""
    for window, stride, padding in chain:
        n = (n - window) // stride + 1 if padding == "VALID" else -(-n // stride)
    return n


@dataclass(frozen=True)
class WindowCheck:
    """A 'VALID' filter or pooling window must fit its input: ``layer`` as written, where
    (``span``), its ``window`` and the chains of its input's axes."""

    layer: str
    span: Span | None
    window: tuple[int, ...]
    chains: tuple[AxisChain, ...]


@dataclass(frozen=True)
class SameShapeCheck:
    """The branches of a sum must end with one spatial shape: the chains of each branch."""

    layer: str
    span: Span | None
    branches: tuple[tuple[AxisChain, ...], ...]


@dataclass(frozen=True)
class SpatialPlan:
    """What a convolutional architecture needs of its inputs (channels last, ``(n, *S, C)``):
    ``axes``, the number of spatial axes its filters and windows fix (None: any, when only
    Flatten or a global pool acts on them), fixed by ``fixed_by`` (the layer as written and
    its span); ``layout``, that of the input statistics; the windows that must fit, the sums
    whose branches must agree, and the layout and axis chains of every state (for memory)."""

    source: str
    axes: int | None
    fixed_by: tuple[str, Span | None] | None
    layout: Layout
    windows: tuple[WindowCheck, ...]
    sums: tuple[SameShapeCheck, ...]
    states: tuple[tuple[Layout, tuple[AxisChain, ...]], ...]

    def entries_per_pair(self, spatial: tuple[int, ...]) -> int:
        """The most values a kernel variable holds per pair of inputs with this spatial
        shape, after checking that every window fits (ShapeError naming the layer)."""
        for check in self.windows:
            check_valid_window(check.layer, check.window,
                               tuple(axis_size(n, c) for n, c in zip(spatial, check.chains)),
                               source=self.source, span=check.span, inputs=spatial)
        for check in self.sums:
            shapes = [tuple(axis_size(n, c) for n, c in zip(spatial, chains))
                      for chains in check.branches]
            if len(set(shapes)) > 1:
                raise ShapeError(
                    "the branches of this sum end with different spatial shapes for inputs "
                    f"of {shape_text(spatial)}: " + ", ".join(map(shape_text, shapes)),
                    source=self.source, span=check.span,
                    hint="give every branch the same strides and paddings (padding='SAME' "
                         "keeps the shape)")
        most = 1
        for layout, chains in self.states:
            count = 1
            for n, c in zip(spatial, chains):
                count *= axis_size(n, c)
            most = max(most, count * count if layout.pairs else count)
        return most


@dataclass(frozen=True)
class Program:
    """Straight-line kernel code: inputs (made by ``statistics``, a StructuredOp), steps in
    order, outputs (nngp, ntk); ``spatial``, the plan of a convolutional architecture
    (None for a fully-connected one)."""

    inputs: tuple[sp.Symbol, ...]
    steps: tuple[Step, ...]
    outputs: tuple[sp.Expr, ...]
    statistics: StructuredOp | None = field(default=None, compare=False)
    spatial: SpatialPlan | None = field(default=None, compare=False)

    @property
    def diagonal(self) -> bool:
        """Whether this is the program of inputs paired with themselves."""
        return any(getattr(s, "role", None) in DIAGONAL_ROLES for s in self.inputs)

    def variables(self) -> set[sp.Symbol]:
        """Every symbol the program binds: its inputs and every step's targets."""
        return set(self.inputs).union(*(s.targets for s in self.steps))

    def live(self) -> list[Step]:
        """The steps keeping only assignments the outputs depend on (so generated code
        computes nothing it throws away), dropping steps left empty."""
        needed = set().union(*(sp.sympify(o).free_symbols for o in self.outputs))
        kept: list[Step] = []
        for step in reversed(self.steps):
            live = tuple(i for i, t in enumerate(step.targets) if t in needed)
            for i in live:
                needed |= step.reads(i)
            if live:
                kept.append(step.restricted(live))
        return kept[::-1]

    def restricted_to(self, outputs: tuple[sp.Expr, ...]) -> Program:
        """The same program with other outputs (e.g. one kernel only)."""
        return Program(self.inputs, self.steps, outputs, self.statistics, self.spatial)

    def for_roles(self, roles: tuple[Role, ...], inputs: tuple[sp.Symbol, ...],
                  outputs: tuple[sp.Expr, ...]) -> Program:
        """The program computing ``outputs`` from ``inputs`` with only the assignments to
        variables of ``roles``: code generation computes what depends on x alone once per
        input instead of once per pair (every other value it reads is an input here)."""
        steps = []
        for step in self.steps:
            keep = tuple(i for i, t in enumerate(step.targets) if t.role in roles)
            if keep:
                steps.append(step.restricted(keep))
        return Program(inputs, tuple(steps), outputs, self.statistics, self.spatial)

    def composed(self) -> tuple[sp.Expr, ...]:
        """The outputs as expressions in the inputs alone (substituting every step)."""
        env: dict[sp.Symbol, sp.Expr] = {}
        for step in self.steps:
            for a in step.assignments:
                env[a.target] = a.expr.xreplace(env)
        return tuple(sp.sympify(o).xreplace(env) for o in self.outputs)


# ---------------------------------------------------------------------------------------
# Step templates: one layer's map over placeholders, renamed per layer
# ---------------------------------------------------------------------------------------

class TemplateCache(dict):
    """A dict that starts afresh once it holds ``LIMIT`` entries, so a session compiling
    many different architectures stays bounded (steps refer to their templates directly,
    and a template forgotten is rebuilt when next needed)."""

    LIMIT = 4096

    def __setitem__(self, key, value) -> None:
        if len(self) >= self.LIMIT:
            self.clear()
        super().__setitem__(key, value)


@dataclass(frozen=True, eq=False)
class Template:
    """One layer's map over placeholders: ``inputs`` (placeholder variables standing for
    the distinct variables of the input states), ``step`` (its assignments, or None when
    the layer changes nothing) and ``output`` (the state after the layer)."""

    inputs: tuple[sp.Symbol, ...]
    step: Step | None
    output: object

    @cached_property
    def targets(self) -> tuple[sp.Symbol, ...]:
        return tuple(a.target for a in self.step.assignments) if self.step else ()

    @cached_property
    def reads(self) -> tuple[frozenset[sp.Symbol], ...]:
        """The symbols each assignment reads."""
        return tuple(frozenset(a.expr.free_symbols) for a in self.step.assignments)


class Bound(Sequence):
    """A template's assignments with its placeholders bound to one layer's variables. As a
    sequence of assignments it materialises (renames the expressions) on first use; code
    generation works on ``template`` and ``binding`` and never needs to."""

    def __init__(self, template: Template, binding: dict, live: tuple[int, ...] | None = None):
        self.template, self.binding = template, binding
        self.live = tuple(range(len(template.targets))) if live is None else live
        self._materialised = None
        self._targets = None

    @property
    def targets(self) -> list[sp.Symbol]:
        if self._targets is None:
            self._targets = [self.binding[self.template.targets[i]] for i in self.live]
        return self._targets

    def free_symbols(self, i: int) -> set[sp.Symbol]:
        """The symbols the i-th (live) assignment reads, without materialising it."""
        return {self.binding.get(s, s) for s in self.template.reads[self.live[i]]}

    def restricted(self, live: tuple[int, ...]) -> Bound:
        return Bound(self.template, self.binding, tuple(self.live[i] for i in live))

    def _assignments(self) -> tuple[ElementwiseOp, ...]:
        if self._materialised is None:
            step = self.template.step
            self._materialised = tuple(
                ElementwiseOp(self.binding[step.assignments[i].target],
                              step.assignments[i].expr.xreplace(self.binding))
                for i in self.live)
        return self._materialised

    def __iter__(self):
        return iter(self._assignments())

    def __len__(self) -> int:
        return len(self.live)

    def __getitem__(self, i):
        return self._assignments()[i]

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))
