"""Compiled networks: an architecture string turned into fast kernel functions.

``compile(arch)`` runs the pipeline (parse -> derive -> generate) once per distinct string
and returns a ``Network`` whose ``nngp``/``ntk`` evaluate the kernels on data.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, overload

import numpy as np

from . import evaluation
from .ast import Node
from .derivation import Program, derive
from .errors import InputError, ParameterError
from .evaluation import check_inputs, identical_pairs  # noqa: F401 - public here too
from .evaluation.dask_blocks import is_dask_array, lazy_kernels
from .evaluation.gradients import evaluate_with_gradients
from .formula import Formula
from .generate import CompiledKernels, compile_kernels
from .kinds import KINDS
from .parser import parse
from .tangents import check_numerical_parameters, gradient_program
from .templates import ArchTemplate, parameter_tree


@dataclass(frozen=True)
class Network:
    """The infinite-width kernels of one architecture.

    Attributes: ``arch`` (the string), ``ast`` (typed tree), ``program`` and
    ``diagonal_program`` (the symbolic derivations), ``compiled`` (the generated
    functions and what evaluation needs of them), ``source`` (generated NumPy code).
    """

    arch: str
    ast: Node
    program: Program
    diagonal_program: Program
    compiled: CompiledKernels = field(repr=False, compare=False)

    @property
    def source(self) -> str:
        return self.compiled.source

    # ------------------------------------------------------------------ evaluation --
    def nngp(self, x1: Any, x2: Any = None, out: np.ndarray | None = None, *,
             dtype: Any = None, progress: bool | None = None,
             threads: int | None = None) -> np.ndarray:
        """NNGP kernel matrix (n1, n2) of x1 (n1, d) against x2 (n2, d); x2=None: x1 itself.
        A convolutional network takes channels-last images (n, *spatial, C) instead.

        See ``kernels`` for ``out``, ``dtype``, ``progress`` and ``threads``."""
        return self._evaluate(("nngp",), x1, x2, None if out is None else (out,),
                              dtype, progress, threads)[0]

    def ntk(self, x1: Any, x2: Any = None, out: np.ndarray | None = None, *,
            dtype: Any = None, progress: bool | None = None,
            threads: int | None = None) -> np.ndarray:
        """Neural tangent kernel matrix (n1, n2); x2=None: x1 against itself.

        See ``kernels`` for ``out``, ``dtype``, ``progress`` and ``threads``."""
        return self._evaluate(("ntk",), x1, x2, None if out is None else (out,),
                              dtype, progress, threads)[0]

    def kernels(self, x1: Any, x2: Any = None, out: tuple | None = None, *,
                dtype: Any = None, progress: bool | None = None,
                threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(NNGP, NTK) of x1 against x2 (x2=None: x1 against itself) from one pass.

        A convolutional network takes channels-last images, ``(n, L, C)``, ``(n, H, W, C)``,
        ...: its values of each image alone are computed once per image and its kernels in
        tiles of pairs of images (ntkdsl.evaluation.spatial), with the same ``out``,
        ``dtype``, ``progress`` and ``threads``.

        The matrix is computed in panels of rows: each panel's Gram slice (one BLAS call)
        goes straight into the output, where the generated program reads it in cache-sized
        chunks and overwrites it. ``threads`` (default: all available cores) is the most
        threads used: a helper computes Gram slices ahead and mirrors while the calling
        thread runs the program; ``threads=1`` does all on the calling thread. A
        self-kernel computes one triangle and mirrors it, so it is exactly symmetric, and
        entries of identical inputs hold the exact diagonal values.

        out: a preallocated (n1, n2) array or ``np.memmap`` to fill block by block (for
            ``kernels``, a pair ``(nngp_out, ntk_out)``, either may be None). It is returned.
            A memmap opened with mode 'w+' or 'r+' is released from resident memory as it
            is written, so a kernel larger than RAM can go to disk, e.g.
            ``numpy.lib.format.open_memmap('ntk.npy', mode='w+', dtype=numpy.float64,
            shape=(n, n))``.
        dtype: numpy.float64 (default, or the dtype of ``out``) or numpy.float32. float32
            halves the memory and is faster; norms and Gram entries are computed in
            float64 and rounded, the layers run in float32, and entries of identical inputs
            are the float64 diagonal values rounded. Accuracy (measured over 100 seeds,
            README "float32"): absolute error below 1e-6 of the largest entry for pairs of
            inputs with correlation under 0.99, typically 2e-7. Nearly collinear or
            opposite inputs lose more where a dual has an infinite slope at c = ±1: up to
            2e-4 of the largest NTK entry per ReLU-family layer (measured 6e-5 to 1e-4),
            and compounding layer after layer where the NNGP has that slope (Sign: 0.11
            after three layers); use float64 there.
        progress: None shows a progress bar on a terminal once an evaluation runs longer
            than two seconds (never when stderr is not a terminal); True always; False never.

        Bad shapes, dtypes, a read-only ``out``, or a kernel too large for the available
        memory without ``out`` raise ntkdsl's InputError/ShapeError before any work."""
        if out is not None and (not isinstance(out, (tuple, list)) or len(out) != 2):
            raise InputError("out for kernels() must be a pair (nngp_out, ntk_out)",
                             hint="either entry may be None to allocate that kernel")
        result = self._evaluate(KINDS, x1, x2, out, dtype, progress, threads)
        return result[0], result[1]

    def _evaluate(self, kinds, x1, x2, out, dtype, progress, threads) -> list[np.ndarray]:
        if is_dask_array(x1) or is_dask_array(x2):
            if out is not None:
                raise InputError("out= does not go with Dask arrays: the kernel is a lazy Dask "
                                 "array, written where its blocks are computed",
                                 hint="store it with dask.array.to_zarr(K, path) or "
                                      "K.to_zarr(path); or compute it: K.compute()")
            return lazy_kernels(self, kinds, x1, x2, dtype=dtype, threads=threads)
        evaluate = (evaluation.evaluate if self.compiled.spatial is None
                    else evaluation.evaluate_images)
        return evaluate(self.compiled, x1, x2, kinds=kinds, out=out,
                                   dtype=dtype, progress=progress, threads=threads)

    def diagonal(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact (NNGP, NTK) of each input (or image) with itself: correlation exactly 1."""
        if self.compiled.spatial is not None:
            return evaluation.diagonal_of_images(self.compiled, x)
        a, _ = check_inputs(x, None)
        return evaluation.diagonal_values(self.compiled,
                                          evaluation.squared_norms(a), a.shape[1])

    # ------------------------------------------------------------------ formulas --
    def formula(self, kind: str = "ntk") -> Formula:
        """The derivation of the NNGP or NTK as sympy objects (see ntkdsl.formula.Formula).

        ``kind`` is 'nngp' or 'ntk', in any case (the rule of every ``kernel`` argument)."""
        return Formula(self.arch, self.program, evaluation.kernel_name(kind))

    def _repr_latex_(self) -> str:
        """Jupyter shows a compiled network as its derivation, both kernels."""
        return Formula(self.arch, self.program, "both")._repr_latex_()

    def __repr__(self) -> str:
        return f"ntkdsl.compile({self.arch!r})"

    # ------------------------------------------------------------------ pickling --
    def __reduce__(self):
        """Pickle (and copy) as the architecture string: the generated functions live in a
        namespace that does not pickle, and recompiling is exact and goes through the
        per-string cache, so a pickle is 48 bytes plus the string and a copy in the same
        process is this (immutable) network itself."""
        return compile, (self.arch,)


@overload
def compile(arch: str | ArchTemplate, gradients: None = None) -> Network: ...


@overload
def compile(arch: ArchTemplate, gradients: Sequence[str]) -> GradientNetwork: ...


def compile(arch: str | ArchTemplate,
            gradients: Sequence[str] | None = None) -> Network | GradientNetwork:
    """Compile an architecture string such as ``"Dense(512) > Relu > Dense(1)"`` into a
    ``Network``. Compiling the same string again returns the cached result.

    gradients: names of placeholders of an ``ArchTemplate`` (``arch``) whose derivatives
        the kernels give with ``eval_gradient=True``: a ``GradientNetwork`` (see there)."""
    if gradients is not None:
        if not isinstance(arch, ArchTemplate):
            raise ParameterError(
                f"gradients= needs an ArchTemplate naming the numbers, got {arch!r}",
                hint="e.g. ntkdsl.compile(ArchTemplate('Dense(512, W_std={w}) > Relu > "
                     "Dense(1)', w=1.0), gradients=['w'])")
        names = (gradients,) if isinstance(gradients, str) else tuple(gradients)
        return _compile_gradients(arch.template, tuple(arch.values.items()), names)
    if isinstance(arch, ArchTemplate):
        return _compile(arch.render())
    if not isinstance(arch, str):
        return parse(arch)  # raises ntkdsl's error for a non-string
    return _compile(arch)


@lru_cache(maxsize=256)
def _compile(arch: str) -> Network:
    ast = parse(arch)
    program = derive(ast, arch)
    diagonal_program = derive(ast, arch, diagonal=True)
    return Network(arch, ast, program, diagonal_program,
                   compile_kernels(program, diagonal_program, arch))


@dataclass(frozen=True)
class GradientNetwork:
    """A template's network whose kernels also come with their derivatives with respect to
    some of its numbers (``parameters``, placeholders of ``template``, with ``values``):
    ``K, dK = net.nngp(x1, x2, eval_gradient=True)`` gives dK of shape (n1, n2, p),
    ``dK[..., j]`` the derivative with respect to ``parameters[j]``. The derivatives are
    derived from the kernel program by the chain rule (ntkdsl.tangents) and evaluated in
    the same pass as the kernel, tiled and threaded, with exact diagonals. The program
    takes the parameters' values as inputs: it is derived and compiled once per template
    (and values of the other placeholders), whatever the values of ``parameters``.
    Without ``eval_gradient`` the kernels are those of the plain ``network`` (``arch``,
    the template filled in), as are ``kernels``, ``diagonal`` and ``formula``."""

    arch: str
    template: ArchTemplate = field(compare=False)
    parameters: tuple[str, ...]
    values: tuple[float, ...]
    gradient_programs: tuple[Program, Program] = field(repr=False, compare=False)

    @property
    def network(self) -> Network:
        """The plain network of ``arch`` (compiled on first use, cached per string)."""
        return _compile(self.arch)

    def nngp(self, x1: Any, x2: Any = None, out: np.ndarray | None = None, *,
             eval_gradient: bool = False, dtype: Any = None, progress: bool | None = None,
             threads: int | None = None):
        """The NNGP (n1, n2); with ``eval_gradient=True`` the pair (NNGP, derivatives
        (n1, n2, p)) from one pass (``out`` is for the kernel alone)."""
        if not eval_gradient:
            return self.network.nngp(x1, x2, out, dtype=dtype, progress=progress,
                                     threads=threads)
        return self._with_gradients("nngp", x1, x2, dtype, progress, threads)

    def ntk(self, x1: Any, x2: Any = None, out: np.ndarray | None = None, *,
            eval_gradient: bool = False, dtype: Any = None, progress: bool | None = None,
            threads: int | None = None):
        """The NTK (n1, n2); with ``eval_gradient=True`` the pair (NTK, derivatives
        (n1, n2, p)) from one pass."""
        if not eval_gradient:
            return self.network.ntk(x1, x2, out, dtype=dtype, progress=progress,
                                    threads=threads)
        return self._with_gradients("ntk", x1, x2, dtype, progress, threads)

    def kernels(self, x1: Any, x2: Any = None, **options) -> tuple[np.ndarray, np.ndarray]:
        """(NNGP, NTK) of the plain network (see ``Network.kernels``)."""
        return self.network.kernels(x1, x2, **options)

    def diagonal(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact (NNGP, NTK) of each input with itself (see ``Network.diagonal``)."""
        return self.network.diagonal(x)

    def formula(self, kind: str = "ntk") -> Formula:
        """The derivation of the plain network's kernel (see ``Network.formula``)."""
        return self.network.formula(kind)

    def _with_gradients(self, kind, x1, x2, dtype, progress, threads):
        compiled = _bound(self.gradient_kernels(kind), self.values)
        return evaluate_with_gradients(compiled, kind, len(self.parameters), x1, x2,
                                       dtype=dtype, progress=progress, threads=threads)

    def gradient_kernels(self, kind: str) -> CompiledKernels:
        """The compiled program of one kernel ('nngp' or 'ntk') and its derivatives, whose
        functions take the parameters' values after their usual arguments."""
        kind = evaluation.kernel_name(kind)
        return _gradient_kernels(self.gradient_programs, KINDS.index(kind),
                                 len(self.parameters), self.template.template)

    def __repr__(self) -> str:
        return f"ntkdsl.compile({self.template!r}, gradients={list(self.parameters)!r})"

    def __reduce__(self):
        return compile, (self.template, list(self.parameters))


def _compile_gradients(template: str, values: tuple, names: tuple[str, ...]) -> GradientNetwork:
    arch = ArchTemplate(template, **dict(values))
    tree = parameter_tree(arch, names)
    check_numerical_parameters(tree.ast, tree.arch)
    fixed = tuple((k, v) for k, v in values if k not in names)
    programs = _gradient_programs(template, fixed, names, tree)
    return GradientNetwork(tree.arch, arch, names, tree.values, programs)


_GRADIENT_PROGRAMS: dict = {}


def _gradient_programs(template: str, fixed: tuple, names: tuple, tree) -> tuple:
    """The pair and diagonal gradient programs, once per template, values of the other
    placeholders and parameters named (the parameters' values are the programs' inputs)."""
    key = (template, fixed, names)
    programs = _GRADIENT_PROGRAMS.get(key)
    if programs is None:
        if len(_GRADIENT_PROGRAMS) >= 64:
            _GRADIENT_PROGRAMS.clear()
        programs = _GRADIENT_PROGRAMS[key] = tuple(
            gradient_program(derive(tree.ast, tree.arch, diagonal=diagonal), tree.parameters)
            for diagonal in (False, True))
    return programs


@lru_cache(maxsize=128)
def _gradient_kernels(programs: tuple, index: int, count: int, template: str) -> CompiledKernels:
    pair, diagonal = programs
    chosen = (index, *range(2 + index * count, 2 + (index + 1) * count))
    return compile_kernels(
        pair.restricted_to(tuple(pair.outputs[i] for i in chosen)),
        diagonal.restricted_to(tuple(diagonal.outputs[i] for i in chosen)),
        f"{template}: the {KINDS[index].upper()} and its {count} derivative(s)")


def _bound(compiled: CompiledKernels, values: tuple[float, ...]) -> CompiledKernels:
    """The compiled kernels with the parameters' values given (as trailing arguments)."""
    numbers = tuple(float(v) for v in values)

    def given(function):
        return lambda *args: function(*args, *numbers)

    spatial, sides = compiled.spatial, compiled.sides
    if spatial is not None:
        spatial = replace(spatial, side=given(spatial.side), nngp_pair=given(spatial.nngp_pair))
    if sides is not None:
        sides = replace(sides, side=given(sides.side))
    return replace(compiled, pair=given(compiled.pair), diagonal=given(compiled.diagonal),
                   spatial=spatial, sides=sides)
