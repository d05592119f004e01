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

from ..runtime import driver
from . import spatial
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
    if compiled.spatial is not None:
        return _images_with_gradients(compiled, kind, count, x1, x2, dtype, progress, threads)
    a, b = check_inputs(x1, x2)
    if b is not None and b is a:
        b = None
    shape = (len(a), len(a) if b is None else len(b))
    dt = resolve_dtype(dtype, [None])
    need = (1 + count) * shape[0] * shape[1] * dt.itemsize
    value, derivatives, outs = _outputs(kind, count, shape, dt, need * (1 + WORKING_SHARE))
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
    check_finite(compiled, _names(kind, count), outs,
                 lambda i, j: (np.array([q1[i], q2[j]], dtype=np.float64), a.shape[1]))
    return value, derivatives


def _outputs(kind: str, count: int, shape: tuple[int, int], dt: np.dtype, nbytes: float):
    """(kernel, derivatives, the p + 1 output planes), after checking that ``nbytes`` (the
    outputs and the evaluation's working memory) fit in the memory available."""
    require_memory(nbytes, f"the {kind.upper()} and its {count} derivatives "
                   f"({shape[0]} x {shape[1]} x {1 + count}, {dt.name})",
                   hint="use fewer inputs (a subset of the data) or dtype=numpy.float32")
    value = np.empty(shape, dtype=dt)
    derivatives = np.empty((*shape, count), dtype=dt)
    return value, derivatives, [value, *(derivatives[:, :, j] for j in range(count))]


def _names(kind: str, count: int) -> list[str]:
    return [kind] + [f"derivative {j + 1} of the {kind}" for j in range(count)]


def _images_with_gradients(compiled, kind, count, x1, x2, dtype, progress, threads):
    """``evaluate_with_gradients`` for a convolutional network: the tiles of image pairs
    of ntkdsl.evaluation.spatial, each image's own values once."""
    a, b = spatial.check_pair(compiled, x1, x2)
    if b is not None and b is a:
        b = None
    other = a if b is None else b
    per_pair = compiled.spatial.plan.entries_per_pair(a.shape[1:-1])
    shape = (len(a), len(other))
    dt = resolve_dtype(dtype, [None])
    workers = spatial._workers(threads, shape)
    pairs_per_tile, tile_bytes = spatial._tile_size(compiled, per_pair, workers, dt, shape,
                                                    compiled.temporaries)
    side_bytes = (1 if b is None else 2) * spatial._side_bytes(compiled, a, dt)
    value, derivatives, outs = _outputs(
        kind, count, shape, dt,
        (1 + count) * shape[0] * shape[1] * dt.itemsize + side_bytes + workers * tile_bytes)
    keep = list(range(1 + count))
    _keep_freed_heap()
    try:
        with _BlasLimit() as blas:
            mine = spatial.side_values(compiled, a, dt)
            theirs = [driver.as_other_input(v)
                      for v in (mine if b is None else spatial.side_values(compiled, b, dt))]
            work = spatial._Tiles(compiled, a, b, mine, theirs, keep, outs, dt)
            spatial._run_tiles(work, spatial._tiles(*shape, b is None, pairs_per_tile), outs,
                               workers, progress, blas)
            rows, cols = driver.identical_pairs(a.reshape(len(a), -1),
                                                None if b is None else b.reshape(len(b), -1))
            if rows.size:
                write_identical(spatial.diagonal_values(compiled, a), outs, keep, rows, cols)
    except (OverflowError, ValueError) as err:
        raise spatial._images_overflow(compiled, a, err) from None
    check_finite(compiled, _names(kind, count), outs,
                 lambda i, j: spatial._statistics(compiled, np.stack([a[i], other[j]])))
    return value, derivatives


__all__ = ["evaluate_with_gradients"]
