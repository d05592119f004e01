"""Numerical-route speed: the NTK of a depth-2 Tanh network next to the same network with
Erf (closed form), timed in one run, plus peak memory at N=1024.

    python benchmarks/activation_speed.py            # N=4096, d=64 (the issue's sizes)
    python benchmarks/activation_speed.py 1024
    python benchmarks/activation_speed.py --busy     # beside a competing CPU-bound process

Peak memory is the process's peak resident set size (resource.getrusage), measured in a
fresh subprocess per network so one run does not inherit the other's peak.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
from busy import busy_note, competing_process

import ntkdsl

ARCH = "(Dense(512, W_std=1.5, b_std=0.1) > {}) * 2 > Dense(1)"


def best_seconds(archs: list[str], x: np.ndarray, repeats: int = 5) -> list[float]:
    """Best wall time of each network's NTK over ``repeats`` rounds, the networks taking
    turns within a round so that a slow spell of the machine hits them alike. Each is
    compiled and run once beforehand: derivation, code generation and the numerical
    route's coefficients for these inputs' variances are not what is measured."""
    nets = [ntkdsl.compile(arch) for arch in archs]
    for net in nets:
        net.ntk(x)
    best = [float("inf")] * len(nets)
    for _ in range(repeats):
        for i, net in enumerate(nets):
            start = time.perf_counter()
            net.ntk(x)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def peak_memory_mb(activation: str, n: int, d: int) -> float:
    """Peak RSS (MB) of a fresh process computing the NTK for n inputs."""
    code = (f"import resource, numpy as np, ntkdsl\n"
            f"x = np.random.default_rng(0).standard_normal(({n}, {d}))\n"
            f"ntkdsl.compile({ARCH.format(activation)!r}).ntk(x)\n"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(n: int = 4096, d: int = 64, busy: bool = False) -> None:
    x = np.random.default_rng(0).standard_normal((n, d))
    with competing_process(busy):
        erf, tanh = best_seconds([ARCH.format("Erf"), ARCH.format("Tanh")], x)
        note = busy_note(busy)
    print(f"NTK of {ARCH.format('·')}, N={n}, d={d}, float64, {note}")
    print(f"  Erf  (closed form):          {erf:7.2f} s")
    print(f"  Tanh (numerical, Hermite):   {tanh:7.2f} s   ratio {tanh / erf:.2f}x (target <= 3x)")
    for act in ("Erf", "Tanh"):
        print(f"  peak memory, N=1024, {act}:  {peak_memory_mb(act, 1024, d):7.0f} MB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("n", type=int, nargs="?", default=4096)
    p.add_argument("d", type=int, nargs="?", default=64)
    p.add_argument("--busy", action="store_true",
                   help="time beside a competing CPU-bound process")
    a = p.parse_args()
    main(a.n, a.d, a.busy)
