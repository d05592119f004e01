"""Issue 11, point 11: NTKRegressor(normalize_y=True), scikit-learn's GaussianProcessRegressor
meaning — targets centred and divided by their std before fitting; mean, std and cov scaled back."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import ntkdsl
from ntkdsl.errors import InputError
from ntkdsl.estimators import NTKRegressor

ARCH = "Dense(64, W_std=1.5, b_std=0.1) > Relu > Dense(1, W_std=1.5, b_std=0.1)"
NET = ntkdsl.compile(ARCH)
RNG = np.random.default_rng(21)
X = RNG.standard_normal((30, 4))
X_TEST = RNG.standard_normal((7, 4))
# Targets far from the prior mean 0 and of a scale far from the kernel's, column by column.
Y = np.column_stack([150.0 + 60.0 * np.sin(X @ [1.0, -0.5, 0.3, 0.2]),
                     -3.0 + 0.01 * np.cos(X[:, 0])])


def _posterior_by_hand(y: np.ndarray, diag_reg: float):
    """The NTK ensemble at t = ∞ on standardised targets, then un-scaled — by plain linear
    algebra from the kernel matrices, independently of the estimator and the solvers."""
    mean_y, std_y = y.mean(axis=0), y.std(axis=0)
    ntk, nngp = NET.ntk(X), NET.nngp(X)
    ntk_reg = ntk + diag_reg * np.trace(ntk) / len(X) * np.eye(len(X))
    cross_ntk, cross_nngp = NET.ntk(X_TEST, X), NET.nngp(X_TEST, X)
    gain = np.linalg.solve(ntk_reg, cross_ntk.T)  # Θ⁻¹ Θ*ᵀ
    mean = gain.T @ ((y - mean_y) / std_y) * std_y + mean_y
    cov = NET.nngp(X_TEST) + gain.T @ nngp @ gain - cross_nngp @ gain - gain.T @ cross_nngp.T
    return mean, cov, std_y


@pytest.mark.parametrize("columns", [slice(0, 1), slice(0, 2)], ids=["1-D", "2 outputs"])
def test_predictions_std_and_cov_are_those_of_standardised_targets_scaled_back(columns):
    y = Y[:, columns]
    y = y[:, 0] if y.shape[1] == 1 else y
    mean_ref, cov_ref, std_y = _posterior_by_hand(y, 1e-3)
    model = NTKRegressor(ARCH, diag_reg=1e-3, normalize_y=True).fit(X, y)
    mean, std = model.predict(X_TEST, return_std=True)
    _, cov = model.predict(X_TEST, return_cov=True)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-9)
    if y.ndim == 1:
        np.testing.assert_allclose(cov, cov_ref * std_y**2, rtol=1e-8, atol=1e-10 * std_y**2)
        np.testing.assert_allclose(std, np.sqrt(np.diag(cov_ref)) * std_y, rtol=1e-8)
    else:  # one covariance per output, each on its own target's scale
        for k in range(y.shape[1]):
            np.testing.assert_allclose(cov[..., k], cov_ref * std_y[k] ** 2, rtol=1e-8,
                                       atol=1e-10 * std_y[k] ** 2)
            np.testing.assert_allclose(std[:, k], np.sqrt(np.diag(cov_ref)) * std_y[k], rtol=1e-8)


def test_same_as_fitting_standardised_targets_by_hand_at_finite_times():
    y = Y[:, 0]
    times = [1.0, 10.0, 100.0, np.inf]
    model = NTKRegressor(ARCH, time=10.0, normalize_y=True).fit(X, y)
    by_hand = NTKRegressor(ARCH, time=10.0).fit(X, (y - y.mean()) / y.std())
    np.testing.assert_allclose(model.predict(X_TEST),
                               by_hand.predict(X_TEST) * y.std() + y.mean(), rtol=1e-12)
    np.testing.assert_allclose(model.predict_trajectory(X_TEST, times),
                               by_hand.predict_trajectory(X_TEST, times) * y.std() + y.mean(),
                               rtol=1e-12)
    _, std = model.predict(X_TEST, return_std=True)
    np.testing.assert_allclose(std, by_hand.predict(X_TEST, return_std=True)[1] * y.std(),
                               rtol=1e-12)


def test_default_false_fits_the_raw_targets():
    y = Y[:, 0]
    model = NTKRegressor(ARCH, diag_reg=1e-3).fit(X, y)
    assert model.get_params()["normalize_y"] is False
    ntk = NET.ntk(X) + 1e-3 * np.trace(NET.ntk(X)) / len(X) * np.eye(len(X))
    np.testing.assert_allclose(model.predict(X_TEST), NET.ntk(X_TEST, X) @ np.linalg.solve(ntk, y),
                               rtol=1e-9)
    # and normalising does change the answer: the prior mean is 0 on the other scale
    assert not np.allclose(NTKRegressor(ARCH, diag_reg=1e-3, normalize_y=True).fit(X, y)
                           .predict(X_TEST), model.predict(X_TEST), rtol=1e-3)


def test_a_constant_target_keeps_scale_one_and_is_predicted_exactly():
    y = np.column_stack([Y[:, 0], np.full(len(X), 7.5)])
    mean, std = NTKRegressor(ARCH, normalize_y=True).fit(X, y).predict(X_TEST, return_std=True)
    np.testing.assert_array_equal(mean[:, 1], 7.5)
    assert np.all(np.isfinite(std))


def test_normalize_y_must_be_a_boolean():
    with pytest.raises(InputError, match="normalize_y must be True or False"):
        NTKRegressor(ARCH, normalize_y="yes").fit(X, Y[:, 0])
    assert clone(NTKRegressor(ARCH, normalize_y=True)).normalize_y is True


def test_diabetes_targets_fit_better_standardised():
    """Issue 11's observation: the diabetes targets (mean ~152, std ~77) fit worse raw."""
    X_all, y_all = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X_all, y_all, test_size=0.25,
                                                        random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    raw, normalised = (NTKRegressor(diag_reg=1.0, normalize_y=flag).fit(X_train, y_train)
                       .score(X_test, y_test) for flag in (False, True))
    assert normalised > raw + 0.05, (raw, normalised)

