"""Every layer name of the language: the structural layers (Dense, Conv, the pools, Flatten,
Identity, LayerNorm)
and the activations of ntkdsl.activations, resolved case-insensitively into AST nodes."""
from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from . import activations, limits
from .ast import Activation, Conv, Dense, Flatten, GlobalPool, Identity, LayerNorm, Node, Pool
from .errors import LayerValueError, Span, UnknownLayerError
from .params import Arg, Param, bind, nonnegative, one_of, positive


def _width(n: int) -> str | None:
    return None if 1 <= n <= limits.MAX_WIDTH else (
        f"must be a width >= 1 and <= {limits.MAX_WIDTH} (ntkdsl.limits.MAX_WIDTH)")


def _axes(sizes: tuple[int, ...]) -> str | None:
    """A filter, window or stride: one whole number from 1 to MAX_WINDOW per spatial axis."""
    if len(sizes) > limits.MAX_SPATIAL_AXES:
        return (f"must have at most {limits.MAX_SPATIAL_AXES} spatial axes "
                f"(ntkdsl.limits.MAX_SPATIAL_AXES)")
    if not all(1 <= size <= limits.MAX_WINDOW for size in sizes):
        return f"must hold sizes >= 1 and <= {limits.MAX_WINDOW} (ntkdsl.limits.MAX_WINDOW)"
    return None


_PADDING = Param("padding", "str", "VALID", check=one_of("VALID", "SAME", "CIRCULAR"))
_WEIGHTS = (
    Param("W_std", "float", 1.0, check=nonnegative),
    Param("b_std", "float", None, check=nonnegative, optional=True),
    Param("parameterization", "str", "ntk", check=one_of("ntk", "standard")),
)
_POOL = (Param("window_shape", "ints", check=_axes),
         Param("strides", "ints", None, check=_axes, optional=True), _PADDING)

STRUCTURAL: dict[str, tuple[Param, ...]] = {
    "Dense": (Param("out_dim", "int", check=_width), *_WEIGHTS),
    "Conv": (Param("out_chan", "int", check=_width), Param("filter_shape", "ints", check=_axes),
             Param("strides", "ints", None, check=_axes, optional=True), _PADDING, *_WEIGHTS),
    "AvgPool": _POOL,
    "SumPool": _POOL,
    "GlobalAvgPool": (),
    "GlobalSumPool": (),
    "Flatten": (),
    "Identity": (),
    "LayerNorm": (Param("eps", "float", 1e-12, check=positive),),
}


def layer_names() -> list[str]:
    """Canonical spellings of every layer name, structural first."""
    names = list(STRUCTURAL)
    for spec in activations.REGISTRY.values():
        if spec.name not in names:
            names.append(spec.name)
    return names


def _canonical(name: str) -> str | None:
    for known in STRUCTURAL:
        if known.lower() == name.lower():
            return known
    spec = activations.lookup(name)
    return spec.name if spec else None


def suggestion(name: str) -> str:
    candidates = {n.lower(): n for n in layer_names()}
    for spec in activations.REGISTRY.values():
        for alias in spec.aliases:
            candidates[alias.lower()] = alias
    close = difflib.get_close_matches(name.lower(), list(candidates), n=1, cutoff=0.5)
    return f"did you mean '{candidates[close[0]]}'?" if close else ""


def build_layer(name: str, args: Sequence[Arg], source: str, span: Span) -> Node:
    """The AST node for a layer as written, with its arguments checked."""
    canonical = _canonical(name)
    if canonical is None:
        hint = suggestion(name)
        raise UnknownLayerError(
            f"unknown layer '{name}'" + (f"; {hint}" if hint else ""), source=source, span=span,
            hint="valid layers: " + ", ".join(layer_names()))
    if canonical in STRUCTURAL:
        values = bind(canonical, STRUCTURAL[canonical], args, source, span)
        _check_strides(canonical, values, _arg_spans(STRUCTURAL[canonical], args), source, span)
        return _structural(canonical, values, span)
    spec = activations.lookup(canonical)
    values = bind(spec.name, spec.params, args, source, span)
    if spec.check is not None:
        spec.check(values, _arg_spans(spec.params, args), source)
    return Activation(spec.name, tuple(values.items()), span=span)


def _arg_spans(params: Sequence[Param], args: Sequence[Arg]) -> dict[str, Span]:
    """Where each bound argument is written (positional ones by position)."""
    return {(a.name or params[i].name): a.span for i, a in enumerate(args) if i < len(params)
            or a.name}


def _check_strides(name: str, values: dict[str, Any], spans: dict[str, Span], source: str,
                   span: Span) -> None:
    """Strides, when given, have one entry per axis of the filter or window."""
    window = values.get("filter_shape") or values.get("window_shape")
    strides = values.get("strides")
    if window is None or strides is None or len(strides) == len(window):
        return
    raise LayerValueError(
        f"{name}: 'strides' has {len(strides)} axes but the "
        f"{'filter' if name == 'Conv' else 'window'} has {len(window)}",
        source=source, span=spans.get("strides", span),
        hint=f"give one stride per spatial axis, e.g. strides={(1,) * len(window)}")


def _structural(name: str, values: dict[str, Any], span: Span) -> Node:
    if name == "Dense":
        return Dense(values["out_dim"], values["W_std"], values["b_std"],
                     values["parameterization"], span=span)
    if name == "Conv":
        return Conv(values["out_chan"], values["filter_shape"], values["strides"],
                    values["padding"], values["W_std"], values["b_std"],
                    values["parameterization"], span=span)
    if name in ("AvgPool", "SumPool"):
        return Pool(name[:3].lower(), values["window_shape"], values["strides"],
                    values["padding"], span=span)
    if name in ("GlobalAvgPool", "GlobalSumPool"):
        return GlobalPool(name[6:9].lower(), span=span)
    if name == "Flatten":
        return Flatten(span=span)
    if name == "LayerNorm":
        return LayerNorm(values["eps"], span=span)
    return Identity(span=span)
