"""Kernels of Dask arrays as lazy Dask arrays of kernel blocks.

A Dask array of inputs chunked along its rows (every other axis in one chunk) gives a Dask
array of the kernel chunked by (rows of x1, rows of x2): block (i, j) is one call of the
network's own evaluation on row chunks i and j, on whichever worker Dask picks. The network
travels to the workers as its architecture string (``Network`` pickles so) and is compiled
once per worker process (``ntkdsl.compile`` caches per string). A self-kernel computes each
block of the upper triangle once and takes the block below the diagonal as the transpose
of its twin, so it is exactly symmetric; inside a block, entries of identical rows hold the
exact diagonal values as in-process — for rows in different chunks too, because every pair
of chunks meets in one call. Both kernels of ``kernels()`` come from one task per block.

Dask is imported only when the inputs already are Dask arrays: the core never needs it.
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import Any

import numpy as np

from ..errors import InputError, NTKDSLError
from ..runtime import driver
from .inputs import _checked, check_input_rank
from .memory import _size, available_memory
from .outputs import resolve_dtype

PACKAGE = "ntkdsl"  # what every worker must have installed to run the blocks' tasks


def is_dask_array(value: Any) -> bool:
    """True if ``value`` is a dask.array.Array (without importing Dask: an array of it
    exists only once the user has imported dask.array)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(value, module.Array)


def lazy_kernels(net: Any, kinds: tuple[str, ...], x1: Any, x2: Any, *, dtype: Any = None,
                 threads: int | None = None) -> list:
    """One lazy Dask array per kind in ``kinds`` (``'nngp'``, ``'ntk'``): the kernels of
    ``net`` (a Network) on x1 against x2 (None: x1 against itself).

    Each block runs ``net``'s evaluation with ``threads`` threads (default 1: a worker runs
    as many blocks at once as it has threads, so each block keeps to one)."""
    import dask.array as da

    x1 = row_chunked(x1 if is_dask_array(x1) else da.asarray(x1), "x1")
    x2 = None if x2 is None else row_chunked(x2 if is_dask_array(x2) else da.asarray(x2), "x2")
    if x2 is not None and x2.shape[1:] != x1.shape[1:]:
        raise InputError(f"x1 has examples of shape {x1.shape[1:]} but x2 of shape "
                         f"{x2.shape[1:]}; both must have the same features",
                         hint="the kernel pairs rows of x1 with rows of x2")
    for x, name in ((x1, "x1"), (x2, "x2")):
        if x is not None:  # here, before any work, rather than in each block's task
            check_input_rank(net.ast, x.shape, name, net.arch)
    dt = resolve_dtype(dtype, ())
    client = active_client()
    if client is not None:
        _require_ntkdsl_on_workers(client)
    _check_block_memory(client, x1, x2, len(kinds), dt, 1 if threads is None else threads)
    pairs = _pair_layer(net, kinds, x1, x2, dt, 1 if threads is None else threads)
    return [_kernel_array(pairs, k, kind, x1, x2, dt) for k, kind in enumerate(kinds)]


def row_chunked(x: Any, name: str):
    """The Dask array ``x`` if it is chunked along its rows only (every example whole in
    one chunk); InputError with the fix otherwise."""
    axes = x.ndim - 1
    if axes < 1:
        raise InputError(f"{name} has shape {x.shape}; kernels take an array of examples, "
                         "one per row", hint=f"for one example, pass {name}.reshape(1, -1)")
    split = [a for a in range(1, x.ndim) if len(x.chunks[a]) > 1]
    if split:
        fix = ", ".join(f"{a}: -1" for a in split)
        raise InputError(f"{name} is chunked along axis {split[0]} ({len(x.chunks[split[0]])} "
                         "chunks); kernels need every example whole in one chunk, with "
                         "chunks along the rows only",
                         hint=f"rechunk it: {name} = {name}.rechunk({{{fix}}})")
    return x


def _pair_layer(net, kinds, x1, x2, dt, threads) -> tuple:
    """The graph of the blocks' tasks: (graph, layer name, which blocks are mirrored)."""
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    name = "ntkdsl-pairs-" + tokenize(net.arch, kinds, x1, x2, dt.str, threads)
    rows1 = _block_keys(x1)
    rows2 = rows1 if x2 is None else _block_keys(x2)
    first1 = chunk_bounds(x1.chunks[0])
    first2 = first1 if x2 is None else chunk_bounds(x2.chunks[0])
    tasks = {}
    for i, key1 in enumerate(rows1):
        for j, key2 in enumerate(rows2):
            if x2 is None and j < i:
                continue  # the transpose of block (j, i)
            other = None if x2 is None and i == j else key2
            tasks[(name, i, j)] = (_pair_block, net, kinds, key1, other, int(first1[i]),
                                   int(first2[j]), x2 is None, dt.str, threads)
    graph = HighLevelGraph.from_collections(name, tasks, dependencies=[x1] + ([] if x2 is None
                                                                           else [x2]))
    return graph, name, x2 is None


def chunk_bounds(chunks: tuple[int, ...]) -> np.ndarray:
    """Where each chunk along an axis starts, and (last) where the axis ends."""
    return np.cumsum((0, *chunks))


def _block_keys(x) -> list:
    """The key of each row chunk of ``x`` (every other axis is one chunk)."""
    keys = []
    for key in x.__dask_keys__():
        while isinstance(key, list):
            key = key[0]
        keys.append(key)
    return keys


def _kernel_array(pairs: tuple, k: int, kind: str, x1, x2, dt: np.dtype):
    """The Dask array of kernel ``k`` of each block of ``pairs``; a self-kernel's blocks
    below the diagonal are the transposes of their twins above it."""
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    graph, name, symmetric = pairs
    out = name.replace("-pairs-", f"-{kind}-")  # the name Dask's dashboard shows
    blocks = len(x1.chunks[0]), len(x1.chunks[0] if x2 is None else x2.chunks[0])
    tasks = {(out, i, j): ((_transposed, (name, j, i), k) if symmetric and j < i
                           else (_picked, (name, i, j), k))
             for i in range(blocks[0]) for j in range(blocks[1])}
    layers, dependencies = dict(graph.layers), dict(graph.dependencies)
    layers[out], dependencies[out] = tasks, {name}
    chunks = (x1.chunks[0], (x1 if x2 is None else x2).chunks[0])
    return da.Array(HighLevelGraph(layers, dependencies), out, chunks=chunks, dtype=dt)


def mirrored_blocks(array) -> dict[tuple[int, int], tuple[int, int]]:
    """For a self-kernel as ``lazy_kernels`` returned it, each block below the diagonal and
    the block above it whose transpose it is; {} for any other Dask array (a sliced or
    computed-upon kernel included: its blocks are its own)."""
    if not array.name.startswith("ntkdsl-"):
        return {}
    layer = array.__dask_graph__().layers.get(array.name, {})
    return {key[1:]: task[1][1:] for key, task in dict(layer).items()
            if isinstance(task, tuple) and task[0] is _transposed}


def _picked(pair: tuple, k: int) -> np.ndarray:
    return pair[k]


def _transposed(pair: tuple, k: int) -> np.ndarray:
    return pair[k].T  # a view: whoever assembles the blocks copies them once anyway


def _pair_block(net, kinds, a, b, first_a: int, first_b: int, self_kernel: bool, dtype: str,
                threads: int) -> tuple:
    """The kernels of one block on a worker: the chunks checked with their rows numbered as
    in the whole arrays (a NaN's error names its row of x1, not of the chunk), then the
    network's own evaluation."""
    check_finite_rows(a, "x1", first_a)
    if b is not None:
        check_finite_rows(b, "x1" if self_kernel else "x2", first_b)
    return tuple(net._evaluate(kinds, a, b, None, np.dtype(dtype), False, threads))


def check_finite_rows(x: np.ndarray, name: str, first_row: int) -> None:
    """InputError at the first non-finite value of the row chunk ``x``, its row numbered in
    the whole array (the chunk's first row is ``first_row``)."""
    _checked(driver.check_finite, np.asarray(x), name, first_row)


def _require_ntkdsl_on_workers(client) -> None:
    """NTKDSLError naming the package if one of the client's workers cannot import ntkdsl
    (its tasks would fail one by one with a ModuleNotFoundError). Asked once per set of
    workers: a worker that joins later is asked on the next call."""
    workers = frozenset(client.scheduler_info(n_workers=-1)["workers"])
    if _CHECKED_WORKERS.get((client.id, PACKAGE)) == workers:
        return
    missing = _workers_without(client, PACKAGE)
    if missing:
        raise NTKDSLError(f"{len(missing)} Dask worker(s) cannot import {PACKAGE}: "
                          f"{', '.join(sorted(missing))}",
                          hint="install it in every worker's environment, e.g. "
                               "pip install 'ntkdsl[dask]' (the same version as here)")
    _CHECKED_WORKERS[client.id, PACKAGE] = workers


_CHECKED_WORKERS: dict[tuple, frozenset] = {}  # (client id, package) -> workers that have it

# A worker thread holds up to two blocks at once (one computing, the last one waiting to be
# fetched), and Dask pauses a worker at 80% of its memory limit.
_BLOCKS_PER_THREAD = 2
_WORKER_MEMORY_FRACTION = 0.8


def _check_block_memory(client, x1, x2, kinds: int, dt: np.dtype, threads: int) -> None:
    """InputError before the graph is built if the largest block (its ``kinds`` kernels)
    cannot fit where it will be computed: on the smallest worker of ``client`` beside its
    other threads' blocks, or in this process for Dask's local schedulers (one thread a
    core). The hint gives row chunks that fit."""
    rows1 = max(x1.chunks[0])
    rows2 = rows1 if x2 is None else max(x2.chunks[0])
    per_block = rows1 * rows2 * dt.itemsize * kinds
    if client is None:
        free = available_memory()
        budget = None if free is None else free / (_BLOCKS_PER_THREAD * (os.cpu_count() or 1))
        where = f"this process has {{}} a block (the memory available over {_BLOCKS_PER_THREAD} " \
                "blocks a core, Dask's local scheduler)"
    else:
        budgets = [w["memory_limit"] * _WORKER_MEMORY_FRACTION
                   / (_BLOCKS_PER_THREAD * max(w["nthreads"] // threads, 1))
                   for w in client.scheduler_info(n_workers=-1)["workers"].values()
                   if w.get("memory_limit")]
        budget = min(budgets) if budgets else None
        where = (f"the smallest Dask worker has {{}} a block ({_WORKER_MEMORY_FRACTION:.0%} of its "
                 f"memory limit over {_BLOCKS_PER_THREAD} blocks a thread)")
    if budget is None or per_block <= budget:
        return
    rows = max(int(min(rows1, rows2) * 0.9 * (budget / per_block) ** 0.5), 1)
    raise InputError(f"a kernel block of {rows1:,} x {rows2:,} rows ({kinds} kernel(s)) needs "
                     f"{_size(per_block)}, but " + where.format(_size(budget)),
                     hint=f"use smaller row chunks, e.g. x = x.rechunk({{0: {rows}}})")


def active_client():
    """The default dask.distributed client, or None (none, or distributed not imported:
    Dask's local schedulers)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _workers_without(client, package: str) -> list[str]:
    """The addresses of the client's workers on which ``package`` is not installed (asked
    with the standard library only: a worker without ntkdsl cannot run its functions)."""
    found = client.run(importlib.metadata.version, package, on_error="return")
    return [address for address, version in found.items() if not isinstance(version, str)]
