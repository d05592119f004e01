"""Readable derivations: the per-layer assignments and the composed kernel expression,
as sympy objects that print as text and as LaTeX (and render in Jupyter)."""
from __future__ import annotations

from functools import cached_property

import sympy as sp

from .derivation import Program

LEGEND = ("q1_0 = x·x/d, q2_0 = x'·x'/d, K_0 = x·x'/d (d features); "
          "q = variance, K = NNGP, T = NTK after each layer")


class Formula:
    """The derivation of one kernel (``kind`` 'nngp' or 'ntk') of an architecture.

    ``steps``: list of (layer label, [sympy.Eq, ...]) in order; ``expression``: the kernel
    as one sympy expression in the input statistics q1_0, q2_0, K_0 (and d where the
    standard parameterisation uses the input width); ``result``: the symbol or expression
    holding the kernel at the end of ``steps``.
    """

    def __init__(self, arch: str, program: Program, kind: str):
        self.arch, self.kind, self.program = arch, kind, program
        self.result = program.outputs[0 if kind == "nngp" else 1]

    @cached_property
    def steps(self) -> list[tuple[str, list[sp.Eq]]]:
        needed = self.result.free_symbols
        wanted: list[tuple[str, list[sp.Eq]]] = []
        # Walk backwards keeping only assignments the result depends on.
        for step in reversed(self.program.steps):
            kept = [a for a in step.assignments if a.target in needed]
            for a in kept:
                needed |= a.expr.free_symbols
            if kept:
                wanted.append((step.label, [sp.Eq(a.target, a.expr, evaluate=False)
                                            for a in kept]))
        return wanted[::-1]

    @cached_property
    def expression(self) -> sp.Expr:
        return self.program.composed()[0 if self.kind == "nngp" else 1]

    def __str__(self) -> str:
        lines = [f"{self.kind.upper()} of {self.arch}", f"  ({LEGEND})"]
        for label, eqs in self.steps:
            lines.append(f"  # {label}")
            lines += [f"    {sp.sstr(eq.lhs)} = {sp.sstr(eq.rhs)}" for eq in eqs]
        lines.append(f"  {self.kind} = {sp.sstr(self.result)}")
        return "\n".join(lines)

    __repr__ = __str__

    def latex(self) -> str:
        """An ``align`` block: one line per assignment, layers as \\text comments."""
        rows = []
        for label, eqs in self.steps:
            rows.append(r"&\text{" + _latex_text(label) + r"}")
            rows += [f"{sp.latex(eq.lhs)} &= {sp.latex(eq.rhs)}" for eq in eqs]
        rows.append(rf"\mathrm{{{self.kind.upper()}}} &= {sp.latex(self.result)}")
        return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"

    def _repr_latex_(self) -> str:
        return "$$" + self.latex().replace("align", "aligned") + "$$"


def _latex_text(text: str) -> str:
    specials = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "#": r"\#",
                "$": r"\$", "%": r"\%", "&": r"\&", "^": r"\^{}", "~": r"\~{}", "\n": " "}
    return "".join(specials.get(ch, ch) for ch in text)
