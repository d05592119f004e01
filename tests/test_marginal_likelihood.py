"""log_marginal_likelihood() of the estimators against scikit-learn's GaussianProcessRegressor
with the same kernel and noise (issue 15)."""
import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel

import ntkdsl
from ntkdsl import ArchTemplate, NTKClassifier, NTKRegressor
from ntkdsl.sklearn import NNGPKernel, NTKKernel

TEMPLATE = ArchTemplate("(Dense(512, W_std={w}, b_std={b}) > Relu) * 2 > Dense(1)", w=1.4, b=0.3)


@pytest.mark.parametrize("kind, kernel", [("nngp", NNGPKernel), ("ntk", NTKKernel)])
def test_regressor_evidence_matches_scikit_learn(kind, kernel):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    reg = NTKRegressor(TEMPLATE, kernel=kind, diag_reg=0.1).fit(X, y)
    train = getattr(ntkdsl.compile(TEMPLATE), kind)(X)
    noise = 0.1 * np.trace(train) / len(X)
    gp = GaussianProcessRegressor(kernel(TEMPLATE) + WhiteKernel(noise, "fixed"),
                                  optimizer=None, alpha=0.0).fit(X, y)
    assert reg.log_marginal_likelihood() == pytest.approx(gp.log_marginal_likelihood_value_,
                                                          rel=1e-10)


def test_classifier_evidence_sums_the_one_hot_columns():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 3, size=30)
    clf = NTKClassifier(TEMPLATE, kernel="nngp", diag_reg=0.1).fit(X, y)
    codes = np.eye(3)[y] - 1 / 3
    train = ntkdsl.compile(TEMPLATE).nngp(X)
    matrix = train + 0.1 * np.trace(train) / 30 * np.eye(30)
    _, log_det = np.linalg.slogdet(matrix)
    expected = (-0.5 * np.sum(codes * np.linalg.solve(matrix, codes)) - 1.5 * log_det
                - 1.5 * 30 * np.log(2 * np.pi))
    assert clf.log_marginal_likelihood() == pytest.approx(expected, rel=1e-10)
