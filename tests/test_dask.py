"""Kernels of Dask arrays (ntkdsl.evaluation.dask_blocks, ntkdsl.dask): lazy arrays of kernel
blocks equal to the in-process kernels, on Dask's local schedulers and on a LocalCluster of two
worker processes — including one killed in the middle of a computation."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ntkdsl
from ntkdsl.errors import InputError, NTKDSLError
from ntkdsl.evaluation import dask_blocks

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

ARCH = "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1)"


@pytest.fixture(scope="module")
def net():
    return ntkdsl.compile(ARCH)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(230, 12))
    x[201] = x[17]  # identical rows in different chunks
    x[40] = x[41]  # ... and in the same chunk
    return x, rng.normal(size=(75, 12))


def _pair_tasks(array) -> int:
    return sum(1 for key in dict(array.__dask_graph__()) if isinstance(key, tuple)
               and key[0].startswith("ntkdsl-pairs-"))


@pytest.mark.parametrize("chunks", [230, 50, (100, 30, 100)])
def test_self_kernels_equal_in_process(net, data, chunks):
    x, _ = data
    X = da.from_array(x, chunks=(chunks, -1))
    K, T = net.kernels(X)
    assert K.chunks == (X.chunks[0], X.chunks[0])
    k, t = net.kernels(x)
    got_k, got_t = dask.compute(K, T, scheduler="sync")
    np.testing.assert_allclose(got_k, k, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got_t, t, rtol=1e-12, atol=0)
    assert np.array_equal(got_t, got_t.T) and np.array_equal(got_k, got_k.T)
    # identical rows, in one chunk or two, hold the exact diagonal values
    diag_k, diag_t = net.diagonal(x)
    assert got_t[201, 17] == diag_t[17] and got_t[17, 201] == diag_t[17]
    assert got_k[40, 41] == diag_k[40]


def test_self_kernel_computes_each_block_pair_once(net, data, monkeypatch):
    x, _ = data
    calls = []
    real = dask_blocks._pair_block

    def counted(*args):
        calls.append(args[4:6])  # the first rows of the block's two chunks
        return real(*args)

    monkeypatch.setattr(dask_blocks, "_pair_block", counted)
    X = da.from_array(x, chunks=(50, -1))  # 5 row chunks
    K, T = net.kernels(X)
    assert _pair_tasks(K) == 5 * 6 // 2
    got_k, got_t = dask.compute(K, T, scheduler="sync")
    np.testing.assert_allclose(got_k, net.nngp(x), rtol=1e-12, atol=0)
    assert len(calls) == 15 and len(set(calls)) == 15  # both kernels from one task a block
    assert all(first_a <= first_b for first_a, first_b in calls)  # the upper triangle
    np.testing.assert_allclose(got_t, net.ntk(x), rtol=1e-12, atol=0)


def test_cross_kernels_and_mixed_inputs(net, data):
    x, y = data
    X, Y = da.from_array(x, chunks=(60, -1)), da.from_array(y, chunks=(40, -1))
    expected = net.ntk(x, y)
    for a, b in ((X, Y), (x, Y), (X, y)):
        got = net.ntk(a, b)
        assert got.shape == (230, 75)
        np.testing.assert_allclose(got.compute(scheduler="threads"), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(net.nngp(X, Y).compute(), net.nngp(x, y), rtol=1e-12, atol=0)


def test_float32_and_threads_per_block(net, data):
    x, _ = data
    X = da.from_array(x, chunks=(80, -1))
    got = net.ntk(X, dtype=np.float32, threads=2)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.compute(), net.ntk(x, dtype=np.float32))


def test_convolutional_network_on_image_chunks():
    conv = ntkdsl.compile("Conv(8, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu > "
                          "GlobalAvgPool > Dense(1)")
    images = np.random.default_rng(3).normal(size=(19, 5, 5, 2))
    X = da.from_array(images, chunks=(7, 5, 5, 2))
    np.testing.assert_allclose(conv.ntk(X).compute(), conv.ntk(images), rtol=1e-12, atol=0)


def test_nan_in_one_chunk_names_its_row_in_the_whole_array(net, data):
    x = data[0].copy()
    x[187, 4] = np.nan
    with pytest.raises(InputError, match=r"x1 has a non-finite value nan at row 187, column 4"):
        net.ntk(da.from_array(x, chunks=(50, -1))).compute(scheduler="sync")


def test_bad_chunking_and_shapes_are_refused_before_work(net, data):
    x, y = data
    with pytest.raises(InputError, match=r"chunked along axis 1.*\n.*rechunk\(\{1: -1\}\)"):
        net.ntk(da.from_array(x, chunks=(50, 5)))
    with pytest.raises(InputError, match="same features"):
        net.ntk(da.from_array(x, chunks=50), da.from_array(y[:, :5], chunks=50))
    with pytest.raises(InputError, match="out= does not go with Dask arrays"):
        net.ntk(da.from_array(x, chunks=50), out=np.empty((230, 230)))
    with pytest.raises(InputError, match="one per row"):
        net.ntk(da.from_array(x[0], chunks=4))
    with pytest.raises(ntkdsl.ShapeError, match="fully connected"):  # at once, not on a worker
        net.ntk(da.from_array(x.reshape(230, 3, 4), chunks=(50, 3, 4)))


def test_to_npy_writes_blocks_into_one_file(net, data, tmp_path):
    x, _ = data
    T = net.ntk(da.from_array(x, chunks=(60, -1)))
    path = ntkdsl.dask.to_npy(T, tmp_path / "ntk.npy")
    np.testing.assert_allclose(np.load(path, mmap_mode="r"), net.ntk(x), rtol=1e-12, atol=0)
    with pytest.raises(InputError, match="2-D Dask array"):
        ntkdsl.dask.to_npy(net.ntk(x), tmp_path / "no.npy")


def test_gather_without_a_cluster(net, data):
    x, _ = data
    np.testing.assert_allclose(ntkdsl.dask.gather(net.nngp(da.from_array(x, chunks=(70, -1)))),
                               net.nngp(x), rtol=1e-12, atol=0)
    assert dask_blocks.active_client() is None  # Dask's local scheduler stored it


# ----------------------------------------------------------------- a real cluster --
@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_cluster_kernels_equal_in_process(client, net, data):
    x, y = data
    X = da.from_array(x, chunks=(40, -1))
    K, T = net.kernels(X)
    got_k, got_t = dask.compute(K, T)
    k, t = net.kernels(x)
    np.testing.assert_allclose(got_k, k, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got_t, t, rtol=1e-12, atol=0)
    assert np.array_equal(got_t, got_t.T)
    np.testing.assert_allclose(net.nngp(X, da.from_array(y, chunks=30)).compute(),
                               net.nngp(x, y), rtol=1e-12, atol=0)
    # both workers did some of it
    assert len(client.run(os.getpid)) == 2


def test_cluster_writes_zarr_and_npy_from_the_workers(client, net, data, tmp_path):
    pytest.importorskip("zarr")
    x, _ = data
    T = net.ntk(da.from_array(x, chunks=(60, -1)))
    T.to_zarr(str(tmp_path / "ntk.zarr"))
    np.testing.assert_allclose(da.from_zarr(str(tmp_path / "ntk.zarr")).compute(), net.ntk(x),
                               rtol=1e-12, atol=0)
    path = ntkdsl.dask.to_npy(T, tmp_path / "ntk.npy")
    np.testing.assert_allclose(np.load(path), net.ntk(x), rtol=1e-12, atol=0)


def test_cluster_nan_error_is_ntkdsls_own(client, net, data):
    x = data[0].copy()
    x[99, 0] = np.inf
    with pytest.raises(InputError, match="row 99, column 0"):
        net.ntk(da.from_array(x, chunks=(40, -1))).compute()


def test_workers_without_the_package_are_named(client, net, data, monkeypatch):
    addresses = set(client.run(os.getpid))
    assert dask_blocks._workers_without(client, "ntkdsl") == []
    assert set(dask_blocks._workers_without(client, "ntkdsl_not_installed_anywhere")) == addresses
    monkeypatch.setattr(dask_blocks, "PACKAGE", "ntkdsl_not_installed_anywhere")
    with pytest.raises(NTKDSLError, match=r"2 Dask worker\(s\) cannot import "
                                          r"ntkdsl_not_installed_anywhere"):
        net.ntk(da.from_array(data[0], chunks=50))


def test_the_package_check_asks_the_workers_once_per_set_of_workers(client, net, data, monkeypatch):
    asked = []
    real = dask_blocks._workers_without
    monkeypatch.setattr(dask_blocks, "_workers_without",
                        lambda c, package: asked.append(package) or real(c, package))
    monkeypatch.setattr(dask_blocks, "_CHECKED_WORKERS", {})
    X = da.from_array(data[0], chunks=(50, -1))
    for _ in range(3):
        net.ntk(X)
    assert asked == ["ntkdsl"]
    monkeypatch.setitem(dask_blocks._CHECKED_WORKERS, (client.id, "ntkdsl"), frozenset({"gone"}))
    net.ntk(X)  # the workers differ from those last asked: asked again
    assert asked == ["ntkdsl", "ntkdsl"]


def test_a_block_too_large_for_a_worker_is_refused_before_work(client, net, data, monkeypatch):
    """The largest block (rows x rows x 8 bytes x kernels) against each worker's memory limit:
    refused with the rechunk line, and the chunks that line gives are accepted."""
    x = data[0]
    monkeypatch.setattr(dask_blocks, "_WORKER_MEMORY_FRACTION", 4e-7)  # ~5 KB a block
    budget = 4e-7 * min(w["memory_limit"] for w in
                        client.scheduler_info(n_workers=-1)["workers"].values()) / 2
    with pytest.raises(InputError, match=r"a kernel block of 100 x 100 rows \(2 kernel") as info:
        net.kernels(da.from_array(x, chunks=(100, -1)))
    rows = _hinted_rows(info.value)
    assert 1 <= rows * rows * 8 * 2 <= budget
    _, T = net.kernels(da.from_array(x, chunks=(rows, -1)))
    np.testing.assert_allclose(T.compute(), net.ntk(x), rtol=1e-12, atol=0)


def test_a_block_too_large_for_this_process_is_refused_on_local_schedulers(net, data,
                                                                           monkeypatch):
    monkeypatch.setattr(dask_blocks, "active_client", lambda: None)
    monkeypatch.setattr(dask_blocks, "available_memory", lambda: 2 * 8 * 60 * 60 * os.cpu_count())
    X = da.from_array(data[0], chunks=(61, -1))
    with pytest.raises(InputError, match="this process has") as info:
        net.nngp(X)
    rows = _hinted_rows(info.value)
    assert 40 <= rows < 60
    net.nngp(da.from_array(data[0], chunks=(60, -1)))  # fits exactly


def _hinted_rows(error) -> int:
    return int(error.hint.split("rechunk({0: ")[1].rstrip("})").replace(",", ""))


def test_a_worker_killed_mid_computation_does_not_change_the_result():
    """Dask reschedules the tasks of a worker that dies (its nanny starts a new one): the
    kernel is the same as in-process, to the last bit."""
    net = ntkdsl.compile("(Dense(64, W_std=1.3, b_std=0.2) > Erf) * 6 > Dense(1)")
    x = np.random.default_rng(11).normal(size=(2400, 10))  # 300 block tasks of 100 rows
    expected = net.ntk(x)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=50)
    with distributed.Client(cluster) as c:
        pids = c.run(os.getpid)
        future = c.compute(net.ntk(da.from_array(x, chunks=(150, -1))))  # 136 block tasks
        deadline = time.monotonic() + 120
        while not any(c.has_what().values()) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not future.done(), "the computation ended before a worker could be killed"
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        got = future.result(timeout=300)
        assert set(c.run(os.getpid).values()) != set(pids.values())  # a new worker process
    cluster.close()
    np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------- Nyström on Dask --
def _nystrom_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(900, 6))
    y = np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1) + 0.05 * rng.normal(size=(900, 2))
    return x, y, rng.normal(size=(130, 6))


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_nystrom_fit_from_dask_arrays_equals_in_process(kernel):
    from ntkdsl.nystrom import nystrom_ensemble

    x, y, x_test = _nystrom_data()
    local = nystrom_ensemble(ARCH, x, y, 120, kernel=kernel, diag_reg=1e-3, covariance=True)
    X, Y = da.from_array(x, chunks=(200, -1)), da.from_array(y, chunks=(350, -1))
    with dask.config.set(scheduler="threads"):
        spread = nystrom_ensemble(ARCH, X, Y, 120, kernel=kernel, diag_reg=1e-3, covariance=True)
        for given in (y, Y):  # NumPy targets beside Dask inputs too
            again = nystrom_ensemble(ARCH, X, given, 120, kernel=kernel, diag_reg=1e-3)
            np.testing.assert_allclose(again.predict(x_test).mean, local.predict(x_test).mean,
                                       rtol=1e-10, atol=1e-12)
        times = [0.5, 10.0, np.inf]
        want = local.predict(x_test, times, variance_only=True)
        got = spread.predict(da.from_array(x_test, chunks=(50, -1)), times, variance_only=True)
        assert got.mean.shape == want.mean.shape and got.covariance.shape == want.covariance.shape
        np.testing.assert_allclose(got.mean.compute(), want.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got.covariance.compute(), want.covariance, rtol=1e-10,
                                   atol=1e-12)
    np.testing.assert_array_equal(spread.landmarks, local.landmarks)


def test_nystrom_on_dask_refuses_what_it_cannot_do():
    from ntkdsl.nystrom import nystrom_ensemble

    x, y, x_test = _nystrom_data()
    X = da.from_array(x, chunks=(200, -1))
    with pytest.raises(InputError, match=r"leverage.*not available for Dask"):
        nystrom_ensemble(ARCH, X, y, 50, landmarks="leverage")
    bad = x.copy()
    bad[613, 2] = np.nan
    with pytest.raises(InputError, match="x_train has a non-finite value nan at row 613"):
        nystrom_ensemble(ARCH, da.from_array(bad, chunks=(200, -1)), y, 50,
                         landmarks=np.arange(50))
    fitted = nystrom_ensemble(ARCH, X, y, 50)
    with pytest.raises(InputError, match="full covariance of a Dask array"):
        fitted.predict(da.from_array(x_test, chunks=50), compute_cov=True)


def test_cluster_nystrom_fit_equals_in_process(client):
    from ntkdsl.nystrom import nystrom_ensemble

    x, y, x_test = _nystrom_data()
    local = nystrom_ensemble(ARCH, x, y, 150, diag_reg=1e-4)
    spread = nystrom_ensemble(ARCH, da.from_array(x, chunks=(100, -1)),
                              da.from_array(y, chunks=(100, -1)), 150, diag_reg=1e-4)
    times = [1.0, 100.0, np.inf]
    np.testing.assert_allclose(spread.predict(x_test, times).mean,
                               local.predict(x_test, times).mean, rtol=1e-10, atol=1e-12)
    lazy = spread.predict(da.from_array(x_test, chunks=(40, -1)), times).mean
    np.testing.assert_allclose(lazy.compute(), local.predict(x_test, times).mean, rtol=1e-10,
                               atol=1e-12)


def test_cluster_nystrom_sends_its_matrices_to_the_workers_not_in_the_graph(client):
    """The landmarks' factor (m x m) and the targets are scattered to the workers once; the
    task graph holds their keys only (Dask warns of a graph over 10 MB: here it would be 12)."""
    import warnings

    from ntkdsl.nystrom import nystrom_ensemble

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2400, 6))
    y = np.sin(x[:, 0])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*large graph")
        spread = nystrom_ensemble(ARCH, da.from_array(x, chunks=(600, -1)), y, 1200)
        got = spread.predict(da.from_array(x[:500], chunks=(250, -1)), [10.0]).mean.compute()
    local = nystrom_ensemble(ARCH, x, y, 1200)
    np.testing.assert_allclose(got, local.predict(x[:500], [10.0]).mean, rtol=1e-9, atol=1e-11)


def test_estimators_fit_and_predict_dask_arrays_with_nystrom_on_the_workers():
    x, y, x_test = _nystrom_data()
    X, X_test = da.from_array(x, chunks=(200, -1)), da.from_array(x_test, chunks=(50, -1))
    local = ntkdsl.NTKRegressor(ARCH, solver="nystrom", n_components=100, diag_reg=1e-3).fit(x, y)
    spread = ntkdsl.NTKRegressor(ARCH, n_components=100, diag_reg=1e-3).fit(
        X, da.from_array(y, chunks=(300, -1)))
    assert spread.solver_ == "nystrom" and "Dask arrays" in repr(spread)
    lazy = spread.predict(X_test)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), local.predict(x_test), rtol=1e-10, atol=1e-12)
    _, std = spread.predict(X_test, return_std=True)
    np.testing.assert_allclose(np.asarray(std), local.predict(x_test, return_std=True)[1],
                               rtol=1e-8, atol=1e-12)
    labels = (y[:, 0] > 0).astype(int)
    classifier = ntkdsl.NTKClassifier(ARCH, n_components=100).fit(X, labels)
    same = ntkdsl.NTKClassifier(ARCH, solver="nystrom", n_components=100).fit(x, labels)
    np.testing.assert_array_equal(np.asarray(classifier.predict(X_test)), same.predict(x_test))
    with pytest.raises(InputError, match="only solver='nystrom'"):
        ntkdsl.NTKRegressor(ARCH, solver="exact").fit(X, y)
    with pytest.raises(InputError, match="expecting 6 features"):
        spread.predict(da.from_array(x_test[:, :4], chunks=50))


def test_gather_assembles_blocks_on_the_client(client, net, data, tmp_path):
    x, _ = data
    T = net.ntk(da.from_array(x, chunks=(60, -1)))
    np.testing.assert_allclose(ntkdsl.dask.gather(T), net.ntk(x), rtol=1e-12, atol=0)
    out = np.lib.format.open_memmap(tmp_path / "k.npy", mode="w+", dtype=np.float64,
                                    shape=T.shape)
    assert ntkdsl.dask.gather(T, out) is out
    np.testing.assert_allclose(np.load(tmp_path / "k.npy"), net.ntk(x), rtol=1e-12, atol=0)
    with pytest.raises(ntkdsl.ShapeError, match="has shape"):
        ntkdsl.dask.gather(T, np.empty((3, 3)))


def test_gather_fetches_each_mirrored_pair_once(client, net, data, monkeypatch):
    """A self-kernel's blocks below the diagonal are written from their twins on the client:
    10 of 16 blocks fetched for 4 chunks; a cross-kernel or a sliced kernel fetches all."""
    from distributed import Client

    x, y = data
    fetched = []
    real = Client.compute
    monkeypatch.setattr(Client, "compute",
                        lambda self, value, **kw: fetched.append(value) or real(self, value, **kw))
    X = da.from_array(x, chunks=(60, -1))
    np.testing.assert_array_equal(ntkdsl.dask.gather(net.ntk(X)), net.ntk(x))
    assert len(fetched) == 10
    fetched.clear()
    np.testing.assert_array_equal(ntkdsl.dask.gather(net.ntk(X, da.from_array(y, chunks=40))),
                                  net.ntk(x, y))
    assert len(fetched) == 4 * 2
    fetched.clear()
    np.testing.assert_array_equal(ntkdsl.dask.gather(net.ntk(X)[:, 10:]), net.ntk(x)[:, 10:])
    assert len(fetched) == 16


def test_the_core_does_not_import_dask():
    """ntkdsl's kernels, solvers and estimators run without Dask: it is imported only when the
    inputs already are Dask arrays (the user imported it)."""
    code = ("import sys, numpy as np, ntkdsl\n"
            "net = ntkdsl.compile('Dense(8) > Relu > Dense(1)')\n"
            "x = np.random.default_rng(0).normal(size=(40, 3))\n"
            "net.kernels(x)\n"
            "ntkdsl.NTKRegressor('Dense(8) > Relu > Dense(1)').fit(x, x[:, 0]).predict(x)\n"
            "from ntkdsl.nystrom import nystrom_ensemble\n"
            "nystrom_ensemble('Dense(8) > Relu > Dense(1)', x, x[:, 0], 10).predict(x)\n"
            "import ntkdsl.dask\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
