"""Standalone kernel modules: the source of a Python file computing an architecture's NNGP
and NTK with numpy alone (plus scipy.special where a formula needs it).

The module is assembled from the same pieces the library evaluates — ``function_code``
of the same programs, with the helpers their printer recorded — so it computes the same numbers, and
activation duals that carry data (coefficient arrays in their helpers) come along by
themselves. Around them sits the runtime's driver (ntkdsl.runtime.driver, its text
verbatim): the library's input validation, raising ValueError (InputProblem) with the
library's messages, and its search for identical input rows, which get the exact diagonal.

Safety: the architecture text reaches the file only through ``docstring_literal``,
``ascii()`` string literals and ``comment_lines`` (see ntkdsl.generate); names in the file
are ours (registry names, never user spellings).
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass

import sympy as sp

from . import activations
from ._version import __version__
from .ast import Node
from .derivation import Assignment, Composite, Program, Step, activation_layers, derive, dual_maps
from .formula import Formula
from .generate import docstring_literal, function_code, module_code, split_program
from .parser import parse
from .runtime import embedded_source

# The dual functions' arguments: the covariance [[q1, k], [k, q2]] of the pre-activations.
_DUAL_INPUTS = (sp.Symbol("q1", positive=True), sp.Symbol("q2", positive=True),
                sp.Symbol("k", real=True))
_DUAL_OUTPUTS = (sp.Symbol("gamma", real=True), sp.Symbol("gamma_dot", real=True))


@dataclass(frozen=True)
class DualFunction:
    """A generated ``name(q1, q2, k) -> (Gamma, Gamma_dot)`` for one activation layer."""

    name: str
    label: str
    program: Program


def module_source(arch: str) -> str:
    """The source of a standalone module computing the kernels of ``arch``.

    The module exposes ``nngp(x1, x2=None)``, ``ntk(x1, x2=None)``, ``kernels(x1, x2=None)``,
    the layer recursions ``pair(q1_0, q2_0, K_0, d)`` and ``diagonal(q_0, d)``, and one
    ``<activation>_dual(q1, q2, k)`` per distinct activation layer (a run of activations is
    one layer, their composition, as ``pair`` computes it). It imports numpy (and
    scipy.special only if a formula needs it), never ntkdsl, sympy or lark. The same string
    always gives the same bytes.
    """
    ast = parse(arch)
    program = derive(ast, arch)
    diagonal_program = derive(ast, arch, diagonal=True)
    duals = dual_functions(ast)
    plan = program.spatial
    if plan is None:
        kernel_functions = [function_code(program, "pair", _PAIR_DOC),
                            function_code(diagonal_program, "diagonal", _DIAGONAL_DOC)]
    else:
        split = split_program(program)
        kernel_functions = [function_code(split.pairs, "pair", _IMAGE_PAIR_DOC),
                            function_code(diagonal_program, "diagonal", _IMAGE_DIAGONAL_DOC),
                            function_code(split.side, "side", _SIDE_DOC)]
    code, needs = module_code([
        *(function_code(f.program, f.name, _dual_doc(f)) for f in duals), *kernel_functions])
    modules = sorted({"numpy", *needs.imports})
    scipy = any(m.startswith("scipy") for m in modules)
    imports = "".join(f"import {m}\n" for m in modules)
    names = sorted(["nngp", "ntk", "kernels", "pair", "diagonal",
                    *([] if plan is None else ["side"]), *(f.name for f in duals)])
    header = "\n".join([
        docstring_literal(_module_doc(arch, program, diagonal_program, duals, scipy)),
        "",
        imports,
        "__all__ = [" + ", ".join(f'"{n}"' for n in names) + "]",
        # ascii(): a plain-ASCII literal whose value is exactly the architecture.
        f"ARCHITECTURE = {arch!a}",
        f'NTKDSL_VERSION = "{__version__}"',
        *([] if plan is None else [f"POSITION_PAIRS = {plan.layout.pairs}",
                                   f"SPATIAL_AXES = {plan.axes}"]),
    ])
    return ascii_source(header + "\n\n\n" + code + "\n\n" + _runtime(plan is not None))


# Readable ASCII for the mathematical characters of comments and docstrings carried into a
# module (the numerical route's engine is written with them); anything else is escaped.
_ASCII_NAMES = {
    "Γ": "Gamma", "Θ": "Theta", "φ": "phi", "θ": "theta", "ε": "eps", "σ": "sigma",
    "λ": "lambda", "η": "eta", "τ": "tau", "π": "pi", "\u0307": "dot",  # combining dot: Γ̇
    "∞": "inf", "≤": "<=", "≥": ">=", "≈": "~=", "·": "*", "×": "x", "−": "-", "–": "-",
    "—": "--", "±": "+-", "²": "^2", "³": "^3", "ᵀ": "^T", "⁻¹": "^-1", "∂": "d", "∘": " o ",
    "…": "...", "‖": "||", "→": "->", "₀": "_0", "₁": "_1", "₂": "_2", "ₙ": "_n", "ᵢ": "_i",
    "½": "1/2", "√": "sqrt",
}


def ascii_source(source: str) -> str:
    """``source`` with every non-ASCII character (found in comments and docstrings only)
    written in ASCII: Greek letters by name (Gamma, phi), math symbols as in code (<=, ^2,
    sqrt for a root sign, which our texts put before a parenthesis), an escape such as
    \\u2202 for anything else. A generated module is then the same bytes in any encoding
    and shows on any terminal."""
    for char, name in _ASCII_NAMES.items():
        source = source.replace(char, name)
    return "".join(ch if ch.isascii() else ascii(ch)[1:-1] for ch in source)


def dual_functions(ast: Node) -> list[DualFunction]:
    """One dual function per distinct activation layer with a closed-form or embedded
    dual, in order of appearance, as the derivation applies them (so ``pair`` calls these
    very duals): activations written one after another are one layer, their composition.
    Named after the registry entries (``relu_dual``; ``relu_sin_dual`` for ``Relu > Sin``,
    i.e. sin∘relu; ``erf_dual_2`` for a second, differently parameterised Erf)."""
    found: list[DualFunction] = []
    used: dict[str, int] = {}
    for node in dict.fromkeys(activation_layers(ast)):  # distinct, first appearance first
        gamma, gamma_dot, route = dual_maps(node)
        if gamma is None:
            continue
        parts = node.parts if isinstance(node, Composite) else (node,)
        base = "_".join(_identifier(part.name) for part in parts) + "_dual"
        used[base] = used.get(base, 0) + 1
        name = base if used[base] == 1 else f"{base}_{used[base]}"
        # dual_maps writes duals over placeholders named Q1, Q2, K; rename to q1, q2, k.
        rename = dict(zip(("Q1", "Q2", "K"), _DUAL_INPUTS))
        placeholder = {s: rename[s.name] for s in sp.sympify(gamma).free_symbols
                       | sp.sympify(gamma_dot).free_symbols if s.name in rename}
        step = Step(str(node), (Assignment(_DUAL_OUTPUTS[0], sp.sympify(gamma).xreplace(placeholder)),
                                Assignment(_DUAL_OUTPUTS[1],
                                           sp.sympify(gamma_dot).xreplace(placeholder))),
                    "" if route == "closed form" else route)
        found.append(DualFunction(name, str(node),
                                  Program(_DUAL_INPUTS, (step,), _DUAL_OUTPUTS)))
    return found


def _identifier(name: str) -> str:
    """A Python name from the activation's registry entry (ours, not the user's text)."""
    spec = activations.lookup(name)
    base = (spec.name if spec else "activation").lower()
    if not base.isidentifier() or not base.isascii() or keyword.iskeyword(base):
        base = "activation"
    return base


# ---------------------------------------------------------------------------------------
# Documentation inside the module
# ---------------------------------------------------------------------------------------

_PAIR_DOC = """The layer recursion for pairs of inputs, elementwise (arrays broadcast).

q1_0 = <x,x>/d, q2_0 = <x',x'>/d, K_0 = <x,x'>/d with d the number of features;
returns (NNGP, NTK)."""

_DIAGONAL_DOC = """The layer recursion for an input paired with itself (correlation exactly 1,
so no arccos(1 - rounding) error); q_0 = <x,x>/d. Returns (NNGP, NTK)."""

_IMAGE_PAIR_DOC = """The layer recursion for a block of pairs of images, elementwise (arrays broadcast).

K_0: x[p].x'[p']/C at every pair of positions (POSITION_PAIRS) or x[p].x'[p]/C at each
position, positions first, then the block's rows and columns; then C, the number of
channels; then the values side() gives for the rows' images, then those for the columns'
(the last two axes swapped). Returns (NNGP, NTK)."""

_IMAGE_DIAGONAL_DOC = """The layer recursion for images paired with themselves (correlation exactly 1
at every position of an image with itself): their variances at each position (and with
POSITION_PAIRS their covariances across positions) and C. Returns (NNGP, NTK)."""

_SIDE_DOC = """The values of images alone that pair() reads, from their variances at each position
(and with POSITION_PAIRS their covariances across positions) and C."""


def _dual_doc(f: DualFunction) -> str:
    return (f"Dual of {f.label}: with (u, v) ~ N(0, [[q1, k], [k, q2]]), returns\n"
            "(E[phi(u) phi(v)], E[phi'(u) phi'(v)]), elementwise.")


def _inputs_doc(program: Program) -> list[str]:
    if program.spatial is None:
        return [
            "x1 is an (n1, d) array of inputs, x2 an (n2, d) array; x2=None means x1 against",
            "itself. Entries whose two input rows are identical get the diagonal recursion",
            "(correlation exactly 1). Lower level, elementwise on arrays:",
            "",
            "    pair(q1_0, q2_0, K_0, d)   the layer recursion on input statistics",
            "    diagonal(q_0, d)           the same for identical inputs"]
    axes = program.spatial.axes
    shape = "(n, *spatial, C)" if axes is None else "(n, " + ", ".join(
        ("L",) if axes == 1 else ("H", "W") if axes == 2 else
        tuple(f"S{i + 1}" for i in range(axes))) + ", C)"
    return [
        f"x1 and x2 are channels-last images {shape}; x2=None means x1 against itself.",
        "Entries whose two images are identical get the diagonal recursion (correlation",
        "exactly 1). The kernel arrays hold " + (
            "every pair of positions (a pooling layer needs them)." if program.spatial.layout.pairs
            else "the same positions only (no pooling: the cheap path)."),
        "Lower level (see each function's docstring):",
        "",
        "    side(...)       the values of images alone",
        "    pair(...)       the layer recursion for a block of pairs",
        "    diagonal(...)   the same for identical images"]


def _module_doc(arch: str, program: Program, diagonal_program: Program,
                duals: list[DualFunction], scipy: bool) -> str:
    requirement = "numpy and scipy" if scipy else "numpy only"  # beside the standard library
    lines = [
        "Infinite-width NNGP and NTK kernels of the network",
        "",
        *("    " + line for line in arch.split("\n")),
        "",
        f"Generated by ntkdsl {__version__} (ntkdsl codegen); needs {requirement}.",
        "Regenerate rather than edit.",
        "",
        "    nngp(x1, x2=None)     NNGP kernel matrix, shape (n1, n2), float64",
        "    ntk(x1, x2=None)      neural tangent kernel matrix",
        "    kernels(x1, x2=None)  (nngp, ntk) from one pass",
        "",
        *(_inputs_doc(program)),
        *(f"    {f.name}(q1, q2, k)  dual of {f.label}" for f in duals),
        "",
        "Derivation",
        "----------",
        str(Formula(arch, program, "both")),
        "",
        str(Formula(arch, diagonal_program, "both")),
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# The fixed part of every module: the runtime's driver (validation with the library's
# messages, identical rows found in O(n) memory, the exact diagonal) and the entry points
# ---------------------------------------------------------------------------------------

_ENTRY_POINTS = '''
def kernels(x1, x2=None):
    """(NNGP, NTK) kernel matrices of shape (n1, n2), float64, from one pass.

    x1: (n1, d) array; x2: (n2, d) array, or None for x1 against itself. Bad inputs raise
    InputProblem, a ValueError.
    """
    return evaluate_kernels(pair, diagonal, x1, x2)


def nngp(x1, x2=None):
    """NNGP kernel matrix (n1, n2) of x1 (n1, d) against x2 (n2, d); x2=None: x1 itself."""
    return kernels(x1, x2)[0]


def ntk(x1, x2=None):
    """Neural tangent kernel matrix (n1, n2); x2=None: x1 against itself."""
    return kernels(x1, x2)[1]
'''.lstrip("\n")


_IMAGE_ENTRY_POINTS = '''
def kernels(x1, x2=None):
    """(NNGP, NTK) kernel matrices of shape (n1, n2), float64, from one pass.

    x1: (n1, *spatial, C) channels-last images; x2: (n2, *spatial, C), or None for x1
    against itself. Bad inputs raise InputProblem, a ValueError.
    """
    return evaluate_image_kernels(side, pair, diagonal, POSITION_PAIRS, SPATIAL_AXES, x1, x2)


def nngp(x1, x2=None):
    """NNGP kernel matrix (n1, n2) of images x1 against x2; x2=None: x1 itself."""
    return kernels(x1, x2)[0]


def ntk(x1, x2=None):
    """Neural tangent kernel matrix (n1, n2); x2=None: x1 against itself."""
    return kernels(x1, x2)[1]
'''.lstrip("\n")


def _runtime(images: bool) -> str:
    if not images:
        return embedded_source("driver") + "\n\n" + _ENTRY_POINTS
    return embedded_source("driver") + "\n\n" + _IMAGE_ENTRY_POINTS
