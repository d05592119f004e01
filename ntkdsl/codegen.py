"""Kernel programs -> Python/NumPy source, and that source -> callables.

Printing is sympy's job (its NumPy/SciPy printers, extended only for ``Corr``); this module
lays the printed assignments out as functions, with common subexpressions of each layer
named once. The same source serves the in-library evaluation and standalone modules, so
both compute the same numbers.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import SciPyPrinter

from .derivation import Program

# Helpers every generated module starts with (numpy only).
PREAMBLE = '''
def _corr(k, q1, q2):
    """Correlation k / sqrt(q1 q2), clipped to [-1, 1]; 0 where a variance is 0."""
    norm = numpy.sqrt(q1 * q2)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        c = numpy.where(norm > 0, k / numpy.where(norm > 0, norm, 1.0), 0.0)
    return numpy.clip(c, -1.0, 1.0)
'''.lstrip("\n")


class KernelPrinter(SciPyPrinter):
    """SciPy printer with full-precision floats and modules imported as ``numpy``/``scipy``."""

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "inline": True})

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Pi(self, expr):
        return "numpy.pi"


def _lines_for_step(step, printer: KernelPrinter, counter: list[int]) -> list[str]:
    targets = [a.target for a in step.assignments]
    exprs = [a.expr for a in step.assignments]
    symbols = sp.numbered_symbols("_x", start=counter[0])
    shared, reduced = sp.cse(exprs, symbols=symbols, optimizations="basic")
    counter[0] += len(shared)
    lines = [f"# {line}" for line in step.label.splitlines() or [""]]
    lines += [f"{s} = {printer.doprint(e)}" for s, e in shared]
    lines += [f"{t} = {printer.doprint(e)}" for t, e in zip(targets, reduced)]
    return lines


def function_source(program: Program, name: str, doc: str) -> str:
    """Source of ``def name(*inputs)`` returning the program's (nngp, ntk) outputs."""
    printer = KernelPrinter()
    counter = [0]
    body: list[str] = [repr(doc)]  # a literal, so no text can escape the docstring
    for step in program.steps:
        body += _lines_for_step(step, printer, counter)
    outputs = [printer.doprint(o) for o in program.outputs]
    body.append(f"return ({outputs[0]}, {outputs[1]})")
    args = ", ".join(str(s) for s in program.inputs)
    return f"def {name}({args}):\n" + "\n".join("    " + line for line in body) + "\n"


def needs_scipy(source: str) -> bool:
    return "scipy." in source


def compile_functions(source: str) -> dict:
    """Execute generated source (never user text: only printed sympy expressions and
    escaped comments) and return its namespace."""
    import numpy
    namespace: dict = {"numpy": numpy}
    if needs_scipy(source):
        import scipy.special
        namespace["scipy"] = scipy
    exec(compile(PREAMBLE + "\n" + source, "<ntkdsl generated>", "exec"), namespace)
    return namespace
