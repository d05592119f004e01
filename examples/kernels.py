"""Compile a few architectures, print their formulas and evaluate their kernels.

    python examples/kernels.py
"""
import numpy as np

import ntkdsl

ARCHITECTURES = [
    "Dense(512) > Relu > Dense(1)",
    "Dense(512, W_std=1.2, b_std=0.3) > Erf > Dense(1, W_std=1.2, b_std=0.3)",
    "Dense(512, W_std=1.2, b_std=0.1) > (Relu > Dense(512, W_std=1.2, b_std=0.1) + Identity)"
    " > Relu > Dense(1)",
    "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 3 > Dense(1, W_std=1.4, b_std=0.1)",
]


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3))
    for arch in ARCHITECTURES:
        net = ntkdsl.compile(arch)
        print(net.formula("ntk"))
        nngp, ntk = net.kernels(x)
        np.set_printoptions(precision=4, suppress=True)
        print("NNGP:\n", nngp, "\nNTK:\n", ntk, "\n")

    # Mistakes point at the place and say what is valid.
    try:
        ntkdsl.compile("Dense(512) > Rleu > Dense(1)")
    except ntkdsl.NTKDSLError as err:
        print(f"{type(err).__name__}: {err}")


if __name__ == "__main__":
    main()
