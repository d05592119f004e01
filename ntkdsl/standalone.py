"""Standalone kernel modules: the source of a Python file computing an architecture's NNGP
and NTK with numpy alone (plus scipy.special where a formula needs it).

The module is assembled from the same pieces the library evaluates — ``helpers_source``
and ``function_source`` of the same programs — so it computes the same numbers, and
activation duals that carry data (coefficient arrays in their helpers) come along by
themselves. Around them sits a fixed runtime (``_RUNTIME``): input validation with
ValueError messages and the exact diagonal for identical input rows, mirroring
ntkdsl.network.

Safety: the architecture text reaches the file only through ``docstring_literal``,
``ascii()`` string literals and ``comment_lines`` (see ntkdsl.codegen); names in the file
are ours (registry names, never user spellings).
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

import sympy as sp

from . import activations
from ._version import __version__
from .ast import Node
from .codegen import (
    docstring_literal,
    function_source,
    helpers_source,
    required_imports,
)
from .derivation import Assignment, Composite, Program, Step, activation_layers, derive, dual_maps
from .formula import Formula
from .parser import parse

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
    code = "\n\n".join(filter(None, [
        helpers_source(program, diagonal_program, *(f.program for f in duals)),
        *(function_source(f.program, f.name, _dual_doc(f)) for f in duals),
        function_source(program, "pair", _PAIR_DOC),
        function_source(diagonal_program, "diagonal", _DIAGONAL_DOC),
    ]))
    modules = sorted({"numpy", *required_imports(code)})
    scipy = any(m.startswith("scipy") for m in modules)
    imports = "".join(f"import {m}\n" for m in modules)
    names = sorted(["nngp", "ntk", "kernels", "pair", "diagonal", *(f.name for f in duals)])
    header = "\n".join([
        docstring_literal(_module_doc(arch, program, diagonal_program, duals, scipy)),
        "",
        imports,
        "__all__ = [" + ", ".join(f'"{n}"' for n in names) + "]",
        # ascii(): a plain-ASCII literal whose value is exactly the architecture.
        f"ARCHITECTURE = {arch!a}",
        f'NTKDSL_VERSION = "{__version__}"',
    ])
    return ascii_source(header + "\n\n\n" + code + "\n\n" + _RUNTIME)


# Readable ASCII for the mathematical characters of comments and docstrings carried into a
# module (the numerical route's engine is written with them); anything else is escaped.
_ASCII_NAMES = {
    "Γ": "Gamma", "Θ": "Theta", "φ": "phi", "θ": "theta", "ε": "eps", "σ": "sigma",
    "λ": "lambda", "η": "eta", "τ": "tau", "π": "pi", "\u0307": "dot",  # combining dot: Γ̇
    "∞": "inf", "≤": "<=", "≥": ">=", "≈": "~=", "·": "*", "×": "x", "−": "-", "–": "-",
    "—": "--", "±": "+-", "²": "^2", "³": "^3", "ᵀ": "^T", "⁻¹": "^-1", "∂": "d", "∘": " o ",
    "…": "...", "‖": "||", "→": "->", "₀": "_0", "₁": "_1", "₂": "_2", "ₙ": "_n", "ᵢ": "_i",
    "½": "1/2",
}
_SQUARE_ROOT = re.compile(r"√(\w+)")


def ascii_source(source: str) -> str:
    """``source`` with every non-ASCII character (found in comments and docstrings only)
    written in ASCII: Greek letters by name (Gamma, phi), math symbols as in code (sqrt(q)
    for the root sign before q, <=, ^2), an escape such as \\u2202 for anything else. A
    generated module is then the same bytes in any encoding and shows on any terminal."""
    source = _SQUARE_ROOT.sub(r"sqrt(\1)", source).replace("√", "sqrt")
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


def _dual_doc(f: DualFunction) -> str:
    return (f"Dual of {f.label}: with (u, v) ~ N(0, [[q1, k], [k, q2]]), returns\n"
            "(E[phi(u) phi(v)], E[phi'(u) phi'(v)]), elementwise.")


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
        "x1 is an (n1, d) array of inputs, x2 an (n2, d) array; x2=None means x1 against",
        "itself. Entries whose two input rows are identical get the diagonal recursion",
        "(correlation exactly 1). Lower level, elementwise on arrays:",
        "",
        "    pair(q1_0, q2_0, K_0, d)   the layer recursion on input statistics",
        "    diagonal(q_0, d)           the same for identical inputs",
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
# The fixed part of every module: validation and the exact diagonal (as ntkdsl.network)
# ---------------------------------------------------------------------------------------

_RUNTIME = '''
def _as_matrix(x, name):
    """x as a float64 (n, d) array, or a ValueError saying what is wrong."""
    try:
        raw = numpy.asarray(x)
        # Checked before the float64 conversion, which would drop the imaginary part.
        complex_input = raw.dtype.kind == "c"
        arr = None if complex_input else raw.astype(numpy.float64, copy=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array of shape (n, d): {err}") from None
    if complex_input:
        raise ValueError(f"Complex data not supported: {name} has a complex dtype; the "
                         f"kernels take real numbers only (pass {name}.real if you mean it)")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n samples, d features), got shape "
                         f"{arr.shape}; reshape a single sample with x.reshape(1, -1)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); it needs at least one "
                         "sample and one feature")
    if not numpy.isfinite(arr).all():
        i, j = numpy.argwhere(~numpy.isfinite(arr))[0]
        raise ValueError(f"{name} has a non-finite value {arr[i, j]} at row {i}, "
                         f"column {j}; kernels are defined for finite inputs only")
    return arr


def _identical_pairs(a, b):
    """Index arrays (rows, cols) of entries whose two input rows are bit-identical,
    including the whole diagonal of a self-kernel."""
    both = a if b is None else numpy.concatenate([a, b])
    ids = numpy.unique(both, axis=0, return_inverse=True)[1].ravel()
    id1 = ids[: len(a)]
    id2 = id1 if b is None else ids[len(a):]
    if b is not None and numpy.intersect1d(id1, id2).size == 0:
        return numpy.empty(0, int), numpy.empty(0, int)
    if b is None and numpy.unique(id1).size == id1.size:
        n = numpy.arange(len(a))
        return n, n
    return numpy.nonzero(id1[:, None] == id2[None, :])


def kernels(x1, x2=None):
    """(NNGP, NTK) kernel matrices of shape (n1, n2), float64, from one pass.

    x1: (n1, d) array; x2: (n2, d) array, or None for x1 against itself.
    """
    a = _as_matrix(x1, "x1")
    b = None if x2 is None else _as_matrix(x2, "x2")
    if b is not None and a.shape[1] != b.shape[1]:
        raise ValueError(f"x1 has {a.shape[1]} features but x2 has {b.shape[1]}; "
                         "both must have the same number of columns")
    d = a.shape[1]
    q1 = numpy.einsum("ij,ij->i", a, a) / d
    q2 = q1 if b is None else numpy.einsum("ij,ij->i", b, b) / d
    k = (a @ (a if b is None else b).T) / d
    values = pair(q1[:, None], q2[None, :], k, d)
    out = [numpy.array(numpy.broadcast_to(m, k.shape), dtype=numpy.float64) for m in values]
    rows, cols = _identical_pairs(a, b)
    if rows.size:
        # Identical rows: the diagonal recursion, exact where arccos(1 - rounding) is not.
        exact = diagonal(q1, d)
        for i in range(2):
            out[i][rows, cols] = numpy.broadcast_to(exact[i], q1.shape)[rows]
    return out[0], out[1]


def nngp(x1, x2=None):
    """NNGP kernel matrix (n1, n2) of x1 (n1, d) against x2 (n2, d); x2=None: x1 itself."""
    return kernels(x1, x2)[0]


def ntk(x1, x2=None):
    """Neural tangent kernel matrix (n1, n2); x2=None: x1 against itself."""
    return kernels(x1, x2)[1]
'''.lstrip("\n")
