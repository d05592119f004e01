"""Numerical-route cost against the pre-activation variance: the NNGP and NTK of
`Dense(64, W_std=s) > φ > Dense(1)` for Elu, Softplus and Tanh (numerical route) next to Erf
(closed form), at variances q = s**2 · |x|**2 / d of about 1, 1e2, 1e4 and 1e6, in one run.

    python benchmarks/numerical_variance.py          # N=64 inputs, d=8
    python benchmarks/numerical_variance.py 256

The inputs hold an identical pair and pairs with correlations 0.995 and 0.9998 (the
entries the Hermite series cannot certify at large variance, computed by nested quadrature), a zero row
and a row scaled by 30, as the fuzzer's do. Each cell is the first NNGP + NTK evaluation
after compiling (so the per-variance coefficients are included; the compile itself does not
depend on the variance) in a fresh subprocess, whose peak resident memory
(resource.getrusage) is reported beside it; a cell taking over 120 s is cut off.
"""
from __future__ import annotations

import json
import subprocess
import sys

ACTIVATIONS = ["Erf", "Elu", "Softplus", "Tanh"]
VARIANCES = [1.0, 1e2, 1e4, 1e6]

CHILD = r"""
import json, resource, sys, time
import numpy as np
import ntkdsl
activation, variance, n, d = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
x = rng.standard_normal((n, d))
x /= np.sqrt((x * x).mean(axis=1, keepdims=True))       # |x|^2 / d = 1: q = W_std^2
x[1] = x[0] + 0.02 * rng.standard_normal(d)             # correlation ~0.9998
x[5] = x[0] + 0.1 * rng.standard_normal(d)              # correlation ~0.995
x[2] = x[0]                                              # identical
x[3] = 0.0                                               # zero variance
x[4] *= 30.0                                             # a row of 900 times the variance
net = ntkdsl.compile(f"Dense(64, W_std={float(np.sqrt(variance))!r}) > {activation} > Dense(1)")
start = time.perf_counter()
nngp, ntk = net.kernels(x)
seconds = time.perf_counter() - start
finite = bool(np.isfinite(nngp).all() and np.isfinite(ntk).all())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "finite": finite}))
"""


def measure(activation: str, variance: float, n: int, d: int) -> dict:
    """Time and peak memory of one cell, in a fresh interpreter."""
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, activation, repr(variance), str(n), str(d)],
                             capture_output=True, text=True, check=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"seconds": float("inf"), "peak_mb": float("nan"), "finite": True}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(n: int = 64, d: int = 8) -> None:
    print(f"N={n}, d={d}: seconds (first NNGP + NTK) / peak MB, per variance")
    print(f"{'activation':>10} " + " ".join(f"{f'q={q:g}':>18}" for q in VARIANCES))
    for activation in ACTIVATIONS:
        cells = [measure(activation, q, n, d) for q in VARIANCES]
        text = [f"{c['seconds']:7.2f} s {c['peak_mb']:5.0f} MB" + ("" if c["finite"] else " NaN!")
                for c in cells]
        print(f"{activation:>10} " + " ".join(f"{t:>18}" for t in text))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
