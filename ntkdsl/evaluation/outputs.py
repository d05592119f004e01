"""The output arrays of an evaluation: the dtype, checks of a given ``out``, and the
allocation of the missing ones after a memory check."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, ShapeError
from .inputs import DTYPES
from .memory import _size, require_memory
from .plan import MAX_WORKING_BYTES, WORKING_SHARE


def resolve_dtype(dtype: Any, outs: Sequence[np.ndarray | None]) -> np.dtype:
    """The evaluation dtype: the one asked for, else that of a given ``out``, else float64."""
    given = [o.dtype for o in outs if isinstance(o, np.ndarray)]
    if dtype is None:
        dtype = given[0] if given else np.float64
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype {dtype!r} is not a NumPy dtype",
                         hint="valid: numpy.float64 (default) or numpy.float32") from None
    if dt not in DTYPES:
        raise InputError(f"dtype {dt} is not supported",
                         hint="valid: numpy.float64 (default) or numpy.float32")
    return dt


def check_out(out: Any, kind: str, shape: tuple[int, int], dtype: np.dtype,
              inputs: Sequence[np.ndarray]) -> None:
    """Raise before any work if ``out`` cannot receive the ``kind`` kernel."""
    if not isinstance(out, np.ndarray):
        raise InputError(f"out for the {kind.upper()} must be a NumPy array or np.memmap, "
                         f"got {type(out).__name__}")
    if out.shape != shape:
        raise ShapeError(f"out for the {kind.upper()} has shape {out.shape} but the kernel "
                         f"is {shape[0]} x {shape[1]}",
                         hint=f"allocate it with shape {shape}")
    if out.dtype != dtype:
        raise InputError(f"out for the {kind.upper()} has dtype {out.dtype} but the "
                         f"evaluation is in {dtype}",
                         hint=f"allocate out with dtype={dtype.name}, or pass "
                              f"dtype=numpy.{out.dtype.name} if that is supported")
    if not out.flags.writeable:
        raise InputError(f"out for the {kind.upper()} is read-only",
                         hint="pass a writeable array (an np.memmap opened with mode "
                              "'w+' or 'r+')")
    for x in inputs:
        if np.shares_memory(out, x):
            raise InputError(f"out for the {kind.upper()} overlaps an input array",
                             hint="the inputs must stay intact while the kernel is written")


def allocate_outputs(kinds: Sequence[str], outs: Sequence[np.ndarray | None],
                     shape: tuple[int, int], dtype: np.dtype) -> list[np.ndarray]:
    """The given ``out`` arrays, with the missing ones allocated after checking that they
    (and the evaluation's working memory) fit in the memory available."""
    missing = sum(o is None for o in outs)
    need = missing * shape[0] * shape[1] * dtype.itemsize
    if not need:
        return list(outs)
    what = " and ".join(k.upper() for k, o in zip(kinds, outs) if o is None)
    description = f"the {what} ({shape[0]} x {shape[1]}, {dtype.name})"
    hint = ("write it to disk instead: out=numpy.lib.format.open_memmap('kernel.npy', "
            f"mode='w+', dtype=numpy.{dtype.name}, shape={shape}); "
            "or use dtype=numpy.float32 (half the memory), or fewer inputs")
    # The working memory (Gram blocks, temporaries) comes on top: see WORKING_SHARE.
    require_memory(need + min(WORKING_SHARE * need, MAX_WORKING_BYTES), description, hint)
    try:
        return [np.empty(shape, dtype=dtype) if o is None else o for o in outs]
    except MemoryError:  # a limit the check cannot read (or memory taken meanwhile)
        raise InputError(f"{description} needs {_size(need)} of memory, more than this "
                         "process could allocate", hint=hint) from None
