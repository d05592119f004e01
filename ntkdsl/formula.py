"""Readable derivations: the per-layer maps of a kernel program and the composed kernel
expression, as sympy objects that print as text and as LaTeX (and render in Jupyter).

Each layer's map is shown with its intermediate quantities named — the correlation c_l and
angle theta_l = arccos(c_l) of the layer's input pair, and any larger subexpression the
layer's formulas share (z1, z2, ...) — so a deep network prints as a short list of short
lines rather than one expression growing with depth.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from itertools import count

import sympy as sp

from .codegen import live_steps
from .derivation import TEMPLATE_SUFFIX, Bound, Program, Step, TemplateCache
from .symbolic import Corr

KINDS = ("nngp", "ntk", "both")
NO_STEP = ("a layer that leaves the kernels unchanged (Identity, Dense(n) without bias) "
           "takes no step")
PAIR_LEGEND = (
    "inputs: q1_0 = <x,x>/d, q2_0 = <x',x'>/d, K_0 = <x,x'>/d (d = number of features)",
    ("after step l: q1_l, q2_l = variances, K_l = NNGP, T_l = NTK; its input's "
     "correlation c_l and angle theta_l = arccos(c_l)"),
    NO_STEP,
)
DIAGONAL_LEGEND = (
    ("inputs: q_0 = <x,x>/d (d = number of features); both inputs are x, so every "
     "correlation is exactly 1"),
    "after step l: q_l = NNGP = variance, t_l = NTK",
    NO_STEP,
)
LEGEND = "; ".join(PAIR_LEGEND)
# Subexpressions with fewer operations than this are left inline: naming 2*q1 helps nobody.
_MIN_NAMED_OPS = 4
# sympy.factor tidies a layer's map (collecting pi, theta...); skipped for big expressions,
# where it is slow and gains little.
_MAX_FACTOR_OPS = 60


@dataclass(frozen=True)
class Layer:
    """One layer's map for display: its step number (the SSA index), label, note, equations
    (named intermediates first, then the layer's outputs)."""

    number: int
    label: str
    note: str
    equations: tuple[sp.Eq, ...]

    @property
    def title(self) -> str:
        return f"{self.label}  [{self.note}]" if self.note else self.label


class Formula:
    """The derivation of an architecture's kernel: ``kind`` 'nngp', 'ntk' or 'both'.

    ``layers``: the per-layer maps (``Layer``) the result depends on, with intermediates
    named; ``steps``: the same as (title, [sympy.Eq, ...]) pairs; ``results``: (name,
    symbol) of each kernel at the end; ``expression``: the kernel composed into one sympy
    expression in the input statistics q1_0, q2_0, K_0 (and d where the standard
    parameterisation uses the input width) — a tuple (nngp, ntk) for 'both'.
    """

    def __init__(self, arch: str, program: Program, kind: str = "ntk"):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.arch, self.kind, self.program = arch, kind, program
        names = ("nngp", "ntk") if kind == "both" else (kind,)
        self.results = [(n, program.outputs[KINDS.index(n)]) for n in names]
        self.result = self.results[-1][1] if kind != "both" else None

    @property
    def diagonal(self) -> bool:
        return len(self.program.inputs) == 2  # (q_0, d) rather than (q1_0, q2_0, K_0, d)

    @cached_property
    def layers(self) -> list[Layer]:
        wanted = Program(self.program.inputs, self.program.steps,
                         tuple(r for _, r in self.results))
        names = count(1)
        return [_readable(step, names) for step in live_steps(wanted)]

    @cached_property
    def steps(self) -> list[tuple[str, list[sp.Eq]]]:
        return [(layer.title, list(layer.equations)) for layer in self.layers]

    @cached_property
    def expression(self):
        composed = self.program.composed()
        if self.kind == "both":
            return composed
        return composed[KINDS.index(self.kind)]

    # ---------------------------------------------------------------- printing --
    def __str__(self) -> str:
        what = "NNGP and NTK" if self.kind == "both" else self.kind.upper()
        legend = DIAGONAL_LEGEND if self.diagonal else PAIR_LEGEND
        lines = [f"{what} of {_one_line(self.arch)}"]
        if self.diagonal:
            lines[0] += ", for identical inputs"
        lines += [f"  ({text})" for text in legend]
        for layer in self.layers:
            lines.append(f"  step {layer.number}: {_one_line(layer.title)}")
            lines += [f"    {sp.sstr(eq.lhs)} = {sp.sstr(eq.rhs)}" for eq in layer.equations]
        lines += [f"  {name} = {sp.sstr(value)}" for name, value in self.results]
        return "\n".join(lines)

    __repr__ = __str__

    def latex(self) -> str:
        """An ``align`` block: one line per equation, each layer introduced by a \\text
        line."""
        def tex(expr) -> str:
            return sp.latex(expr, symbol_names=_latex_names(expr), inv_trig_style="full")

        rows = []
        for layer in self.layers:
            rows.append(r"&\text{step " + str(layer.number) + ": "
                        + latex_text(layer.title) + "}")
            rows += [f"{tex(eq.lhs)} &= {tex(eq.rhs)}" for eq in layer.equations]
        rows += [rf"\mathrm{{{name.upper()}}} &= {tex(value)}" for name, value in self.results]
        return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"

    def expanded(self, latex: bool = False) -> str:
        """The composed expression(s): ``name = ...`` text lines, or with ``latex`` an
        ``align`` block."""
        values = self.expression if self.kind == "both" else (self.expression,)
        pairs = [(name, v) for (name, _), v in zip(self.results, values)]
        if not latex:
            return "\n".join(f"{name} = {sp.sstr(v)}" for name, v in pairs)
        rows = [rf"\mathrm{{{name.upper()}}} &= "
                + sp.latex(v, symbol_names=_latex_names(v), inv_trig_style="full")
                for name, v in pairs]
        return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"

    def _repr_latex_(self) -> str:
        return "$$" + self.latex().replace("{align}", "{aligned}") + "$$"


# ---------------------------------------------------------------------------------------
# Naming a layer's intermediate quantities
# ---------------------------------------------------------------------------------------

def _readable(step: Step, names: count, number: int | str | None = None) -> Layer:
    """The step's assignments rewritten over named intermediates."""
    if isinstance(step.assignments, Bound):
        return _readable_bound(step, names)
    if number is None:
        number = int(str(step.assignments[0].target).rsplit("_", 1)[1])
    exprs = [a.expr for a in step.assignments]
    definitions, exprs = _name_angles(exprs, number)
    shared, exprs = _name_shared(exprs, names)
    outputs = [sp.Eq(a.target, _tidy(e), evaluate=False)
               for a, e in zip(step.assignments, exprs)]
    return Layer(number, step.label, step.note, tuple(definitions + shared + outputs))


_TEMPLATE_LAYERS = TemplateCache()


def _readable_bound(step: Step, names: count) -> Layer:
    """A template step's readable layer: worked out once per template (naming, factoring)
    and renamed for each layer, so a deep network's derivation costs a renaming per layer."""
    bound = step.assignments
    key = (bound.template, bound.live)
    if key not in _TEMPLATE_LAYERS:
        live = tuple(bound.template.step.assignments[i] for i in bound.live)
        _TEMPLATE_LAYERS[key] = _readable(Step(step.label, live, step.note), count(1),
                                          number=TEMPLATE_SUFFIX)
    layer = _TEMPLATE_LAYERS[key]
    number = int(bound.targets[0].name.rsplit("_", 1)[1])
    rename = dict(bound.binding)
    for eq in layer.equations:  # z1, z2, ... of the template take the next global numbers
        if eq.lhs not in rename and str(eq.lhs).startswith("z"):
            rename[eq.lhs] = sp.Symbol(f"z{next(names)}", real=True)
        elif eq.lhs not in rename:  # c_r, theta_r (or c_ra, ...): this layer's number
            prefix, suffix = str(eq.lhs).rsplit("_", 1)
            rename[eq.lhs] = sp.Symbol(f"{prefix}_{number}{suffix[1:]}", real=True)
    with sp.evaluate(False):  # a renaming: keep the template's factored forms as they are
        equations = tuple(sp.Eq(eq.lhs.xreplace(rename), eq.rhs.xreplace(rename))
                          for eq in layer.equations)
    return Layer(number, step.label, step.note, equations)


def _name_angles(exprs: list[sp.Expr], number: int) -> tuple[list[sp.Eq], list[sp.Expr]]:
    """Replace each correlation Corr(k, q1, q2) by c_l and, where the layer uses it,
    arccos(c_l) by theta_l and sqrt(1 - c_l^2) by sin(theta_l) (theta_l is in [0, pi])."""
    corrs = sorted(set().union(*(e.atoms(Corr) for e in exprs)), key=sp.default_sort_key)
    definitions: list[sp.Eq] = []
    for i, corr in enumerate(corrs):
        suffix = str(number) if len(corrs) == 1 else f"{number}{chr(ord('a') + i)}"
        c = sp.Symbol(f"c_{suffix}", real=True)
        exprs = [e.xreplace({corr: c}) for e in exprs]
        definitions.append(sp.Eq(c, corr.as_ratio(), evaluate=False))
        if any(e.has(sp.acos(c)) for e in exprs):
            theta = sp.Symbol(f"theta_{suffix}", real=True)
            swap = {sp.acos(c): theta, sp.sqrt(1 - c ** 2): sp.sin(theta)}
            exprs = [e.xreplace(swap) for e in exprs]
            definitions.append(sp.Eq(theta, sp.acos(c), evaluate=False))
    return definitions, exprs


def _name_shared(exprs: list[sp.Expr], names: count) -> tuple[list[sp.Eq], list[sp.Expr]]:
    """Name subexpressions the layer's formulas share (z1, z2, ... numbered through the
    whole derivation), except small ones, which read better inline."""
    temporaries = sp.numbered_symbols("_tmp")
    shared, reduced = sp.cse(exprs, symbols=temporaries, optimizations="basic")
    inline: dict[sp.Symbol, sp.Expr] = {}
    definitions: list[sp.Eq] = []
    for tmp, expr in shared:
        expr = expr.xreplace(inline)
        if sp.count_ops(expr) < _MIN_NAMED_OPS:
            inline[tmp] = expr
        else:
            name = sp.Symbol(f"z{next(names)}", real=True)
            inline[tmp] = name
            definitions.append(sp.Eq(name, _tidy(expr), evaluate=False))
    return definitions, [r.xreplace(inline) for r in reduced]


def _tidy(expr: sp.Expr) -> sp.Expr:
    """A factored form where that is no longer than the expression (e.g. T (pi - theta)/(2 pi)
    rather than -T (theta/pi - 1)/2)."""
    if sp.count_ops(expr) > _MAX_FACTOR_OPS or expr.has(sp.Float):
        # factor() turns floats into rationals of hundreds of digits: minutes, no gain.
        return expr
    factored = sp.factor(expr, deep=False)
    return factored if sp.count_ops(factored) <= sp.count_ops(expr) else expr


# ---------------------------------------------------------------------------------------
# LaTeX
# ---------------------------------------------------------------------------------------

_LATEX_PATTERNS = (  # symbol name -> LaTeX, by the naming scheme of derivation.py and above
    (re.compile(r"q([12])_(\d+)"), r"q_{\1}^{(\2)}"),
    (re.compile(r"q_(\d+)"), r"q^{(\1)}"),
    (re.compile(r"K_(\d+)"), r"K^{(\1)}"),
    (re.compile(r"[Tt]_(\d+)"), r"\\Theta^{(\1)}"),
    (re.compile(r"c_(\d+[a-z]?)"), r"c^{(\1)}"),
    (re.compile(r"theta_(\d+[a-z]?)"), r"\\theta^{(\1)}"),
    (re.compile(r"z(\d+)"), r"z_{\1}"),
)


def _latex_names(expr: sp.Basic) -> dict[sp.Symbol, str]:
    names = {}
    for symbol in expr.free_symbols:
        for pattern, template in _LATEX_PATTERNS:
            if pattern.fullmatch(symbol.name):
                names[symbol] = pattern.sub(template, symbol.name)
                break
    return names


def latex_text(text: str) -> str:
    """``text`` safe inside LaTeX's \\text{...}: every special character escaped."""
    specials = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "#": r"\#",
                "$": r"\$", "%": r"\%", "&": r"\&", "^": r"\^{}", "~": r"\~{}", "\n": " ",
                "\r": " "}
    return "".join(specials.get(ch, ch) for ch in text)


def _one_line(text: str) -> str:
    """An architecture or label on one line (an architecture may span several)."""
    return " ".join(text.split())
