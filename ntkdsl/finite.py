"""Finite-width networks from the same architecture strings, to check the infinite-width theory.

``FiniteNetwork(arch, input_dim, width=...)`` builds a NumPy network of a chosen width from
the typed AST: every construct of the language (Dense in both parameterisations, every
registered activation including Fn, Identity, summed branches, repetition, LayerNorm). It
initialises from a seed following the parameterisation exactly, runs the forward pass,
backpropagates layer by layer (φ' is the symbolic derivative of the registry's φ), and gives
the Jacobian of the outputs with respect to all parameters, the empirical NTK and full-batch
gradient descent on the MSE loss with the DESIGN §2 conventions.

Conventions (those of neural-tangents, so numbers compare with ``ntkdsl.compile(arch)``):

* The raw inputs enter the first Dense; its fan-in ``n_in`` is the number of features d.
* ``Dense(n, W_std=σw, b_std=σb)``, NTK parameterisation: ``z = σw/√n_in · h W + σb · b``
  with W, b ~ N(0, 1). Standard parameterisation: ``z = h W + b`` with W ~ N(0, σw²/n_in),
  b ~ N(0, σb²). ``b_std=None``: no bias parameter at all.
* ``LayerNorm`` normalises each example over its features: ``(h − mean) / √(var + eps)``.
* Every parameter array carries a leading *sample* axis S, so S independently initialised
  networks run as one batch (Monte-Carlo estimates); a single network has S = 1.
* Kernels of a k-output network are averaged over the k output units (neural-tangents'
  ``trace_axes=(-1,)``, which divides the trace by k): the analytic kernel is per output
  unit, so the two are directly comparable.

Width: ``width=None`` keeps every width written in the string; ``width=n`` replaces the
width of every *hidden* Dense — each Dense that another Dense follows on the way to the
output — by n, and keeps the output Dense layers (which set the output dimension) as
written. :func:`with_width` does that rewrite on the AST.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np
import sympy as sp
from numpy.typing import ArrayLike

from . import activations
from .ast import NODE_TYPES, Activation, Dense, Identity, LayerNorm, Node, Repeat, Serial, Sum
from .errors import ArchitectureError, InputError, NumericalError, ShapeError
from .evaluation import as_real_array
from .network import check_inputs
from .parser import parse
from .printing import numpy_function

__all__ = [
    "FiniteNetwork",
    "activation_functions",
    "empirical_ntk",
    "monte_carlo_nngp",
    "with_width",
]

# Floats per Monte-Carlo chunk of parameters: bounds memory (~64 MB) at any width.
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

def _has_dense(node: Node) -> bool:
    if isinstance(node, Repeat) and node.times < 1:
        return False  # written out, it is no layer at all
    return isinstance(node, Dense) or any(_has_dense(child) for child in node.children())


def with_width(node: Node, width: int | None) -> Node:
    """The AST with every hidden Dense (one that another Dense follows) ``width`` wide.

    Output Dense layers keep their width (the output dimension). A repetition whose last
    copy holds output Dense layers is split into ``body * (times−1) > body``.
    """
    if width is None:
        return node
    return _rewrite(node, width, dense_follows=False)


def _rewrite(node: Node, width: int, dense_follows: bool) -> Node:
    if isinstance(node, Dense):
        return replace(node, width=width) if dense_follows else node
    if isinstance(node, Serial):
        layers, follows = [], dense_follows
        for layer in reversed(node.layers):
            layers.append(_rewrite(layer, width, follows))
            follows = follows or _has_dense(layer)
        return replace(node, layers=tuple(reversed(layers)))
    if isinstance(node, Sum):
        return node.map_children(lambda branch: _rewrite(branch, width, dense_follows))
    if isinstance(node, Repeat):
        hidden = _rewrite(node.body, width, dense_follows=True)
        if dense_follows or not _has_dense(node.body):
            return replace(node, body=hidden)
        # Only the last copy can hold output Dense layers: split it off.
        last = _rewrite(node.body, width, dense_follows=False)
        if node.times == 1:
            return replace(node, body=last)
        return Serial((replace(node, body=hidden, times=node.times - 1), last), span=node.span)
    return node


# ----------------------------------------------------------------------------- layers
#
# Each layer maps activations h of shape (S, n, features) forward, and cotangents of shape
# (S, n, c, features) backward — c cotangent columns per example: the k output units for
# Jacobians and kernels, one residual column for the loss gradient. A Dense layer reports
# (its input, the cotangent of its output) to ``record``; parameter Jacobians, gradients
# and the empirical NTK are all contractions of those pairs.

@dataclass
class ParamSpec:
    """One parameter array: its shape without the sample axis and its initial std."""

    shape: tuple[int, ...]
    init_std: float
    name: str


class DenseLayer:
    """``z = w_mult · h W + b_mult · b``; the multipliers and init stds encode the
    parameterisation (NTK: w_mult = σw/√n_in, W ~ N(0, 1); standard: w_mult = 1,
    W ~ N(0, σw²/n_in); likewise for b)."""

    def __init__(self, node: Dense, n_in: int, specs: list[ParamSpec]):
        self.node, self.n_in, self.n_out = node, n_in, node.width
        ntk = node.parameterization == "ntk"
        self.w_mult = node.W_std / np.sqrt(n_in) if ntk else 1.0
        self.w_index = len(specs)
        specs.append(ParamSpec((n_in, node.width), 1.0 if ntk else node.W_std / np.sqrt(n_in),
                               f"{node} W"))
        self.b_index = None
        self.b_mult = 0.0
        if node.b_std is not None:
            self.b_mult = node.b_std if ntk else 1.0
            self.b_index = len(specs)
            specs.append(ParamSpec((node.width,), 1.0 if ntk else node.b_std, f"{node} b"))

    def forward(self, params, h):
        z = self.w_mult * (h @ params[self.w_index])
        if self.b_index is not None:
            z = z + self.b_mult * params[self.b_index][:, None, :]
        return z, h

    def backward(self, params, h, cot, record):
        record(self, h, cot)
        samples, n, columns, width = cot.shape
        # One (n·c, out) @ (out, in) product per sample: a single BLAS call, not n of them.
        flat = np.ascontiguousarray(cot).reshape(samples, n * columns, width)
        back = flat @ np.swapaxes(params[self.w_index], -1, -2)
        return self.w_mult * back.reshape(samples, n, columns, -1)


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
        return cot * self.dphi(h)[:, :, None, :]


class LayerNormLayer:
    """``(h − mean) / √(var + eps)`` over each example's features."""

    def __init__(self, node: LayerNorm):
        self.eps = node.eps

    def forward(self, params, h):
        centred = h - h.mean(axis=-1, keepdims=True)
        scale = np.sqrt(np.mean(centred ** 2, axis=-1, keepdims=True) + self.eps)
        out = centred / scale
        return out, (out, scale)

    def backward(self, params, cache, cot, record):
        out, scale = cache
        y = out[:, :, None, :]
        # d/dh of (h − μ)/σ applied to cot: (cot − mean(cot) − y·mean(cot·y)) / σ.
        return (cot - cot.mean(axis=-1, keepdims=True)
                - y * np.mean(cot * y, axis=-1, keepdims=True)) / scale[:, :, None, :]


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


def _build(node: Node, n_in: int, specs: list[ParamSpec], source: str):
    """(layer, output width) for an AST node fed ``n_in`` features."""
    if isinstance(node, Dense):
        return DenseLayer(node, n_in, specs), node.width
    if isinstance(node, Activation):
        return ActivationLayer(node), n_in
    if isinstance(node, LayerNorm):
        return LayerNormLayer(node), n_in
    if isinstance(node, Identity):
        return IdentityLayer(), n_in
    if isinstance(node, Serial):
        layers = []
        for layer in node.layers:
            built, n_in = _build(layer, n_in, specs, source)
            layers.append(built)
        return SerialLayer(layers), n_in
    if isinstance(node, Repeat):
        return _build(Serial((node.body,) * node.times, span=node.span), n_in, specs, source)
    if isinstance(node, Sum):
        return _build_sum(node, n_in, specs, source)
    raise ArchitectureError(f"the finite network cannot express {type(node).__name__} "
                            "nodes", source=source, span=getattr(node, "span", None))


def _build_sum(node: Sum, n_in: int, specs: list[ParamSpec], source: str):
    built = [_build(branch, n_in, specs, source) for branch in node.branches]
    widths = [w for _, w in built]
    if len(set(widths)) > 1:
        listed = ", ".join(f"branch {i + 1}: {w}" for i, w in enumerate(widths))
        raise ArchitectureError(
            f"the branches of this sum have different widths ({listed}), so their outputs "
            "cannot be added", source=source, span=node.span,
            hint="give every branch the same output width; an Identity branch keeps the "
                 "width of the sum's input (the number of features for raw inputs)")
    return SumLayer([layer for layer, _ in built]), widths[0]


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


class FiniteNetwork:
    """A finite NumPy network of an architecture, for inputs with ``input_dim`` features.

    Parameters are a list of arrays (see ``param_specs``), each with a leading sample axis;
    make them with :meth:`init`. Every method is vectorised over samples and examples.
    """

    def __init__(self, arch: str | Node, input_dim: int, width: int | None = None) -> None:
        if isinstance(input_dim, bool) or not isinstance(input_dim, (int, np.integer)) \
                or input_dim < 1:
            raise InputError(f"input_dim must be a whole number >= 1, got {input_dim!r}")
        ast, self.source = _as_ast(arch)
        self.width = _check_width(width)
        self.ast = with_width(ast, self.width)
        self.arch = str(self.ast)  # the architecture actually built (widths substituted)
        self.input_dim = int(input_dim)
        self.param_specs: list[ParamSpec] = []
        self.root, self.output_dim = _build(self.ast, self.input_dim, self.param_specs,
                                            self.source)
        if not self.param_specs:
            raise ArchitectureError(f"'{self.source}' has no Dense layer, so the network has "
                                    "no parameters and no tangent kernel",
                                    hint="add a readout, e.g. ... > Dense(1)")

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(spec.shape) for spec in self.param_specs))

    # ------------------------------------------------------------------ init and forward

    def init(self, seed: int | np.random.Generator = 0, samples: int = 1) -> list[np.ndarray]:
        """``samples`` independent initialisations, drawn in layer order from the seed."""
        rng = np.random.default_rng(seed)
        return [spec.init_std * rng.standard_normal((samples, *spec.shape))
                for spec in self.param_specs]

    def _inputs(self, x) -> np.ndarray:
        a, _ = check_inputs(x, None)
        if a.shape[1] != self.input_dim:
            raise ShapeError(f"the network was built for {self.input_dim} input features, "
                             f"got {a.shape[1]}")
        return a

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
        return self._forward(params, self._inputs(x))[0]

    # ------------------------------------------------------------------ backward

    def _backprop(self, params, cache, cot) -> list[tuple[DenseLayer, np.ndarray, np.ndarray]]:
        """(Dense layer, its input, its output cotangent) for every Dense, in backward order."""
        pairs = []
        self.root.backward(params, cache, cot, lambda layer, h, c: pairs.append((layer, h, c)))
        return pairs

    def _output_cotangent(self, samples: int, n: int) -> np.ndarray:
        """df_o/df: one cotangent column per output unit, shape (S, n, k, k)."""
        eye = np.eye(self.output_dim)
        return np.broadcast_to(eye, (samples, n, self.output_dim, self.output_dim))

    def jacobian(self, params: list[np.ndarray], x: ArrayLike) -> list[np.ndarray]:
        """∂f/∂θ for every parameter array: shapes (S, n, k, *param shape)."""
        a = self._inputs(x)
        _, cache = self._forward(params, a)
        grads: list[np.ndarray | None] = [None] * len(params)
        for layer, h, cot in self._backprop(params, cache,
                                            self._output_cotangent(len(params[0]), len(a))):
            grads[layer.w_index] = layer.w_mult * np.einsum("sni,snko->snkio", h, cot)
            if layer.b_index is not None:
                grads[layer.b_index] = layer.b_mult * cot
        return grads

    def ntk(self, params: list[np.ndarray], x1: ArrayLike, x2: ArrayLike | None = None) -> np.ndarray:
        """Empirical NTK J(x1) J(x2)ᵀ averaged over output units, shape (S, n1, n2).

        Contracted layer by layer — (w_mult² h hᵀ + b_mult²) ∘ (cot cotᵀ) — which equals
        J Jᵀ without ever forming the (n, #params) Jacobian.
        """
        a, b = check_inputs(x1, x2)
        both = self._inputs(a if b is None else np.concatenate([a, b]))
        _, cache = self._forward(params, both)
        cot = self._output_cotangent(len(params[0]), len(both))
        kernel = 0.0
        for layer, h, c in self._backprop(params, cache, cot):
            flat = np.ascontiguousarray(c).reshape(c.shape[0], c.shape[1], -1)
            tangent = flat @ np.swapaxes(flat, -1, -2) / self.output_dim
            kernel = kernel + (layer.w_mult ** 2 * (h @ np.swapaxes(h, -1, -2))
                               + layer.b_mult ** 2) * tangent
        return kernel if b is None else kernel[:, :len(a), len(a):]

    # ------------------------------------------------------------------ training

    def loss_and_grad(self, params: list[np.ndarray], x: ArrayLike, y: ArrayLike
                      ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(loss per sample (S,), gradients, outputs) for ½·mean over N·k of (f − y)²."""
        a = self._inputs(x)
        out, cache = self._forward(params, a)
        residual = out - as_real_array(y, "y")
        loss = 0.5 * np.mean(residual ** 2, axis=(1, 2))
        cot = (residual / residual[0].size)[:, :, None, :]  # one cotangent column
        grads: list[np.ndarray | None] = [None] * len(params)
        for layer, h, c in self._backprop(params, cache, cot):
            # Σ_n,c h[n] c[n, c] = Σ_n h[n] (Σ_c c[n, c]): one matrix product.
            grads[layer.w_index] = layer.w_mult * (np.swapaxes(h, -1, -2) @ c.sum(axis=2))
            if layer.b_index is not None:
                grads[layer.b_index] = layer.b_mult * c.sum(axis=(1, 2))
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
        for layer, h, c in self._backprop(params, cache, cot):
            summed = c.sum(axis=2)  # (S, n, out)
            for s in range(len(h)):
                _add_outer(params[layer.w_index][s], -learning_rate * layer.w_mult, h[s],
                           summed[s])
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
        body.source, body.width, body.input_dim = self.source, None, self.input_dim
        body.ast = Serial(layers[:-1]) if len(layers) > 1 else Identity()
        body.arch = str(body.ast)
        body.param_specs = []
        body.root, n_in = _build(body.ast, self.input_dim, body.param_specs, self.source)
        return body, DenseLayer(layers[-1], n_in, [])


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
        x1, x2: (n1, d) and (n2, d) inputs; x2=None means x1 against itself.
        width: width of every hidden Dense (output Dense layers keep theirs); None keeps the
            widths written in the string.
        seed: seed of the initialisation.
    """
    a, b = check_inputs(x1, x2)
    net = FiniteNetwork(arch, a.shape[1], width)
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
    a, b = check_inputs(x1, x2)
    samples = _check_samples(samples)
    net = FiniteNetwork(arch, a.shape[1], width)
    both = a if b is None else np.concatenate([a, b])
    split = net.readout() if exact_readout else None
    body = split[0] if split else net
    per_sample = sum(int(np.prod(s.shape)) for s in body.param_specs) or 1
    rngs = np.random.SeedSequence(seed).spawn(len(_chunks(samples, per_sample)))
    total = np.zeros((len(both), len(both)))
    for size, child in zip(_chunks(samples, per_sample), rngs):
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
