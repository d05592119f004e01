"""Compile time against size: ``ntkdsl.compile`` (parse, derivation, code generation and
Python's compilation of the generated code) of repeated blocks written out to about 10 ...
1,000 layers (up to ``MAX_LAYERS`` with an argument), wall-clock and CPU time, and the
exponent p of time ~ layers^p between the two largest sizes (the yardstick: p = 1, linear,
once the fixed cost of building each kind of layer's template is small beside the rest);
and a codegen column (``ntkdsl.codegen`` at the largest size: the standalone module,
whose docstring carries the whole derivation); then issue 12's claim, 1,000 layers in
under a second, as lines of their own for compile and codegen; the cases of issue 12 that
used to take seconds to minutes; and codegen against depth.

    python benchmarks/compile_speed.py            # up to about 1,000 layers (about a minute)
    python benchmarks/compile_speed.py 2500       # also 2,500 layers (MAX_LAYERS)

Every figure is measured in a fresh Python process, timing only the call: nothing is
cached from an earlier measurement (``compile`` caches per string, and the derivation
builds each kind of layer's template once per process — that first build is part of every
figure here, as it is for a user's first compile). CPU time is the child's own (user +
system), which other processes on a loaded machine do not inflate the way they do wall
time; the load average is printed with the figures.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from ntkdsl import limits, parse
from ntkdsl.parser import layer_count

FAMILIES = {  # a block, repeated and followed by Dense(1)
    "Relu": "Dense(8) > Relu",
    "Erf": "Dense(8, b_std=0.1) > Erf",
    "Tanh (numerical)": "Dense(8) > Tanh",
    "LayerNorm": "Dense(8) > LayerNorm > Relu",
    "residual sum": "Dense(8) > (Relu > Dense(8) + Identity)",
}
SIZES = (10, 100, 300, 1000, limits.MAX_LAYERS)  # layers, about: whole blocks plus Dense(1)

# Issue 12's claim: (Dense(8) > Relu) * 500 > Dense(1) is 1,001 layers.
CLAIM = "(Dense(8) > Relu) * 500 > Dense(1)"
CLAIM_SECONDS = 1.0

CASES = [  # the examples (seconds before the fixes in the comment)
    "(Dense(8) > Relu) * 1000 > Dense(1)",                                         # 12 s
    "Dense(8) > Polynomial([" + ", ".join(str(i) for i in range(1, 21)) + "]) > Dense(1)",  # 2 s
    'Dense(8) > Fn("x**16") > Dense(1)',                                           # 12.7 s
    'Dense(8) > Fn("x**40") > Dense(1)',                                           # > 3 s
    "Dense(8) > RectifiedMonomial(5) > Dense(1)",                                  # 2.8 s, NaN
    "Dense(8) > Relu > Dense(8, b_std=1e-320)",          # codegen > 30 s; now refused at once
    "Dense(8) > Relu > Dense(8, b_std=1e-45)",           # the smallest magnitudes accepted
    "Dense(16) > Sign > Dense(256, b_std=0.7) > (Gelu > Dense(64, b_std=0.8)) * 3 > Dense(1)",  # 85 s
]

_CHILD = """
import json, sys, time
import ntkdsl
call, arch = sys.argv[1], sys.argv[2]
wall, cpu = time.perf_counter(), time.process_time()
try:
    getattr(ntkdsl, call)(arch)
    outcome = "ok"
except ntkdsl.NTKDSLError as err:
    outcome = "refused: " + type(err).__name__
print(json.dumps([time.perf_counter() - wall, time.process_time() - cpu, outcome]))
"""


def measure(call: str, arch: str) -> tuple[float, float, str]:
    """(wall s, CPU s, outcome) of ``ntkdsl.<call>(arch)`` in a fresh process (the import is
    not timed); the outcome is "ok" or "refused: <ntkdsl's error class>"."""
    out = subprocess.run([sys.executable, "-c", _CHILD, call, arch], capture_output=True,
                         text=True, check=True)
    wall, cpu, outcome = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, cpu, outcome


def exponent(sizes: list[int], times: list[float]) -> float:
    """Least-squares slope of log(time) against log(size)."""
    xs, ys = [math.log(n) for n in sizes], [math.log(t) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
            / sum((x - mx) ** 2 for x in xs))


def architecture(block: str, layers: int) -> str:
    """The block repeated to at most ``layers`` layers in all, then Dense(1)."""
    per_block = layer_count(parse(f"({block}) * 1"))
    return f"({block}) * {max(1, (layers - 1) // per_block)} > Dense(1)"


def depth_table(sizes: list[int]) -> None:
    print("ntkdsl.compile, seconds (wall / CPU), fresh process per entry; layers written out")
    print(f"  {'block':<18}" + "".join(f"{f'~{n} layers':>15}" for n in sizes)
          + "   p (CPU, largest two)   CPU ms per layer at the largest   codegen at the largest")
    for name, block in FAMILIES.items():
        archs = [architecture(block, n) for n in sizes]
        counts = [layer_count(parse(a)) for a in archs]
        runs = [measure("compile", a) for a in archs]
        cpu = [r[1] for r in runs]
        p = exponent(counts[-2:], cpu[-2:])
        wall, codegen_cpu, _ = measure("codegen", archs[-1])
        print(f"  {name:<18}" + "".join(f"{w:7.3f}/{c:<7.3f}" for w, c, _ in runs)
              + f"   {p:20.2f}   {1000 * cpu[-1] / counts[-1]:31.3f}   {wall:.3f}/{codegen_cpu:.3f}")


def claim_line() -> None:
    layers = layer_count(parse(CLAIM))
    print(f"\nissue 12's claim, {layers:,} layers in under a second: {CLAIM}")
    for call in ("compile", "codegen"):
        wall, cpu, _ = measure(call, CLAIM)
        verdict = "under" if cpu < CLAIM_SECONDS and wall < CLAIM_SECONDS else (
            "under in CPU time, not in wall time" if cpu < CLAIM_SECONDS else "NOT under")
        print(f"  {call:<8} wall {wall:.3f} s, CPU {cpu:.3f} s ({1000 * cpu / layers:.3f} ms per "
              f"layer): {verdict} {CLAIM_SECONDS:g} s")


def main(largest: int = 1000) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} at the start, "
          f"{os.cpu_count()} CPUs")
    depth_table([n for n in SIZES if n <= largest])
    claim_line()
    print("\nissue 12's cases: compile and codegen (standalone module), seconds (wall / CPU)")
    for arch in CASES:
        results = [measure(call, arch) for call in ("compile", "codegen")]
        cells = "  ".join(f"{w:7.3f}/{c:<7.3f}" for w, c, _ in results)
        outcome = results[0][2] if results[0][2] != "ok" else ""
        print(f"  {cells}  {arch}  {outcome}")
    print("\nntkdsl.codegen of (Dense(8) > Relu) * L > Dense(1), seconds (wall / CPU)")
    repeats = (10, 100, 300)
    runs = [measure("codegen", f"(Dense(8) > Relu) * {n} > Dense(1)") for n in repeats]
    print("  " + "  ".join(f"L={n}: {w:.3f}/{c:.3f}" for n, (w, c, _) in zip(repeats, runs))
          + f"   p (CPU, largest two) = {exponent([100, 300], [r[1] for r in runs[1:]]):.2f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
