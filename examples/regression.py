"""Predict what an infinitely wide network learns — at any training time — without training it.

    python examples/regression.py

Fits the diabetes data (bundled with scikit-learn) with the NTK of a deep ReLU network:
the mean and spread of an infinite ensemble of such networks trained by gradient descent on
the MSE loss, after t steps and at convergence, then the Bayesian (NNGP) posterior, and
finally a small cross-validated search over depth and ridge.
"""
import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ntkdsl.estimators import ArchTemplate, NTKRegressor

X, y = load_diabetes(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
y_mean, y_std = y_train.mean(), y_train.std()
z_train = (y_train - y_mean) / y_std  # the ensemble's prior mean is 0: centre the targets

arch = "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.05)"

# 1. Gradient flow: the trained ensemble at several times, from one eigendecomposition.
reg = NTKRegressor(arch, diag_reg=0.1).fit(X_train, z_train)
times = [1.0, 10.0, 100.0, 1000.0, np.inf]
for t, z in zip(times, reg.predict_trajectory(X_test, times)):
    pred = z * y_std + y_mean
    r2 = 1 - np.sum((pred - y_test) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
    print(f"t = {t:>6}: test R² = {r2:.3f}")

# 2. Uncertainty: the spread of the ensemble at t = ∞ (the NNGP is the prior).
mean, std = reg.predict(X_test[:3], return_std=True)
for m, s, truth in zip(mean * y_std + y_mean, std * y_std, y_test[:3]):
    print(f"prediction {m:7.1f} ± {s:5.1f}   (true {truth:.0f})")

# 3. Bayesian inference with the NNGP: the posterior of the network at initialisation.
bayes = NTKRegressor(arch, kernel="nngp", diag_reg=0.1).fit(X_train, z_train)
print(f"NNGP posterior test R² = {bayes.score(X_test, (y_test - y_mean) / y_std):.3f}")

# 4. Search depth and ridge by cross-validation: placeholders in an ArchTemplate are
#    parameters "arch__<name>", searchable like any other (here inside a Pipeline).
template = ArchTemplate("(Dense(512, W_std=1.5, b_std=0.05) > Relu) * {L} > "
                        "Dense(1, W_std=1.5, b_std=0.05)", L=2)
model = TransformedTargetRegressor(
    GridSearchCV(make_pipeline(StandardScaler(), NTKRegressor(template)),
                 {"ntkregressor__arch__L": [1, 2, 4], "ntkregressor__diag_reg": [0.01, 0.1, 1.0]},
                 cv=3),
    transformer=StandardScaler())
X_raw_train, X_raw_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
model.fit(X_raw_train, y_train)
print("chosen:", model.regressor_.best_params_, f"test R² = {model.score(X_raw_test, y_test):.3f}")
