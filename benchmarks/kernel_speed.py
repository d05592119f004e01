"""Kernel evaluation speed and memory against the unfused NumPy yardstick, in one process.

Network: (Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1, W_std=1.4, b_std=0.1),
inputs of d=512 features. For each N, a fresh child process times the yardstick
(benchmarks/yardstick/naive_relu_ntk.py, whole-matrix NumPy) and ntkdsl's ``net.kernels(x)``
(both NNGP and NTK, as the yardstick returns), taking turns in each of --repeat rounds (so a
slow spell of a shared machine hits both alike), best run of each, and measures each one's
peak resident memory above what the process held before the call (Linux VmHWM, reset before
every call). Targets (issue 6): >= 4x faster at N=4096, >= 3x at 1024 and 8192; peak memory
at most the output's size + 10% (inputs are already resident). --busy runs one competing
CPU-bound process meanwhile (benchmarks/busy.py).

    python benchmarks/kernel_speed.py                   # table for N = 1024, 4096, 8192
    python benchmarks/kernel_speed.py --n 2048 --repeat 3
    python benchmarks/kernel_speed.py --memmap 40000    # self-NTK into an np.memmap on disk
    python benchmarks/kernel_speed.py --n 4096 --busy   # beside a competing CPU-bound process

For benchmarking only (never in tests or CI), run without the OpenBLAS overrides some
machines set: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/...``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from busy import busy_note, competing_process

ARCH = "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1, W_std=1.4, b_std=0.1)"
D = 512
YARDSTICK = Path(__file__).resolve().parent / "yardstick"  # a copy of the project's yardstick


# ---------------------------------------------------------------- in the child process --

def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def best_times(fns: list, repeat: int) -> list[tuple[float, float]]:
    """(best wall seconds, CPU seconds of that run) of each function over ``repeat`` rounds
    in a warm process, as a user's repeated calls run. The functions take turns within a
    round, so a slow spell of a shared machine hits them alike. CPU time shows the work
    done when other processes share the cores."""
    best = [(float("inf"), 0.0)] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t, c = time.perf_counter(), time.process_time()
            fn()  # the result is dropped before the next call
            t, c = time.perf_counter() - t, time.process_time() - c
            best[i] = min(best[i], (t, c))
    return best


def peak_bytes(fn) -> tuple[int, object]:
    """(peak resident bytes above the start of the call, result) of one run after handing
    freed heap back to the system (malloc_trim), so memory reused from earlier runs cannot
    hide in it."""
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    base = _status_bytes("VmRSS")
    result = fn()
    return _status_bytes("VmHWM") - base, result


def measure(fn, repeat: int) -> tuple[float, float, int, object]:
    """(best wall seconds, CPU seconds of that run, peak resident bytes, last result)."""
    (best, cpu), = best_times([fn], repeat)
    return (best, cpu, *peak_bytes(fn))


def child_speed(n: int, repeat: int) -> dict:
    sys.path.insert(0, str(YARDSTICK))
    from naive_relu_ntk import naive_ntk

    import ntkdsl
    net = ntkdsl.compile(ARCH)
    x = np.random.default_rng(0).standard_normal((n, D))
    net.kernels(x[:700])  # warm up: threads, BLAS buffers, first-touch of the heap
    naive, ours, f32 = (lambda: naive_ntk(x), lambda: net.kernels(x),
                        lambda: net.kernels(x, dtype=np.float32))
    (t_naive, c_naive), (t_ours, c_ours), (t_f32, _) = best_times([naive, ours, f32], repeat)
    m_naive, ref = peak_bytes(naive)
    ref_ntk = ref[1]
    del ref
    m_ours, got = peak_bytes(ours)
    err = float(np.abs(got[1] - ref_ntk).max() / np.abs(ref_ntk).max())
    del got
    m_f32, _ = peak_bytes(f32)
    return dict(n=n, naive_s=t_naive, naive_cpu=c_naive, naive_peak=m_naive, ours_s=t_ours,
                ours_cpu=c_ours, ours_peak=m_ours, f32_s=t_f32, f32_peak=m_f32,
                output=2 * n * n * 8, max_rel_diff=err)


def child_memmap(n: int, directory: str, progress: bool) -> dict:
    import ntkdsl
    net = ntkdsl.compile(ARCH)
    x = np.random.default_rng(0).standard_normal((n, D))
    net.ntk(x[:700])
    path = Path(tempfile.mkdtemp(dir=directory)) / "ntk.npy"
    try:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, n))
        seconds, cpu, peak, _ = measure(lambda: net.ntk(x, out=out, progress=progress), 1)
        rows = np.random.default_rng(1).choice(n, size=8, replace=False)
        check = net.ntk(x[rows], x)  # a cross-kernel of 8 rows: evaluated independently
        diff = float(np.abs(out[rows] - check).max() / np.abs(check).max())
        symmetric = bool(np.array_equal(out[rows][:, rows], out[rows][:, rows].T))
        diag = bool(np.array_equal(out[rows, rows], net.diagonal(x[rows])[1]))
        size = path.stat().st_size
        out = None  # drops the map (the timed lambda shares this cell) before the file goes
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    return dict(n=n, seconds=seconds, cpu=cpu, peak=peak, inputs=x.nbytes, file=size,
                rows_rel_diff=diff, symmetric=symmetric, exact_diagonal=diag)


# ------------------------------------------------------------------ in the parent --

def run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=False,
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment() -> str:
    from threadpoolctl import threadpool_info
    blas = [f"{i['internal_api']} {i['version']} ({i.get('architecture')}, "
            f"{i['num_threads']} threads)" for i in threadpool_info()]
    flags = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    return (f"numpy {np.__version__}, {os.cpu_count()} cores, BLAS: {', '.join(blas)}, "
            f"OpenBLAS env: {flags or 'none'}")


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MB"


def speed_table(sizes: list[int], repeat: int, busy: bool) -> None:
    print(f"network: {ARCH}, d={D}; best of {repeat}; {environment()}; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print("| N | yardstick | ntkdsl | speed-up | CPU s yardstick / ntkdsl | ntkdsl float32 "
          "| output (NNGP+NTK) | peak RSS yardstick | peak RSS ntkdsl | ntkdsl peak / output |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with competing_process(busy):
        for n in sizes:
            print(speed_row(n, repeat), flush=True)
        print(busy_note(busy))


def speed_row(n: int, repeat: int) -> str:
    """One table row from a fresh child process timing N inputs."""
    r = run_child(["--child-speed", str(n), "--repeat", str(repeat)])
    assert r["max_rel_diff"] < 1e-6, r  # same kernel as the yardstick (its arccos is
    # evaluated without the exact diagonal, hence not 1e-12)
    return (f"| {n} | {r['naive_s']:.2f} s | {r['ours_s']:.3f} s "
            f"| {r['naive_s'] / r['ours_s']:.1f}x | {r['naive_cpu']:.2f} / {r['ours_cpu']:.2f} "
            f"| {r['f32_s']:.3f} s | {mb(r['output'])} "
            f"| {mb(r['naive_peak'])} | {mb(r['ours_peak'])} "
            f"| {r['ours_peak'] / r['output']:.3f} |")


def memmap_report(n: int, directory: str, progress: bool) -> None:
    need = n * n * 8
    free = shutil.disk_usage(directory).free
    if need * 1.05 > free:
        sys.exit(f"{n} x {n} float64 needs {need / 1e9:.1f} GB on disk; {directory} has "
                 f"{free / 1e9:.1f} GB free: choose another --dir")
    print(f"network: {ARCH}, d={D}; {environment()}")
    r = run_child(["--child-memmap", str(n), "--dir", directory]
                  + (["--progress"] if progress else []))
    print(f"N={n} self-NTK into np.memmap ({r['file'] / 1e9:.1f} GB file in {directory}): "
          f"{r['seconds']:.1f} s ({r['cpu']:.0f} s CPU), peak resident memory above the start "
          f"{mb(r['peak'])} (inputs {mb(r['inputs'])}, target < 1.5 GB beyond them); "
          f"8 random rows vs an independent cross-kernel: max rel diff "
          f"{r['rows_rel_diff']:.1e}; symmetric: {r['symmetric']}; exact diagonal: "
          f"{r['exact_diagonal']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[1024, 4096, 8192])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--memmap", type=int, metavar="N", help="write an N x N NTK to disk")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the memmap goes")
    p.add_argument("--progress", action="store_true", help="progress bar for --memmap")
    p.add_argument("--busy", action="store_true",
                   help="time beside a competing CPU-bound process")
    p.add_argument("--child-speed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-memmap", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child_speed:
        print(json.dumps(child_speed(a.child_speed, a.repeat)))
    elif a.child_memmap:
        print(json.dumps(child_memmap(a.child_memmap, a.dir, a.progress)))
    elif a.memmap:
        memmap_report(a.memmap, a.dir, a.progress)
    else:
        speed_table(a.n, a.repeat, a.busy)


if __name__ == "__main__":
    main()
