"""Infinitely wide networks against classical models, side by side, in one run.

    python benchmarks/compare_models.py                        # everything (~20 min on 2 cores)
    python benchmarks/compare_models.py --marginal-likelihood  # the evidence fits only (~2 min)
    python benchmarks/compare_models.py --marginal-likelihood --busy  # beside a busy process

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
  one-hot regression the NTK classifier does, with a different kernel);
* NTK / NNGP, marginal likelihood (breast cancer and diabetes, issue 15): the same
  architecture with W_std and b_std as placeholders, fitted with diag_reg by maximising the
  log marginal likelihood (``optimize=``, exact gradients, Fisher scoring) for each L in
  {1, 2, 4}, the L of the highest evidence kept — no cross-validation. L = 1 starts from the
  grid's values W_std = 1.5, b_std = 0.05, diag_reg = 1e-2; each deeper L from the numbers
  fitted at the depth before (EvidenceSearch). ``--marginal-likelihood`` runs only these two
  datasets and the rows to compare (the grid-searched NTK / NNGP and the Gaussian process),
  and prints their scores and times;
* NTK / NNGP, grid with W_std, b_std (breast cancer and diabetes): the numbers the evidence
  fits searched by the same 3-fold cross-validation instead, W_std in {0.75, 1.5, 3},
  b_std in {0.05, 0.5, 5}, beside L and diag_reg (81 points).

Regression targets are standardised on the training split for every model.

Digits as images (the last column): the same split of the same 1,797 digits, their pixels
scaled to [0, 1] (divided by 16) instead of standardised per pixel — per-pixel
standardisation would give every position its own offset and scale, which a convolution,
sharing its weights across positions, cannot undo. Every model of the other columns runs on
these pixels as 64 features; CNN-GP and CNTK (the NNGP and NTK of the convolutional
networks in CONV_ARCHS, 8x8x1 images) choose their architecture and diag_reg by the same
3-fold cross-validation. Their kernels are computed once for all 1,797 images (the pooling
network's is the benchmark's costliest step) and every fit and prediction of the search reads
its blocks: the same numbers the estimator would compute on each fold's images, without
computing them 3 x 6 + 1 times.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from busy import busy_note, competing_process
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

import ntkdsl
from ntkdsl.estimators import ArchTemplate, NTKClassifier, NTKRegressor

SEED = 0
ARCH = ArchTemplate("(Dense(512, W_std=1.5, b_std=0.05) > Relu) * {L} > "
                    "Dense(1, W_std=1.5, b_std=0.05)", L=2)
NTK_GRID = {"arch__L": [1, 2, 4], "diag_reg": [1e-4, 1e-2, 1.0]}
SVM_GRID = {"C": [1.0, 10.0, 100.0]}
# Two convolutional networks, both affordable on 2 cores: a Flatten readout needs 64
# same-position covariances per pair of images; the pooling network needs all 4,096 position
# pairs at 8x8 for its first layer only, and 256 at 4x4 after the early AvgPool.
CONV_ARCHS = {
    "flatten": "(Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu) * 3 > Flatten"
               " > Dense(1)",
    "pooled": "Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu > AvgPool((2, 2))"
              " > Conv(32, (3, 3), padding='SAME', W_std=1.4, b_std=0.1) > Relu > GlobalAvgPool"
              " > Dense(1)",
}
# The marginal-likelihood rows (issue 15): W_std and b_std (one of each for every layer)
# and diag_reg fitted by the evidence, from the grid's values, at each depth of the grid.
EVIDENCE_ARCH = ArchTemplate("(Dense(512, W_std={w}, b_std={b}) > Relu) * {L} > "
                             "Dense(1, W_std={w}, b_std={b})", w=1.5, b=0.05, L=2)
EVIDENCE_BOUNDS = {"w": (0.1, 10.0), "b": (1e-3, 10.0), "diag_reg": (1e-6, 10.0)}
EVIDENCE_ROWS = ("NTK, marginal likelihood", "NNGP, marginal likelihood")
EVIDENCE_DATASETS = ("breast cancer", "diabetes")
# The grid search of the same numbers the evidence fits: W_std and b_std too (a factor of
# 2 either side of the grid's 1.5, decades from its 0.05), beside L and diag_reg: 81 points.
NUMBERS_GRID = {"arch__w": [0.75, 1.5, 3.0], "arch__b": [0.05, 0.5, 5.0], **NTK_GRID}
NUMBERS_ROWS = ("NTK, grid with W_std, b_std", "NNGP, grid with W_std, b_std")
# What --marginal-likelihood runs: the evidence fits and the rows they are compared with.
COMPARED_ROWS = ("NTK", "NNGP", *NUMBERS_ROWS, *EVIDENCE_ROWS, "GaussianProcess")
DIGITS_IMAGES = "digits as images"
CONV_ROWS = ("CNN-GP (conv NNGP)", "CNTK (conv NTK)")


def load_digit_images(return_X_y=True):
    """The digits as 64 pixels scaled to [0, 1], rows of 8x8 images (see the module notes)."""
    X, y = load_digits(return_X_y=return_X_y)
    return X / 16.0, y


DATASETS = {
    "breast cancer": (load_breast_cancer, "classification"),
    "wine": (load_wine, "classification"),
    "digits": (load_digits, "classification"),
    "diabetes": (load_diabetes, "regression"),
    DIGITS_IMAGES: (load_digit_images, "classification"),
}


class ImageKernels:
    """A kernel object for NTKClassifier: the NNGP and NTK of a convolutional network on every
    digit image, computed once; its "inputs" are image numbers (a column of indices), so each
    fold of the search reads blocks of the two matrices instead of computing them again."""

    def __init__(self, name: str, images: np.ndarray):
        self.name, self.arch = name, CONV_ARCHS[name]
        tic, cpu = time.perf_counter(), time.process_time()
        self.tables = dict(zip(("nngp", "ntk"), ntkdsl.compile(self.arch).kernels(images)))
        print(f"  {DIGITS_IMAGES}: {name} network's kernels of all {len(images)} images in "
              f"{time.perf_counter() - tic:.1f} s ({time.process_time() - cpu:.1f} s CPU)",
              flush=True)

    def _block(self, kind, x1, x2):
        rows = x1[:, 0].astype(int)
        cols = rows if x2 is None else x2[:, 0].astype(int)
        return self.tables[kind][np.ix_(rows, cols)]

    def nngp(self, x1, x2=None):
        return self._block("nngp", x1, x2)

    def ntk(self, x1, x2=None):
        return self._block("ntk", x1, x2)

    def __deepcopy__(self, memo):  # immutable tables: the search's clones share them
        return self

    def __repr__(self) -> str:
        return self.name


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


class EvidenceSearch(BaseEstimator):
    """``estimator`` (an NTKClassifier / NTKRegressor with ``optimize=``) fitted at every
    depth L of the grid; the fit of the highest log marginal likelihood predicts. Its
    ``best_params_``: L and the fitted numbers.

    The first depth starts from the estimator's values; each next one from the numbers
    fitted at the depth before (the next depth's optimum is near: on diabetes at L = 2 and
    4, the NTK 8 and 9 evaluations against 28 and 20 from the grid's values, the NNGP 16
    and 8 against 15 and 19), also when they are on a bound (breast cancer's NTK, whose
    ridge goes to its lower bound: 10 and 10 evaluations against 28 and 21 — Fisher scoring
    crept there, 44 and 90, before it held the coordinates its Newton step pushed out)."""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y):
        fits, start = [], {}
        for L in NTK_GRID["arch__L"]:
            fits.append(clone(self.estimator).set_params(arch__L=L, **start).fit(X, y))
            start = _start(fits[-1].params_)
        self.best_ = max(fits, key=lambda fit: fit.log_marginal_likelihood_value_)
        self.best_params_ = {"L": self.best_.arch.values["L"], **self.best_.params_}
        return self

    def predict(self, X):
        return self.best_.predict(X)

    def score(self, X, y):
        return self.best_.score(X, y)


def _start(params: dict) -> dict:
    """The estimator's parameters that start the next depth at ``params`` (the numbers
    fitted by name)."""
    return {name if name == "diag_reg" else f"arch__{name}": value
            for name, value in params.items()}


def evidence_models(task: str, folds) -> dict[str, object]:
    """The NTK and NNGP whose numbers are fitted by the marginal likelihood, and the same
    numbers searched by the 3-fold grid (NUMBERS_GRID)."""
    estimator = NTKClassifier if task == "classification" else NTKRegressor
    fitted = {row: EvidenceSearch(estimator(EVIDENCE_ARCH, kernel=kind, diag_reg=1e-2,
                                            optimize=EVIDENCE_BOUNDS))
              for row, kind in zip(EVIDENCE_ROWS, ("ntk", "nngp"))}
    searched = {row: GridSearchCV(estimator(EVIDENCE_ARCH, kernel=kind), NUMBERS_GRID,
                                  cv=folds)
                for row, kind in zip(NUMBERS_ROWS, ("ntk", "nngp"))}
    return {**searched, **fitted}


def conv_models(folds, images: np.ndarray) -> dict[str, object]:
    """CNN-GP and CNTK, each choosing its network (CONV_ARCHS) and diag_reg."""
    grid = {"arch": [ImageKernels(name, images) for name in CONV_ARCHS],
            "diag_reg": NTK_GRID["diag_reg"]}
    return {row: GridSearchCV(NTKClassifier(kernel=kind), grid, cv=folds)
            for row, kind in zip(CONV_ROWS, ("nngp", "ntk"))}


def _folds(task: str):
    return StratifiedKFold(3, shuffle=True, random_state=SEED) if task == "classification" \
        else KFold(3, shuffle=True, random_state=SEED)


def models(task: str) -> dict[str, object]:
    """Every contender, unfitted, each searching its own small grid on the training split."""
    folds = _folds(task)
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


def evaluate(model, task, split, scale: bool = True) -> tuple[float, str]:
    """Test accuracy or R², and the hyperparameters the search chose (if it searched);
    ``scale``: standardise the features on the training split first."""
    X_train, X_test, y_train, y_test = split
    pipeline = make_pipeline(*[StandardScaler()] * scale, clone(model))
    if task == "regression":
        pipeline = TransformedTargetRegressor(pipeline, transformer=StandardScaler())
    pipeline.fit(X_train, y_train)
    fitted = pipeline.regressor_ if task == "regression" else pipeline
    last = fitted[-1]
    chosen = ", ".join(f"{k.split('__')[-1]}={_text(v)}" for k, v in last.best_params_.items()) \
        if hasattr(last, "best_params_") else ""
    return pipeline.score(X_test, y_test), chosen


def _text(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def contenders(name: str, task: str, X: np.ndarray, y: np.ndarray) -> dict[str, object]:
    """The models for one dataset; for the digits as images, the conv networks too (on image
    numbers: their X is the column of indices); for breast cancer and diabetes, the
    marginal-likelihood fits."""
    found = models(task)
    if name in EVIDENCE_DATASETS:
        found.update(evidence_models(task, _folds(task)))
    if name == DIGITS_IMAGES:
        folds = StratifiedKFold(3, shuffle=True, random_state=SEED)
        found.update(conv_models(folds, X.reshape(-1, 8, 8, 1)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--marginal-likelihood", action="store_true",
                        help="only breast cancer and diabetes, and only the rows compared "
                             "with the marginal-likelihood fits")
    parser.add_argument("--busy", action="store_true",
                        help="run beside one competing CPU-bound process (benchmarks/busy.py)")
    args = parser.parse_args()
    with competing_process(args.busy):
        print(busy_note(args.busy), flush=True)
        run(args.marginal_likelihood)


def run(only: bool) -> None:
    """Every model on every dataset (``only``: the marginal-likelihood comparison)."""
    started = time.perf_counter()
    results, seconds, choices = {}, {}, []
    for name, (loader, task) in DATASETS.items():
        if only and name not in EVIDENCE_DATASETS:
            continue
        X, y = loader(return_X_y=True)
        split = _split(X, y, task)
        images = name == DIGITS_IMAGES
        for model_name, model in contenders(name, task, X, y).items():
            if only and model_name not in COMPARED_ROWS:
                continue
            tic, cpu = time.perf_counter(), time.process_time()
            rows = _split(np.arange(len(X), dtype=float)[:, None], y, task) \
                if model_name in CONV_ROWS else split
            score, chosen = evaluate(model, task, rows, scale=not images)
            results[model_name, name] = score
            seconds[model_name, name] = (time.perf_counter() - tic, time.process_time() - cpu)
            if chosen:
                choices.append(f"{name}, {model_name}: {chosen}")
            print(f"  {name:14s} {model_name:26s} {score:.4f}  "
                  f"({seconds[model_name, name][0]:.1f} s)", flush=True)
    print_table(results, [d for d in DATASETS if not only or d in EVIDENCE_DATASETS])
    print_evidence_table(results, seconds)
    print("\nchosen by cross-validation (by the evidence for the marginal-likelihood rows):\n"
          + "\n".join(f"  {c}" for c in choices))
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")


def print_evidence_table(results: dict, seconds: dict) -> None:
    """Score and time (fit and test predictions; wall / CPU seconds of the process, the
    CPU figure less swayed by other work on the machine) of the rows compared with the
    marginal-likelihood fits."""
    print("\n| model | " + " | ".join(f"{d} ({_metric(d)}) | wall / CPU (s)"
                                      for d in EVIDENCE_DATASETS) + " |")
    print("|---|" + "---:|---:|" * len(EVIDENCE_DATASETS))
    for model in COMPARED_ROWS:
        cells = [f"{results[model, d]:.3f} | {seconds[model, d][0]:.1f} / "
                 f"{seconds[model, d][1]:.1f}" for d in EVIDENCE_DATASETS]
        print(f"| {model} | " + " | ".join(cells) + " |")


def _metric(dataset: str) -> str:
    return "accuracy" if DATASETS[dataset][1] == "classification" else "R²"


def _split(X, y, task):
    """The one train/test split of every model: 75/25, stratified for classification, seed 0."""
    return train_test_split(X, y, test_size=0.25, random_state=SEED,
                            stratify=y if task == "classification" else None)


def print_table(results: dict, datasets: list[str]) -> None:
    header = [f"{d} ({_metric(d)})" for d in datasets]
    rows = sorted({m for m, _ in results}, key=list(dict.fromkeys(m for m, _ in results)).index)
    print("\n| model | " + " | ".join(header) + " |")
    print("|---|" + "---:|" * len(datasets))
    for model in rows:
        cells = [f"{results[model, d]:.3f}" if (model, d) in results else "—" for d in datasets]
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
