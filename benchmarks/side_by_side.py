"""Two checkouts of ntkdsl timed side by side in one run: the kernels of this checkout against
another one's (an earlier commit in a ``git worktree``), on the networks of kernel_speed.py
(ReLU, N=4096, d=512) and activation_speed.py (Erf and Tanh, N=4096, d=64).

    git worktree add --detach /tmp/ntkdsl-old <commit>   # grammars: ln -s ../grammars ntkdsl/grammars
    python benchmarks/side_by_side.py /tmp/ntkdsl-old
    python benchmarks/side_by_side.py /tmp/ntkdsl-old --rounds 5 --n 2048

Each measurement is a fresh child process with the checkout first on ``sys.path``; the two
checkouts take turns within every round, so a slow spell of a shared machine hits both alike,
and the best time of each is compared. The child compiles and evaluates once before timing
(derivation, code generation and the numerical route's coefficients are not measured) and
reports the best of three calls of ``net.kernels(x)``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    net.kernels(x)
    best = min(best, time.perf_counter() - start)
print(json.dumps(best))
"""


def seconds(checkout: Path, arch: str, n: int, d: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(checkout), arch, str(n), str(d)],
                         capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="the other checkout (its root directory)")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    other = options.other.resolve()
    print(f"this checkout: {HERE}\nother:         {other}\nN={options.n}, best of "
          f"{options.rounds} rounds x 3 calls, net.kernels(x) (NNGP and NTK)")
    print(f"{'network':34s} {'this (s)':>9s} {'other (s)':>9s} {'ratio':>7s}")
    for name, (arch, d) in NETWORKS.items():
        best = {HERE: float("inf"), other: float("inf")}
        for _ in range(options.rounds):
            for checkout in best:
                best[checkout] = min(best[checkout], seconds(checkout, arch, options.n, d))
        print(f"{name:34s} {best[HERE]:9.3f} {best[other]:9.3f} {best[HERE] / best[other]:7.3f}")


if __name__ == "__main__":
    main()
