"""Readable derivations: the per-layer maps of a kernel program and the composed kernel
expression, as sympy objects that print as text and as LaTeX (and render in Jupyter).

Each layer's map is shown with its intermediate quantities named — the correlation c_l and
angle theta_l = arccos(c_l) of the layer's input pair, and any larger subexpression the
layer's formulas share (z1, z2, ...) — so a deep network prints as a short list of short
lines rather than one expression growing with depth.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from functools import cached_property
from itertools import count

import sympy as sp
from sympy.printing.latex import LatexPrinter

from .derivation import TEMPLATE_SUFFIX, SamePositions
from .kinds import KINDS
from .numerical import NumericalDual, NumericalMoment
from .program import (
    DIAGONAL_NTK,
    NNGP,
    NTK,
    SELF,
    SELF1,
    SELF2,
    VARIANCE,
    VARIANCE1,
    VARIANCE2,
    Bound,
    Program,
    Step,
    TemplateCache,
)
from .symbolic import ArcCosine, AttributedSymbol, Corr

# What a formula shows: one kernel, or both.
FORMULA_KINDS = (*KINDS, "both")
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
# A convolutional network's inputs are images with C channels, its kernels per position.
_SPATIAL_INPUTS = {
    False: "inputs: images with C channels; q1_0 = <x[p],x[p]>/C, q2_0 = <x'[p],x'[p]>/C and "
           "K_0 = <x[p],x'[p]>/C at each position p",
    True: "inputs: images with C channels; q1_0 = <x[p],x[p]>/C and q2_0 = <x'[p],x'[p]>/C at "
          "each position p, Q1_0 = <x[p],x[p']>/C and Q2_0 = <x'[p],x'[p']>/C, K_0 = "
          "<x[p],x'[p']>/C at every pair of positions p, p'",
}
_SPATIAL_DIAGONAL_INPUTS = {
    False: "inputs: images with C channels; q_0 = <x[p],x[p]>/C at each position p; both "
           "inputs are x, so every correlation at one position is exactly 1",
    True: "inputs: images with C channels; q_0 = <x[p],x[p]>/C at each position p, Q_0 = "
          "<x[p],x[p']>/C at every pair of positions (Q_l's same-position entries are q_l, "
          "exactly)",
}
_SPATIAL_STEPS = (
    "after step l: q1_l, q2_l = variances at each position (q1_l[p] at a pair's first "
    "position, q2_l[p'] at its second), K_l = NNGP, T_l = NTK; conv3x3(K) is the mean of K "
    "over a 3x3 filter window, the same offset at both positions; avgpool2x2 (sumpool) the "
    "mean (sum) over a 2x2 window at each position; flatten the mean over the same "
    "positions, globalavgpool over every pair")
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
        return _title(self.label, self.note)


def _title(label: str, note: str) -> str:
    return f"{label}  [{note}]" if note else label


class Formula:
    """The derivation of an architecture's kernel: ``kind`` 'nngp', 'ntk' or 'both'.

    ``layers``: the per-layer maps (``Layer``) the result depends on, with intermediates
    named; ``steps``: the same as (title, [sympy.Eq, ...]) pairs; ``results``: (name,
    symbol) of each kernel at the end; ``expression``: the kernel composed into one sympy
    expression in the input statistics q1_0, q2_0, K_0 (and d where the standard
    parameterisation uses the input width) — a tuple (nngp, ntk) for 'both'.
    """

    def __init__(self, arch: str, program: Program, kind: str = "ntk"):
        if kind not in FORMULA_KINDS:
            raise ValueError(f"kind must be one of {FORMULA_KINDS}, got {kind!r}")
        self.arch, self.kind, self.program = arch, kind, program
        names = KINDS if kind == "both" else (kind,)
        self.results = [(n, program.outputs[KINDS.index(n)]) for n in names]
        self.result = self.results[-1][1] if kind != "both" else None

    @property
    def diagonal(self) -> bool:
        return self.program.diagonal

    @property
    def legend(self) -> tuple[str, ...]:
        """What the inputs and the step variables are (for a convolutional network, also
        which layout its kernels take: ``path``)."""
        plan = self.program.spatial
        if plan is None:
            return DIAGONAL_LEGEND if self.diagonal else PAIR_LEGEND
        inputs = (_SPATIAL_DIAGONAL_INPUTS if self.diagonal else _SPATIAL_INPUTS)[plan.layout.pairs]
        return (inputs, self.path, _SPATIAL_STEPS, NO_STEP)

    @property
    def path(self) -> str:
        """Which kernel values a convolutional network's derivation keeps: the same
        positions only (no pooling: positions values per pair), or every pair of positions
        (positions squared) up to the last pooling layer."""
        steps = self.program.steps
        pairs = [i for i, s in enumerate(steps) if any(
            getattr(t, "layout", None) is not None and t.layout.pairs for t in s.targets)]
        if not pairs:
            return ("path: same positions only (no pooling layer): K_l[p] and T_l[p] pair "
                    "position p of x with position p of x', positions values per pair")
        last, after = steps[pairs[-1]], steps[pairs[-1] + 1:]
        where = (f"up to step {last.layer} ({last.label}), the last pooling layer; the same "
                 "positions only after it" if after and after[0].label == str(SamePositions())
                 else f"up to step {after[0].layer} ({after[0].label})" if after
                 else f"up to step {last.layer}")
        return ("path: every pair of positions (pooling needs them: positions squared values "
                f"per pair) {where}")

    def __getstate__(self) -> dict:
        """Pickle (and deepcopy) the derivation without its cached views (layers, steps,
        expression): they are recomputed on demand. Kept, they would print differently once
        loaded (sympy re-evaluates expressions as it unpickles them, which undoes the
        factored display forms: (225*q1_0 + 1)/100 came back as 9*q1_0/4 + 1/100), and a
        deep network's composed expression is large."""
        cached = {name for name, value in vars(Formula).items()
                  if isinstance(value, cached_property)}
        return {name: value for name, value in vars(self).items() if name not in cached}

    @cached_property
    def layers(self) -> list[Layer]:
        wanted = self.program.restricted_to(tuple(r for _, r in self.results))
        names = count(1)
        return [_readable(step, names) for step in wanted.live()]

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
        lines = [f"{what} of {_one_line(self.arch)}"]
        if self.diagonal:
            lines[0] += ", for identical inputs"
        lines += [f"  ({text})" for text in self.legend]
        wanted = self.program.restricted_to(tuple(r for _, r in self.results))
        names = count(1)
        for step in wanted.live():
            lines.append(f"  step {step.layer}: {_one_line(_title(step.label, step.note))}")
            lines += [f"    {lhs} = {rhs}" for lhs, rhs in _text(step, names)]
        lines += [f"  {name} = {sp.sstr(value)}" for name, value in self.results]
        return "\n".join(lines)

    __repr__ = __str__

    def latex(self) -> str:
        """An amsmath ``align`` block that renders in MathJax 3 and compiles in LaTeX: a
        heading (the kernel, the architecture, what the inputs and step variables are), then
        each step's equations under a line naming the layer and its route. Text rows hold at
        most ``TEXT_WIDTH`` characters; long notes wrap onto indented rows."""
        rows = _heading_rows(self.kind, self.arch, self.diagonal, legend=self._spatial_legend())
        for layer in self.layers:
            rows += _step_rows(layer)
            rows += [f"{_tex(eq.lhs)} &= {_tex(eq.rhs)}" for eq in layer.equations]
        rows += [rf"\mathrm{{{name.upper()}}} &= {_tex(value)}" for name, value in self.results]
        return _align(rows)

    def expanded(self, latex: bool = False) -> str:
        """The composed expression(s): ``name = ...`` text lines, or with ``latex`` an
        ``align`` block under the same heading as ``latex()``."""
        values = self.expression if self.kind == "both" else (self.expression,)
        pairs = [(name, _arccosine_shown(v)) for (name, _), v in zip(self.results, values)]
        if not latex:
            return "\n".join(f"{name} = {sp.sstr(v)}" for name, v in pairs)
        legend = self._spatial_legend()
        rows = _heading_rows(self.kind, self.arch, self.diagonal, steps=False,
                             legend=None if legend is None else legend[:2])
        rows += [rf"\mathrm{{{name.upper()}}} &= {_tex(v)}" for name, v in pairs]
        return _align(rows)

    def _spatial_legend(self) -> tuple[str, ...] | None:
        return None if self.program.spatial is None else self.legend[:3]

    def _repr_latex_(self) -> str:
        """Jupyter's text/latex: the ``latex()`` block as one $$ display (``aligned``, which
        MathJax accepts there)."""
        return "$$" + self.latex().replace("{align}", "{aligned}") + "$$"


# ---------------------------------------------------------------------------------------
# Naming a layer's intermediate quantities
# ---------------------------------------------------------------------------------------

def _readable(step: Step, names: count, number: int | str | None = None) -> Layer:
    """The step's assignments rewritten over named intermediates."""
    if isinstance(step.assignments, Bound):
        return _readable_bound(step, names)
    if number is None:
        number = step.layer
    exprs = [a.expr for a in step.assignments]
    definitions, exprs = _name_angles(exprs, number)
    shared, exprs = _name_shared(exprs, names)
    outputs = [sp.Eq(a.target, _tidy(e), evaluate=False)
               for a, e in zip(step.assignments, exprs)]
    return Layer(number, step.label, step.note, tuple(definitions + shared + outputs))


class DisplayName(AttributedSymbol):
    """A name the readable derivation gives an intermediate: the correlation ``c_l`` and
    angle ``theta_l`` of layer l (``tag`` a, b, ... when a layer has several), or a shared
    subexpression ``z<n>`` (numbered through the whole derivation; ``layer`` holds n). The
    family and numbers are attributes, so printers and renamings never parse the name."""

    attributes = ("family", "layer", "tag")
    family: str
    layer: int | str
    tag: str

    def __new__(cls, name: str, family: str, layer: int | str, tag: str = "", **assumptions):
        return super().__new__(cls, name, family, layer, tag, **(assumptions or {"real": True}))

    @classmethod
    def of_layer(cls, family: str, layer: int | str, tag: str = "") -> DisplayName:
        return cls(f"{family}_{layer}{tag}", family, layer, tag)

    @classmethod
    def shared(cls, number: int) -> DisplayName:
        return cls(f"z{number}", "z", number)


_TEMPLATE_LAYERS = TemplateCache()


def _template_layer(step: Step) -> Layer:
    """The readable layer of a template step's template, worked out once per template
    (naming, factoring), in the template's own variables."""
    bound = step.assignments
    key = (bound.template, bound.live)
    if key not in _TEMPLATE_LAYERS:
        live = tuple(bound.template.step.assignments[i] for i in bound.live)
        _TEMPLATE_LAYERS[key] = _readable(Step(step.label, live, step.note), count(1),
                                          number=TEMPLATE_SUFFIX)
    return _TEMPLATE_LAYERS[key]


def _readable_bound(step: Step, names: count) -> Layer:
    """A template step's readable layer: worked out once per template (naming, factoring)
    and renamed for each layer, so a deep network's derivation costs a renaming per layer."""
    bound = step.assignments
    layer = _template_layer(step)
    number = step.layer
    rename = dict(bound.binding)
    for eq in layer.equations:  # z1, z2, ... of the template take the next global numbers
        if eq.lhs in rename or not isinstance(eq.lhs, DisplayName):
            continue
        if eq.lhs.family == "z":
            rename[eq.lhs] = DisplayName.shared(next(names))
        else:  # c_r, theta_r (or c_ra, ...): this layer's number
            rename[eq.lhs] = DisplayName.of_layer(eq.lhs.family, number, eq.lhs.tag)
    with sp.evaluate(False):  # a renaming: keep the template's factored forms as they are
        equations = tuple(sp.Eq(eq.lhs.xreplace(rename), eq.rhs.xreplace(rename))
                          for eq in layer.equations)
    return Layer(number, step.label, step.note, equations)


_TEMPLATE_TEXT = TemplateCache()
_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")


def _text(step: Step, names: count) -> list[tuple[str, str]]:
    """The (lhs, rhs) text of a step's readable equations, as ``str`` prints them. A
    template step's text is printed once per template and renamed for each layer by
    substituting names in the text: printing each layer's equations with sympy cost a
    millisecond a layer (2,000 layers: seconds of a standalone module's docstring)."""
    if not isinstance(step.assignments, Bound):
        return [(sp.sstr(eq.lhs), sp.sstr(eq.rhs)) for eq in _readable(step, names).equations]
    bound = step.assignments
    key = (bound.template, bound.live)
    if key not in _TEMPLATE_TEXT:
        layer = _template_layer(step)
        _TEMPLATE_TEXT[key] = [(eq.lhs, sp.sstr(eq.lhs), sp.sstr(eq.rhs)) for eq in layer.equations]
    rename = {str(k): str(v) for k, v in bound.binding.items()}
    for lhs, _, _ in _TEMPLATE_TEXT[key]:  # as _readable_bound renames them
        if isinstance(lhs, DisplayName) and str(lhs) not in rename:
            rename[str(lhs)] = str(DisplayName.shared(next(names)) if lhs.family == "z" else
                                   DisplayName.of_layer(lhs.family, step.layer, lhs.tag))

    def renamed(text: str) -> str:
        return _NAME.sub(lambda m: rename.get(m.group(0), m.group(0)), text)
    return [(renamed(lhs), renamed(rhs)) for _, lhs, rhs in _TEMPLATE_TEXT[key]]


def _name_angles(exprs: list[sp.Expr], number: int) -> tuple[list[sp.Eq], list[sp.Expr]]:
    """Replace each correlation Corr(k, q1, q2) by c_l and, where the layer uses it,
    arccos(c_l) by theta_l and sqrt(1 - c_l^2) by sin(theta_l) (theta_l is in [0, pi]); the
    arc-cosine integrals J_n are shown in their usual form in theta_l."""
    exprs = [_arccosine_shown(e) for e in exprs]
    corrs = sorted(set().union(*(e.atoms(Corr) for e in exprs)), key=sp.default_sort_key)
    definitions: list[sp.Eq] = []
    for i, corr in enumerate(corrs):
        tag = "" if len(corrs) == 1 else chr(ord('a') + i)
        c = DisplayName.of_layer("c", number, tag)
        exprs = [e.xreplace({corr: c}) for e in exprs]
        definitions.append(sp.Eq(c, corr.as_ratio(), evaluate=False))
        if any(e.has(sp.acos(c)) for e in exprs):
            theta = DisplayName.of_layer("theta", number, tag)
            swap = {sp.acos(c): theta, sp.sqrt(1 - c ** 2): sp.sin(theta)}
            exprs = [e.xreplace(swap) for e in exprs]
            definitions.append(sp.Eq(theta, sp.acos(c), evaluate=False))
    return definitions, exprs


def _arccosine_shown(expr: sp.Expr) -> sp.Expr:
    """``expr`` with each ArcCosine written out as the arc-cosine form it stands for, so that
    sympy collects it with the rest (and theta_l can name its arccos)."""
    if not isinstance(expr, sp.Basic) or not expr.has(ArcCosine):
        return expr
    return expr.replace(lambda f: isinstance(f, ArcCosine), lambda f: f.shown())


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
            name = DisplayName.shared(next(names))
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

# Characters of text per heading or note row. A notebook output area shows about 100
# characters of text at the default font; 80 leaves room for the indent of continuation rows.
TEXT_WIDTH = 80

_KIND_NAMES = {"nngp": "NNGP", "ntk": "NTK", "both": "NNGP and NTK"}
_INPUTS_ROWS = (
    (r"&\text{inputs: } q_{1}^{(0)} = \langle x, x \rangle / d,\; "
     r"q_{2}^{(0)} = \langle x', x' \rangle / d,\; K^{(0)} = \langle x, x' \rangle / d,"),
    r"&\quad\text{where } d \text{ is the number of features}",
)
_STEP_VARIABLE_ROWS = (
    (r"&\text{after step } l\text{: } q_{1}^{(l)}, q_{2}^{(l)} = \text{variances},\; "
     r"K^{(l)} = \text{NNGP},\; \Theta^{(l)} = \text{NTK};"),
    (r"&\quad c^{(l)} = \text{correlation of the step's input pair},\; "
     r"\theta^{(l)} = \arccos c^{(l)}"),
)
_NO_STEP_ROW = (r"&\texttt{Identity}\text{ and }\texttt{Dense(n)}\text{ without bias leave the "
                r"kernels unchanged and take no step}")  # NO_STEP, within TEXT_WIDTH
_DIAGONAL_INPUTS_ROWS = (
    (r"&\text{inputs: } q^{(0)} = \langle x, x \rangle / d, \text{ where } d "
     r"\text{ is the number of features;}"),
    r"&\quad\text{both inputs are } x\text{, so every correlation is exactly 1}",
)
_DIAGONAL_STEP_VARIABLE_ROWS = (
    (r"&\text{after step } l\text{: } q^{(l)} = \text{NNGP} = \text{variance},\; "
     r"\Theta^{(l)} = \text{NTK}"),
)


def _align(rows: list[str]) -> str:
    return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"


def _heading_rows(kind: str, arch: str, diagonal: bool, steps: bool = True,
                  legend: tuple[str, ...] | None = None) -> list[str]:
    """What is derived, of which architecture, and what the symbols stand for (for a
    convolutional network, its ``legend`` lines, wrapped)."""
    what = _KIND_NAMES[kind] + (" (identical inputs)" if diagonal else "") + " of "
    rows = _architecture_rows(what, arch)
    if legend is not None:
        for text in legend:
            lines = _wrap(text, TEXT_WIDTH)
            rows += [r"&" + latex_roman(lines[0])] + [r"&\quad" + latex_roman(line)
                                                     for line in lines[1:]]
        return rows + [_NO_STEP_ROW] if steps else rows
    if diagonal:
        rows += _DIAGONAL_INPUTS_ROWS + (_DIAGONAL_STEP_VARIABLE_ROWS if steps else ())
    else:
        rows += _INPUTS_ROWS + (_STEP_VARIABLE_ROWS if steps else ())
    return rows + [_NO_STEP_ROW] if steps else rows


def _step_rows(layer: Layer) -> list[str]:
    """'step l: <layer>' in typewriter type, then its route note: on the same row when
    both fit in TEXT_WIDTH, else wrapped onto indented rows."""
    title = f"step {layer.number}: "
    rows = _architecture_rows(title, layer.label)
    if not layer.note:
        return rows
    note = f"[{_one_line(layer.note)}]"
    last = _wrap_architecture(layer.label, TEXT_WIDTH - len(title))[-1]
    if len(title) + len(last) + 1 + len(note) <= TEXT_WIDTH:
        rows[-1] += latex_roman(" " + note)
    else:
        rows += [r"&\quad" + latex_roman(line) for line in _wrap(note, TEXT_WIDTH)]
    return rows


def _architecture_rows(prefix: str, arch: str) -> list[str]:
    """``prefix`` in roman type, then ``arch`` in typewriter type, wrapped onto indented
    rows after the first."""
    lines = _wrap_architecture(arch, TEXT_WIDTH - len(prefix))
    return ([r"&\text{" + prefix + "}" + latex_tt(lines[0])]
            + [r"&\quad" + latex_tt(line) for line in lines[1:]])


def _wrap_architecture(arch: str, width: int) -> list[str]:
    """Lines of an architecture, broken before a '>' or '+' so each line reads as the
    continuation of the one above."""
    glued = re.sub(r"([>+]) ", "\\1\N{NO-BREAK SPACE}", _one_line(arch))  # textwrap keeps these
    return [line.replace("\N{NO-BREAK SPACE}", " ") for line in _wrap(glued, width)]


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters, broken at spaces only (a word longer than
    that keeps its own line)."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


# TeX's special characters spelled in math mode, where MathJax (2 and 3, without the
# textmacros extension) and LaTeX both read them: inside \text{...} MathJax shows "\_" or
# "\^{}" literally, and LaTeX rejects a bare "_".
_MATH_SPELLING = {"\\": r"\backslash ", "{": r"\{", "}": r"\}", "_": r"\_", "#": r"\#",
                  "$": r"\$", "%": r"\%", "&": r"\&", "^": r"\hat{}", "~": r"\sim "}
# In roman text also these, which LaTeX's default (OT1) roman font prints as other glyphs
# ("<" as an inverted exclamation mark, "|" as a dash); typewriter type has them.
_ROMAN_SPELLING = {**_MATH_SPELLING, "<": "<", ">": ">", "|": "|", "<=": r"\le ", ">=": r"\ge "}
_TT_SPECIALS = re.compile("[" + re.escape("".join(_MATH_SPELLING)) + "]")
# "^2" (as in E[phi(u)^2]) becomes a superscript 2; "<=" a relation, spaced as one.
_ROMAN_SPECIALS = re.compile(r" ?<= ?| ?>= ?|\^\d+|["
                             + re.escape("".join(k for k in _ROMAN_SPELLING if len(k) == 1)) + "]")


def latex_tt(text: str) -> str:
    """``text`` in typewriter type for math mode: runs of ordinary characters in \\texttt,
    TeX's special characters as their math-mode spelling (valid for MathJax and LaTeX)."""
    return _text_runs(text, r"\texttt", _TT_SPECIALS, _MATH_SPELLING)


def latex_roman(text: str) -> str:
    """``text`` in roman type for math mode: runs in \\text, special characters and
    ``<``, ``>``, ``|``, ``<=``, ``>=``, ``^<digits>`` in math."""
    return _text_runs(text, r"\text", _ROMAN_SPECIALS, _ROMAN_SPELLING)


def _text_runs(text: str, command: str, specials: re.Pattern, spelling: dict[str, str]) -> str:
    parts, start = [], 0
    for match in specials.finditer(text):
        if match.start() > start:
            parts.append(command + "{" + text[start:match.start()] + "}")
        token = match.group().strip()
        parts.append("{}^{" + token[1:] + "}" if token[:1] == "^" and token[1:]
                     else spelling[token])
        start = match.end()
    if start < len(text):
        parts.append(command + "{" + text[start:] + "}")
    return "".join(parts)


def _tex(expr: sp.Basic) -> str:
    return _FormulaPrinter({"symbol_names": _latex_names(expr),
                            "inv_trig_style": "full"}).doprint(expr)


class _FormulaPrinter(LatexPrinter):
    """sympy's LaTeX, with the numerical duals as math: Gamma[Tanh](k, q1, q2) as
    \\Gamma_{\\mathrm{Tanh}}(k, q1, q2) and Gammadot[...] as \\dot\\Gamma; a moment (the
    dual on the diagonal, one argument q) as \\Gamma(q, q, q), which is what it is."""

    def _print(self, expr, **kwargs) -> str:
        if isinstance(expr, (NumericalDual, NumericalMoment)):
            return self._print_numerical(expr, **kwargs)
        return super()._print(expr, **kwargs)

    def _print_numerical(self, expr, exp: str | None = None) -> str:
        args = expr.args * 3 if isinstance(expr, NumericalMoment) else expr.args
        # Braces make the parenthesised arguments an ordinary atom: no gap after the name.
        call = (_dual_name(expr.func) + r"{\left("
                + ", ".join(self._print(a) for a in args) + r"\right)}")
        return rf"\left({call}\right)^{{{exp}}}" if exp is not None else call


def _dual_name(dual: type) -> str:
    """\\Gamma_{\\mathrm{Tanh}} for Tanh's numerical dual, \\dot{\\Gamma} for its derivative's;
    an activation name that is not a plain word (``Tanh > Relu``) in typewriter type."""
    name = dual.activation
    if not name:
        return latex_tt(dual.label)
    symbol = r"\dot{\Gamma}" if dual.of_derivative else r"\Gamma"
    plain = name.isascii() and name[:1].isalpha() and name.isalnum()
    return symbol + "_{" + (rf"\mathrm{{{name}}}" if plain else latex_tt(name)) + "}"


# LaTeX of the program's variables by role (the layer is the superscript), and of the
# names this module gives intermediates.
_ROLE_LATEX = {VARIANCE1: "q_{1}", VARIANCE2: "q_{2}", NNGP: "K", NTK: r"\Theta",
               VARIANCE: "q", DIAGONAL_NTK: r"\Theta", SELF1: "Q_{1}", SELF2: "Q_{2}",
               SELF: "Q"}
_FAMILY_LATEX = {"c": "c", "theta": r"\theta"}


def _latex_names(expr: sp.Basic) -> dict[sp.Symbol, str]:
    names = {}
    for symbol in expr.free_symbols:
        role = getattr(symbol, "role", None)
        if role in _ROLE_LATEX and isinstance(symbol.layer, int):
            names[symbol] = f"{_ROLE_LATEX[role]}^{{({symbol.layer})}}"
        elif isinstance(symbol, DisplayName) and symbol.family == "z":
            names[symbol] = f"z_{{{symbol.layer}}}"
        elif isinstance(symbol, DisplayName):
            names[symbol] = f"{_FAMILY_LATEX[symbol.family]}^{{({symbol.layer}{symbol.tag})}}"
    return names


def latex_text(text: str) -> str:
    """``text`` safe inside real LaTeX's \\text{...}: every special character escaped with
    a text-mode command. MathJax shows these escapes literally: for formulas meant for both,
    use ``latex_roman`` or ``latex_tt``."""
    specials = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "#": r"\#",
                "$": r"\$", "%": r"\%", "&": r"\&", "^": r"\^{}", "~": r"\~{}", "\n": " ",
                "\r": " "}
    return "".join(specials.get(ch, ch) for ch in text)


def _one_line(text: str) -> str:
    """An architecture or label on one line (an architecture may span several)."""
    return " ".join(text.split())
