"""Kernels of convolutional networks on channels-last images: validation with the place in
the architecture marked, the values of each input alone, and tiles of pairs.

A convolutional network's kernel program is split (ntkdsl.generate.split_program): the
``side`` function computes what depends on one image alone (its variances at each position,
its covariance with itself across positions where pooling needs it) once per image; the
``pair`` function computes a tile of pairs from the tile's Gram statistic (at the same
positions, or at every pair of positions: one BLAS product) and both sides' values. A tile
holds about a cache's worth of kernel values; tiles run on the calling thread and worker
threads (NumPy and BLAS release the GIL in their loops), BLAS held to one thread each.

A self-kernel computes the tiles on and above the diagonal and mirrors them, so it is
exactly symmetric; entries of identical images are the diagonal program's exact values.
Memory (outputs, the side values, each worker's tile) is checked before the work starts,
and ``out`` may be an ``np.memmap``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, NumericalError, ShapeError
from ..progress import progress_bar
from ..runtime import driver
from .blas import _BlasLimit
from .checks import _overflow, check_finite, checked_program
from .inputs import KINDS, densified, located, refuse_complex
from .memory import _keep_freed_heap, is_shared_file_map, release_pages, require_memory
from .outputs import allocate_outputs, check_out, resolve_dtype
from .panels import PROGRESS_DELAY_S, _pool, _run_pool, write_identical
from .plan import default_threads

if TYPE_CHECKING:
    from ..generate import CompiledKernels

# Images whose side values are computed at once: their arrays across positions stay small.
SIDE_VALUES = 1 << 21
# Kernel values per tile: large enough to amortise a few hundred NumPy calls, small enough
# for each array to stay near the caches (the numerical engine wants more, see plan.py).
# Same positions only (Flatten, no pooling) do less per value: their tiles are larger
# (1,024 digits' Flatten NTK: 0.72x CPU against 1 << 16 in alternated runs; the pooled
# network's gained nothing from 1 << 17).
TILE_VALUES = 1 << 16
TILE_VALUES_SAME = 1 << 18
TILE_VALUES_NUMERICAL = 1 << 17


def as_images(compiled: CompiledKernels, x: Any, name: str) -> np.ndarray:
    """x as validated float64 images for this network (ShapeError or InputError, with the
    layer that fixes the number of spatial axes marked)."""
    plan = compiled.spatial.plan
    refuse_complex(x, name)
    try:
        return driver.as_images(densified(x, name), name, plan.axes)
    except driver.InputProblem as problem:
        raise located(problem, plan.fixed_by, plan.source) from None


def check_pair(compiled: CompiledKernels, x1: Any, x2: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated images x1 and x2 (None: x1 against itself) of one shape."""
    a = as_images(compiled, x1, "x1")
    if x2 is None:
        return a, None
    b = as_images(compiled, x2, "x2")
    try:
        driver.check_images(a, b)
    except driver.InputProblem as problem:
        raise ShapeError(problem.message, hint=problem.hint) from None
    return a, b


def side_values(compiled: CompiledKernels, x: np.ndarray, dtype: np.dtype) -> list[np.ndarray]:
    """The side function's values for every image of x, each (..., n, 1), in ``dtype``;
    computed a few images at a time."""
    spec = compiled.spatial
    per_image = _per_image(x, spec.pairs) * spec.temporaries
    step = max(1, SIDE_VALUES // per_image)
    parts: list[list[np.ndarray]] = []
    for s in range(0, len(x), step):
        chunk = x[s:s + step]
        with checked_program():  # the kernels made from these values are checked
            values = spec.side(*driver.image_statistics(chunk, spec.pairs), x.shape[-1])
        parts.append([np.asarray(np.broadcast_to(v, np.shape(v)[:-2] + (len(chunk), 1))
                                 if np.ndim(v) >= 2 else np.full((len(chunk), 1), v))
                      for v in values])
    return [np.concatenate([p[i] for p in parts], axis=-2).astype(dtype, copy=False)
            for i in range(len(parts[0]))] if parts else []


def tile_values(mine: Sequence[np.ndarray], theirs: Sequence[np.ndarray], rows: slice,
                cols: slice) -> list[np.ndarray]:
    """The side values a tile of pairs reads: x's of its rows, then x''s of its columns,
    each made contiguous (a slice of x''s values is a short run per position; a kernel
    array multiplied by a contiguous row of them costs about 0.6x as much)."""
    return ([v[..., rows, :] for v in mine]
            + [np.ascontiguousarray(v[..., cols]) for v in theirs])


def _per_image(x: np.ndarray, pairs: bool) -> int:
    positions = math.prod(x.shape[1:-1])
    return positions * positions if pairs else positions


def diagonal_values(compiled: CompiledKernels, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (NNGP, NTK) of each image with itself (correlation exactly 1 at every position
    of an image with itself), float64, a few images at a time."""
    spec = compiled.spatial
    step = max(1, SIDE_VALUES // (_per_image(x, spec.pairs) * spec.temporaries))
    out = None  # one array per output of the diagonal function (a gradient program's too)
    with _BlasLimit():
        for s in range(0, len(x), step):
            chunk = x[s:s + step]
            with checked_program():  # every value is checked below
                values = compiled.diagonal(*driver.image_statistics(chunk, spec.pairs),
                                           x.shape[-1])
            out = out or tuple(np.empty(len(x)) for _ in values)
            for o, v in zip(out, values):
                o[s:s + len(chunk)] = np.broadcast_to(v, (len(chunk), 1))[:, 0]
    for kind, value in zip(KINDS, out):
        if not np.isfinite(value).all():
            i = int(np.argmax(~np.isfinite(value)))
            raise NumericalError(f"the {kind.upper()} of input {i} with itself is not finite "
                                 f"({value[i]}): an overflow past float64's range",
                                 hint="use smaller weight or activation scales, or inputs of "
                                      "smaller norm")
    return out


def _tiles(n1: int, n2: int, symmetric: bool, pairs_per_tile: int) -> list[tuple[int, int, int, int]]:
    """Tiles (r0, r1, c0, c1) of about ``pairs_per_tile`` pairs: strips of one row where a
    row holds that many columns (every array then broadcasts one image x against a run of
    images x', the fastest way for NumPy), else blocks of rows; a self-kernel's tiles on
    and above the diagonal only (a row from its diagonal entry on)."""
    cols = min(n2, pairs_per_tile)
    rows = max(1, pairs_per_tile // cols)
    tiles = []
    for r in range(0, n1, rows):
        r1 = min(r + rows, n1)
        start = r if symmetric else 0
        tiles += [(r, r1, c, min(c + cols, n2)) for c in range(start, n2, cols)]
    return tiles


class _Tiles:
    """One evaluation's tiles: each computes its Gram statistic, runs the pair function on
    it and both sides' values, and stores the kernels (and, for a self-kernel, their
    mirror image)."""

    def __init__(self, compiled: CompiledKernels, a: np.ndarray, b: np.ndarray | None,
                 mine: list[np.ndarray], theirs: list[np.ndarray], keep: Sequence[int],
                 outs: Sequence[np.ndarray], dtype: np.dtype):
        # The NNGP alone is half the work: its own function computes no NTK.
        nngp_only = list(keep) == [0]
        self.pair = compiled.spatial.nngp_pair if nngp_only else compiled.pair
        self.pairs = compiled.spatial.pairs
        self.a, self.b, self.symmetric = a, a if b is None else b, b is None
        self.mine, self.theirs, self.dtype = mine, theirs, dtype
        self.stores = list(zip(keep, outs))

    def run(self, tile: tuple[int, int, int, int]) -> int:
        r0, r1, c0, c1 = tile
        gram = driver.image_gram(self.a[r0:r1], self.b[c0:c1], self.pairs)
        if gram.dtype != self.dtype:
            gram = gram.astype(self.dtype)
        buffer = _ufunc_buffer(gram.shape, r1 - r0, self.pairs)
        # Put back by hand: NumPy 1's errstate restores the error modes only.
        before = None if buffer is None else np.setbufsize(buffer)
        try:
            with checked_program():  # the outputs are checked after the last tile
                values = self.pair(gram, self.a.shape[-1],
                                   *tile_values(self.mine, self.theirs, slice(r0, r1),
                                                slice(c0, c1)))
        finally:
            if before is not None:
                np.setbufsize(before)
        for i, out in self.stores:
            block = np.broadcast_to(values[i], (r1 - r0, c1 - c0))
            if self.symmetric and c0 < r1:  # on the diagonal: its upper triangle, mirrored
                diagonal = np.arange(r0, r1)[:, None] <= np.arange(c0, c1)[None, :]
                block = np.where(diagonal, block, 0.0)
                out[r0:r1, c0:c1] = np.where(diagonal, block, out[r0:r1, c0:c1])
                out[c0:c1, r0:r1] = np.where(diagonal.T, block.T, out[c0:c1, r0:r1])
                continue
            out[r0:r1, c0:c1] = block
            if self.symmetric:
                out[c0:c1, r0:r1] = block.T
        return int(np.count_nonzero(np.arange(r0, r1)[:, None] <= np.arange(c0, c1)[None, :])
                   if self.symmetric else (r1 - r0) * (c1 - c0))


def _ufunc_buffer(shape: tuple[int, ...], rows: int, pairs: bool) -> int | None:
    """NumPy's ufunc buffer size for the pair function on a strip tile (one image x against
    a run of images x') whose kernel arrays have ``shape``, or None (the default) for other
    tiles. A value of x alone at each (first) position times a kernel array is one
    contiguous run per position: the second positions and the images x' (1,024 values for
    8x8 images and 16 columns), likewise a value of x' alone, repeated per first position.
    NumPy's buffered iterator copies the operands of such a broadcast through its buffer
    when that run is shorter than the buffer (8,192 values by default): each of those
    multiplies then costs about 2x (0.29 against 0.11 ns per value, NumPy 2.4, by x's
    values in place). A buffer no longer than the run keeps the loop on the arrays; the
    numbers are the same. Under about 200 values a run is better buffered (a run of 128:
    0.35 ns buffered, 0.41 not), so shorter runs keep the default. NumPy wants a multiple
    of 16."""
    if rows != 1:
        return None
    count = (len(shape) - 2) // 2 if pairs else len(shape) - 2
    run = math.prod(shape[count:])
    return run - run % 16 if 256 <= run < np.getbufsize() else None


def evaluate_images(compiled: CompiledKernels, x1: Any, x2: Any = None, *,
                    kinds: Sequence[str] = KINDS, out: Sequence[np.ndarray | None] | None = None,
                    dtype: Any = None, progress: bool | None = None,
                    threads: int | None = None) -> list[np.ndarray]:
    """The kernels named in ``kinds`` of images x1 against x2 (None: x1 against itself),
    into ``out`` or new arrays; every check happens before the work starts."""
    a, b = check_pair(compiled, x1, x2)
    if b is not None and b is a:
        b = None
    other = a if b is None else b
    spec = compiled.spatial
    per_pair = spec.plan.entries_per_pair(a.shape[1:-1])  # ShapeError: a window too large
    shape = (len(a), len(other))
    outs = [None] * len(kinds) if out is None else list(out)
    dt = resolve_dtype(dtype, outs)
    for kind, o in zip(kinds, outs):
        if o is not None:
            check_out(o, kind, shape, dt, [a] if b is None else [a, b])
    given = [o for o in outs if o is not None]
    if len(given) == 2 and np.shares_memory(*given):
        raise InputError("the NNGP and NTK outputs overlap",
                         hint="pass two separate arrays (or None for either)")
    workers = _workers(threads, shape)
    temporaries = (spec.nngp_temporaries if [KINDS.index(k) for k in kinds] == [0]
                   else compiled.temporaries)
    pairs_per_tile, tile_bytes = _tile_size(compiled, per_pair, workers, dt, shape,
                                            temporaries)
    side_bytes = (1 if b is None else 2) * _side_bytes(compiled, a, dt)
    require_memory(side_bytes + workers * tile_bytes,
                   f"the values of each input and {workers} tile(s) of kernel arrays "
                   f"({per_pair} values per pair of inputs)",
                   hint="use smaller images, or fewer or no pooling layers (same positions "
                        "need positions, pooling positions squared, values per pair)")
    outs = allocate_outputs(kinds, outs, shape, dt)
    run_tiles(compiled, a, b, outs, [KINDS.index(k) for k in kinds], kinds, dt, progress,
              workers, pairs_per_tile)
    return outs


def run_tiles(compiled: CompiledKernels, a: np.ndarray, b: np.ndarray | None,
              outs: Sequence[np.ndarray], keep: Sequence[int], names: Sequence[str],
              dt: np.dtype, progress: bool | None, workers: int, pairs_per_tile: int) -> None:
    """Fill ``outs`` (allocated, memory checked) with the program's outputs ``keep`` for the
    images a against b (None: a itself), in tiles of pairs on ``workers`` threads;
    ``names`` name the outputs in a NumericalError."""
    other = a if b is None else b
    tiles = _tiles(len(a), len(other), b is None, pairs_per_tile)
    _keep_freed_heap()  # a tile's arrays are freed and made again: no page faults each time
    try:
        with _BlasLimit() as blas:
            mine = side_values(compiled, a, dt)
            theirs = [driver.as_other_input(v)
                      for v in (mine if b is None else side_values(compiled, b, dt))]
            work = _Tiles(compiled, a, b, mine, theirs, keep, outs, dt)
            _run_tiles(work, tiles, outs, workers, progress, blas)
            rows, cols = driver.identical_pairs(a.reshape(len(a), -1),
                                                None if b is None else b.reshape(len(b), -1))
            if rows.size:
                write_identical(diagonal_values(compiled, a), outs, keep, rows, cols)
    except (OverflowError, ValueError) as err:
        raise _images_overflow(compiled, a, err) from None
    check_finite(compiled, names, outs,
                 lambda i, j: _statistics(compiled, np.stack([a[i], other[j]])))


def _images_overflow(compiled: CompiledKernels, a: np.ndarray, err: Exception) -> NumericalError:
    """The NumericalError for int(inf) or int(nan) inside the program (inputs are checked
    before it runs), naming the layer for the image of the largest entries."""
    largest = int(np.argmax(np.abs(a).reshape(len(a), -1).max(axis=1)))
    return _overflow(compiled, _statistics(compiled, a[largest:largest + 1]), str(err))


def _statistics(compiled: CompiledKernels, x: np.ndarray) -> tuple:
    """The diagonal function's arguments for images x."""
    return (*driver.image_statistics(x, compiled.spatial.pairs), x.shape[-1])


def _workers(threads: int | None, shape: tuple[int, int]) -> int:
    if threads is not None and int(threads) < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    pool = default_threads() if threads is None else int(threads)
    return max(1, min(pool, shape[0] * shape[1]))


def _tile_size(compiled: CompiledKernels, per_pair: int, workers: int, dtype: np.dtype,
               shape: tuple[int, int], temporaries: int) -> tuple[int, int]:
    """(pairs per tile, bytes a tile's arrays take): about ``TILE_VALUES`` kernel values per
    tile at every pair of positions, ``TILE_VALUES_SAME`` at the same positions (a few MB of
    arrays, near the CPU's caches; the numerical engine's calls amortise better on larger
    ones), at least one pair and at most all pairs."""
    if compiled.numerical:
        target = TILE_VALUES_NUMERICAL
    else:
        target = TILE_VALUES if compiled.spatial.pairs else TILE_VALUES_SAME
    pairs = min(max(1, target // per_pair), shape[0] * shape[1])
    per_value = temporaries * dtype.itemsize + 8  # and the Gram statistic
    return pairs, pairs * per_pair * per_value


def _side_bytes(compiled: CompiledKernels, x: np.ndarray, dtype: np.dtype) -> int:
    """The memory the side values of all images of x take (from one image's), plus one
    chunk's arrays while they are computed."""
    probe = side_values(compiled, x[:1], dtype)
    per_image = sum(v.size for v in probe) * dtype.itemsize
    chunk = SIDE_VALUES * 8
    return len(x) * per_image + chunk


def _run_tiles(work: _Tiles, tiles: list, outs: Sequence[np.ndarray], workers: int,
               progress: bool | None, blas) -> None:
    total = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in tiles)
    bar = progress_bar(progress, total, unit=" pairs", unit_scale=True, desc="kernel",
                       delay=PROGRESS_DELAY_S if progress is None else 0)
    mapped = [o for o in outs if is_shared_file_map(o)]

    def done(count: int) -> None:
        if bar is not None:
            bar.update(count)
        for o in mapped:
            release_pages(o)
        blas.refresh()

    try:
        if workers == 1:
            for tile in tiles:
                done(work.run(tile))
        else:
            _run_pool(_pool("workers", workers), work.run, tiles, workers, done)
    finally:
        if bar is not None:
            bar.close()


def diagonal_of_images(compiled: CompiledKernels, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """``Network.diagonal`` for images: exact (NNGP, NTK) of each image with itself."""
    a = as_images(compiled, x, "x")
    compiled.spatial.plan.entries_per_pair(a.shape[1:-1])
    try:
        return diagonal_values(compiled, a)
    except (OverflowError, ValueError) as err:  # as in ``evaluate_images``
        raise _images_overflow(compiled, a, err) from None


__all__ = ["as_images", "check_pair", "diagonal_of_images", "diagonal_values",
           "evaluate_images", "side_values", "tile_values"]
