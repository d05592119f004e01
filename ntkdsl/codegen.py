"""Kernel programs -> Python/NumPy source, and that source -> callables.

Printing is sympy's job (its NumPy/SciPy printers, extended only for ``Corr``); this module
lays the printed assignments out as functions, with common subexpressions of each layer
named once. The same source serves the in-library evaluation and standalone modules, so
both compute the same numbers. ``ntkdsl.codegen(arch)`` — this module, called — gives the
source of a standalone module (see ntkdsl.standalone).
"""
from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass

import sympy as sp
from sympy.printing.numpy import SciPyPrinter

from .derivation import Bound, Program, Step, TemplateCache
from .inplace import COLUMN, MATRIX, ROW, Emitter, drop_dead_names
from .symbolic import KernelFunction

_INT64_LIMIT = 2 ** 63


class KernelPrinter(SciPyPrinter):
    """SciPy printer with full-precision floats and modules imported as ``numpy``/``scipy``."""

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "inline": True})

    def _print_Float(self, expr):
        return repr(float(expr))

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
            return "numpy.inf" if value > 0 else "(-numpy.inf)"

    def _print_Pi(self, expr):
        return "numpy.pi"


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


def live_steps(program: Program) -> list[Step]:
    """The program's steps keeping only assignments the outputs depend on (so generated
    code computes nothing it throws away), and dropping steps left empty."""
    needed = set().union(*(sp.sympify(o).free_symbols for o in program.outputs))
    kept: list[Step] = []
    for step in reversed(program.steps):
        if isinstance(step.assignments, Bound):  # without materialising the template
            bound = step.assignments
            live = tuple(i for i, t in enumerate(bound.targets) if t in needed)
            for i in live:
                needed |= bound.free_symbols(i)
            if live:
                kept.append(Step(step.label, bound.restricted(live), step.note))
            continue
        live = tuple(a for a in step.assignments if a.target in needed)
        for a in live:
            needed |= a.expr.free_symbols
        if live:
            kept.append(Step(step.label, live, step.note))
    return kept[::-1]


def _targets(step: Step) -> list[sp.Symbol]:
    if isinstance(step.assignments, Bound):
        return step.assignments.targets
    return [a.target for a in step.assignments]


def input_kinds(program: Program) -> dict[sp.Symbol, str]:
    """Shape kinds of a program's symbols, by the derivation's naming: q1_* are columns
    (one variance per row of x1), q2_* rows, K_* and T_* kernel matrices; the diagonal
    program's q_*, t_* and the width d are small."""
    symbols = set(program.inputs).union(*(_targets(s) for s in program.steps))
    return {s: kind for s in symbols if (kind := symbol_kind(s)) is not None}


def symbol_kind(symbol: sp.Symbol) -> str | None:
    for prefix, kind in (("q1_", COLUMN), ("q2_", ROW), ("K_", MATRIX), ("T_", MATRIX)):
        if symbol.name.startswith(prefix):
            return kind
    return None


def _step_comment(step: Step) -> list[str]:
    return comment_lines(f"{step.label}  [{step.note}]" if step.note else step.label)


def _lines_for_step(step: Step, emitter: Emitter, counter: list[int]) -> list[str]:
    targets = [a.target for a in step.assignments]
    exprs = [a.expr for a in step.assignments]
    symbols = sp.numbered_symbols("_x", start=counter[0])
    shared, reduced = sp.cse(exprs, symbols=symbols)
    counter[0] += len(shared)
    emitter.lines = []
    for symbol, expr in [*shared, *zip(targets, reduced)]:
        emitter.assign(symbol, expr)
    return joint_calls(emitter.lines, exprs, emitter.printer)


@dataclass(frozen=True)
class _StepCode:
    """A template step's statements as a format string: ``{i}`` stands for the i-th name
    of ``names`` (placeholders, targets, then the _x temporaries and _m buffers it uses),
    ``kinds`` the shape kind of each name the statements assign."""

    text: str
    names: tuple[str, ...]
    kinds: dict[str, str]
    temporaries: int
    buffers: int


_STEP_CODE = TemplateCache()


def _template_code(bound: Bound, kinds: tuple[str | None, ...]) -> _StepCode:
    """The statements of a template's live assignments, generated once per template (and
    shape kinds of its inputs): every layer of that kind renames them."""
    key = (bound.template, bound.live, kinds)
    code = _STEP_CODE.get(key)
    if code is None:
        template = bound.template
        step = Step("", tuple(template.step.assignments[i] for i in bound.live))
        emitter = Emitter(KernelPrinter(), {p: k for p, k in zip(template.inputs, kinds)
                                            if k is not None})
        counter = [0]
        lines = _lines_for_step(step, emitter, counter)
        names = ([p.name for p in template.inputs] + [t.name for t in template.targets]
                 + [f"_x{i}" for i in range(counter[0])]
                 + [f"_m{i}" for i in range(1, emitter.count + 1)])
        position = {name: i for i, name in enumerate(names)}
        pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, names)) + r")(?!\w)")
        text = pattern.sub(lambda m: f"{{{position[m.group(1)]}}}",
                           "\n".join(lines).replace("{", "{{").replace("}", "}}"))
        assigned = {s.name: k for s, k in emitter.kinds.items() if s not in template.inputs}
        code = _STEP_CODE[key] = _StepCode(text, tuple(names), assigned, counter[0],
                                           emitter.count)
    return code


def _bound_lines(step: Step, emitter: Emitter, counter: list[int],
                 matrices: set[str]) -> list[str]:
    """A template step's statements renamed for this layer; the emitter learns the kinds
    of its targets, ``matrices`` gets the matrix names it assigns (dropped after their
    last use)."""
    bound = step.assignments
    template = bound.template
    inputs = [bound.binding[p] for p in template.inputs]
    code = _template_code(bound, tuple(emitter.kinds.get(s) for s in inputs))
    rename = {p.name: s.name for p, s in zip(template.inputs, inputs)}
    for i, target in zip(bound.live, bound.targets):
        rename[template.targets[i].name] = target.name
        if (kind := code.kinds.get(template.targets[i].name)) is not None:
            emitter.kinds[target] = kind
    rename.update({f"_x{i}": f"_x{i + counter[0]}" for i in range(code.temporaries)})
    rename.update({f"_m{i}": f"_m{i + emitter.count}" for i in range(1, code.buffers + 1)})
    counter[0] += code.temporaries
    emitter.count += code.buffers
    matrices.update(rename[name] for name, kind in code.kinds.items()
                    if kind == MATRIX and name in rename)
    return code.text.format(*(rename.get(n, n) for n in code.names)).split("\n")


def joint_calls(lines: list[str], exprs: list[sp.Expr], printer) -> list[str]:
    """Where a step calls both of two functions that one helper computes together
    (``KernelFunction.joint``) on the same arguments, the first of the two assignments
    becomes ``a, b = helper(args)`` and the second goes."""
    atoms = set().union(*(e.atoms(KernelFunction) for e in exprs))
    for call in sorted(atoms, key=str):
        joint = call.joint()
        if joint is None or joint[0] not in atoms:
            continue
        partner, helper = joint
        found = [_assignments(lines, printer.doprint(c).split("(")[0]) for c in (call, partner)]
        for args in found[0].keys() & found[1].keys():
            (i, a), (j, b) = found[0][args], found[1][args]
            lines[min(i, j)] = f"{a}, {b} = {helper}({args})"
            del lines[max(i, j)]
            break  # line numbers moved: one pair per call (a step has one of each)
    return lines


def _assignments(lines: list[str], function: str) -> dict[str, tuple[int, str]]:
    """{arguments: (line number, target)} of the lines ``target = function(arguments)``."""
    pattern = re.compile(rf"(\w+) = {re.escape(function)}\((.*)\)")
    found = {}
    for i, line in enumerate(lines):
        m = pattern.fullmatch(line)
        if m is not None:
            found.setdefault(m.group(2), (i, m.group(1)))
    return found


def function_source(program: Program, name: str, doc: str) -> str:
    """Source of ``def name(*inputs)`` returning the program's (nngp, ntk) outputs; only
    assignments the outputs need are computed, matrices in place (ntkdsl.inplace) and
    dropped after their last use."""
    printer = KernelPrinter()
    emitter = Emitter(printer, input_kinds(program))
    counter = [0]
    body: list[str] = []
    matrices: set[str] = set()
    for step in live_steps(program):
        body += _step_comment(step)
        if isinstance(step.assignments, Bound):
            body += _bound_lines(step, emitter, counter, matrices)
        else:
            body += _lines_for_step(step, emitter, counter)
    outputs = [printer.doprint(o) for o in program.outputs]
    matrices |= {str(s) for s, kind in emitter.kinds.items() if kind == MATRIX}
    matrices |= {f"_m{i}" for i in range(1, emitter.count + 1)}
    keep = {str(s) for s in program.inputs} | set(outputs)
    body = drop_dead_names(body, matrices, keep)
    body.append(f"return ({outputs[0]}, {outputs[1]})")
    args = ", ".join(str(s) for s in program.inputs)
    # Split again so the docstring's continuation lines are indented with the body.
    lines = "\n".join([docstring_literal(doc), *body]).split("\n")
    return f"def {name}({args}):\n" + "\n".join(_indent(line) for line in lines) + "\n"


def _indent(line: str) -> str:
    return "    " + line if line else line


def helpers_source(*programs: Program) -> str:
    """Source of the helper functions the programs' KernelFunctions call, each once,
    in a deterministic order."""
    found: dict[str, str] = {}
    templates = set()
    for program in programs:
        exprs = list(program.outputs)
        for step in program.steps:
            if isinstance(step.assignments, Bound):  # each template's expressions once
                if step.assignments.template not in templates:
                    templates.add(step.assignments.template)
                    exprs += [a.expr for a in step.assignments.template.step.assignments]
            else:
                exprs += [a.expr for a in step.assignments]
        for expr in exprs:
            for call in sorted(sp.sympify(expr).atoms(KernelFunction), key=str):
                found.update(call.helpers())
    return "\n\n".join(found[name] for name in sorted(found))


# Modules generated code may call by qualified name (sympy's SciPy printer writes e.g.
# scipy.special.erf, scipy.constants.pi, functools.reduce); each is imported only if used.
IMPORTABLE = ("functools", "math", "numpy", "scipy.constants", "scipy.special")


def required_imports(source: str) -> list[str]:
    """The modules of ``IMPORTABLE`` that ``source`` refers to, in a fixed order."""
    return [m for m in IMPORTABLE if re.search(rf"(?<![\w.]){re.escape(m)}\.", source)]


def needs_scipy(source: str) -> bool:
    return any(m.startswith("scipy") for m in required_imports(source))


def compile_functions(source: str) -> dict:
    """Execute generated source (never user text: only printed sympy expressions, literals
    and escaped comments) and return its namespace."""
    import importlib
    namespace: dict = {}
    for name in ["numpy", *required_imports(source)]:
        importlib.import_module(name)
        top = name.split(".")[0]
        namespace[top] = importlib.import_module(top)
    exec(compile(source, "<ntkdsl generated>", "exec"), namespace)
    return namespace


class _CallableModule(types.ModuleType):
    """Lets ``ntkdsl.codegen(arch)`` (DESIGN §4) give a standalone module's source although
    ``ntkdsl.codegen`` is also this module's name: calling the module calls
    ``ntkdsl.standalone.module_source``, and ``ntkdsl.codegen.function_source`` etc. work as
    for any module, whichever way it was imported."""

    def __call__(self, arch: str) -> str:
        from .standalone import module_source  # standalone builds on this module
        return module_source(arch)


sys.modules[__name__].__class__ = _CallableModule
