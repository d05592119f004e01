"""Pickling and copying (issue 11, point 3): compiled networks on every route, formulas,
finite networks with their parameters, solvers and fitted estimators survive ``pickle``,
``copy.deepcopy``, a fresh interpreter and joblib's process workers with the same numbers.

The yardstick is always the original object evaluated in this process; the copies must give
bit-identical results (the copy recompiles from the architecture string and runs the same
generated code on the same inputs)."""
from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

import ntkdsl
from ntkdsl import network
from ntkdsl.estimators import ArchTemplate, NTKClassifier, NTKRegressor
from ntkdsl.finite import FiniteNetwork
from ntkdsl.formula import Formula
from ntkdsl.predict import gp_inference, gradient_descent_mse_ensemble

# One architecture per route (the note net.formula() gives each activation layer is checked
# below, so a change of route cannot silently empty a case).
ARCHS = {
    "relu closed form": "Dense(512, W_std=1.5, b_std=0.1) > Relu > Dense(1)",
    "erf closed form": "Dense(512, W_std=1.5, b_std=0.1) > Erf > Dense(1)",
    "Gaussian integration rules": 'Dense(512) > Fn("sin(x) + 0.5*x") > Dense(1)',
    "tanh numerical": "(Dense(512, W_std=1.5, b_std=0.1) > Tanh) * 2 > Dense(1)",
    "softplus numerical": "Dense(512, b_std=0.2) > Softplus > Dense(1)",
    "composed numerical": "Dense(512) > Relu > Sin > Dense(1)",
    "layernorm": "Dense(512, b_std=0.1) > LayerNorm > Relu > Dense(1)",
    "sum": "Dense(512) > (Relu > Dense(512) + Identity) > Relu > Dense(1)",
    "standard": ("Dense(64, W_std=1.5, b_std=0.1, parameterization='standard') > Erf > "
                 "Dense(1, parameterization='standard')"),
}
ROUTES = {
    "relu closed form": "closed form", "erf closed form": "closed form",
    "Gaussian integration rules": "closed form (Gaussian integration rules)",
    "tanh numerical": "numerical", "softplus numerical": "numerical",
    "composed numerical": "numerical", "layernorm": "closed form", "sum": "closed form",
    "standard": "closed form",
}
FINITE_ARCHS = ("tanh numerical", "Gaussian integration rules", "layernorm", "sum", "standard")
PACKAGE_ROOT = Path(ntkdsl.__file__).resolve().parent.parent


def _inputs():
    """Two input sets with the awkward pairs: an input repeated (exact diagonal path), a
    nearly collinear pair and an exactly opposite pair."""
    rng = np.random.default_rng(11)
    x1 = rng.standard_normal((7, 5))
    x1[3] = x1[0]
    x1[4] = x1[1] * (1 + 1e-9)
    x2 = np.vstack([x1[:2], -x1[2:3], rng.standard_normal((3, 5))])
    return x1, x2


X1, X2 = _inputs()


def _kernel_numbers(net) -> dict:
    return {"nngp": net.nngp(X1, X2), "ntk self": net.ntk(X1), "diagonal": net.diagonal(X2),
            "kernels": net.kernels(X2, X1)}


def _assert_same(got, want, path="result"):
    """Equal structure and bit-identical arrays (strings and flags equal)."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), path
        for key in want:
            _assert_same(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, (tuple, list)) and not isinstance(want, np.ndarray):
        assert type(got) is type(want) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype, path
        np.testing.assert_array_equal(got, want, err_msg=path)
    else:
        assert got == want, path


# --------------------------------------------------------------------------- networks

@pytest.mark.parametrize("name", ARCHS)
def test_each_case_is_on_its_route(name):
    notes = [layer.note for layer in ntkdsl.compile(ARCHS[name]).formula("ntk").layers]
    assert any(note.startswith(ROUTES[name]) for note in notes if note), notes
    if ROUTES[name] == "closed form":
        assert not any(note.startswith("numerical") for note in notes), notes


@pytest.mark.parametrize("name", ARCHS)
def test_network_unpickles_to_a_recompiled_network_with_the_same_numbers(name):
    net = ntkdsl.compile(ARCHS[name])
    want = _kernel_numbers(net)
    blob = pickle.dumps(net)
    network._compile.cache_clear()  # force a real recompile, not the cached object back
    restored = pickle.loads(blob)
    assert restored is not net and restored.arch == net.arch
    assert restored.program == net.program and restored.source == net.source
    _assert_same(_kernel_numbers(restored), want)


@pytest.mark.parametrize("name", ARCHS)
def test_network_deepcopy_and_copy_give_the_same_numbers(name):
    net = ntkdsl.compile(ARCHS[name])
    want = _kernel_numbers(net)
    for duplicate in (copy.deepcopy(net), copy.copy(net), copy.deepcopy([net, net])[1]):
        _assert_same(_kernel_numbers(duplicate), want)


@pytest.mark.parametrize("name", ARCHS)
def test_network_pickle_is_its_architecture_string(name):
    arch = ARCHS[name]
    blob = pickle.dumps(ntkdsl.compile(arch), protocol=pickle.HIGHEST_PROTOCOL)
    assert arch.encode() in blob
    # Measured: 48 bytes plus the string (the call ntkdsl.network.compile(arch)).
    assert len(blob) <= len(arch.encode()) + 64, len(blob)


# --------------------------------------------------------------------------- formulas

@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_formula_round_trips(name, kind):
    formula = ntkdsl.compile(ARCHS[name]).formula(kind)
    text, latex = str(formula), formula.latex()  # fills the cached views first
    for duplicate in (pickle.loads(pickle.dumps(formula)), copy.deepcopy(formula)):
        assert isinstance(duplicate, Formula) and duplicate.kind == kind
        # Program equality needs the very same sympy function classes: the numerical
        # route's run-time classes must come back as the cached ones, not look-alikes.
        assert duplicate.program == formula.program
        assert duplicate.expression == formula.expression
        assert str(duplicate) == text and duplicate.latex() == latex


def test_formula_pickle_leaves_out_the_cached_views():
    formula = ntkdsl.compile(ARCHS["tanh numerical"]).formula("ntk")
    empty = len(pickle.dumps(formula))
    formula.expression, str(formula)
    assert len(pickle.dumps(formula)) == empty
    assert "expression" in vars(formula)


def test_numerical_classes_pickle_by_recipe():
    from ntkdsl import numerical

    formula = ntkdsl.compile(ARCHS["tanh numerical"]).formula("ntk")
    classes = {type(node) for node in formula.expression.atoms(numerical.NumericalDual)}
    assert classes, "a Tanh NTK calls its numerical duals"
    for cls in classes:
        assert "recipe" in vars(cls) and getattr(numerical, cls.__name__) is cls
        assert pickle.loads(pickle.dumps(cls)) is cls
        assert pickle.loads(pickle.dumps(cls.moment)) is cls.moment
    # The named base classes still pickle by name.
    assert pickle.loads(pickle.dumps(numerical.NumericalDual)) is numerical.NumericalDual
    assert not hasattr(numerical, "Dual_000000000000")  # unknown names: AttributeError


def test_one_activation_under_two_labels_keeps_two_findable_classes():
    import cloudpickle

    from ntkdsl import numerical

    classes = []
    for arch in ("Dense(512) > Tanh > Dense(1)", 'Dense(512) > Fn("tanh(x)") > Dense(1)'):
        expression = ntkdsl.compile(arch).formula("ntk").expression
        classes += sorted({type(node) for node in expression.atoms(numerical.NumericalDual)},
                          key=lambda cls: cls.label)
    assert len({cls.tag for cls in classes}) == 2 and len(set(classes)) == 4  # same φ, φ'
    for cls in classes:
        assert getattr(numerical, cls.__name__) is cls
        # cloudpickle (joblib's loky workers) copies classes it cannot find by name
        assert cloudpickle.loads(cloudpickle.dumps(cls)) is cls
        assert pickle.loads(pickle.dumps(cls)) is cls


# --------------------------------------------------------------------------- finite networks

def _finite_case(name):
    net = FiniteNetwork(ARCHS[name], input_shape=X1.shape[1], width=16)
    return net, net.init(seed=3, samples=2)


def _finite_numbers(net, params) -> dict:
    return {"apply": net.apply(params, X1), "ntk": net.ntk(params, X1, X2),
            "num_params": net.num_params, "arch": net.arch}


@pytest.mark.parametrize("name", FINITE_ARCHS)
def test_finite_network_with_parameters_round_trips(name):
    net, params = _finite_case(name)
    want = _finite_numbers(net, params)
    for restored, restored_params in (pickle.loads(pickle.dumps((net, params))),
                                      copy.deepcopy((net, params))):
        _assert_same(restored_params, params)
        _assert_same(_finite_numbers(restored, restored_params), want)
        # Parameters drawn by the copy from the same seed are the same arrays.
        _assert_same(restored.init(seed=3, samples=2), params)


# --------------------------------------------------------------------------- solvers

def _training_problem():
    net = ntkdsl.compile(ARCHS["tanh numerical"])
    y = np.sin(X1 @ np.arange(1.0, 6.0))[:, None] * np.array([1.0, -0.5])
    train = X1[[0, 1, 2, 5, 6]]  # without the repeated rows: a regular kernel
    return net, train, y[[0, 1, 2, 5, 6]]


def _solvers():
    net, train, y = _training_problem()
    ntk, nngp = net.ntk(train), net.nngp(train)
    flow = gradient_descent_mse_ensemble(ntk, y, nngp_train_train=nngp, learning_rate=0.5,
                                         diag_reg=1e-3)
    posterior = gp_inference(nngp, y, diag_reg=1e-3)
    return {"flow": flow, "posterior": posterior}


def _solver_numbers(solvers) -> dict:
    net, train, _ = _training_problem()
    cross_ntk, cross_nngp, test_nngp = net.ntk(X2, train), net.nngp(X2, train), net.nngp(X2)
    flow, posterior = solvers["flow"], solvers["posterior"]
    return {
        "flow test": tuple(flow.predict(cross_ntk, [0.0, 1.0, 10.0, np.inf],
                                        nngp_test_train=cross_nngp, nngp_test_test=test_nngp)),
        "flow train": tuple(flow.predict_train(3.0, compute_cov=True)),
        "posterior": tuple(posterior.predict(cross_nngp, test_nngp)),
    }


def test_solvers_round_trip_before_and_after_their_factorisation():
    solvers = _solvers()
    unused = pickle.dumps(solvers)  # lazily factorised: nothing computed yet
    want = _solver_numbers(solvers)
    for duplicate in (pickle.loads(unused), pickle.loads(pickle.dumps(solvers)),
                      copy.deepcopy(solvers)):
        _assert_same(_solver_numbers(duplicate), want)


# --------------------------------------------------------------------------- estimators

def _estimators():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((24, 4))
    y = X[:, 0] - 0.5 * X[:, 1] ** 2
    labels = np.array(["a", "b", "c"])[(X[:, 2] > 0).astype(int) + (X[:, 3] > 0.5)]
    template = ArchTemplate("(Dense(512, W_std={w}, b_std=0.1) > Tanh) * {L} > Dense(1)",
                            w=1.5, L=2)
    return {
        "regressor": NTKRegressor(ARCHS["erf closed form"], time=10.0).fit(X, y),
        "template regressor": NTKRegressor(template, diag_reg=1e-3).fit(X, y),
        "template classifier": NTKClassifier(template, time=100.0).fit(X, labels),
        "classifier": NTKClassifier(ARCHS["Gaussian integration rules"]).fit(X, labels),
        # a compiled network given as the kernel object: it is pickled inside the estimator
        "network regressor": NTKRegressor(ntkdsl.compile(ARCHS["softplus numerical"]),
                                          time=5.0).fit(X, y),
    }


def _estimator_numbers(fitted) -> dict:
    X = np.random.default_rng(6).standard_normal((9, 4))
    numbers = {}
    for name, est in fitted.items():
        if isinstance(est, NTKRegressor):
            numbers[name] = (tuple(est.predict(X, return_std=True)),
                             est.predict_trajectory(X, [1.0, 10.0]))
        else:
            numbers[name] = (est.predict(X), est.predict_proba(X), est.decision_function(X))
    return numbers


def test_fitted_estimators_round_trip():
    fitted = _estimators()
    want = _estimator_numbers(fitted)
    restored = pickle.loads(pickle.dumps(fitted))
    copied = copy.deepcopy(fitted)
    _assert_same(_estimator_numbers(restored), want)
    _assert_same(_estimator_numbers(copied), want)
    _assert_same(_estimator_numbers(fitted), want)  # the originals still work
    assert restored["template regressor"].arch == fitted["template regressor"].arch


# --------------------------------------------------------------------------- a fresh process

# The child unpickles everything, evaluates the same calls and pickles the results back. It
# runs this checkout's ntkdsl (checked through ntkdsl.__file__).
_CHILD = r"""
import pickle, sys
import ntkdsl
from ntkdsl.formula import Formula

with open(sys.argv[1], "rb") as handle:
    cases = pickle.load(handle)
results = {"__file__": ntkdsl.__file__}
for label, (obj, method, args) in cases.items():
    results[label] = getattr(obj, method)(*args)
    if isinstance(obj, Formula):  # the run-time classes are the ones this process derives
        results[label + " program"] = obj.program == ntkdsl.compile(obj.arch).program
with open(sys.argv[2], "wb") as handle:
    pickle.dump(results, handle)
"""


def _fresh_process_cases() -> dict:
    cases = {}
    for name, arch in ARCHS.items():
        net = ntkdsl.compile(arch)
        cases[f"{name} kernels"] = (net, "kernels", (X1, X2))
        cases[f"{name} ntk self"] = (net, "ntk", (X1,))
        cases[f"{name} diagonal"] = (net, "diagonal", (X2,))
        cases[f"{name} formula"] = (net.formula("ntk"), "__str__", ())
        cases[f"{name} latex"] = (net.formula("nngp"), "latex", ())
    for name in FINITE_ARCHS:
        net, params = _finite_case(name)
        cases[f"{name} finite ntk"] = (net, "ntk", (params, X1, X2))
        cases[f"{name} finite apply"] = (net, "apply", (params, X2))
    net, train, _ = _training_problem()
    for name, solver in _solvers().items():
        test_kernel = net.nngp(X2, train) if name == "posterior" else net.ntk(X2, train)
        cases[f"{name} solver"] = (solver, "predict", (test_kernel,))
    for name, est in _estimators().items():
        cases[f"{name} estimator"] = (est, "predict", (X2[:, :4],))
    return cases


def _expected(cases: dict) -> dict:
    want = {label: getattr(obj, method)(*args) for label, (obj, method, args) in cases.items()}
    want.update({label + " program": True for label, (obj, _, _) in cases.items()
                 if isinstance(obj, Formula)})
    return want


def test_unpickling_in_a_fresh_process_gives_the_same_numbers(tmp_path):
    cases = _fresh_process_cases()
    (tmp_path / "cases.pkl").write_bytes(pickle.dumps(cases))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "cases.pkl"),
                           str(tmp_path / "results.pkl")], cwd=PACKAGE_ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    results = pickle.loads((tmp_path / "results.pkl").read_bytes())
    assert Path(results.pop("__file__")).resolve() == Path(ntkdsl.__file__).resolve()
    _assert_same(results, _expected(cases))


# --------------------------------------------------------------------------- joblib workers

def _worker_package() -> str:
    return ntkdsl.__file__


def _worker_formula(formula: Formula) -> tuple[str, bool]:
    """The printout, and whether the formula's classes are those the worker derives itself."""
    return str(formula), formula.program == ntkdsl.compile(formula.arch).program


def test_joblib_process_workers_evaluate_compiled_networks():
    nets = [ntkdsl.compile(arch) for arch in ARCHS.values()]
    finite = [_finite_case(name) for name in FINITE_ARCHS]
    with joblib.Parallel(n_jobs=2, backend="loky") as parallel:
        files = parallel(joblib.delayed(_worker_package)() for _ in range(2))
        got = parallel(joblib.delayed(net.kernels)(X1, X2) for net in nets)
        # loky pickles with cloudpickle, which copies classes it cannot find by name
        formulas = parallel(joblib.delayed(_worker_formula)(net.formula("ntk")) for net in nets)
        applied = parallel(joblib.delayed(net.apply)(params, X1) for net, params in finite)
    assert {Path(f).resolve() for f in files} == {Path(ntkdsl.__file__).resolve()}
    _assert_same(got, [net.kernels(X1, X2) for net in nets])
    _assert_same(formulas, [(str(net.formula("ntk")), True) for net in nets])
    _assert_same(applied, [net.apply(params, X1) for net, params in finite])
