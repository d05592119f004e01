"""Layer signatures: typed parameters with defaults and checks, and the binding of parsed
arguments to them (positional then keyword, as in a Python call)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import LayerArgumentError, LayerValueError, Span

REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    """One argument as written: ``name`` is None for a positional one."""

    name: str | None
    value: Any
    span: Span


@dataclass(frozen=True)
class Param:
    """A layer parameter. ``kind`` is one of: float, int, str, floats, ints, bool.
    ``check(value)`` returns an error message (what is valid) or None."""

    name: str
    kind: str
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None
    optional: bool = False  # None is accepted (e.g. b_std=None: no bias)
    doc: str = ""


def nonnegative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def one_of(*choices: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)

    return check


_KIND_NAMES = {"float": "a number", "int": "a whole number", "str": "a quoted string",
               "floats": "a list of numbers, e.g. [0.1, 1.0]",
               "ints": "a tuple of whole numbers, e.g. (3, 3) or (3,)", "bool": "True or False"}


def _convert(param: Param, value: Any) -> Any:
    """The value in the parameter's type, or raise ValueError saying what is expected."""
    if value is None and param.optional:
        return None
    kind = param.kind
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "floats" and isinstance(value, tuple) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    if kind == "ints" and isinstance(value, tuple) and value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return value
    raise ValueError(_KIND_NAMES[kind] + (" or None" if param.optional else ""))


def signature_text(layer: str, params: Sequence[Param]) -> str:
    parts = [p.name if p.default is REQUIRED else f"{p.name}={p.default!r}" for p in params]
    return f"{layer}({', '.join(parts)})" if params else layer


def bind(layer: str, params: Sequence[Param], args: Sequence[Arg], source: str,
         span: Span | None) -> dict[str, Any]:
    """Match ``args`` to ``params`` like a Python call; every mistake names the argument."""
    usage = "valid: " + signature_text(layer, params)
    bound: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    for position, arg in enumerate(args):
        if arg.name is None:
            if bound and any(a.name is not None for a in args[:position]):
                raise LayerArgumentError("positional argument after a keyword argument",
                                         source=source, span=arg.span, hint=usage)
            if position >= len(params):
                raise LayerArgumentError(
                    f"{layer} takes at most {len(params)} argument(s), got {len(args)}",
                    source=source, span=arg.span, hint=usage)
            name = params[position].name
        else:
            name = arg.name
            known = {p.name: p for p in params}
            if name not in known:
                raise LayerArgumentError(f"{layer} has no argument '{name}'", source=source,
                                         span=arg.span, hint=usage)
            if name in bound:
                raise LayerArgumentError(f"argument '{name}' given twice", source=source,
                                         span=arg.span, hint=usage)
        bound[name], spans[name] = arg.value, arg.span
    result: dict[str, Any] = {}
    for param in params:
        if param.name not in bound:
            if param.default is REQUIRED:
                raise LayerArgumentError(f"{layer} needs the argument '{param.name}'",
                                         source=source, span=span, hint=usage)
            result[param.name] = param.default
            continue
        try:
            value = _convert(param, bound[param.name])
        except ValueError as err:
            raise LayerArgumentError(
                f"{layer}: '{param.name}' must be {err}, got {bound[param.name]!r}",
                source=source, span=spans[param.name], hint=usage) from None
        problem = param.check(value) if (param.check and value is not None) else None
        if problem:
            raise LayerValueError(f"{layer}: '{param.name}' {problem}, got {value!r}",
                                  source=source, span=spans[param.name], hint=usage)
        result[param.name] = value
    return result
