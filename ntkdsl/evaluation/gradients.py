"""A kernel and its derivatives with respect to the architecture's numbers, in one pass.

The compiled gradient program (ntkdsl.tangents) returns the kernel and p derivatives per
entry; they run through the same panel pipeline as the kernels (``panels``: Gram slices
on a helper thread, cache-sized chunks, a self-kernel's triangle mirrored, entries of
identical inputs from the exact diagonal program), written into a kernel (n1, n2) and the
p derivatives as the planes of one (n1, n2, p) array, scikit-learn's layout of a kernel
gradient."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .blas import _BlasLimit
from .checks import _overflow, check_finite
from .identical import identical_pairs
from .inputs import check_inputs, squared_norms
from .memory import _keep_freed_heap, require_memory
from .outputs import resolve_dtype
from .panels import _diagonal_arrays, _Panels, _run, write_identical
from .plan import MAX_CHUNK, MAX_CHUNK_NUMERICAL, WORKING_SHARE, make_plan

if TYPE_CHECKING:
    from ..generate import CompiledKernels


def evaluate_with_gradients(compiled: CompiledKernels, kind: str, count: int, x1: Any,
                            x2: Any = None, *, dtype: Any = None, progress: bool | None = None,
                            threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (n1, n2), derivatives (n1, n2, count)) of x1 against x2 (None: x1 itself),
    from a compiled program whose outputs are the kernel then its ``count`` derivatives.
    Every check (inputs, memory) happens before any work."""
    a, b = check_inputs(x1, x2)
    if b is not None and b is a:
        b = None
    shape = (len(a), len(a) if b is None else len(b))
    dt = resolve_dtype(dtype, [None])
    need = (1 + count) * shape[0] * shape[1] * dt.itemsize
    require_memory(need * (1 + WORKING_SHARE), f"the {kind.upper()} and its {count} "
                   f"derivatives ({shape[0]} x {shape[1]} x {1 + count}, {dt.name})",
                   hint="use fewer inputs (a subset of the data) or dtype=numpy.float32")
    value = np.empty(shape, dtype=dt)
    derivatives = np.empty((*shape, count), dtype=dt)
    outs = [value, *(derivatives[:, :, j] for j in range(count))]
    q1 = squared_norms(a)
    q2 = q1 if b is None else squared_norms(b)
    plan = make_plan(*shape, b is None, dt, WORKING_SHARE * need, compiled.temporaries,
                     threads, MAX_CHUNK_NUMERICAL if compiled.numerical else MAX_CHUNK)
    keep = list(range(1 + count))
    _keep_freed_heap()
    panels = _Panels(compiled.pair, a, a if b is None else b, q1, q2, keep, outs, plan, dt)
    try:
        with _BlasLimit() as blas:
            rows, cols = _run(panels, plan, outs, progress, lambda: identical_pairs(a, b), blas)
            if rows.size:
                write_identical(_diagonal_arrays(compiled.diagonal, q1, a.shape[1]), outs,
                                keep, rows, cols)
    except (OverflowError, ValueError) as err:
        largest = (np.array([q1.max(), q2.max()], dtype=np.float64), a.shape[1])
        raise _overflow(compiled, largest, str(err)) from None
    names = [kind] + [f"derivative {j + 1} of the {kind}" for j in range(count)]
    check_finite(compiled, names, outs,
                 lambda i, j: (np.array([q1[i], q2[j]], dtype=np.float64), a.shape[1]))
    return value, derivatives


__all__ = ["evaluate_with_gradients"]
