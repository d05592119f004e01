"""Compile time against depth: ``ntkdsl.compile`` (parse, derivation, code generation and
Python's compilation of the generated code) for L repeats of a block, L = 10 ... 3000, and
the exponent p of time ~ L^p between the two largest L (the yardstick: p = 1, linear, once
the fixed cost of building each kind of layer's template is small beside the rest); then the cases of issue 12 that used to take seconds to minutes, and
``ntkdsl.codegen`` (the standalone module, whose docstring carries the whole derivation).

    python benchmarks/compile_speed.py            # L up to 1000 (about a minute)
    python benchmarks/compile_speed.py 3000       # also L = 3000

Every figure is measured in a fresh Python process, timing only the call: nothing is
cached from an earlier measurement (``compile`` caches per string, and the derivation
builds each kind of layer's template once per process — that first build is part of every
figure here, as it is for a user's first compile).
"""
from __future__ import annotations

import math
import subprocess
import sys

FAMILIES = {
    "Relu": "(Dense(8) > Relu) * {L} > Dense(1)",
    "Erf": "(Dense(8, b_std=0.1) > Erf) * {L} > Dense(1)",
    "Tanh (numerical)": "(Dense(8) > Tanh) * {L} > Dense(1)",
    "LayerNorm": "(Dense(8) > LayerNorm > Relu) * {L} > Dense(1)",
    "residual sum": "(Dense(8) > (Relu > Dense(8) + Identity)) * {L} > Dense(1)",
}

CASES = [  # the examples (seconds before this change in the comment)
    "(Dense(8) > Relu) * 1000 > Dense(1)",                                         # 12 s
    "Dense(8) > Polynomial([" + ", ".join(str(i) for i in range(1, 21)) + "]) > Dense(1)",  # 2 s
    'Dense(8) > Fn("x**16") > Dense(1)',                                           # 12.7 s
    'Dense(8) > Fn("x**40") > Dense(1)',                                           # > 3 s
    "Dense(8) > RectifiedMonomial(5) > Dense(1)",                                  # 2.8 s, NaN
    "Dense(8) > Relu > Dense(8, b_std=1e-320)",                          # codegen > 30 s
    "Dense(16) > Sign > Dense(256, b_std=0.7) > (Gelu > Dense(64, b_std=0.8)) * 3 > Dense(1)",  # 85 s
]


def seconds(call: str, arch: str) -> float:
    """Wall time of ``ntkdsl.<call>(arch)`` in a fresh process (import not included)."""
    code = ("import time, ntkdsl\n"
            f"start = time.perf_counter(); ntkdsl.{call}({arch!r})\n"
            "print(time.perf_counter() - start)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def exponent(depths: list[int], times: list[float]) -> float:
    """Least-squares slope of log(time) against log(L)."""
    xs, ys = [math.log(n) for n in depths], [math.log(t) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
            / sum((x - mx) ** 2 for x in xs))


def depth_table(depths: list[int]) -> None:
    print("ntkdsl.compile, seconds, fresh process per entry")
    print(f"  {'block':<18}" + "".join(f"{f'L={n}':>10}" for n in depths)
          + "   p (largest two)   ms per layer at the largest L")
    for name, template in FAMILIES.items():
        times = [seconds("compile", template.format(L=n)) for n in depths]
        p = exponent(depths[-2:], times[-2:])
        layers = template.format(L=depths[-1])  # written-out layers per repeat
        per_block = layers.split(") *")[0].count(">") + 1
        per_layer = 1000 * times[-1] / (depths[-1] * per_block)
        print(f"  {name:<18}" + "".join(f"{t:10.3f}" for t in times)
              + f"   {p:15.2f}   {per_layer:.3f}")


def main(largest: int = 1000) -> None:
    depths = [n for n in (10, 100, 300, 1000, 3000) if n <= largest]
    depth_table(depths)
    print("\nissue 12's cases: compile and codegen (standalone module), seconds")
    for arch in CASES:
        print(f"  {seconds('compile', arch):7.3f}  {seconds('codegen', arch):7.3f}  {arch}")
    print("\nntkdsl.codegen of (Dense(8) > Relu) * L > Dense(1), seconds")
    codegen = [seconds("codegen", FAMILIES["Relu"].format(L=n)) for n in (10, 100, 300)]
    print("  " + "  ".join(f"L={n}: {t:.3f}" for n, t in zip((10, 100, 300), codegen))
          + f"   p (largest two) = {exponent([100, 300], codegen[1:]):.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
