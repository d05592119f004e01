"""Krylov solver (ntkdsl.krylov) against the exact solver of ntkdsl.predict."""
from __future__ import annotations

import re

import numpy as np
import pytest

import ntkdsl
from ntkdsl.errors import InputError, ShapeError
from ntkdsl.krylov import ConvergenceWarning, cg_ensemble
from ntkdsl.predict import gradient_descent_mse_ensemble

ARCH = "(Dense(512, W_std=1.5, b_std=0.1) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.1)"
TIMES = np.array([0.0, 1.0, 10.0, 100.0])


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 5))
    y = np.stack([np.sin(2 * x[:, 0]), x[:, 1] * x[:, 2]], axis=1)
    x_test = rng.standard_normal((9, 5))
    net = ntkdsl.compile(ARCH)
    return net.ntk(x), net.ntk(x_test, x), y


def relative_error(got, want):
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


@pytest.mark.parametrize("diag_reg", [0.0, 1e-3])
def test_conjugate_gradients_give_the_exact_infinite_time_means(problem, diag_reg):
    train, cross, y = problem
    exact = gradient_descent_mse_ensemble(train, y, diag_reg=diag_reg).predict(cross).mean
    krylov = cg_ensemble(train, y, diag_reg=diag_reg, n_components=60, rtol=1e-12)
    assert relative_error(krylov.predict(cross).mean, exact) < 1e-8
    assert krylov.effective_diag_reg == pytest.approx(diag_reg * np.trace(train) / len(train))


def test_the_preconditioner_cuts_the_iterations(problem):
    train, _, y = problem
    counts = {}
    for rank in (1, 100):
        krylov = cg_ensemble(train, y[:, 0], diag_reg=1e-4, n_components=rank, rtol=1e-10)
        krylov.solve()
        counts[rank] = krylov.operator.products
    assert counts[100] < counts[1] / 3, counts


def test_expm_multiply_gives_the_exact_finite_time_means(problem, tmp_path):
    """From a memmap on disk too: the products read it block by block."""
    train, cross, y = problem
    exact = gradient_descent_mse_ensemble(train, y, diag_reg=1e-3).predict(cross, TIMES).mean
    stored = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                       shape=train.shape)
    stored[:] = train
    krylov = cg_ensemble(stored, y, diag_reg=1e-3)
    assert relative_error(krylov.predict(cross, TIMES).mean, exact) < 1e-9
    # 1-D targets, unsorted times and t = ∞ mixed in
    times = np.array([100.0, np.inf, 1.0])
    want = gradient_descent_mse_ensemble(train, y[:, 0], diag_reg=1e-3).predict(cross, times)
    got = cg_ensemble(train, y[:, 0], diag_reg=1e-3, rtol=1e-12).predict(cross, times)
    assert got.mean.shape == want.mean.shape == (3, 9)
    assert relative_error(got.mean, want.mean) < 1e-8


def test_no_convergence_within_the_budget_warns_with_the_residual(problem):
    train, _, y = problem
    krylov = cg_ensemble(train, y[:, 0], n_components=1, maxiter=3, rtol=1e-12)
    with pytest.warns(ConvergenceWarning, match=r"stopped after 3 iterations with relative "
                                                r"residual \d\.\d+e[-+]\d+") as record:
        solution = krylov.solve()[:, 0]
    # the residual it states is the one of the answer it returns (computed here directly)
    reported = float(re.search(r"residual (\S+), above", str(record[0].message)).group(1))
    regularised = train + krylov.effective_diag_reg * np.eye(len(train))
    actual = np.linalg.norm(y[:, 0] - regularised @ solution) / np.linalg.norm(y[:, 0])
    assert actual > 1e-12
    assert reported == pytest.approx(actual, rel=1e-3)


def test_a_flow_too_long_for_krylov_steps_is_refused_up_front(problem):
    train, cross, y = problem
    krylov = cg_ensemble(train, y, max_products=50)
    with pytest.raises(InputError, match="more than the budget 50") as info:
        krylov.predict(cross, 1e6)
    assert "solver='nystrom'" in info.value.hint
    assert krylov.operator.products == 0


def test_bad_kernels_are_refused(problem):
    train, _, y = problem
    with pytest.raises(ShapeError, match="square"):
        cg_ensemble(train[:, :10], y)
    broken = train.copy()
    broken[3, 4] = np.nan
    with pytest.raises(InputError, match=r"entry \[3, 4\] is nan"):
        cg_ensemble(broken, y)
    with pytest.raises(InputError, match="n_components"):
        cg_ensemble(train, y, n_components=301)
