"""Every BLAS in the process is held to one thread while a kernel is evaluated, also one
loaded after ntkdsl's first evaluation (SciPy's own OpenBLAS, loaded by scipy.linalg) or in
the middle of one (the numerical route imports scipy.linalg.blas on first use), and each is
given back its own thread count afterwards.

The observations come from fresh subprocesses, so which libraries are loaded when is under
the test's control. Every BLAS loaded before an evaluation is set to 3 threads (a count
other than 1 whatever the cores); one loaded during it starts at OPENBLAS_NUM_THREADS=3
capped at the cores. threadpoolctl reads the counts from inside the evaluation (a wrapper
around each panel's elementwise step, or around the diagonal program)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
START_THREADS = 3

PROBE = r'''
import json, os, sys
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
import ntkdsl
from ntkdsl.evaluation import blas, panels

def blas_threads():
    """{library file: thread count} of every BLAS loaded now."""
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

seen = []  # blas_threads() at the start of each panel's elementwise step
elementwise = panels._Panels.elementwise
def spy(self, *args):
    seen.append(blas_threads())
    return elementwise(self, *args)
panels._Panels.elementwise = spy

def observe(fn):
    """(result, counts seen during it, counts after it)."""
    seen.clear()
    result = fn()
    return result, list(seen), blas_threads()

START = int(os.environ["OPENBLAS_NUM_THREADS"])
threadpool_limits(START, user_api="blas")  # a known count, above 1 whatever the cores

x = np.random.default_rng(0).standard_normal((300, 8))  # 3 panels of 128 rows
report = {}
if sys.argv[1] == "import-between":
    relu = ntkdsl.compile("(Dense(512, W_std=1.5, b_std=0.1) > Relu) * 2 > Dense(1)")
    first, report["first_during"], report["first_after"] = observe(lambda: relu.ntk(x, threads=1))
    stamp = blas._loaded_libraries_stamp
    stamps = [stamp()]
    import scipy.linalg  # loads SciPy's own OpenBLAS
    threadpool_limits(START, user_api="blas")
    stamps.append(stamp())
    second, report["during"], report["after"] = observe(lambda: relu.ntk(x, threads=1))
    scans = blas._blas_controller.cache_info().misses
    third, _, _ = observe(lambda: relu.ntk(x, threads=1))
    stamps.append(stamp())
    report["stamps"] = stamps
    report["rescanned_again"] = blas._blas_controller.cache_info().misses != scans
    report["same_numbers"] = bool(np.array_equal(first, second) and np.array_equal(first, third))
elif sys.argv[1] == "import-during":
    tanh = ntkdsl.compile("(Dense(512, W_std=1.5, b_std=0.1) > Tanh) * 2 > Dense(1)")
    report["before"] = blas_threads()
    ntk, report["during"], report["after"] = observe(lambda: tanh.ntk(x, threads=1))
    diag = tanh.compiled.diagonal
    def diagonal_spy(*args):
        seen.append(blas_threads())
        return diag(*args)
    import dataclasses
    object.__setattr__(tanh, "compiled", dataclasses.replace(tanh.compiled, diagonal=diagonal_spy))
    _, report["diagonal_during"], _ = observe(lambda: tanh.diagonal(x * 1.7))  # new variances
    if sys.argv[3:] == ["unlimited"]:  # the same kernel with no limit at all
        class NoLimit:
            def __enter__(self): return self
            def refresh(self): pass
            def __exit__(self, *exc): pass
        panels._BlasLimit = NoLimit
        ntk = tanh.ntk(x, threads=1)
    np.save(sys.argv[2], ntk)
print(json.dumps(report))
'''


def probe(*args: str, threads: int = START_THREADS) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def import_between() -> dict:
    return probe("import-between")


@pytest.fixture(scope="module")
def import_during(tmp_path_factory) -> dict:
    """The report, plus the limited Tanh NTK's file under "ntk"."""
    path = tmp_path_factory.mktemp("blas") / "limited.npy"
    return dict(probe("import-during", str(path)), ntk=str(path))


def test_a_blas_loaded_after_the_first_evaluation_is_limited(import_between):
    """The second evaluation runs after scipy.linalg has loaded a second OpenBLAS: both are
    at one thread in every panel, and at their own count again afterwards."""
    first_libs = set(import_between["first_after"])
    libs = set(import_between["after"])
    assert len(libs) > len(first_libs), "scipy.linalg loaded no further BLAS: nothing tested"
    assert import_between["first_during"] and import_between["during"]
    for counts in import_between["first_during"]:
        assert set(counts.values()) == {1}, counts
    for counts in import_between["during"]:
        assert set(counts) == libs and set(counts.values()) == {1}, counts
    assert set(import_between["after"].values()) == {START_THREADS}


def test_no_rescan_while_no_library_is_loaded(import_between):
    """The cheap check of the loaded libraries changes when scipy.linalg loads its own and
    not over two evaluations, which then reuse one scan of the libraries (~0.4-1 ms, more
    than an N=64 evaluation's limit may cost); limiting changes no number."""
    before, after_import, after_evaluations = import_between["stamps"]
    assert before is not None and before != after_import == after_evaluations
    assert not import_between["rescanned_again"]
    assert import_between["same_numbers"]


def test_a_blas_loaded_during_an_evaluation_is_limited_from_the_next_panel(import_during):
    """The Tanh NTK's first panel imports scipy.linalg.blas (for its rank-1 updates): every
    later panel sees that library at one thread too, and it gets its own count back (it
    starts with OPENBLAS_NUM_THREADS capped at the cores: more than 1 on this project's
    machines, or there would be nothing to limit)."""
    before, during, after = import_during["before"], import_during["during"], import_during["after"]
    assert len(during) == 3
    assert set(during[0]) == set(before) and set(during[0].values()) == {1}
    new = set(during[1]) - set(before)
    assert new, "the numerical route loaded no further BLAS: nothing tested"
    for counts in during[1:]:
        assert set(counts) == set(after) and set(counts.values()) == {1}, counts
    assert {after[lib] for lib in before} == {START_THREADS}
    expected = min(START_THREADS, len(os.sched_getaffinity(0)))
    assert expected > 1, "one core: every OpenBLAS starts at one thread, nothing to limit"
    assert {after[lib] for lib in new} == {expected}


def test_diagonal_is_limited(import_during):
    """net.diagonal runs the numerical route's coefficient products outside any panel."""
    assert import_during["diagonal_during"]
    for counts in import_during["diagonal_during"]:
        assert set(counts.values()) == {1}, counts


def test_limiting_changes_no_number(import_during, tmp_path):
    """The Tanh NTK computed with every BLAS limited equals, bit for bit, the same kernel in
    a process where no limit is set at all (BLAS at three threads) and in one where every
    BLAS starts at one thread."""
    unlimited, one_thread = tmp_path / "unlimited.npy", tmp_path / "one.npy"
    probe("import-during", str(unlimited), "unlimited")
    probe("import-during", str(one_thread), threads=1)
    ours = np.load(import_during["ntk"])
    assert np.array_equal(ours, np.load(unlimited))
    assert np.array_equal(ours, np.load(one_thread))
