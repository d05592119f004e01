"""Issue 11, point 7: no quiet wrong answers.

Complex inputs are refused everywhere (not cut to their real part); asymmetric training kernels
are refused with the worst entry named; kernel names follow one case-insensitive rule with one
message; a singular training kernel warns once, where it is factorised, at the user's line."""
from __future__ import annotations

import types
import warnings

import numpy as np
import pytest

import ntkdsl
from ntkdsl.cli import main
from ntkdsl.errors import InputError
from ntkdsl.estimators import NTKClassifier, NTKRegressor
from ntkdsl.finite import FiniteNetwork, empirical_ntk, monte_carlo_nngp
from ntkdsl.predict import SingularKernelWarning, gp_inference, gradient_descent_mse_ensemble

ARCH = "Dense(64, W_std=1.5, b_std=0.1) > Relu > Dense(1, W_std=1.5, b_std=0.1)"
NET = ntkdsl.compile(ARCH)
RNG = np.random.default_rng(11)
X = RNG.standard_normal((8, 3))
X_TEST = RNG.standard_normal((4, 3))
Y = np.sin(X @ np.array([1.0, -0.5, 0.25]))


def _strict(call):
    """Run ``call`` with every warning an error: a ComplexWarning (NumPy's only sign that it
    dropped an imaginary part) fails the test instead of passing quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


# ----------------------------------------------------------------------------- complex data

def _complex(a):
    return a + 0j  # an imaginary part of zero is refused too: the rule is the dtype


COMPLEX_CALLS = {
    "net.nngp x1": lambda: NET.nngp(_complex(X)),
    "net.ntk x2": lambda: NET.ntk(X, _complex(X_TEST)),
    "net.kernels": lambda: NET.kernels(_complex(X)),
    "net.diagonal": lambda: NET.diagonal(_complex(X)),
    "list input": lambda: NET.ntk([[1.0, 2.0 + 1j, 3.0]]),
    "solver k_train_train": lambda: gradient_descent_mse_ensemble(_complex(NET.ntk(X)), Y),
    "solver y_train": lambda: gradient_descent_mse_ensemble(NET.ntk(X), Y + 1j),
    "solver k_test_train": lambda: gradient_descent_mse_ensemble(NET.ntk(X), Y).predict(
        _complex(NET.ntk(X_TEST, X))),
    "solver nngp_train_train": lambda: gradient_descent_mse_ensemble(
        NET.ntk(X), Y, nngp_train_train=_complex(NET.nngp(X))),
    "solver t": lambda: gradient_descent_mse_ensemble(NET.ntk(X), Y).predict(
        NET.ntk(X_TEST, X), np.array([1.0 + 2j])),
    "gp_inference": lambda: gp_inference(_complex(NET.nngp(X)), Y),
    "regressor X": lambda: NTKRegressor(ARCH).fit(_complex(X), Y),
    "regressor y": lambda: NTKRegressor(ARCH).fit(X, Y + 1j),
    "regressor predict": lambda: NTKRegressor(ARCH).fit(X, Y).predict(_complex(X_TEST)),
    "regressor times": lambda: NTKRegressor(ARCH).fit(X, Y).predict_trajectory(X_TEST, [1j]),
    "classifier X": lambda: NTKClassifier(ARCH).fit(_complex(X), Y > 0),
    "empirical_ntk": lambda: empirical_ntk(ARCH, _complex(X), width=16),
    "monte_carlo_nngp": lambda: monte_carlo_nngp(ARCH, X, _complex(X_TEST), width=16, samples=2),
    "finite apply": lambda: FiniteNetwork(ARCH, 3, 16).apply(FiniteNetwork(ARCH, 3, 16).init(),
                                                             _complex(X)),
    "finite train y": lambda: FiniteNetwork(ARCH, 3, 16).train(
        FiniteNetwork(ARCH, 3, 16).init(), X, Y + 1j, 0.1, 1),
    "finite loss y": lambda: FiniteNetwork(ARCH, 3, 16).loss_and_grad(
        FiniteNetwork(ARCH, 3, 16).init(), X, (Y + 1j)[:, None]),
}


@pytest.mark.parametrize("call", COMPLEX_CALLS.values(), ids=COMPLEX_CALLS.keys())
def test_complex_input_is_refused_not_truncated(call):
    with pytest.raises(InputError, match=r"Complex data not supported: .* has a complex dtype"):
        _strict(call)


def test_complex_refusal_names_the_argument():
    with pytest.raises(InputError, match="x2 has a complex dtype") as info:
        NET.ntk(X, _complex(X_TEST))
    assert "x2.real" in str(info.value)  # says what would be valid
    with pytest.raises(InputError, match="y_train has a complex dtype"):
        gradient_descent_mse_ensemble(NET.ntk(X), Y + 1j)


def test_standalone_module_refuses_complex_input():
    module = types.ModuleType("standalone_quiet")
    exec(ntkdsl.codegen(ARCH), module.__dict__)  # our own generated source, not user text
    np.testing.assert_allclose(module.ntk(X), NET.ntk(X), rtol=1e-12)  # real input: unchanged
    for call in (lambda: module.ntk(_complex(X)), lambda: module.nngp(X, _complex(X_TEST))):
        with pytest.raises(ValueError, match="Complex data not supported"):
            _strict(call)


# ----------------------------------------------------------------------------- symmetry

def _closed_form_mean(k_train, k_test_train, y):
    """t = ∞ mean K*ᵀ K⁻¹ y by a plain solve: the independent computation."""
    return k_test_train @ np.linalg.solve(k_train, y)


def test_asymmetric_training_kernel_is_refused_with_its_worst_entry():
    kernel = NET.ntk(X)
    bad = kernel.copy()
    bad[5, 2] += 1e-3 * np.abs(kernel).max()  # the worst asymmetry
    bad[1, 6] -= 1e-4 * np.abs(kernel).max()  # a smaller one, not the one to report
    with pytest.raises(InputError, match="k_train_train is not symmetric") as info:
        gradient_descent_mse_ensemble(bad, Y)
    message = str(info.value)
    assert "[5, 2]" in message and "[2, 5]" in message
    assert f"{bad[5, 2]:.17g}" in message and f"{bad[2, 5]:.17g}" in message


def test_transposed_cross_kernel_is_refused():
    # a square test x train kernel passed as the training kernel: a plausible mix-up
    cross = NET.ntk(X[::-1].copy(), X)
    with pytest.raises(InputError, match="not symmetric"):
        gp_inference(cross, Y)


@pytest.mark.parametrize("argument", ["nngp_train_train", "nngp_test_test"])
def test_asymmetric_nngp_matrices_are_refused_too(argument):
    nngp_train, nngp_test = NET.nngp(X), NET.nngp(X_TEST)
    matrices = {"nngp_train_train": nngp_train.copy(), "nngp_test_test": nngp_test.copy()}
    matrices[argument][0, 1] *= 1.01
    with pytest.raises(InputError, match=f"{argument} is not symmetric"):
        ensemble = gradient_descent_mse_ensemble(NET.ntk(X), Y,
                                                 nngp_train_train=matrices["nngp_train_train"])
        ensemble.predict(NET.ntk(X_TEST, X), 10.0, nngp_test_train=NET.nngp(X_TEST, X),
                         nngp_test_test=matrices["nngp_test_test"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_symmetric_up_to_rounding_pass_and_both_halves_count(dtype):
    # Nearly collinear rows make the ReLU NTK's rounding asymmetry as large as it gets.
    x = np.concatenate([X, X[:3] * (1 + 1e-9) + 1e-10])
    y = np.concatenate([Y, Y[:3]])
    kernel = NET.ntk(x, x.copy(), dtype=dtype)  # x2 given: no mirroring, rounding differs
    assert np.abs(kernel - kernel.T).max() > 0
    cross = NET.ntk(X_TEST, x)
    mean = gradient_descent_mse_ensemble(kernel, y, diag_reg=1e-3).predict(cross).mean
    symmetric = (kernel.astype(np.float64) + kernel.T) / 2
    ridge = 1e-3 * np.trace(symmetric) / len(x) * np.eye(len(x))
    np.testing.assert_allclose(mean, _closed_form_mean(symmetric + ridge, cross, y), rtol=1e-8)


# ----------------------------------------------------------------------------- kernel names

def test_formula_takes_kernel_names_in_any_case():
    assert str(NET.formula("NTK")) == str(NET.formula("ntk"))
    assert str(NET.formula("Nngp")) == str(NET.formula("nngp"))
    assert str(NET.formula("NTK")) != str(NET.formula("nngp"))


def test_solvers_and_estimators_take_kernel_names_in_any_case():
    cross = NET.nngp(X_TEST, X)
    upper = gradient_descent_mse_ensemble(NET.nngp(X), Y, kernel="NNGP").predict(cross, 5.0)
    lower = gradient_descent_mse_ensemble(NET.nngp(X), Y, kernel="nngp").predict(cross, 5.0)
    np.testing.assert_array_equal(upper.mean, lower.mean)
    np.testing.assert_array_equal(NTKRegressor(ARCH, kernel="NnGp").fit(X, Y).predict(X_TEST),
                                  NTKRegressor(ARCH, kernel="nngp").fit(X, Y).predict(X_TEST))


def _message(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    return str(info.value)


def test_one_message_for_an_unknown_kernel_everywhere(capsys):
    messages = {
        "formula": _message(lambda: NET.formula("rbf")),
        "solver": _message(lambda: gradient_descent_mse_ensemble(NET.ntk(X), Y, kernel="rbf")),
        "regressor": _message(lambda: NTKRegressor(ARCH, kernel="rbf").fit(X, Y)),
        "classifier": _message(lambda: NTKClassifier(ARCH, kernel="rbf").fit(X, Y > 0)),
    }
    assert len(set(messages.values())) == 1, messages
    message = messages["formula"]
    assert "'rbf'" in message and "'nngp' or 'ntk'" in message
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", ARCH, "--dataset", "iris", "--kernel", "rbf"])
    assert exit_info.value.code == 2  # a usage error, as for every bad option
    # The command line prints every usage error on one line.
    assert message.replace("\n", " ") in capsys.readouterr().err


def test_cli_fit_takes_kernel_names_in_any_case(capsys):
    assert main(["fit", ARCH, "--dataset", "iris", "--kernel", "NNGP", "--times", "1"]) == 0
    assert "kernel        NNGP (readout only)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- singular kernels

X_DUPLICATED = np.concatenate([X, X[:2]])  # duplicate inputs: a numerically singular kernel
Y_DUPLICATED = np.concatenate([Y, Y[:2]])


def _singular_warnings(call) -> tuple[object, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w for w in caught if issubclass(w.category, SingularKernelWarning)]


def _assert_warned_here(found: list[warnings.WarningMessage]) -> None:
    assert len(found) == 1, [str(w.message) for w in found]
    assert found[0].filename == __file__, found[0].filename


@pytest.mark.parametrize("t", [None, [1.0, 10.0, np.inf]])
def test_solver_warns_once_at_construction_pointing_at_the_caller(t):
    cross = NET.ntk(X_TEST, X_DUPLICATED)
    ensemble, found = _singular_warnings(
        lambda: gradient_descent_mse_ensemble(NET.ntk(X_DUPLICATED), Y_DUPLICATED))
    _assert_warned_here(found)
    for _ in range(2):  # predictions use the repaired factorisation, silently
        mean, again = _singular_warnings(lambda: ensemble.predict(cross, t).mean)
        assert again == [] and np.all(np.isfinite(mean))


def test_gp_inference_warns_at_construction_pointing_at_the_caller():
    posterior, found = _singular_warnings(lambda: gp_inference(NET.nngp(X_DUPLICATED),
                                                               Y_DUPLICATED))
    _assert_warned_here(found)
    _, again = _singular_warnings(lambda: posterior.predict(NET.nngp(X_TEST, X_DUPLICATED),
                                                            NET.nngp(X_TEST)))
    assert again == []


@pytest.mark.parametrize("time", [None, 50.0])
def test_estimator_warns_at_fit_pointing_at_the_caller_not_at_predict(time):
    regressor, found = _singular_warnings(
        lambda: NTKRegressor(ARCH, time=time).fit(X_DUPLICATED, Y_DUPLICATED))
    _assert_warned_here(found)
    for _ in range(2):
        _, again = _singular_warnings(lambda: regressor.predict(X_TEST, return_std=True))
        assert again == []


def test_well_conditioned_kernels_do_not_warn():
    _, found = _singular_warnings(lambda: NTKRegressor(ARCH, time=10.0).fit(X, Y).predict(X_TEST))
    assert found == []
