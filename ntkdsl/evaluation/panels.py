"""The panel pipeline: Gram slices, the elementwise program and mirrors, on the calling
thread and a helper; ``evaluate`` and ``diagonal_values``, the two entry points."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, NumericalError
from ..inplace import COLUMN, ROW
from ..progress import progress_bar
from .blas import _BlasLimit
from .checks import _overflow, check_finite, checked_program
from .identical import identical_pairs
from .inputs import KINDS, check_inputs, squared_norms
from .memory import _keep_freed_heap, is_shared_file_map, release_pages, require_memory
from .outputs import allocate_outputs, check_out, resolve_dtype
from .plan import MAX_CHUNK, MAX_CHUNK_NUMERICAL, WORKING_SHARE, Plan, make_plan

if TYPE_CHECKING:
    from ..generate import CompiledKernels, SideValues

PROGRESS_DELAY_S = 2.0
# Identical-input entries written into a file map between releases of its pages.
IDENTICAL_BATCH = 1024


class _Panels:
    """The three steps of a panel, for the outputs of one evaluation. Steps of different
    panels may run at once on different threads: each writes only its own panel's rows,
    and a mirror reads only entries that earlier panels have finished."""

    def __init__(self, compiled: CompiledKernels, a: np.ndarray, b: np.ndarray,
                 q1: np.ndarray, q2: np.ndarray, keep: Sequence[int],
                 outs: Sequence[np.ndarray], plan: Plan, dtype: np.dtype):
        self.pair, self.a, self.b, self.plan, self.dtype = compiled.pair, a, b, plan, dtype
        self.d = a.shape[1]
        # The program runs in the evaluation dtype; norms are rounded to it once, and the
        # values of one input alone are computed once for every row and column.
        self.sides = side_values(compiled.sides, q1.astype(dtype, copy=False),
                                 q2.astype(dtype, copy=False), self.d)
        # The output holding the Gram slices is written last in each chunk: the program
        # may return its input (the Gram slice itself) as another kernel.
        self.stores = list(zip(keep, outs))[::-1]
        self.outs = outs

    def gram(self, r0: int, r1: int) -> np.ndarray:
        """The panel's slice x1[r0:r1] @ x2[c0:].T / d (c0 its first column), written
        into the first output, where the elementwise program reads it: no memory of its
        own in float64; in float32, computed in float64 blocks and rounded."""
        c0 = self.plan.first_column(r0)
        dest = self.outs[0][r0:r1, c0:]
        if dest.dtype == np.float64:
            np.matmul(self.a[r0:r1], self.b[c0:].T, out=dest)
            return np.divide(dest, self.d, out=dest)  # a division, as the untiled x1 @ x2.T / d
        step = self.plan.gram_columns
        block = np.empty((r1 - r0, step))
        for c in range(c0, self.plan.n2, step):
            part = block[:, :min(step, self.plan.n2 - c)]
            np.matmul(self.a[r0:r1], self.b[c:c + step].T, out=part)
            np.divide(part, self.d, out=dest[:, c - c0:c - c0 + part.shape[1]])
        return dest

    def elementwise(self, gram: np.ndarray, r0: int, r1: int) -> int:
        """Run the program on the panel's row chunks and store the results; returns the
        number of entries computed."""
        offset = self.plan.first_column(r0)
        for s, e in self.plan.chunks(r0, r1):
            c0 = self.plan.first_column(s)
            k = gram[s - r0:e - r0, c0 - offset:]
            with checked_program():
                results = self.pair(k, self.d, *self.sides.chunk(s, e, c0))
            for i, out in self.stores:
                out[s:e, c0:] = results[i]
        return self.plan.entries(r0, r1)

    def mirror(self, r0: int, r1: int) -> None:
        """Fill the panel's rows left of the diagonal from the transposed entries above it,
        which earlier panels computed: writing along the panel's own rows touches fresh
        output pages in order (measured: first touches scattered down the columns cost
        ten times as much), and square blocks keep the strided read in the cache."""
        n = r1 - r0
        lower = _lower_mask(n)
        for out in self.outs:
            square = out[r0:r1, r0:r1]
            np.copyto(square, square.T, where=lower)
            # Reading a file map maps the pages around each one read (measured ~90 kB a
            # touch): across all rows above, more than the panel itself.
            mapped = is_shared_file_map(out)
            for c0 in range(0, r0, n):
                c1 = min(c0 + n, r0)
                out[r0:r1, c0:c1] = out[c0:c1, r0:r1].T
                if mapped:
                    release_pages(out[c0:c1])


class _SideValues:
    """An evaluation's side values (ntkdsl.generate.SideValues): columns (n1, 1), rows
    (1, n2) and scalars, in the order the pair function takes them."""

    def __init__(self, values: Sequence[Any], kinds: Sequence[str]):
        self.columns = [i for i, k in enumerate(kinds) if k == COLUMN]
        self.rows = [i for i, k in enumerate(kinds) if k == ROW]
        self.values = list(values)

    def chunk(self, s: int, e: int, c0: int) -> list[Any]:
        """The values for rows s:e of the output and its columns from c0 on."""
        values = self.values.copy()
        for i in self.columns:
            values[i] = values[i][s:e]
        for i in self.rows:
            values[i] = values[i][:, c0:]
        return values


def side_bytes(sides: SideValues, n1: int, n2: int, dtype: np.dtype) -> int:
    """The memory of the side values for n1 rows of x and n2 of x'."""
    return (sides.kinds.count(COLUMN) * n1 + sides.kinds.count(ROW) * n2) * dtype.itemsize


def side_values(sides: SideValues, q1: np.ndarray, q2: np.ndarray, d: int) -> _SideValues:
    """``sides.side`` of the squared norms of all rows of x (q1) and x' (q2), once: every
    column and row it returns at its full shape (a value broadcast from fewer inputs, such
    as a constant, is read the same way)."""
    with checked_program():  # the outputs are checked after the pair function ran
        values = sides.side(q1[:, None], q2[None, :], d)
    shapes = {COLUMN: (len(q1), 1), ROW: (1, len(q2))}
    return _SideValues([np.broadcast_to(v, shapes[k]) if k in shapes else v
                        for v, k in zip(values, sides.kinds)], sides.kinds)


@lru_cache(maxsize=8)
def _lower_mask(n: int) -> np.ndarray:
    return np.tri(n, k=-1, dtype=bool)


# The cache alone could build a pool twice when two evaluations start at once (a miss runs
# the function unlocked): the lock makes each pool's creation happen once.
_POOLS_LOCK = threading.Lock()


def _pool(role: str, threads: int) -> ThreadPoolExecutor:
    """A thread pool kept for the process: its threads keep their malloc arenas, stacks and
    BLAS buffers warm between evaluations, instead of touching new memory every call."""
    with _POOLS_LOCK:
        return _new_pool(role, threads)


@cache
def _new_pool(role: str, threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"ntkdsl-{role}")


class _Pipeline:
    """Runs the panels' steps: Gram slices ``plan.lookahead`` panels ahead and mirrors on
    the helper thread (in order of submission), elementwise steps on the calling thread or
    on a pool of workers. Without a helper, everything runs in turn on the calling
    thread."""

    def __init__(self, panels: _Panels, plan: Plan):
        self.steps, self.plan, self.panels = panels, plan, plan.panels()
        self.helper = _pool("helper", 1) if plan.helper else None
        self.lock = threading.Lock()
        self.grams: dict[int, Future] = {}  # every Gram slice started, by panel
        self.submitted: list[tuple[Future, Callable, tuple]] = []
        self.finished: set[int] = set()
        self.mirrored = 0  # panels before this one are mirrored (or queued to be)

    def _on_helper(self, fn: Callable, *args) -> Future:
        if self.helper is None:
            f: Future = Future()
            f.set_result(fn(*args))
            return f
        f = self.helper.submit(fn, *args)
        self.submitted.append((f, fn, args))
        return f

    def _start_gram(self, index: int) -> None:
        """Start panel ``index``'s Gram slice unless it has been started: with several
        workers, a panel may be reached before the one that usually starts it finishes."""
        if index < len(self.panels) and index not in self.grams:
            self.grams[index] = self._on_helper(self.steps.gram, *self.panels[index])

    def panel(self, index: int) -> int:
        """All steps of one panel that are not left to the helper; returns its entries."""
        with self.lock:
            self._start_gram(index)  # without a helper, Gram slices are made when needed
            gram = self.grams[index]
        r0, r1 = self.panels[index]
        entries = self.steps.elementwise(gram.result(), r0, r1)
        with self.lock:
            if self.plan.symmetric:  # a mirror reads what all earlier panels computed
                self.finished.add(index)
                while self.mirrored in self.finished:
                    self._on_helper(self.steps.mirror, *self.panels[self.mirrored])
                    self.mirrored += 1
            if self.helper is not None:
                self._start_gram(index + self.plan.lookahead)
        return entries

    def run(self, done: Callable[[int], None], meanwhile: Callable[[], Any]) -> Any:
        """Run every panel, reporting each one's entries to ``done``; ``meanwhile`` runs on
        the calling thread while the first Gram slices are computed. Returns its result."""
        try:
            if self.helper is not None:
                with self.lock:
                    for i in range(self.plan.lookahead):
                        self._start_gram(i)
            found = meanwhile()
            if self.plan.workers == 1:
                for i in range(len(self.panels)):
                    done(self.panel(i))
            else:
                _run_pool(_pool("workers", self.plan.workers), self.panel,
                          range(len(self.panels)), self.plan.workers, done)
            # The last queued steps (mirrors) need nothing but finished panels: the calling
            # thread takes those the helper has not started, from the end of the queue.
            for f, fn, args in reversed(self.submitted):
                if f.cancel():
                    fn(*args)
            for f, _, _ in self.submitted:
                if not f.cancelled():
                    f.result()
            return found
        finally:
            for f, _, _ in self.submitted:
                f.cancel()
            wait([f for f, _, _ in self.submitted])  # running steps finish before we go


def _run_pool(pool: ThreadPoolExecutor, fn: Callable, items, threads: int,
              done: Callable) -> None:
    """Submit items a few at a time (so an error or Ctrl-C stops early) and report each."""
    pending: set = set()
    todo = iter(items)
    try:
        while True:
            for item in todo:
                pending.add(pool.submit(fn, item))
                if len(pending) >= 2 * threads:
                    break
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                done(f.result())
    finally:
        for f in pending:
            f.cancel()
        wait(pending)


def _run(panels: _Panels, plan: Plan, outs: Sequence[np.ndarray], progress: bool | None,
         meanwhile: Callable[[], Any], blas: _BlasLimit) -> Any:
    """Run every panel, releasing memory-mapped pages as they are written; returns the
    result of ``meanwhile``, run while the first Gram slices are computed. ``blas`` is
    refreshed after every panel, on the calling thread."""
    # progress=None: on a terminal, once the evaluation passes PROGRESS_DELAY_S.
    bar = progress_bar(progress, plan.entries(), unit=" entries", unit_scale=True, desc="kernel",
                       delay=PROGRESS_DELAY_S if progress is None else 0)
    mapped = [o for o in outs if is_shared_file_map(o)]

    def done(entries: int) -> None:
        if bar is not None:
            bar.update(entries)
        # After every panel: a mirror touches a page in each row above its panel, so the
        # pages a panel touches are not in proportion to the entries it computes.
        for o in mapped:
            release_pages(o)
        # A BLAS loaded during the panel (the numerical route imports SciPy's on first
        # use) runs unlimited only until here.
        blas.refresh()

    try:
        found = _Pipeline(panels, plan).run(done, meanwhile)
    finally:
        if bar is not None:
            bar.close()
    for o in mapped:
        release_pages(o)
    return found


def evaluate(compiled: CompiledKernels, x1: Any, x2: Any = None, *, kinds: Sequence[str] = KINDS,
             out: Sequence[np.ndarray | None] | None = None, dtype: Any = None,
             progress: bool | None = None, threads: int | None = None) -> list[np.ndarray]:
    """The kernels named in ``kinds`` of x1 against x2 (x2=None: x1 against itself), written
    into ``out`` (one array or None per kind) or into new arrays. Every check happens before
    any work starts. (A convolutional network's kernels: ntkdsl.evaluation.spatial.)"""
    a, b = check_inputs(x1, x2)
    if b is not None and b is a:
        b = None  # the same array object twice: use the symmetric path
    shape = (len(a), len(a) if b is None else len(b))
    outs = [None] * len(kinds) if out is None else list(out)
    dt = resolve_dtype(dtype, outs)
    inputs = [a] if b is None else [a, b]
    for kind, o in zip(kinds, outs):
        if o is not None:
            check_out(o, kind, shape, dt, inputs)
    given = [o for o in outs if o is not None]
    if len(given) == 2 and np.shares_memory(*given):
        raise InputError("the NNGP and NTK outputs overlap",
                         hint="pass two separate arrays (or None for either)")
    outs = allocate_outputs(kinds, outs, shape, dt)
    run_pairs(compiled, a, b, outs, [KINDS.index(k) for k in kinds], kinds, dt, progress,
              threads)
    return outs


def run_pairs(compiled: CompiledKernels, a: np.ndarray, b: np.ndarray | None,
              outs: Sequence[np.ndarray], keep: Sequence[int], names: Sequence[str],
              dt: np.dtype, progress: bool | None, threads: int | None) -> None:
    """Fill ``outs`` (allocated, checked) with the program's outputs ``keep`` for the rows
    of a against those of b (None: a itself), through the panel pipeline; ``names`` name
    the outputs in a NumericalError."""
    n1, n2 = len(a), len(a) if b is None else len(b)
    require_memory(side_bytes(compiled.sides, n1, n2, dt),
                   f"the values of each input alone that the kernel program reads "
                   f"({len(compiled.sides.kinds)} per row of x and x')",
                   hint="use fewer inputs (a subset of the data) or dtype=numpy.float32")
    q1 = squared_norms(a)
    q2 = q1 if b is None else squared_norms(b)
    # The numerical engine's calls have a fixed cost: larger chunks pay it less often.
    plan = make_plan(len(a), len(a) if b is None else len(b), b is None, dt,
                     WORKING_SHARE * sum(o.nbytes for o in outs), compiled.temporaries,
                     threads, MAX_CHUNK_NUMERICAL if compiled.numerical else MAX_CHUNK)
    _keep_freed_heap()
    try:
        with _BlasLimit() as blas:
            # The side values too: the numerical route's coefficients are matrix products,
            # whose rounding must not depend on how many BLAS threads there are.
            panels = _Panels(compiled, a, a if b is None else b, q1, q2, keep, outs, plan, dt)
            # Identical inputs are found while the first Gram slices are computed.
            rows, cols = _run(panels, plan, outs, progress, lambda: identical_pairs(a, b), blas)
            if rows.size:  # BLAS is limited meanwhile
                write_identical(_diagonal_arrays(compiled.diagonal, q1, a.shape[1]), outs,
                                keep, rows, cols)
    # Inputs are checked before the program runs: a Python-level conversion of an inf or NaN
    # inside it (int(inf), int(nan)) means the kernel overflowed.
    except (OverflowError, ValueError) as err:
        largest = (np.array([q1.max(), q2.max()], dtype=np.float64), a.shape[1])
        raise _overflow(compiled, largest, str(err)) from None
    check_finite(compiled, names, outs,
                 lambda i, j: (np.array([q1[i], q2[j]], dtype=np.float64), a.shape[1]))


def diagonal_values(compiled: CompiledKernels, q: np.ndarray, d: int) -> tuple[np.ndarray, ...]:
    """Exact (NNGP, NTK) of inputs with squared norms q against themselves, as arrays.
    Every BLAS is held to one thread meanwhile (the numerical route's coefficients are
    matrix products)."""
    try:
        with _BlasLimit():
            values = _diagonal_arrays(compiled.diagonal, q, d)
    except (OverflowError, ValueError) as err:  # as in ``evaluate``: int(inf) in the program
        raise _overflow(compiled, (np.array([q.max()], dtype=np.float64), d), str(err)) from None
    for kind, value in zip(KINDS, values):
        if not np.isfinite(value).all():
            i = int(np.argmax(~np.isfinite(value)))
            raise NumericalError(f"the {kind.upper()} of input {i} with itself is not finite "
                                 f"({value[i]}): an overflow past float64's range",
                                 hint="use smaller weight or activation scales, or inputs of "
                                      "smaller norm")
    return values


def _diagonal_arrays(diagonal: Callable, q: np.ndarray, d: int) -> tuple[np.ndarray, ...]:
    with checked_program():  # the callers check every value
        values = diagonal(q, d)
    return tuple(np.array(np.broadcast_to(v, q.shape), dtype=np.float64) for v in values)


def write_identical(values: Sequence[np.ndarray], outs: Sequence[np.ndarray],
                    keep: Sequence[int], rows: np.ndarray, cols: np.ndarray) -> None:
    """Overwrite the entries (rows, cols), whose two inputs are identical, with the
    diagonal recursion's ``values`` (NNGP and NTK of each row's input with itself)."""
    for i, out in zip(keep, outs):
        # A write into a file map maps the pages around it too (measured: ~90 kB per
        # entry), so a file map is written a batch of entries at a time and released.
        step = IDENTICAL_BATCH if is_shared_file_map(out) else rows.size
        for s in range(0, rows.size, step):
            out[rows[s:s + step], cols[s:s + step]] = values[i][rows[s:s + step]]
            release_pages(out)
