"""What the evaluation reads from the generated source text: its temporaries per entry,
whether it calls the numerical engine, and the layer where a diagonal recursion stops
being finite (the comments above its assignments)."""
from __future__ import annotations

import re
import sys
from functools import lru_cache

import numpy as np

from .plan import MAX_CHUNK, MAX_CHUNK_NUMERICAL


# Both read the generated source, which is fixed per compiled network: cached, so each
# evaluation does not rescan it.
@lru_cache(maxsize=256)
def chunk_cap(source: str) -> int:
    """The largest chunk worth giving the generated program: larger when it calls the
    numerical engine (whose helpers are named _hd_*), whose calls have a fixed cost."""
    return MAX_CHUNK_NUMERICAL if "def _hd_" in source else MAX_CHUNK


_ASSIGNMENT = re.compile(r"(\w+(?:, \w+)*) = (.*)")
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")


@lru_cache(maxsize=256)
def temporaries_per_entry(source: str) -> int:
    """How many arrays of the chunk's size the generated ``pair`` holds at once, at most,
    plus a few expression temporaries. An assignment makes a chunk-sized array when its
    right side reads one (K_0 or a name made so), one per target of ``a, b = f(...)``;
    ``A = B`` only names B's array again, and an array lives until its last name is
    ``del``-ed."""
    body = source.split("def pair(", 1)[-1].split("\ndef ", 1)[0]
    arrays: dict[str, object] = {"K_0": 0}  # name -> the array it holds
    most = 1
    for n, line in enumerate(body.splitlines(), start=1):
        line = line.strip()
        if line.startswith("del "):
            for name in line[4:].split(","):
                arrays.pop(name.strip(), None)
        elif (m := _ASSIGNMENT.fullmatch(line)) is not None:
            names, rhs = m.group(1).split(", "), m.group(2)
            if rhs in arrays:
                arrays[names[0]] = arrays[rhs]
            elif any(used in arrays for used in _NAME.findall(rhs)):
                arrays.update({name: (n, i) for i, name in enumerate(names)})
            most = max(most, len(set(arrays.values())))
    return most + 4


_DIAGONAL_STATE = re.compile(r"[qt]_(\d+)")


def nonfinite_layer(functions: dict, q: np.ndarray, d: int) -> str | None:
    """The first layer (``step l: label``, as in the derivation) at which the diagonal
    recursion of squared norms ``q`` stops being finite, or None. Runs the generated
    diagonal function once under a line tracer; only on the error path."""
    bad: list[str] = []

    def trace(frame, event, arg):
        if frame.f_code.co_name != "diagonal":
            return None
        for name, value in frame.f_locals.items():
            if (not bad and _DIAGONAL_STATE.fullmatch(name)
                    and not np.isfinite(np.asarray(value, dtype=np.float64)).all()):
                bad.append(name)
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        with np.errstate(all="ignore"):
            functions["diagonal"](q, d)
    except (ArithmeticError, ValueError):
        pass  # the recursion itself failed: the variables seen so far tell where
    finally:
        sys.settrace(previous)
    return _step_label(functions["__source__"], bad[0]) if bad else None


def _step_label(source: str, variable: str) -> str:
    """``step l: <layer>`` from the comment above the assignment of ``variable`` in the
    generated diagonal function."""
    body = source.split("def diagonal(", 1)[-1]
    label = ""
    for line in body.split("\n"):
        stripped = line.strip()
        if stripped.startswith("# "):
            label = stripped[2:].split("  [", 1)[0]
        elif stripped.startswith(variable + " ="):
            break
    return f"step {variable.split('_')[1]}: {label}"
