"""Every layer name of the language: the structural layers (Dense, Identity, LayerNorm)
and the activations of ntkdsl.activations, resolved case-insensitively into AST nodes."""
from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from . import activations, limits
from .ast import Activation, Dense, Identity, LayerNorm, Node
from .errors import Span, UnknownLayerError
from .params import Arg, Param, bind, nonnegative, one_of, positive

STRUCTURAL: dict[str, tuple[Param, ...]] = {
    "Dense": (
        Param("out_dim", "int", check=lambda n: None if 1 <= n <= limits.MAX_WIDTH
              else f"must be a width >= 1 and <= {limits.MAX_WIDTH} (ntkdsl.limits.MAX_WIDTH)"),
        Param("W_std", "float", 1.0, check=nonnegative),
        Param("b_std", "float", None, check=nonnegative, optional=True),
        Param("parameterization", "str", "ntk", check=one_of("ntk", "standard")),
    ),
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


def _structural(name: str, values: dict[str, Any], span: Span) -> Node:
    if name == "Dense":
        return Dense(values["out_dim"], values["W_std"], values["b_std"],
                     values["parameterization"], span=span)
    if name == "LayerNorm":
        return LayerNorm(values["eps"], span=span)
    return Identity(span=span)
