"""Finite networks against the infinite-width theory, for one architecture string.

1. The empirical NTK and the Monte-Carlo NNGP of finite networks approach the analytic
   kernels as the width grows (relative error ~ width^(-1/2)).
2. A wide network trained by gradient descent predicts what the closed-form gradient-flow
   solution with the analytic NTK predicts.
3. ``ntkdsl.verify.verify`` measures all of it in one call (``ntkdsl verify`` on the command
   line) and plots the curves.

Run:  python examples/finite_width.py [OUTPUT_DIR]
(a few seconds; writes finite_width.png into OUTPUT_DIR, default a new temporary directory)
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

import ntkdsl
from ntkdsl.finite import FiniteNetwork, empirical_ntk, monte_carlo_nngp
from ntkdsl.predict import gradient_descent_mse_ensemble
from ntkdsl.verify import verify

ARCH = "Dense(512, W_std=1.5, b_std=0.05) > Erf > Dense(1, W_std=1.5, b_std=0.05)"

rng = np.random.default_rng(0)
x_train = rng.standard_normal((20, 4))
y_train = np.sin(x_train.sum(axis=1, keepdims=True))
x_test = rng.standard_normal((5, 4))

# 1. Kernels: finite estimates against the exact infinite-width ones.
net = ntkdsl.compile(ARCH)
exact_nngp, exact_ntk = net.nngp(x_train), net.ntk(x_train)
print("width   rel. error MC NNGP   rel. error empirical NTK")
for width in (64, 256, 1024, 4096):
    mc = monte_carlo_nngp(ARCH, x_train, width=width, samples=16, seed=1)
    emp = empirical_ntk(ARCH, x_train, width=width, seed=1)
    print(f"{width:5d}   {np.linalg.norm(mc - exact_nngp) / np.linalg.norm(exact_nngp):18.4f}"
          f"   {np.linalg.norm(emp - exact_ntk) / np.linalg.norm(exact_ntk):24.4f}")

# 2. Training: one network of width 2048, 200 full-batch gradient-descent steps on
#    ½·mean (f − y)², against the closed-form flow started from the same initial outputs.
finite = FiniteNetwork(ARCH, input_shape=4, width=2048)
params = finite.init(seed=0)
learning_rate, steps = 0.5 * y_train.size / np.linalg.eigvalsh(exact_ntk)[-1], 200
trained = finite.train(params, x_train, y_train, learning_rate, steps)
f0_train, f0_test = finite.apply(params, x_train)[0], finite.apply(params, x_test)[0]
flow = gradient_descent_mse_ensemble(exact_ntk, y_train - f0_train,
                                     learning_rate=learning_rate)
predicted = f0_test + flow.predict(net.ntk(x_test, x_train), t=steps).mean
print("\ntest outputs: trained network | gradient-flow prediction (t = learning_rate × steps)")
for got, expected in zip(finite.apply(trained, x_test)[0, :, 0], predicted[:, 0]):
    print(f"  {got:+.4f} | {expected:+.4f}")

# 3. Everything at once, with the fitted slopes, and a figure.
result = verify(ARCH, widths=(64, 256, 1024, 4096))
print()
print(result.report())
out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ntkdsl-"))
result.plot(out_dir / "finite_width.png")
print(f"plot saved to {out_dir / 'finite_width.png'}")
