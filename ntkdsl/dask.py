"""ntkdsl on Dask: what goes with the lazy kernels that ``Network.nngp``/``ntk``/``kernels``
return for Dask arrays (see ``ntkdsl.evaluation.dask_blocks``).

Install with ``pip install 'ntkdsl[dask]'``. Kernels larger than the cluster's memory go
straight to disk from the workers that compute them: ``K.to_zarr(path)`` (Dask's own, a
Zarr store) or ``to_npy(K, path)`` (one ``.npy`` file, opened later with
``numpy.load(path, mmap_mode='r')``); both need a filesystem every worker sees.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import InputError
from .evaluation.dask_blocks import is_dask_array

__all__ = ["to_npy"]


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


def _write_block(block: np.ndarray, path: str, block_info: dict | None = None) -> np.ndarray:
    """Write one block into its place of the ``.npy`` file at ``path`` (on a worker)."""
    rows, columns = block_info[0]["array-location"]
    target = np.load(path, mmap_mode="r+")
    target[rows[0]:rows[1], columns[0]:columns[1]] = block
    target.flush()
    del target
    return np.ones((1, 1), dtype=bool)
