"""Tests of ntkdsl.predict against neural-tangents' numbers and independent computations."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
from conftest import load_reference

import ntkdsl
from ntkdsl.errors import InputError, NumericalError, ShapeError
from ntkdsl.predict import (
    SingularKernelWarning,
    gp_inference,
    gradient_descent_mse_ensemble,
)

RTOL = 1e-8


# ----------------------------------------------------------------------------- a local kernel

def relu_network_kernels(x1, x2, depth, w_std, b_std):
    """NNGP and NTK of (Dense(W, b) > Relu) * depth > Dense(W, b), NTK parameterisation.

    An independent, test-local implementation of the DESIGN §2 recursion (arc-cosine kernel),
    written for checking the solver, not shared with the library.
    """
    d = x1.shape[1]
    identical = np.all(x1[:, None, :] == x2[None, :, :], axis=-1)  # correlation exactly 1
    q1 = np.sum(x1 * x1, axis=1)[:, None] / d
    q2 = np.sum(x2 * x2, axis=1)[None, :] / d
    k12 = x1 @ x2.T / d
    t12 = np.zeros_like(k12)

    def dense(q1, q2, k12, t12):
        k12 = w_std**2 * k12 + b_std**2
        return w_std**2 * q1 + b_std**2, w_std**2 * q2 + b_std**2, k12, k12 + w_std**2 * t12

    for _ in range(depth):
        q1, q2, k12, t12 = dense(q1, q2, k12, t12)
        norm = np.sqrt(q1 * q2)
        cos = np.clip(k12 / norm, -1.0, 1.0)
        # rounding would give 1 − ulp there, hence θ ≈ 1.5e-8 and Γ̇ off by 2e-9
        cos = np.where(identical, 1.0, cos)
        theta = np.arccos(cos)
        gamma_dot = (np.pi - theta) / (2 * np.pi)
        k12 = norm * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
        t12 = t12 * gamma_dot
        q1, q2 = q1 / 2, q2 / 2  # E[relu(u)^2] = q/2
    _, _, k12, t12 = dense(q1, q2, k12, t12)
    return k12, t12


@pytest.fixture(scope="module")
def case():
    return load_reference("nt_predict.json")["cases"][0]


def local_kernel_pair(x1, x2=None):
    return relu_network_kernels(x1, x1 if x2 is None else x2, depth=2, w_std=1.5, b_std=0.1)


def compiled_kernel_pair(arch):
    net = ntkdsl.compile(arch)
    return lambda x1, x2=None: (net.nngp(x1, x2), net.ntk(x1, x2))


@pytest.fixture(scope="module", params=["local recursion", "ntkdsl.compile"])
def kernels(case, request):
    """All kernel matrices of the reference case: from the test-local recursion, and from
    the library's compiled architecture."""
    assert case["arch"] == ("(Dense(512, W_std=1.5, b_std=0.1) > Relu) * 2 > "
                            "Dense(1, W_std=1.5, b_std=0.1)")
    kern = (local_kernel_pair if request.param == "local recursion"
            else compiled_kernel_pair(case["arch"]))
    x_train, x_test = np.array(case["x_train"]), np.array(case["x_test"])
    nngp_dd, ntk_dd = kern(x_train)
    nngp_td, ntk_td = kern(x_test, x_train)
    nngp_tt, _ = kern(x_test)
    return dict(nngp_dd=nngp_dd, ntk_dd=ntk_dd, nngp_td=nngp_td, ntk_td=ntk_td,
                nngp_tt=nngp_tt)


def max_relative_error(got, want):
    """Largest entrywise relative error; an exactly zero reference must be matched exactly."""
    want = np.asarray(want, dtype=float)
    assert got.shape == want.shape
    error = np.abs(got - want)
    return np.max(np.where(want == 0, np.where(error == 0, 0.0, np.inf),
                           error / np.where(want == 0, 1.0, np.abs(want))))


def ensemble_for(case, kernels, kernel):
    train = kernels["ntk_dd" if kernel == "ntk" else "nngp_dd"]
    extra = {"nngp_train_train": kernels["nngp_dd"]} if kernel == "ntk" else {}
    return gradient_descent_mse_ensemble(
        train, np.array(case["y_train"]), kernel=kernel, learning_rate=case["learning_rate"],
        diag_reg=case["diag_reg"], **extra)


def predict_test(ensemble, kernels, kernel, t):
    cross = kernels["ntk_td" if kernel == "ntk" else "nngp_td"]
    extra = {"nngp_test_train": kernels["nngp_td"]} if kernel == "ntk" else {}
    return ensemble.predict(cross, t, nngp_test_test=kernels["nngp_tt"], **extra)


# ----------------------------------------------------------------------------- reference numbers

def test_reference_kernel_is_positive_definite(kernels):
    # Guards the local recursion: a wrong map would often break positivity.
    assert np.linalg.eigvalsh(kernels["ntk_dd"])[0] > 0
    assert np.linalg.eigvalsh(kernels["nngp_dd"])[0] > 0


@pytest.mark.parametrize("index", range(12))
def test_gradient_flow_matches_neural_tangents(case, kernels, index):
    entry = case["gradient_flow"][index]
    ensemble = ensemble_for(case, kernels, entry["get"])
    mean, cov = predict_test(ensemble, kernels, entry["get"], entry["t"])
    assert max_relative_error(mean, entry["mean"]) < RTOL
    assert max_relative_error(cov, entry["cov"]) < RTOL


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_array_of_times_matches_each_time(case, kernels, kernel):
    entries = [e for e in case["gradient_flow"] if e["get"] == kernel]
    times = np.array([np.inf if e["t"] is None else e["t"] for e in entries]).reshape(2, 3)
    ensemble = ensemble_for(case, kernels, kernel)
    mean, cov = predict_test(ensemble, kernels, kernel, times)
    assert mean.shape == (2, 3, 7, 2) and cov.shape == (2, 3, 7, 7)
    for entry, got_mean, got_cov in zip(entries, mean.reshape(6, 7, 2), cov.reshape(6, 7, 7)):
        assert max_relative_error(got_mean, entry["mean"]) < RTOL
        assert max_relative_error(got_cov, entry["cov"]) < RTOL


def test_bayesian_posterior_matches_neural_tangents(case, kernels):
    posterior = gp_inference(kernels["nngp_dd"], np.array(case["y_train"]),
                             diag_reg=case["diag_reg"])
    mean, cov = posterior.predict(kernels["nngp_td"], kernels["nngp_tt"])
    assert max_relative_error(mean, case["bayes"]["nngp"]["mean"]) < RTOL
    assert max_relative_error(cov, case["bayes"]["nngp"]["cov"]) < RTOL


def test_ntk_posterior_is_the_infinite_time_ensemble(case, kernels):
    ensemble = ensemble_for(case, kernels, "ntk")
    mean, cov = predict_test(ensemble, kernels, "ntk", None)
    assert max_relative_error(mean, case["bayes"]["ntk"]["mean"]) < RTOL
    assert max_relative_error(cov, case["bayes"]["ntk"]["cov"]) < RTOL


# ----------------------------------------------------------------------------- independent maths

@pytest.fixture
def small_problem():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    nngp_dd, ntk_dd = relu_network_kernels(x_train, x_train, 1, 1.3, 0.2)
    nngp_td, ntk_td = relu_network_kernels(x_test, x_train, 1, 1.3, 0.2)
    nngp_tt, _ = relu_network_kernels(x_test, x_test, 1, 1.3, 0.2)
    y = rng.normal(size=(6, 3))
    return dict(nngp_dd=nngp_dd, ntk_dd=ntk_dd, nngp_td=nngp_td, ntk_td=ntk_td,
                nngp_tt=nngp_tt, y=y)


def test_mean_solves_the_flow_equation(small_problem):
    """d f_test/dt = −(η/(N·k)) Θ* (f_train − Y), checked with scipy's matrix exponential."""
    p, eta, t = small_problem, 0.7, 5.0
    ensemble = gradient_descent_mse_ensemble(p["ntk_dd"], p["y"], learning_rate=eta)
    rate = eta / p["y"].size
    decay = scipy.linalg.expm(-rate * t * p["ntk_dd"])
    want = p["ntk_td"] @ np.linalg.solve(p["ntk_dd"], (np.eye(6) - decay) @ p["y"])
    assert max_relative_error(ensemble.predict(p["ntk_td"], t).mean, want) < 1e-10
    train_want = (np.eye(6) - decay) @ p["y"]
    assert max_relative_error(ensemble.predict_train(t).mean, train_want) < 1e-10


def test_training_trajectory_ends_at_targets_and_starts_at_zero(small_problem):
    p = small_problem
    ensemble = gradient_descent_mse_ensemble(p["ntk_dd"], p["y"],
                                             nngp_train_train=p["nngp_dd"])
    mean, cov = ensemble.predict_train([0.0, np.inf], compute_cov=True)
    np.testing.assert_allclose(mean[0], 0.0, atol=0)
    np.testing.assert_allclose(mean[1], p["y"], rtol=1e-12)
    np.testing.assert_allclose(cov[0], p["nngp_dd"], rtol=1e-12)
    np.testing.assert_allclose(cov[1], 0.0, atol=1e-10)
    inf_mean, inf_cov = ensemble.predict_train(None, compute_cov=True)
    np.testing.assert_allclose(inf_mean, mean[1], rtol=1e-12)
    assert inf_cov.shape == (6, 6)


def test_training_trajectory_equals_test_formula_on_training_inputs(small_problem):
    p = small_problem
    for kernel, train in (("ntk", p["ntk_dd"]), ("nngp", p["nngp_dd"])):
        extra = {"nngp_train_train": p["nngp_dd"]} if kernel == "ntk" else {}
        ens = gradient_descent_mse_ensemble(train, p["y"], kernel=kernel, diag_reg=0.1, **extra)
        times = np.array([0.3, 30.0, np.inf])
        test_extra = {"nngp_test_train": p["nngp_dd"]} if kernel == "ntk" else {}
        via_test = ens.predict(train, times, nngp_test_test=p["nngp_dd"], **test_extra)
        via_train = ens.predict_train(times, compute_cov=True)
        np.testing.assert_allclose(via_train.mean, via_test.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(via_train.covariance, via_test.covariance, atol=1e-10)


def test_bayesian_posterior_by_direct_solve(small_problem):
    p, noise = small_problem, 0.05
    posterior = gp_inference(p["nngp_dd"], p["y"][:, 0], diag_reg=noise,
                             diag_reg_absolute_scale=True)
    mean, cov = posterior.predict(p["nngp_td"], p["nngp_tt"])
    regularised = p["nngp_dd"] + noise * np.eye(6)
    assert mean.shape == (4,)
    np.testing.assert_allclose(mean, p["nngp_td"] @ np.linalg.solve(regularised, p["y"][:, 0]),
                               rtol=1e-12)
    want_cov = p["nngp_tt"] - p["nngp_td"] @ np.linalg.solve(regularised, p["nngp_td"].T)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-10, atol=1e-13)


def test_relative_diag_reg_scales_with_mean_diagonal(small_problem):
    p = small_problem
    relative = gradient_descent_mse_ensemble(p["ntk_dd"], p["y"], diag_reg=0.01)
    absolute = gradient_descent_mse_ensemble(p["ntk_dd"], p["y"], diag_reg_absolute_scale=True,
                                             diag_reg=0.01 * np.mean(np.diag(p["ntk_dd"])))
    assert relative.effective_diag_reg == pytest.approx(absolute.effective_diag_reg, rel=1e-15)
    np.testing.assert_allclose(relative.predict(p["ntk_td"]).mean,
                               absolute.predict(p["ntk_td"]).mean, rtol=1e-13)


def test_learning_rate_and_time_are_interchangeable(small_problem):
    p = small_problem
    slow = gradient_descent_mse_ensemble(p["ntk_dd"], p["y"], learning_rate=0.5)
    fast = gradient_descent_mse_ensemble(p["ntk_dd"], p["y"], learning_rate=2.0)
    np.testing.assert_allclose(slow.predict(p["ntk_td"], 8.0).mean,
                               fast.predict(p["ntk_td"], 2.0).mean, rtol=1e-13)


def test_factorisation_is_computed_once(small_problem, monkeypatch):
    p = small_problem
    ensemble = gradient_descent_mse_ensemble(p["ntk_dd"], p["y"])
    calls = []
    real_eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda a: calls.append(1) or real_eigh(a))
    for t in (1.0, [2.0, 3.0], 10.0):
        ensemble.predict(p["ntk_td"], t)
        ensemble.predict(p["ntk_td"][:2], t)
    ensemble.predict_train(5.0)
    assert len(calls) == 1


# ----------------------------------------------------------------------------- singular kernels

def test_duplicate_training_points_warn_with_floor_and_stay_finite():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3))
    x = np.vstack([x, x[:2]])  # two exact duplicates: the kernel is singular
    y = np.concatenate([np.arange(5.0), [0.0, 1.0]])
    _, ntk_dd = relu_network_kernels(x, x, 1, 1.0, 0.0)
    _, ntk_td = relu_network_kernels(x[:3] + 0.1, x, 1, 1.0, 0.0)
    with pytest.warns(SingularKernelWarning, match=r"raised them to \d\.\d+e-\d+"):
        ensemble = gradient_descent_mse_ensemble(ntk_dd, y)  # warned where it is factorised
    mean = ensemble.predict(ntk_td, [1.0, np.inf]).mean
    assert np.all(np.isfinite(mean))
    with pytest.warns(SingularKernelWarning):
        inf_mean = gradient_descent_mse_ensemble(ntk_dd, y).predict(ntk_td).mean
    np.testing.assert_allclose(inf_mean, mean[1], rtol=1e-6)
    # consistent duplicated targets are fitted exactly
    np.testing.assert_allclose(ensemble.predict_train().mean, y, atol=1e-6)


def test_well_conditioned_kernel_gives_no_warning(small_problem):
    p = small_problem
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gradient_descent_mse_ensemble(p["ntk_dd"], p["y"]).predict(p["ntk_td"], [0.0, 1.0])
        gradient_descent_mse_ensemble(p["ntk_dd"], p["y"]).predict(p["ntk_td"])


def test_indefinite_matrix_is_refused(small_problem):
    p = small_problem
    bad = p["ntk_dd"] - 2 * np.linalg.eigvalsh(p["ntk_dd"])[-1] * np.outer(
        np.ones(6), np.ones(6)) / 6
    with pytest.raises(NumericalError, match="not positive semi-definite"):
        gradient_descent_mse_ensemble(bad, p["y"]).predict(p["ntk_td"], 1.0)
    with pytest.raises(NumericalError, match="no positive eigenvalue"):
        gradient_descent_mse_ensemble(np.zeros((3, 3)), np.ones(3)).predict(np.ones((1, 3)))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, error, message", [
    (dict(y_train=np.array([1.0, np.nan, 0, 0, 0, 0])), InputError, "NaN"),
    (dict(y_train=np.ones(5)), ShapeError, "5 rows"),
    (dict(y_train=np.ones((6, 1, 1))), ShapeError, "1-D"),
    (dict(k_train_train=np.ones((6, 5))), ShapeError, "square"),
    (dict(k_train_train=np.ones(6)), ShapeError, "2-D"),
    (dict(k_train_train=np.ones((1, 1)), y_train=np.ones(1)), InputError, "at least 2"),
    (dict(kernel="rbf"), InputError, "valid kernels are 'nngp' or 'ntk'"),
    (dict(learning_rate=-1.0), InputError, "learning_rate must be"),
    (dict(diag_reg=-0.1), InputError, "diag_reg must be"),
    (dict(kernel="nngp", nngp_train_train=np.eye(6)), InputError, "only for kernel='ntk'"),
    (dict(nngp_train_train=np.eye(5)), ShapeError, "nngp_train_train"),
])
def test_bad_construction_raises_clear_errors(small_problem, kwargs, error, message):
    args = dict(k_train_train=small_problem["ntk_dd"], y_train=small_problem["y"]) | kwargs
    with pytest.raises(error, match=message):
        gradient_descent_mse_ensemble(args.pop("k_train_train"), args.pop("y_train"), **args)


@pytest.mark.parametrize("t", [-1.0, [1.0, -2.0], np.nan, "soon"])
def test_bad_times_raise(small_problem, t):
    ensemble = gradient_descent_mse_ensemble(small_problem["ntk_dd"], small_problem["y"])
    with pytest.raises(InputError, match=r"t|time"):
        ensemble.predict(small_problem["ntk_td"], t)


def test_bad_test_kernels_raise(small_problem):
    p = small_problem
    ensemble = gradient_descent_mse_ensemble(p["ntk_dd"], p["y"])
    with pytest.raises(ShapeError, match=r"\(4, 6\)|test x train"):
        ensemble.predict(p["ntk_td"][:, :5])
    with pytest.raises(InputError, match="needs the NNGP"):
        ensemble.predict(p["ntk_td"], 1.0, nngp_test_test=p["nngp_tt"])
    with pytest.raises(InputError, match="needs the NNGP"):
        ensemble.predict_train(1.0, compute_cov=True)
    with pytest.raises(InputError, match="finite"):
        ensemble.predict(np.full((4, 6), np.nan))

