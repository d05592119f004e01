"""Convolutional kernel speed against neural-tangents, in one run (issue 14).

Cases (the issue's targets), on the first N images of scikit-learn's bundled digits as 8x8x1
images, self-kernel NTK (float64):

    gap      (Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu) * 3 >
             GlobalAvgPool > Dense(1), N=256: at least 10x faster than neural-tangents
             (issue: 89 s there); every pair of positions (4,096 per pair of images)
    flatten  the same with Flatten instead of the pooling, N=1024: at least 5x (issue: 9.9 s);
             the same positions only (64 per pair)
    digits   the gap network on all 1,797 digits: under 3 minutes (no yardstick: the
             neural-tangents figure would take over an hour)

neural-tangents runs as a subprocess of the Python in NT_PYTHON (default /work/venv-nt, a
separate virtual environment: ``python -m venv /work/venv-nt && /work/venv-nt/bin/pip
install neural-tangents jax[cpu]``), with x64 enabled, its ``kernel_fn(x, None, 'ntk')`` as
documented (not jitted: that is how the issue measured it; --jit adds a jitted run,
compilation included); both sides see the same images and their NTKs are compared. Without
that environment the issue's figures are printed as the yardstick. Wall and CPU seconds are
printed (the machine is shared: CPU seconds show the work when other processes hold cores),
and the load average before and after.

    python benchmarks/conv_speed.py                      # gap and flatten, with neural-tangents
    python benchmarks/conv_speed.py --cases digits       # the full digits self-kernel
    python benchmarks/conv_speed.py --cases gap --n 128  # smaller
    python benchmarks/conv_speed.py --cases digits --n 384 --breakdown --busy

Every case also prints ntkdsl's CPU nanoseconds per position pair (kernel entry) per layer,
beside a yardstick measured in the same run: one contiguous NumPy pass (an in-place
multiply of a tile-sized array), so the figure reads as passes per entry. ``--n`` smaller
than the case's extrapolates the CPU seconds to the case's size by pairs. ``--breakdown``
traces one tile of 16 image pairs of the program (one thread) and prints each line's CPU
nanoseconds per entry; ``--busy`` runs everything beside one competing CPU-bound process
(benchmarks/busy.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from busy import busy_note, competing_process

CONV = "Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu"
CASES = {
    "gap": (f"({CONV}) * 3 > GlobalAvgPool > Dense(1)", 256, 89.0, 10.0),
    "flatten": (f"({CONV}) * 3 > Flatten > Dense(1)", 1024, 9.9, 5.0),
    "digits": (f"({CONV}) * 3 > GlobalAvgPool > Dense(1)", 1797, None, None),
}
NT_PYTHON = os.environ.get("NT_PYTHON", "/work/venv-nt/bin/python")

# Run by NT_PYTHON: the same network in neural-tangents' stax, timed, its NTK saved.
NT_SCRIPT = r'''
import json, sys, time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax
images, readout, out, jit = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "jit"
layers = []
for _ in range(3):
    layers += [stax.Conv(32, (3, 3), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu()]
layers += [stax.GlobalAvgPool() if readout == "gap" else stax.Flatten(), stax.Dense(1)]
kernel_fn = stax.serial(*layers)[2]
if jit:
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
x = np.load(images)
t, c = time.perf_counter(), time.process_time()
ntk = np.asarray(kernel_fn(x, None, get="ntk"))
wall, cpu = time.perf_counter() - t, time.process_time() - c
np.save(out, ntk)
print(json.dumps({"wall": wall, "cpu": cpu, "version": __import__("neural_tangents").__version__}))
'''


def digits(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits
    images = load_digits().images[:n].astype(np.float64) / 16.0
    return images[..., None]  # (n, 8, 8, 1), channels last


def ntkdsl_run(arch: str, x: np.ndarray, threads: int | None) -> tuple[float, float, np.ndarray]:
    import ntkdsl
    net = ntkdsl.compile(arch)
    net.ntk(x[:8], threads=threads)  # warm: compiled, thread pools started
    t, c = time.perf_counter(), time.process_time()
    ntk = net.ntk(x, threads=threads)
    return time.perf_counter() - t, time.process_time() - c, ntk


def pass_ns(entries: int = 1 << 16, rounds: int = 200) -> float:
    """CPU nanoseconds per entry of one contiguous in-place NumPy multiply over a tile-sized
    array: the yardstick of the per-entry figures."""
    values = np.random.default_rng(0).uniform(1.0, 2.0, entries)
    best = float("inf")
    for _ in range(5):
        c = time.process_time()
        for _ in range(rounds):
            np.multiply(values, 1.0, out=values)
        best = min(best, time.process_time() - c)
    return best / rounds / entries * 1e9


def per_entry_ns(cpu: float, n: int, entries_per_pair: int, layers: int) -> float:
    """CPU nanoseconds per kernel entry (position pair) per layer of a self-kernel of n
    images (n (n + 1) / 2 pairs computed)."""
    return cpu / (n * (n + 1) / 2 * entries_per_pair * layers) * 1e9


def breakdown(arch: str, x: np.ndarray, columns: int = 16, rounds: int = 40) -> None:
    """Each line of the pair program's CPU nanoseconds per entry (over all layers), one
    tile of one image against ``columns`` images, one thread (lines above 0.1 ns)."""
    from threadpoolctl import threadpool_limits

    import ntkdsl
    from ntkdsl.evaluation.memory import _keep_freed_heap
    from ntkdsl.evaluation.spatial import _ufunc_buffer, side_values, tile_values
    from ntkdsl.runtime import driver
    compiled = ntkdsl.compile(arch).compiled
    mine = side_values(compiled, x[:columns + 1], np.dtype(np.float64))
    theirs = [driver.as_other_input(v) for v in mine]
    pair = compiled.pair

    def tile() -> None:
        gram = driver.image_gram(x[:1], x[1:columns + 1], True)
        buffer = _ufunc_buffer(gram.shape, 1, True)  # as a strip tile runs in the library
        before = None if buffer is None else np.setbufsize(buffer)
        try:
            pair(gram, x.shape[-1], *tile_values(mine, theirs, slice(0, 1), slice(1, columns + 1)))
        finally:
            if before is not None:
                np.setbufsize(before)

    spent: dict[int, float] = {}
    clock = [None, 0.0]

    def local(frame, event, arg):
        now = time.process_time()
        if clock[0] is not None:
            spent[clock[0]] = spent.get(clock[0], 0.0) + now - clock[1]
        clock[0] = frame.f_lineno if event == "line" else None
        clock[1] = time.process_time()
        return local

    def trace(frame, event, arg):
        return local if frame.f_code is pair.__code__ else None

    _keep_freed_heap()
    with threadpool_limits(1):
        tile()
        sys.settrace(trace)
        for _ in range(rounds):
            tile()
        sys.settrace(None)
    entries = rounds * columns * int(np.prod(x.shape[1:-1])) ** 2
    lines = ntkdsl.compile(arch).source.split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("def pair("))
    print(f"  one tile of {columns} pairs, CPU ns per entry (all layers), by line of pair():")
    for number, seconds in sorted(spent.items()):
        if seconds / entries * 1e9 >= 0.1:
            text = lines[first + number - pair.__code__.co_firstlineno].strip()
            print(f"    {seconds / entries * 1e9:6.2f}  {text[:84]}")
    print(f"    {sum(spent.values()) / entries * 1e9:6.2f}  in all")


def nt_run(x: np.ndarray, readout: str, jit: bool) -> dict | None:
    """neural-tangents' time and NTK, or None without it; {"failed": ...} when it failed
    (it holds every pair's arrays at once: it can run out of memory)."""
    if not Path(NT_PYTHON).exists():
        return None
    with tempfile.TemporaryDirectory() as folder:
        images, out = Path(folder) / "x.npy", Path(folder) / "ntk.npy"
        np.save(images, x)
        done = subprocess.run([NT_PYTHON, "-c", NT_SCRIPT, str(images), readout, str(out),
                               "jit" if jit else "eager"], capture_output=True, text=True,
                              check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        if done.returncode != 0:
            lines = [line for line in done.stderr.split("\n") if line.strip()
                     and "I0000" not in line and "WARNING: All log" not in line]
            return {"failed": f"exit status {done.returncode}"
                              + (" (killed: out of memory?)" if done.returncode < 0 else "")
                              + ("\n" + "\n".join(lines[-10:]) if lines else "")}
        result = json.loads(done.stdout.strip().split("\n")[-1])
        result["ntk"] = np.load(out)
        return result


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="gap,flatten",
                        help="comma-separated: gap, flatten, digits (default gap,flatten)")
    parser.add_argument("--n", type=int, help="images (default: the case's)")
    parser.add_argument("--threads", type=int, help="ntkdsl's threads (default: all cores)")
    parser.add_argument("--jit", action="store_true", help="also time neural-tangents jitted")
    parser.add_argument("--breakdown", action="store_true",
                        help="per line of the program, one tile (pooling cases)")
    parser.add_argument("--busy", action="store_true",
                        help="beside one competing CPU-bound process")
    args = parser.parse_args()
    with competing_process(args.busy):
        print(f"cores {os.cpu_count()}, {load()}; {busy_note(args.busy)}")
        run_cases(args)
    return 0


def run_cases(args: argparse.Namespace) -> None:
    for name in args.cases.split(","):
        arch, n, issue_seconds, target = CASES[name]
        n = args.n or n
        x = digits(n)
        readout = "gap" if "GlobalAvgPool" in arch else "flatten"
        print(f"\n{name}: {arch}\n  {n} digits as 8x8x1 images, self-kernel NTK, float64")
        wall, cpu, ntk = ntkdsl_run(arch, x, args.threads)
        print(f"  ntkdsl            {wall:8.2f} s wall {cpu:8.2f} s CPU")
        positions = int(np.prod(x.shape[1:-1]))
        per_pair = positions * positions if readout == "gap" else positions
        ns, yardstick = per_entry_ns(cpu, n, per_pair, 3), pass_ns()
        print(f"  {ns:.2f} ns CPU per position pair per layer; one contiguous NumPy pass "
              f"{yardstick:.2f} ns per entry (the figure is {ns / yardstick:.0f} passes)")
        full = CASES[name][1]
        if n != full:
            scale = full * (full + 1) / (n * (n + 1))
            print(f"  extrapolated to {full} images by pairs: {cpu * scale:.0f} s CPU "
                  f"(on {os.cpu_count()} idle cores at least {cpu * scale / os.cpu_count():.0f}"
                  f" s wall)")
        if args.breakdown and readout == "gap":
            breakdown(arch, x)
        if name == "digits":
            verdict = ("met" if wall < 180 else "NOT met") if n == full else "not run in full"
            print(f"  target: under 180 s; {verdict} ({load()})")
            continue
        runs = [("neural-tangents", False)] + ([("neural-tangents jit", True)] if args.jit else [])
        for label, jit in runs:
            nt = nt_run(x, readout, jit)
            if nt is not None and "failed" in nt:
                print(f"  {label} failed: {nt['failed']}")
                nt = None
                if jit:
                    continue
            if nt is None:
                if not jit and issue_seconds is not None:
                    print(f"  (no neural-tangents run: the issue's figure, {issue_seconds} s "
                          f"for {CASES[name][1]} images, is the yardstick)")
                    print(f"  speed-up against it: {issue_seconds / wall:.1f}x "
                          f"(target {target:.0f}x)")
                continue
            diff = np.abs(nt["ntk"] - ntk).max() / np.abs(ntk).max()
            print(f"  {label:17} {nt['wall']:8.2f} s wall {nt['cpu']:8.2f} s CPU "
                  f"(neural-tangents {nt['version']}; NTKs agree to {diff:.1e} x max)")
            print(f"  speed-up: {nt['wall'] / wall:.1f}x wall, {nt['cpu'] / cpu:.1f}x CPU "
                  f"(target {target:.0f}x)")
        print(f"  ({load()})")


if __name__ == "__main__":
    sys.exit(main())
