"""The typed syntax tree of an architecture: frozen dataclasses, one per construct.

Nodes compare by value; their source position (``span``) rides along for error messages
but takes no part in equality or hashing, so ``"Relu"`` and ``"relu"`` give equal trees.

Code that walks a tree goes through the one walker every node has: ``children()`` (the
sub-architectures, in order: a Serial's layers, a Sum's branches, a Repeat's body; none for
a layer) and ``map_children(f)`` (the same node with ``f`` applied to each child), so adding a
construct means adding its two methods, not another case to every traversal.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, Union

from .errors import ArchitectureError, Span


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value)


_LayerT = TypeVar("_LayerT", bound="_Layer")


class _Layer:
    """A single layer: a leaf of the tree."""

    def children(self) -> tuple[Node, ...]:
        return ()

    def map_children(self: _LayerT, f: Callable[[Node], Node]) -> _LayerT:
        return self


@dataclass(frozen=True)
class Dense(_Layer):
    """Fully-connected layer. ``b_std=None`` means no bias (neural-tangents' default)."""

    width: int
    W_std: float = 1.0
    b_std: float | None = None
    parameterization: str = "ntk"
    span: Span | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        args = [str(self.width)]
        if self.W_std != 1.0:
            args.append(f"W_std={self.W_std!r}")
        if self.b_std is not None:
            args.append(f"b_std={self.b_std!r}")
        if self.parameterization != "ntk":
            args.append(f"parameterization='{self.parameterization}'")
        return f"Dense({', '.join(args)})"


def _axes(values: tuple[int, ...]) -> str:
    """A shape as written in the language: ``(3, 3)``, ``(5,)``."""
    return "(" + ", ".join(map(str, values)) + ("," if len(values) == 1 else "") + ")"


def _unit_strides(node: Any, window: tuple[int, ...]) -> None:
    """``strides=None`` means a stride of 1 on every axis (neural-tangents' default): store
    that, so that the two spellings of one layer are equal nodes."""
    if node.strides is None:
        object.__setattr__(node, "strides", (1,) * len(window))


@dataclass(frozen=True)
class Conv(_Layer):
    """Convolution over the spatial axes of channels-last inputs (neural-tangents' stax.Conv):
    one ``filter_shape`` size per spatial axis, ``padding`` 'VALID', 'SAME' (zeros) or
    'CIRCULAR'; ``b_std=None`` means no bias."""

    out_chan: int
    filter_shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: str = "VALID"
    W_std: float = 1.0
    b_std: float | None = None
    parameterization: str = "ntk"
    span: Span | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _unit_strides(self, self.filter_shape)

    def __str__(self) -> str:
        args = [str(self.out_chan), _axes(self.filter_shape)]
        if set(self.strides) != {1}:
            args.append(f"strides={_axes(self.strides)}")
        if self.padding != "VALID":
            args.append(f"padding='{self.padding}'")
        if self.W_std != 1.0:
            args.append(f"W_std={self.W_std!r}")
        if self.b_std is not None:
            args.append(f"b_std={self.b_std!r}")
        if self.parameterization != "ntk":
            args.append(f"parameterization='{self.parameterization}'")
        return f"Conv({', '.join(args)})"


@dataclass(frozen=True)
class Pool(_Layer):
    """Window pooling over the spatial axes: ``reduce`` is 'avg' (AvgPool) or 'sum' (SumPool)."""

    reduce: str
    window_shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    padding: str = "VALID"
    span: Span | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _unit_strides(self, self.window_shape)

    @property
    def name(self) -> str:
        return "AvgPool" if self.reduce == "avg" else "SumPool"

    def __str__(self) -> str:
        args = [_axes(self.window_shape)]
        if set(self.strides) != {1}:
            args.append(f"strides={_axes(self.strides)}")
        if self.padding != "VALID":
            args.append(f"padding='{self.padding}'")
        return f"{self.name}({', '.join(args)})"


@dataclass(frozen=True)
class GlobalPool(_Layer):
    """Pooling over every spatial position: ``reduce`` is 'avg' (GlobalAvgPool) or 'sum'
    (GlobalSumPool). Leaves one feature vector per input, as Flatten does."""

    reduce: str
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return "GlobalAvgPool" if self.reduce == "avg" else "GlobalSumPool"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Flatten(_Layer):
    """Spatial positions and channels into one feature axis (the readout of a conv stack)."""

    span: Span | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return "Flatten"


@dataclass(frozen=True)
class Identity(_Layer):
    span: Span | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return "Identity"


@dataclass(frozen=True)
class LayerNorm(_Layer):
    """Normalisation over features; ``eps`` as in neural-tangents."""

    eps: float = 1e-12
    span: Span | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return "LayerNorm" if self.eps == 1e-12 else f"LayerNorm(eps={self.eps!r})"


@dataclass(frozen=True)
class Activation(_Layer):
    """An elementwise nonlinearity: a registry name (canonical spelling) and its bound
    parameters as ``(name, value)`` pairs in signature order; lists become tuples."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{k}={_fmt(v)}' for k, v in self.params)})"


@dataclass(frozen=True)
class Serial:
    layers: tuple[Node, ...]
    span: Span | None = field(default=None, compare=False, repr=False)

    def children(self) -> tuple[Node, ...]:
        return self.layers

    def map_children(self, f: Callable[[Node], Node]) -> Serial:
        return replace(self, layers=tuple(f(layer) for layer in self.layers))

    def __str__(self) -> str:
        return " > ".join(_wrap(layer, Sum) for layer in self.layers)


@dataclass(frozen=True)
class Sum:
    """Branches fed the same input, outputs summed (neural-tangents' FanOut + FanInSum)."""

    branches: tuple[Node, ...]
    span: Span | None = field(default=None, compare=False, repr=False)

    def children(self) -> tuple[Node, ...]:
        return self.branches

    def map_children(self, f: Callable[[Node], Node]) -> Sum:
        return replace(self, branches=tuple(f(branch) for branch in self.branches))

    def __str__(self) -> str:
        return " + ".join(str(b) for b in self.branches)


@dataclass(frozen=True)
class Repeat:
    body: Node
    times: int
    span: Span | None = field(default=None, compare=False, repr=False)

    def children(self) -> tuple[Node, ...]:
        return (self.body,)

    def map_children(self, f: Callable[[Node], Node]) -> Repeat:
        return replace(self, body=f(self.body))

    def __str__(self) -> str:
        return f"{_wrap(self.body, (Sum, Serial))} * {self.times}"


Node = Union[Dense, Conv, Pool, GlobalPool, Flatten, Identity, LayerNorm, Activation,  # noqa: UP007
             Serial, Sum, Repeat]                                                     # runtime alias
NODE_TYPES = (Dense, Conv, Pool, GlobalPool, Flatten, Identity, LayerNorm, Activation, Serial, Sum,
              Repeat)  # isinstance(x, NODE_TYPES)
SPATIAL_TYPES = (Conv, Pool, GlobalPool, Flatten)  # layers that act on spatial axes


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, ``node`` first, then its children's subtrees in order."""
    yield node
    for child in node.children():
        yield from walk(child)


def input_axes(node: Node, source: str = "") -> tuple[int | None, tuple[str, Span | None] | None]:
    """The number of spatial axes of the inputs an architecture takes, and the layer that
    fixes it (as written, with its span): 0 and None for a fully-connected architecture
    (inputs (n, d)); r and the first Conv or pool when the filters and windows have r axes;
    None and None when its only spatial layers are Flatten or global pools (any number >= 1).

    The one rule for the rank of inputs (derivation, finite networks, estimators, the command
    line); ArchitectureError, with a caret under the layer in ``source``, if two filters or
    windows have different ranks."""
    found = None
    for layer in walk(node):
        if not isinstance(layer, (Conv, Pool)):
            continue
        window = layer.filter_shape if isinstance(layer, Conv) else layer.window_shape
        if found is None:
            found = (len(window), (str(layer), layer.span))
        elif len(window) != found[0]:
            raise ArchitectureError(
                f"{layer} has {_axes_text(len(window))} but {found[1][0]} has "
                f"{_axes_text(found[0])}", source=source, span=layer.span,
                hint="every filter and pooling window of a network has one size per spatial "
                     "axis of its inputs")
    if found is not None:
        return found
    return (None, None) if any(isinstance(n, SPATIAL_TYPES) for n in walk(node)) else (0, None)


def _axes_text(count: int) -> str:
    return f"{count} spatial axis" if count == 1 else f"{count} spatial axes"


def _wrap(node: Node, loose: type | tuple[type, ...]) -> str:
    return f"({node})" if isinstance(node, loose) else str(node)
