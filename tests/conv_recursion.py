"""An independent computation of convolutional NNGP and NTK kernels, for the tests: the plain
recursion of DESIGN §2 for one pair of images at a time, every covariance between every two
positions, each window summed by explicit loops over its offsets (neural-tangents' padding:
'SAME' puts the smaller half of the padding first and pads with zeros, 'CIRCULAR' wraps).

It shares nothing with ntkdsl but the parsed architecture (the AST): no derivation, no
generated code, no stencil helper. Duals are written out here (ReLU, Erf, Sign) or computed
by two-dimensional composite Gauss-Legendre quadrature (any other φ, as a NumPy function).
Only tiny inputs: it costs positions² × window² per layer and pair.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from ntkdsl.ast import (
    Activation,
    Conv,
    Dense,
    Flatten,
    GlobalPool,
    Identity,
    LayerNorm,
    Pool,
    Repeat,
    Serial,
    Sum,
)
from ntkdsl.parser import parse


def _window_inputs(n: int, window: int, stride: int, padding: str) -> list[list[int | None]]:
    """For each output position, the input position under each window offset (None where
    the window hangs over a zero padding)."""
    if padding == "VALID":
        outputs, low = (n - window) // stride + 1, 0
    else:
        outputs = -(-n // stride)
        low = max((outputs - 1) * stride + window - n, 0) // 2
    rows = []
    for j in range(outputs):
        row = []
        for offset in range(window):
            i = j * stride + offset - low
            row.append(i % n if padding == "CIRCULAR" else (i if 0 <= i < n else None))
        rows.append(row)
    return rows


def _positions(shape):
    return list(itertools.product(*(range(n) for n in shape)))


def conv_map(cov: dict, shape1, shape2, window, strides, padding) -> tuple[dict, tuple, tuple]:
    """mean over the filter offsets of cov[p + offset, p' + offset] (the same offset at both)."""
    rows1 = [_window_inputs(n, w, s, padding) for n, w, s in zip(shape1, window, strides)]
    rows2 = [_window_inputs(n, w, s, padding) for n, w, s in zip(shape2, window, strides)]
    out1, out2 = tuple(map(len, rows1)), tuple(map(len, rows2))
    size = math.prod(window)
    new = {}
    for p in _positions(out1):
        for q in _positions(out2):
            total = 0.0
            for offset in _positions(window):
                i = tuple(rows1[a][p[a]][offset[a]] for a in range(len(p)))
                j = tuple(rows2[a][q[a]][offset[a]] for a in range(len(q)))
                if None not in i and None not in j:
                    total += cov[i, j]
            new[p, q] = total / size
    return new, out1, out2


def pool_map(cov: dict, shape1, shape2, window, strides, padding, average) -> tuple[dict, tuple, tuple]:
    """the sum (or mean) over a window at each position of a pair, independently."""
    rows1 = [_window_inputs(n, w, s, padding) for n, w, s in zip(shape1, window, strides)]
    rows2 = [_window_inputs(n, w, s, padding) for n, w, s in zip(shape2, window, strides)]
    out1, out2 = tuple(map(len, rows1)), tuple(map(len, rows2))
    scale = math.prod(window) ** 2 if average else 1
    new = {}
    for p in _positions(out1):
        for q in _positions(out2):
            total = 0.0
            for o1 in _positions(window):
                i = tuple(rows1[a][p[a]][o1[a]] for a in range(len(p)))
                if None in i:
                    continue
                for o2 in _positions(window):
                    j = tuple(rows2[a][q[a]][o2[a]] for a in range(len(q)))
                    if None not in j:
                        total += cov[i, j]
            new[p, q] = total / scale
    return new, out1, out2


# ----------------------------------------------------------------------- duals --

def relu_dual(q1, q2, k):
    norm = math.sqrt(q1 * q2)
    c = max(-1.0, min(1.0, k / norm)) if norm > 0 else 0.0
    theta = math.acos(c)
    return (norm * (math.sin(theta) + (math.pi - theta) * c) / (2 * math.pi),
            (math.pi - theta) / (2 * math.pi))


def erf_dual(q1, q2, k):
    a, b = 1 + 2 * q1, 1 + 2 * q2
    return (2 / math.pi * math.asin(max(-1.0, min(1.0, 2 * k / math.sqrt(a * b)))),
            4 / math.pi / math.sqrt(max(a * b - 4 * k * k, 0.0)))


def sign_dual(q1, q2, k):
    norm = math.sqrt(q1 * q2)
    return 2 / math.pi * math.asin(max(-1.0, min(1.0, k / norm))), 0.0


def _composite_rule(panels: int = 32, points: int = 10, reach: float = 10.0):
    """Composite Gauss-Legendre nodes on [-reach, reach] with standard normal weights."""
    x, w = np.polynomial.legendre.leggauss(points)
    edges = np.linspace(-reach, reach, panels + 1)
    half = np.diff(edges)[:, None] / 2
    nodes = (edges[:-1, None] + half) + half * x
    weights = half * w * np.exp(-nodes ** 2 / 2) / np.sqrt(2 * np.pi)
    return nodes.ravel(), weights.ravel()


_NODES, _WEIGHTS = _composite_rule()


def quadrature_dual(phi, dphi):
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) with (u, v) = (a z1, c z1 + b z2) the Cholesky factor of
    the covariance, by a composite Gauss-Legendre rule in (z1, z2) (320 x 320 nodes; for
    smooth φ and variances of a few units, within 1e-13)."""
    def dual(q1, q2, k):
        a = math.sqrt(q1)
        c = k / a if a > 0 else 0.0
        b = math.sqrt(max(q2 - c * c, 0.0))
        u = a * _NODES
        v = c * _NODES[:, None] + b * _NODES[None, :]
        w = _WEIGHTS[:, None] * _WEIGHTS[None, :]
        return (float((w * phi(u)[:, None] * phi(v)).sum()),
                float((w * dphi(u)[:, None] * dphi(v)).sum()))
    return dual


DUALS = {"Relu": relu_dual, "Erf": erf_dual, "Sign": sign_dual,
         "Tanh": quadrature_dual(np.tanh, lambda x: 1 / np.cosh(x) ** 2),
         "Exp": quadrature_dual(np.exp, np.exp),
         "Cos": quadrature_dual(np.cos, lambda x: -np.sin(x))}


# ------------------------------------------------------------------ the recursion --

@dataclass(frozen=True)
class PairState:
    """Covariances of x with x (s11), x' with x' (s22), x with x' (k) and the NTKs, as dicts
    over position pairs (or floats once the positions are gone), with the spatial shapes."""

    s11: object
    s22: object
    k: object
    t11: object
    t22: object
    t: object
    shape1: tuple | None
    shape2: tuple | None
    width: float


_KEYS = ("s11", "s22", "k", "t11", "t22", "t")
_SHAPES = {"s11": (1, 1), "s22": (2, 2), "k": (1, 2), "t11": (1, 1), "t22": (2, 2), "t": (1, 2)}


def _shapes(state: PairState, key: str) -> tuple:
    first, second = _SHAPES[key]
    return (state.shape1 if first == 1 else state.shape2,
            state.shape1 if second == 1 else state.shape2)


def _spatial(state: PairState) -> bool:
    return state.shape1 is not None


def _map(state: PairState, f) -> dict:
    """f(value, key) for every covariance, by name."""
    return {key: f(getattr(state, key), key) for key in _KEYS}


def _layer(node, state: PairState) -> PairState:
    if isinstance(node, (Serial, Repeat)):
        layers = node.layers if isinstance(node, Serial) else (node.body,) * node.times
        for layer in layers:
            state = _layer(layer, state)
        return state
    if isinstance(node, Sum):
        outs = [_layer(branch, state) for branch in node.branches]
        return replace(outs[0], **{key: _added([getattr(o, key) for o in outs]) for key in _KEYS})
    if isinstance(node, Identity):
        return state
    if isinstance(node, (Dense, Conv)):
        return _weights(node, state)
    if isinstance(node, Pool):
        new, shapes = {}, {}
        for key in _KEYS:
            first, second = _shapes(state, key)
            new[key], shapes[1], shapes[2] = pool_map(getattr(state, key), first, second,
                                                      node.window_shape, node.strides,
                                                      node.padding, node.reduce == "avg")
        return replace(state, **new, shape1=shapes[1], shape2=shapes[2])
    if isinstance(node, GlobalPool):
        new = _map(state, lambda cov, key: (np.mean if node.reduce == "avg" else np.sum)(
            list(cov.values())))
        return replace(state, **new, shape1=None, shape2=None)
    if isinstance(node, Flatten):
        count = math.prod(state.shape1)
        new = _map(state, lambda cov, key: sum(cov[p, p] for p in _positions(state.shape1)) / count)
        return replace(state, **new, shape1=None, shape2=None, width=state.width * count)
    if isinstance(node, (Activation, LayerNorm)):
        return _elementwise(node, state)
    raise TypeError(node)


def _added(values):
    if isinstance(values[0], dict):
        return {key: sum(v[key] for v in values) for key in values[0]}
    return sum(values)


def _weights(node, state: PairState) -> PairState:
    w2 = node.W_std ** 2
    b2 = 0.0 if node.b_std is None else node.b_std ** 2
    bias_ntk = 0.0 if node.b_std is None else 1.0
    if isinstance(node, Conv):
        windowed, shapes = {}, {}
        for key in _KEYS:
            first, second = _shapes(state, key)
            windowed[key], shapes[1], shapes[2] = conv_map(getattr(state, key), first, second,
                                                           node.filter_shape, node.strides,
                                                           node.padding)
        fan_in = state.width * math.prod(node.filter_shape)
        out = replace(state, shape1=shapes[1], shape2=shapes[2], width=node.out_chan)
        width = node.out_chan
    else:
        windowed, fan_in, out, width = _map(state, lambda cov, key: cov), state.width, state, node.width

    def each(f, cov, ntk=None):
        if isinstance(cov, dict):
            return {i: f(cov[i], None if ntk is None else ntk[i]) for i in cov}
        return f(cov, ntk)

    new = {}
    for k, t in (("s11", "t11"), ("s22", "t22"), ("k", "t")):
        new[k] = each(lambda c, _: w2 * c + b2, windowed[k])
        if node.parameterization == "standard":
            new[t] = each(lambda c, n: fan_in * c + w2 * n + bias_ntk, windowed[k], windowed[t])
        else:
            new[t] = each(lambda c, n: w2 * c + b2 + w2 * n, windowed[k], windowed[t])
    return replace(out, **new, width=width)


def _elementwise(node, state: PairState) -> PairState:
    """An activation or LayerNorm at every position pair, from the variances at each of
    the two positions (the same-position entries of s11 and s22)."""
    if isinstance(node, LayerNorm):
        eps = node.eps

        def dual(q1, q2, k):
            scale = math.sqrt((q1 + eps) * (q2 + eps))
            return k / scale, 1 / scale
    else:
        dual = DUALS[node.name]
    new = {}
    for k, t in (("s11", "t11"), ("s22", "t22"), ("k", "t")):
        cov, ntk = getattr(state, k), getattr(state, t)
        var1 = state.s22 if k == "s22" else state.s11  # the variances at the first position
        var2 = state.s11 if k == "s11" else state.s22  # and at the second
        if not _spatial(state):
            g, gd = dual(var1, var2, cov)
            new[k], new[t] = g, ntk * gd
            continue
        new[k], new[t] = {}, {}
        for (p, q), value in cov.items():
            g, gd = dual(var1[p, p], var2[q, q], value)
            new[k][p, q], new[t][p, q] = g, ntk[p, q] * gd
    return replace(state, **new)


def _statistics(a: np.ndarray, b: np.ndarray) -> dict:
    channels = a.shape[-1]
    return {(p, q): float(a[p] @ b[q]) / channels
            for p in _positions(a.shape[:-1]) for q in _positions(b.shape[:-1])}


def pair_kernels(arch: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(NNGP, NTK) of images x and y (each (*spatial, C)) through ``arch``."""
    zero = dict.fromkeys(_statistics(x, x), 0.0)
    state = PairState(_statistics(x, x), _statistics(y, y), _statistics(x, y), zero,
                      dict.fromkeys(_statistics(y, y), 0.0),
                      dict.fromkeys(_statistics(x, y), 0.0), x.shape[:-1], y.shape[:-1],
                      x.shape[-1])
    out = _layer(parse(arch), state)
    return out.k, out.t


def kernels(arch: str, x1: np.ndarray, x2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(NNGP, NTK) matrices of images x1 against x2 (None: x1 itself), pair by pair."""
    x2 = x1 if x2 is None else x2
    out = np.empty((2, len(x1), len(x2)))
    for i, j in itertools.product(range(len(x1)), range(len(x2))):
        out[:, i, j] = pair_kernels(arch, x1[i], x2[j])
    return out[0], out[1]
