"""Issue 12.2, findings at the interfaces: ASCII output, CSV files, the estimators' exceptions,
sparse inputs and the up-front memory check against the process's limits."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ntkdsl

ROOT = Path(__file__).resolve().parents[1]

# One architecture per route a dual can take (DESIGN §2 / README "Routes").
ROUTES = {
    "closed form": "Dense(64, W_std=1.5, b_std=0.1) > Relu > Dense(1)",
    "rules": 'Dense(64) > Fn("sin(x) + 0.5*x") > Dense(1)',
    "numerical": "Dense(64, W_std=1.4) > Tanh > Dense(1)",
    "composed": "Dense(64) > Relu > Sin > Dense(1)",
    "LayerNorm": "Dense(64) > LayerNorm > Erf > Dense(1, b_std=0.1)",
}


def run_cli(*args: str, encoding: str = "ascii", cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m ntkdsl.cli ARGS`` in a fresh process whose stdout encoding is ``encoding``."""
    env = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ntkdsl.cli", *args], capture_output=True,
                          check=False, cwd=cwd, env=env, timeout=300)


# --------------------------------------------------------------------- 1. ASCII output --

@pytest.mark.parametrize("route", sorted(ROUTES))
def test_generated_module_is_ascii_for_every_route(route):
    source = ntkdsl.codegen(ROUTES[route])
    assert source.isascii(), sorted({ch for ch in source if not ch.isascii()})


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_codegen_writes_to_an_ascii_stdout(route):
    proc = run_cli("codegen", ROUTES[route])
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""
    assert proc.stdout.decode("ascii") == ntkdsl.codegen(ROUTES[route])


def test_codegen_to_a_file_under_ascii_gives_a_module_with_the_library_numbers(tmp_path):
    arch = ROUTES["numerical"]
    proc = run_cli("codegen", arch, "-o", str(tmp_path / "tanh_kernel.py"))
    assert proc.returncode == 0, proc.stderr.decode()
    source = (tmp_path / "tanh_kernel.py").read_bytes()
    assert source.isascii() and source.decode() == ntkdsl.codegen(arch)
    x = np.random.default_rng(0).standard_normal((6, 3))
    script = ("import json, sys; sys.path.insert(0, '.'); import numpy, tanh_kernel;"
              "x = numpy.array(json.loads(sys.argv[1]));"
              "print(json.dumps(tanh_kernel.ntk(x).tolist()))")
    run = subprocess.run([sys.executable, "-I", "-c", script, json.dumps(x.tolist())],
                         capture_output=True, text=True, check=False, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert run.returncode == 0, run.stderr
    got = np.array(json.loads(run.stdout))
    np.testing.assert_allclose(got, ntkdsl.compile(arch).ntk(x), rtol=1e-12, atol=0)


@pytest.mark.parametrize("args", [("derive", ROUTES["numerical"]),
                                  ("derive", ROUTES["composed"], "--latex"),
                                  ("verify", "--help"), ("fit", "--help"), ("--help",)])
def test_text_output_under_ascii_does_not_crash(args):
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"" and proc.stdout.isascii()
    utf8 = run_cli(*args, encoding="utf-8")
    # What ASCII cannot show is escaped (\xb7, \u03bb), the rest is the same text.
    expected = utf8.stdout.decode().encode("ascii", "backslashreplace")
    assert proc.stdout == expected


def test_ascii_source_names_the_mathematical_characters():
    from ntkdsl.standalone import ascii_source

    text = "# φ(sqrt(q) z) while √(q1 q2) ≤ 1; dΓ/dk, Γ̇ and ½ ∂"
    assert ascii_source(text) == ("# phi(sqrt(q) z) while sqrt(q1 q2) <= 1; dGamma/dk, "
                                  "Gammadot and 1/2 d")
    assert ascii_source("ω").isascii() and ascii_source("ω") == "\\u03c9"


def test_embedded_texts_put_a_root_sign_before_a_parenthesis():
    """ascii_source spells a root sign "sqrt" (no pattern matching over module text), which
    reads right only before a parenthesis: the runtime's text, embedded in every standalone
    module, keeps to that."""
    from pathlib import Path

    import ntkdsl.runtime
    for path in Path(ntkdsl.runtime.__file__).parent.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert all(text[i + 1] == "(" for i, ch in enumerate(text) if ch == "√"), path.name


# ------------------------------------------------------------------ 2. CSV files (fit) --

FIT_ARCH = "Dense(16) > Relu > Dense(1)"
_RANDOM = np.random.default_rng(0).bytes(4000)


@pytest.mark.parametrize("content, message", [
    (_RANDOM, r"line \d+, column \d+: a NUL byte; this is a binary file"),
    (bytes(range(128, 256)) * 4, "line 1, column 1: byte 0x80 is not UTF-8 text"),
    ("a,y\n1,2\n3,4\n".encode("utf-16"), "is UTF-16 text"),
    ("a,y\n1,2\n3,4\n".encode("utf-16-le"), "line 1, column 2: a NUL byte"),
    ("a,b,y\n1,2,3\ncaf\u00e9,5,6\n".encode("latin-1"), "line 3, column 4: byte 0xe9 is not UTF-8"),
    (b"", "is empty: it needs a header row and at least 2 data rows"),
    (b"a,b,y\n", "0 data rows below the header"),
    (b"a,b,y\n1,2,3\n", "1 data rows below the header"),
    (b"a,b,y\n1,2,3\n4,5\n", "line 3: 2 fields, but the header has 3"),
    (b"a,b,y\n1,2,3\n\n4,x,6\n", "line 4, column 'b': 'x' is not a number"),
    (b'a,b,y\n1,"2\n",3\n4,x,6\n', "line 4, column 'b': 'x' is not a number"),
    (b"a,b,y\n1,2,3\n4,nan,6\n", "line 3, column 'b': 'nan' is not finite"),
    (b"a,b,y\n1,2,3\n-inf,5,6\n", "line 3, column 'a': '-inf' is not finite"),
    (b"a,b,y\n1,2,3\n4,1e999,6\n", "line 3, column 'b': '1e999' is not finite"),
    (b"a,b,y\n1,2,3.5\n4,5,nan\n", "line 3, column 'y': 'nan' is not finite"),
    (b"a,b,y\n1,2,\n4,5,6\n", "line 2, column 'y': empty cells in the target column"),
    (b"a,b,z\n1,2,3\n4,5,6\n", "no column named 'y'; the columns are a, b, z"),
    (b"a,a,y\n1,2,3\n4,5,6\n", "line 1: the column names 'a' appear more than once"),
    (b"a,y\n" + b"1" * 200_000 + b",2\n3,4\n", "line 2: not valid CSV: field larger than"),
])
def test_bad_csv_is_one_input_error_naming_file_and_place(tmp_path, capsys, content, message):
    from ntkdsl.cli import main

    path = tmp_path / "data.csv"
    path.write_bytes(content)
    assert main(["fit", FIT_ARCH, "--data", str(path), "--target", "y"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"ntkdsl fit: error: {path}") and err.count("error:") == 1, err
    assert re.search(message, err), err


def test_binary_csv_exits_1_without_a_traceback_in_a_fresh_process(tmp_path):
    (tmp_path / "data.csv").write_bytes(_RANDOM)
    proc = run_cli("fit", FIT_ARCH, "--data", "data.csv", "--target", "y", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == b""
    lines = proc.stderr.decode("ascii").splitlines()
    assert lines[0].startswith("ntkdsl fit: error: data.csv, line ") and "Traceback" not in \
        proc.stderr.decode()


def test_csv_with_a_utf8_byte_order_mark_reads_like_without(tmp_path):
    from ntkdsl.commands.fit import load_csv

    text = "a,b,y\n0.5,1,1\n0.25,-2,0\n3,4.5,1\n"
    path = tmp_path / "bom.csv"
    path.write_bytes(text.encode("utf-8-sig"))  # as spreadsheets save "CSV UTF-8"
    data = load_csv(path, "a", "regression")  # the first column, behind the mark
    expected = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1)
    np.testing.assert_array_equal(data.X, expected[:, 1:])
    np.testing.assert_array_equal(data.y, expected[:, 0])


# -------------------------------------------------- 3. the estimators' exceptions --

def _data(n=12, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal(n)


def _fitted_regressor():
    from test_estimators import ReluKernel

    from ntkdsl import NTKRegressor

    X, y = _data()
    return NTKRegressor(ReluKernel(), diag_reg=1e-3).fit(X, y)


def _unfitted(cls_name, method):
    from test_estimators import ReluKernel

    import ntkdsl.estimators as est

    X, _ = _data()
    return lambda: getattr(getattr(est, cls_name)(ReluKernel()), method)(X)


@pytest.mark.parametrize("call, sklearn_class", [
    (_unfitted("NTKRegressor", "predict"), "NotFittedError"),
    (_unfitted("NTKClassifier", "predict"), "NotFittedError"),
    (_unfitted("NTKClassifier", "predict_proba"), "NotFittedError"),
    (_unfitted("NTKClassifier", "decision_function"), "NotFittedError"),
    (lambda: _fitted_regressor().predict(_data()[0][:, :2]), "ValueError"),       # feature count
    (lambda: _fitted_regressor().predict(np.full((2, 3), np.nan)), "ValueError"),  # NaN in X
    (lambda: _fitted_regressor().predict(np.empty((0, 3))), "ValueError"),         # empty X
    (lambda: _fitted_regressor().score(_data()[0], _data()[1][:5]), "ValueError"),  # y length
    (lambda: _fitted_regressor().fit(_data()[0], _data()[1][:5]), "ValueError"),   # y length
    (lambda: _fitted_regressor().fit(_data()[0][:1], _data()[1][:1]), "ValueError"),  # 1 sample
    (lambda: _fitted_regressor().fit(_data()[0], np.array(list("ab") * 6)), "ValueError"),
    (lambda: _fitted_regressor().fit(_data()[0], _data()[1].reshape(12, 1, 1)), "ValueError"),
])
def test_estimator_errors_are_ntkdsl_errors_and_what_scikit_learn_expects(call, sklearn_class):
    import sklearn.exceptions

    expected = {"NotFittedError": sklearn.exceptions.NotFittedError,
                "ValueError": ValueError}[sklearn_class]
    with pytest.raises(ntkdsl.NTKDSLError) as err:
        call()
    assert isinstance(err.value, expected)


def test_classifier_on_continuous_targets_is_an_input_error():
    from test_estimators import ReluKernel

    from ntkdsl import NTKClassifier

    X, y = _data()
    with pytest.raises(ntkdsl.InputError, match="Unknown label type: continuous"):
        NTKClassifier(ReluKernel()).fit(X, y)
    with pytest.raises(ntkdsl.InputError, match="inconsistent numbers of samples"):
        NTKClassifier(ReluKernel()).fit(X, y > 0).score(X, (y > 0)[:4])


def test_not_fitted_error_class_is_lazy_and_public():
    code = ("import sys, ntkdsl, ntkdsl.errors; assert 'sklearn' not in sys.modules;"
            "from ntkdsl.errors import NotFittedError; import sklearn.exceptions as e;"
            "assert issubclass(NotFittedError, (ntkdsl.NTKDSLError)) and "
            "issubclass(NotFittedError, e.NotFittedError); print(NotFittedError.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ntkdsl.errors"


# ---------------------------------------------------------------- 4. sparse inputs --

RELU2 = "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.05)"
SPARSE_KINDS = ["csr_matrix", "csc_matrix", "coo_matrix", "csr_array", "lil_array"]


def _sparse(kind: str, dense: np.ndarray):
    import scipy.sparse

    return getattr(scipy.sparse, kind)(dense)


def _sparse_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((9, 6)) * (rng.random((9, 6)) < 0.4)  # mostly zeros
    x[:, 0] = 1.0 + 0.1 * np.arange(9)  # distinct rows, none all zero
    return x


@pytest.mark.parametrize("kind", SPARSE_KINDS)
def test_network_kernels_of_sparse_inputs_match_the_recursion(kind):
    from test_predict import relu_network_kernels

    net = ntkdsl.compile(RELU2)
    x1, x2 = _sparse_data(0), _sparse_data(1)[:5]
    nngp, ntk = relu_network_kernels(x1, x2, 2, 1.5, 0.05)
    np.testing.assert_allclose(net.nngp(_sparse(kind, x1), _sparse(kind, x2)), nngp, rtol=1e-10)
    np.testing.assert_allclose(net.kernels(_sparse(kind, x1), x2)[1], ntk, rtol=1e-10)
    self_nngp, self_ntk = relu_network_kernels(x1, x1, 2, 1.5, 0.05)
    np.testing.assert_allclose(net.ntk(_sparse(kind, x1)), self_ntk, rtol=1e-10)
    diag = net.diagonal(_sparse(kind, x1))
    np.testing.assert_allclose(diag[0], np.diag(self_nngp), rtol=1e-12)
    np.testing.assert_allclose(diag[1], np.diag(self_ntk), rtol=1e-12)


@pytest.mark.parametrize("kind", ["csr_matrix", "csc_array"])
def test_estimators_and_solvers_take_sparse_inputs(kind):
    from test_estimators import ReluKernel
    from test_predict import relu_network_kernels

    from ntkdsl import NTKClassifier, NTKRegressor, gp_inference

    X, X_test = _sparse_data(0), _sparse_data(1)
    y = np.sin(X[:, 0]) + X[:, 1]
    k_train, k_cross = (relu_network_kernels(X, X, 2, 1.5, 0.05)[1],
                        relu_network_kernels(X_test, X, 2, 1.5, 0.05)[1])
    by_hand = k_cross @ np.linalg.solve(k_train, y)
    reg = NTKRegressor(ReluKernel()).fit(_sparse(kind, X), _sparse(kind, y[:, None]))
    np.testing.assert_allclose(reg.predict(_sparse(kind, X_test))[:, 0], by_hand, rtol=1e-8)
    posterior = gp_inference(_sparse(kind, k_train), y).predict(_sparse(kind, k_cross))
    np.testing.assert_allclose(posterior.mean, by_hand, rtol=1e-8)
    labels = X[:, 1] > 0
    clf = NTKClassifier(ReluKernel()).fit(_sparse(kind, X), labels)
    np.testing.assert_array_equal(clf.predict(_sparse(kind, X)), labels)  # interpolates at t = inf


def test_a_sparse_input_too_large_to_densify_is_refused_before_densifying():
    import scipy.sparse

    x = scipy.sparse.csr_matrix(([1.0], ([0], [0])), shape=(10**6, 10**6))  # 8 TB dense
    with pytest.raises(ntkdsl.InputError, match=r"x1 \(1000000 x 1000000, sparse\) as a dense "
                                                r"array needs 8.00 TB"):
        ntkdsl.compile(RELU2).ntk(x)
    from ntkdsl import NTKRegressor

    with pytest.raises(ntkdsl.InputError, match=r"X .* sparse.* needs 8\.00 TB"):
        NTKRegressor(RELU2).fit(x, np.zeros(10**6))


# ------------------------------------------------------- 5. the up-front memory check --

_LIMITED = r"""
import json, resource, sys
import numpy as np
import ntkdsl
from ntkdsl import NTKRegressor, gp_inference, gradient_descent_mse_ensemble

limit, which = int(float(sys.argv[1])), sys.argv[2]
rng = np.random.default_rng(0)
net = ntkdsl.compile("Dense(64) > Relu > Dense(1)")
NTKRegressor  # scikit-learn loaded before the limit, as in a real session
import sklearn.base
resource.setrlimit(getattr(resource, which), (limit, resource.getrlimit(getattr(resource, which))[1]))

def kernel():                       # 15000 x 15000 float64: 1.8 GB
    net.ntk(rng.standard_normal((15000, 3)))

def posterior():                    # N = 7000: the factorisation needs 3 x 392 MB
    gp_inference(np.eye(7000), np.zeros(7000))

def finite_time():                  # N = 5000: eigh needs 4 x 200 MB beside 3 x 200 MB
    ens = gradient_descent_mse_ensemble(np.eye(5000), np.zeros(5000))
    ens.predict(np.zeros((3, 5000)), t=10.0)

def estimator():                    # N = 8000: a 512 MB training kernel and its solver
    x = rng.standard_normal((8000, 3))
    NTKRegressor("Dense(64) > Relu > Dense(1)", solver="exact").fit(x, x[:, 0])

def auto_estimator():               # solver="auto" takes the Nyström solver instead
    x = rng.standard_normal((8000, 3))
    reg = NTKRegressor("Dense(64) > Relu > Dense(1)", n_components=500).fit(x, x[:, 0])
    raise RuntimeError(reg.solver_)

results = {}
for case in sys.argv[3].split(","):
    try:
        globals()[case]()
        results[case] = ["no error", ""]
    except BaseException as err:
        results[case] = [type(err).__name__, str(err)]
print(json.dumps(results))
"""


def run_limited(limit: float, which: str, cases: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _LIMITED, str(limit), which, ",".join(cases)],
                          capture_output=True, text=True, check=False, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _megabytes_or_gigabytes(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def test_under_an_address_space_limit_what_cannot_fit_is_refused_up_front():
    results = run_limited(1.5e9, "RLIMIT_AS", ["kernel", "posterior", "finite_time", "estimator",
                                               "auto_estimator"])
    matrix = lambda n: 8.0 * n * n  # bytes of an n x n float64 array
    kind, message = results["kernel"]
    assert kind == "InputError", results
    # The output, and the working memory on top: 6% of it, at most 48 MiB (WORKING_SHARE).
    need = matrix(15000) + min(0.06 * matrix(15000), 48 * 2**20)
    assert f"the NTK (15000 x 15000, float64) needs {_megabytes_or_gigabytes(need)}" in message
    assert "under the address-space limit (ulimit -v)" in message and "open_memmap" in message
    kind, message = results["posterior"]  # K + ridge I: np.eye, its multiple and the sum
    assert kind == "InputError" and ("the factorisation of the 7000 x 7000 training kernel "
                                     f"needs {_megabytes_or_gigabytes(3 * matrix(7000))}"
                                     ) in message, results
    kind, message = results["finite_time"]  # eigh: a copy, the workspace (2), the vectors
    assert kind == "InputError" and ("the eigendecomposition (for finite times) of the 5000 x "
                                     "5000 training kernel needs "
                                     f"{_megabytes_or_gigabytes(4 * matrix(5000))}") in message, \
        results
    kind, message = results["estimator"]  # the training kernel and the solver's three
    assert kind == "InputError" and ("fitting on 8000 samples (the 8000 x 8000 training "
                                     "kernel and its factorisation) needs "
                                     f"{_megabytes_or_gigabytes(4 * matrix(8000))}") in message, \
        results
    assert "solver='nystrom'" in message
    assert results["auto_estimator"] == ["RuntimeError", "nystrom"], results


def test_under_a_data_segment_limit_the_kernel_is_refused_up_front():
    kind, message = run_limited(1.5e9, "RLIMIT_DATA", ["kernel"])["kernel"]
    assert kind == "InputError" and "under the data-segment limit (ulimit -d)" in message


def test_cgroup_headroom_counts_inactive_file_cache_as_free(tmp_path):
    from ntkdsl.evaluation import cgroup_headroom

    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "memory.max").write_text("1000000000\n")
    (v2 / "job" / "memory.current").write_text("600000000\n")
    (v2 / "job" / "memory.stat").write_text("anon 500000000\ninactive_file 50000000\n")
    (tmp_path / "cgroup2").write_text("0::/job\n")
    assert cgroup_headroom(str(v2), str(tmp_path / "cgroup2")) == 1000000000 - 600000000 + 50000000
    v1 = tmp_path / "v1" / "memory"
    (v1 / "box").mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # the root: no limit
    (v1 / "box" / "memory.limit_in_bytes").write_text("2000000000\n")
    (v1 / "box" / "memory.usage_in_bytes").write_text("1500000000\n")
    (v1 / "box" / "memory.stat").write_text("inactive_file 1\ntotal_inactive_file 100000000\n")
    (tmp_path / "cgroup1").write_text("4:memory:/box\n1:cpu:/\n")
    assert cgroup_headroom(str(tmp_path / "v1"), str(tmp_path / "cgroup1")) == 600000000
    (tmp_path / "none").write_text("0::/\n")
    assert cgroup_headroom(str(tmp_path / "missing"), str(tmp_path / "none")) is None
