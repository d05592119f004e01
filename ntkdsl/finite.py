"""Finite-width networks from the same architecture strings, to check the infinite-width theory.

``FiniteNetwork(arch, input_shape, width=...)`` builds a NumPy network of a chosen width from
the typed AST: every construct of the language (Dense and Conv in both parameterisations,
AvgPool, SumPool, the global pools, Flatten, every registered activation including Fn,
Identity, summed branches, repetition, LayerNorm). It initialises from a seed following the
parameterisation exactly, runs the forward pass, backpropagates layer by layer (φ' is the
symbolic derivative of the registry's φ), and gives the Jacobian of the outputs with respect
to all parameters, the empirical NTK and full-batch gradient descent on the MSE loss with the
DESIGN §2 conventions.

Conventions (those of neural-tangents, so numbers compare with ``ntkdsl.compile(arch)``):

* Inputs are channels last: ``(N, d)`` for a fully-connected network, ``(N, L, C)`` or
  ``(N, H, W, C)`` (any number of spatial axes) for a convolutional one. The raw inputs enter
  the first Dense or Conv.
* ``Dense(n, W_std=σw, b_std=σb)``, NTK parameterisation: ``z = σw/√n_in · h W + σb · b``
  with W, b ~ N(0, 1); n_in is the number of channels (features). Standard
  parameterisation: ``z = h W + b`` with W ~ N(0, σw²/n_in), b ~ N(0, σb²). ``b_std=None``:
  no bias parameter at all. On inputs with spatial axes a Dense acts on the channels at
  every position, with the same weights at every position.
* ``Conv(n, filter_shape, strides, padding, ...)`` is a Dense on the patches: at each output
  position the window of the input (filter_shape positions × channels, so n_in =
  filter size × input channels) times weights of shape ``(*filter_shape, in, n)`` shared by
  every position. 'SAME' pads with zeros, 'CIRCULAR' wraps around, both by the amounts of
  XLA's 'SAME' (``ceil(L/stride)`` outputs, the odd one of the padding after); 'VALID' does
  not pad.
* ``AvgPool``/``SumPool`` average/sum windows per channel (the padding counted in the
  average, as neural-tangents' ``normalize_edges=False``); ``GlobalAvgPool``/
  ``GlobalSumPool`` average/sum over every position; ``Flatten`` joins positions and
  channels into one feature axis. A network's output has no spatial axes left.
* ``LayerNorm`` normalises each example over its channels, at each position:
  ``(h − mean) / √(var + eps)``.
* Every parameter array carries a leading *sample* axis S, so S independently initialised
  networks run as one batch (Monte-Carlo estimates); a single network has S = 1.
* Kernels of a k-output network are averaged over the k output units (neural-tangents'
  ``trace_axes=(-1,)``, which divides the trace by k): the analytic kernel is per output
  unit, so the two are directly comparable.

Width: ``width=None`` keeps every width written in the string; ``width=n`` replaces the
width of every *hidden* Dense and the channels of every hidden Conv — each one that another
Dense or Conv follows on the way to the output — by n, and keeps the output layers (which
set the output dimension) as written. :func:`with_width` does that rewrite on the AST.

Memory: the forward pass keeps every layer's input for backpropagation, and the empirical NTK
contracts position pairs in blocks; what a call needs is checked against the memory available
before any work, and Monte-Carlo samples run in chunks of bounded size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from math import isqrt, prod
from typing import Any

import numpy as np
import sympy as sp
from numpy.typing import ArrayLike

from . import activations
from .ast import (
    NODE_TYPES,
    Activation,
    Conv,
    Dense,
    Flatten,
    GlobalPool,
    Identity,
    LayerNorm,
    Node,
    Pool,
    Repeat,
    Serial,
    Sum,
)
from .errors import ArchitectureError, InputError, NumericalError, ShapeError, Span
from .evaluation import (
    as_real_array,
    check_input_rank,
    densified,
    example_shape,
    refuse_complex,
    require_memory,
)
from .parser import parse
from .printing import numpy_function
from .spatial import check_valid_window, no_spatial_axes

__all__ = [
    "FiniteNetwork",
    "activation_functions",
    "empirical_ntk",
    "monte_carlo_nngp",
    "with_width",
]

# Floats per chunk of work — Monte-Carlo samples, blocks of the empirical NTK's position
# pairs: bounds the temporaries (~64 MB each) at any width and image size.
_CHUNK_FLOATS = 1 << 23


# ----------------------------------------------------------------------------- activations

@cache
def activation_functions(node: Activation) -> tuple[Callable, Callable]:
    """(φ, φ') of an activation node as vectorised NumPy functions.

    φ comes from the registry as a sympy expression; φ' is ``activations.derivative`` of it,
    the almost-everywhere derivative that automatic differentiation gives and the analytic
    NTK uses (DESIGN §2).
    """
    spec = activations.lookup(node.name)
    if spec is None:  # the parser only makes registered names; guard direct AST users
        raise ArchitectureError(f"unknown activation '{node.name}'")
    phi = spec.phi(**node.kwargs)
    dphi = sp.S.Zero if spec.zero_derivative(**node.kwargs) else activations.derivative(phi)
    return _numpy_function(phi), _numpy_function(dphi)


def _numpy_function(expr: sp.Expr) -> Callable[[np.ndarray], np.ndarray]:
    raw = numpy_function(expr, activations.x)  # the printer every sympy -> NumPy path uses

    def evaluate(values: np.ndarray) -> np.ndarray:
        # A constant expression lambdifies to a scalar; give it the input's shape.
        with np.errstate(all="ignore"):  # overflow is reported by the caller as an error
            return np.broadcast_to(np.asarray(raw(values), dtype=np.float64), values.shape)

    return evaluate


# ----------------------------------------------------------------------------- width rewrite

_WEIGHTED = (Dense, Conv)  # the layers with weights, whose width (channels) is the width


def _has_weights(node: Node) -> bool:
    if isinstance(node, Repeat) and node.times < 1:
        return False  # written out, it is no layer at all
    return isinstance(node, _WEIGHTED) or any(_has_weights(child) for child in node.children())


def with_width(node: Node, width: int | None) -> Node:
    """The AST with every hidden Dense and Conv (one that another Dense or Conv follows)
    ``width`` wide (a Conv's width is its number of output channels).

    Output layers keep their width (the output dimension). A repetition whose last copy
    holds output layers is split into ``body * (times−1) > body``.
    """
    if width is None:
        return node
    return _rewrite(node, width, weights_follow=False)


def _rewrite(node: Node, width: int, weights_follow: bool) -> Node:
    if isinstance(node, Dense):
        return replace(node, width=width) if weights_follow else node
    if isinstance(node, Conv):
        return replace(node, out_chan=width) if weights_follow else node
    if isinstance(node, Serial):
        layers, follows = [], weights_follow
        for layer in reversed(node.layers):
            layers.append(_rewrite(layer, width, follows))
            follows = follows or _has_weights(layer)
        return replace(node, layers=tuple(reversed(layers)))
    if isinstance(node, Sum):
        return node.map_children(lambda branch: _rewrite(branch, width, weights_follow))
    if isinstance(node, Repeat):
        hidden = _rewrite(node.body, width, weights_follow=True)
        if weights_follow or not _has_weights(node.body):
            return replace(node, body=hidden)
        # Only the last copy can hold output layers: split it off.
        last = _rewrite(node.body, width, weights_follow=False)
        if node.times == 1:
            return replace(node, body=last)
        return Serial((replace(node, body=hidden, times=node.times - 1), last), span=node.span)
    return node


def _window(node: Conv | Pool) -> tuple[int, ...]:
    return node.filter_shape if isinstance(node, Conv) else node.window_shape


def _name(node: Node) -> str:
    return getattr(node, "name", type(node).__name__)


def _axes_text(rank: int) -> str:
    return f"{rank} spatial ax{'is' if rank == 1 else 'es'}"


# ----------------------------------------------------------------------------- windows
#
# A Conv or a pool reads, at each output position, a window of input positions. Along one
# spatial axis that is an index table: output position i reads input position
# ``i·stride + o − padding before`` at window offset o — wrapped around for CIRCULAR, and
# for SAME's zero padding one past the last input, where a zero is appended. A Conv gathers
# its patches with these tables axis by axis (im2col) and adds the cotangents back through
# them, one window offset at a time; a pool is the matrix that sums its window.

def window_geometry(length: int, window: int, stride: int, padding: str) -> tuple[int, int]:
    """(output positions, padding before the first input) along one axis, as XLA computes
    them: 'VALID' does not pad; 'SAME' has ceil(length/stride) outputs and pads the total
    that needs, the odd one after; 'CIRCULAR' pads as 'SAME' with the wrapped-around input."""
    if padding == "VALID":
        return (length - window) // stride + 1, 0
    out = -(-length // stride)
    return out, max((out - 1) * stride + window - length, 0) // 2


def window_indices(length: int, window: int, stride: int, padding: str) -> np.ndarray:
    """(outputs, window) table of the input position each output reads at each offset;
    ``length`` (one past the end) marks a padding zero."""
    out, before = window_geometry(length, window, stride, padding)
    source = np.arange(out)[:, None] * stride + np.arange(window) - before
    if padding == "CIRCULAR":
        return source % length
    return np.where((source >= 0) & (source < length), source, length)


def window_sums(length: int, window: int, stride: int, padding: str) -> np.ndarray:
    """(outputs, length) matrix: entry (i, j) counts the offsets at which output i reads
    input j — the sum over each window as a linear map (padding zeros add nothing)."""
    indices = window_indices(length, window, stride, padding)
    return (indices[:, :, None] == np.arange(length)).sum(axis=1).astype(np.float64)


def _gather_windows(h: np.ndarray, tables: list[np.ndarray], lead: int) -> np.ndarray:
    """Patches: (lead..., X_1..X_r, C) -> (lead..., out_1..out_r, window size · C), the
    window offsets in row-major order before the channels (the weights' (*filter, in) order)."""
    rank = len(tables)
    for d, table in enumerate(tables):  # X_d -> (out_d, f_d), in place
        axis = lead + 2 * d
        padding_zero = [(0, 0)] * h.ndim
        padding_zero[axis] = (0, 1)
        h = np.take(np.pad(h, padding_zero), table, axis=axis)
    positions = [lead + 2 * d for d in range(rank)]
    offsets = [lead + 2 * d + 1 for d in range(rank)]
    h = h.transpose([*range(lead), *positions, *offsets, h.ndim - 1])
    return h.reshape(*h.shape[:lead + rank], -1)


def _scatter_windows(g: np.ndarray, tables: list[np.ndarray], lengths: tuple[int, ...],
                     lead: int, channels: int) -> np.ndarray:
    """The adjoint of :func:`_gather_windows`: each patch entry added back to its input."""
    rank = len(tables)
    g = g.reshape(*g.shape[:lead + rank], *(t.shape[1] for t in tables), channels)
    interleaved = [axis for d in range(rank) for axis in (lead + d, lead + rank + d)]
    g = g.transpose([*range(lead), *interleaved, g.ndim - 1])
    for d in reversed(range(rank)):  # (out_d, f_d) -> X_d, the last axis first
        axis = lead + 2 * d
        windows = np.moveaxis(g, (axis, axis + 1), (0, 1))
        total = np.zeros((lengths[d] + 1, *windows.shape[2:]))
        for offset in range(tables[d].shape[1]):
            # At one offset the outputs read distinct inputs (only the padding slot
            # repeats, and it is dropped), so a plain indexed add is exact.
            total[tables[d][:, offset]] += windows[:, offset]
        g = np.moveaxis(total[:lengths[d]], 0, axis)
    return g


def _along_axes(array: np.ndarray, matrices: list[np.ndarray], first: int) -> np.ndarray:
    """Matrix d (out, in) applied along axis ``first + d`` of ``array``, for every d."""
    for d, matrix in enumerate(matrices):
        array = np.moveaxis(np.tensordot(array, matrix, axes=([first + d], [1])), -1, first + d)
    return array


def _once_per_sample_batch(f: Callable[[np.ndarray], np.ndarray], h: np.ndarray) -> np.ndarray:
    """f(h) for h (S, ...), computed once when h is the same for every sample (the raw
    inputs, broadcast over the sample axis) and broadcast back."""
    if h.shape[0] > 1 and h.strides[0] == 0:
        out = f(h[:1])
        return np.broadcast_to(out, (h.shape[0], *out.shape[1:]))
    return f(h)


# ----------------------------------------------------------------------------- layers
#
# Each layer maps activations h of shape (S, n, *positions, channels) forward — no position
# axes for fully-connected layers — and cotangents of shape (S, n, c, *positions, channels)
# backward: c cotangent columns per example, the k output units for Jacobians and kernels,
# one residual column for the loss gradient. A layer with weights reports (its input — for
# a Conv the patches —, the cotangent of its output) to ``record``; parameter Jacobians,
# gradients and the empirical NTK are all contractions of those pairs.

@dataclass
class ParamSpec:
    """One parameter array: its shape without the sample axis and its initial std."""

    shape: tuple[int, ...]
    init_std: float
    name: str


class DenseLayer:
    """``z = w_mult · h W + b_mult · b`` over the channels of h, the same W at every
    position; the multipliers and init stds encode the parameterisation (NTK: w_mult =
    σw/√n_in, W ~ N(0, 1); standard: w_mult = 1, W ~ N(0, σw²/n_in); likewise for b)."""

    def __init__(self, node: Dense | Conv, fan_in: int, n_out: int,
                 weight_shape: tuple[int, ...], specs: list[ParamSpec]):
        self.node, self.fan_in, self.n_out = node, fan_in, n_out
        ntk = node.parameterization == "ntk"
        self.w_mult = node.W_std / np.sqrt(fan_in) if ntk else 1.0
        self.w_index = len(specs)
        specs.append(ParamSpec(weight_shape, 1.0 if ntk else node.W_std / np.sqrt(fan_in),
                               f"{node} W"))
        self.b_index = None
        self.b_mult = 0.0
        if node.b_std is not None:
            self.b_mult = node.b_std if ntk else 1.0
            self.b_index = len(specs)
            specs.append(ParamSpec((n_out,), 1.0 if ntk else node.b_std, f"{node} b"))

    def weights(self, params) -> np.ndarray:
        """W as (S, n_in, n_out): a view (a Conv stores it (S, *filter, in, out))."""
        w = params[self.w_index]
        return w.reshape(len(w), self.fan_in, self.n_out)

    def _affine(self, params, inputs: np.ndarray) -> np.ndarray:
        samples = inputs.shape[0]
        # One (n·positions, in) @ (in, out) product per sample: a single BLAS call.
        flat = inputs.reshape(samples, -1, self.fan_in) @ self.weights(params)
        z = self.w_mult * flat.reshape(*inputs.shape[:-1], self.n_out)
        if self.b_index is not None:
            bias = params[self.b_index].reshape(samples, *(1,) * (inputs.ndim - 2), self.n_out)
            z = z + self.b_mult * bias
        return z

    def _transpose(self, params, cot: np.ndarray) -> np.ndarray:
        """The cotangent of the output back through the weights, to the input (patches)."""
        samples = cot.shape[0]
        flat = np.ascontiguousarray(cot).reshape(samples, -1, self.n_out)
        back = flat @ np.swapaxes(self.weights(params), -1, -2)
        return self.w_mult * back.reshape(*cot.shape[:-1], self.fan_in)

    def forward(self, params, h):
        return self._affine(params, h), h

    def backward(self, params, h, cot, record):
        record(self, h, cot)
        return self._transpose(params, cot)


class ConvLayer(DenseLayer):
    """A Dense on the patches of its input: at each output position, the window's positions
    × channels (n_in = filter size × input channels) times weights (*filter_shape, in, out)
    shared by every position."""

    def __init__(self, node: Conv, in_shape: tuple[int, ...], specs: list[ParamSpec]):
        *spatial, channels = in_shape
        self.channels = channels
        self.lengths = tuple(spatial)
        self.tables = [window_indices(length, size, stride, node.padding)
                       for length, size, stride in zip(spatial, node.filter_shape,
                                                       node.strides)]
        self.out_shape = (*(t.shape[0] for t in self.tables), node.out_chan)
        super().__init__(node, prod(node.filter_shape) * channels, node.out_chan,
                         (*node.filter_shape, channels, node.out_chan), specs)

    def forward(self, params, h):
        patches = _once_per_sample_batch(lambda a: _gather_windows(a, self.tables, 2), h)
        return self._affine(params, patches), patches

    def backward(self, params, patches, cot, record):
        record(self, patches, cot)
        return _scatter_windows(self._transpose(params, cot), self.tables, self.lengths, 3,
                                self.channels)


class PoolLayer:
    """AvgPool/SumPool: per channel, along each spatial axis the matrix (outputs, inputs)
    that sums each window (:func:`window_sums`), divided by the window size to average."""

    def __init__(self, node: Pool, in_shape: tuple[int, ...]):
        self.matrices = [window_sums(length, size, stride, node.padding)
                         / (size if node.reduce == "avg" else 1)
                         for length, size, stride in zip(in_shape[:-1], node.window_shape,
                                                         node.strides)]
        self.out_shape = (*(m.shape[0] for m in self.matrices), in_shape[-1])

    def forward(self, params, h):
        return _once_per_sample_batch(lambda a: _along_axes(a, self.matrices, 2), h), None

    def backward(self, params, cache, cot, record):
        return _along_axes(cot, [m.T for m in self.matrices], 3)


class GlobalPoolLayer:
    """GlobalAvgPool/GlobalSumPool: the mean/sum over every position, per channel."""

    def __init__(self, node: GlobalPool, in_shape: tuple[int, ...]):
        self.in_shape = in_shape
        self.scale = 1.0 / prod(in_shape[:-1]) if node.reduce == "avg" else 1.0

    def forward(self, params, h):
        return self.scale * h.sum(axis=tuple(range(2, h.ndim - 1))), None

    def backward(self, params, cache, cot, record):
        spread = (self.scale * cot).reshape(*cot.shape[:3], *(1,) * (len(self.in_shape) - 1),
                                            cot.shape[-1])
        return np.broadcast_to(spread, (*cot.shape[:3], *self.in_shape))


class FlattenLayer:
    """Positions and channels into one feature axis (row-major, as neural-tangents)."""

    def __init__(self, in_shape: tuple[int, ...]):
        self.in_shape = in_shape

    def forward(self, params, h):
        return h.reshape(*h.shape[:2], -1), None

    def backward(self, params, cache, cot, record):
        return cot.reshape(*cot.shape[:3], *self.in_shape)


class ActivationLayer:
    """φ applied elementwise; backward multiplies by φ' at the pre-activations."""

    def __init__(self, node: Activation):
        self.node = node
        self.phi, self.dphi = activation_functions(node)

    def __reduce__(self):
        # φ and φ' are lambdified closures, which do not pickle: rebuild them from the node
        # (activation_functions caches them per node).
        return ActivationLayer, (self.node,)

    def forward(self, params, h):
        return self.phi(h), h

    def backward(self, params, h, cot, record):
        return cot * self.dphi(h)[:, :, None]


class LayerNormLayer:
    """``(h − mean) / √(var + eps)`` over each example's channels, at every position."""

    def __init__(self, node: LayerNorm):
        self.eps = node.eps

    def forward(self, params, h):
        centred = h - h.mean(axis=-1, keepdims=True)
        scale = np.sqrt(np.mean(centred ** 2, axis=-1, keepdims=True) + self.eps)
        out = centred / scale
        return out, (out, scale)

    def backward(self, params, cache, cot, record):
        out, scale = cache
        y = out[:, :, None]
        # d/dh of (h − μ)/σ applied to cot: (cot − mean(cot) − y·mean(cot·y)) / σ.
        return (cot - cot.mean(axis=-1, keepdims=True)
                - y * np.mean(cot * y, axis=-1, keepdims=True)) / scale[:, :, None]


class IdentityLayer:
    def forward(self, params, h):
        return h, None

    def backward(self, params, cache, cot, record):
        return cot


class SerialLayer:
    def __init__(self, layers: list):
        self.layers = layers

    def forward(self, params, h):
        caches = []
        for layer in self.layers:
            h, cache = layer.forward(params, h)
            caches.append(cache)
        return h, caches

    def backward(self, params, caches, cot, record):
        for layer, layer_cache in zip(reversed(self.layers), reversed(caches)):
            cot = layer.backward(params, layer_cache, cot, record)
        return cot


class SumLayer:
    """Branches fed the same input, outputs summed; the cotangent reaches every branch."""

    def __init__(self, branches: list):
        self.branches = branches

    def forward(self, params, h):
        outs = [branch.forward(params, h) for branch in self.branches]
        return sum(out for out, _ in outs), [cache for _, cache in outs]

    def backward(self, params, caches, cot, record):
        return sum(branch.backward(params, cache, cot, record)
                   for branch, cache in zip(self.branches, caches))


# ----------------------------------------------------------------------------- building

@dataclass
class _Build:
    """What building needs besides the node: the source (for carets), the parameter list
    it appends to, the positions of the network's inputs (none for vectors), and the
    floats per example the forward pass keeps (for the memory checks)."""

    source: str
    specs: list[ParamSpec]
    inputs: tuple[int, ...]
    floats: int = 0
    positions: int = 1  # the most output positions of a layer with weights
    joined: str | None = None  # the Flatten or global pool that left no spatial axes


def _build(node: Node, shape: tuple[int, ...], build: _Build):
    """(layer, output shape) for an AST node fed examples of ``shape`` (spatial axes...,
    channels); every layer's input is checked against what the layer takes."""
    layer, out = _layer(node, shape, build)
    if isinstance(node, _WEIGHTED):
        build.positions = max(build.positions, prod(out[:-1]))
    if not isinstance(node, (Serial, Sum, Repeat)):
        # Its input (a Conv's patches: window size times it) is kept for backpropagation.
        build.floats += prod(shape) * (prod(node.filter_shape) if isinstance(node, Conv) else 1)
    return layer, out


def _layer(node: Node, shape: tuple[int, ...], build: _Build):
    if isinstance(node, Dense):
        return (DenseLayer(node, shape[-1], node.width, (shape[-1], node.width), build.specs),
                (*shape[:-1], node.width))
    if isinstance(node, (Conv, Pool)):
        _check_window_input(node, shape, build)
        layer = ConvLayer(node, shape, build.specs) if isinstance(node, Conv) \
            else PoolLayer(node, shape)
        return layer, layer.out_shape
    if isinstance(node, GlobalPool):
        _check_spatial_input(node, shape, build)
        build.joined = str(node)
        return GlobalPoolLayer(node, shape), shape[-1:]
    if isinstance(node, Flatten):
        _check_spatial_input(node, shape, build)
        build.joined = str(node)
        return FlattenLayer(shape), (prod(shape),)
    if isinstance(node, Activation):
        return ActivationLayer(node), shape
    if isinstance(node, LayerNorm):
        return LayerNormLayer(node), shape
    if isinstance(node, Identity):
        return IdentityLayer(), shape
    if isinstance(node, Serial):
        layers = []
        for layer in node.layers:
            built, shape = _build(layer, shape, build)
            layers.append(built)
        return SerialLayer(layers), shape
    if isinstance(node, Repeat):
        return _build(Serial((node.body,) * node.times, span=node.span), shape, build)
    if isinstance(node, Sum):
        return _build_sum(node, shape, build)
    raise ArchitectureError(f"the finite network cannot express {type(node).__name__} "
                            "nodes", source=build.source, span=getattr(node, "span", None))


def _build_sum(node: Sum, shape: tuple[int, ...], build: _Build):
    built = [_build(branch, shape, build) for branch in node.branches]
    shapes = [out for _, out in built]
    if len(set(shapes)) > 1:
        listed = ", ".join(f"branch {i + 1}: {_shape_text(s)}" for i, s in enumerate(shapes))
        raise ArchitectureError(
            f"the branches of this sum have different "
            f"{'widths' if all(len(s) == 1 for s in shapes) else 'output shapes'} ({listed}), "
            "so their outputs cannot be added", source=build.source, span=node.span,
            hint="give every branch the same output width (and the same positions); an "
                 "Identity branch keeps the shape of the sum's input (the number of features "
                 "for raw inputs)")
    return SumLayer([layer for layer, _ in built]), shapes[0]


def _shape_text(shape: tuple[int, ...]) -> str:
    """A width as a number, a shape with positions as (positions..., channels)."""
    return str(shape[0]) if len(shape) == 1 else str(shape)


def _check_spatial_input(node: Node, shape: tuple[int, ...], build: _Build) -> None:
    """A Conv, pool or Flatten needs inputs that still have spatial axes."""
    if len(shape) > 1:
        return
    if build.joined is not None:  # only Flatten and the global pools remove them
        raise no_spatial_axes(str(node), build.joined, source=build.source, span=node.span)
    raise ShapeError(
        f"{_name(node)} works on inputs with spatial axes, but the inputs are vectors of "
        f"{shape[0]} features", source=build.source, span=node.span,
        hint="give inputs channels last: (N, L, C) for 1-D or (N, H, W, C) for 2-D images")


def _check_window_input(node: Conv | Pool, shape: tuple[int, ...], build: _Build) -> None:
    """A filter or window has one size per spatial axis and, with 'VALID', fits inside."""
    _check_spatial_input(node, shape, build)
    window, spatial = _window(node), shape[:-1]
    kind = "filter" if isinstance(node, Conv) else "window"
    if len(window) != len(spatial):
        raise ShapeError(
            f"{_name(node)} has a {kind} of {_axes_text(len(window))}, {window}, but its input "
            f"here has {_axes_text(len(spatial))} (shape {shape} per example, channels last)",
            source=build.source, span=node.span,
            hint=f"give the {kind} one size per spatial axis, e.g. {(3,) * len(spatial)}, or "
                 f"inputs with {_axes_text(len(window))}")
    if node.padding == "VALID":
        check_valid_window(str(node), window, spatial, source=build.source, span=node.span,
                           inputs=build.inputs)


# ----------------------------------------------------------------------------- the network

def _check_width(width) -> int | None:
    if width is None:
        return None
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise InputError(f"width must be a whole number >= 1 (or None to keep the widths "
                         f"written in the architecture), got {width!r}")
    return int(width)


def _as_ast(arch) -> tuple[Node, str]:
    if isinstance(arch, str):
        return parse(arch), arch
    if isinstance(arch, NODE_TYPES):
        return arch, str(arch)
    return parse(arch), ""  # parse raises ntkdsl's error for anything else


def _as_examples(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 array of n >= 1 examples: (n, d), or (n, *positions, C)."""
    refuse_complex(x, name)  # before densifying, which would cost memory first
    a = as_real_array(densified(x, name), name)
    if a.ndim < 2:
        raise ShapeError(f"{name} must be 2-D (n samples, d features) or images (n, ..., "
                         f"channels), got shape {a.shape}",
                         hint="reshape a single sample with x.reshape(1, -1)")
    if a.size == 0:
        raise ShapeError(f"{name} is empty (shape {a.shape}); it needs at least one sample")
    if not np.isfinite(a).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise InputError(f"{name} has a non-finite value {a[index]} at index {index}",
                         hint="finite networks take finite inputs only; drop or impute it")
    return a


def _network_for(arch, x1: np.ndarray, width: int | None) -> FiniteNetwork:
    """The finite network for the examples x1, their rank checked first under their name."""
    ast, source = _as_ast(arch)
    check_input_rank(ast, x1.shape, "x1", source)
    return FiniteNetwork(arch, x1.shape[1:], width)


def _examples(x1, x2) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated x1 and x2 (None stays None) with the same shape per example."""
    a = _as_examples(x1, "x1")
    if x2 is None:
        return a, None
    b = _as_examples(x2, "x2")
    if a.shape[1:] != b.shape[1:]:
        raise ShapeError(f"x1 has examples of shape {a.shape[1:]} but x2 has {b.shape[1:]}; "
                         "both must have the same shape per example")
    return a, b


class FiniteNetwork:
    """A finite NumPy network of an architecture, for examples of ``input_shape``: the number
    of features d (or ``(d,)``) for a fully-connected network, ``(L, C)``, ``(H, W, C)``, ...
    (channels last) for a convolutional one.

    Parameters are a list of arrays (see ``param_specs``), each with a leading sample axis;
    make them with :meth:`init`. Every method is vectorised over samples and examples.
    """

    def __init__(self, arch: str | Node, input_shape: int | tuple[int, ...],
                 width: int | None = None) -> None:
        self.input_shape = example_shape(input_shape)
        ast, self.source = _as_ast(arch)
        self.width = _check_width(width)
        self.ast = with_width(ast, self.width)
        self.arch = str(self.ast)  # the architecture actually built (widths substituted)
        check_input_rank(ast, ("n", *self.input_shape), "a batch of input_shape "
                         f"{_shape_text(self.input_shape)}", self.source)
        self.param_specs: list[ParamSpec] = []
        self.root, self.output_dim, self._floats, self._positions = self._build(
            self.ast, self.param_specs)
        if not self.param_specs:
            raise ArchitectureError(f"'{self.source}' has no Dense or Conv layer, so the "
                                    "network has no parameters and no tangent kernel",
                                    hint="add a readout, e.g. ... > Dense(1)")

    def _build(self, ast: Node, specs: list[ParamSpec]):
        """(root layer, output width, floats the forward pass keeps per example, the most
        positions a layer with weights has)."""
        build = _Build(self.source, specs, inputs=self.input_shape[:-1])
        root, out = _build(ast, self.input_shape, build)
        if len(out) > 1:
            text = self.source or str(ast)
            raise ArchitectureError(
                f"the output of this network still has spatial axes (shape {out} per "
                "example), so it has no (n1, n2) kernel", source=text,
                span=Span.at(text, 0, len(text)),
                hint="end the convolutional part with Flatten or GlobalAvgPool before the "
                     "readout, e.g. ... > Relu > GlobalAvgPool > Dense(1)")
        return root, out[0], build.floats + out[0], build.positions

    @property
    def input_dim(self) -> int:
        """The number of input features (all of an example's entries)."""
        return prod(self.input_shape)

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(spec.shape) for spec in self.param_specs))

    # ------------------------------------------------------------------ init and forward

    def init(self, seed: int | np.random.Generator = 0, samples: int = 1) -> list[np.ndarray]:
        """``samples`` independent initialisations, drawn in layer order from the seed."""
        rng = np.random.default_rng(seed)
        return [spec.init_std * rng.standard_normal((samples, *spec.shape))
                for spec in self.param_specs]

    def _inputs(self, x, name: str = "x") -> np.ndarray:
        a = _as_examples(x, name)
        if a.shape[1:] != self.input_shape:
            if len(self.input_shape) == 1 and a.ndim == 2:
                raise ShapeError(f"the network was built for {self.input_shape[0]} input "
                                 f"features, got {a.shape[1]}")
            raise ShapeError(f"the network was built for examples of shape {self.input_shape}"
                             f" (channels last), got {name} of shape {a.shape}")
        return a

    def _require_memory(self, samples: int, n: int, columns: int, what: str,
                        extra_floats: int = 0) -> None:
        """Refuse before any work a pass whose kept activations and cotangents (``columns``
        per example), plus ``extra_floats`` of temporaries, do not fit in the memory
        available."""
        require_memory(8.0 * (samples * (n * self._floats * (1 + columns) + self.num_params)
                              + extra_floats),
                       f"{what} of '{self.arch}' on {n} inputs ({samples} networks)",
                       hint="use fewer inputs, samples or a smaller width")

    def _forward(self, params, x, samples: int | None = None):
        samples = len(params[0]) if samples is None else samples
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: the error below
            out, cache = self.root.forward(params, np.broadcast_to(x, (samples, *x.shape)))
        if not np.all(np.isfinite(out)):
            raise NumericalError(f"the finite network '{self.arch}' produced non-finite "
                                 "outputs (overflow); scale the inputs or W_std down")
        return out, cache

    def apply(self, params: list[np.ndarray], x: ArrayLike) -> np.ndarray:
        """Outputs f(x), shape (S, n, k)."""
        a = self._inputs(x)
        self._require_memory(len(params[0]), len(a), 0, "the forward pass")
        return self._forward(params, a)[0]

    # ------------------------------------------------------------------ backward

    def _backprop(self, params, cache, cot, record: Callable) -> None:
        """Backpropagate ``cot``; ``record(layer, its input, the cotangent of its output)``
        is called for every Dense and Conv, in backward order."""
        self.root.backward(params, cache, cot, record)

    def _output_cotangent(self, samples: int, n: int) -> np.ndarray:
        """df_o/df: one cotangent column per output unit, shape (S, n, k, k)."""
        eye = np.eye(self.output_dim)
        return np.broadcast_to(eye, (samples, n, self.output_dim, self.output_dim))

    def jacobian(self, params: list[np.ndarray], x: ArrayLike) -> list[np.ndarray]:
        """∂f/∂θ for every parameter array: shapes (S, n, k, *param shape)."""
        a = self._inputs(x)
        samples, k = len(params[0]), self.output_dim
        require_memory(8.0 * samples * len(a) * k * self.num_params,
                       f"the Jacobian of '{self.arch}' ({len(a)} inputs x {k} outputs x "
                       f"{self.num_params} parameters, {samples} networks)",
                       hint="use fewer inputs or a smaller width; ntk() contracts the "
                            "Jacobian without forming it")
        self._require_memory(samples, len(a), k, "backpropagation")
        _, cache = self._forward(params, a)
        grads: list[np.ndarray | None] = [None] * len(params)

        def record(layer, h, cot):
            h, cot = _positions(h), _positions(cot, lead=3)
            grads[layer.w_index] = (layer.w_mult * np.einsum("snpi,snkpo->snkio", h, cot)
                                    ).reshape(*cot.shape[:3], *self.param_specs[layer.w_index].shape)
            if layer.b_index is not None:
                grads[layer.b_index] = layer.b_mult * cot.sum(axis=3)

        self._backprop(params, cache, self._output_cotangent(samples, len(a)), record)
        return grads

    def ntk(self, params: list[np.ndarray], x1: ArrayLike, x2: ArrayLike | None = None) -> np.ndarray:
        """Empirical NTK J(x1) J(x2)ᵀ averaged over output units, shape (S, n1, n2).

        Contracted layer by layer — Σ over position pairs (p, q) of
        (w_mult² h_p·h'_q + b_mult²)(cot_p·cot'_q), the weights being shared by every
        position — which equals J Jᵀ without ever forming the (n, #params) Jacobian.
        """
        a, b = _examples(x1, x2)
        both = self._inputs(a if b is None else np.concatenate([a, b]), "x1")
        samples, n1 = len(params[0]), len(a)
        self._require_memory(samples, len(both), self.output_dim, "the empirical NTK",
                             _tangent_block_floats(samples, self._positions))
        rows, cols = (slice(0, n1), slice(0, n1) if b is None else slice(n1, len(both)))
        _, cache = self._forward(params, both)
        kernel = np.zeros((samples, n1, cols.stop - cols.start))

        def record(layer, h, cot):
            kernel[...] += _tangent(layer, h, cot, rows, cols) / self.output_dim

        self._backprop(params, cache, self._output_cotangent(samples, len(both)), record)
        return kernel

    # ------------------------------------------------------------------ training

    def loss_and_grad(self, params: list[np.ndarray], x: ArrayLike, y: ArrayLike
                      ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(loss per sample (S,), gradients, outputs) for ½·mean over N·k of (f − y)²."""
        a = self._inputs(x)
        self._require_memory(len(params[0]), len(a), 1, "the loss gradient")
        out, cache = self._forward(params, a)
        residual = out - as_real_array(y, "y")
        loss = 0.5 * np.mean(residual ** 2, axis=(1, 2))
        cot = (residual / residual[0].size)[:, :, None, :]  # one cotangent column
        grads: list[np.ndarray | None] = [None] * len(params)

        def record(layer, h, c):
            # Σ_n,p,c h[n, p] c[n, c, p] = Σ_(n,p) h[n, p] (Σ_c c[n, c, p]): one product.
            h, summed = _flat_rows(h), _flat_rows(c.sum(axis=2))
            grads[layer.w_index] = layer.w_mult * (np.swapaxes(h, -1, -2) @ summed).reshape(
                -1, *self.param_specs[layer.w_index].shape)
            if layer.b_index is not None:
                grads[layer.b_index] = layer.b_mult * summed.sum(axis=1)

        self._backprop(params, cache, cot, record)
        return loss, grads, out

    def train(self, params: list[np.ndarray], x: ArrayLike, y: ArrayLike, learning_rate: float, steps: int,
              callback: Callable[[int], Any] | None = None) -> list[np.ndarray]:
        """Full-batch gradient descent; returns the trained parameters (a new list).

        ``y`` is (N,) or (N, k). Time t = learning_rate × steps, as in DESIGN §2.
        """
        a = self._inputs(x)
        targets = as_real_array(y, "y")
        valid = [(len(a), self.output_dim)] + ([(len(a),)] if self.output_dim == 1 else [])
        if targets.shape not in valid:
            raise ShapeError(f"targets have shape {targets.shape}, but {len(a)} inputs and "
                             f"{self.output_dim} outputs need {' or '.join(map(str, valid))}")
        targets = targets.reshape(len(a), -1)
        self._require_memory(len(params[0]), len(a), 1, "gradient descent")
        params = [p.copy() for p in params]
        for step in range(int(steps)):
            self._descend(params, a, targets, learning_rate)
            if callback is not None:
                callback(step)
        return params

    def _descend(self, params, x, y, learning_rate: float) -> None:
        """One gradient-descent step in place: the same gradients as :meth:`loss_and_grad`,
        but each weight update is fused into one BLAS call (W += α hᵀc), because at large
        widths a step is bound by memory passes over the weight matrices."""
        out, cache = self._forward(params, x)
        residual = out - y
        cot = (residual / residual[0].size)[:, :, None, :]
        pairs: list[tuple[DenseLayer, np.ndarray, np.ndarray]] = []
        # Every cotangent first: an update during backpropagation would change the weights
        # that the layers below it are still backpropagated through.
        self._backprop(params, cache, cot, lambda layer, h, c: pairs.append((layer, h, c)))
        for layer, h, c in pairs:
            h, summed = _flat_rows(h), _flat_rows(c.sum(axis=2))  # (S, n·positions, ·)
            weights = layer.weights(params)  # a view: the update lands in params
            for s in range(len(h)):
                _add_outer(weights[s], -learning_rate * layer.w_mult, h[s], summed[s])
            if layer.b_index is not None:
                params[layer.b_index] -= learning_rate * layer.b_mult * summed.sum(axis=1)

    # ------------------------------------------------------------------ Monte-Carlo NNGP

    def readout(self) -> tuple[FiniteNetwork, DenseLayer] | None:
        """(the network below the final Dense, that Dense) when the architecture ends in a
        Dense layer at the top level, else None."""
        layers = self.ast.layers if isinstance(self.ast, Serial) else (self.ast,)
        if not isinstance(layers[-1], Dense):
            return None
        body = FiniteNetwork.__new__(FiniteNetwork)
        body.source, body.width, body.input_shape = self.source, None, self.input_shape
        body.ast = Serial(layers[:-1]) if len(layers) > 1 else Identity()
        body.arch = str(body.ast)
        body.param_specs = []
        body.root, n_in, body._floats, body._positions = body._build(body.ast, body.param_specs)
        return body, DenseLayer(layers[-1], n_in, layers[-1].width, (n_in, layers[-1].width),
                                [])


def _positions(array: np.ndarray, lead: int = 2) -> np.ndarray:
    """(lead..., *positions, channels) as (lead..., P, channels); P = 1 without positions."""
    return array.reshape(*array.shape[:lead], -1, array.shape[-1])


def _flat_rows(array: np.ndarray) -> np.ndarray:
    """(S, n, *positions, channels) as (S, n·P, channels): every (example, position) a row."""
    return array.reshape(array.shape[0], -1, array.shape[-1])


def _tangent(layer: DenseLayer, h: np.ndarray, cot: np.ndarray, rows: slice,
             cols: slice) -> np.ndarray:
    """One layer's term of J Jᵀ (summed over output units) for examples rows × cols:
    Σ_(p, q) (w_mult² h_p·h'_q + b_mult²)(cot_p·cot'_q), in blocks of example pairs so that
    the position-pair Gram matrices stay within _CHUNK_FLOATS."""
    h = _positions(h)  # (S, n, P, in)
    samples, _, positions, _ = h.shape
    # cot (S, n, k, *positions, out) -> (S, n, P, k·out): the output units join the channels.
    cot = np.moveaxis(_positions(cot, lead=3), 2, 3)
    cot = cot.reshape(*cot.shape[:3], -1)
    n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
    block = _tangent_block(samples, positions)
    out = np.empty((samples, n_rows, n_cols))
    for r in range(0, n_rows, block):
        ri = slice(rows.start + r, rows.start + min(r + block, n_rows))
        for c in range(0, n_cols, block):
            ci = slice(cols.start + c, cols.start + min(c + block, n_cols))
            gram_h, gram_c = (_gram(m[:, ri], m[:, ci]) for m in (h, cot))
            pairs = (layer.w_mult ** 2 * gram_h + layer.b_mult ** 2) * gram_c
            a, b = ri.stop - ri.start, ci.stop - ci.start
            out[:, r:r + a, c:c + b] = pairs.reshape(samples, a, positions, b,
                                                     positions).sum(axis=(2, 4))
    return out


def _tangent_block(samples: int, positions: int) -> int:
    """Examples per side of a block of :func:`_tangent`: its three (S, a·P, b·P) position-pair
    temporaries within _CHUNK_FLOATS, or one pair of examples if even that is more."""
    return max(1, isqrt(_CHUNK_FLOATS // (3 * samples * positions ** 2)))


def _tangent_block_floats(samples: int, positions: int) -> int:
    """Floats of one block's temporaries (at most _CHUNK_FLOATS unless one pair exceeds it)."""
    return 3 * samples * (_tangent_block(samples, positions) * positions) ** 2


def _gram(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(S, a, P, f) and (S, b, P, f) -> (S, a·P, b·P) inner products over f."""
    samples, features = u.shape[0], u.shape[-1]
    return u.reshape(samples, -1, features) @ np.swapaxes(v.reshape(samples, -1, features),
                                                          -1, -2)
def _add_outer(weights: np.ndarray, alpha: float, h: np.ndarray, c: np.ndarray) -> None:
    """``weights += alpha · hᵀ c`` in place (weights C-contiguous, (in, out))."""
    from scipy.linalg.blas import dgemm

    # weights.T is Fortran-ordered, so dgemm can write the product into it directly.
    result = dgemm(alpha, c, h, beta=1.0, c=weights.T, trans_a=True, overwrite_c=True)
    if not np.shares_memory(result, weights):  # pragma: no cover - BLAS made a copy
        weights[...] = result.T


def _check_samples(samples) -> int:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
        raise InputError(f"samples must be a whole number >= 2 (the number of random "
                         f"initialisations averaged), got {samples!r}")
    return int(samples)


def _chunks(total: int, per_sample_floats: int) -> list[int]:
    size = max(1, min(total, _CHUNK_FLOATS // max(1, per_sample_floats)))
    return [min(size, total - start) for start in range(0, total, size)]


# ----------------------------------------------------------------------------- public API

def empirical_ntk(arch: str | Node, x1: ArrayLike, x2: ArrayLike | None = None, width: int | None = 1024,
                  seed: int = 0) -> np.ndarray:
    """The NTK of one randomly initialised finite network, J(x1) J(x2)ᵀ: (n1, n2) float64.

    Comparable with ``ntkdsl.compile(arch).ntk(x1, x2)``: it converges to it as the width
    grows, with relative error ~ 1/√width. Averaged over output units for a k-output network.

    Args:
        arch: architecture string (or parsed AST).
        x1, x2: (n1, d) and (n2, d) inputs — or images, channels last: (n1, L, C),
            (n1, H, W, C), ... —; x2=None means x1 against itself.
        width: width of every hidden Dense and channels of every hidden Conv (output
            layers keep theirs); None keeps the widths written in the string.
        seed: seed of the initialisation.
    """
    a, b = _examples(x1, x2)
    net = _network_for(arch, a, width)
    return net.ntk(net.init(seed), a, b)[0]


def monte_carlo_nngp(arch: str | Node, x1: ArrayLike, x2: ArrayLike | None = None,
                     width: int | None = 1024, samples: int = 64,
                     seed: int = 0, exact_readout: bool = True) -> np.ndarray:
    """Monte-Carlo NNGP: the output covariance E[f(x1) f(x2)ᵀ] of ``samples`` random
    finite networks, (n1, n2) float64, averaged over output units.

    Comparable with ``ntkdsl.compile(arch).nngp(x1, x2)``. When the architecture ends in a
    Dense layer and ``exact_readout`` is true, that layer's weights are integrated out
    exactly — each sample contributes E[f f'ᵀ | the layers below] = σw² g·g'/n_in + σb² —
    which has the same expectation as averaging f f'ᵀ but without the readout's sampling
    noise, so the error reflects the width rather than mostly the number of samples.

    Args:
        arch, x1, x2, width: as in :func:`empirical_ntk`.
        samples: number of independent initialisations (>= 2).
        seed: seed of the whole estimate (reproducible for the same arguments).
        exact_readout: integrate out a final Dense analytically (see above).
    """
    a, b = _examples(x1, x2)
    samples = _check_samples(samples)
    net = _network_for(arch, a, width)
    both = a if b is None else np.concatenate([a, b])
    split = net.readout() if exact_readout else None
    body = split[0] if split else net
    # A sample holds its parameters and the activations of every input.
    per_sample = body.num_params + len(both) * body._floats
    sizes = _chunks(samples, per_sample)
    require_memory(8.0 * (sizes[0] * per_sample + 3 * len(both) ** 2),
                   f"the Monte-Carlo NNGP of '{net.arch}' on {len(both)} inputs",
                   hint="use fewer inputs or a smaller width")
    rngs = np.random.SeedSequence(seed).spawn(len(sizes))
    total = np.zeros((len(both), len(both)))
    for size, child in zip(sizes, rngs):
        params = body.init(np.random.default_rng(child), size)
        features = body._forward(params, both, size)[0]
        total += _second_moment(features, split[1] if split else None).sum(axis=0)
    kernel = total / samples
    return kernel if b is None else kernel[:len(a), len(a):]


def _second_moment(features: np.ndarray, readout: DenseLayer | None) -> np.ndarray:
    """Per sample (S, n, n): f fᵀ averaged over units, or the readout's conditional mean."""
    gram = features @ np.swapaxes(features, -1, -2) / features.shape[-1]
    if readout is None:
        return gram
    node = readout.node
    bias = 0.0 if node.b_std is None else node.b_std ** 2
    # Both parameterisations give z·z' a conditional mean σw² g·g'/n_in + σb².
    return node.W_std ** 2 * gram + bias
