"""ntkdsl.sklearn: the NNGP and NTK of a template as scikit-learn kernels (issue 15)."""
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessClassifier, GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel, _approx_fprime

import ntkdsl
from ntkdsl.errors import ParameterError
from ntkdsl.sklearn import NNGPKernel, NTKKernel
from ntkdsl.templates import ArchTemplate

TEMPLATE = "(Dense(512, W_std={w}, b_std={b}) > Relu) * 2 > Dense(1, W_std={w})"
BOUNDS = {"w": (0.1, 10.0), "b": (1e-3, 10.0)}


def _kernel(cls=NNGPKernel, w=1.3, b=0.4, bounds=BOUNDS):
    return cls(ArchTemplate(TEMPLATE, w=w, b=b), bounds=bounds)


def _data(n=12, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4))


@pytest.mark.parametrize("cls", [NNGPKernel, NTKKernel])
def test_gradient_in_log_theta_matches_finite_differences(cls):
    kernel, X = _kernel(cls), _data()
    K, dK = kernel(X, eval_gradient=True)
    assert dK.shape == (len(X), len(X), 2)
    fd = _approx_fprime(kernel.theta, lambda theta: kernel.clone_with_theta(theta)(X), 1e-6)
    assert np.abs(fd - dK).max() <= 1e-5 * np.abs(dK).max()  # forward differences, h = 1e-6
    np.testing.assert_allclose(K, getattr(ntkdsl.compile(kernel.arch), cls.kind)(X),
                               rtol=1e-13)


def test_the_scikit_learn_kernel_protocol():
    kernel, X, Y = _kernel(), _data(), _data(5, seed=1)
    assert [h.name for h in kernel.hyperparameters] == ["w", "b"]
    np.testing.assert_allclose(kernel.theta, np.log([1.3, 0.4]))
    np.testing.assert_allclose(kernel.bounds, np.log([[0.1, 10.0], [1e-3, 10.0]]))
    assert kernel.n_dims == 2 and not kernel.is_stationary()
    np.testing.assert_allclose(kernel.diag(X), np.diag(kernel(X)), rtol=1e-14)
    assert kernel(X, Y).shape == (12, 5)
    with pytest.raises(ValueError, match="Y is None"):
        kernel(X, Y, eval_gradient=True)
    copy = clone(kernel)
    assert copy == kernel and copy is not kernel and copy.arch is not kernel.arch
    moved = kernel.clone_with_theta(np.log([2.0, 0.5]))
    assert moved.arch.values == {"w": 2.0, "b": 0.5} and kernel.arch.values["w"] == 1.3
    np.testing.assert_allclose(moved(X), ntkdsl.compile(ArchTemplate(TEMPLATE, w=2.0, b=0.5)).nngp(X),
                               rtol=1e-13)
    assert kernel.get_params()["w"] == 1.3
    assert kernel.set_params(w=1.5).arch.values["w"] == 1.5
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(kernel))(X), kernel(X))
    assert "NNGPKernel(ArchTemplate(" in repr(kernel)


def test_fixed_hyperparameters_and_composition():
    kernel = _kernel(bounds={"w": (0.1, 10.0), "b": "fixed"})
    assert kernel.n_dims == 1 and kernel.hyperparameters[1].fixed
    X = _data()
    composed = ConstantKernel(2.0) * kernel + WhiteKernel(0.1)
    K, dK = composed(X, eval_gradient=True)
    assert dK.shape == (12, 12, 3)  # constant, w, noise
    np.testing.assert_allclose(K, 2.0 * kernel(X) + 0.1 * np.eye(12), rtol=1e-13)
    fd = _approx_fprime(composed.theta, lambda t: composed.clone_with_theta(t)(X), 1e-6)
    assert np.abs(fd - dK).max() <= 1e-5 * np.abs(dK).max()
    assert [h.name for h in composed.hyperparameters] == [
        "k1__k1__constant_value", "k1__k2__w", "k1__k2__b", "k2__noise_level"]


def test_regression_recovers_the_numbers_of_the_prior():
    # Targets drawn from the NNGP prior at w = 1.6, b = 0.4 (plus noise 0.01): maximising
    # the marginal likelihood from w = b = 1 finds them again.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    K = ntkdsl.compile(ArchTemplate(TEMPLATE, w=1.6, b=0.4)).nngp(X) + 1e-2 * np.eye(300)
    y = np.linalg.cholesky(K) @ rng.normal(size=300)
    kernel = _kernel(w=1.0, b=1.0) + WhiteKernel(1e-2, "fixed")
    gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=1, random_state=0).fit(X, y)
    fitted = gp.kernel_.k1.arch.values
    assert abs(fitted["w"] - 1.6) < 0.1 and abs(fitted["b"] - 0.4) < 0.1, fitted
    assert gp.log_marginal_likelihood_value_ > gp.log_marginal_likelihood(kernel.theta)


@pytest.mark.filterwarnings("ignore:The optimal value found")  # b at its lower bound
def test_classification():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(160, 4))
    f = np.linalg.cholesky(ntkdsl.compile(ArchTemplate(TEMPLATE, w=1.6, b=0.4)).nngp(X)
                           + 1e-8 * np.eye(160)) @ rng.normal(size=160)
    y = (f > 0).astype(int)
    gpc = GaussianProcessClassifier(_kernel(w=1.0, b=1.0), n_restarts_optimizer=1,
                                    random_state=0).fit(X[:100], y[:100])
    assert gpc.score(X[100:], y[100:]) >= 0.8
    assert gpc.log_marginal_likelihood_value_ > gpc.log_marginal_likelihood(
        _kernel(w=1.0, b=1.0).theta)


@pytest.mark.parametrize("bounds, message", [
    ({"w": (2.0, 10.0)}, r"w = 1.3 is outside its bounds"),
    ({"v": (0.1, 10.0)}, "'v', which is not a placeholder"),
    ({"w": (0.0, 10.0)}, "0 < low <= high"),
    ({"w": "free"}, "give \\(low, high\\) or 'fixed'"),
])
def test_bad_bounds_name_the_parameter(bounds, message):
    with pytest.raises(ParameterError, match=message):
        _ = _kernel(bounds=bounds).theta


def test_an_integer_placeholder_cannot_be_a_hyperparameter():
    kernel = NNGPKernel(ArchTemplate("(Dense(8) > Relu) * {L} > Dense(1, W_std={w})", L=2, w=1.0),
                        bounds={"L": (1.0, 5.0)})
    with pytest.raises(ParameterError, match="fills an integer"):
        kernel(_data(), eval_gradient=True)


def test_an_integer_placeholder_is_refused_before_the_optimiser_writes_it_as_a_float():
    from sklearn.gaussian_process import GaussianProcessRegressor

    kernel = NNGPKernel(ArchTemplate("Dense({n}, W_std={w}) > Relu > Dense(1)", n=64, w=1.0),
                        bounds={"n": (16.0, 128.0)})
    X = _data()
    with pytest.raises(ParameterError, match=r"\{n\} = 64 fills an integer"):
        GaussianProcessRegressor(kernel).fit(X, X[:, 0])
