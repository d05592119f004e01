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

from . import spatial
from .inputs import check_inputs
from .memory import require_memory
from .outputs import resolve_dtype
from .panels import run_pairs
from .plan import WORKING_SHARE

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
    run_pairs(compiled, a, b, outs, list(range(1 + count)), _names(kind, count), dt, progress,
              threads)
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
    spatial.run_tiles(compiled, a, b, outs, list(range(1 + count)), _names(kind, count), dt,
                      progress, workers, pairs_per_tile)
    return value, derivatives


__all__ = ["evaluate_with_gradients"]
