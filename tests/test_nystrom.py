"""Nyström solver (ntkdsl.nystrom) against the exact solver and a dense Nyström computation.

At m = N with every training input a landmark the approximate kernel is the kernel itself, so
every number must be the exact solver's (ntkdsl.predict, checked there against
neural-tangents). At m < N the reference is the exact solver run on the dense matrices
K̃ = K_XZ K_ZZ⁻¹ K_ZX written out in full: an independent route to the same numbers.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import ntkdsl
from ntkdsl.errors import InputError
from ntkdsl.estimators import NTKClassifier, NTKRegressor
from ntkdsl.nystrom import DuplicateLandmarkWarning, nystrom_ensemble, select_landmarks
from ntkdsl.predict import SingularKernelWarning, gradient_descent_mse_ensemble

ARCH = "(Dense(512, W_std=1.5, b_std=0.1) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.1)"
TIMES = np.array([0.0, 1.0, 10.0, 300.0, 1e4])
RTOL = 1e-8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6))
    y = np.stack([np.sin(x[:, 0]) + x[:, 1] ** 2 / 3, np.cos(x[:, 2])], axis=1)
    return x, y, rng.standard_normal((7, 6))


@pytest.fixture(scope="module")
def net():
    return ntkdsl.compile(ARCH)


def close(got, want, rtol=RTOL):
    """|got − want| ≤ rtol · max |want| (entries near 0 judged on the matrix's scale)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = np.max(np.abs(want))
    error = np.max(np.abs(got - want)) / scale
    assert error <= rtol, f"relative error {error:.3e} > {rtol:g}"


def every_row(n):
    return np.arange(n)


# ----------------------------------------------------------------------------- m = N: exact

@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
@pytest.mark.parametrize("diag_reg", [0.0, 1e-3])
def test_all_landmarks_give_the_exact_means(data, net, kernel, diag_reg):
    x, y, x_test = data
    approx = nystrom_ensemble(net, x, y, len(x), kernel=kernel, landmarks=every_row(len(x)),
                              diag_reg=diag_reg)
    train, cross = getattr(net, kernel)(x), getattr(net, kernel)(x_test, x)
    exact = gradient_descent_mse_ensemble(train, y, kernel=kernel, diag_reg=diag_reg)
    close(approx.predict(x_test, TIMES).mean, exact.predict(cross, TIMES).mean)
    close(approx.predict(x_test, None).mean, exact.predict(cross, None).mean)
    assert approx.effective_diag_reg == pytest.approx(exact.effective_diag_reg, rel=1e-12)


def test_all_landmarks_give_the_exact_nngp_posterior_and_covariances(data, net):
    x, y, x_test = data
    approx = nystrom_ensemble(net, x, y[:, 0], len(x), kernel="nngp",
                              landmarks=every_row(len(x)), diag_reg=1e-4)
    exact = gradient_descent_mse_ensemble(net.nngp(x), y[:, 0], kernel="nngp", diag_reg=1e-4)
    nngp_tt, cross = net.nngp(x_test), net.nngp(x_test, x)
    for t in (None, TIMES):
        want = exact.predict(cross, t, nngp_test_test=nngp_tt)
        got = approx.predict(x_test, t, compute_cov=True)
        close(got.mean, want.mean)
        close(got.covariance, want.covariance)
        variance = approx.predict(x_test, t, variance_only=True).covariance
        close(variance, np.diagonal(want.covariance, axis1=-2, axis2=-1))


def test_all_landmarks_give_the_exact_ntk_covariance(data, net):
    x, y, x_test = data
    approx = nystrom_ensemble(net, x, y, len(x), landmarks=every_row(len(x)), diag_reg=1e-4,
                              covariance=True)
    nngp_dd, ntk_dd = net.kernels(x)
    nngp_td, ntk_td = net.kernels(x_test, x)
    exact = gradient_descent_mse_ensemble(ntk_dd, y, nngp_train_train=nngp_dd, diag_reg=1e-4)
    for t in (None, TIMES):
        want = exact.predict(ntk_td, t, nngp_test_train=nngp_td, nngp_test_test=net.nngp(x_test))
        got = approx.predict(x_test, t, compute_cov=True)
        close(got.mean, want.mean)
        close(got.covariance, want.covariance)
        close(approx.predict(x_test, t, variance_only=True).covariance,
              np.diagonal(want.covariance, axis1=-2, axis2=-1))


# ----------------------------------------------------------------------------- m < N: dense

def dense_nystrom(kernel_fn, x, z, *others):
    """K̃ of x against itself and of each of ``others`` against x, written out in full."""
    inverse = np.linalg.inv(kernel_fn(z))
    k_xz = kernel_fn(x, z)
    return (k_xz @ inverse @ k_xz.T,
            *(kernel_fn(o, z) @ inverse @ k_xz.T for o in others))


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_fewer_landmarks_match_the_dense_nystrom_kernel(data, net, kernel):
    x, y, x_test = data
    approx = nystrom_ensemble(net, x, y, 12, kernel=kernel, seed=5, diag_reg=1e-2)
    z = approx.landmarks
    assert len(z) == 12 and not np.allclose(approx.predict(x_test).mean,
                                            getattr(net, kernel)(x_test, x)
                                            @ np.linalg.solve(getattr(net, kernel)(x), y))
    train, cross = dense_nystrom(getattr(net, kernel), x, z, x_test)
    exact = gradient_descent_mse_ensemble(train, y, kernel=kernel, diag_reg=1e-2)
    close(approx.predict(x_test, TIMES).mean, exact.predict(cross, TIMES).mean, 1e-7)
    close(approx.predict(x_test).mean, exact.predict(cross).mean, 1e-7)


def test_fewer_landmarks_ntk_covariance_matches_dense(data, net):
    x, y, x_test = data
    approx = nystrom_ensemble(net, x, y, 15, seed=1, diag_reg=1e-2, covariance=True)
    z = approx.landmarks
    ntk_dd, ntk_td = dense_nystrom(net.ntk, x, z, x_test)
    nngp_dd, nngp_td = dense_nystrom(net.nngp, x, z, x_test)
    exact = gradient_descent_mse_ensemble(ntk_dd, y, nngp_train_train=nngp_dd, diag_reg=1e-2)
    want = exact.predict(ntk_td, TIMES, nngp_test_train=nngp_td, nngp_test_test=net.nngp(x_test))
    got = approx.predict(x_test, TIMES, compute_cov=True)
    close(got.mean, want.mean, 1e-7)
    close(got.covariance, want.covariance, 1e-7)


def test_blocks_do_not_change_the_numbers(data, net, monkeypatch):
    """Many small blocks (the streamed path) give the numbers of one block."""
    import ntkdsl.nystrom as nystrom

    x, y, x_test = data
    one = nystrom_ensemble(net, x, y, 10, seed=2, diag_reg=1e-3).predict(x_test, TIMES).mean
    monkeypatch.setattr(nystrom, "_MIN_BLOCK_ROWS", 3)
    monkeypatch.setattr(nystrom, "_BLOCK_BYTES", 1)
    many = nystrom_ensemble(net, x, y, 10, seed=2, diag_reg=1e-3).predict(x_test, TIMES).mean
    close(many, one, 1e-12)


def test_any_kernel_object_works(data, net):
    """An object with nngp/ntk methods (not a compiled network) gives the same numbers."""
    class Plain:
        def nngp(self, x1, x2=None):
            return net.nngp(x1, x2)

        def ntk(self, x1, x2=None):
            return net.ntk(x1, x2)

    x, y, x_test = data
    a = nystrom_ensemble(net, x, y, 10, kernel="nngp", seed=4, diag_reg=1e-3)
    b = nystrom_ensemble(Plain(), x, y, 10, kernel="nngp", seed=4, diag_reg=1e-3)
    close(b.predict(x_test, TIMES, variance_only=True).covariance,
          a.predict(x_test, TIMES, variance_only=True).covariance, 1e-12)


# ----------------------------------------------------------------------------- landmarks

def test_leverage_sampling_prefers_the_isolated_points(net):
    """A tight cluster and a few far-away points: ridge leverage gives the isolated points
    (each explains itself alone) far more weight than uniform sampling's m/N."""
    rng = np.random.default_rng(0)
    cluster = 0.01 * rng.standard_normal((400, 3)) + np.array([1.0, 0.0, 0.0])
    outliers = rng.standard_normal((10, 3)) * 3
    x = np.concatenate([cluster, outliers])
    counts = np.zeros(len(x))
    for seed in range(20):
        counts[select_landmarks(x, 20, method="leverage", seed=seed, arch=net)] += 1
    # uniform: each outlier chosen with probability 20/410 ≈ 0.05
    assert counts[400:].mean() / 20 > 0.5
    assert len(select_landmarks(x, 20, seed=1)) == 20


def test_duplicate_landmarks_are_dropped_with_a_warning(net):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 4))
    x[5] = x[3]
    x[9] = x[3]
    y = rng.standard_normal(30)
    with pytest.warns(DuplicateLandmarkWarning, match="2 of the 6 landmarks repeat"):
        approx = nystrom_ensemble(net, x, y, 6, landmarks=np.array([0, 3, 5, 9, 12, 20]))
    assert approx.n_components == 4
    assert np.all(np.isfinite(approx.predict(x[:3], TIMES).mean))


def test_nearly_singular_landmark_kernel_gets_jitter_with_a_warning(net):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20, 4))
    x[1] = x[0]
    x[1, 0] += 1e-8  # distinct rows, numerically the same kernel column
    with pytest.warns(SingularKernelWarning, match=r"added jitter .* x its mean diagonal"):
        approx = nystrom_ensemble(net, x, rng.standard_normal(20), 5,
                                  landmarks=np.array([0, 1, 2, 3, 4]), diag_reg=1e-3)
    assert approx.features["ntk"].jitter > 0


def test_well_conditioned_landmarks_warn_nothing(data, net):
    x, y, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        approx = nystrom_ensemble(net, x, y, 20, seed=0)
    assert approx.features["ntk"].jitter == 0.0


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("m, message", [
    (41, "n_components must be from 1 to the number of training samples \\(40\\), got 41"),
    (0, "got 0"), (-3, "got -3"), (2.5, "whole number"), (True, "whole number")])
def test_bad_numbers_of_landmarks_are_refused(data, net, m, message):
    x, y, _ = data
    with pytest.raises(InputError, match=message):
        nystrom_ensemble(net, x, y, m)


@pytest.mark.parametrize("landmarks, message", [
    ("kmeans", "'uniform', 'leverage'"),
    (np.array([0, 0, 1]), "repeat"),
    (np.array([0, 40]), "from 0 to 39"),
    (np.array([0.5, 1.0]), "array of row indices")])
def test_bad_landmarks_are_refused(data, net, landmarks, message):
    x, y, _ = data
    count = len(landmarks) if not isinstance(landmarks, str) else 3
    with pytest.raises(InputError, match=message):
        nystrom_ensemble(net, x, y, count, landmarks=landmarks)


def test_ntk_covariance_without_the_nngp_features_is_refused(data, net):
    x, y, x_test = data
    approx = nystrom_ensemble(net, x, y, 10)
    with pytest.raises(InputError, match="covariance=True"):
        approx.predict(x_test, compute_cov=True)


def test_a_full_covariance_beyond_one_block_is_refused_before_work(data, net, monkeypatch):
    import ntkdsl.nystrom as nystrom

    x, y, x_test = data
    approx = nystrom_ensemble(net, x, y, 10, kernel="nngp")
    monkeypatch.setattr(nystrom, "_MIN_BLOCK_ROWS", 3)
    monkeypatch.setattr(nystrom, "_BLOCK_BYTES", 1)
    monkeypatch.setattr(approx, "_rows", None)  # no kernel evaluation may start
    with pytest.raises(InputError, match="the full covariance of 7 test inputs is more than "
                                         "one block \\(3 rows") as info:
        approx.predict(x_test, compute_cov=True)
    assert "variance_only=True" in info.value.hint


def test_bad_times_and_targets_are_refused(data, net):
    x, y, x_test = data
    with pytest.raises(InputError, match="y_train contains NaN"):
        nystrom_ensemble(net, x, np.full(40, np.nan), 10)
    with pytest.raises(InputError, match="training times must be >= 0"):
        nystrom_ensemble(net, x, y, 10).predict(x_test, -1.0)


# ----------------------------------------------------------------------------- estimators

@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, 4))
    return x, np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2], rng.standard_normal((8, 4))


@pytest.mark.parametrize("solver", ["nystrom", "cg"])
def test_regressor_solvers_give_the_exact_predictions(regression, solver):
    x, y, x_test = regression
    exact = NTKRegressor(ARCH, time=50.0, diag_reg=1e-3, solver="exact").fit(x, y)
    other = NTKRegressor(ARCH, time=50.0, diag_reg=1e-3, solver=solver,
                         n_components=len(x)).fit(x, y)
    assert other.solver_ == solver
    close(other.predict(x_test), exact.predict(x_test))
    close(other.predict_trajectory(x_test, [1.0, 10.0, np.inf]),
          exact.predict_trajectory(x_test, [1.0, 10.0, np.inf]))


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_nystrom_regressor_std_and_cov_are_the_exact_ones(regression, kernel):
    x, y, x_test = regression
    params = dict(kernel=kernel, time=30.0, diag_reg=1e-3, n_components=len(x))
    exact = NTKRegressor(ARCH, solver="exact", **params).fit(x, y)
    approx = NTKRegressor(ARCH, solver="nystrom", **params).fit(x, y)
    for option in ("return_std", "return_cov"):
        want = exact.predict(x_test, **{option: True})
        got = approx.predict(x_test, **{option: True})
        close(got[0], want[0])
        close(got[1], want[1], 1e-7)


def test_nystrom_classifier_matches_exact_at_all_landmarks():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 3))
    labels = np.array(["a", "b", "c"])[np.argmax(x, axis=1)]
    exact = NTKClassifier(ARCH, time=100.0, solver="exact").fit(x, labels)
    approx = NTKClassifier(ARCH, time=100.0, solver="nystrom", n_components=50).fit(x, labels)
    close(approx.decision_function(x[:10]), exact.decision_function(x[:10]))
    assert np.all(approx.predict(x) == exact.predict(x))


def test_auto_picks_nystrom_beyond_the_exact_limit_and_says_so(regression, monkeypatch):
    import ntkdsl.estimators as estimators

    x, y, _ = regression
    assert NTKRegressor(ARCH).fit(x, y).solver_ == "exact"
    monkeypatch.setattr(estimators, "AUTO_EXACT_LIMIT", 50)
    reg = NTKRegressor(ARCH, n_components=20).fit(x, y)
    assert reg.solver_ == "nystrom" and reg.ensemble_.n_components == 20
    assert "solver 'nystrom' (auto: N = 60 > 50; 20 landmarks)" in repr(reg)


def test_too_large_for_the_exact_solver_is_refused_naming_nystrom(regression, monkeypatch):
    import ntkdsl.estimators as estimators
    import ntkdsl.evaluation.memory as memory

    x, y, _ = regression
    monkeypatch.setattr(memory, "memory_limits", lambda: {"free memory": 100_000})
    monkeypatch.setattr(estimators, "available_memory", lambda: 100_000)
    with pytest.raises(InputError, match="needs") as info:
        NTKRegressor(ARCH, solver="exact").fit(x, y)
    assert "solver='nystrom', n_components=60" in info.value.hint
    assert NTKRegressor(ARCH, n_components=10).fit(x, y).solver_ == "nystrom"


def test_bad_solvers_and_components_are_refused(regression):
    x, y, _ = regression
    with pytest.raises(InputError, match="solver must be one of 'auto', 'exact', 'nystrom'"):
        NTKRegressor(ARCH, solver="lu").fit(x, y)
    with pytest.raises(InputError, match="got 61"):
        NTKRegressor(ARCH, solver="nystrom", n_components=61).fit(x, y)
    cg = NTKRegressor(ARCH, solver="cg").fit(x, y)
    with pytest.raises(InputError, match="return_std / return_cov needs solver='exact' or "
                                         "'nystrom'"):
        cg.predict(x, return_std=True)


# The regressor with every training row a landmark (n_components=None, N < 2,000): scikit-learn's
# training-score check needs a good fit; the classifier's checks pass with 10.
@parametrize_with_checks([NTKRegressor(ARCH, solver="nystrom", diag_reg=1e-3),
                          NTKClassifier(ARCH, solver="nystrom", n_components=10, diag_reg=1e-3),
                          NTKRegressor(ARCH, solver="cg", diag_reg=1e-3)])
def test_scikit_learn_contract_of_the_large_n_solvers(estimator, check):
    check(estimator)


# ----------------------------------------------------------------------------- command line

def write_csv(path, x, y):
    lines = ["a,b,c,y"] + [",".join(map(repr, map(float, (*r, t)))) for r, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def metrics(output: str) -> np.ndarray:
    import re
    return np.array([[float(v) for v in m.groups()] for m in re.finditer(
        r"^\s*(?:inf|[\d.e+]+)\s+([-\d.e+]+)\s+([-\d.e+]+)\s+([-\d.e+]+)\s+([-\d.e+]+)\s*$",
        output, re.M)])


def test_fit_command_with_the_nystrom_solver_matches_exact(tmp_path, capsys):
    from ntkdsl.cli import main

    rng = np.random.default_rng(8)
    x = rng.standard_normal((80, 3))
    path = write_csv(tmp_path / "data.csv", x, np.sin(x[:, 0]) + x[:, 1] * x[:, 2])
    common = ["fit", ARCH, "--data", str(path), "--target", "y", "--times", "1,10,100",
              "--diag-reg", "1e-3"]
    assert main([*common, "--solver", "exact"]) == 0
    exact = capsys.readouterr().out
    assert main([*common, "--solver", "nystrom", "--n-components", "60"]) == 0
    approx = capsys.readouterr().out
    assert "solver        nystrom (as asked)" in approx and "Nyström with 60 landmarks" in approx
    assert metrics(approx).shape == (4, 4)
    # 60 training rows (test size 0.25): every row a landmark, so the numbers are the exact ones
    assert np.allclose(metrics(approx), metrics(exact), rtol=1e-3, atol=1e-6)
    assert main([*common, "--solver", "nystrom", "--n-components", "61"]) == 1
    assert "n_components must be from 1 to the number of training samples (60)" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--solver", "exact", "--n-components", "60"])
    assert exit_info.value.code == 2
    assert "--n-components is for --solver nystrom (or auto), not exact" in capsys.readouterr().err


def test_csv_is_read_in_chunks_with_the_same_numbers_and_line_numbers(tmp_path, monkeypatch):
    from ntkdsl.commands import fit

    rng = np.random.default_rng(9)
    x = rng.standard_normal((50, 3))
    path = write_csv(tmp_path / "data.csv", x, x[:, 0])
    whole = fit.load_csv(path, "y")
    monkeypatch.setattr(fit, "CSV_CHUNK_ROWS", 7)
    chunked = fit.load_csv(path, "y")
    assert np.array_equal(chunked.X, whole.X) and np.array_equal(chunked.y, whole.y)
    assert np.array_equal(chunked.X, x)
    lines = path.read_text().splitlines()
    lines[40] = lines[40].replace(lines[40].split(",")[1], "oops", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 41, column 'b': 'oops' is not a number"):
        fit.load_csv(path, "y")


@pytest.mark.parametrize("absolute", [False, True])
def test_another_ridge_without_another_pass_equals_a_fresh_fit(data, net, absolute):
    x, y, x_test = data
    first = nystrom_ensemble(net, x, y, 15, diag_reg=1e-4, diag_reg_absolute_scale=absolute)
    fresh = nystrom_ensemble(net, x, y, 15, diag_reg=0.3, diag_reg_absolute_scale=absolute)
    moved = first.with_diag_reg(0.3, absolute_scale=absolute)
    assert moved.effective_diag_reg == pytest.approx(fresh.effective_diag_reg, rel=1e-12)
    times = np.append(TIMES, np.inf)
    close(moved.predict(x_test, times).mean, fresh.predict(x_test, times).mean, 1e-10)
    # the first ensemble keeps its own ridge
    assert first.effective_diag_reg < moved.effective_diag_reg
    with pytest.raises(InputError, match="diag_reg"):
        first.with_diag_reg(-1.0)


@pytest.mark.parametrize("t", [None, 10.0])
def test_the_exact_solver_too_large_is_refused_before_work_naming_nystrom(data, net, t,
                                                                          monkeypatch):
    """The predict-level exact solver (no estimator in between) refuses a kernel whose
    factorisation (t = ∞) or eigendecomposition (finite t) would not fit, before the
    first N x N temporary, and names the solvers that would."""
    import ntkdsl.evaluation.memory as memory

    x, y, _ = data
    kernel = net.ntk(x)
    n_bytes = kernel.nbytes
    budget = {None: 2 * n_bytes, 10.0: 3.5 * n_bytes}[t]  # t = 10: Cholesky fits, eigh not
    monkeypatch.setattr(memory, "memory_limits", lambda: {"free memory": budget})
    with pytest.raises(InputError, match="needs") as info:
        gradient_descent_mse_ensemble(kernel, y, diag_reg=1e-3).predict(net.ntk(x[:3], x), t)
    assert "nystrom_ensemble(arch, x_train, y_train, n_components=2000)" in info.value.hint
    assert "cg_ensemble" in info.value.hint
