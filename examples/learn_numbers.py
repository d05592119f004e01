"""Learn an architecture's numbers from data: W_std and b_std of a 3-layer ReLU network by
maximising the NNGP's marginal likelihood, with exact kernel gradients.

    python examples/learn_numbers.py

The template's placeholders {w} and {b} are the hyperparameters of a scikit-learn kernel
(ntkdsl.sklearn.NNGPKernel); GaussianProcessRegressor's L-BFGS-B optimiser climbs the
marginal likelihood with the derivatives ntkdsl derives from the kernel program. ntkdsl's
own estimators climb it with ``optimize=``, by Fisher scoring from the same derivatives (and
fit the ridge diag_reg beside them). The
fitted numbers give an architecture string, which compiles like any other.
"""
import time

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import WhiteKernel
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import ntkdsl
from ntkdsl import ArchTemplate, NTKRegressor
from ntkdsl.sklearn import NNGPKernel

X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
y_mean, y_std = y_train.mean(), y_train.std()

# 1. The derivatives themselves: dK/dw and dK/db, one pass with the kernel.
template = ArchTemplate("(Dense(512, W_std={w}, b_std={b}) > Relu) * 3 > Dense(1, W_std={w})",
                        w=1.0, b=1.0)
net = ntkdsl.compile(template, gradients=["w", "b"])
K, dK = net.nngp(X_train[:3], eval_gradient=True)
print("NNGP of three patients:\n", np.round(K, 4))
print("its derivative in w:\n", np.round(dK[..., 0], 4))

# 2. Fit w, b (and the noise) by the marginal likelihood.
kernel = NNGPKernel(template, bounds={"w": (0.1, 10.0), "b": (1e-3, 10.0)}) + WhiteKernel(0.5)
start = time.perf_counter()
gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=1, random_state=0)
gp.fit(X_train, (y_train - y_mean) / y_std)
seconds = time.perf_counter() - start
fitted = gp.kernel_.k1.arch
print(f"fitted in {seconds:.1f} s: w = {fitted.values['w']:.3f}, b = {fitted.values['b']:.3f}, "
      f"noise = {gp.kernel_.k2.noise_level:.3f}, "
      f"log marginal likelihood {gp.log_marginal_likelihood_value_:.1f}")
pred = gp.predict(X_test) * y_std + y_mean
r2 = 1 - np.sum((pred - y_test) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
print(f"test R² = {r2:.3f}")

# 3. The fitted architecture, written out: it compiles like any other string.
arch = fitted.render()
print("fitted architecture:", arch)
same = ntkdsl.compile(arch).nngp(X_test[:5])
assert np.allclose(same, gp.kernel_.k1(X_test[:5]), rtol=1e-12)

# 4. The same with ntkdsl's estimator: optimize= names the numbers to fit and their bounds.
start = time.perf_counter()
reg = NTKRegressor(template, kernel="nngp", diag_reg=0.1,
                   optimize={"w": (0.1, 10.0), "b": (1e-3, 10.0), "diag_reg": (1e-4, 10.0)})
reg.fit(X_train, (y_train - y_mean) / y_std)
print(f"NTKRegressor(optimize=...) in {time.perf_counter() - start:.1f} s: "
      + ", ".join(f"{name} = {value:.3f}" for name, value in reg.params_.items())
      + f", log marginal likelihood {reg.log_marginal_likelihood_value_:.1f}, "
      f"test R² = {reg.score(X_test, (y_test - y_mean) / y_std):.3f}")
print("fitted architecture:", reg.arch_)
assert np.allclose(ntkdsl.compile(reg.arch_).nngp(X_test[:5]),
                   reg.network_.nngp(X_test[:5]), rtol=1e-12)
