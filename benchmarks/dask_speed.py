"""Kernels through a Dask cluster against the same kernels in-process, in one run.

Network: (Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1), the NTK of N points with
d features (default N=16,000, d=20). In-process: ``net.ntk(x)`` on every core of this
machine. Cluster: a ``dask.distributed.LocalCluster`` of 2 worker processes with one thread
each (the same two cores), ``net.ntk(X)`` of a Dask array ``X`` chunked by --chunk rows,
gathered to the client with ``.compute()`` (the whole N x N array lands in this process,
as the in-process call gives it) and, separately, written by the workers to one ``.npy``
file (``ntkdsl.dask.to_npy``, nothing gathered). The two take turns for --repeat rounds
(a slow spell of a shared machine hits both alike); the best of each is compared. The
workers compile the network once before the timing (a warm-up computation), as a
long-running cluster would have.

From the cluster's task stream it prints the per-block compute time and the bytes a block
sends, and from them a model of a larger cluster (README "Kernels on Dask").

    python benchmarks/dask_speed.py                      # N = 16,000, chunks of 2,000 rows
    python benchmarks/dask_speed.py --n 8000 --chunk 1000 --repeat 3
    python benchmarks/dask_speed.py --busy               # beside a competing CPU-bound process
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
    options = parser.parse_args()

    import dask.array as da
    import distributed

    import ntkdsl

    net = ntkdsl.compile(ARCH)
    x = np.random.default_rng(0).normal(size=(options.n, options.d))
    print(f"{ARCH}\nNTK of N={options.n:,} points, d={options.d}; cluster: 2 worker processes x "
          f"1 thread, row chunks of {options.chunk:,} ({-(-options.n // options.chunk)} chunks); "
          f"load {os.getloadavg()[0]:.1f}")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster)
    X = da.from_array(x, chunks=(options.chunk, -1)).persist()  # the data on the workers
    net.ntk(X[:64]).compute()  # the workers import ntkdsl and compile the network once
    best = {"in-process": np.inf, "cluster, to client": np.inf, "cluster, to .npy": np.inf}
    stream: list[dict] = []
    with competing_process(options.busy), tempfile.TemporaryDirectory() as tmp:
        for _ in range(options.repeat):
            seconds, expected = _timed(lambda: net.ntk(x))
            best["in-process"] = min(best["in-process"], seconds)
            with distributed.get_task_stream(client) as ts:
                seconds, got = _timed(lambda: net.ntk(X).compute())
            stream = ts.data
            best["cluster, to client"] = min(best["cluster, to client"], seconds)
            assert np.array_equal(got, expected), "the cluster's kernel differs"
            del got
            seconds, _ = _timed(lambda: ntkdsl.dask.to_npy(net.ntk(X), os.path.join(tmp, "k.npy")))
            best["cluster, to .npy"] = min(best["cluster, to .npy"], seconds)
            del expected
    client.close()
    cluster.close()

    base = best["in-process"]
    for what, seconds in best.items():
        print(f"  {what:<20} {seconds:8.2f} s   {seconds / base:5.2f}x in-process")
    median, total, nbytes = _block_figures(stream)
    blocks = len([r for r in stream if "ntkdsl-pairs-" in str(r.get("key"))])
    entries = options.chunk ** 2
    print(f"  {blocks} block tasks of {options.chunk:,} x {options.chunk:,}: median compute "
          f"{median:.3f} s ({median / entries * 1e9:.1f} ns an entry), {total:.1f} s in all; "
          f"a block holds {nbytes / 1e6:.0f} MB")
    print(f"  (best of {options.repeat}; {busy_note(options.busy)}; "
          f"load {os.getloadavg()[0]:.1f} at the end)")
    _scale_out(median / entries, nbytes / entries)


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
