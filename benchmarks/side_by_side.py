"""Two checkouts of ntkdsl timed side by side in one run: the kernels of this checkout against
another one's (an earlier commit in a ``git worktree``), on the networks of kernel_speed.py
(ReLU, N=4096, d=512) and activation_speed.py (Erf and Tanh, N=4096, d=64).

    git worktree add --detach /tmp/ntkdsl-old <commit>   # grammars: ln -s ../grammars ntkdsl/grammars
    python benchmarks/side_by_side.py /tmp/ntkdsl-old
    python benchmarks/side_by_side.py /tmp/ntkdsl-old --rounds 5 --n 2048
    python benchmarks/side_by_side.py /tmp/ntkdsl-old --busy   # beside a competing CPU-bound process
    python benchmarks/side_by_side.py /tmp/ntkdsl-old --compile-only --rounds 9

Each measurement is a fresh child process with the checkout first on ``sys.path``; the two
checkouts take turns within every round, so a slow spell of a shared machine hits both alike,
and the best time of each is compared. The child compiles and evaluates once before timing
(derivation, code generation and the numerical route's coefficients are not measured) and
reports the best of three calls of ``net.kernels(x)``: wall time, and the process's CPU time
(all its threads), which a shared machine's other processes disturb less — they take the
cores away, not the work. Beside the ratio of the best times, the median over rounds of each
round's ratio: one quiet moment for one checkout moves the first, not the second.

The last row is compile time, issue 12's "1,000 layers in under a second": ``ntkdsl.compile``
of (Dense(8) > Relu) * 500 > Dense(1), 1,001 layers, once in a fresh child process per round
(the import not timed), in the same rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

from busy import busy_note, competing_process

HERE = Path(__file__).resolve().parent.parent

NETWORKS = {
    "ReLU depth 3, d=512": ("(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > "
                            "Dense(1, W_std=1.4, b_std=0.1)", 512),
    "Erf depth 2, d=64": ("(Dense(512, W_std=1.5, b_std=0.1) > Erf) * 2 > Dense(1)", 64),
    "Tanh depth 2, d=64 (numerical)": ("(Dense(512, W_std=1.5, b_std=0.1) > Tanh) * 2 > Dense(1)", 64),
}

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import ntkdsl
arch, n, d = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
assert ntkdsl.__file__.startswith(sys.argv[1]), ntkdsl.__file__
x = np.random.default_rng(0).standard_normal((n, d))
net = ntkdsl.compile(arch)
net.kernels(x)
wall = cpu = float("inf")
for _ in range(3):
    start, start_cpu = time.perf_counter(), time.process_time()
    net.kernels(x)
    wall = min(wall, time.perf_counter() - start)
    cpu = min(cpu, time.process_time() - start_cpu)
print(json.dumps([wall, cpu]))
"""

COMPILE = "(Dense(8) > Relu) * 500 > Dense(1)"  # issue 12's claim: 1,001 layers in under 1 s

COMPILE_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import ntkdsl
assert ntkdsl.__file__.startswith(sys.argv[1]), ntkdsl.__file__
start, start_cpu = time.perf_counter(), time.process_time()
ntkdsl.compile(sys.argv[2])
print(json.dumps([time.perf_counter() - start, time.process_time() - start_cpu]))
"""


def seconds(checkout: Path, arch: str, n: int, d: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the best of three calls in a fresh child process."""
    return _child(CHILD, checkout, arch, str(n), str(d))


def compile_seconds(checkout: Path, arch: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``ntkdsl.compile(arch)`` in a fresh child process."""
    return _child(COMPILE_CHILD, checkout, arch)


def _child(code: str, checkout: Path, *args: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", code, str(checkout), *args],
                         capture_output=True, text=True, check=True, cwd="/")
    wall, cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="the other checkout (its root directory)")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", action="store_true",
                        help="run one competing CPU-bound process meanwhile (benchmarks/busy.py)")
    parser.add_argument("--compile-only", action="store_true",
                        help="time compilation only (the last row)")
    options = parser.parse_args()
    with competing_process(options.busy):
        compare(options.other.resolve(), options.n, options.rounds, options.busy,
                {} if options.compile_only else NETWORKS)


def compare(other: Path, n: int, rounds: int, busy: bool, networks: dict) -> None:
    print(f"this checkout: {HERE}\nother:         {other}\nN={n}, best of "
          f"{rounds} rounds x 3 calls, net.kernels(x) (NNGP and NTK)\n{busy_note(busy)}\n"
          "ratio: this / other of the best times; median: the median over rounds of that "
          "round's ratio (the two ran back to back)")
    print(f"{'network':32s} {'this (s)':>8s} {'other':>7s} {'ratio':>6s} {'median':>6s}"
          f" {'CPU this':>8s} {'other':>7s} {'ratio':>6s} {'median':>6s}")
    for name, (arch, d) in networks.items():
        row(name, other, rounds, partial(seconds, arch=arch, n=n, d=d))
    row("compile, 1,001 ReLU layers", other, rounds, partial(compile_seconds, arch=COMPILE))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


def row(name: str, other: Path, rounds: int, measure) -> None:
    """One line of the table: ``measure(checkout)`` -> (wall, CPU), the two checkouts taking
    turns in every round."""
    times = {HERE: [], other: []}  # (wall, CPU) of each round
    for _ in range(rounds):
        for checkout, measured in times.items():
            measured.append(measure(checkout))
    columns = []
    for kind in (0, 1):  # wall, CPU
        mine = [t[kind] for t in times[HERE]]
        theirs = [t[kind] for t in times[other]]
        median = statistics.median(a / b for a, b in zip(mine, theirs))
        columns.append(f"{min(mine):8.3f} {min(theirs):7.3f} {min(mine) / min(theirs):6.3f} "
                       f"{median:6.3f}")
    print(f"{name:32s} {columns[0]} {columns[1]}", flush=True)


if __name__ == "__main__":
    main()
