"""Finite-width networks: backprop against finite differences, the structured empirical NTK
against J Jᵀ, initialisation against the parameterisation, and convergence to the analytic
kernels at the expected rate — with a deliberately wrong kernel that must fail the check."""
from __future__ import annotations

import numpy as np
import pytest

import ntkdsl
from ntkdsl.errors import ArchitectureError, InputError, NumericalError, ShapeError
from ntkdsl.finite import (
    FiniteNetwork,
    activation_functions,
    empirical_ntk,
    monte_carlo_nngp,
    with_width,
)
from ntkdsl.verify import make_data, verify

RELU = "Dense(512, W_std=1.5, b_std=0.1) > Relu > Dense(1, W_std=1.5, b_std=0.1)"
ERF = "Dense(512, W_std=1.3, b_std=0.2) > Erf > Dense(1, W_std=1.3, b_std=0.2)"
WIDTHS = (64, 256, 1024, 4096)

# Small networks exercising every construct: both parameterisations, with and without
# bias, multi-output, sums, repetition, LayerNorm, an Fn expression, Sign (φ' = 0).
SMALL_ARCHS = [
    "Dense(5, W_std=1.5, b_std=0.1) > Erf > Dense(2, b_std=0.3)",
    ("Dense(5, b_std=0.2, parameterization='standard') > LayerNorm > Gelu > "
     "(Dense(5) > Sin + Identity) > Dense(1, parameterization='standard', b_std=0.0)"),
    "(Dense(4, W_std=1.4, b_std=0.1) > Relu) * 2 > Dense(1)",
    'Dense(4) > Fn("x*tanh(x)") > Dense(3, W_std=0.7) > LeakyRelu(0.1) > Dense(1)',
    "Dense(3) > Sign > Dense(1)",
]


def _inputs(n=4, d=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _slope(widths, errors):
    return np.polyfit(np.log(widths), np.log(errors), 1)[0]


# ----------------------------------------------------------------------------- backprop

@pytest.mark.parametrize("arch", SMALL_ARCHS)
def test_jacobian_matches_central_differences(arch):
    x = _inputs()
    net = FiniteNetwork(arch, 3)
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


@pytest.mark.parametrize("arch", SMALL_ARCHS)
def test_structured_ntk_equals_explicit_jacobian_product(arch):
    x1, x2 = _inputs(4), _inputs(3, seed=1)
    net = FiniteNetwork(arch, 3)
    params = net.init(2, samples=2)
    flat = [np.concatenate([j.reshape(*j.shape[:3], -1) for j in net.jacobian(params, x)], -1)
            for x in (x1, x2)]
    explicit = np.einsum("snkp,smkp->snm", *flat) / net.output_dim
    np.testing.assert_allclose(net.ntk(params, x1, x2), explicit, rtol=1e-12, atol=1e-13)


def test_loss_gradient_matches_central_differences_and_training_steps():
    arch = SMALL_ARCHS[3]
    x, y = _inputs(5), np.random.default_rng(3).standard_normal((5, 1))
    net = FiniteNetwork(arch, 3)
    params = net.init(4)
    _, grads, _ = net.loss_and_grad(params, x, y)
    for i, index in [(0, (0, 1, 2)), (1, (0, 3, 1)), (2, (0, 2, 0))]:
        plus, minus = [p.copy() for p in params], [p.copy() for p in params]
        plus[i][index] += 1e-6
        minus[i][index] -= 1e-6
        numeric = (net.loss_and_grad(plus, x, y)[0] - net.loss_and_grad(minus, x, y)[0]) / 2e-6
        assert grads[i][index] == pytest.approx(numeric[0], rel=1e-6, abs=1e-10)
    # train() fuses the update into BLAS; it must equal plain steps θ ← θ − η ∇L.
    manual = [p.copy() for p in params]
    for _ in range(3):
        for p, g in zip(manual, net.loss_and_grad(manual, x, y)[1]):
            p -= 0.5 * g
    for a, b in zip(net.train(params, x, y, 0.5, 3), manual):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_sign_and_step_derivatives_are_zero_almost_everywhere():
    sign = ntkdsl.parse("Dense(1) > Sign").layers[1]
    step = ntkdsl.parse("Dense(1) > RectifiedMonomial(0)").layers[1]
    relu = ntkdsl.parse("Dense(1) > Relu").layers[1]
    z = np.array([-2.0, -0.3, 0.7, 3.0])
    for node in (sign, step):
        assert np.all(activation_functions(node)[1](z) == 0)
    np.testing.assert_array_equal(activation_functions(relu)[1](z), [0, 0, 1, 1])


# ----------------------------------------------------------------------------- init, forward

@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_forward_and_init_follow_the_parameterization(parameterization):
    arch = (f"Dense(300, W_std=1.7, b_std=0.4, parameterization='{parameterization}') > Relu"
            f" > Dense(1, W_std=0.9, b_std=0.2, parameterization='{parameterization}')")
    x = _inputs(3, d=50)
    net = FiniteNetwork(arch, 50)
    w1, b1, w2, b2 = (p[0] for p in net.init(7))
    if parameterization == "ntk":  # N(0, 1) parameters, scaled in the forward pass
        expected = 0.9 / np.sqrt(300) * np.maximum(1.7 / np.sqrt(50) * x @ w1 + 0.4 * b1, 0) @ w2 \
            + 0.2 * b2
        stds = (1.0, 1.0, 1.0)
    else:  # scaled parameters, plain affine maps
        expected = np.maximum(x @ w1 + b1, 0) @ w2 + b2
        stds = (1.7 / np.sqrt(50), 0.4, 0.9 / np.sqrt(300))
    np.testing.assert_allclose(net.apply(net.init(7), x)[0], expected, rtol=1e-12)
    for values, std in zip((w1, b1, w2), stds):
        # The sample std of m normals is within 5/sqrt(2m) of the truth (5 sigma).
        assert abs(values.std() / std - 1) < 5 / np.sqrt(2 * values.size)


def test_layer_norm_normalises_each_example_over_features():
    net = FiniteNetwork("Dense(64, b_std=1.0) > LayerNorm > Dense(1)", 3)
    params = net.init(0)
    hidden = FiniteNetwork("Dense(64, b_std=1.0) > LayerNorm", 3)
    out = hidden.apply(params[:2], _inputs())[0]
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), 1, rtol=1e-9)


def test_with_width_replaces_hidden_widths_only():
    def rewritten(arch):
        return str(with_width(ntkdsl.parse(arch), 7))

    assert rewritten("Dense(512) > Relu > Dense(1)") == "Dense(7) > Relu > Dense(1)"
    assert rewritten("(Dense(512) > Relu) * 3") == "(Dense(7) > Relu) * 2 > Dense(512) > Relu"
    assert rewritten("(Dense(5) > Relu) * 1 > Dense(1)") == "(Dense(7) > Relu) * 1 > Dense(1)"
    assert rewritten("(Relu > Dense(5)) * 1") == "(Relu > Dense(5)) * 1"
    assert rewritten("Dense(5) > (Relu > Dense(2) + Dense(2))") == \
        "Dense(7) > (Relu > Dense(2) + Dense(2))"
    assert rewritten("Dense(9) > (Relu > Dense(9) + Identity) > Dense(1)") == \
        "Dense(7) > (Relu > Dense(7) + Identity) > Dense(1)"
    arch = "Dense(512) > Relu > Dense(1)"
    assert with_width(ntkdsl.parse(arch), None) == ntkdsl.parse(arch)


# ----------------------------------------------------------------------------- convergence

def _errors(arch, kernel_arch, widths=WIDTHS):
    """(MC NNGP errors, empirical NTK errors) against the kernels of ``kernel_arch``."""
    x_train, _, x_test, _ = make_data(12, 6, 8, 1, seed=0)
    x = np.concatenate([x_train, x_test])
    nngp, ntk = ntkdsl.compile(kernel_arch).kernels(x)
    mc = [_relative(monte_carlo_nngp(arch, x, width=w, samples=16, seed=1), nngp)
          for w in widths]
    emp = [_relative(empirical_ntk(arch, x, width=w, seed=1), ntk) for w in widths]
    return np.array(mc), np.array(emp)


def _converges(errors, final_bound):
    """The check both the correct and the wrong kernel are put through."""
    return _slope(WIDTHS, errors) < -0.3 and errors[-1] < final_bound


@pytest.mark.parametrize("arch", [RELU, ERF], ids=["relu", "erf"])
def test_finite_kernels_converge_at_the_expected_rate(arch):
    mc, emp = _errors(arch, arch)
    assert -0.8 < _slope(WIDTHS, mc) < -0.3 and -0.8 < _slope(WIDTHS, emp) < -0.3
    assert _converges(mc, 0.03) and _converges(emp, 0.06)
    # A kernel with W_std off by 10% must fail the same check.
    wrong = arch.replace("W_std=1.5", "W_std=1.65").replace("W_std=1.3", "W_std=1.43")
    mc_wrong, emp_wrong = _errors(arch, wrong)
    assert not _converges(mc_wrong, 0.03) and not _converges(emp_wrong, 0.06)
    assert mc_wrong[-1] > 5 * mc[-1] and emp_wrong[-1] > 3 * emp[-1]


def test_standard_parameterization_converges_to_the_width_dependent_kernel():
    arch = ("Dense(512, W_std=1.5, b_std=0.1, parameterization='standard') > Erf > "
            "Dense(1, W_std=1.5, b_std=0.1, parameterization='standard')")
    x = make_data(10, 0, 6, 1, seed=2)[0]
    errors = [_relative(empirical_ntk(arch, x, width=w, seed=0),
                        ntkdsl.compile(str(with_width(ntkdsl.parse(arch), w))).ntk(x))
              for w in (64, 4096)]
    assert errors[1] < 0.05 and errors[1] < errors[0] / 3


def test_monte_carlo_estimators_are_unbiased_for_a_single_dense():
    x = _inputs(5)
    exact = 1.3 ** 2 * x @ x.T / 3 + 0.5 ** 2
    arch = "Dense(1, W_std=1.3, b_std=0.5)"
    # Integrating out the only layer leaves nothing random: exact to rounding.
    np.testing.assert_allclose(monte_carlo_nngp(arch, x, samples=2), exact, rtol=1e-12)
    plain = monte_carlo_nngp(arch, x, samples=20000, seed=3, exact_readout=False)
    assert _relative(plain, exact) < 0.05
    assert _relative(plain, exact) > 1e-3  # it really is a sampled estimate


def test_trained_network_approaches_the_gradient_flow_prediction():
    result = verify(RELU, (64, 4096), samples=4, steps=100)
    small, large = result.rows
    assert large.prediction_gap < 0.06 and large.prediction_gap < small.prediction_gap / 4
    assert large.weight_change < small.weight_change / 4
    assert large.ntk_change < small.ntk_change / 4
    # The comparison measures the width, not the step size: the floor is far below.
    assert result.discretisation_floor < large.prediction_gap / 10


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("width", [0, -3, 2.5, True, "64"])
def test_bad_width_is_an_input_error(width):
    with pytest.raises(InputError, match="width must be a whole number >= 1"):
        empirical_ntk("Dense(8) > Relu > Dense(1)", _inputs(), width=width)


@pytest.mark.parametrize("samples", [1, 0, 3.0])
def test_bad_samples_is_an_input_error(samples):
    with pytest.raises(InputError, match="samples must be a whole number >= 2"):
        monte_carlo_nngp("Dense(8) > Relu > Dense(1)", _inputs(), samples=samples)


def test_branches_of_different_widths_are_refused_with_a_caret():
    with pytest.raises(ArchitectureError, match="different widths") as info:
        empirical_ntk("Dense(4) > (Relu > Dense(1) + Identity)", _inputs(), width=None)
    assert "branch 1: 1, branch 2: 4" in str(info.value) and "^" in str(info.value)


def test_networks_without_parameters_are_refused():
    with pytest.raises(ArchitectureError, match="no Dense or Conv layer"):
        empirical_ntk("Identity", _inputs())


def test_wrong_feature_count_and_overflow_are_clear_errors():
    net = FiniteNetwork("Dense(4) > Relu > Dense(1)", 3)
    with pytest.raises(ShapeError, match="built for 3 input features, got 5"):
        net.apply(net.init(0), _inputs(d=5))
    with pytest.raises(NumericalError, match="non-finite"):
        empirical_ntk("Dense(8, W_std=1000.0) > Exp > Dense(1)", 100 * _inputs())
