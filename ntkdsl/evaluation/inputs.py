"""Validation of the inputs every entry point shares: kernel names, real dtypes, sparse
data, the rank of inputs an architecture takes, the (n, d) input matrices and their squared
norms."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ast import Node, input_axes
from ..errors import InputError, ShapeError, Span
from ..kinds import KINDS
from ..runtime import driver
from .memory import require_memory

DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def kernel_name(kernel: Any) -> str:
    """``'nngp'`` or ``'ntk'`` for any capitalisation of either; InputError for anything else.

    The one rule for kernel names, shared by ``Network.formula``, the solvers, the estimators
    and the command line."""
    if isinstance(kernel, str) and kernel.lower() in KINDS:
        return kernel.lower()
    raise InputError(f"unknown kernel {kernel!r}; valid kernels are 'nngp' or 'ntk' (any case)",
                     hint="'ntk': the neural tangent kernel (every layer trained); 'nngp': the "
                          "NNGP kernel (the network at initialisation: readout-only training, "
                          "the Bayesian posterior)")


def _checked(check: Callable, *args: Any) -> Any:
    """``check(*args)``, one of the runtime's validators (ntkdsl.runtime.driver, the ones
    standalone modules run), with its InputProblem raised as ntkdsl's error: ShapeError
    for shapes, else InputError, with the same message and hint."""
    try:
        return check(*args)
    except driver.InputProblem as problem:
        raise (ShapeError if problem.shape else InputError)(problem.message,
                                                            hint=problem.hint) from None


def located(problem: driver.InputProblem, fixed_by: tuple[str, Span | None] | None = None,
            source: str = "") -> InputError:
    """The runtime's InputProblem as ntkdsl's error (ShapeError for shapes, else InputError),
    a shape problem with a caret under ``fixed_by``'s span in ``source``: the layer that fixes
    the number of spatial axes (see ``ntkdsl.ast.input_axes``)."""
    where = fixed_by[1] if fixed_by and problem.shape and source else None
    return (ShapeError if problem.shape else InputError)(
        problem.message, source=source if where else None, span=where, hint=problem.hint)


def check_input_rank(ast: Node, shape: tuple, name: str, source: str = "",
                     hint: str | None = None) -> None:
    """ShapeError unless arrays of ``shape`` (the first entry counts the examples, or is "n")
    have the rank the architecture takes (``ntkdsl.ast.input_axes``), with a caret under the
    layer that fixes it. The runtime's check, which the kernels (and standalone modules) run
    on their inputs: finite networks, estimators and ``verify`` say the same. ``hint``, if
    given, replaces the runtime's (a caller that knows a better fix, e.g. ``input_shape=``)."""
    axes, fixed_by = input_axes(ast, source)
    try:
        driver.check_rank(tuple(shape), name, axes)
    except driver.InputProblem as problem:
        if hint is not None:
            problem.hint = hint
        raise located(problem, fixed_by, source) from None


def example_shape(input_shape: Any) -> tuple[int, ...]:
    """The ``input_shape`` argument (finite networks, estimators, ``verify``): an int d as
    (d,), a tuple or list of whole numbers >= 1 as a tuple; InputError for anything else."""
    shape = (input_shape,) if isinstance(input_shape, (int, np.integer)) else input_shape
    if not isinstance(shape, (tuple, list)) or not shape or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
        raise InputError(f"input_shape must be the number of features d >= 1 or the shape of "
                         f"one example, channels last, e.g. (8, 8, 1); got {input_shape!r}")
    return tuple(int(s) for s in shape)


def refuse_complex(value: Any, name: str) -> None:
    """InputError if ``value`` (an array or anything array-like) holds complex numbers."""
    _checked(driver.refuse_complex, value, name)


def as_real_array(value: Any, name: str, what: str = "a numeric array") -> np.ndarray:
    """``value`` as a float64 array (a view when it already is one).

    The dtype check every entry point shares: complex data is refused rather than cut to
    its real part, sparse input is densified, and anything that is not numeric raises
    InputError naming ``name``."""
    refuse_complex(value, name)  # before densifying, which would cost memory first
    return _checked(driver.as_real, densified(value, name), name, what)


def densified(value: Any, name: str) -> Any:
    """A scipy.sparse matrix or array as a dense ndarray, anything else as it is.

    Kernels are dense whatever the inputs, so sparse inputs are accepted as scikit-learn's
    kernel methods accept them, and densified once: an (n, d) input costs n * d floats,
    checked against the memory available first."""
    sparse = sys.modules.get("scipy.sparse")  # not imported: nothing can be sparse
    if sparse is None or not sparse.issparse(value):
        return value
    shape = " x ".join(map(str, value.shape))
    copies = 1 if value.dtype == np.float64 else 2  # the dense array, then its float64 copy
    require_memory(copies * 8 * int(np.prod(value.shape, dtype=np.float64)),
                   f"{name} ({shape}, sparse) as a dense array",
                   hint="kernels are dense whatever the inputs; pass fewer rows at a time")
    return value.toarray()


def check_inputs(x1: Any, x2: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated float64 copies (or views) of the inputs: the checks of the runtime's
    ``check_inputs`` (which standalone modules run), sparse inputs densified."""
    a = _as_matrix(x1, "x1")
    if x2 is None:
        return a, None
    b = _as_matrix(x2, "x2")
    _checked(driver.check_features, a, b)
    return a, b


def _as_matrix(x: Any, name: str) -> np.ndarray:
    refuse_complex(x, name)  # before densifying, which would cost memory first
    return _checked(driver.as_matrix, densified(x, name), name)


squared_norms = driver.squared_norms  # row-wise x·x / d, the input layer's variances
