"""A competing CPU-bound process for the benchmarks' ``--busy`` mode.

On a shared machine another program often keeps a core busy. Threads that spin waiting for
each other (BLAS worker threads do) then lose their core to it for whole scheduler slices,
so a benchmark run next to one busy process shows what oversubscription costs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Pure Python, no imports: the competitor holds one core and touches no BLAS or memory.
_SPIN = "while True:\n    pass\n"


@contextmanager
def competing_process(busy: bool = True) -> Iterator[int | None]:
    """Run one CPU-bound process for the duration of the block (``busy=False``: none).
    Yields its pid (or None) and ends it, by that pid, when the block ends."""
    if not busy:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", _SPIN])
    try:
        time.sleep(0.2)  # let it reach its loop before anything is timed
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def busy_note(busy: bool) -> str:
    """One line for a benchmark's header saying whether a competitor ran."""
    load = os.getloadavg()[0]
    return (f"with one competing CPU-bound process (--busy); load average {load:.1f}" if busy
            else f"no competing process; load average {load:.1f}")
