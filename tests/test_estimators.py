"""Tests of the scikit-learn estimators NTKRegressor and NTKClassifier."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.linalg
from sklearn.datasets import load_diabetes, load_iris
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_predict import relu_network_kernels

from ntkdsl.errors import InputError, ShapeError
from ntkdsl.estimators import DEFAULT_ARCH, ArchTemplate, NTKClassifier, NTKRegressor


class ReluKernel:
    """Kernels of (Dense(W, b) > Relu) * depth > Dense(W, b), from the test-local recursion.

    Has get_params/set_params so that its numbers are nested estimator parameters
    (``arch__depth``), independently of the architecture language.
    """

    def __init__(self, depth=2, w_std=1.5, b_std=0.05):
        self.depth, self.w_std, self.b_std = depth, w_std, b_std

    def get_params(self, deep=True):
        return {"depth": self.depth, "w_std": self.w_std, "b_std": self.b_std}

    def set_params(self, **params):
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def _pair(self, x1, x2):
        return relu_network_kernels(x1, x1 if x2 is None else x2, self.depth, self.w_std,
                                    self.b_std)

    def nngp(self, x1, x2=None):
        return self._pair(x1, x2)[0]

    def ntk(self, x1, x2=None):
        return self._pair(x1, x2)[1]


# ----------------------------------------------------------------------------- sklearn contract

@parametrize_with_checks([NTKRegressor(ReluKernel()), NTKClassifier(ReluKernel()),
                          NTKRegressor(ReluKernel(), kernel="nngp", time=50.0, diag_reg=1e-3),
                          NTKRegressor(ReluKernel(), time=20.0, normalize_y=True)])
def test_scikit_learn_contract(estimator, check):
    # Every applicable check passes; no expected failures. (Checks scikit-learn itself skips:
    # array-API input without SCIPY_ARRAY_API, pandas input when pandas is not installed.)
    check(estimator)


@parametrize_with_checks([NTKRegressor(), NTKClassifier()])
def test_scikit_learn_contract_with_compiled_architecture(estimator, check):
    check(estimator)


# ----------------------------------------------------------------------------- the numbers

@pytest.fixture(scope="module")
def regression_data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2]
    return X[:30], y[:30], X[30:], y[30:]


def test_regressor_at_infinity_is_kernel_regression(regression_data):
    X, y, X_test, _ = regression_data
    kern = ReluKernel()
    reg = NTKRegressor(kern, diag_reg=1e-3).fit(X, y)
    ntk = kern.ntk(X)
    ridge = 1e-3 * np.mean(np.diag(ntk))
    want = kern.ntk(X_test, X) @ np.linalg.solve(ntk + ridge * np.eye(30), y)
    np.testing.assert_allclose(reg.predict(X_test), want, rtol=1e-10)


def test_regressor_at_finite_time_follows_gradient_flow(regression_data):
    X, y, X_test, _ = regression_data
    kern, t, eta = ReluKernel(depth=1), 20.0, 0.5
    reg = NTKRegressor(kern, time=t, learning_rate=eta).fit(X, y)
    ntk = kern.ntk(X)
    flow = np.eye(30) - scipy.linalg.expm(-eta * t / 30 * ntk)
    want = kern.ntk(X_test, X) @ np.linalg.solve(ntk, flow @ y)
    np.testing.assert_allclose(reg.predict(X_test), want, rtol=1e-9)
    trajectory = reg.predict_trajectory(X_test, [0.0, t, np.inf])
    assert trajectory.shape == (3, 10)
    np.testing.assert_allclose(trajectory[0], 0.0, atol=0)
    np.testing.assert_allclose(trajectory[1], want, rtol=1e-9)
    np.testing.assert_allclose(trajectory[2], NTKRegressor(kern).fit(X, y).predict(X_test),
                               rtol=1e-8)


def test_nngp_regressor_std_and_cov_are_the_gp_posterior(regression_data):
    X, y, X_test, _ = regression_data
    kern = ReluKernel()
    reg = NTKRegressor(kern, kernel="nngp", diag_reg=0.01).fit(X, y)
    nngp = kern.nngp(X)
    regularised = nngp + 0.01 * np.mean(np.diag(nngp)) * np.eye(30)
    cross = kern.nngp(X_test, X)
    want_cov = kern.nngp(X_test) - cross @ np.linalg.solve(regularised, cross.T)
    mean, cov = reg.predict(X_test, return_cov=True)
    np.testing.assert_allclose(mean, cross @ np.linalg.solve(regularised, y), rtol=1e-10)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-8, atol=1e-12)
    _, std = reg.predict(X_test, return_std=True)
    np.testing.assert_allclose(std, np.sqrt(np.diag(want_cov)), rtol=1e-8)


def test_ntk_regressor_std_uses_the_nngp_prior(regression_data):
    X, y, X_test, _ = regression_data
    kern = ReluKernel()
    _, std = NTKRegressor(kern).fit(X, y).predict(X_test, return_std=True)
    ntk, nngp = kern.ntk(X), kern.nngp(X)
    gain = np.linalg.solve(ntk, kern.ntk(X_test, X).T)  # Θ⁻¹ Θ*ᵀ
    cross = kern.nngp(X_test, X)
    want = (np.diag(kern.nngp(X_test)) + np.einsum("jm,jk,km->m", gain, nngp, gain)
            - 2 * np.einsum("mj,jm->m", cross, gain))
    np.testing.assert_allclose(std, np.sqrt(want), rtol=1e-6)


def test_multioutput_regression_shapes_follow_gaussian_process_regressor(regression_data):
    X, y, X_test, _ = regression_data
    Y = np.column_stack([y, 2 * y + 1])
    reg = NTKRegressor(ReluKernel()).fit(X, Y)
    mean, std = reg.predict(X_test, return_std=True)
    assert mean.shape == (10, 2) and std.shape == (10, 2)
    np.testing.assert_allclose(mean[:, 0], NTKRegressor(ReluKernel()).fit(X, y).predict(X_test),
                               rtol=1e-12)
    _, cov = reg.predict(X_test, return_cov=True)
    assert cov.shape == (10, 10, 2)
    np.testing.assert_allclose(np.sqrt(np.diagonal(cov[..., 1])), std[:, 1], rtol=1e-10)


def test_classifier_is_regression_on_centred_one_hot_targets():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    kern = ReluKernel(depth=1)
    clf = NTKClassifier(kern, diag_reg=1e-2).fit(X[::2], y[::2])
    targets = np.eye(3)[y[::2]] - 1 / 3
    ntk = kern.ntk(X[::2])
    ridge = 1e-2 * np.mean(np.diag(ntk))
    outputs = kern.ntk(X[1::2], X[::2]) @ np.linalg.solve(ntk + ridge * np.eye(75), targets)
    scores = clf.decision_function(X[1::2])
    np.testing.assert_allclose(scores, outputs + 1 / 3, rtol=1e-9)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-10)  # linear in targets
    np.testing.assert_array_equal(clf.predict(X[1::2]), np.argmax(outputs, axis=1))
    assert clf.score(X[1::2], y[1::2]) > 0.8  # sanity: far above chance (1/3)
    proba = clf.predict_proba(X[1::2])
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_binary_classifier_margin_and_string_labels():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 2))
    labels = np.where(X[:, 0] + X[:, 1] > 0, "pos", "neg")
    clf = NTKClassifier(ReluKernel(depth=1)).fit(X, labels)
    margin = clf.decision_function(X)
    assert margin.shape == (30,)
    np.testing.assert_array_equal(clf.predict(X), np.where(margin > 0, "pos", "neg"))
    np.testing.assert_array_equal(clf.predict(X), labels)  # interpolates at t = ∞
    trajectory = clf.predict_trajectory(X, [1.0, np.inf])
    np.testing.assert_array_equal(trajectory[1], labels)
    assert clf.decision_trajectory(X, [1.0, 2.0]).shape == (2, 30, 2)


# ----------------------------------------------------------------------------- composition

def test_grid_search_over_nested_architecture_parameters_in_a_pipeline():
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:120], (y[:120] - y[:120].mean()) / y[:120].std()
    pipe = make_pipeline(StandardScaler(), NTKRegressor(ReluKernel()))
    grid = {"ntkregressor__arch__depth": [1, 3], "ntkregressor__arch__w_std": [1.0, 2.0],
            "ntkregressor__diag_reg": [1e-3, 1.0]}
    search = GridSearchCV(pipe, grid, cv=KFold(3)).fit(X, y)
    assert len(search.cv_results_["params"]) == 8
    best = search.best_params_
    # the refitted winner is the same as building it by hand
    by_hand = make_pipeline(StandardScaler(), NTKRegressor(
        ReluKernel(depth=best["ntkregressor__arch__depth"],
                   w_std=best["ntkregressor__arch__w_std"]),
        diag_reg=best["ntkregressor__diag_reg"])).fit(X, y)
    np.testing.assert_allclose(search.predict(X), by_hand.predict(X), rtol=1e-12)
    assert best["ntkregressor__diag_reg"] == 1.0  # interpolating noisy targets loses in CV


def test_arch_template_parameters():
    template = ArchTemplate("(Dense(512, W_std={w}) > Relu) * {L} > Dense(1)", w=1.5, L=2)
    assert template.render() == "(Dense(512, W_std=1.5) > Relu) * 2 > Dense(1)"
    reg = NTKRegressor(template)
    params = reg.get_params()
    assert params["arch__L"] == 2 and params["arch__w"] == 1.5
    reg.set_params(arch__L=5)
    assert reg.architecture() == "(Dense(512, W_std=1.5) > Relu) * 5 > Dense(1)"
    from sklearn.base import clone

    copy = clone(reg)
    assert copy.arch is not reg.arch and copy.arch == reg.arch
    assert "ArchTemplate(" in repr(reg)


def test_grid_search_over_depth_of_an_architecture_string():
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:100], (y[:100] - y[:100].mean()) / y[:100].std()
    arch = ArchTemplate("(Dense(512, W_std={w}, b_std=0.05) > Relu) * {L} > "
                        "Dense(1, W_std={w}, b_std=0.05)", w=1.5, L=1)
    search = GridSearchCV(make_pipeline(StandardScaler(), NTKRegressor(arch, diag_reg=0.1)),
                          {"ntkregressor__arch__L": [1, 3]}, cv=KFold(2)).fit(X, y)
    kern = ReluKernel(depth=search.best_params_["ntkregressor__arch__L"], w_std=1.5)
    by_hand = make_pipeline(StandardScaler(), NTKRegressor(kern, diag_reg=0.1)).fit(X, y)
    np.testing.assert_allclose(search.predict(X), by_hand.predict(X), rtol=1e-8)


def test_pickle_round_trip_keeps_predictions(regression_data):
    X, y, X_test, _ = regression_data
    reg = NTKRegressor(ReluKernel(), time=10.0).fit(X, y)
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(restored.predict(X_test), reg.predict(X_test))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("params, message", [
    (dict(kernel="rbf"), "valid kernels are 'nngp' or 'ntk'"),
    (dict(time=-1.0), "time must be"),
    (dict(time="forever"), "time must be"),
    (dict(learning_rate=-0.1), "learning_rate must be"),
    (dict(diag_reg=np.nan), "diag_reg must be"),
    (dict(arch=42), "arch must be an architecture string"),
    (dict(arch="Dense({n}) > Relu > Dense(1)"), "wrap it as ArchTemplate"),
    (dict(arch=ArchTemplate("Dense(8, W_std={w}) > Dense(1)")), "no value for {w}"),
])
def test_bad_hyperparameters_raise_at_fit(regression_data, params, message):
    X, y, _, _ = regression_data
    reg = NTKRegressor(**({"arch": ReluKernel()} | params))  # stored unchanged until fit
    with pytest.raises(InputError, match=message):
        reg.fit(X, y)


@pytest.mark.parametrize("X, y, message", [
    (np.ones((5, 2)), np.array([1.0, np.nan, 0, 0, 0]), "NaN"),
    (np.ones((5, 2)), np.ones(4), "inconsistent numbers of samples"),
    (np.ones((1, 2)), np.ones(1), "n_samples=1"),
    (np.ones(5), np.ones(5), "2D array"),
])
def test_bad_data_raise_input_errors(X, y, message):
    with pytest.raises(InputError, match=message):
        NTKRegressor(ReluKernel()).fit(X, y)


def test_bad_template_and_predict_inputs(regression_data):
    X, y, X_test, _ = regression_data
    with pytest.raises(InputError, match="not placeholders"):
        ArchTemplate("Dense({n}) > Dense(1)", m=3)
    with pytest.raises(InputError, match="must be a name"):
        ArchTemplate("Dense({}) > Dense(1)")
    with pytest.raises(InputError, match=r"placeholders are written \{name\}"):
        ArchTemplate("Dense({n) > Dense(1)")
    reg = NTKRegressor(ReluKernel()).fit(X, y)
    with pytest.raises(InputError, match="3 features"):
        reg.predict(X_test[:, :2])
    with pytest.raises(InputError, match="cannot both"):
        reg.predict(X_test, return_std=True, return_cov=True)
    with pytest.raises(InputError, match="only one class"):
        NTKClassifier(ReluKernel()).fit(X, np.zeros(30))


def _rows_with_norms_1_to_n(n: int, d: int) -> np.ndarray:
    """Row i has squared norm / d = (i + 1)², so a program's q argument names its row."""
    x = np.random.default_rng(7).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(d) * np.arange(1, n + 1)[:, None]


def test_training_kernel_computes_each_off_diagonal_entry_once(monkeypatch):
    """The estimator's training kernel is the network's own symmetric tiled evaluation: the
    compiled pair program sees each pair of distinct rows once (the old row-block loop
    computed every off-diagonal block twice), but for pairs inside one chunk of rows (the
    program runs on rectangles: a chunk of rows s:e starts at column s, and the mirror
    overwrites its small triangle left of the diagonal). The kernel equals net.ntk(X) and the
    test-local ReLU recursion."""
    import ntkdsl
    import ntkdsl.estimators as estimators

    n = 300  # three panels of the tiled evaluation
    X = _rows_with_norms_1_to_n(n, 5)
    monkeypatch.setattr(estimators, "_BATCH", 64)  # row blocks, had the estimator its own
    net = ntkdsl.compile(DEFAULT_ARCH)
    seen = np.zeros((n, n), dtype=np.int64)  # calls of the program on entry (i, j)
    in_one_chunk = np.zeros((n, n), dtype=bool)  # both rows in the rows of one call
    pair, sides = net.compiled.pair, net.compiled.sides

    def side(q1, q2, d):  # the side values, and the norms: the chunk's rows and columns
        return (*sides.side(q1, q2, d), q1, q2)

    def counting(k, d, *values):
        *values, q1, q2 = values
        rows, cols = (np.rint(np.sqrt(np.broadcast_to(q, np.shape(k)))).astype(int) - 1
                      for q in (q1, q2))
        np.add.at(seen, (rows.ravel(), cols.ravel()), 1)
        in_one_chunk[rows.min():rows.max() + 1, rows.min():rows.max() + 1] = True
        return pair(k, d, *values)

    import dataclasses

    from ntkdsl.inplace import COLUMN, ROW
    compiled = net.compiled
    counted = dataclasses.replace(compiled, pair=counting, sides=dataclasses.replace(
        sides, side=side, kinds=(*sides.kinds, COLUMN, ROW)))
    object.__setattr__(net, "compiled", counted)  # frozen
    try:
        reg = NTKRegressor(DEFAULT_ARCH).fit(X, X[:, 0])
    finally:
        object.__setattr__(net, "compiled", compiled)
    off = ~np.eye(n, dtype=bool)
    pairs = seen + seen.T  # computations of each unordered pair
    assert (pairs[off] >= 1).all() and (pairs[off] <= 2).all() and (np.diagonal(seen) == 1).all()
    assert in_one_chunk[off & (pairs == 2)].all()
    assert pairs[off & ~in_one_chunk].size > 0.8 * n * n  # most pairs: outside chunks, once
    k_train = reg.ensemble_.k_train_train
    np.testing.assert_array_equal(k_train, net.ntk(X))
    np.testing.assert_allclose(k_train, relu_network_kernels(X, X, 2, 1.5, 0.05)[1], rtol=1e-11)


def test_custom_kernel_objects_are_called_on_the_whole_training_set():
    X = np.random.default_rng(7).normal(size=(11, 3))
    kern = ReluKernel()
    reg = NTKRegressor(kern).fit(X, X[:, 0])
    np.testing.assert_allclose(reg.ensemble_.k_train_train, kern.ntk(X), rtol=1e-14)


def test_verbose_shows_the_network_progress_bar(monkeypatch):
    """verbose asks the network's evaluation for its bar by the helper's rule (None: on a
    terminal; tests/test_one_of_each.py checks the rule), quiet asks for none."""
    from ntkdsl.evaluation import panels

    asked = []
    monkeypatch.setattr(panels, "progress_bar", lambda show, *a, **k: asked.append(show))
    X = np.random.default_rng(7).normal(size=(40, 3))
    for verbose in (False, True):
        reg = NTKRegressor(DEFAULT_ARCH, verbose=verbose).fit(X, X[:, 0])
        # training NTK; mean: cross NTK; std: training NNGP, both cross kernels, test NNGP
        reg.predict(X[:5], return_std=True)
    assert asked == [False] * 5 + [None] * 5


def test_pickling_a_compiled_estimator_keeps_it_usable(regression_data):
    X, y, X_test, _ = regression_data
    reg = NTKRegressor(time=5.0).fit(X, y)
    before = reg.predict(X_test)
    restored = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(reg.predict(X_test), before)  # the original still works
    np.testing.assert_allclose(restored.predict(X_test), before, rtol=1e-14)


# ----------------------------------------------------------------------------- images

class ImageKernel:
    """A kernel of 8x8x1 images that uses where each pixel is: exp of Σ over positions (r, c)
    of (1 + r + 2c)·x[r, c]·x'[r, c] / 64 — so rows reshaped in the wrong order would change
    it. Records the inputs it is called on."""

    def __init__(self):
        self.calls = []

    def _pair(self, x1, x2):
        x2 = x1 if x2 is None else x2
        self.calls.append((x1, x2))
        assert x1.shape[1:] == x2.shape[1:] == (8, 8, 1)
        weight = 1 + np.arange(8)[:, None] + 2 * np.arange(8)[None, :]
        return np.exp(np.einsum("nrcz,mrcz,rc->nm", x1, x2, weight) / 64)

    nngp = ntk = lambda self, x1, x2=None: self._pair(x1, x2)


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data[:200] / 16, digits.images[:200, :, :, None] / 16, digits.target[:200]


@pytest.mark.parametrize("estimator", [NTKClassifier, NTKRegressor])
def test_rows_are_reshaped_to_input_shape_as_the_images_they_are(estimator):
    """digits' rows are its 8x8 images in row-major order: rows with input_shape=(8, 8, 1)
    and the images given directly must reach the kernel as the same images, and predict
    the same."""
    rows, images, y = _digits()
    by_rows = estimator(ImageKernel(), input_shape=(8, 8, 1), time=50.0).fit(rows[:150],
                                                                            y[:150])
    kernel = by_rows.arch
    np.testing.assert_array_equal(kernel.calls[0][0], images[:150])
    assert by_rows.n_features_in_ == 64 and by_rows.input_shape_ == (8, 8, 1)
    direct = estimator(ImageKernel(), time=50.0).fit(images[:150], y[:150])
    assert direct.n_features_in_ == 64 and direct.input_shape_ == (8, 8, 1)
    expected = by_rows.predict(rows[150:])
    np.testing.assert_array_equal(kernel.calls[-1][0], images[150:])
    for fitted, X in ((by_rows, images[150:]), (direct, rows[150:]), (direct, images[150:])):
        np.testing.assert_allclose(fitted.predict(X), expected, rtol=1e-12, atol=1e-12)
    # Against a solve written out here, from the kernel on the images.
    k = ImageKernel()
    if estimator is NTKClassifier:
        assert by_rows.score(rows[150:], y[150:]) > 0.5  # ten classes: far above chance
    else:
        ensemble = scipy.linalg.solve(k.ntk(images[:150]), y[:150].astype(float))
        flow = estimator(k, input_shape=(8, 8, 1)).fit(rows[:150], y[:150]).predict(rows[150:])
        np.testing.assert_allclose(flow, k.ntk(images[150:], images[:150]) @ ensemble,
                                   rtol=1e-6, atol=1e-8)


CONV_ARCH = "Conv(16, (3, 3), padding='SAME') > Relu > Flatten > Dense(1)"


@pytest.mark.parametrize("arch, input_shape, X, error, message", [
    (CONV_ARCH, (8, 8), "rows", ShapeError, r"X reshaped to input_shape \(8, 8\) has shape "
                                            r"\(\d+, 8, 8\) \(3-D\) but this network, whose "
                                            r"filters have 2 spatial axes, takes 4-D"),
    (ImageKernel(), (7, 7, 1), "rows", InputError, r"input_shape \(7, 7, 1\) holds 49 "
                                                   r"features, but X has 64 columns"),
    (ImageKernel(), (4, 4, 4), "images", InputError, r"X holds examples of shape \(8, 8, "
                                                     r"1\), but input_shape is \(4, 4, 4\)"),
    (ImageKernel(), (8, 0, 1), "rows", InputError, "input_shape must be"),
    (CONV_ARCH, (64, 1), "rows", ShapeError, r"X reshaped to input_shape \(64, 1\) has shape "
                                            r"\(\d+, 64, 1\) \(3-D\) but this network, whose "
                                            r"filters have 2 spatial axes, takes 4-D "
                                            r"channels-last images \(n, H, W, C\)"),
    (CONV_ARCH, None, "rows", ShapeError, r"X has shape \(\d+, 64\) \(2-D\) but this network"),
    (DEFAULT_ARCH, (8, 8, 1), "rows", ShapeError, r"X reshaped to input_shape \(8, 8, 1\) has "
                                                  r"shape \(\d+, 8, 8, 1\), but this network is "
                                                  r"fully connected"),
    (DEFAULT_ARCH, None, "images", ShapeError, r"X has shape \(\d+, 8, 8, 1\), but this network "
                                               r"is fully connected \(no Conv, pooling or "
                                               r"Flatten layer\): it takes 2-D arrays"),
])
def test_a_wrong_input_shape_says_what_is_valid(arch, input_shape, X, error, message):
    rows, images, y = _digits()
    with pytest.raises(error, match=message) as info:
        NTKClassifier(arch, input_shape=input_shape).fit(rows if X == "rows" else images, y)
    if input_shape is None and X == "rows":
        assert "input_shape=(8, 8, 1)" in str(info.value)  # the fix, spelled out
    if error is ShapeError and arch == CONV_ARCH:  # the layer that fixes the spatial axes
        assert "^" * len("Conv(16, (3, 3), padding='SAME')") in str(info.value)


def test_predict_refuses_images_of_another_shape_than_fitted():
    rows, images, y = _digits()
    fitted = NTKClassifier(ImageKernel(), input_shape=(8, 8, 1)).fit(rows, y)
    with pytest.raises(InputError, match=r"X holds examples of shape \(4, 16, 1\), but the "
                                         r"estimator was fitted on examples of shape \(8, 8, "
                                         r"1\)"):
        fitted.predict(images.reshape(-1, 4, 16, 1))
    with pytest.raises(InputError, match=r"X holds examples of shape \(8, 8, 2\), but the "
                                         r"estimator was fitted on examples of shape \(8, 8, "
                                         r"1\)"):  # other channels: not "128 features"
        fitted.predict(np.repeat(images, 2, axis=-1))
    with pytest.raises(InputError, match="64 features"):
        fitted.predict(rows[:, :60])
    flat = NTKRegressor(ReluKernel()).fit(rows, y.astype(float))
    with pytest.raises(InputError, match="fitted on rows of features"):
        flat.predict(images)
