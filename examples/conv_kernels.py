"""Convolutional kernels (CNN-GP and CNTK) of handwritten digits as 8x8x1 images: the two paths
(same positions for a Flatten readout, every pair of positions for pooling), their formulas,
exact diagonals, a standalone module, and what a mistake looks like. Then a kernel
regression on the digits with the pooled CNTK against the fully-connected NTK.

    python examples/conv_kernels.py
"""
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import ntkdsl
from ntkdsl import gp_inference

CONV = "Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu"
FLATTEN = f"({CONV}) * 2 > Flatten > Dense(1)"                # same positions: cheap
POOLED = f"({CONV}) * 2 > GlobalAvgPool > Dense(1)"           # all pairs of positions
DENSE = "(Dense(512, W_std=1.4, b_std=0.1) > Relu) * 2 > Dense(1)"


def main() -> None:
    digits = load_digits()
    images = (digits.images / 16.0)[..., None]  # (1797, 8, 8, 1), channels last
    labels = digits.target

    net = ntkdsl.compile(POOLED)
    print(net.formula("ntk"))                  # says which path; conv steps as operators
    x = images[:6]
    ntk = net.ntk(x)                           # (6, 6), exactly symmetric
    np.set_printoptions(precision=4, suppress=True)
    print("CNTK of six digits:\n", ntk)
    print("exact diagonal:", net.diagonal(x)[1])
    print("Flatten readout:", ntkdsl.compile(FLATTEN).formula("ntk").path)

    # A standalone module: numpy only, the same numbers.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cntk.py"
        path.write_text(ntkdsl.codegen(POOLED), encoding="ascii")
        spec = importlib.util.spec_from_file_location("cntk", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print("standalone module agrees to", np.abs(module.ntk(x) - ntk).max())

    # Mistakes point at the place and say what is valid.
    for mistake in (lambda: net.ntk(images[:4].reshape(4, -1)),
                    lambda: ntkdsl.compile("Conv(8, (3, 3)) > Flatten > Conv(8, (3, 3))")):
        try:
            mistake()
        except ntkdsl.NTKDSLError as err:
            print(f"{type(err).__name__}: {err}\n")

    # Bayesian inference with each NNGP on 200 training digits, 100 test digits.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, test = order[:200], order[200:300]
    targets = np.eye(10)[labels[train]] - 0.1
    for name, arch, data in (("CNN-GP, pooled", POOLED, images),
                             ("NNGP, fully connected", DENSE, images.reshape(len(images), -1))):
        net = ntkdsl.compile(arch)
        k_train = net.nngp(data[train])
        k_test = net.nngp(data[test], data[train])
        mean = gp_inference(k_train, targets, diag_reg=1e-3).predict(k_test).mean
        accuracy = np.mean(np.argmax(mean, axis=1) == labels[test])
        print(f"{name:24} test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    sys.exit(main())
