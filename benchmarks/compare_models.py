"""Infinitely wide networks against classical models, side by side, in one run.

    python benchmarks/compare_models.py

For each dataset bundled with scikit-learn (breast cancer, wine, digits: test accuracy;
diabetes: test R²) and one fixed stratified 75/25 split (seed 0), every model sees the same
standardised features:

* NTK / NNGP: ntkdsl's NTKClassifier / NTKRegressor at t = ∞ for the architecture
  ``(Dense(512, W_std=1.5, b_std=0.05) > Relu) * L > Dense(1, W_std=1.5, b_std=0.05)``,
  with L and diag_reg chosen by 3-fold cross-validation on the training split;
* SVC / SVR with an RBF kernel, C chosen by the same cross-validation;
* RandomForest (300 trees, seed 0);
* GaussianProcessRegressor with an RBF + white-noise kernel fitted by marginal likelihood
  (for classification: on one-hot targets, predicting the largest output — the same
  one-hot regression the NTK classifier does, with a different kernel).

Regression targets are standardised on the training split for every model.
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from ntkdsl.estimators import ArchTemplate, NTKClassifier, NTKRegressor

SEED = 0
ARCH = ArchTemplate("(Dense(512, W_std=1.5, b_std=0.05) > Relu) * {L} > "
                    "Dense(1, W_std=1.5, b_std=0.05)", L=2)
NTK_GRID = {"arch__L": [1, 2, 4], "diag_reg": [1e-4, 1e-2, 1.0]}
SVM_GRID = {"C": [1.0, 10.0, 100.0]}
DATASETS = {
    "breast cancer": (load_breast_cancer, "classification"),
    "wine": (load_wine, "classification"),
    "digits": (load_digits, "classification"),
    "diabetes": (load_diabetes, "regression"),
}


class OneHotGaussianProcessClassifier(ClassifierMixin, BaseEstimator):
    """GaussianProcessRegressor on one-hot targets; the class with the largest output."""

    def fit(self, X, y):
        self.classes_, codes = np.unique(y, return_inverse=True)
        kernel = ConstantKernel() * RBF(np.sqrt(X.shape[1])) + WhiteKernel(0.1)
        self.gp_ = GaussianProcessRegressor(kernel, normalize_y=True, random_state=SEED)
        self.gp_.fit(X, np.eye(len(self.classes_))[codes])
        return self

    def predict(self, X):
        return self.classes_[np.argmax(self.gp_.predict(X), axis=1)]


def models(task: str) -> dict[str, object]:
    """Every contender, unfitted, each searching its own small grid on the training split."""
    folds = StratifiedKFold(3, shuffle=True, random_state=SEED) if task == "classification" \
        else KFold(3, shuffle=True, random_state=SEED)
    search = lambda estimator, grid: GridSearchCV(estimator, grid, cv=folds)
    if task == "classification":
        return {
            "NTK": search(NTKClassifier(ARCH), NTK_GRID),
            "NNGP": search(NTKClassifier(ARCH, kernel="nngp"), NTK_GRID),
            "SVC / SVR (RBF)": search(SVC(), SVM_GRID),
            "RandomForest": RandomForestClassifier(300, random_state=SEED),
            "GaussianProcess": OneHotGaussianProcessClassifier(),
        }
    return {
        "NTK": search(NTKRegressor(ARCH), NTK_GRID),
        "NNGP": search(NTKRegressor(ARCH, kernel="nngp"), NTK_GRID),
        "SVC / SVR (RBF)": search(SVR(), SVM_GRID),
        "RandomForest": RandomForestRegressor(300, random_state=SEED),
        "GaussianProcess": GaussianProcessRegressor(
            ConstantKernel() * RBF(3.0) + WhiteKernel(0.1), random_state=SEED),
    }


def evaluate(model, task, split) -> tuple[float, str]:
    """Test accuracy or R², and the hyperparameters the search chose (if it searched)."""
    X_train, X_test, y_train, y_test = split
    pipeline = make_pipeline(StandardScaler(), clone(model))
    if task == "regression":
        pipeline = TransformedTargetRegressor(pipeline, transformer=StandardScaler())
    pipeline.fit(X_train, y_train)
    fitted = pipeline.regressor_ if task == "regression" else pipeline
    last = fitted[-1]
    chosen = ", ".join(f"{k.split('__')[-1]}={v:g}" for k, v in last.best_params_.items()) \
        if isinstance(last, GridSearchCV) else ""
    return pipeline.score(X_test, y_test), chosen


def main() -> None:
    started = time.perf_counter()
    results, choices = {}, []
    for name, (loader, task) in DATASETS.items():
        X, y = loader(return_X_y=True)
        split = train_test_split(X, y, test_size=0.25, random_state=SEED,
                                 stratify=y if task == "classification" else None)
        for model_name, model in models(task).items():
            tic = time.perf_counter()
            score, chosen = evaluate(model, task, split)
            results[model_name, name] = score
            if chosen:
                choices.append(f"{name}, {model_name}: {chosen}")
            print(f"  {name:14s} {model_name:16s} {score:.4f}  "
                  f"({time.perf_counter() - tic:.1f} s)", flush=True)
    print_table(results)
    print("\nchosen by cross-validation:\n" + "\n".join(f"  {c}" for c in choices))
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")


def print_table(results: dict) -> None:
    datasets = list(DATASETS)
    header = [f"{d} ({'accuracy' if DATASETS[d][1] == 'classification' else 'R²'})"
              for d in datasets]
    rows = sorted({m for m, _ in results}, key=list(dict.fromkeys(m for m, _ in results)).index)
    print("\n| model | " + " | ".join(header) + " |")
    print("|---|" + "---:|" * len(datasets))
    for model in rows:
        cells = [f"{results[model, d]:.3f}" for d in datasets]
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
