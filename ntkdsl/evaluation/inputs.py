"""Validation of the inputs every entry point shares: kernel names, real dtypes, sparse
data, the (n, d) input matrices and their squared norms."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..errors import InputError, ShapeError
from ..kinds import KINDS
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


def refuse_complex(value: Any, name: str) -> None:
    """InputError if ``value`` (an array or anything array-like) holds complex numbers."""
    dtype = getattr(value, "dtype", None)
    if not isinstance(dtype, np.dtype):  # lists, DataFrames, objects with __array__ only
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):
            return  # not an array at all: the float conversion that follows says so
    if dtype.kind == "c":
        # The wording starts as scikit-learn's, which its estimator checks look for.
        raise InputError(f"Complex data not supported: {name} has a complex dtype; kernels and "
                         "solvers take real numbers only",
                         hint=f"pass {name}.real or np.abs({name}) if that is what you mean")


def as_real_array(value: Any, name: str, what: str = "a numeric array") -> np.ndarray:
    """``value`` as a float64 array (a view when it already is one).

    The dtype check every entry point shares: complex data is refused rather than cut to its
    real part (NumPy's float conversion would drop the imaginary part with only a warning),
    and anything that is not numeric raises InputError naming ``name``."""
    refuse_complex(value, name)
    value = densified(value, name)
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be {what}: {err}") from None


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


def _as_matrix(x: Any, name: str) -> np.ndarray:
    arr = as_real_array(x, name, "a numeric array of shape (n, d)")
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


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Row-wise x·x / d, the input layer's variances."""
    return np.einsum("ij,ij->i", x, x) / x.shape[1]
