"""The Gaussian-integration rules (``Fn`` of polynomials, exp, sin, cos, sinh, cosh): compile
time and the route taken, and accuracy at small variances (issue 12, point 3).

1. Compile time: ``ntkdsl.compile('Dense(1) > Fn(...) > Dense(1)')`` in a fresh process per
   case, CPU time of the child (user + system) — the expressions that used to expand for
   15-120+ s and now go to the numerical route once their term count is over the work
   budget, and closed-form ones for scale; the yardstick is ``Dense(1) > Relu > Dense(1)``
   in the same run.
2. Accuracy: the dual Γ at small and unequal variances (correlation 0.5), as the library's
   generated code computes it and as the exponential form alone computes it (the closed form
   before the Mehler series took over there), relative to a 50-digit mpmath sum.

    python benchmarks/gaussian_rules.py

The load average is printed with the figures: on a loaded machine CPU time is inflated less
than wall time, but still inflated; compare rows within one run.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import mpmath as mp
import numpy as np
import sympy as sp

CASES = ["Relu", 'Fn("sinh(x)**4")', 'Fn("sinh(x)**10")', 'Fn("x**4*exp(x)")',
         'Fn("sin(x)*cos(2*x)")', 'Fn("x**20*exp(x)")', 'Fn("x**20*sin(x)")',
         'Fn("x**10*sin(x)**10")', 'Fn("cos(x)**40")', 'Fn("sinh(x)**40")']

_CHILD = """
import json, sys, time
cpu = time.process_time()
import ntkdsl
from ntkdsl import parse
from ntkdsl.derivation import dual_maps
imported = time.process_time()
ntkdsl.compile(f"Dense(1) > {sys.argv[1]} > Dense(1)")
done = time.process_time()
route = dual_maps(parse(f"Dense(1) > {sys.argv[1]}").layers[1])[2].split(":")[0]
print(json.dumps({"compile": done - imported, "route": route}))
"""


def compile_times() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}; compile CPU seconds in a fresh process each")
    for case in CASES:
        out = subprocess.run([sys.executable, "-c", _CHILD, case], capture_output=True, text=True,
                             timeout=600, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {case:24s} {result['compile']:6.2f} s   {result['route']}")


POINTS = [(1e-8, 1e-8), (1e-4, 1e-4), (2.5e-3, 2.5e-3), (1e-8, 0.5), (1e-4, 3.0)]
ACCURACY = ["sinh(x)**4", "sinh(x)**6", "x**3*exp(x)", "(1 - cos(x))**2"]


def _exact(text: str, q1: float, q2: float, k: float) -> mp.mpf:
    """E[φ(u)φ(v)] by 2-D Gauss-Hermite quadrature in mpmath at 50 digits (φ evaluated
    directly: no cancellation; polynomial-like at these variances, so 60 nodes are exact
    to far beyond float64)."""
    x = sp.Symbol("x")
    from ntkdsl.expressions import phi_of_text
    phi = sp.lambdify(x, phi_of_text(text), "mpmath")
    with mp.workdps(50):
        nodes = _hermite_nodes(60)
        s = mp.sqrt(1 - (k / mp.sqrt(q1 * q2)) ** 2) if q1 * q2 else mp.mpf(0)
        c = k / mp.sqrt(q1 * q2)
        total = mp.mpf(0)
        for z1, w1 in nodes:
            u = phi(mp.sqrt(q1) * z1)
            for z2, w2 in nodes:
                total += w1 * w2 * u * phi(mp.sqrt(q2) * (c * z1 + s * z2))
        return total


def _hermite_nodes(n: int):
    """Nodes and weights of Gauss-Hermite for the standard normal, in mpmath."""
    nodes = np.polynomial.hermite_e.hermegauss(n)[0]  # refined below by Newton in mpmath
    out = []
    for z in nodes:
        z = mp.mpf(z)
        for _ in range(8):
            p0, p1 = mp.mpf(1), z
            for j in range(1, n):
                p0, p1 = p1, z * p1 - j * p0
            dp = n * p0  # He_n' = n He_(n-1)
            z -= p1 / dp
        p0, p1 = mp.mpf(1), z
        for j in range(1, n):
            p0, p1 = p1, z * p1 - j * p0
        out.append((z, mp.factorial(n) / (n * n * p0 * p0)))
    return out


def accuracy() -> None:
    # The library's generated code for one activation step, as its precision tests run it.
    import test_closed_form_precision as t

    from ntkdsl import parse
    from ntkdsl.derivation import _PLACEHOLDER, PAIR_INPUTS, dual_maps
    from ntkdsl.symbolic import SeriesWhere
    print("relative error of Γ at correlation 0.5 against 50 digits: library | exponential form alone")
    for text in ACCURACY:
        points = np.array([(q1, q2, 0.5 * math.sqrt(q1 * q2)) for q1, q2 in POINTS])
        library = t.library_duals(f'Fn("{text}")', points, False)[0]
        gamma = dual_maps(parse(f'Dense(1) > Fn("{text}")').layers[1])[0]
        exponential = gamma.replace(lambda e: isinstance(e, SeriesWhere), lambda e: e.args[0])
        at = dict(zip((_PLACEHOLDER.q1, _PLACEHOLDER.q2, _PLACEHOLDER.k), PAIR_INPUTS))
        alone = t._program([exponential.xreplace(at), sp.S.Zero], False)
        with np.errstate(all="ignore"):
            old = np.broadcast_to(alone(*[points[:, i:i + 1].copy() for i in range(3)], 1)[0],
                                  (len(points), 1))[:, 0]
        for (q1, q2, k), got, before in zip(points, library, old):
            want = _exact(text, q1, q2, k)
            print(f"  {text:16s} q = ({q1:g}, {q2:g})  {float(abs(got - want) / abs(want)):8.1e} | "
                  f"{float(abs(before - want) / abs(want)):8.1e}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    compile_times()
    accuracy()
