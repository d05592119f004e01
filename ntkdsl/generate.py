"""Kernel programs -> NumPy source, and that source -> a compiled, typed object.

Printing is the printer's job (ntkdsl.printing); matrix expressions become in-place
statements (ntkdsl.inplace). This module lays those statements out as functions: one
step at a time, common subexpressions of each layer named once, Γ/Γ̇ calls that one
helper computes together fused on the expressions, matrices dropped (``del``) after their
last use. The statements are typed (``Statement``: targets, reads), so liveness and the
number of arrays alive at once come from them, and shapes (column, row, matrix) from the
variables' roles. The same source serves the in-library evaluation and standalone modules,
so both compute the same numbers.

``compile_kernels`` returns ``CompiledKernels``: the pair and diagonal callables, the
source, and what evaluation needs to know about them. A fully-connected network's pair
statements on values of one input alone (marked by the emitter) go to a ``side`` function
the evaluation runs once (``hoisted_code``, ``SideValues``); standalone modules keep them in
``pair``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from . import runtime
from .inplace import COLUMN, MATRIX, ROW, Emitter, Statement, comment, slot
from .inplace import SCALAR as SCALAR_SHAPE
from .printing import Needs, NumPyPrinter, compile_source, helpers_text
from .program import (
    MIRRORED,
    NNGP,
    NTK,
    PARAMETER,
    SCALAR,
    SELF1,
    TANGENT,
    TEMPORARY,
    VARIANCE1,
    Bound,
    KernelVariable,
    Program,
    SpatialPlan,
    Step,
    TemplateCache,
)
from .symbolic import ArcCosine, AtZeroVariance, Corr


def comment_lines(text: str) -> list[str]:
    """``text`` as Python comment lines: one ``# ...`` per line of text, with every
    character that could end a comment (\\r, form feed, NUL, U+2028, ...), and any
    non-ASCII one, written as an escape, so no text can leave the comment."""
    return ["# " + _escape_unprintable(line) for line in text.split("\n")]


def _escape_unprintable(text: str) -> str:
    # Non-ASCII is escaped too: generated files are pure ASCII, identical in any encoding.
    return "".join(ch if ch.isascii() and ch.isprintable() else ascii(ch)[1:-1]
                   for ch in text)


def docstring_literal(text: str) -> str:
    """A triple-quoted string literal whose value is exactly ``text``, laid out over the
    same lines. Backslashes and double quotes are escaped, so nothing in the text can close
    the literal; newlines stay, other unprintable or non-ASCII characters become escapes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    lines = [_escape_unprintable(line) for line in escaped.split("\n")]
    return '"""' + "\n".join(lines) + '"""'


_SHAPES = {frozenset({"x"}): COLUMN, frozenset({"x'"}): ROW, frozenset({"x", "x'"}): MATRIX}


def shape_of(symbol: sp.Symbol) -> str | None:
    """The shape of a program variable's values in a kernel function, from its role: one
    per row of x (a column), per row of x' (a row), per pair (a matrix); None for a
    scalar (and for plain symbols, which have no role)."""
    role = getattr(symbol, "role", None)
    return None if role is None else _SHAPES.get(role.depends_on)


# ---------------------------------------------------------------------------------------
# One step's statements, over slots
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepCode:
    """A step's statements over numbered slots: ``inputs`` slots first (the symbols the
    step reads), then ``targets`` (one per assignment), then the ``temporaries`` (common
    subexpressions) and ``buffers`` it made. ``kinds``: the shape of each target slot;
    ``needs``: helpers and modules the statements use."""

    statements: tuple[Statement, ...]
    inputs: int
    targets: tuple[int, ...]
    temporaries: tuple[int, ...]
    buffers: tuple[int, ...]
    kinds: dict[int, str]  # of the targets, temporaries and column or row buffers
    needs: Needs


def step_code(assignments, inputs: tuple[sp.Symbol, ...],
              kinds: tuple[str | None, ...]) -> StepCode:
    """Statements for ``assignments`` reading ``inputs`` of the given shapes."""
    targets = [a.target for a in assignments]
    slots = {s: i for i, s in enumerate([*inputs, *targets])}
    printer = NumPyPrinter()
    emitter = Emitter(printer, {s: k for s, k in zip(inputs, kinds) if k is not None}, slots)
    exprs = _fused([a.expr for a in assignments], emitter)
    # Variables like the program's own, so sympy orders terms over both as it always did.
    temporaries = sp.numbered_symbols("_x", cls=KernelVariable, role=TEMPORARY)
    shared, reduced = sp.cse(exprs, symbols=temporaries)
    emitter.owned_once(shared, reduced)
    for symbol, expr in [*shared, *zip(targets, reduced)]:
        emitter.assign(symbol, expr)
    kinds = {emitter.slots[s]: emitter.kinds[s] for s in [*targets, *(x for x, _ in shared)]
             if s in emitter.kinds}
    buffers = tuple(emitter.buffers)
    # The column and row values matrix operations read are named like common subexpressions.
    named = tuple(i for i in emitter.vectors if i not in buffers)
    return StepCode(tuple(emitter.statements), len(inputs),
                    tuple(slots[t] for t in targets),
                    (*(emitter.slots[s] for s, _ in shared), *named), buffers,
                    {**kinds, **emitter.vectors}, printer.needs())


def _fused(exprs: list[sp.Expr], emitter: Emitter) -> list[sp.Expr]:
    """Where the expressions call both of two functions one helper computes together (the
    printer's ``joint``) on the same arguments, one statement computes both, and the calls
    become the two values it returns; so for the numerical duals of a gradient program's
    layer (the printer's ``series_groups``: Γ, Γ̇ and the duals of φ's derivatives), one
    statement computes them all. An argument the other expressions read too is computed
    once, before the call, and read by both."""
    exprs = _relu_maps(exprs, emitter)
    calls = set().union(*(e.atoms(sp.Function) for e in exprs))
    grouped = [g for g in emitter.printer.series_groups(calls) if emitter.kind(g[0]) == MATRIX]
    for group in grouped:  # a layer's duals of φ's derivatives (a gradient program)
        exprs, shared = _shared_arguments(exprs, group, emitter)
        group = [c.xreplace(shared) for c in group]
        values = emitter.results(emitter.printer.group_helper(group), group[0].args, len(group))
        exprs = [e.xreplace(dict(zip(group, values))) for e in exprs]
    calls = set().union(*(e.atoms(sp.Function) for e in exprs))
    for call in sorted(calls, key=sp.default_sort_key):
        joint = emitter.printer.joint(call, arrays=emitter.kind(call) == MATRIX)
        if joint is None or joint[0] not in calls:
            continue
        exprs, shared = _shared_arguments(exprs, [call, joint[0]], emitter)
        call, partner = call.xreplace(shared), joint[0].xreplace(shared)
        free = emitter.printer.arccosine_slope(call)
        if free is None or not any(e.has(free ** sp.Rational(-1, 2)) for e in exprs):
            first, second = emitter.joint(call)
            exprs = [e.xreplace({call: first, partner: second}) for e in exprs]
            continue
        helper = emitter.printer.joint_helper(call, sine=True)
        first, second, sine = emitter.results(helper, call.args, 3)
        exprs = [_with_sine(e.xreplace({call: first, partner: second}), free, sine)
                 for e in exprs]
    return exprs


def _relu_maps(exprs: list[sp.Expr], emitter: Emitter) -> list[sp.Expr]:
    """A ReLU layer's two maps of matrices, sqrt(q1) sqrt(q2) ArcCosine(1, c) (the NNGP)
    and t ArcCosine(0, c) (the NTK) at c = Corr(k, q1, q2), where the expressions are
    exactly these two and nothing else reads c: one helper computes both (``_relu_maps``,
    fewer passes than the joint arc-cosine call, its products and the correlation apart)."""
    for call in set().union(*(e.atoms(ArcCosine) for e in exprs)):
        order, c = call.args
        if order != 1 or not isinstance(c, Corr):
            continue
        k, q1, q2 = c.args
        nngp = sp.sqrt(q1) * sp.sqrt(q2) * call
        partner = ArcCosine(0, c)
        readers = [i for i, e in enumerate(exprs) if e.has(c)]
        if (len(readers) != 2 or emitter.kind(k) != MATRIX or emitter.kind(q1) != COLUMN
                or emitter.kind(q2) != ROW or nngp not in exprs):
            continue
        first = exprs.index(nngp)
        second = next(i for i in readers if i != first)
        factors = exprs[second].args if exprs[second].is_Mul else ()
        t = next((f for f in factors if f != partner), None)
        if (len(factors) != 2 or partner not in factors or not t.is_Symbol
                or emitter.kind(t) != MATRIX):
            continue
        maps = emitter.relu_maps(k, t, q1, q2)
        exprs = list(exprs)
        exprs[first], exprs[second] = maps
    return exprs


def _with_sine(expr: sp.Expr, free: sp.Expr, sine: sp.Symbol) -> sp.Expr:
    """``expr`` with J_0's slope 1/(2π sqrt(free)), free = 1 − c², read from ``sine`` =
    sqrt(1 − c²)/(2π) (the arc-cosine helper's part) and its test of c = ±1 (free = 0)
    made on sine, which is 0 exactly there too."""
    expr = expr.replace(lambda a: isinstance(a, AtZeroVariance) and a.args[0] == free,
                        lambda a: AtZeroVariance(sine, *a.args[1:]))
    return expr.xreplace({free ** sp.Rational(-1, 2): 1 / (2 * sp.pi * sine)})


def _shared_arguments(exprs: list[sp.Expr], calls: list[sp.Expr], emitter: Emitter):
    """(exprs, {argument: its buffer}): each matrix argument of the first of ``calls``
    (which one helper computes together) that the other expressions read too is computed
    once, before the call, and read by both."""
    rest = [e.xreplace({c: sp.Dummy() for c in calls}) for e in exprs]
    shared = {a: emitter.named(a) for a in calls[0].args
              if not a.is_Symbol and emitter.kind(a) == MATRIX and any(e.has(a) for e in rest)}
    return ([e.xreplace(shared) for e in exprs] if shared else exprs), shared


_STEP_CODE = TemplateCache()


def _template_code(bound: Bound, kinds: tuple[str | None, ...]) -> StepCode:
    """The statements of a template's live assignments, made once per template (and
    shapes of its inputs): every layer of that kind binds its slots to its own names."""
    key = (bound.template, bound.live, kinds)
    code = _STEP_CODE.get(key)
    if code is None:
        template = bound.template
        live = tuple(template.step.assignments[i] for i in bound.live)
        code = _STEP_CODE[key] = step_code(live, template.inputs, kinds)
    return code


# ---------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------

class _Layout:
    """Lays out a function's steps: binds each step's slots to names (program variables
    by their names, temporaries _x<n> and buffers _m<n> numbered through the function) and
    tracks shapes and what the code needs."""

    def __init__(self, program: Program):
        self.kinds = {s: k for s in program.variables() if (k := shape_of(s)) is not None}
        self.statements: list[Statement] = []
        self.matrices: set[str] = set()
        self.printer = NumPyPrinter()
        self.temporaries = self.buffers = 0
        self.labels: dict[str, str] = {}  # variable -> "step l: label", for error messages
        # name -> shape kind of every value the statements make (a name not here: a scalar)
        self.shapes = {s.name: k for s, k in self.kinds.items()}

    def add(self, step: Step) -> None:
        self.statements += [comment(c) for c in _step_comment(step)]
        if isinstance(step.assignments, Bound):
            bound = step.assignments
            inputs = [bound.binding[p] for p in bound.template.inputs]
            code = _template_code(bound, tuple(self.kinds.get(s) for s in inputs))
        else:
            targets = {a.target for a in step.assignments}
            reads = set().union(*(a.expr.free_symbols for a in step.assignments)) - targets
            inputs = sorted(reads, key=sp.default_sort_key)
            code = step_code(step.assignments, tuple(inputs),
                             tuple(self.kinds.get(s) for s in inputs))
        self._bind(code, inputs, step.targets)
        label = f"step {step.layer}: {step.label}"
        for target in step.targets:
            self.labels[target.name] = label

    def _bind(self, code: StepCode, inputs, targets) -> None:
        names = [s.name for s in inputs] + [""] * (max(_slots(code)) + 1 - len(inputs))
        for index, target in zip(code.targets, targets):
            names[index] = target.name
        for index in code.temporaries:
            names[index] = f"_x{self.temporaries}"
            self.temporaries += 1
        for index in code.buffers:
            self.buffers += 1
            names[index] = f"_m{self.buffers}"
            self.matrices.add(names[index])
        for index, target in zip(code.targets, targets):
            if code.kinds.get(index) is not None:
                self.kinds[target] = code.kinds[index]
        self.matrices |= {names[i] for i, k in code.kinds.items() if k == MATRIX}
        self.shapes.update({names[i]: k for i, k in code.kinds.items()})
        self.statements += [s.bound(names) for s in code.statements]
        self.printer.record(code.needs)


def _slots(code: StepCode) -> list[int]:
    return [code.inputs - 1, *code.targets, *code.temporaries, *code.buffers]


def _step_comment(step: Step) -> list[str]:
    return comment_lines(f"{step.label}  [{step.note}]" if step.note else step.label)


@dataclass(frozen=True)
class FunctionCode:
    """A generated function: ``source``, its ``statements`` (with ``del``s), what it
    needs around it, and the step label of each variable it assigns."""

    source: str
    statements: tuple[Statement, ...]
    needs: Needs
    labels: dict[str, str]
    arrays: tuple[str, ...]  # its matrix-shaped inputs


def function_code(program: Program, name: str, doc: str) -> FunctionCode:
    """``def name(*inputs)`` returning the program's outputs (nngp, ntk; or the values a
    convolutional network's pairs read of each input alone) as a tuple; only assignments
    the outputs need are computed, matrices in place (ntkdsl.inplace) and dropped after
    their last use."""
    layout = _laid_out(program)
    return _function(layout, name, doc, [str(s) for s in program.inputs], layout.statements,
                     [layout.printer.doprint(o) for o in program.outputs])


def _laid_out(program: Program) -> _Layout:
    layout = _Layout(program)
    for step in program.live():
        layout.add(step)
    return layout


def _function(layout: _Layout, name: str, doc: str, args: list[str],
              statements: list[Statement], outputs: list[str],
              matrices: bool = True) -> FunctionCode:
    """``def name(*args)`` running ``statements`` (of ``layout``) and returning ``outputs``;
    with ``matrices``, each matrix deleted after its last use."""
    keep = set(args) | set(outputs)
    arrays = tuple(a for a in args if layout.shapes.get(a) == MATRIX)
    if matrices:
        dropped = layout.matrices | {n for n, k in layout.shapes.items() if k == MATRIX}
        statements = with_deletes(statements, dropped - keep)
    body = [s.text for s in statements] + [
        f"return ({', '.join(outputs)}{',' if len(outputs) == 1 else ''})"]
    # Split again so the docstring's continuation lines are indented with the body.
    lines = "\n".join([docstring_literal(doc), *body]).split("\n")
    source = (f"def {name}({', '.join(args)}):\n" + "\n".join(_indent(line) for line in lines)
              + "\n")
    return FunctionCode(source, tuple(statements), layout.printer.needs(), layout.labels, arrays)


@dataclass(frozen=True)
class HoistedCode:
    """A fully-connected network's pair program as two functions: ``side``, its statements
    on values of one input alone (columns, rows) and scalars; ``pair``, those on matrices,
    taking side's outputs (of shape ``kinds``: COLUMN, ROW or SCALAR) as arguments."""

    side: FunctionCode
    pair: FunctionCode
    kinds: tuple[str, ...]


def hoisted_code(program: Program, doc: str) -> HoistedCode:
    """``side(q1_0, q2_0, d)`` and ``pair(K_0, d, *side's outputs)`` (a gradient program's
    parameters last in both) from one layout of the pair program, split in one pass over
    its statements by whether each works on matrices: the evaluation computes the side
    values once for all rows and columns instead of once per chunk of entries."""
    layout = _laid_out(program)
    outputs = [layout.printer.doprint(o) for o in program.outputs]
    side, pair = _partition(layout.statements)
    inputs = [str(s) for s in program.inputs]
    parameters = [str(s) for s in program.inputs if getattr(s, "role", None) is PARAMETER]
    vectors = {n for n in inputs if layout.shapes.get(n) in (COLUMN, ROW)}
    side_inputs = [n for n in inputs if layout.shapes.get(n) != MATRIX]
    pair_inputs = [n for n in inputs if n not in vectors and n not in parameters]
    made = dict.fromkeys([*side_inputs, *(t for s in side for t in s.targets)])
    read = {n for s in pair for n in s.reads}
    read |= {str(v) for o in program.outputs for v in sp.sympify(o).free_symbols}
    given = {*pair_inputs, *parameters}
    values = [n for n in made if n in read and n not in given]
    # Side makes vectors only: nothing worth a del.
    return HoistedCode(_function(layout, "side", doc, side_inputs, side, values, False),
                       _function(layout, "pair", doc, [*pair_inputs, *values, *parameters],
                                 pair, outputs),
                       tuple(layout.shapes.get(n, SCALAR_SHAPE) for n in values))


def _partition(statements: list[Statement]) -> tuple[list[Statement], list[Statement]]:
    """(statements on values of one input alone or scalars, statements on matrices), in
    order, each step's comment lines before its first statement in either."""
    out: dict[bool, list[Statement]] = {False: [], True: []}
    notes: list[Statement] = []
    written: set[bool] = set()
    after_code = True
    for statement in statements:
        if not statement.targets and not statement.reads:  # a comment line
            if after_code:
                notes, written, after_code = [], set(), False
            notes.append(statement)
            continue
        after_code = True
        if statement.matrix not in written:
            out[statement.matrix] += notes
            written.add(statement.matrix)
        out[statement.matrix].append(statement)
    return out[False], out[True]


def function_source(program: Program, name: str, doc: str) -> str:
    """The source of ``function_code``."""
    return function_code(program, name, doc).source


def _indent(line: str) -> str:
    return "    " + line if line else line


def with_deletes(statements: list[Statement], names: set[str]) -> list[Statement]:
    """The statements with a ``del`` for each of ``names`` after the last statement that
    binds or reads it, so a block's matrices are freed as soon as possible."""
    seen: set[str] = set()
    out: list[Statement] = []
    for statement in reversed(statements):  # the first mention from the end is the last use
        dead = [n for n in (*statement.targets, *statement.reads) if n in names and n not in seen]
        if dead:
            seen.update(dead)
            dead = sorted(set(dead))
            out.append(Statement("del " + ", ".join(dead), deletes=tuple(dead)))
        out.append(statement)
    return out[::-1]


def live_arrays(code: FunctionCode) -> int:
    """How many arrays of the chunk's size the function holds at once, at most: a
    statement makes one per target when it reads one (an input matrix or a name made so),
    an alias (``A = B``) only names B's array again, and an array lives until its last
    name is deleted."""
    arrays: dict[str, object] = {name: name for name in code.arrays}
    most = 1
    for n, statement in enumerate(code.statements):
        for name in statement.deletes:
            arrays.pop(name, None)
        if not statement.targets:
            continue
        if statement.alias and statement.reads[0] in arrays:
            arrays[statement.targets[0]] = arrays[statement.reads[0]]
        elif any(name in arrays for name in statement.reads):
            arrays.update({name: (n, i) for i, name in enumerate(statement.targets)})
        most = max(most, len(set(arrays.values())))
    return most


# A few expression temporaries beyond the named arrays (NumPy's own, the Gram slice).
EXTRA_TEMPORARIES = 4


@dataclass(frozen=True)
class SpatialKernels:
    """What a convolutional network's kernel functions need besides ``pair`` and
    ``diagonal``: ``side(*statistics of x, d)``, the values that depend on one input alone,
    computed once per input (``outputs`` names them, ``layouts`` their layouts; the pair
    function reads them for x, then for x'); ``temporaries``, the arrays it holds at once;
    the architecture's ``plan`` (its inputs' shape, ntkdsl.program.SpatialPlan)."""

    side: Callable
    outputs: tuple[str, ...]
    layouts: tuple[object, ...]
    temporaries: int
    plan: SpatialPlan
    nngp_pair: Callable      # ``pair`` computing the NNGP alone (its NTK output is 0)
    nngp_temporaries: int

    @property
    def pairs(self) -> bool:
        """Whether the input statistics are at every pair of positions."""
        return self.plan.layout.pairs


@dataclass(frozen=True)
class SideValues:
    """What a fully-connected network's ``pair`` reads of one input alone, hoisted out of
    it: ``side(q1_0, q2_0, d)`` computes, once per evaluation, every value of the pair
    program that depends on x alone (a column, from q1_0 of shape (n1, 1)), on x' alone (a
    row, from q2_0 of shape (1, n2)) or on neither (a scalar); ``kinds`` says which of the
    three (COLUMN, ROW, SCALAR) each of its outputs is, in the order ``pair`` takes them."""

    side: Callable
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class CompiledKernels:
    """An architecture's kernel functions, compiled: ``pair(K_0, d, *side values)`` with
    ``sides`` (SideValues, the values of one input alone it reads, ``side(q1_0, q2_0, d)``)
    and ``diagonal(q_0, d)``, their ``source``, and what evaluation needs to know of them —
    ``temporaries``, the chunk-sized arrays ``pair`` holds at once (plus a few);
    ``numerical``, whether they call the numerical engine; ``labels``, the step
    (``step l: <layer>``) of each state variable of the diagonal function.

    A convolutional network has ``spatial`` (SpatialKernels) instead of ``sides``: then
    ``pair(K_0, d, *x's side values, *x''s side values)`` and ``diagonal(q_0[, Q_0], d)``
    take the statistics of ntkdsl.runtime.images."""

    pair: Callable
    diagonal: Callable
    source: str
    temporaries: int
    numerical: bool
    labels: dict[str, str]
    spatial: SpatialKernels | None = None
    sides: SideValues | None = None

    def pair_of(self, q1_0, q2_0, K_0, d, *parameters) -> tuple:
        """A fully-connected network's pair outputs for whole statistics (q1_0 a column,
        q2_0 a row): its side values, then ``pair``."""
        return self.pair(K_0, d, *self.sides.side(q1_0, q2_0, d, *parameters), *parameters)


def module_code(functions: list[FunctionCode]) -> tuple[str, Needs]:
    """The helpers the functions need followed by the functions, and what they all need."""
    printer = NumPyPrinter()
    for f in functions:
        printer.record(f.needs)
    needs = printer.needs()
    source = "\n\n".join(filter(None, [helpers_text(needs.helpers),
                                       *(f.source for f in functions)]))
    return source, needs


@dataclass(frozen=True)
class SplitProgram:
    """A convolutional network's pair program split by what its values depend on:
    ``side``, the values of x alone (x' alone is the same map), computed once per input;
    ``pairs``, the kernels of pairs, reading ``side``'s outputs of x and of x' as inputs."""

    side: Program
    pairs: Program


_OWN = (VARIANCE1, SELF1, TANGENT[VARIANCE1], TANGENT[SELF1])
_CROSS = (NNGP, NTK, TANGENT[NNGP], TANGENT[NTK])


def split_program(program: Program) -> SplitProgram:
    """The side and pair parts of a convolutional network's pair program: the pairs'
    kernels (NNGP and NTK roles) read values of one input alone (variances, covariances
    across positions), which the side part computes from x's statistics; x''s are the
    same map of x''s, so the pair part takes the side part's outputs twice."""
    by_key = {(v.role, v.layer, v.layout): v for v in program.variables()
              if getattr(v, "role", None) in MIRRORED}
    cross = program.for_roles(_CROSS, program.inputs, program.outputs)
    read: set[tuple] = set()
    for step in cross.live():
        for i in range(len(step.targets)):
            read |= {(v.role if v.role in _OWN else MIRRORED[v.role], v.layer, v.layout)
                     for v in step.reads(i) if getattr(v, "role", None) in MIRRORED}
    outputs = tuple(sorted((by_key[key] for key in read), key=_by_layer))
    theirs = tuple(by_key.get((MIRRORED[v.role], v.layer, v.layout)) or _mirror(v)
                   for v in outputs)
    statistics = tuple(v for v in program.inputs if getattr(v, "role", None) in _OWN)
    scalars = tuple(v for v in program.inputs if getattr(v, "role", None) is SCALAR)
    # A gradient program's parameters come last, after what the evaluation passes.
    parameters = tuple(v for v in program.inputs if getattr(v, "role", None) is PARAMETER)
    kernel = next(v for v in program.inputs if getattr(v, "role", None) is NNGP)
    return SplitProgram(program.for_roles(_OWN, (*statistics, *scalars, *parameters), outputs),
                        cross.for_roles(_CROSS, (kernel, *scalars, *outputs, *theirs,
                                                 *parameters), program.outputs))


def _by_layer(v: sp.Symbol) -> tuple:
    return (v.layer if isinstance(v.layer, int) else -1, v.role.name, v.name)


def _mirror(v: KernelVariable) -> KernelVariable:
    """The variable of x' mirroring x's ``v`` where the program has none (the pair part does
    not read it): an argument it ignores."""
    role = MIRRORED[v.role]
    return KernelVariable(f"{role.prefix}_{v.layer}", role, v.layer, v.layout, real=True)


def compile_kernels(program: Program, diagonal_program: Program, doc: str) -> CompiledKernels:
    """Generate and compile the pair and diagonal functions of a derivation, and the side
    function computing what pair reads of one input alone (of a convolutional network: the
    values of each input's images, SpatialKernels; else SideValues)."""
    split = split_program(program) if program.spatial is not None else None
    diagonal = function_code(diagonal_program, "diagonal", doc)
    if split is None:
        hoisted = hoisted_code(program, doc)
        pair = hoisted.pair
        functions = [hoisted.side, pair, diagonal]
    else:
        pair = function_code(split.pairs, "pair", doc)
        functions = [pair, diagonal]
        side = function_code(split.side, "side", doc)
        # The NNGP alone needs no NTK maps: half the work of a convolutional network.
        nngp = split.pairs.restricted_to((split.pairs.outputs[0], sp.S.Zero))
        nngp_pair = function_code(nngp, "pair_nngp", doc)
        functions += [side, nngp_pair]
    source, needs = module_code(functions)
    # The source shown is a standalone module's text; what runs binds the runtime modules
    # among the helpers (one numerical engine and cache per process) instead of their text.
    generated = {n: t for n, t in needs.helpers.items() if n not in runtime.HELPER_MODULES}
    running = "\n\n".join(filter(None, [helpers_text(generated),
                                         *(f.source for f in functions)]))
    namespace = compile_source(running, needs.imports, runtime=runtime.bindings(needs.helpers))
    spatial = None
    if split is not None:
        spatial = SpatialKernels(namespace["side"], tuple(str(v) for v in split.side.outputs),
                                 tuple(v.layout for v in split.side.outputs),
                                 live_arrays(side) + EXTRA_TEMPORARIES, program.spatial,
                                 namespace["pair_nngp"], live_arrays(nngp_pair) + EXTRA_TEMPORARIES)
    sides = None if split is not None else SideValues(namespace["side"], hoisted.kinds)
    return CompiledKernels(namespace["pair"], namespace["diagonal"], source,
                           live_arrays(pair) + EXTRA_TEMPORARIES, needs.numerical,
                           diagonal.labels, spatial, sides)


def compile_program(program: Program, name: str = "f", doc: str = "") -> Callable:
    """One program as a function ``name(*inputs)`` (tests, dual functions)."""
    code = function_code(program, name, doc)
    source, needs = module_code([code])
    return compile_source(source, needs.imports)[name]


__all__ = ["CompiledKernels", "comment_lines", "compile_kernels", "compile_program",
           "docstring_literal", "function_code", "function_source", "slot"]
