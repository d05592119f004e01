"""Where a diagonal recursion stops being finite: the layer the compiled kernels name for
the first state variable that is not (``CompiledKernels.labels``), never read from text."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..generate import CompiledKernels


def nonfinite_layer(compiled: CompiledKernels, *args) -> str | None:
    """The first layer (``step l: label``, as in the derivation) at which the diagonal
    recursion of the inputs whose statistics are ``args`` (squared norms and d, or the
    statistics of images) stops being finite, or None. Runs the generated diagonal
    function once under a line tracer, watching the variables the compiled kernels name as
    layer states; only on the error path."""
    bad: list[str] = []
    labels = compiled.labels

    def trace(frame, event, arg):
        if frame.f_code is not compiled.diagonal.__code__:
            return None
        for name, value in frame.f_locals.items():
            if (not bad and name in labels
                    and not np.isfinite(np.asarray(value, dtype=np.float64)).all()):
                bad.append(name)
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        with np.errstate(all="ignore"):
            compiled.diagonal(*args)
    except (ArithmeticError, ValueError):
        pass  # the recursion itself failed: the variables seen so far tell where
    finally:
        sys.settrace(previous)
    return labels[bad[0]] if bad else None
