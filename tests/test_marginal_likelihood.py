"""log_marginal_likelihood() of the estimators against scikit-learn's GaussianProcessRegressor
with the same kernel and noise (issue 15)."""
import itertools

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.utils.estimator_checks import parametrize_with_checks

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


# ---------------------------------------------------------------- fitting by the evidence

BOUNDS = {"w": (0.2, 5.0), "b": (1e-2, 5.0)}


def _data(seed=2, n=40):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.1 * rng.normal(size=n)


@pytest.mark.parametrize("kind, kernel", [("nngp", NNGPKernel), ("ntk", NTKKernel)])
def test_evidence_gradient_matches_finite_differences(kind, kernel):
    from ntkdsl.sklearn import MarginalLikelihood

    X, y = _data()
    evidence = MarginalLikelihood(kernel(TEMPLATE, BOUNDS), X, y, 0.05, (1e-4, 1.0))
    theta = np.log([1.2, 0.4, 0.03])
    value, gradient = evidence(theta)
    h = 1e-4
    for j in range(3):
        step = np.eye(3)[j] * h
        # Richardson: (4 D(h/2) - D(h)) / 3, error O(h^4)
        wide = (evidence(theta + step)[0] - evidence(theta - step)[0]) / (2 * h)
        narrow = (evidence(theta + step / 2)[0] - evidence(theta - step / 2)[0]) / h
        assert gradient[j] == pytest.approx((4 * narrow - wide) / 3, rel=1e-6, abs=1e-8)
    # The value is the fitted estimator's evidence at those numbers.
    reg = NTKRegressor(ArchTemplate(TEMPLATE.template, w=1.2, b=0.4), kernel=kind,
                       diag_reg=0.03).fit(X, y)
    assert value == pytest.approx(reg.log_marginal_likelihood(), rel=1e-12)


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_fisher_information_against_finite_differences_of_the_matrix(kind):
    """The expected information the optimiser steps with, ½k tr(M⁻¹ ∂ᵢM M⁻¹ ∂ⱼM), against
    the same trace from central differences of M = K + diag_reg·mean(diag K)·I (kernels
    compiled at the shifted numbers) and numpy's inverse."""
    from ntkdsl.sklearn import MarginalLikelihood

    X, y = _data()
    kernel = (NNGPKernel if kind == "nngp" else NTKKernel)(TEMPLATE, BOUNDS)
    evidence = MarginalLikelihood(kernel, X, np.stack([y, -y, y ** 2], axis=1), 0.05,
                                  (1e-4, 1.0))
    theta = np.log([1.2, 0.4, 0.03])

    def matrix(t):
        w, b, ridge = np.exp(t)
        K = getattr(ntkdsl.compile(ArchTemplate(TEMPLATE.template, w=w, b=b)), kind)(X)
        return K + ridge * np.trace(K) / len(X) * np.eye(len(X))

    h = 1e-5
    slopes = [(matrix(theta + h * e) - matrix(theta - h * e)) / (2 * h) for e in np.eye(3)]
    inverse = np.linalg.inv(matrix(theta))
    expected = np.array([[0.5 * 3 * np.trace(inverse @ a @ inverse @ b) for b in slopes]
                         for a in slopes])
    fisher = evidence._point(theta).fisher()
    assert np.allclose(fisher, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
    assert np.all(np.linalg.eigvalsh(fisher) > 0)
    # diag_reg held at its value: the information of w and b alone, the same block.
    fixed = MarginalLikelihood(kernel, X, np.stack([y, -y, y ** 2], axis=1), 0.03)
    assert np.allclose(fixed._point(theta[:2]).fisher(), expected[:2, :2], rtol=1e-6,
                       atol=1e-8 * np.abs(expected).max())


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_regressor_optimum_is_a_maximum(kind):
    X, y = _data()
    reg = NTKRegressor(TEMPLATE, kernel=kind, diag_reg=0.1,
                       optimize={**BOUNDS, "diag_reg": (1e-4, 1.0)}).fit(X, y)
    names = ("w", "b", "diag_reg")
    assert tuple(reg.params_) == names
    best = reg.log_marginal_likelihood_value_
    assert reg.log_marginal_likelihood() == pytest.approx(best, rel=1e-12)
    from ntkdsl.sklearn import MarginalLikelihood

    kernel = (NNGPKernel if kind == "nngp" else NTKKernel)(TEMPLATE, BOUNDS)
    evidence = MarginalLikelihood(kernel, X, y, 0.1, (1e-4, 1.0))
    log_params = np.log([reg.params_[n] for n in names])
    value, gradient = evidence(log_params)
    assert value == pytest.approx(best, rel=1e-12)
    # The optimality conditions within bounds: a zero gradient inside, pointing out at a
    # bound (the NTK's evidence wants less ridge than the lower bound here).
    low, high = evidence.bounds.T
    inside = (log_params > low + 1e-6) & (log_params < high - 1e-6)
    assert kind == "ntk" or np.all(inside)
    tolerance = 1e-3 * abs(best)
    assert np.all(np.abs(gradient[inside]) < tolerance)
    assert np.all(gradient[log_params <= low + 1e-6] < tolerance)
    assert np.all(gradient[log_params >= high - 1e-6] > -tolerance)
    # Higher than every point of a grid around it (in log space, +-5%, within the bounds).
    for offset in itertools.product((-0.05, 0.0, 0.05), repeat=3):
        point = np.clip(log_params + np.array(offset), low, high)
        assert evidence(point)[0] <= best + 1e-9 * abs(best)
    # The fitted architecture is a string ntkdsl compiles: the kernel fit predicts with.
    fitted = getattr(ntkdsl.compile(reg.arch_), kind)(X)
    assert np.allclose(fitted, reg.ensemble_.k_train_train, rtol=1e-12, atol=0)
    assert reg.arch_ == TEMPLATE.template.format(w=reg.params_["w"], b=reg.params_["b"])


def test_a_start_fisher_scoring_leaves_unfinished_is_finished_by_lbfgsb(monkeypatch):
    """Fisher scoring stopped after one step (as at its step limit): L-BFGS-B finishes from
    the best point, to the optimum the full search finds."""
    import ntkdsl.sklearn

    X, y = _data()
    options = dict(kernel="nngp", diag_reg=0.1, optimize={**BOUNDS, "diag_reg": (1e-4, 1.0)})
    full = NTKRegressor(TEMPLATE, **options).fit(X, y)
    monkeypatch.setattr(ntkdsl.sklearn, "MAX_SCORING_STEPS", 1)
    finished = NTKRegressor(TEMPLATE, **options).fit(X, y)
    assert finished.log_marginal_likelihood_value_ == pytest.approx(
        full.log_marginal_likelihood_value_, rel=1e-7)
    for name, value in full.params_.items():
        assert finished.params_[name] == pytest.approx(value, rel=1e-3)


def test_an_optimum_on_two_bounds_is_reached_from_them_without_creeping():
    """The NTK's evidence wants w above its upper bound and less ridge than its lower
    bound here; Fisher scoring started on both bounds holds them (the Newton step of b
    would push them out: clipped, it left b a step solved for moves not made, and crept 27
    evaluations) and reaches the optimum scipy's L-BFGS-B finds with tight tolerances."""
    import scipy.optimize

    from ntkdsl.sklearn import MarginalLikelihood, _climb

    X, y = _data()
    template = ArchTemplate(TEMPLATE.template, w=0.4, b=0.2)
    evidence = MarginalLikelihood(NTKKernel(template, {"w": (0.2, 0.7), "b": (1e-2, 5.0)}),
                                  X, y, 0.1, (1e-4, 1.0))
    low, high = evidence.bounds.T
    reference = scipy.optimize.minimize(
        lambda theta: tuple(-part for part in evidence(theta)), evidence.theta0, jac=True,
        method="L-BFGS-B", bounds=evidence.bounds, options=dict(ftol=1e-15, gtol=1e-10))
    assert np.allclose(reference.x[[0, 2]], [high[0], low[2]])  # on the two bounds
    assert low[1] < reference.x[1] < high[1]
    points = []

    def point(theta):
        points.append(evidence._point(theta))
        return points[-1]

    start = np.array([high[0], evidence.theta0[1], low[2]])
    assert _climb(point, start, evidence.bounds)
    best = max(points, key=lambda found: found.value)
    assert best.value == pytest.approx(-reference.fun, rel=1e-9)
    assert best.value >= -reference.fun - 1e-9 * abs(reference.fun)
    assert np.allclose(best.theta, reference.x, rtol=0, atol=1e-3)
    assert np.array_equal(best.theta[[0, 2]], [high[0], low[2]])  # exactly on them
    assert abs(best.gradient[1]) <= 1e-5 and best.gradient[0] > 0 > best.gradient[2]
    assert len(points) <= 10


def test_restarts_are_reproducible_and_never_worse():
    X, y = _data(3)
    options = dict(kernel="nngp", diag_reg=0.1, optimize=dict(BOUNDS))
    once = NTKRegressor(TEMPLATE, **options).fit(X, y)
    again = [NTKRegressor(TEMPLATE, **options, n_restarts_optimizer=2, random_state=7).fit(X, y)
             for _ in range(2)]
    assert again[0].params_ == again[1].params_
    assert again[0].log_marginal_likelihood_value_ >= once.log_marginal_likelihood_value_ - 1e-9


def test_classifier_fits_the_numbers_on_one_hot_codes():
    X, y = _data(4, 45)
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    clf = NTKClassifier(TEMPLATE, kernel="nngp", diag_reg=0.1, optimize={"w": (0.2, 5.0)}
                        ).fit(X, labels)
    assert set(clf.params_) == {"w"}
    assert clf.log_marginal_likelihood() == pytest.approx(clf.log_marginal_likelihood_value_,
                                                          rel=1e-12)
    start = NTKClassifier(TEMPLATE, kernel="nngp", diag_reg=0.1).fit(X, labels)
    assert clf.log_marginal_likelihood() >= start.log_marginal_likelihood()
    assert clf.score(X, labels) > 0.5


@pytest.mark.parametrize("arch, optimize, match", [
    (TEMPLATE, {"v": (0.1, 1.0)}, "(?s)'v', which is not a placeholder.*placeholders are w, b"),
    (ArchTemplate("(Dense({n}, W_std={w}) > Relu) * 2 > Dense(1)", n=64, w=1.0),
     {"n": (16, 128)}, r"\{n\} = 64 fills an integer"),
    (ArchTemplate("(Dense(64, W_std={w}) > Relu) * {L} > Dense(1)", L=2, w=1.0),
     {"L": (1, 4)}, r"\{L\} = 2 fills an integer"),
    (TEMPLATE, {"w": (2.0, 5.0)}, r"w = 1.4 is outside its bounds \(2.0, 5.0\)"),
    (TEMPLATE, {"diag_reg": (0.2, 1.0)}, r"diag_reg = 0.1 is outside its bounds"),
    (TEMPLATE, {"w": (-1.0, 5.0)}, "0 < low <= high"),
    (ArchTemplate("Dense(64) > Relu > Dense(1)"), {"w": (0.1, 1.0)}, "has no placeholders"),
    (TEMPLATE, {}, "optimize must be a dict of bounds"),
    (TEMPLATE, [("w", (0.1, 1.0))], "optimize must be a dict of bounds"),
    (ntkdsl.compile("Dense(64) > Relu > Dense(1)"), {"diag_reg": (0.01, 1.0)},
     "optimize needs arch as an ArchTemplate"),
])
def test_bad_optimize_requests_are_parameter_errors(arch, optimize, match):
    X, y = _data()
    with pytest.raises(ntkdsl.errors.ParameterError, match=match):
        NTKRegressor(arch, diag_reg=0.1, optimize=optimize).fit(X, y)


@pytest.mark.parametrize("restarts", [-1, 1.5, True, 10**6])
def test_bad_restart_counts_are_refused(restarts):
    X, y = _data()
    with pytest.raises(ntkdsl.errors.InputError, match="n_restarts_optimizer must be a whole"):
        NTKRegressor(TEMPLATE, diag_reg=0.1, optimize={"w": (0.1, 5.0)},
                     n_restarts_optimizer=restarts).fit(X, y)


def test_diag_reg_alone_on_a_plain_architecture():
    X, y = _data()
    reg = NTKRegressor("(Dense(64, W_std=1.4) > Relu) * 2 > Dense(1)", kernel="nngp",
                       diag_reg=0.1, optimize={"diag_reg": (1e-4, 10.0)}).fit(X, y)
    grid = [NTKRegressor(reg.arch_, kernel="nngp", diag_reg=r).fit(X, y).log_marginal_likelihood()
            for r in reg.params_["diag_reg"] * np.array([0.9, 1.1])]
    assert reg.log_marginal_likelihood_value_ >= max(grid)


def test_the_factorisation_inverse_against_numpy():
    from ntkdsl.predict import _RegularisedKernel

    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 40))
    factor = _RegularisedKernel(a @ a.T, 0.01, absolute_scale=False)
    assert np.allclose(factor.inverse(), np.linalg.inv(factor.matrix), rtol=1e-10, atol=0)
    # A singular kernel (rank 5) goes through the floored eigensystem: the inverse the
    # solves use (whose scale is 1 / the floor).
    low_rank = a[:, :5] @ a[:, :5].T
    singular = _RegularisedKernel(low_rank, 0.0, absolute_scale=False)
    with pytest.warns(ntkdsl.predict.SingularKernelWarning):
        inverse = singular.inverse()
    solved = singular.solve(np.eye(30))
    assert np.allclose(inverse, solved, rtol=0, atol=1e-9 * np.max(np.abs(solved)))


SMALL = ArchTemplate("Dense(64, W_std={w}, b_std=0.1) > Relu > Dense(1, W_std={w})", w=1.0)


@parametrize_with_checks([
    NTKRegressor(SMALL, kernel="nngp", diag_reg=0.1,
                 optimize={"w": (0.3, 3.0), "diag_reg": (1e-3, 1.0)}),
    NTKClassifier(SMALL, diag_reg=0.1, optimize={"w": (0.3, 3.0)}, n_restarts_optimizer=1,
                  random_state=0)])
def test_scikit_learn_contract_with_optimize(estimator, check):
    check(estimator)


def test_a_refit_without_optimize_keeps_no_fitted_numbers():
    X, y = _data()
    reg = NTKRegressor(TEMPLATE, kernel="nngp", diag_reg=0.1, optimize={"w": (0.2, 5.0)})
    reg.fit(X, y)
    assert reg.params_["w"] != 1.4
    reg.set_params(optimize=None).fit(X, y)
    assert not hasattr(reg, "params_") and not hasattr(reg, "arch_")
    assert reg.log_marginal_likelihood() == pytest.approx(
        NTKRegressor(TEMPLATE, kernel="nngp", diag_reg=0.1).fit(X, y).log_marginal_likelihood(),
        rel=1e-12)


@pytest.mark.parametrize("n", [1, 5, 64, 65, 200])
def test_the_symmetric_copy_of_a_lower_triangle(n):
    """The inverse's upper triangle is mirrored from its lower one block by block: the
    same matrix as numpy's tril(a) + tril(a, -1).T, at sizes around the block's."""
    from ntkdsl.predict import _symmetric_from_lower

    a = np.random.default_rng(n).normal(size=(n, n))
    expected = np.tril(a) + np.tril(a, -1).T
    assert np.array_equal(_symmetric_from_lower(a.copy()), expected)


def test_the_evidence_on_one_thread_and_on_the_pipeline_agree(monkeypatch):
    """Small training sets evaluate the evidence's kernels on the calling thread alone
    (ONE_THREAD_ROWS); the threaded pipeline larger ones use gives the same evidence."""
    import ntkdsl.sklearn
    from ntkdsl.sklearn import MarginalLikelihood

    X, y = _data(n=300)
    evidence = MarginalLikelihood(NTKKernel(TEMPLATE, BOUNDS), X, y, 0.05, (1e-4, 1.0))
    theta = np.log([1.2, 0.4, 0.03])
    alone = evidence._point(theta)
    monkeypatch.setattr(ntkdsl.sklearn, "ONE_THREAD_ROWS", 0)
    piped = evidence._point(theta)
    assert piped.value == pytest.approx(alone.value, rel=1e-12)
    assert np.allclose(piped.gradient, alone.gradient, rtol=1e-10, atol=0)
    assert np.allclose(piped.fisher(), alone.fisher(), rtol=1e-10, atol=0)
