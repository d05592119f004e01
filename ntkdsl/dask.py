"""ntkdsl on Dask: what goes with the lazy kernels that ``Network.nngp``/``ntk``/``kernels``
return for Dask arrays (see ``ntkdsl.evaluation.dask_blocks``), and the row-chunk passes the
solvers run on a cluster (``ntkdsl.nystrom``: C = ΦᵀΦ and ΦᵀY as a sum over the chunks of the
training rows, predictions chunk by chunk).

Install with ``pip install 'ntkdsl[dask]'``. Kernels larger than the cluster's memory go
straight to disk from the workers that compute them: ``K.to_zarr(path)`` (Dask's own, a
Zarr store) or ``to_npy(K, path)`` (one ``.npy`` file, opened later with
``numpy.load(path, mmap_mode='r')``); both need a filesystem every worker sees.
"""
from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np

from .errors import InputError
from .evaluation.dask_blocks import (
    active_client,
    check_finite_rows,
    chunk_bounds,
    is_dask_array,
    mirrored_blocks,
    row_chunked,
)
from .evaluation.outputs import allocate_outputs, check_out

__all__ = ["gather", "to_npy"]


def to_npy(array: Any, path: str | os.PathLike) -> str:
    """Write the 2-D Dask array ``array`` (e.g. ``net.ntk(X)`` of a Dask ``X``) to one
    ``.npy`` file at ``path``, block by block: each block is written by the worker that
    computes it, into a file created here with its full size (sparse until written), so
    neither the client nor any worker holds more than a block. Returns the path."""
    if not is_dask_array(array) or array.ndim != 2:
        raise InputError(f"to_npy takes a 2-D Dask array, got {type(array).__name__}"
                         + (f" of {array.ndim} dimensions" if hasattr(array, "ndim") else ""),
                         hint="for a NumPy array, use numpy.save(path, array)")
    path = os.fspath(path)
    header = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    del header  # the file now exists with its header and full length
    written = array.map_blocks(_write_block, path=path, dtype=bool, chunks=(1, 1),
                               meta=np.empty((0, 0), dtype=bool))
    written.compute()
    return path


def gather(array: Any, out: np.ndarray | None = None) -> np.ndarray:
    """The 2-D Dask array ``array`` (a lazy kernel) as one NumPy array in this process.

    With a distributed client, each block is fetched from the worker that computed it and
    copied into place as it completes, then released there — where ``array.compute()``
    first joins every block on one worker and sends the whole array on (two transfers and
    a copy of N² entries: 5-6x slower in benchmarks/dask_speed.py). A self-kernel's block
    below the diagonal is not fetched: it is its twin's transpose, written here. ``out``: a preallocated
    array or ``np.memmap`` of the kernel's shape and dtype to fill (else one is allocated
    after a memory check). Without a client, Dask's local scheduler stores into ``out``."""
    if not is_dask_array(array) or array.ndim != 2:
        raise InputError(f"gather takes a 2-D Dask array, got {type(array).__name__}",
                         hint="a NumPy array is already gathered")
    dtype = np.dtype(array.dtype)
    if out is None:
        out = allocate_outputs(("kernel",), (None,), array.shape, dtype)[0]
    else:
        check_out(out, "kernel", array.shape, dtype, ())
    client = active_client()
    if client is None:
        import dask.array as da

        da.store(array, out, lock=False, scheduler="threads")
        return out
    from distributed import as_completed

    starts = [chunk_bounds(chunks) for chunks in array.chunks]
    blocks = array.to_delayed()
    mirrors = mirrored_blocks(array)  # fetched once, as their twins' transposes
    twins: dict[tuple, list] = {}
    for below, above in mirrors.items():
        twins.setdefault(above, []).append(below)
    places = {}
    for i, j in np.ndindex(blocks.shape):
        if (i, j) not in mirrors:
            places[client.compute(blocks[i, j])] = (i, j)
    for future, block in as_completed(places, with_results=True):
        i, j = places.pop(future)
        out[starts[0][i]:starts[0][i + 1], starts[1][j]:starts[1][j + 1]] = block
        for r, c in twins.get((i, j), ()):
            out[starts[0][r]:starts[0][r + 1], starts[1][c]:starts[1][c + 1]] = block.T
        future.release()
    return out


def _write_block(block: np.ndarray, path: str, block_info: dict | None = None) -> np.ndarray:
    """Write one block into its place of the ``.npy`` file at ``path`` (on a worker)."""
    rows, columns = block_info[0]["array-location"]
    target = np.load(path, mmap_mode="r+")
    target[rows[0]:rows[1], columns[0]:columns[1]] = block
    # No flush (msync) per block: it waited for the disk on every task. Unmapping hands the
    # pages to the file's page cache, which readers on this machine see at once and the
    # kernel writes back.
    del target
    return np.ones((1, 1), dtype=bool)


# ------------------------------------------------------------------ row-chunk passes --
def sum_over_row_chunks(function, x: Any, y: Any, *shared: Any, name: str = "x_train"):
    """``function(x_chunk, y_chunk, *shared)`` of every row chunk of the Dask array ``x`` (y:
    the matching rows, a NumPy or Dask array), summed by a tree reduction on the cluster
    (results must support ``+``); the sum, computed. ``shared`` objects travel to each
    worker once. A non-finite input is an InputError naming its row in the whole of ``x``."""
    import dask

    x = row_chunked(x, name)
    bounds = chunk_bounds(x.chunks[0])
    if is_dask_array(y):
        y_chunks = list(y.rechunk((x.chunks[0],) + y.shape[1:]).to_delayed().ravel())
    else:
        y_chunks = _on_the_cluster([y[a:b] for a, b in itertools.pairwise(bounds)])
    shared = _on_the_cluster(shared, broadcast=True)
    parts = [dask.delayed(_checked_call)(function, chunk, y_chunk, int(first), name, *shared)
             for chunk, y_chunk, first in zip(x.to_delayed().ravel(), y_chunks, bounds)]
    while len(parts) > 1:  # a balanced tree: log2(chunks) rounds of pairwise sums
        parts = [dask.delayed(_sum)(*parts[i:i + 2]) for i in range(0, len(parts), 2)]
    return parts[0].compute()


def map_row_chunks(function, x: Any, shapes, *shared: Any, axis: int = 0,
                   name: str = "x_test") -> list:
    """Lazy Dask arrays of ``function(x_chunk, *shared)`` for the row chunks of ``x``: the
    function returns a tuple of arrays, ``shapes(rows)`` their shapes for a chunk of
    ``rows`` rows; the chunks' results are joined along ``axis`` (where their rows are)."""
    import dask
    import dask.array as da

    x = row_chunked(x, name)
    bounds = chunk_bounds(x.chunks[0])
    shared = _on_the_cluster(shared, broadcast=True)
    results = [dask.delayed(_checked_call)(function, chunk, None, int(first), name, *shared)
               for chunk, first in zip(x.to_delayed().ravel(), bounds)]
    arrays = []
    for k in range(len(shapes(1))):
        pieces = [da.from_delayed(result[k], shape=shapes(rows)[k], dtype=np.float64)
                  for result, rows in zip(results, x.chunks[0])]
        arrays.append(da.concatenate(pieces, axis=axis))
    return arrays


def _on_the_cluster(values, broadcast: bool = False) -> list:
    """``values`` as task arguments: with a distributed client, sent to the workers first
    (to every worker with ``broadcast``: each chunk's task needs them) so the graph holds
    only their keys, not megabytes of matrices; else wrapped for Dask's local schedulers."""
    import dask
    from dask.base import get_scheduler

    client = active_client()
    if client is None or getattr(get_scheduler(), "__self__", None) is not client:
        return [dask.delayed(value, traverse=False) for value in values]
    # A list is scattered element by element, each element whole (a dict given alone would
    # be scattered value by value, under its own keys as the futures' names).
    return client.scatter(list(values), broadcast=broadcast, hash=False)


def _checked_call(function, chunk, y_chunk, first_row: int, name: str, *shared):
    check_finite_rows(chunk, name, first_row)
    return function(chunk, *shared) if y_chunk is None else function(chunk, y_chunk, *shared)


def _sum(*parts):
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total
