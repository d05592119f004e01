"""Predictions of infinite-width networks without training them.

Two questions, answered in closed form from kernel matrices (DESIGN §2):

* :func:`gp_inference` — the Bayesian posterior of the Gaussian process given by the
  NNGP kernel: test mean ``K*ᵀ K⁻¹ Y`` and covariance ``K** − K*ᵀ K⁻¹ K*``.
* :func:`gradient_descent_mse_ensemble` — the distribution of the outputs of an infinite
  ensemble of infinitely wide networks trained by gradient flow on the MSE loss, at any
  training time ``t`` (a scalar, an array, or ``None``/``np.inf`` for t = ∞). With
  ``kernel="ntk"`` every layer is trained; with ``kernel="nngp"`` only the readout.

Conventions are neural-tangents' (``predict.gradient_descent_mse_ensemble`` and
``predict.gp_inference``), so numbers are comparable:

* the loss is ½ · mean over all ``N·k`` training targets, so the flow runs at rate
  ``learning_rate · Θ / (N·k)``; ``t`` counts steps, i.e. it is in units of learning_rate;
* ``diag_reg`` adds ``diag_reg · mean(diag K)`` to the diagonal of the training kernel that is
  inverted (``diag_reg_absolute_scale=True``: adds ``diag_reg`` itself);
* multi-output targets share the kernel (Θ ⊗ I): covariances are ``(m, m)``, one for every
  output column;
* the covariance of the NTK ensemble uses the NNGP (the network at initialisation) as the
  prior, so it needs the NNGP matrices besides the NTK ones.

The training kernel is factorised once — an eigendecomposition for finite times, a Cholesky
factorisation for t = ∞ — and the factors are reused for every time and every test batch.

Training kernels must be symmetric (up to rounding, which is averaged out); any other matrix
is refused naming its worst entry. The training kernel is factorised when the solver is built,
so a numerically singular one (smallest eigenvalue below ``N · eps · λ_max``) is reported
there, once, at the caller's line: it is repaired by raising its small eigenvalues to that
floor, with a :class:`SingularKernelWarning` stating the floor. A kernel that is clearly not
positive semi-definite raises :class:`~ntkdsl.errors.NumericalError`. Predictions are never
NaN without an error.
"""
from __future__ import annotations

import os
import sys
import warnings
from functools import cached_property, lru_cache
from typing import NamedTuple

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from .errors import InputError, NumericalError, ShapeError
from .evaluation import as_real_array, kernel_name, require_memory

__all__ = [
    "Gaussian",
    "GaussianProcessPosterior",
    "GradientFlowEnsemble",
    "SingularKernelWarning",
    "gp_inference",
    "gradient_descent_mse_ensemble",
]

# Relative size of a negative eigenvalue that rounding cannot explain: below -1e-6·λ_max the
# matrix is not a kernel (a bug upstream, or a user-made matrix), so we refuse it.
_NOT_PSD_TOLERANCE = 1e-6

# Largest |K - Kᵀ| a kernel on one set of inputs may have, relative to max |K|, before it is
# refused as not symmetric. Kernels of a set against a copy of itself (net.ntk(X, X.copy()))
# differ from their transpose by rounding only: measured at most 6e-9 in float64 (ReLU NTK,
# nearly collinear rows) and 2e-7 in float32, where ntkdsl documents errors up to 1e-4.
_SYMMETRY_TOLERANCE = 1e-6
_SYMMETRY_TOLERANCE_LOW_PRECISION = 1e-3  # float32 and float16 arrays

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# N x N float64 arrays a solver allocates beyond the training kernel it is given, at the peak
# (checked against the memory available before the first of them): building the regularised
# copy K + ridge·I takes three (np.eye, its multiple, the sum), the symmetry check one fewer;
# then Cholesky keeps a factor beside that copy, and numpy's eigh needs four more (a copy of
# its input, LAPACK's workspace of about two, the eigenvectors).
_CONSTRUCTION_MATRICES = 3
_EIGEN_MATRICES = 4
_KEPT_MATRICES = 2  # the regularised copy and the Cholesky factor


def solver_memory(n: int, *, eigen: bool) -> float:
    """Bytes a solver on an N x N training kernel allocates beyond that kernel, at the
    peak: building and factorising it, with (``eigen``, for finite times) or without its
    eigendecomposition."""
    matrices = _KEPT_MATRICES + _EIGEN_MATRICES if eigen else _CONSTRUCTION_MATRICES
    return 8.0 * n * n * matrices


def _require_solver_memory(n: int, matrices: int, what: str) -> None:
    require_memory(8.0 * n * n * matrices, f"{what} of the {n} x {n} training kernel",
                   hint="use the Nyström solver, which never holds an N x N matrix: "
                        "ntkdsl.nystrom.nystrom_ensemble(arch, x_train, y_train, "
                        "n_components=2000) (or NTKRegressor(..., solver='nystrom')); or "
                        "conjugate gradients on a kernel kept on disk: "
                        "ntkdsl.krylov.cg_ensemble(np.memmap kernel, y_train)")


class SingularKernelWarning(RuntimeWarning):
    """The training kernel was numerically singular and its small eigenvalues were raised."""


class Gaussian(NamedTuple):
    """Mean and covariance of predictions.

    ``mean`` has shape ``t.shape + (m, k)`` (``(m,)`` per time for one-dimensional targets);
    ``covariance`` has shape ``t.shape + (m, m)``, shared by every output column, or is
    ``None`` when it was not asked for.
    """

    mean: np.ndarray
    covariance: np.ndarray | None


# --------------------------------------------------------------------------- validation

def _as_matrix(value, name: str) -> np.ndarray:
    """``value`` as a finite float64 2-D array, or an InputError/ShapeError naming it."""
    array = as_real_array(value, name)
    if array.ndim != 2:
        raise ShapeError(f"{name} must be a 2-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values; every entry must be finite")
    return array


def _as_symmetric(value, name: str, hint: str) -> np.ndarray:
    """A square kernel of one set of inputs against itself, symmetric up to rounding.

    Refuses a matrix whose worst asymmetry exceeds the tolerance (relative to its largest
    entry), naming the entry; otherwise returns ``(K + Kᵀ)/2``, so that the factorisations,
    which read one triangle only, use both."""
    dtype = np.dtype(getattr(value, "dtype", np.float64))
    low_precision = dtype.kind == "f" and dtype.itemsize < 8
    tolerance = _SYMMETRY_TOLERANCE_LOW_PRECISION if low_precision else _SYMMETRY_TOLERANCE
    matrix = _as_matrix(value, name)
    n = matrix.shape[0]
    _check_shape(matrix, (n, n), name, hint)
    gap = matrix - matrix.T
    np.abs(gap, out=gap)  # one N x N temporary, freed on return
    i, j = np.unravel_index(np.argmax(gap), gap.shape)
    if gap[i, j] == 0:
        return matrix  # exactly symmetric, as ntkdsl's self-kernels are: no copy
    scale = np.max(np.abs(matrix))
    if gap[i, j] > tolerance * scale:
        raise InputError(f"{name} is not symmetric: entry [{i}, {j}] is {matrix[i, j]:.17g} but "
                         f"[{j}, {i}] is {matrix[j, i]:.17g} (difference {gap[i, j]:.3e}, more "
                         f"than {tolerance:g} x the largest entry {scale:.3e})",
                         hint="it must be the kernel of one set of inputs with itself, e.g. "
                              "net.ntk(x_train); a kernel of test against training inputs "
                              "belongs in predict()")
    return (matrix + matrix.T) / 2


def _check_shape(array: np.ndarray, expected: tuple[int, int], name: str, hint: str) -> None:
    if array.shape != expected:
        raise ShapeError(f"{name} has shape {array.shape}, expected {expected} ({hint})")


def _as_targets(y_train, n_train: int) -> np.ndarray:
    """Training targets as a finite (N, k) float64 array (1-D targets become one column)."""
    y = as_real_array(y_train, "y_train")
    if y.ndim not in (1, 2):
        raise ShapeError(f"y_train must be 1-D (N,) or 2-D (N, k), got shape {y.shape}")
    if y.shape[0] != n_train:
        raise ShapeError(f"y_train has {y.shape[0]} rows but the training kernel is "
                         f"{n_train} x {n_train}; they must agree")
    if not np.all(np.isfinite(y)):
        raise InputError("y_train contains NaN or infinite values; every target must be finite")
    return y.reshape(n_train, -1)


def _check_nonnegative(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _as_times(t) -> np.ndarray | None:
    """Training times as a float64 array, or None when every time is infinite.

    ``None`` and ``np.inf`` mean t = ∞, which is solved by Cholesky instead of the
    eigendecomposition (cheaper and more precise).
    """
    if t is None:
        return None
    times = as_real_array(t, "t", "a number, an array of numbers or None (= infinity)")
    if np.any(np.isnan(times)) or np.any(times < 0):
        raise InputError(f"training times must be >= 0 (or None / np.inf for infinity), got {t!r}")
    if times.ndim == 0 and np.isinf(times):
        return None
    return times


# --------------------------------------------------------------------------- the factorisation

class _RegularisedKernel:
    """A training kernel plus its diagonal regulariser, factorised lazily and only once."""

    def __init__(self, k_train_train: np.ndarray, diag_reg: float, absolute_scale: bool):
        n = k_train_train.shape[0]
        scale = 1.0 if absolute_scale else np.trace(k_train_train) / n
        self.raw = k_train_train
        self.ridge = diag_reg * scale  # the absolute amount added to the diagonal
        self.matrix = k_train_train + self.ridge * np.eye(n)
        self._eigensystem = None

    def factorise(self) -> None:
        """Factorise now: Cholesky, or the floored eigensystem when Cholesky is unusable.

        Called at construction, so that a singular or non-PSD kernel is reported where the
        user built the solver, not at a later predict."""
        if self._cholesky is None:
            self.eigensystem  # noqa: B018 - computed (and warned about) once, then kept

    @property
    def eigensystem(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (floored, see module doc) and eigenvectors of the regularised kernel."""
        # Cached by hand, not by functools.cached_property: its frame would sit between the
        # singular-kernel warning and the user's call, and the warning would point into functools.
        if self._eigensystem is None:
            _require_solver_memory(self.matrix.shape[0], _EIGEN_MATRICES,
                                   "the eigendecomposition (for finite times)")
            evals, evecs = np.linalg.eigh(self.matrix)
            self._eigensystem = _floor_eigenvalues(evals), evecs
        return self._eigensystem

    @cached_property
    def _cholesky(self):
        """Cholesky factor, or None when the kernel is too ill-conditioned for it."""
        try:
            factor = scipy.linalg.cho_factor(self.matrix, lower=True)
        except np.linalg.LinAlgError:
            return None
        norm = np.max(np.sum(np.abs(self.matrix), axis=0))
        rcond, _ = scipy.linalg.lapack.dpocon(factor[0], norm, uplo="L")
        return factor if rcond >= self.matrix.shape[0] * np.finfo(float).eps else None

    def log_marginal_likelihood(self, y: np.ndarray) -> float:
        """log N(y | 0, K) summed over the columns of y (n, k): −½ yᵀK⁻¹y − ½ log det K
        − (n/2) log 2π per column, from the Cholesky factor (or the floored eigensystem)."""
        n, columns = y.shape
        if self._cholesky is not None:
            log_det = 2.0 * np.sum(np.log(np.diag(self._cholesky[0])))
        else:
            log_det = float(np.sum(np.log(self.eigensystem[0])))
        fit = float(np.sum(y * self.solve(y)))
        return -0.5 * fit - 0.5 * columns * log_det - 0.5 * columns * n * np.log(2 * np.pi)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``K⁻¹ rhs`` — Cholesky when well conditioned, else through the floored eigensystem."""
        if self._cholesky is not None:
            return scipy.linalg.cho_solve(self._cholesky, rhs)
        evals, evecs = self.eigensystem
        return evecs @ ((evecs.T @ rhs) / evals[:, None])

    def inverse(self) -> np.ndarray:
        """``K⁻¹`` (symmetric): LAPACK's potri from the Cholesky factor (a third of the
        work of solving against the identity), else through the floored eigensystem."""
        if self._cholesky is None:
            evals, evecs = self.eigensystem
            return (evecs / evals) @ evecs.T
        inverse, info = scipy.linalg.lapack.dpotri(self._cholesky[0], lower=True)
        if info != 0:  # pragma: no cover - the factor was checked well conditioned
            raise NumericalError(f"inverting the training kernel failed (LAPACK info {info})")
        return _symmetric_from_lower(inverse)

    def flow(self, scaled_times: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """``K⁻¹ (I − exp(−K τ)) rhs`` for every τ: shape ``(len(τ),) + rhs.shape``.

        τ = ∞ gives ``K⁻¹ rhs``; τ = 0 gives zeros.
        """
        evecs = self.eigensystem[1]
        gains = self.flow_in_eigenbasis(scaled_times)
        return np.einsum("ji,ti,ip->tjp", evecs, gains, evecs.T @ rhs, optimize=True)

    def flow_in_eigenbasis(self, scaled_times: np.ndarray) -> np.ndarray:
        """The gains ``(1 − exp(−λτ))/λ`` per time and eigenvalue, shape (T, N)."""
        evals = self.eigensystem[0]
        # -expm1(-λτ)/λ keeps precision for small λτ, where 1 − exp(−λτ) would cancel.
        return -np.expm1(-np.outer(scaled_times, evals)) / evals


# Rows (and columns) of the blocks ``_symmetric_from_lower`` copies at a time.
_MIRROR_BLOCK = 64


def _symmetric_from_lower(a: np.ndarray) -> np.ndarray:
    """``a`` (square, its own array) made symmetric in place from its lower triangle: the
    upper triangle overwritten block by block with the transposed blocks below the
    diagonal, whose strided reads stay in the cache (tril(a) + tril(a, -1).T took ten times
    as long at n = 426, in three passes and two temporaries)."""
    n = a.shape[0]
    for s in range(0, n, _MIRROR_BLOCK):
        e = min(s + _MIRROR_BLOCK, n)
        a[s:e, e:] = a[e:, s:e].T
        block = a[s:e, s:e]
        np.copyto(block, block.T, where=_upper_mask(e - s))
    return a


@lru_cache(maxsize=4)
def _upper_mask(n: int) -> np.ndarray:
    return np.triu(np.ones((n, n), dtype=bool), 1)


def _floor_eigenvalues(evals: np.ndarray) -> np.ndarray:
    """Raise numerically zero or negative eigenvalues to ``N·eps·λ_max``, with a warning.

    Refuses matrices that are not kernels (large negative eigenvalues, or all zero).
    """
    largest = evals[-1]
    if not largest > 0:
        raise NumericalError("the training kernel has no positive eigenvalue (it is zero or "
                             "negative definite); a kernel matrix must be positive semi-definite")
    if evals[0] < -_NOT_PSD_TOLERANCE * largest:
        raise NumericalError(f"the training kernel is not positive semi-definite: smallest "
                             f"eigenvalue {evals[0]:.3e} against largest {largest:.3e}; "
                             "a kernel matrix must have no negative eigenvalues")
    floor = evals.size * np.finfo(np.float64).eps * largest
    small = evals < floor
    if np.any(small):
        _warn_at_caller(
            f"the training kernel is numerically singular ({int(small.sum())} of {evals.size} "
            f"eigenvalues below {floor:.3e} = N·eps·λ_max, smallest {evals[0]:.3e}); raised "
            f"them to {floor:.3e}. Duplicate training inputs cause this; pass diag_reg > 0 "
            "to regularise explicitly.", SingularKernelWarning)
        evals = np.maximum(evals, floor)
    return evals


def _warn_at_caller(message: str, category: type[Warning]) -> None:
    """Warn with the location of the first frame outside ntkdsl: the user's line (or the
    library of theirs, such as scikit-learn, that called ntkdsl), however deep inside the
    package the warning arose."""
    frame, level = sys._getframe(1), 2  # stacklevel 2 = the caller of this helper
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


# --------------------------------------------------------------------------- gradient flow

class GradientFlowEnsemble:
    """Outputs of an infinite ensemble of wide networks trained by MSE gradient flow.

    Built by :func:`gradient_descent_mse_ensemble`; holds the factorised training kernel, so
    every call of :meth:`predict` or :meth:`predict_train` reuses it.
    """

    def __init__(self, k_train_train: ArrayLike, y_train: ArrayLike, *, kernel: str = "ntk",
                 nngp_train_train: ArrayLike | None = None, learning_rate: float = 1.0, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False):
        self.kernel = kernel_name(kernel)
        shape = np.shape(k_train_train)
        if len(shape) == 2:  # before the first N x N temporary; other shapes are refused below
            _require_solver_memory(shape[0], _CONSTRUCTION_MATRICES, "the factorisation")
        train = _as_symmetric(k_train_train, "k_train_train", "the training kernel must be square")
        n = train.shape[0]
        if n < 2:
            raise InputError(f"need at least 2 training samples, got {n}")
        self.y_train = _as_targets(y_train, n)
        self._targets_1d = np.ndim(y_train) == 1
        self.learning_rate = _check_nonnegative(learning_rate, "learning_rate")
        diag_reg = _check_nonnegative(diag_reg, "diag_reg")
        self.nngp_train_train = self._prior_train_kernel(train, nngp_train_train)
        self.factor = _RegularisedKernel(train, diag_reg, bool(diag_reg_absolute_scale))
        self.factor.factorise()
        self.k_train_train = train
        self._alpha_inf = None

    def _prior_train_kernel(self, train: np.ndarray, nngp_train_train) -> np.ndarray | None:
        """The NNGP on the training set: the training kernel itself in 'nngp' mode."""
        if self.kernel == "nngp":
            if nngp_train_train is not None:
                raise InputError("nngp_train_train is only for kernel='ntk'; with "
                                 "kernel='nngp' the training kernel is the NNGP itself")
            return train
        if nngp_train_train is None:
            return None  # means only; a covariance request will say what is missing
        # The NNGP on the training set is a kernel too: the same symmetry rule as k_train_train.
        nngp = _as_symmetric(nngp_train_train, "nngp_train_train", "same as k_train_train")
        _check_shape(nngp, train.shape, "nngp_train_train", "same as k_train_train")
        return nngp

    def attach_nngp(self, nngp_train_train: ArrayLike) -> None:
        """Supply the training-set NNGP after construction (for covariances of 'ntk' mode)."""
        if self.kernel != "ntk":
            raise InputError("attach_nngp is only for kernel='ntk'; with kernel='nngp' the "
                             "training kernel is the NNGP itself")
        self.nngp_train_train = self._prior_train_kernel(self.k_train_train, nngp_train_train)

    def log_marginal_likelihood(self) -> float:
        """log p(y_train) under the Gaussian process with the training kernel plus the
        ridge (``diag_reg`` · mean diagonal) as the noise variance — the NNGP's Bayesian
        evidence, or the NTK's used as a GP kernel — summed over target columns (as
        scikit-learn's GaussianProcessRegressor.log_marginal_likelihood_value_)."""
        return self.factor.log_marginal_likelihood(self.y_train)

    def prepare(self, t=None) -> None:
        """Factorise the training kernel now for predictions at time(s) ``t``.

        The constructor already factorises for t = ∞ (Cholesky, or the eigendecomposition of
        a singular kernel); a finite ``t`` also computes the eigendecomposition, so its cost
        and any :class:`SingularKernelWarning` come here rather than at the first predict."""
        if _as_times(t) is not None:
            self.factor.eigensystem  # noqa: B018 - computed once, then kept

    @property
    def n_train(self) -> int:
        return self.k_train_train.shape[0]

    @property
    def effective_diag_reg(self) -> float:
        """The absolute amount added to the training kernel's diagonal."""
        return self.factor.ridge

    def _scaled_times(self, times: np.ndarray) -> np.ndarray:
        # DESIGN §2: rate η/(N·k), since the loss averages over all N·k targets.
        return self.learning_rate * times.ravel() / self.y_train.size

    def _shape_mean(self, mean: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        lead = () if times is None else times.shape
        tail = mean.shape[-2:-1] if self._targets_1d else mean.shape[-2:]
        return mean.reshape(lead + tail)

    def _shape_cov(self, cov: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        lead = () if times is None else times.shape
        return cov.reshape(lead + cov.shape[-2:])

    # ------------------------------------------------------------------ test set

    def predict(self, k_test_train: ArrayLike, t: ArrayLike | None = None, *,
                nngp_test_train: ArrayLike | None = None,
                nngp_test_test: ArrayLike | None = None) -> Gaussian:
        """Mean (and covariance) of the ensemble's outputs on test inputs at time(s) ``t``.

        Args:
            k_test_train: (m, N) training kernel (the one given to the constructor) between
                test and training inputs.
            t: training time — a scalar, an array of any shape, or ``None`` / ``np.inf`` for
                t = ∞. Counted in steps: the flow runs at ``learning_rate · t``.
            nngp_test_train: (m, N) NNGP between test and training inputs; needed for the
                covariance when ``kernel='ntk'`` (omit it for 'nngp', where k_test_train is the NNGP).
            nngp_test_test: (m, m) NNGP on the test inputs. Pass it to get the covariance.

        Returns:
            :class:`Gaussian` with ``mean`` of shape ``t.shape + (m, k)`` and ``covariance``
            of shape ``t.shape + (m, m)`` (``None`` without ``nngp_test_test``).
        """
        cross = _as_matrix(k_test_train, "k_test_train")
        m = cross.shape[0]
        _check_shape(cross, (m, self.n_train), "k_test_train", "test x train")
        times = _as_times(t)
        mean = self._test_mean(cross, times)
        cov = None
        if nngp_test_test is not None:
            prior_cross, prior_test = self._prior_test_kernels(cross, nngp_test_train,
                                                               nngp_test_test)
            cov = self._shape_cov(self._test_cov(cross, prior_cross, prior_test, times), times)
        return Gaussian(self._shape_mean(mean, times), cov)

    def _test_mean(self, cross: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        if times is None:
            if self._alpha_inf is None:  # K⁻¹Y is the same for every test batch
                self._alpha_inf = self.factor.solve(self.y_train)
            return cross @ self._alpha_inf
        flowed = self.factor.flow(self._scaled_times(times), self.y_train)
        return np.einsum("mj,tjk->tmk", cross, flowed, optimize=True)

    def _prior_test_kernels(self, cross, nngp_test_train, nngp_test_test):
        m = cross.shape[0]
        prior_test = _as_symmetric(nngp_test_test, "nngp_test_test", "test x test")
        _check_shape(prior_test, (m, m), "nngp_test_test", "test x test")
        if self.kernel == "nngp":
            if nngp_test_train is not None:
                raise InputError("nngp_test_train is only for kernel='ntk'; with "
                                 "kernel='nngp', k_test_train is the NNGP itself")
            return cross, prior_test
        if self.nngp_train_train is None or nngp_test_train is None:
            raise InputError("the covariance of an NTK-trained ensemble needs the NNGP too: "
                             "pass nngp_train_train to gradient_descent_mse_ensemble and "
                             "nngp_test_train with nngp_test_test to predict")
        prior_cross = _as_matrix(nngp_test_train, "nngp_test_train")
        _check_shape(prior_cross, cross.shape, "nngp_test_train", "same as k_test_train")
        return prior_cross, prior_test

    def _test_cov(self, cross, prior_cross, prior_test, times) -> np.ndarray:
        """Covariance of the test outputs, shape (T, m, m) or (m, m) for t = ∞."""
        if times is None:
            gain_cross = self.factor.solve(cross.T)[None]  # (1, N, m)
            prior_gain = None
            if self.kernel == "nngp":
                prior_gain = gain_cross
        else:
            tau = self._scaled_times(times)
            gain_cross = self.factor.flow(tau, cross.T)
            if self.kernel == "nngp":
                # Readout-only flow: K** − K*ᵀ K⁻¹(I − e^{−2Kτ}) K*, the e^{−2Kτ} because both
                # factors of the NNGP covariance decay (neural-tangents' convention).
                prior_gain = self.factor.flow(2 * tau, cross.T)
        if self.kernel == "nngp":
            cov = prior_test - np.einsum("jm,tjl->tml", cross.T, prior_gain, optimize=True)
        else:
            cov = self._ntk_sandwich(gain_cross, prior_cross, prior_test)
        return cov[0] if times is None else cov

    def _ntk_sandwich(self, gain_cross, prior_cross, prior_test) -> np.ndarray:
        """``K** + Aᵀ K A − Aᵀ K*ᵀ − K* A`` with A = Θ⁻¹(I − e^{−Θτ}) Θ*ᵀ, per time."""
        spread = np.einsum("tjm,jk,tkl->tml", gain_cross, self.nngp_train_train, gain_cross,
                           optimize=True)
        mixed = np.einsum("tjm,jl->tml", gain_cross, prior_cross.T, optimize=True)
        return prior_test + spread - mixed - np.swapaxes(mixed, 1, 2)

    # ------------------------------------------------------------------ training set

    def predict_train(self, t: ArrayLike | None = None, *, compute_cov: bool = False) -> Gaussian:
        """The trajectory of the ensemble on the training inputs at time(s) ``t``.

        Worked out in the eigenbasis of the training kernel, so at ``diag_reg=0`` the mean
        starts at 0 and reaches ``y_train`` exactly at t = ∞, where the covariance vanishes.
        With ``diag_reg > 0`` these are the regularised predictions at the training inputs.
        ``compute_cov`` needs the NNGP on the training set when ``kernel='ntk'``.
        """
        times = _as_times(t)
        tau = np.array([np.inf]) if times is None else self._scaled_times(times)
        evals, evecs = self.factor.eigensystem
        raw_evals = evals - self.factor.ridge  # eigenvalues of the unregularised kernel
        gains = self.factor.flow_in_eigenbasis(tau)
        fitted = raw_evals * gains  # fraction of each eigen-direction learnt by time τ
        mean = np.einsum("ji,ti,ik->tjk", evecs, fitted, evecs.T @ self.y_train, optimize=True)
        cov = None
        if compute_cov:
            cov = self._train_cov(evecs, raw_evals, fitted, tau)
            cov = cov[0] if times is None else self._shape_cov(cov, times)
        return Gaussian(self._shape_mean(mean[0] if times is None else mean, times), cov)

    def _train_cov(self, evecs, raw_evals, fitted, tau) -> np.ndarray:
        if self.kernel == "nngp":
            doubled = self.factor.flow_in_eigenbasis(2 * tau)
            return np.einsum("ji,ti,ki->tjk", evecs, raw_evals - raw_evals**2 * doubled,
                             evecs, optimize=True)
        if self.nngp_train_train is None:
            raise InputError("the covariance of an NTK-trained ensemble needs the NNGP: pass "
                             "nngp_train_train to gradient_descent_mse_ensemble")
        # (I − A) K (I − A) with A = Θ_reg⁻¹(I − e^{−Θτ})Θ, symmetric in Θ's eigenbasis.
        remaining = np.einsum("ji,ti,ki->tjk", evecs, 1.0 - fitted, evecs, optimize=True)
        return np.einsum("tjk,kl,tml->tjm", remaining, self.nngp_train_train, remaining,
                         optimize=True)


def gradient_descent_mse_ensemble(k_train_train: ArrayLike, y_train: ArrayLike, *, kernel: str = "ntk",
                                  nngp_train_train: ArrayLike | None = None, learning_rate: float = 1.0,
                                  diag_reg: float = 0.0,
                                  diag_reg_absolute_scale: bool = False) -> GradientFlowEnsemble:
    """Closed-form gradient-flow predictions of an infinite ensemble of wide networks.

    Args:
        k_train_train: (N, N) kernel that drives training: the NTK (``kernel="ntk"``, every
            layer trained) or the NNGP (``kernel="nngp"``, only the readout trained). It must
            be symmetric to 1e-6 of its largest entry (1e-3 for float32 arrays).
        y_train: (N,) or (N, k) training targets.
        kernel: ``"ntk"`` or ``"nngp"`` (any case), naming what ``k_train_train`` is.
        nngp_train_train: (N, N) NNGP on the training set; only for ``kernel="ntk"``, and
            only needed for covariances.
        learning_rate: step size; times are in steps, so only ``learning_rate · t`` matters.
        diag_reg: added to the diagonal, times ``mean(diag k_train_train)`` unless
            ``diag_reg_absolute_scale``.
        diag_reg_absolute_scale: take ``diag_reg`` as an absolute amount.

    Returns:
        A :class:`GradientFlowEnsemble`; call ``.predict(k_test_train, t, ...)`` for test
        outputs and ``.predict_train(t)`` for the training-set trajectory.

    Example:
        >>> ens = gradient_descent_mse_ensemble(ntk_dd, y, nngp_train_train=nngp_dd)
        >>> mean, cov = ens.predict(ntk_td, t=[1.0, 10.0, np.inf],
        ...                         nngp_test_train=nngp_td, nngp_test_test=nngp_tt)
    """
    return GradientFlowEnsemble(k_train_train, y_train, kernel=kernel,
                                nngp_train_train=nngp_train_train, learning_rate=learning_rate,
                                diag_reg=diag_reg, diag_reg_absolute_scale=diag_reg_absolute_scale)


# --------------------------------------------------------------------------- Bayesian posterior

class GaussianProcessPosterior:
    """Posterior of the Gaussian process with a given prior kernel, conditioned on data.

    Built by :func:`gp_inference`; the training kernel is Cholesky-factorised once.
    """

    def __init__(self, k_train_train, y_train, diag_reg=0.0, diag_reg_absolute_scale=False):
        # The posterior is the readout-only flow at t = ∞ (neural-tangents' identity).
        self._flow = GradientFlowEnsemble(k_train_train, y_train, kernel="nngp",
                                          diag_reg=diag_reg,
                                          diag_reg_absolute_scale=diag_reg_absolute_scale)

    def predict(self, k_test_train, k_test_test=None) -> Gaussian:
        """Posterior mean ``K*ᵀK⁻¹Y`` and, given ``k_test_test``, covariance
        ``K** − K*ᵀK⁻¹K*`` on test inputs (shapes as in :class:`Gaussian`)."""
        return self._flow.predict(k_test_train, None, nngp_test_test=k_test_test)


def gp_inference(k_train_train: ArrayLike, y_train: ArrayLike, diag_reg: float = 0.0,
                 diag_reg_absolute_scale: bool = False) -> GaussianProcessPosterior:
    """Bayesian inference with a kernel as the Gaussian-process prior (normally the NNGP).

    Args:
        k_train_train: (N, N) prior kernel on the training inputs.
        y_train: (N,) or (N, k) targets.
        diag_reg: observation-noise variance relative to ``mean(diag k_train_train)``
            (absolute with ``diag_reg_absolute_scale=True``).

    Returns:
        A :class:`GaussianProcessPosterior`; ``.predict(k_test_train, k_test_test)``.
    """
    return GaussianProcessPosterior(k_train_train, y_train, diag_reg, diag_reg_absolute_scale)
