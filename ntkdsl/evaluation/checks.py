"""No silent inf/NaN: a kernel entry that is not finite, or an overflow that stopped the
generated program, is a NumericalError naming the layer where it starts."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import NumericalError
from ..runtime import hermite
from .memory import is_shared_file_map, release_pages

if TYPE_CHECKING:
    from ..generate import CompiledKernels
from .diagnosis import nonfinite_layer

# Each thread's quadrature budget (hermite._hd_budget) lives here: the runtime imports numpy only.
if hermite._HD_SCOPE is None:
    hermite._HD_SCOPE = threading.local()


@contextlib.contextmanager
def checked_program():
    """The state a kernel program runs in, for one block of entries.

    Floating point: overflow, invalid values and division by zero raise no numpy warning,
    because every output is checked afterwards (``check_finite``, ``diagonal_values``) and
    an inf or NaN that reaches one is a NumericalError naming the layer — the warning before
    it told the user nothing more, on stderr, for every chunk.

    Work: all the block's numerical-route layers draw their nested quadrature from one
    budget (``ntkdsl.limits.MAX_QUADRATURE_NODES``), so a deep network of such layers is
    refused naming the layer where it ran out instead of taking time linear in its depth.
    Thread-local: each thread that runs a program enters it."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), hermite._hd_budget():
        yield


_OVERFLOW_HINT = ("an overflow past float64's range (about 1.8e308): use smaller weight or "
                  "activation scales (W_std, b_std, b of Exp, ...) or inputs of smaller norm")


def check_finite(compiled: CompiledKernels, kinds: Sequence[str], outs: Sequence[np.ndarray],
                 statistics: Callable[[int, int], tuple]) -> None:
    """NumericalError, naming the first layer whose variance is not finite, if any kernel
    entry is inf or NaN (an overflow such as exp(b² q) for large b² q): never a silent
    inf/NaN. One pass over the outputs, block by block. ``statistics(i, j)`` gives the
    diagonal function's arguments for inputs i of x1 and j of x2 (to find the layer)."""
    for kind, out in zip(kinds, outs):
        entry = _first_nonfinite(out)
        if entry is None:
            continue
        i, j = entry
        layer = nonfinite_layer(compiled, *statistics(i, j))
        where = (f"the variance after {layer} is not finite for these inputs" if layer else
                 "no layer's variance is infinite or NaN for these inputs (a constant one "
                 "past float64 is refused when compiling), so the formula of this pair's "
                 "kernel itself overflowed")
        raise NumericalError(
            f"the {kind.upper()} is not finite ({out[i, j]}) at entry ({i}, {j}): {where}",
            hint=_OVERFLOW_HINT)


def _overflow(compiled: CompiledKernels, largest: tuple, detail: str) -> NumericalError:
    """NumericalError for an overflow that stopped the program, naming the first layer whose
    variance is not finite for the largest inputs (where an overflow starts), whose
    statistics are ``largest`` (the diagonal function's arguments)."""
    layer = nonfinite_layer(compiled, *largest)
    where = f"the variance after {layer} is not finite" if layer else "a value overflowed"
    return NumericalError(
        f"the kernel overflowed float64 ({detail}): {where} for the largest inputs",
        hint=_OVERFLOW_HINT)


def _first_nonfinite(out: np.ndarray) -> tuple[int, int] | None:
    step = max(1, (1 << 20) // max(1, out.shape[1]))
    mapped = is_shared_file_map(out)
    for r in range(0, out.shape[0], step):
        bad = ~np.isfinite(out[r:r + step])
        if mapped:
            release_pages(out)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            return r + int(i), int(j)
    return None
