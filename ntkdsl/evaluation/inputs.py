"""Validation of the inputs every entry point shares: kernel names, real dtypes, sparse
data, the (n, d) input matrices and their squared norms."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError, ShapeError
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
