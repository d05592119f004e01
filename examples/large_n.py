"""Regression on many points: Nyström features and conjugate gradients instead of an N x N
factorisation (small N here, so that it runs in seconds; benchmarks/large_n.py goes to a
million points).

    python examples/large_n.py

1. The Nyström solver (ntkdsl.nystrom) on 3,000 points with 200 landmarks: the kernel rows
   against the landmarks are streamed block by block, so memory is O(block·m + m²) whatever
   N is; predictions at several training times come from one m x m eigendecomposition, and
   another diag_reg (chosen on held-out rows) from the same one.
2. The same through NTKRegressor(solver="nystrom"), and solver="auto" saying what it chose.
3. The exact answer without a factorisation: solver="cg" (conjugate gradients with a Nyström
   preconditioner for t = inf, Krylov steps for finite t) against the exact solver.
"""
import warnings

import numpy as np

import ntkdsl
from ntkdsl.estimators import NTKRegressor
from ntkdsl.nystrom import nystrom_ensemble

arch = "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 3 > Dense(1, W_std=1.5, b_std=0.05)"
rng = np.random.default_rng(0)
d = 8
X = rng.standard_normal((3200, d))
y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(len(X))
X_train, y_train, X_test, y_test = X[:3000], y[:3000], X[3000:], y[3000:]
times = [10.0, 100.0, 1000.0, np.inf]

# 1. Nyström features: one pass over the 3,000 rows, m = 200 landmarks.
net = ntkdsl.compile(arch)
ensemble = nystrom_ensemble(net, X_train, y_train, 200, diag_reg=1e-3, landmarks="leverage")
means = ensemble.predict(X_test, times).mean
for t, mean in zip(times, means):
    print(f"Nyström m=200, t = {t:>6}: test RMSE {np.sqrt(np.mean((mean - y_test) ** 2)):.4f}")
# Choosing diag_reg on held-out data: another ridge only shifts the eigenvalues of the
# m x m matrix C, so with_diag_reg() costs no pass over the training rows.
x_fit, y_fit, x_val, y_val = X_train[:2500], y_train[:2500], X_train[2500:], y_train[2500:]
base = nystrom_ensemble(net, x_fit, y_fit, 200)
scores = {r: np.sqrt(np.mean((base.with_diag_reg(r).predict(x_val).mean - y_val) ** 2))
          for r in (1e-4, 1e-2, 1e-1, 1.0)}
best = min(scores, key=scores.get)
print("validation RMSE at t = inf per diag_reg:",
      {r: round(float(v), 4) for r, v in scores.items()}, "-> diag_reg", best)
# The NNGP posterior's spread from the same features (the test prior is the exact kernel).
posterior = nystrom_ensemble(net, X_train, y_train, 200, kernel="nngp", diag_reg=1e-3)
std = np.sqrt(posterior.predict(X_test[:3], variance_only=True).covariance)
print("NNGP posterior std of three test points:", np.round(std, 4))

# 2. The estimator: "auto" keeps the exact solver up to N = 10,000 and says so.
reg = NTKRegressor(arch, time=100.0, diag_reg=1e-3, solver="nystrom", n_components=200)
print(f"NTKRegressor(solver='nystrom') R² = {reg.fit(X_train, y_train).score(X_test, y_test):.3f}")
auto = NTKRegressor(arch, diag_reg=1e-3).fit(X_train[:1000], y_train[:1000])
print(repr(auto).split("#")[1].strip())  # solver 'exact' (auto: N = 1000 <= 10000 and ...)

# 3. Conjugate gradients: the exact predictions of N = 1,000 without factorising the kernel.
with warnings.catch_warnings():
    warnings.simplefilter("error")  # no ConvergenceWarning: CG reached its tolerance
    cg = NTKRegressor(arch, time=100.0, diag_reg=1e-3, solver="cg").fit(X_train[:1000],
                                                                        y_train[:1000])
exact = NTKRegressor(arch, time=100.0, diag_reg=1e-3, solver="exact").fit(X_train[:1000],
                                                                           y_train[:1000])
gap = np.max(np.abs(cg.predict(X_test) - exact.predict(X_test)))
print(f"CG vs exact at t = 100, N = 1000: largest difference {gap:.1e}")
