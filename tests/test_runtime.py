"""ntkdsl.runtime: NumPy-only modules that the library calls and standalone modules embed.

Checked here: each runtime module imports nothing but numpy and the standard library (and
SciPy's BLAS, optional), in a process that has not imported ntkdsl; all networks share one
coefficient cache; the one identical-row search needs O(n) memory and agrees with a
brute-force comparison; a standalone module's input errors say what the library says.
"""
import importlib.util
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import ntkdsl
from ntkdsl import errors
from ntkdsl.runtime import MODULES, driver, embedded_source, hermite
from ntkdsl.standalone import ascii_source

RUNTIME_DIR = Path(ntkdsl.__file__).parent / "runtime"

# Loads one runtime file as a plain module (the ntkdsl package is never imported), runs
# its functions, and prints the modules that got imported and the numbers computed.
# argv: the file, "scipy" or "noscipy" (scipy blocked by a meta path hook).
IMPORT_PROBE = r'''
import importlib.util, json, sys
BLOCK_SCIPY = sys.argv[2] == "noscipy"

DIRECT = set()  # what the runtime file itself imports

class Blocker:
    def find_spec(self, name, path=None, target=None):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename == sys.argv[1]:
            DIRECT.add(name)
        if BLOCK_SCIPY and name.split(".")[0] == "scipy":
            raise ImportError(f"blocked in this test: {name}")
        return None

sys.meta_path.insert(0, Blocker())
import numpy, numpy.polynomial.legendre  # and what NumPy itself imports on the way
numpy.random.default_rng(0)
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("runtime_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
rng = numpy.random.default_rng(0)
x = rng.standard_normal((40, 3))
q = numpy.einsum("ij,ij->i", x, x) / 3 + 0.5
k = x @ x.T / 3
numbers = []
if hasattr(module, "_hd_dual_pair"):
    def _f_tanh(u):
        return numpy.tanh(u)
    def _f_tanh_dot(u):
        return 1 / numpy.cosh(u) ** 2
    gamma, dot = module._hd_dual_pair(_f_tanh, _f_tanh_dot, (), k, q[:, None], q[None, :])
    numbers = [gamma.tolist(), dot.tolist()]
if hasattr(module, "_corr"):
    numbers = [module._corr(k, q[:, None], q[None, :]).tolist(), module._inv_sqrt(q).tolist()]
if hasattr(module, "_st_conv"):
    grid = rng.standard_normal((4, 5, 4, 5, 2, 1))
    numbers = [module._st_conv(grid, (3, 3), (1, 2), "SAME", True).tolist(),
               module._st_pool(grid, (2, 2), (1, 1), "CIRCULAR", True).tolist()]
if hasattr(module, "evaluate_kernels"):
    pair = lambda q1, q2, K, d: (K, K + q1 * q2)
    diagonal = lambda q, d: (q, q + q * q)
    numbers = [m.tolist() for m in module.evaluate_kernels(pair, diagonal, x, x[::-1])]
print(json.dumps({"new": sorted(set(sys.modules) - before), "direct": sorted(DIRECT),
                  "numbers": numbers}))
'''


def _probe(module: str, scipy: str) -> dict:
    done = subprocess.run([sys.executable, "-I", "-c", IMPORT_PROBE,
                           str(RUNTIME_DIR / f"{module}.py"), scipy],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("module", MODULES)
def test_runtime_modules_import_only_numpy_and_optional_scipy_blas(module):
    with_scipy, without = _probe(module, "scipy"), _probe(module, "noscipy")
    # Without SciPy: nothing beyond NumPy and the standard library got imported.
    allowed = set(sys.stdlib_module_names) | {"numpy", "runtime_under_test"}
    assert {name.split(".")[0] for name in without["new"]} <= allowed, without["new"]
    # With SciPy, the runtime asks for its BLAS (the engine's rank-1 update) and nothing else.
    direct = set(with_scipy["direct"])
    assert direct <= {"numpy", "scipy", "scipy.linalg", "scipy.linalg.blas"}, direct
    assert any(name.startswith("scipy") for name in direct) == (module == "hermite")
    # The NumPy fallback of the BLAS update gives the same numbers.
    assert without["numbers"] and len(with_scipy["numbers"]) == len(without["numbers"])
    for got, want in zip(with_scipy["numbers"], without["numbers"]):
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("module", MODULES)
def test_runtime_sources_name_nothing_but_numpy_and_scipy_blas(module):
    import ast
    tree = ast.parse((RUNTIME_DIR / f"{module}.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a runtime module imports nothing relative (nothing of ntkdsl)"
            imported.add(node.module)
    assert imported <= {"numpy", "scipy.linalg.blas"}


def _tanh_tables():
    return {key: hermite._HD_CACHE[key] for key in hermite._HD_CACHE
            if isinstance(key, tuple)}


def test_networks_share_one_coefficient_cache_per_process():
    x = np.random.default_rng(3).standard_normal((30, 4))
    shallow = ntkdsl.compile("Dense(8) > Tanh > Dense(1)")
    deep = ntkdsl.compile("Dense(8) > Tanh > Dense(8, W_std=1.3) > Tanh > Dense(1)")
    # The networks call the runtime's engine itself, not a copy run into their namespace.
    assert shallow.compiled.pair.__globals__["_hd_dual_pair"] is hermite._hd_dual_pair
    assert deep.compiled.pair.__globals__["_hd_dual_pair"] is hermite._hd_dual_pair
    hermite._HD_CACHE.clear()
    shallow.kernels(x)
    after_shallow = _tanh_tables()
    rows_shallow = {key: hermite._hd_latest(t)["q"].copy() for key, t in after_shallow.items()}
    # Γ's and Γ̇'s series of tanh: one table each, keyed by the formula's hash.
    assert len(after_shallow) == 2
    first_layer = np.unique(np.einsum("ij,ij->i", x, x) / 4)
    for q in rows_shallow.values():
        np.testing.assert_array_equal(np.unique(q), first_layer)
    deep.kernels(x)
    after_deep = _tanh_tables()
    assert after_deep.keys() == after_shallow.keys()  # still one table per function
    for key, table in after_deep.items():
        q = hermite._hd_latest(table)["q"]
        # The first Tanh's variances were found, not computed again: the deep network
        # added only its second layer's variances (1.3² E[tanh(u)²] per input).
        np.testing.assert_array_equal(q[:len(rows_shallow[key])], rows_shallow[key])
        second = q[len(rows_shallow[key]):]
        assert len(second) == len(first_layer)
        assert not np.isin(second, first_layer).any()


@pytest.mark.parametrize("arch, modules", [
    # Corr and the numerical engine
    ("Dense(8) > Relu > Dense(8) > Tanh > Dense(1)", ("correlation", "driver", "hermite")),
    # the window sums of convolutional kernels
    ("Conv(8, (3, 3), padding='SAME') > Relu > Conv(8, (3, 3)) > Tanh > GlobalAvgPool > "
     "Dense(1)", MODULES)])
def test_library_source_carries_the_runtime_text_a_standalone_module_embeds(arch, modules):
    standalone, library = ntkdsl.codegen(arch), ntkdsl.compile(arch).source
    for module in modules:  # as the module's text is written: in ASCII
        assert ascii_source(embedded_source(module)) in standalone
    for module in set(modules) - {"driver"}:
        assert embedded_source(module) in library


def _standalone(arch: str, tmp_path: Path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(ntkdsl.codegen(arch), encoding="ascii")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def relu_module(tmp_path_factory):
    return _standalone("Dense(16) > Relu > Dense(1)", tmp_path_factory.mktemp("runtime"), "relu_rt")


def _brute_force(a, b):
    other = a if b is None else b
    return np.nonzero((a[:, None, :] == other[None, :, :]).all(axis=2))


@pytest.mark.parametrize("self_kernel", [True, False])
def test_identical_rows_match_brute_force_with_duplicates(relu_module, self_kernel):
    rng = np.random.default_rng(11)
    a = rng.integers(0, 2, size=(300, 3)).astype(float)  # 8 distinct rows, many repeats
    a[rng.random(a.shape) < 0.1] *= -1.0  # -0.0 equals 0.0
    b = None if self_kernel else np.concatenate([a[::7], rng.standard_normal((40, 3))])
    want = sorted(zip(*(v.tolist() for v in _brute_force(a, b))))
    for search in (driver.identical_pairs, relu_module.identical_pairs, ntkdsl.network.identical_pairs):
        rows, cols = search(a, b)
        assert sorted(zip(rows.tolist(), cols.tolist())) == want


def test_identical_row_search_has_no_n1_by_n2_temporary(relu_module):
    a = np.random.default_rng(5).standard_normal((20000, 8))
    b = a.copy()  # identical data: 20000 pairs among 4e8 entries
    for search in (driver.identical_pairs, relu_module.identical_pairs):
        tracemalloc.start()
        try:
            rows, cols = search(a, b)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        order = np.argsort(rows)
        np.testing.assert_array_equal(rows[order], np.arange(20000))
        np.testing.assert_array_equal(cols[order], np.arange(20000))
        assert peak < len(a) * len(b) / 20, peak  # 4e8 bytes would be an n1 x n2 mask
        assert peak < 5 * (a.nbytes + b.nbytes), peak  # linear in the inputs' size


BAD_INPUTS = [
    ("1-D", np.ones(3), None, errors.ShapeError),
    ("3-D", np.ones((2, 2, 2)), None, errors.ShapeError),
    ("empty", np.ones((0, 3)), None, errors.ShapeError),
    ("no features", np.ones((3, 0)), None, errors.ShapeError),
    ("NaN", np.array([[1.0, np.nan]]), None, errors.InputError),
    ("inf in x2", np.ones((2, 2)), np.array([[1.0, 2.0], [np.inf, 0.0]]), errors.InputError),
    ("complex", np.ones((2, 2)) * 1j, None, errors.InputError),
    ("complex list", [[1 + 2j, 0.0]], None, errors.InputError),
    ("strings", [["a", "b"]], None, errors.InputError),
    ("ragged", [[1.0, 2.0], [3.0]], None, errors.InputError),
    ("features", np.ones((2, 3)), np.ones((2, 4)), errors.ShapeError),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_standalone_input_errors_say_what_the_library_says(relu_module, case):
    _, x1, x2, library_class = case
    net = ntkdsl.compile("Dense(16) > Relu > Dense(1)")
    with pytest.raises(errors.InputError) as library:
        net.nngp(x1, x2)
    assert type(library.value) is library_class
    with pytest.raises(ValueError) as standalone:
        relu_module.nngp(x1, x2)
    assert not isinstance(standalone.value, errors.NTKDSLError)
    assert str(standalone.value) == str(library.value)
