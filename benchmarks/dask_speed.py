"""Kernels through a Dask cluster against the same kernels in-process, in one run.

Network: (Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1), the NTK of N points with
d features (default N=16,000, d=20). In-process: ``net.ntk(x)`` on every core of this
machine. Cluster: a ``dask.distributed.LocalCluster`` of 2 worker processes with one thread
each (the same two cores), ``net.ntk(X)`` of a Dask array ``X`` chunked by --chunk rows,
gathered to the client with ``.compute()`` and with ``ntkdsl.dask.gather`` (the whole
N x N array lands in this process, as the in-process call gives it) and, separately,
written by the workers to one ``.npy`` file (``ntkdsl.dask.to_npy``, nothing gathered).
They take turns for --repeat rounds (a slow spell of a shared machine hits all alike);
the best of each is compared. The
workers compile the network once before the timing (a warm-up computation), as a
long-running cluster would have.

From the cluster's task stream it prints the per-block compute time and the bytes a block
sends, and from them a model of a larger cluster (README "Kernels on Dask").

    python benchmarks/dask_speed.py                      # N = 16,000, chunks of 2,000 rows
    python benchmarks/dask_speed.py --n 8000 --chunk 1000 --repeat 3
    python benchmarks/dask_speed.py --busy               # beside a competing CPU-bound process
    python benchmarks/dask_speed.py --nystrom 200000     # a Nyström fit (m = 2,000) instead

With --nystrom N: ``nystrom_ensemble`` of N points (d=20, targets from a teacher function)
with m=--components landmarks, in-process against a Dask array of --chunk rows on the same
cluster (C = ΦᵀΦ and ΦᵀY summed on the workers), and predictions on 10,000 test points at 5
times; the two fits' predictions are compared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from busy import busy_note, competing_process

ARCH = "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1)"


def _local_cluster(workers: int):
    """(cluster, client): a LocalCluster of ``workers`` processes of one thread each."""
    import distributed

    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    return cluster, distributed.Client(cluster)


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _block_figures(stream: list[dict]) -> tuple[float, float, int]:
    """(median seconds of a block task's compute, its total, median bytes a block holds)
    from the task stream records of the kernel blocks."""
    computes, sizes = [], []
    for record in stream:
        if "ntkdsl-pairs-" not in str(record.get("key")):
            continue
        for step in record.get("startstops", ()):
            if step["action"] == "compute":
                computes.append(step["stop"] - step["start"])
        if record.get("nbytes"):
            sizes.append(record["nbytes"])
    return statistics.median(computes), sum(computes), int(statistics.median(sizes or [0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--nystrom", type=int, metavar="N", help="time a Nyström fit of N points")
    parser.add_argument("--components", type=int, default=2000)
    options = parser.parse_args()
    if options.nystrom:
        nystrom(options)
        return

    import dask.array as da
    import distributed

    import ntkdsl

    net = ntkdsl.compile(ARCH)
    x = np.random.default_rng(0).normal(size=(options.n, options.d))
    print(f"{ARCH}\nNTK of N={options.n:,} points, d={options.d}; cluster: 2 worker processes x "
          f"1 thread, row chunks of {options.chunk:,} ({-(-options.n // options.chunk)} chunks); "
          f"load {os.getloadavg()[0]:.1f}")
    cluster, client = _local_cluster(2)
    X = da.from_array(x, chunks=(options.chunk, -1)).persist()  # the data on the workers
    net.ntk(X[:64]).compute()  # the workers import ntkdsl and compile the network once
    best = {"in-process": np.inf, "cluster, .compute()": np.inf, "cluster, gather()": np.inf,
            "cluster, to .npy": np.inf}
    stream: list[dict] = []
    with competing_process(options.busy), tempfile.TemporaryDirectory() as tmp:
        for _ in range(options.repeat):
            seconds, expected = _timed(lambda: net.ntk(x))
            best["in-process"] = min(best["in-process"], seconds)
            with distributed.get_task_stream(client) as ts:
                seconds, got = _timed(lambda: net.ntk(X).compute())
            stream = ts.data
            best["cluster, .compute()"] = min(best["cluster, .compute()"], seconds)
            assert np.array_equal(got, expected), "the cluster's kernel differs"
            del got
            seconds, got = _timed(lambda: ntkdsl.dask.gather(net.ntk(X)))
            best["cluster, gather()"] = min(best["cluster, gather()"], seconds)
            assert np.array_equal(got, expected), "the gathered kernel differs"
            del got
            seconds, _ = _timed(lambda: ntkdsl.dask.to_npy(net.ntk(X), os.path.join(tmp, "k.npy")))
            best["cluster, to .npy"] = min(best["cluster, to .npy"], seconds)
            del expected
    client.close()
    cluster.close()
    one_worker = _one_worker_seconds(net, x, options.chunk, options.repeat, options.busy)

    base = best["in-process"]
    for what, seconds in best.items():
        print(f"  {what:<20} {seconds:8.2f} s   {seconds / base:5.2f}x in-process")
    median, total, nbytes = _block_figures(stream)
    blocks = len([r for r in stream if "ntkdsl-pairs-" in str(r.get("key"))])
    entries = options.chunk ** 2
    print(f"  {blocks} block tasks of {options.chunk:,} x {options.chunk:,}: median compute "
          f"{median:.3f} s ({median / entries * 1e9:.1f} ns an entry), {total:.1f} s in all; "
          f"a block holds {nbytes / 1e6:.0f} MB")
    two_workers = best["cluster, to .npy"]
    print(f"  blocks per second, written to .npy: 1 worker {blocks / one_worker:.2f}, 2 workers "
          f"{blocks / two_workers:.2f} ({one_worker / two_workers:.2f}x)")
    print(f"  (best of {options.repeat}; {busy_note(options.busy)}; "
          f"load {os.getloadavg()[0]:.1f} at the end)")
    _scale_out(median / entries, nbytes / entries)


def _one_worker_seconds(net, x, chunk: int, repeat: int, busy: bool) -> float:
    """Best seconds of the same kernel written to .npy by a cluster of one worker."""
    import dask.array as da

    import ntkdsl

    cluster, client = _local_cluster(1)
    X = da.from_array(x, chunks=(chunk, -1)).persist()
    net.ntk(X[:64]).compute()
    best = np.inf
    with competing_process(busy), tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            seconds, _ = _timed(lambda: ntkdsl.dask.to_npy(net.ntk(X), os.path.join(tmp, "k.npy")))
            best = min(best, seconds)
    client.close()
    cluster.close()
    return best


def nystrom(options) -> None:
    """In-process against cluster Nyström fits (and predictions) of the same data."""
    import dask.array as da
    import distributed

    from ntkdsl.nystrom import nystrom_ensemble

    n, m, chunk = options.nystrom, options.components, max(options.chunk, 20_000)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, options.d))
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2]
    x_test = rng.normal(size=(10_000, options.d))
    times = [1.0, 10.0, 100.0, 1000.0, np.inf]
    print(f"{ARCH}\nNyström NTK fit, N={n:,}, d={options.d}, m={m:,}, predictions on 10,000 "
          f"test points at 5 times; cluster: 2 worker processes x 1 thread, row chunks of "
          f"{chunk:,}; load {os.getloadavg()[0]:.1f}")
    cluster, client = _local_cluster(2)
    X = da.from_array(x, chunks=(chunk, -1)).persist()
    nystrom_ensemble(ARCH, X[:4 * m], y[:4 * m], 64)  # the workers compile the network
    best = {"in-process": np.inf, "cluster": np.inf}
    with competing_process(options.busy):
        for _ in range(options.repeat):
            seconds, local = _timed(lambda: nystrom_ensemble(ARCH, x, y, m).predict(x_test, times))
            best["in-process"] = min(best["in-process"], seconds)
            with distributed.get_task_stream(client) as ts:
                seconds, spread = _timed(
                    lambda: nystrom_ensemble(ARCH, X, y, m).predict(x_test, times))
            best["cluster"] = min(best["cluster"], seconds)
            stream = ts.data
            gap = np.abs(spread.mean - local.mean).max() / np.abs(local.mean).max()
    client.close()
    cluster.close()
    for what, seconds in best.items():
        print(f"  {what:<12} {seconds:8.1f} s   {seconds / best['in-process']:5.2f}x in-process")
    print(f"  predictions of the two fits differ by {gap:.1e} of the largest (best of "
          f"{options.repeat}; {busy_note(options.busy)}; load {os.getloadavg()[0]:.1f} at the end)")
    _nystrom_scale_out(stream, chunk, m, best["cluster"])


def _nystrom_scale_out(stream: list[dict], chunk: int, m: int, cluster_seconds: float,
                       n: int = 1_000_000, workers: int = 100, gb_per_s: float = 1.0) -> None:
    """The README's model of a Nyström fit on a larger cluster: the row chunks' tasks (each
    chunk's features against the landmarks and its C = ΦᵀΦ, ΦᵀY), as long as measured here
    per row, spread evenly over the workers; then the tree reduction, log2(chunks) rounds
    each sending one m x m partial sum at ``gb_per_s``; the rest of this run's time (the
    landmarks' kernel and factor, the m x m eigendecomposition and the predictions, on the
    client) unchanged."""
    chunk_tasks = [step["stop"] - step["start"] for record in stream
                   if "_checked_call" in str(record.get("key"))
                   for step in record.get("startstops", ()) if step["action"] == "compute"]
    if not chunk_tasks:
        return
    per_row = statistics.median(chunk_tasks) / chunk
    on_workers = sum(chunk_tasks)
    rest = max(cluster_seconds - on_workers / 2, 0.0)  # two workers here
    chunks = -(-n // chunk)
    compute = -(-chunks // workers) * chunk * per_row
    reduce = np.log2(max(chunks, 2)) * m * m * 8 / (gb_per_s * 1e9)
    print(f"  {len(chunk_tasks)} row-chunk tasks of {chunk:,} rows: median "
          f"{statistics.median(chunk_tasks):.2f} s ({per_row * 1e6:.1f} us a row); the rest of "
          f"the fit (client) about {rest:.1f} s")
    print(f"  model, N={n:,} on {workers} workers of one core: {chunks} chunk tasks, "
          f"{compute:.0f} s of features and C, the tree reduction of m x m sums "
          f"{reduce:.1f} s at {gb_per_s:.0f} GB/s, the client's part {rest:.0f} s: "
          f"about {(compute + reduce + rest) / 60:.1f} min")


def _scale_out(seconds_per_entry: float, bytes_per_entry: float, n: int = 1_000_000,
               workers: int = 100, chunk: int = 10_000, disk_mb_per_s: float = 200.0) -> None:
    """The model of the README: the upper triangle's blocks, each as long as measured here
    per entry, spread evenly over the workers, and each block written by its worker to a
    shared store at ``disk_mb_per_s`` per worker (the mirror computed from its twin)."""
    chunks = -(-n // chunk)
    tasks = chunks * (chunks + 1) // 2
    compute = tasks * chunk ** 2 * seconds_per_entry / workers
    write = n * n * bytes_per_entry / (workers * disk_mb_per_s * 1e6)
    print(f"  model, N={n:,} on {workers} workers of one core (blocks of {chunk:,} rows, "
          f"{tasks:,} tasks): compute {compute / 60:.0f} min, writing the {n * n * 8 / 1e12:.0f} "
          f"TB kernel at {disk_mb_per_s:.0f} MB/s a worker {write / 60:.0f} min")


if __name__ == "__main__":
    main()
