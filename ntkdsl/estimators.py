"""scikit-learn estimators: an infinitely wide network, trained for time t, without training.

:class:`NTKRegressor` and :class:`NTKClassifier` compute the network's kernels on the data
and predict with the closed forms of :mod:`ntkdsl.predict`: the mean output of the infinite
ensemble of networks trained by MSE gradient flow for time ``time`` (``None`` = ∞), with the
NTK (every layer trained) or the NNGP (readout only; at ``time=None`` this is the Bayesian
posterior).

The architecture is a string. To search over its numbers, write it as an
:class:`ArchTemplate` — ``{name}`` placeholders plus their values — whose placeholders are
nested parameters ``arch__<name>``, just like the parameters of a Pipeline step::

    arch = ArchTemplate("(Dense(512, W_std={w}, b_std=0.1) > Relu) * {L} > Dense(1)", w=1.5, L=2)
    GridSearchCV(NTKRegressor(arch), {"arch__L": [1, 2, 4], "arch__w": [1.0, 1.5],
                                      "diag_reg": [0.0, 1e-3]})

Instead of a string, ``arch`` may also be any object with ``nngp(x1, x2=None)`` and
``ntk(x1, x2=None)`` methods (for example the result of :func:`ntkdsl.compile`, or a kernel of
your own).

Images: a convolutional architecture takes examples of a shape, channels last. With
``input_shape=(8, 8, 1)`` each row of a 2-D ``X`` (n, 64) is reshaped to an 8×8×1 image for
the kernels — scikit-learn's tools (pipelines, scalers, cross-validation) keep their 2-D
contract — and ``X`` may also be given as images (n, 8, 8, 1) directly.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from . import errors, network
from .errors import InputError, NTKDSLError, ParameterError
from .evaluation import (
    as_real_array,
    available_memory,
    check_input_rank,
    densified,
    example_shape,
    kernel_name,
    refuse_complex,
    require_memory,
)
from .evaluation.blas import _BlasLimit
from .evaluation.dask_blocks import is_dask_array, row_chunked
from .kinds import KINDS
from .krylov import cg_ensemble
from .nystrom import nystrom_ensemble
from .parser import parse
from .predict import GradientFlowEnsemble, solver_memory
from .sklearn import KERNELS, MarginalLikelihood
from .templates import ArchTemplate, arch_placeholders

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _sk_validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

__all__ = ["DEFAULT_ARCH", "ArchTemplate", "NTKClassifier", "NTKRegressor"]

DEFAULT_ARCH = "(Dense(512, W_std=1.5, b_std=0.05) > Relu) * 2 > Dense(1, W_std=1.5, b_std=0.05)"

# Rows of test inputs per prediction: bounds the test kernels and the solver's products at
# BATCH × N floats each.
_BATCH = 512

SOLVERS = ("auto", "exact", "nystrom", "cg")
# solver="auto": the exact solver (an O(N³) factorisation: about a minute at this N on two
# cores) up to this many training samples when its memory fits, the Nyström solver beyond.
AUTO_EXACT_LIMIT = 10_000
DEFAULT_COMPONENTS = 2_000  # Nyström landmarks when n_components is None (at most N)


@contextmanager
def _input_errors():
    """scikit-learn's ValueErrors about the data (shapes, NaN, label types, lengths) as
    ntkdsl InputErrors: still ValueErrors, with scikit-learn's wording, which its checks
    look for; ntkdsl's own errors pass unchanged."""
    try:
        yield
    except NTKDSLError:
        raise
    except ValueError as err:
        raise InputError(str(err)) from err


def _validate(estimator, *args, **kwargs):
    """scikit-learn's validation, with its ValueErrors re-raised as ntkdsl InputErrors.

    ``args`` are X, or X and y; complex data is refused first, with ntkdsl's message rather
    than scikit-learn's (which prints the whole array), and sparse data is densified (the
    kernel is dense anyway; see ``ntkdsl.evaluation.densified``)."""
    for name, value in zip(("X", "y"), args):
        refuse_complex(value, name)
    args = tuple(densified(value, name) for name, value in zip(("X", "y"), args))
    with _input_errors():
        return _sk_validate_data(estimator, *args, dtype=np.float64, **kwargs)


def _as_rows(X) -> tuple[object, tuple[int, ...] | None]:
    """(X with each example as one row, the shape of an example) for X of more than two
    dimensions (images); anything else unchanged with shape None, for scikit-learn to judge."""
    ndim = getattr(X, "ndim", None)  # arrays, sparse matrices, data frames
    if ndim is None and isinstance(X, (list, tuple)):
        try:
            ndim = np.ndim(X)
        except ValueError:  # ragged nested lists: scikit-learn says what is wrong
            return X, None
    if ndim is None or ndim <= 2:
        return X, None
    array = as_real_array(X, "X")
    return array.reshape(array.shape[0], int(np.prod(array.shape[1:]))), array.shape[1:]


def _shape_text(shape: tuple[int, ...]) -> str:
    return f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


def _check_fitted(estimator) -> None:
    """ntkdsl's NotFittedError (also scikit-learn's) if ``fit`` has not been called."""
    try:
        check_is_fitted(estimator, "ensemble_")
    except NTKDSLError:
        raise
    except ValueError as err:  # scikit-learn's NotFittedError
        raise errors.NotFittedError(str(err)) from None


class _NTKEstimator(BaseEstimator):
    """Shared machinery: architectures, kernels, the gradient-flow ensemble."""

    def __init__(self, arch=DEFAULT_ARCH, kernel="ntk", time=None, learning_rate=1.0,
                 diag_reg=0.0, verbose=False, input_shape=None, solver="auto",
                 n_components=None, optimize=None, n_restarts_optimizer=0, random_state=None):
        self.arch = arch
        self.kernel = kernel
        self.time = time
        self.learning_rate = learning_rate
        self.diag_reg = diag_reg
        self.verbose = verbose
        self.input_shape = input_shape
        self.solver = solver
        self.n_components = n_components
        self.optimize = optimize
        self.n_restarts_optimizer = n_restarts_optimizer
        self.random_state = random_state

    def architecture(self) -> str | object:
        """The architecture string (template filled in), or the kernel object as given."""
        if isinstance(self.arch, ArchTemplate):
            return self.arch.render()
        if isinstance(self.arch, str):
            if arch_placeholders(self.arch):
                raise InputError(f"arch {self.arch!r} has placeholders; wrap it as "
                                 "ArchTemplate(arch, name=value, ...) to give their values")
            return self.arch
        if callable(getattr(self.arch, "nngp", None)) and callable(getattr(self.arch, "ntk",
                                                                           None)):
            return self.arch
        raise InputError(f"arch must be an architecture string, an ArchTemplate or an object "
                         f"with nngp() and ntk() methods, got {type(self.arch).__name__}")

    def _check_hyperparameters(self) -> None:
        kernel_name(self.kernel)
        for name in ("learning_rate", "diag_reg"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or not value >= 0 \
                    or not np.isfinite(value):
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.time is not None and (not isinstance(self.time, (int, float, np.number))
                                      or np.isnan(self.time) or self.time < 0):
            raise InputError(f"time must be a number >= 0, or None for t = infinity; "
                             f"got {self.time!r}")

    # ------------------------------------------------------------------ inputs

    def _examples(self, X, *y, reset: bool, **kwargs):
        """X (and y, when passed) validated as scikit-learn validates them — rows of
        features, setting or checking ``n_features_in_`` — then X shaped as the kernels take
        it: every row reshaped to the example shape (``input_shape_``) when there is one."""
        if is_dask_array(X):
            return self._dask_examples(X, *y, reset=reset)
        X, images = _as_rows(X)
        # Before scikit-learn counts the features: images of another shape (another number of
        # channels, say) are named as such, not as a wrong number of columns.
        shape = None if reset else self._predict_shape(images)
        validated = _validate(self, X, *y, reset=reset, **kwargs)
        X = validated[0] if y else validated
        if reset:
            shape = self._fit_shape(*X.shape, images)
        if shape is not None:
            X = X.reshape(X.shape[0], *shape)
        return (X, validated[1]) if y else X

    def _dask_examples(self, X, *y, reset: bool):
        """A Dask array X checked and kept lazy (its row chunks stay on the workers; the
        Nyström solver runs there), y gathered here (one value or row per sample)."""
        X = row_chunked(X, "X")
        if X.ndim < 2:
            raise InputError(f"X has shape {X.shape}; it needs one row per sample")
        n_features = int(np.prod(X.shape[1:]))
        images = X.shape[1:] if X.ndim > 2 else None
        if reset:
            self.n_features_in_ = n_features
            shape = self._fit_shape(X.shape[0], n_features, images)
        else:
            shape = self._predict_shape(images)
            if n_features != self.n_features_in_:
                raise InputError(f"X has {n_features} features, but {type(self).__name__} "
                                 f"is expecting {self.n_features_in_} features as input")
        if shape is not None and X.ndim == 2:
            X = X.reshape((X.shape[0], *shape))
        if not y:
            return X
        target = np.asarray(y[0].compute() if is_dask_array(y[0]) else y[0])
        if target.ndim not in (1, 2) or target.shape[0] != X.shape[0]:
            raise InputError(f"y has shape {target.shape} but X has {X.shape[0]} samples; "
                             "y needs one value (or row) per sample")
        return X, target

    def _fit_shape(self, n_samples: int, n_features: int, images: tuple[int, ...] | None):
        """The example shape at fit: ``input_shape``, else the images' own shape, else None
        (rows); checked against the features and the architecture's spatial axes."""
        shape = images
        if self.input_shape is not None:
            shape = example_shape(self.input_shape)
            if images is not None and images != shape:
                raise InputError(f"X holds examples of shape {_shape_text(images)}, but "
                                 f"input_shape is {_shape_text(shape)}",
                                 hint="give X as rows of features or as images of "
                                      "input_shape, or change input_shape")
            if int(np.prod(shape)) != n_features:
                raise InputError(
                    f"input_shape {_shape_text(shape)} holds {int(np.prod(shape))} features, "
                    f"but X has {n_features} columns",
                    hint="input_shape is the shape of one example, channels last, and its "
                         f"product must be the number of columns of X, e.g. ({n_features}, 1) "
                         "or (H, W, C) with H * W * C = " + str(n_features))
        arch = self.architecture()
        if isinstance(arch, str):
            name = "X" if self.input_shape is None else \
                f"X reshaped to input_shape {_shape_text(shape)}"
            rows_hint = None if shape else (
                "give the shape of one example, channels last, as input_shape: e.g. "
                "NTKClassifier(arch, input_shape=(8, 8, 1)) for rows of 8x8 single-channel images")
            check_input_rank(parse(arch), (n_samples, *(shape or (n_features,))), name, arch,
                             hint=rows_hint)
        self.input_shape_ = shape
        return shape

    def _predict_shape(self, images: tuple[int, ...] | None):
        fitted = getattr(self, "input_shape_", None)
        if images is not None and images != fitted:
            seen = ("rows of features" if fitted is None
                    else f"examples of shape {_shape_text(fitted)}")
            raise InputError(f"X holds examples of shape {_shape_text(images)}, but the "
                             f"estimator was fitted on {seen}")
        return fitted

    # ------------------------------------------------------------------ kernels

    def _compile(self):
        arch = self.architecture()
        if not isinstance(arch, str):
            return arch
        return network.compile(arch)

    @property
    def _train_kernel_name(self) -> str:
        return kernel_name(self.kernel)

    def _kernels(self, X, X2=None, kinds: tuple[str, ...] = ("ntk",)) -> dict[str, np.ndarray]:
        """{kind: kernel of X against X2 (None: X itself)} for each of ``kinds``.

        A compiled network evaluates them with its own tiled pipeline — both kernels from one
        pass, a self-kernel computing each off-diagonal block once and mirroring it — and, if
        ``verbose``, its progress bar (on a terminal, for evaluations over two seconds); any
        other kernel object is called as given."""
        net = self.network_
        if not isinstance(net, network.Network):
            args = (X,) if X2 is None else (X, X2)
            return {kind: getattr(net, kind)(*args) for kind in kinds}
        progress = None if self.verbose else False  # the network's rule for None: a terminal
        if set(kinds) == set(KINDS):
            return dict(zip(KINDS, net.kernels(X, X2, progress=progress)))
        return {kinds[0]: getattr(net, kinds[0])(X, X2, progress=progress)}

    def _fit_targets(self, X, targets) -> None:
        """Compile, evaluate the training kernel once and factorise it (lazily) for predict
        — or, by ``solver``, stream Nyström features or store the kernel for CG."""
        self._check_hyperparameters()
        self.solver_, self.solver_reason_ = self._choose_solver(X.shape[0], is_dask_array(X))
        if self.verbose:
            print(f"ntkdsl: solver {self.solver_!r} ({self.solver_reason_})", file=sys.stderr)
        if self.solver_ == "exact" or self.optimize is not None:
            self._check_memory(X.shape[0])  # the marginal likelihood needs the whole kernel
        fitted = self._maximise_evidence(X, targets)
        self.network_ = self._compile() if fitted is None else network.compile(self.arch_)
        self.X_fit_ = X
        self.diag_reg_ = self.diag_reg if fitted is None else fitted.diag_reg
        if self.solver_ == "nystrom":
            self._fit_nystrom(targets, covariance=False)
            return
        k_train = fitted.kernel if fitted is not None else \
            self._kernels(X, kinds=(self._train_kernel_name,))[self._train_kernel_name]
        if self.solver_ == "cg":
            self.ensemble_ = cg_ensemble(k_train, targets, kernel=self._train_kernel_name,
                                         learning_rate=self.learning_rate,
                                         diag_reg=self.diag_reg_)
            return
        # After an evidence fit, BLAS stays at one thread for this factorisation too, as
        # for the optimiser's few dozen of the same size: the first one at two threads after
        # those took 140-180 ms beside other work (threads woken), against 0.6 ms.
        with _BlasLimit() if fitted is not None else nullcontext():
            self.ensemble_ = GradientFlowEnsemble(k_train, targets,
                                                  kernel=self._train_kernel_name,
                                                  learning_rate=self.learning_rate,
                                                  diag_reg=self.diag_reg_)
            # Factorise for the fitted time now, so a SingularKernelWarning is raised by fit().
            self.ensemble_.prepare(self.time)

    def _maximise_evidence(self, X, targets):
        """With ``optimize``: the template's numbers (and diag_reg, if named) that maximise
        the log marginal likelihood of the targets (ntkdsl.sklearn.MarginalLikelihood),
        kept as ``params_``, ``arch_`` and ``log_marginal_likelihood_value_``; None without."""
        for stale in ("params_", "arch_", "log_marginal_likelihood_value_"):
            self.__dict__.pop(stale, None)  # of an earlier fit with optimize
        if self.optimize is None:
            return None
        bounds = self._optimize_bounds()
        ridge_bounds = bounds.pop("diag_reg", None)
        kernel = KERNELS[self._train_kernel_name](self._optimize_template(), bounds)
        evidence = MarginalLikelihood(kernel, X, targets, self.diag_reg, ridge_bounds)
        fitted = evidence.maximise(self.n_restarts_optimizer, self.random_state)
        self.params_ = fitted.params
        self.arch_ = fitted.arch.render()
        self.log_marginal_likelihood_value_ = fitted.log_marginal_likelihood
        return fitted

    def _optimize_bounds(self) -> dict:
        if not isinstance(self.optimize, dict) or not self.optimize:
            raise ParameterError(
                f"optimize must be a dict of bounds, name -> (low, high), got "
                f"{self.optimize!r}", hint="e.g. optimize={'w': (0.1, 10.0), "
                "'diag_reg': (1e-6, 1.0)}: placeholders of the ArchTemplate, and diag_reg")
        return dict(self.optimize)

    def _optimize_template(self) -> ArchTemplate:
        """The template whose numbers ``optimize`` fits (a string without placeholders is a
        template without them, for fitting diag_reg alone)."""
        arch = self.arch
        if isinstance(arch, str) and not arch_placeholders(arch):
            arch = ArchTemplate(arch)
        if not isinstance(arch, ArchTemplate):
            raise ParameterError(f"optimize needs arch as an ArchTemplate, got "
                                 f"{type(self.arch).__name__}", hint="write the numbers to "
                                 "fit as placeholders: ArchTemplate('Dense(512, W_std={w}) > "
                                 "Relu > Dense(1)', w=1.0)")
        if "diag_reg" in arch.values and "diag_reg" in self.optimize:
            raise ParameterError("optimize names diag_reg, which is both the estimator's "
                                 "ridge and a placeholder of the template",
                                 hint="rename the placeholder")
        return arch

    def _components(self, n: int) -> int:
        return min(n, DEFAULT_COMPONENTS) if self.n_components is None else self.n_components

    def _choose_solver(self, n: int, distributed: bool = False) -> tuple[str, str]:
        """(solver, why): ``solver`` as given, or for "auto" the exact solver up to
        AUTO_EXACT_LIMIT samples when its kernel and factorisation fit in memory, else Nyström."""
        if self.solver not in SOLVERS:
            raise InputError(f"solver must be one of {', '.join(map(repr, SOLVERS))}, got "
                             f"{self.solver!r}")
        if distributed:  # Dask arrays: the features are summed over the chunks on the workers
            if self.solver not in ("auto", "nystrom") or self.optimize is not None:
                raise InputError(
                    "with Dask arrays only solver='nystrom' (or 'auto') runs on the cluster"
                    + (", without optimize=" if self.optimize is not None else "")
                    + f"; got solver={self.solver!r}", hint="the exact and CG solvers and the "
                    "marginal likelihood need the whole N x N kernel in this process: pass "
                    "X.compute() for those, or use solver='nystrom'")
            return "nystrom", f"Dask arrays: Nyström on the cluster, {self._components(n)} landmarks"
        if self.solver != "auto":
            return self.solver, "as asked"
        finite = self.time is not None and np.isfinite(self.time)
        needed = 8.0 * n * n + solver_memory(n, eigen=finite)
        free = available_memory()
        if n <= AUTO_EXACT_LIMIT and (free is None or needed <= free):
            return "exact", f"auto: N = {n} <= {AUTO_EXACT_LIMIT} and {needed / 1e9:.2g} GB fit"
        return "nystrom", (f"auto: N = {n} > {AUTO_EXACT_LIMIT}" if n > AUTO_EXACT_LIMIT else
                           f"auto: the exact solver's {needed / 1e9:.2g} GB do not fit") + \
            f"; {self._components(n)} landmarks"

    def _fit_nystrom(self, targets, covariance: bool) -> None:
        self._nystrom_targets = targets
        self.ensemble_ = nystrom_ensemble(
            self.network_, self.X_fit_, targets, self._components(len(self.X_fit_)),
            kernel=self._train_kernel_name, learning_rate=self.learning_rate,
            diag_reg=self.diag_reg_, covariance=covariance, progress=None if self.verbose
            else False)

    def _means(self, X, t) -> np.ndarray:
        """The ensemble's mean outputs on one batch of (validated) inputs at times ``t``."""
        if self.solver_ == "nystrom":
            return self.ensemble_.predict(X, t).mean
        name = self._train_kernel_name
        return self.ensemble_.predict(self._kernels(X, self.X_fit_, (name,))[name], t).mean

    def __repr__(self, N_CHAR_MAX=700):
        text = super().__repr__(N_CHAR_MAX)
        reason = getattr(self, "solver_reason_", None)
        return text if reason is None else f"{text}  # solver {self.solver_!r} ({reason})"

    def log_marginal_likelihood(self) -> float:
        """log p(y | X) of the training targets (as fit used them: one-hot codes centred for a
        classifier, normalised with ``normalize_y``) for the Gaussian process with the fitted
        kernel — the NNGP's evidence, or the NTK used as a GP kernel — and the ridge
        ``diag_reg`` · mean(diag K) as the noise variance, summed over target columns."""
        _check_fitted(self)
        self._require_exact("log_marginal_likelihood()")
        return self.ensemble_.log_marginal_likelihood()

    def _require_exact(self, what: str, nystrom: bool = False) -> None:
        if self.solver_ == "exact" or (nystrom and self.solver_ == "nystrom"):
            return
        valid = "solver='exact' or 'nystrom'" if nystrom else "solver='exact'"
        raise InputError(f"{what} needs {valid}; this estimator was fitted with "
                         f"solver={self.solver_!r}")

    def _check_memory(self, n: int) -> None:
        """Before any kernel entry: the N x N training kernel and the solver's factorisation
        (an eigendecomposition for a finite time) must fit in the memory available."""
        finite = self.time is not None and np.isfinite(self.time)
        require_memory(8.0 * n * n + solver_memory(n, eigen=finite),
                       f"fitting on {n} samples (the {n} x {n} training kernel and its "
                       f"{'eigendecomposition' if finite else 'factorisation'})",
                       hint=f"use the Nyström solver: solver='nystrom', n_components="
                            f"{min(n, DEFAULT_COMPONENTS)} (memory O(N·d + m²)), or fit on "
                            "fewer samples")

    def _outputs(self, X, times) -> np.ndarray:
        """Ensemble mean outputs (targets' scale) at ``times`` (None = the fitted time)."""
        _check_fitted(self)
        X = self._examples(X, reset=False)
        t = self.time if times is None else times
        if is_dask_array(X):
            return self._means(X, t)  # lazy, a task per row chunk
        means = [self._means(X[s:s + _BATCH], t) for s in range(0, X.shape[0], _BATCH)]
        lead = np.ndim(np.inf if t is None else t)
        return np.concatenate(means, axis=lead)

    def _score(self, mixin_score, X, y, sample_weight):
        """The mixin's score (R² or accuracy) with scikit-learn's errors about ``y`` (wrong
        length, wrong kind) as ntkdsl InputErrors."""
        with _input_errors():
            return mixin_score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified: the kernel is dense anyway
        return tags


class NTKRegressor(RegressorMixin, _NTKEstimator):
    """Regression with an infinitely wide network trained by MSE gradient flow for ``time``.

    Parameters:
        arch: architecture string, an :class:`ArchTemplate` (placeholders searchable as
            ``arch__<name>``), or an object with ``nngp`` and ``ntk`` methods.
        kernel: ``"ntk"`` (every layer trained) or ``"nngp"`` (only the readout trained; at
            ``time=None`` the Bayesian posterior of the NNGP).
        time: training time in steps (``learning_rate · time`` is what matters); ``None``
            means t = ∞.
        learning_rate: gradient-descent step size (≥ 0).
        diag_reg: ridge added to the kernel diagonal, relative to its mean diagonal.
        verbose: show the kernel evaluation's progress bar on a terminal (for evaluations
            longer than two seconds).
        normalize_y: as in scikit-learn's GaussianProcessRegressor: centre each target
            column and divide it by its standard deviation before fitting (the ensemble
            starts at the prior mean 0 and the kernel's scale is 1, so targets far from 0
            or of another scale fit badly otherwise); predictions, std and cov are scaled
            back. Default False.
        input_shape: the shape of one example for a convolutional architecture, channels
            last, e.g. ``(8, 8, 1)``: each row of a 2-D X is reshaped to it for the kernels
            (its product must be the number of columns), and X may also be given as images
            ``(n, 8, 8, 1)``. None (default): X as given — rows for a fully-connected
            architecture, images ``(n, H, W, C)`` for a convolutional one. A shape whose rank
            does not fit the architecture's filters is refused with what would fit.
        optimize: None (default), or bounds ``{name: (low, high)}`` of placeholders of the
            ArchTemplate ``arch`` (their values there are the start) and optionally of
            ``"diag_reg"`` (``diag_reg`` the start): fit first chooses these numbers by
            maximising the log marginal likelihood of the training targets (see
            ``log_marginal_likelihood``) with its exact gradient, by Fisher scoring in log
            space within the bounds (ntkdsl.sklearn.MarginalLikelihood). Integers
            (widths, depths) stay grid/CV parameters.
        n_restarts_optimizer: further runs from starts drawn log-uniformly within
            the bounds (as scikit-learn's GaussianProcessRegressor), the best kept.
        random_state: seed (or RandomState) of those starts.

    Attributes after ``fit``: ``network_`` (the compiled kernels), ``ensemble_`` (a
    :class:`ntkdsl.predict.GradientFlowEnsemble`, fitted to the normalised targets when
    ``normalize_y``), ``n_features_in_`` (features per example, all its entries),
    ``input_shape_`` (the example shape the kernels got, None for rows). With
    ``optimize``: ``params_`` (the fitted numbers by name), ``arch_`` (the fitted
    architecture string, for ``ntkdsl.compile``), ``log_marginal_likelihood_value_``.

    Example:
        >>> arch = ArchTemplate("(Dense(512, W_std={w}) > Relu) * {L} > Dense(1)", w=1.4, L=3)
        >>> reg = NTKRegressor(arch, time=100.0)
        >>> reg.fit(X_train, y_train).predict(X_test, return_std=True)
    """

    def __init__(self, arch=DEFAULT_ARCH, kernel="ntk", time=None, learning_rate=1.0,
                 diag_reg=0.0, verbose=False, normalize_y=False, input_shape=None,
                 solver="auto", n_components=None, optimize=None, n_restarts_optimizer=0,
                 random_state=None):
        super().__init__(arch, kernel, time, learning_rate, diag_reg, verbose, input_shape,
                         solver, n_components, optimize, n_restarts_optimizer, random_state)
        self.normalize_y = normalize_y

    def fit(self, X: ArrayLike, y: ArrayLike) -> NTKRegressor:
        """Evaluate the kernel on the training data and factorise it."""
        X, y = self._examples(X, y, reset=True, multi_output=True, y_numeric=True)
        y = as_real_array(y, "y", "numeric (class labels go to NTKClassifier)")
        if X.shape[0] < 2:
            raise InputError(f"need at least 2 training samples, got n_samples={X.shape[0]}")
        self._y_train_mean, self._y_train_std = self._target_scaling(y)
        self._fit_targets(X, (y - self._y_train_mean) / self._y_train_std)
        return self

    def _target_scaling(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) per target column that fit() divides out: (0, 1) unless normalize_y."""
        if not isinstance(self.normalize_y, (bool, np.bool_)):
            raise InputError(f"normalize_y must be True or False, got {self.normalize_y!r}")
        if not self.normalize_y:
            return np.zeros(y.shape[1:]), np.ones(y.shape[1:])
        std = np.std(y, axis=0)
        # A constant column keeps scale 1, as scikit-learn does (it would divide by zero).
        return np.mean(y, axis=0), np.where(std < 10 * np.finfo(np.float64).eps, 1.0, std)

    def _unscaled(self, outputs: np.ndarray) -> np.ndarray:
        return outputs * self._y_train_std + self._y_train_mean

    def predict(self, X: ArrayLike, return_std: bool = False, return_cov: bool = False
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Mean prediction; with ``return_std``/``return_cov`` also the ensemble's spread.

        Shapes follow GaussianProcessRegressor: mean (m,) or (m, k); std (m,) or (m, k);
        cov (m, m) or (m, m, k). (The covariance is the same for every output.)
        """
        if return_std and return_cov:
            raise InputError("return_std and return_cov cannot both be True; choose one")
        mean = self._unscaled(self._outputs(X, None))
        if not (return_std or return_cov):
            return mean
        X = self._examples(X, reset=False)
        spread = self._std(X) if return_std else self._cov(X)
        if mean.ndim == 2:  # one copy per output, as scikit-learn's GP regressor returns
            spread = np.repeat(spread[..., None], mean.shape[1], axis=-1)
        # Back to the targets' scale: the std scales with the target's std, the cov with its square.
        return mean, spread * (self._y_train_std if return_std else self._y_train_std ** 2)

    def predict_trajectory(self, X: ArrayLike, times: ArrayLike) -> np.ndarray:
        """Mean predictions at several training times: shape ``np.shape(times) + (m[, k])``."""
        return self._unscaled(self._outputs(X, as_real_array(times, "times")))

    def _gaussian(self, X, variance_only=False):
        """Mean and covariance of the ensemble on X (needs the NNGP beside the NTK)."""
        self._require_exact("return_std / return_cov", nystrom=True)
        if self.solver_ == "nystrom":
            if self.ensemble_.kernel == "ntk" and self.ensemble_._cross is None:
                self._fit_nystrom(self._nystrom_targets, covariance=True)  # once, on request
            return self.ensemble_.predict(X, self.time, compute_cov=not variance_only,
                                          variance_only=variance_only)
        ensemble = self.ensemble_
        extra = {}
        if ensemble.kernel == "ntk" and ensemble.nngp_train_train is None:
            # computed once, on the first request
            ensemble.attach_nngp(self._kernels(self.X_fit_, kinds=("nngp",))["nngp"])
        # The NTK ensemble's covariance needs the NNGP beside the NTK: both from one pass.
        cross = self._kernels(X, self.X_fit_, KINDS if ensemble.kernel == "ntk" else ("nngp",))
        if ensemble.kernel == "ntk":
            extra["nngp_test_train"] = cross["nngp"]
        return ensemble.predict(cross[ensemble.kernel], self.time,
                                nngp_test_test=self._kernels(X, kinds=("nngp",))["nngp"], **extra)

    def _std(self, X) -> np.ndarray:
        variances = [self._gaussian(X[s:s + _BATCH], variance_only=True).covariance
                     if self.solver_ == "nystrom" else
                     np.diagonal(self._gaussian(X[s:s + _BATCH]).covariance)
                     for s in range(0, X.shape[0], _BATCH)]
        # Rounding can leave a zero variance slightly negative; clip it rather than NaN.
        return np.sqrt(np.maximum(np.concatenate(variances), 0.0))

    def _cov(self, X) -> np.ndarray:
        return self._gaussian(X).covariance

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """R² of the mean prediction on X against y (scikit-learn's RegressorMixin.score)."""
        return self._score(super().score, X, y, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class NTKClassifier(ClassifierMixin, _NTKEstimator):
    """Classification by MSE regression on one-hot targets (Arora et al. 2020; Lee et al. 2019).

    Each class gets one output; targets are the one-hot codes centred by subtracting ``1/C``
    (C = number of classes), so the ensemble starts from the prior mean 0. The predicted
    class is the largest output. Parameters are those of :class:`NTKRegressor` (without
    ``normalize_y``), ``input_shape`` included: ``NTKClassifier(arch, input_shape=(8, 8, 1))``
    classifies the rows of the digits data as 8×8 images.

    ``decision_function`` gives the per-class outputs on the one-hot scale (a perfect fit gives
    1 for the true class and 0 elsewhere; for two classes, the difference class 1 − class 0).
    ``predict_proba`` gives these scores clipped at 0 and renormalised: scores in the simplex,
    not calibrated probabilities.
    """

    def fit(self, X: ArrayLike, y: ArrayLike) -> NTKClassifier:
        """Encode the labels one-hot, evaluate the kernel on the training data."""
        X, y = self._examples(X, y, reset=True)
        with _input_errors():
            check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise InputError(f"y has only one class ({self.classes_[0]!r}); a classifier "
                             "needs at least 2 classes")
        if X.shape[0] < 2:
            raise InputError(f"need at least 2 training samples, got n_samples={X.shape[0]}")
        self._fit_targets(X, self._one_hot(encoder.transform(y)))
        return self

    def _one_hot(self, codes: np.ndarray) -> np.ndarray:
        n_classes = len(self.classes_)
        return np.eye(n_classes)[codes] - 1.0 / n_classes

    def _scores(self, X, times=None) -> np.ndarray:
        """Per-class outputs on the one-hot scale (they sum to 1 over classes)."""
        return self._outputs(X, times) + 1.0 / len(self.classes_)

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Per-class scores (m, C); for two classes the margin of class 1 over class 0 (m,)."""
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The class with the largest output."""
        scores = self._scores(X)  # first, so that an unfitted estimator says so
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Accuracy of the predicted classes on X against y (ClassifierMixin.score)."""
        return self._score(super().score, X, y, sample_weight)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Scores clipped at 0 and normalised to sum to 1 (not calibrated probabilities)."""
        scores = np.maximum(self._scores(X), 0.0)
        totals = scores.sum(axis=1, keepdims=True)
        uniform = np.full_like(scores, 1.0 / scores.shape[1])
        return np.where(totals > 0, scores / np.where(totals > 0, totals, 1.0), uniform)

    def predict_trajectory(self, X: ArrayLike, times: ArrayLike) -> np.ndarray:
        """Predicted classes at several training times: shape ``np.shape(times) + (m,)``."""
        scores = self._scores(X, as_real_array(times, "times"))
        return self.classes_[np.argmax(scores, axis=-1)]

    def decision_trajectory(self, X: ArrayLike, times: ArrayLike) -> np.ndarray:
        """Per-class scores at several training times: ``np.shape(times) + (m, C)``."""
        return self._scores(X, as_real_array(times, "times"))
