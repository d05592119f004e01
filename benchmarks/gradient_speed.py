"""Kernel gradients' cost: a kernel and its derivatives with respect to p numbers in one
pass, against the kernel alone (the yardstick), timed in one run (issue 15's target: at most
(1 + p/2) x the kernel alone).

    python benchmarks/gradient_speed.py            # N=2048, d=64
    python benchmarks/gradient_speed.py 1024 --busy

For each network the plain kernel and the kernel with its p derivatives take turns within
each round (so a slow spell of the machine hits both alike); the best of the rounds is
reported, with CPU time beside wall time. Derivation, code generation and the numerical
route's coefficients are made beforehand and not measured.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from busy import busy_note, competing_process

import ntkdsl
from ntkdsl.templates import ArchTemplate

CASES = [
    ("(Dense(512, W_std={w}, b_std={b}) > Relu) * 3 > Dense(1, W_std={w})", dict(w=1.4, b=0.1)),
    ("(Dense(512, W_std={w}, b_std={b}) > Erf) * 3 > Dense(1)", dict(w=1.4, b=0.1)),
    ("(Dense(512, W_std={w}, b_std={b}) > LeakyRelu({a})) * 3 > Dense(1)",
     dict(w=1.4, b=0.1, a=0.1)),
    ("(Dense(512, W_std={w}, b_std={b}) > Tanh) * 2 > Dense(1)", dict(w=1.4, b=0.1)),
]


def _timed(f) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(template: str, values: dict, kind: str, x: np.ndarray, rounds: int):
    """Best (wall, cpu) of the kernel alone and of the kernel with its gradients."""
    arch = ArchTemplate(template, **values)
    plain = ntkdsl.compile(arch.render())
    net = ntkdsl.compile(arch, gradients=list(values))
    runs = [lambda: getattr(plain, kind)(x),
            lambda: getattr(net, kind)(x, eval_gradient=True)]
    for run in runs:
        run()
    best = [[float("inf")] * 2 for _ in runs]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            best[i] = [min(b, t) for b, t in zip(best[i], _timed(run))]
    return best


def main(n: int, d: int, rounds: int, busy: bool) -> None:
    x = np.random.default_rng(0).standard_normal((n, d))
    with competing_process(busy):
        note = busy_note(busy)
        print(f"self-kernel of N={n} inputs, d={d}, float64, best of {rounds} rounds, {note}")
        print(f"{'kind':5} {'p':>2} {'kernel s (cpu)':>16} {'+ gradients s (cpu)':>21} "
              f"{'ratio wall/cpu':>15} {'target':>7}  network")
        for template, values in CASES:
            for kind in ("nngp", "ntk"):
                (kw, kc), (gw, gc) = measure(template, values, kind, x, rounds)
                p = len(values)
                print(f"{kind:5} {p:2d} {kw:7.2f} ({kc:6.2f}) {gw:10.2f} ({gc:6.2f}) "
                      f"{gw / kw:7.2f}/{gc / kc:<7.2f} {1 + p / 2:7.1f}  {template}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=2048)
    parser.add_argument("d", type=int, nargs="?", default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", action="store_true",
                        help="time beside a competing CPU-bound process")
    args = parser.parse_args()
    main(args.n, args.d, args.rounds, args.busy)
