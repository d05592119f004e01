"""Compiled networks: an architecture string turned into fast kernel functions.

``compile(arch)`` runs the pipeline (parse -> derive -> codegen) once per distinct string
and returns a ``Network`` whose ``nngp``/``ntk`` evaluate the kernels on data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from . import codegen
from .ast import Node
from .derivation import Program, derive
from .errors import InputError, ShapeError
from .formula import Formula
from .parser import parse

KINDS = ("nngp", "ntk")


@dataclass(frozen=True)
class Network:
    """The infinite-width kernels of one architecture.

    Attributes: ``arch`` (the string), ``ast`` (typed tree), ``program`` and
    ``diagonal_program`` (the symbolic derivations), ``source`` (generated NumPy code).
    """

    arch: str
    ast: Node
    program: Program
    diagonal_program: Program
    _functions: dict = field(repr=False, compare=False)

    @cached_property
    def source(self) -> str:
        return self._functions["__source__"]

    # ------------------------------------------------------------------ evaluation --
    def nngp(self, x1: Any, x2: Any = None) -> np.ndarray:
        """NNGP kernel matrix (n1, n2) of x1 (n1, d) against x2 (n2, d); x2=None: x1 itself."""
        return self.kernels(x1, x2)[0]

    def ntk(self, x1: Any, x2: Any = None) -> np.ndarray:
        """Neural tangent kernel matrix (n1, n2); x2=None: x1 against itself."""
        return self.kernels(x1, x2)[1]

    def kernels(self, x1: Any, x2: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(NNGP, NTK) from one pass over the layers."""
        a, b = check_inputs(x1, x2)
        d = a.shape[1]
        q1 = np.einsum("ij,ij->i", a, a) / d
        q2 = q1 if b is None else np.einsum("ij,ij->i", b, b) / d
        k = (a @ (a if b is None else b).T) / d
        nngp, ntk = self._functions["pair"](q1[:, None], q2[None, :], k, d)
        out = [np.array(np.broadcast_to(m, k.shape), dtype=np.float64) for m in (nngp, ntk)]
        self._exact_identical_pairs(out, a, b, q1, d)
        return out[0], out[1]

    def diagonal(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact (NNGP, NTK) of each input with itself: correlation exactly 1."""
        a, _ = check_inputs(x, None)
        d = a.shape[1]
        return self._diagonal(np.einsum("ij,ij->i", a, a) / d, d)

    def _diagonal(self, q: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
        nngp, ntk = self._functions["diagonal"](q, d)
        return (np.array(np.broadcast_to(nngp, q.shape), dtype=np.float64),
                np.array(np.broadcast_to(ntk, q.shape), dtype=np.float64))

    def _exact_identical_pairs(self, out, a, b, q1, d) -> None:
        """Overwrite entries whose two inputs are identical with the diagonal recursion."""
        rows, cols = identical_pairs(a, b)
        if rows.size == 0:
            return
        diag = self._diagonal(q1, d)
        for matrix, values in zip(out, diag):
            matrix[rows, cols] = values[rows]

    # ------------------------------------------------------------------ formulas --
    def formula(self, kind: str = "ntk") -> Formula:
        """The derivation of the NNGP or NTK as sympy objects (see ntkdsl.formula.Formula)."""
        if kind not in KINDS:
            raise InputError(f"unknown kernel '{kind}'", hint="valid: 'nngp' or 'ntk'")
        return Formula(self.arch, self.program, kind)

    def _repr_latex_(self) -> str:
        return self.formula("ntk")._repr_latex_()

    def __repr__(self) -> str:
        return f"ntkdsl.compile({self.arch!r})"


def identical_pairs(a: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (rows, cols) of entries whose two input rows are bit-identical,
    including the whole diagonal of a self-kernel."""
    rows_b = a if b is None else b
    both = np.concatenate([a, rows_b]) if b is not None else a
    _, ids = np.unique(both, axis=0, return_inverse=True)
    ids = ids.ravel()
    id1, id2 = ids[: len(a)], ids[len(a):] if b is not None else ids
    if b is not None and np.intersect1d(id1, id2).size == 0:
        return np.empty(0, int), np.empty(0, int)
    if b is None and np.unique(id1).size == id1.size:
        n = np.arange(len(a))
        return n, n
    return np.nonzero(id1[:, None] == id2[None, :])


def _as_matrix(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a numeric array of shape (n, d): {err}") from None
    if arr.ndim != 2:
        raise ShapeError(f"{name} must be 2-D (n samples, d features), got shape {arr.shape}",
                         hint="reshape a single sample with x.reshape(1, -1), "
                              "a single feature with x.reshape(-1, 1)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ShapeError(f"{name} is empty (shape {arr.shape}); it needs at least one "
                         "sample and one feature")
    if not np.isfinite(arr).all():
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(f"{name} has a non-finite value {arr[i, j]} at row {i}, column {j}",
                         hint="kernels are defined for finite inputs only; drop or impute it")
    return arr


def check_inputs(x1: Any, x2: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated float64 copies (or views) of the inputs."""
    a = _as_matrix(x1, "x1")
    if x2 is None:
        return a, None
    b = _as_matrix(x2, "x2")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"x1 has {a.shape[1]} features but x2 has {b.shape[1]}; "
                         "both must have the same number of columns")
    return a, b


def compile(arch: str) -> Network:
    """Compile an architecture string such as ``"Dense(512) > Relu > Dense(1)"`` into a
    ``Network``. Compiling the same string again returns the cached result."""
    if not isinstance(arch, str):
        return parse(arch)  # raises ntkdsl's error for a non-string
    return _compile(arch)


@lru_cache(maxsize=256)
def _compile(arch: str) -> Network:
    ast = parse(arch)
    program = derive(ast, arch)
    diagonal_program = derive(ast, arch, diagonal=True)
    source = "\n\n".join([codegen.helpers_source(program, diagonal_program),
                           codegen.function_source(program, "pair", arch),
                           codegen.function_source(diagonal_program, "diagonal", arch)])
    functions = codegen.compile_functions(source)
    functions["__source__"] = source
    return Network(arch, ast, program, diagonal_program, functions)
