"""How an evaluation is cut up: panels of rows, chunks of entries, threads, within a
working-memory budget."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

# Working memory (Gram blocks, program temporaries) is held to this share of the output's
# size, so an evaluation without ``out`` peaks at about output + 10% + inputs.
WORKING_SHARE = 0.06
MIN_WORKING_BYTES = 512 * 1024
MAX_WORKING_BYTES = 48 * 1024 * 1024
# Elementwise chunks: large enough to amortise ~100 ufunc calls (about 100 us of Python per
# call), small enough to stay in cache (measured best: 16k entries, 41 ns per entry).
MIN_CHUNK, MAX_CHUNK = 1024, 16384
# Numerical duals (ntkdsl.numerical) cost ~0.5 ms per call on top of their per-entry work
# (coefficient lookup, truncation choice, entries left to the per-entry path): chunks up
# to this size amortise it (measured on the Tanh NTK at N=4096, where the working memory
# allows 80k entries: 16k 1.28 s, 64k 0.59 s, 80k 0.53 s).
MAX_CHUNK_NUMERICAL = 131072
# Below this many entries per chunk, more than one thread running the elementwise program
# loses more to the GIL than it gains (measured: 2 threads at 2k-entry chunks took 1.5x the
# time of one).
MIN_THREADED_CHUNK = 8192
# Rows per panel: one Gram slice (BLAS call) each, one task for the helper thread.
PANEL_ROWS = 128
# Below this many kernel entries a helper thread costs more in hand-offs than it saves.
MIN_PIPELINED_ENTRIES = 65536


@dataclass(frozen=True)
class Plan:
    """How an evaluation is cut up. The rows of the output go in panels; each panel takes
    three steps: its slice of the Gram matrix (one BLAS call), the elementwise program on
    chunks of its rows, and, for a self-kernel, the mirror of what it computed (a panel
    computes only the columns from the diagonal on, and takes the rest of its rows from the
    panels above it).

    With a ``helper`` thread, Gram slices and mirrors (long calls that release the GIL) run
    on it while ``workers`` threads run the elementwise program (many short NumPy calls):
    the two kinds of work overlap instead of competing for the GIL."""

    n1: int
    n2: int
    symmetric: bool
    panel_rows: int
    chunk: int  # entries per call of the elementwise program (at least one row)
    workers: int
    helper: bool
    gram_columns: int  # a float32 panel's Gram slice is made this many columns at a time

    @property
    def threads(self) -> int:
        return self.workers + self.helper

    @property
    def lookahead(self) -> int:
        """Panels whose Gram slice is computed ahead of the elementwise program."""
        return self.workers + 1

    def panels(self) -> list[tuple[int, int]]:
        return [(r0, min(r0 + self.panel_rows, self.n1))
                for r0 in range(0, self.n1, self.panel_rows)]

    def first_column(self, row: int) -> int:
        """A self-kernel computes row ``row`` from the diagonal on; the rest is mirrored."""
        return row if self.symmetric else 0

    def chunks(self, r0: int, r1: int):
        """(s, e): the row chunks of panel r0:r1, each about ``chunk`` entries wide."""
        s = r0
        while s < r1:
            e = min(r1, s + max(1, self.chunk // (self.n2 - self.first_column(s))))
            yield s, e
            s = e

    def entries(self, r0: int = 0, r1: int | None = None) -> int:
        """Kernel entries computed for rows r0:r1 (default all)."""
        r1 = self.n1 if r1 is None else r1
        if not self.symmetric:
            return (r1 - r0) * self.n2
        return (r1 - r0) * self.n2 - (r1 * (r1 - 1) - r0 * (r0 - 1)) // 2


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def make_plan(n1: int, n2: int, symmetric: bool, dtype: np.dtype, working_bytes: float,
              temporaries: int, threads: int | None, max_chunk: int = MAX_CHUNK) -> Plan:
    """Panel and chunk sizes keeping working memory near ``working_bytes``. ``threads`` is
    the most threads to use (None: all cores): one helper for Gram slices and mirrors and
    the rest for the elementwise program, but only one of those unless chunks are large
    enough to gain from more."""
    if threads is not None and int(threads) < 1:
        raise InputError(f"threads must be at least 1, got {threads}")
    pool = default_threads() if threads is None else int(threads)
    helper = pool > 1 and n1 * n2 >= MIN_PIPELINED_ENTRIES
    workers = pool - 1 if helper else 1
    budget = min(max(working_bytes, MIN_WORKING_BYTES), MAX_WORKING_BYTES)
    # The first output holds each panel's Gram slice until the program overwrites it. A
    # float32 slice is made in float64 column blocks first: a quarter of the budget.
    gram_bytes = 0 if dtype == np.float64 else budget / 4
    gram_columns = n2 if not gram_bytes else max(64, int(gram_bytes / (PANEL_ROWS * 8)))
    while True:
        chunk = (budget - gram_bytes) * 0.75 / (workers * temporaries * dtype.itemsize)
        chunk = min(max(int(chunk), MIN_CHUNK), max_chunk)
        if workers == 1 or chunk >= MIN_THREADED_CHUNK or threads is not None:
            break
        workers = 1  # small chunks: more workers would lose more to the GIL than gain
    return Plan(n1, n2, symmetric, min(PANEL_ROWS, n1), chunk, workers, helper,
                min(gram_columns, n2))
