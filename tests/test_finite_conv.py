"""Finite convolutional networks (Conv, AvgPool, SumPool, the global pools, Flatten, Dense on
positions): the forward pass against plain loops over output positions, backpropagation
against finite differences, the structured empirical NTK against J Jᵀ, and convergence to
neural-tangents' analytic CNN-GP and CNTK kernels (tests/reference/nt_cnn_kernels.json) at
about width^(-1/2) — with deliberately wrong architectures that must fail the same check."""
from __future__ import annotations

from math import prod

import numpy as np
import pytest
from conftest import load_reference

import ntkdsl
from ntkdsl import finite
from ntkdsl.ast import input_axes
from ntkdsl.errors import ArchitectureError, InputError, ShapeError
from ntkdsl.evaluation import memory
from ntkdsl.finite import FiniteNetwork, empirical_ntk, monte_carlo_nngp, with_width

CASES = load_reference("nt_cnn_kernels.json")["cases"]

# Tiny networks exercising every spatial construct: both paddings with zeros and the
# circular one, strides, even filters, 1-D and 2-D, pools, a residual sum, LayerNorm and
# Dense on positions, both parameterisations, bias or none, several outputs.
SMALL_ARCHS = {
    "same flatten": ("Conv(3, (3, 3), padding='SAME', W_std=1.5, b_std=0.1) > Relu > Flatten"
                     " > Dense(2)", (5, 4, 2)),
    "circular strided, pools, standard": (
        "Conv(3, (2, 3), strides=(2, 1), padding='CIRCULAR', b_std=0.2, "
        "parameterization='standard') > Erf > AvgPool((2, 2), padding='SAME') > "
        "Conv(2, (2, 2)) > Tanh > GlobalAvgPool > Dense(1, b_std=0.1)", (5, 4, 2)),
    "1-D residual, layer norm, dense on positions": (
        "Conv(3, (3,), padding='SAME') > (Relu > Conv(3, (3,), padding='SAME') + Identity) > "
        "LayerNorm > Dense(4) > Sin > SumPool((2,), strides=(2,), padding='SAME') > Flatten "
        "> Dense(1)", (7, 2)),
    "valid, global sum": ("Conv(2, (2, 2), strides=(1, 2), W_std=0.8) > Gelu > GlobalSumPool"
                          " > Dense(3, W_std=0.5)", (4, 5, 1)),
}


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _slope(widths, errors):
    return np.polyfit(np.log(widths), np.log(errors), 1)[0]


def _images(shape, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape))


# ----------------------------------------------------------------------------- forward

def _xla_padding(length, size, stride, padding):
    """(outputs, before, after) of XLA's padding rules, written out from their definition."""
    if padding == "VALID":
        return (length - size) // stride + 1, 0, 0
    outputs = -(-length // stride)
    total = max((outputs - 1) * stride + size - length, 0)
    return outputs, total // 2, total - total // 2


def _padded(x, window, strides, padding):
    """x (n, *spatial, C) padded as XLA pads it (zeros, or wrapped around), and the outputs."""
    geometry = [_xla_padding(length, size, stride, padding)
                for length, size, stride in zip(x.shape[1:-1], window, strides)]
    widths = [(0, 0)] + [(before, after) for _, before, after in geometry] + [(0, 0)]
    mode = "wrap" if padding == "CIRCULAR" else "constant"
    return np.pad(x, widths, mode=mode), [outputs for outputs, _, _ in geometry]


def _loop_conv(x, weights, bias, strides, padding, w_mult, b_mult):
    """A convolution written as a loop over output positions: each output is the window of
    the padded input contracted with the (*filter, in, out) weights."""
    window = weights.shape[:-2]
    xp, outputs = _padded(x, window, strides, padding)
    out = np.empty((len(x), *outputs, weights.shape[-1]))
    for position in np.ndindex(*outputs):
        corner = [i * s for i, s in zip(position, strides)]
        patch = xp[(slice(None), *(slice(c, c + f) for c, f in zip(corner, window)))]
        out[(slice(None), *position)] = w_mult * np.tensordot(patch, weights,
                                                              axes=len(window) + 1)
    return out + b_mult * bias


def _loop_pool(x, window, strides, padding, average):
    xp, outputs = _padded(x, window, strides, padding)
    out = np.empty((len(x), *outputs, x.shape[-1]))
    for position in np.ndindex(*outputs):
        corner = [i * s for i, s in zip(position, strides)]
        patch = xp[(slice(None), *(slice(c, c + f) for c, f in zip(corner, window)))]
        out[(slice(None), *position)] = patch.sum(axis=tuple(range(1, len(window) + 1)))
    return out / prod(window) if average else out


CONVS = [
    ((3, 3), None, "SAME", (6, 5, 2)),
    ((3, 3), None, "CIRCULAR", (6, 5, 2)),
    ((3, 2), None, "VALID", (6, 5, 2)),
    ((2, 2), (2, 2), "SAME", (5, 5, 3)),
    ((4, 3), (3, 2), "CIRCULAR", (7, 5, 1)),
    ((2, 3), (1, 2), "VALID", (4, 7, 2)),
    ((4,), None, "SAME", (9, 2)),
    ((3,), (2,), "CIRCULAR", (8, 3)),
    ((5,), (3,), "VALID", (11, 2)),
    ((2, 2, 2), (1, 2, 1), "SAME", (3, 4, 3, 2)),
]


def _window_args(window, strides, padding):
    """The arguments as written in the language: a Python tuple prints as one, (3,) too."""
    return f"{window}{'' if strides is None else f', strides={strides}'}, padding='{padding}'"


def _forward(layer, params, x):
    return layer.forward(params, np.broadcast_to(x, (1, *x.shape)))[0][0]


@pytest.mark.parametrize("window, strides, padding, shape", CONVS)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_conv_forward_matches_a_loop_over_output_positions(window, strides, padding, shape,
                                                           parameterization):
    x = _images(shape)
    net = FiniteNetwork(f"Conv(4, {_window_args(window, strides, padding)}, W_std=1.3, "
                        f"b_std=0.4, parameterization='{parameterization}') > Flatten > Dense(1)",
                        shape)
    params = net.init(3)
    weights, bias = params[0][0], params[1][0]
    assert weights.shape == (*window, shape[-1], 4)
    ntk = parameterization == "ntk"
    fan_in = prod(window) * shape[-1]
    expected = _loop_conv(x, weights, bias, strides or (1,) * len(window), padding,
                          1.3 / np.sqrt(fan_in) if ntk else 1.0, 0.4 if ntk else 1.0)
    np.testing.assert_allclose(_forward(net.root.layers[0], params, x), expected, rtol=1e-12,
                               atol=1e-12)


POOLS = [
    ("AvgPool", (2, 2), None, "VALID", (5, 4, 2)),
    ("AvgPool", (3, 2), (2, 1), "SAME", (5, 4, 2)),
    ("SumPool", (2, 3), (1, 2), "CIRCULAR", (4, 5, 3)),
    ("SumPool", (2, 2), (1, 1), "SAME", (4, 4, 2)),
    ("AvgPool", (3,), (2,), "CIRCULAR", (7, 2)),
]


@pytest.mark.parametrize("name, window, strides, padding, shape", POOLS)
def test_pools_flatten_and_positionwise_dense_match_loops(name, window, strides, padding, shape):
    pool = f"{name}({_window_args(window, strides, padding)})"
    x = _images(shape)
    params = FiniteNetwork(f"Dense(3, b_std=0.2) > {pool} > Flatten > Dense(1)", shape).init(5)
    w, b = params[0][0], params[1][0]
    dense = 1 / np.sqrt(shape[-1]) * x @ w + 0.2 * b  # the same W at every position
    pooled = _loop_pool(dense, window, strides or (1,) * len(window), padding,
                        name == "AvgPool")
    flat = FiniteNetwork(f"Dense(3, b_std=0.2) > {pool} > Flatten", shape).root
    np.testing.assert_allclose(_forward(flat, params[:2], x), pooled.reshape(len(x), -1),
                               rtol=1e-12, atol=1e-13)
    for reduce, scale in (("Avg", 1 / prod(pooled.shape[1:-1])), ("Sum", 1.0)):
        top = FiniteNetwork(f"Dense(3, b_std=0.2) > {pool} > Global{reduce}Pool", shape).root
        np.testing.assert_allclose(_forward(top, params[:2], x),
                                   scale * pooled.sum(axis=tuple(range(1, len(shape)))),
                                   rtol=1e-12)


# ----------------------------------------------------------------------------- backprop

@pytest.mark.parametrize("name", SMALL_ARCHS)
def test_conv_jacobian_matches_central_differences(name):
    arch, shape = SMALL_ARCHS[name]
    x = _images(shape)
    net = FiniteNetwork(arch, shape)
    params = net.init(1, samples=2)
    jacobian = net.jacobian(params, x)
    h = 1e-6
    for i, array in enumerate(params):
        for index in np.ndindex(array.shape):
            plus, minus = [p.copy() for p in params], [p.copy() for p in params]
            plus[i][index] += h
            minus[i][index] -= h
            numeric = (net.apply(plus, x) - net.apply(minus, x))[index[0]] / (2 * h)
            analytic = jacobian[i][(index[0], slice(None), slice(None)) + index[1:]]
            np.testing.assert_allclose(analytic, numeric, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name", SMALL_ARCHS)
def test_structured_conv_ntk_equals_explicit_jacobian_product(name, monkeypatch):
    arch, shape = SMALL_ARCHS[name]
    x1, x2 = _images(shape, 4), _images(shape, 3, seed=1)
    net = FiniteNetwork(arch, shape)
    params = net.init(2, samples=2)
    flat = [np.concatenate([j.reshape(*j.shape[:3], -1) for j in net.jacobian(params, x)], -1)
            for x in (x1, x2)]
    explicit = np.einsum("snkp,smkp->snm", *flat) / net.output_dim
    np.testing.assert_allclose(net.ntk(params, x1, x2), explicit, rtol=1e-12, atol=1e-13)
    # Position pairs contracted in blocks of one example pair: the same numbers.
    monkeypatch.setattr(finite, "_CHUNK_FLOATS", 1)
    np.testing.assert_allclose(net.ntk(params, x1, x2), explicit, rtol=1e-12, atol=1e-13)
    self_kernel = net.ntk(params, x1)
    np.testing.assert_allclose(self_kernel, np.swapaxes(self_kernel, 1, 2), rtol=1e-13)


def test_conv_loss_gradient_and_training_steps():
    arch, shape = SMALL_ARCHS["circular strided, pools, standard"]
    x, y = _images(shape, 5), np.random.default_rng(3).standard_normal((5, 1))
    net = FiniteNetwork(arch, shape)
    params = net.init(4)
    _, grads, _ = net.loss_and_grad(params, x, y)
    for i, index in [(0, (0, 1, 2, 0, 1)), (1, (0, 2)), (2, (0, 1, 0, 2, 1)), (4, (0, 0))]:
        plus, minus = [p.copy() for p in params], [p.copy() for p in params]
        plus[i][index] += 1e-6
        minus[i][index] -= 1e-6
        numeric = (net.loss_and_grad(plus, x, y)[0] - net.loss_and_grad(minus, x, y)[0]) / 2e-6
        assert grads[i][index] == pytest.approx(numeric[0], rel=1e-6, abs=1e-10)
    manual = [p.copy() for p in params]
    for _ in range(3):
        for p, g in zip(manual, net.loss_and_grad(manual, x, y)[1]):
            p -= 0.5 * g
    for a, b in zip(net.train(params, x, y, 0.5, 3), manual):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_conv_init_follows_the_parameterization():
    for parameterization, std in (("ntk", 1.0), ("standard", 1.7 / np.sqrt(9 * 3))):
        net = FiniteNetwork(f"Conv(400, (3, 3), W_std=1.7, parameterization="
                            f"'{parameterization}') > Flatten > Dense(1)", (5, 5, 3))
        weights = net.init(0)[0]
        assert weights.shape == (1, 3, 3, 3, 400)
        assert abs(weights.std() / std - 1) < 5 / np.sqrt(2 * weights.size)


# ----------------------------------------------------------------------------- convergence

def _reference(index):
    """(arch, the inputs x1 then x2, {kind: (self block, cross block)}) of a reference case
    pair: the x1,x2 case and the x1-alone case with the same x1."""
    cross, alone = CASES[index], CASES[index + 1]
    assert cross["x1"] == alone["x1"] and alone["x2"] is None
    x = np.concatenate([np.array(cross["x1"]), np.array(cross["x2"])])
    return cross["arch"], x, {kind: (np.array(alone[kind]), np.array(cross[kind]))
                              for kind in ("nngp", "ntk")}


def _error(kernel, blocks):
    """Relative Frobenius error over the self block (x1, x1) and the cross block (x1, x2)."""
    n = len(blocks[0])
    got = (kernel[:n, :n], kernel[:n, n:])
    return np.sqrt(sum(np.sum((g - r) ** 2) for g, r in zip(got, blocks))
                   / sum(np.sum(r ** 2) for r in blocks))


def _width_errors(arch, x, refs, widths, seeds=3, samples=8):
    """RMS over seeds of the Monte-Carlo NNGP's and the empirical NTK's errors per width;
    ``refs(width)`` gives the reference blocks at that width."""
    mc, emp = [], []
    for width in widths:
        ref = refs(width)
        mc.append(np.sqrt(np.mean([_error(monte_carlo_nngp(arch, x, width=width,
                                                           samples=samples, seed=s),
                                          ref["nngp"]) ** 2 for s in range(seeds)])))
        emp.append(np.sqrt(np.mean([_error(empirical_ntk(arch, x, width=width, seed=s),
                                           ref["ntk"]) ** 2 for s in range(seeds)])))
    return np.array(mc), np.array(emp)


def _converges(widths, errors, final_bound):
    """The check the right and the wrong architectures are both put through."""
    return -0.9 < _slope(widths, errors) < -0.25 and errors[-1] < final_bound


ONE_LAYER = (16, 64, 256, 1024, 4096)
TWO_LAYERS = (8, 32, 128, 512)
# (reference case, widths, final bound for the NNGP, for the NTK): one case per construct.
CONVERGENCE = {
    "SAME, Flatten": (0, ONE_LAYER, 0.02, 0.03),
    "VALID, Erf": (2, ONE_LAYER, 0.02, 0.03),
    "CIRCULAR, GlobalSumPool": (8, ONE_LAYER, 0.02, 0.04),
    "strides": (10, ONE_LAYER, 0.03, 0.04),
    "SumPool SAME": (14, ONE_LAYER, 0.02, 0.03),
    "1-D, GlobalAvgPool": (16, ONE_LAYER, 0.03, 0.03),
    "AvgPool between two Convs": (12, TWO_LAYERS, 0.12, 0.12),
    "1-D, two Convs": (18, TWO_LAYERS, 0.06, 0.12),
    "residual": (22, TWO_LAYERS, 0.06, 0.12),
}


@pytest.mark.parametrize("name", CONVERGENCE)
def test_finite_conv_kernels_converge_to_the_reference_at_the_expected_rate(name):
    index, widths, nngp_bound, ntk_bound = CONVERGENCE[name]
    arch, x, ref = _reference(index)
    mc, emp = _width_errors(arch, x, lambda width: ref, widths)
    assert _converges(widths, mc, nngp_bound), (mc, _slope(widths, mc))
    assert _converges(widths, emp, ntk_bound), (emp, _slope(widths, emp))


@pytest.mark.parametrize("index, wrong", [
    (0, ("padding='SAME'", "padding='CIRCULAR'")),  # the borders wrapped instead of zero
    (10, ("strides=(2, 2), ", "")),  # stride 1: other windows, more positions
], ids=["padding", "strides"])
def test_a_wrong_architecture_fails_the_same_convergence_check(index, wrong):
    arch, x, ref = _reference(index)
    bad = arch.replace(*wrong)
    assert bad != arch
    mc, emp = _width_errors(bad, x, lambda width: ref, ONE_LAYER, seeds=1)
    assert not _converges(ONE_LAYER, mc, 0.03) and not _converges(ONE_LAYER, emp, 0.04)
    assert mc[-1] > 0.05 and emp[-1] > 0.05  # an error that stays, not noise


def test_standard_parameterization_converges_to_the_width_dependent_kernel():
    """In standard parameterisation the readout's weights add n_in·K to the NTK, and n_in =
    positions × channels grows with the width: Θ(w) = Θ(8) + (w − 8)·16·K for the reference
    case's 4×4 images (its readout has W_std=1 and no bias, so K is the case's NNGP)."""
    arch, x, ref = _reference(20)
    assert "Flatten > Dense(1, parameterization='standard')" in arch
    nngp = ref["nngp"]

    def at_width(width):
        return {"nngp": nngp, "ntk": tuple(t + (width - 8) * 16 * k
                                           for t, k in zip(ref["ntk"], nngp))}

    mc, emp = _width_errors(arch, x, at_width, ONE_LAYER)
    assert _converges(ONE_LAYER, mc, 0.02) and _converges(ONE_LAYER, emp, 0.03)
    # Against the fixed width-8 kernel the NTK does not converge: it grows with the width.
    _, fixed = _width_errors(arch, x, lambda width: ref, ONE_LAYER[-2:], seeds=1, samples=2)
    assert fixed[-1] > 10


# ----------------------------------------------------------------------------- widths

def test_with_width_sets_the_channels_of_hidden_convs():
    def rewritten(arch):
        return str(with_width(ntkdsl.parse(arch), 7))

    assert rewritten("Conv(8, (3, 3)) > Relu > Flatten > Dense(1)") == \
        "Conv(7, (3, 3)) > Relu > Flatten > Dense(1)"
    assert rewritten("Conv(8, (3,)) > Relu > Conv(2, (3,)) > GlobalAvgPool") == \
        "Conv(7, (3,)) > Relu > Conv(2, (3,)) > GlobalAvgPool"
    assert rewritten("Conv(8, (3, 3), padding='SAME') > (Relu > Conv(8, (3, 3)) + Identity) "
                     "> Flatten > Dense(512) > Relu > Dense(1)") == \
        ("Conv(7, (3, 3), padding='SAME') > (Relu > Conv(7, (3, 3)) + Identity) > Flatten > "
         "Dense(7) > Relu > Dense(1)")


def test_input_rank_of_architectures():
    def rank(arch):
        return input_axes(ntkdsl.parse(arch), arch)[0]

    assert rank("Dense(8) > Relu > Dense(1)") == 0
    assert rank("Conv(8, (3, 3)) > Relu > AvgPool((2, 2)) > Flatten > Dense(1)") == 2
    assert rank("Conv(8, (3,)) > GlobalAvgPool > Dense(1)") == 1
    assert rank("Dense(8) > Relu > GlobalAvgPool > Dense(1)") is None
    with pytest.raises(ArchitectureError, match=r"AvgPool\(\(2,\)\) has 1 spatial axis but "
                                                r"Conv\(8, \(3, 3\)\) has 2") as info:
        rank("Conv(8, (3, 3)) > Relu > AvgPool((2,)) > Flatten > Dense(1)")
    assert "^^^^^^^^^^^^" in str(info.value)


# ----------------------------------------------------------------------------- bad input

ARCH = "Conv(4, (3, 3), padding='SAME') > Relu > Flatten > Dense(1)"


def _message(error, *parts):
    text = str(error.value)
    for part in parts:
        assert part in text, (part, text)


def test_a_conv_after_flatten_or_a_global_pool_is_refused_with_a_caret():
    for arch, layer in (("Conv(4, (3, 3)) > Flatten > Conv(4, (2, 2)) > Flatten > Dense(1)",
                         "Conv(4, (2, 2))"),
                        ("Conv(4, (3, 3)) > GlobalAvgPool > AvgPool((2, 2)) > Dense(1)",
                         "AvgPool((2, 2))"),
                        ("Conv(4, (3, 3)) > Flatten > GlobalSumPool > Dense(1)",
                         "GlobalSumPool")):
        with pytest.raises(ArchitectureError, match="which leaves no spatial axes") as info:
            empirical_ntk(arch, _images((5, 5, 1)), width=4)
        _message(info, "^" * len(layer), "convolutions and pooling come before Flatten")
        assert info.value.column == arch.index(layer) + 1


def test_a_filter_larger_than_a_valid_input_is_refused_with_a_caret():
    arch = "Conv(4, (3, 3)) > Relu > Conv(4, (4, 2)) > Flatten > Dense(1)"
    with pytest.raises(ShapeError, match=r"window of 4 x 2 positions with padding 'VALID', "
                                         r"larger than its input here, 3 x 3") as info:
        FiniteNetwork(arch, (5, 5, 2))
    assert info.value.column == arch.index("Conv(4, (4, 2))") + 1
    _message(info, "^" * len("Conv(4, (4, 2))"), "padding='SAME'")
    FiniteNetwork(arch.replace("(4, 2))", "(4, 2), padding='SAME')"), (5, 5, 2))  # fine


def test_inputs_of_the_wrong_rank_for_the_architecture_are_shape_errors():
    # The kernels' own check (ntkdsl.evaluation.check_input_rank), caret under the Conv.
    x = _images((9, 3))
    with pytest.raises(ShapeError, match=rf"x1 has shape \({len(x)}, 9, 3\) \(3-D\) but this "
                                         r"network, whose filters have 2 spatial axes, takes "
                                         r"4-D channels-last images \(n, H, W, C\)") as info:
        empirical_ntk(ARCH, x)
    _message(info, "^" * len("Conv(4, (3, 3), padding='SAME')"))
    assert info.value.column == 1
    with pytest.raises(ShapeError, match=r"\(2-D\) but this network") as info:
        empirical_ntk(ARCH, _images((12,)))
    _message(info, "x.reshape(n, H, W, C)")
    with pytest.raises(ShapeError, match=r"x1 has shape \(\d+, 4, 4, 1\), but this network is "
                                         r"fully connected") as info:
        monte_carlo_nngp("Dense(8) > Relu > Dense(1)", _images((4, 4, 1)))
    _message(info, "x.reshape(len(x), -1)")
    with pytest.raises(ShapeError, match=r"a batch of input_shape \(5, 5\) has shape "
                                         r"\(n, 5, 5\) \(3-D\)"):
        FiniteNetwork(ARCH, (5, 5))


def test_an_output_with_spatial_axes_and_mismatched_examples_are_refused():
    with pytest.raises(ArchitectureError, match=r"still has spatial axes \(shape \(5, 5, 1\)"):
        FiniteNetwork("Conv(4, (3, 3), padding='SAME') > Relu > Conv(1, (3, 3), "
                      "padding='SAME')", (5, 5, 2))
    net = FiniteNetwork(ARCH, (5, 5, 2))
    with pytest.raises(ShapeError, match=r"built for examples of shape \(5, 5, 2\) \(channels "
                                         r"last\), got x of shape \(3, 5, 5, 3\)"):
        net.apply(net.init(), _images((5, 5, 3)))
    with pytest.raises(ShapeError, match=r"x1 has examples of shape \(5, 5, 2\) but x2 has "
                                         r"\(4, 5, 2\)"):
        empirical_ntk(ARCH, _images((5, 5, 2)), _images((4, 5, 2)))
    with pytest.raises(ArchitectureError, match="different output shapes") as info:
        FiniteNetwork("Conv(4, (3, 3)) > (Relu > Conv(4, (3, 3), padding='SAME') + "
                      "Conv(4, (3, 3))) > Flatten > Dense(1)", (6, 6, 1))
    _message(info, "branch 1: (4, 4, 4), branch 2: (2, 2, 4)")
    with pytest.raises(InputError, match="input_shape must be"):
        FiniteNetwork(ARCH, (5, 0, 2))
    with pytest.raises(InputError, match=r"non-finite value nan at index \(1, 2, 0, 1\)"):
        bad = _images((5, 5, 2))
        bad[1, 2, 0, 1] = np.nan
        empirical_ntk(ARCH, bad)


def test_conv_kernels_too_large_for_memory_are_refused_before_work(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 1_000_000)
    with pytest.raises(InputError, match=r"the empirical NTK of .* needs .* of memory"):
        empirical_ntk(ARCH, _images((16, 16, 3), n=20), width=64)
    with pytest.raises(InputError, match=r"the Monte-Carlo NNGP of .* needs .* of memory"):
        monte_carlo_nngp(ARCH, _images((16, 16, 3), n=20), width=64)
    # Two 64x64 images: activations of a few hundred kB, but one pair's 4096² position
    # pairs take 400 MB in the NTK's contraction.
    monkeypatch.setattr(memory, "available_memory", lambda: 100_000_000)
    with pytest.raises(InputError, match=r"the empirical NTK of .* needs 0\.4\d GB"):
        empirical_ntk(ARCH, _images((64, 64, 1), n=2), width=4)
    monte_carlo_nngp(ARCH, _images((64, 64, 1), n=2), width=4)  # no position pairs: fits
