"""Predictions on very many training points from Nyström features (issue 16).

The exact solvers of :mod:`ntkdsl.predict` factorise the N x N training kernel: O(N²) memory
and O(N³) time. Here m landmark points Z, a subset of the training inputs, give the features

    Φ = K(X, Z) L⁻ᵀ,   K(Z, Z) = L Lᵀ,

and the approximate kernel K̃ = Φ Φᵀ, which equals K on the landmarks and K itself when every
training input is a landmark. Gradient flow of the linear model in feature space is *exactly*
the flow of the network ensemble under K̃, so every prediction of ``predict`` follows from the
m x m matrix ``C = ΦᵀΦ = V diag(λ) Vᵀ`` and ``ΦᵀY``:

    f(t) = Φ* V diag(g) Vᵀ ΦᵀY,   g = −expm1(−s μ)/μ,   μ = λ + ridge,   s = η t/(N k),

(t = ∞: g = 1/μ, least squares in feature space with the ridge ``diag_reg``), by the identity
``Φᵀ h(ΦΦᵀ + r) = h(ΦᵀΦ + r) Φᵀ``. Variances and covariances the same way (see
:class:`NystromEnsemble`). Conventions are those of ``gradient_descent_mse_ensemble`` and
``gp_inference``; the ridge is ``diag_reg`` times the mean diagonal of K̃ (``trace C / N``),
which is the exact kernel's mean diagonal when m = N.

The features are computed in blocks of rows by the network's own (tiled, threaded) evaluation
and consumed block by block: C and ΦᵀY accumulate, Φ is never held whole. Memory is
O(block · m + m²), time O(N m d) for the kernel rows plus O(N m²) for the triangular solve and
C (two BLAS-3 calls per block), then one m x m eigendecomposition.

Landmarks: a uniform sample (seeded), or approximate ridge-leverage sampling (one extra pass
with a uniform pilot sample, Musco & Musco 2017), or rows given by the caller. Duplicate
landmark rows would make K(Z, Z) singular: they are dropped with a warning. A K(Z, Z) that is
numerically singular anyway gets the smallest diagonal jitter that makes its Cholesky factor
well conditioned, with a :class:`~ntkdsl.predict.SingularKernelWarning` saying how much.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from . import network
from .dask import map_row_chunks, sum_over_row_chunks
from .errors import InputError, NumericalError, ShapeError
from .evaluation import as_real_array, kernel_name, require_memory
from .evaluation.dask_blocks import is_dask_array
from .kinds import KINDS
from .predict import (
    Gaussian,
    SingularKernelWarning,
    _as_targets,
    _as_times,
    _check_nonnegative,
    _floor_eigenvalues,
    _warn_at_caller,
)
from .progress import progress_bar

__all__ = ["DuplicateLandmarkWarning", "NystromEnsemble", "NystromFeatures", "nystrom_ensemble",
           "select_landmarks"]

# Working memory of one block of rows: its kernel rows against the landmarks, per kernel, as
# float64 (the features overwrite them in place). 64 MB keeps the BLAS calls large (a block
# of 4,096 rows at m = 2,000) and the block small beside the m x m matrices.
_BLOCK_BYTES = 64 * 2**20
_MIN_BLOCK_ROWS = 64

# m x m float64 matrices held at the peak: C, its eigenvectors, eigh's copy and workspace,
# the Cholesky factor (two with the NNGP's for an NTK covariance, plus ΦᵀΨ).
_SQUARE_MATRICES = 8

# Jitter for a numerically singular K(Z, Z): first m·eps·mean diagonal, then ten times more
# until its Cholesky factor has a reciprocal condition number above m·eps; refused beyond
# this fraction of the mean diagonal (then the kernel is not positive definite on Z).
_MAX_JITTER = 1e-2


class DuplicateLandmarkWarning(UserWarning):
    """Landmarks held identical rows; the duplicates were dropped."""


# --------------------------------------------------------------------------- kernel rows

class _KernelRows:
    """Kernel blocks K(x1, x2) of an architecture: a compiled network's own tiled evaluation
    (no progress bar of its own: the pass has one), or any object's ``nngp``/``ntk``."""

    def __init__(self, arch):
        self.source = network.compile(arch) if isinstance(arch, str) else arch

    def __call__(self, kinds: tuple[str, ...], x1, x2=None) -> dict[str, np.ndarray]:
        net = self.source
        if not isinstance(net, network.Network):
            args = (x1,) if x2 is None else (x1, x2)
            return {kind: np.asarray(getattr(net, kind)(*args), dtype=np.float64)
                    for kind in kinds}
        if len(kinds) == 2:
            return dict(zip(KINDS, net.kernels(x1, x2, progress=False)))
        return {kinds[0]: getattr(net, kinds[0])(x1, x2, progress=False)}

    def diagonal(self, kind: str, x) -> np.ndarray:
        """K(x_i, x_i) for every row: the network's exact diagonal, else small diagonal blocks."""
        if isinstance(self.source, network.Network):
            return self.source.diagonal(x)[KINDS.index(kind)]
        step = 64  # a block's diagonal costs step² entries: N·64 in all
        return np.concatenate([np.diagonal(self((kind,), x[i:i + step])[kind])
                               for i in range(0, len(x), step)])


def _block_rows(m: int, kernels: int) -> int:
    return max(_MIN_BLOCK_ROWS, _BLOCK_BYTES // (8 * m * kernels))


def _blocks(n: int, rows: int, progress, what: str):
    """Start indices of the blocks, with a progress bar over the rows (by ntkdsl's rule)."""
    bar = progress_bar(progress, n, desc=what, unit="rows", delay=2.0)
    try:
        for start in range(0, n, rows):
            yield start
            if bar is not None:
                bar.update(min(rows, n - start))
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------- landmarks

def _check_components(n_components, n: int) -> int:
    if isinstance(n_components, (bool, np.bool_)) or not isinstance(n_components,
                                                                    (int, np.integer)):
        raise InputError(f"n_components must be a whole number of landmarks, got "
                         f"{n_components!r}")
    m = int(n_components)
    if m < 1 or m > n:
        raise InputError(f"n_components must be from 1 to the number of training samples "
                         f"({n}), got {m}",
                         hint="the landmarks are a subset of the training inputs; at "
                              f"n_components={n} the Nyström solver is the exact one")
    return m


def select_landmarks(x: np.ndarray, n_components: int, *, method: str = "uniform",
                     seed: int | None = 0, arch=None, kernel: str = "ntk", progress=None,
                     ) -> np.ndarray:
    """Indices (sorted) of ``n_components`` landmark rows of ``x``.

    ``method="uniform"``: a uniform sample without replacement (``seed``).
    ``method="leverage"``: approximate ridge-leverage sampling — a uniform pilot sample of the
    same size gives every row the score ``(K_ii − k_iᵀ(K_ZZ + λ(m/N) I)⁻¹k_i)/λ`` (Musco &
    Musco 2017, one pass over the rows), with λ = trace(K)/m, the ridge at which the
    effective dimension is at most m; rows are then drawn without replacement in proportion
    to their scores. Needs ``arch`` (and ``kernel``) to evaluate the kernel.
    """
    n = len(x)
    m = _check_components(n_components, n)
    rng = np.random.default_rng(seed)
    if method == "uniform":
        return np.sort(rng.choice(n, m, replace=False))
    if method != "leverage":
        raise InputError(f"landmarks must be 'uniform', 'leverage' or an array of row "
                         f"indices, got {method!r}")
    if arch is None:
        raise InputError("leverage sampling evaluates the kernel: pass arch=")
    scores = _leverage_scores(x, np.sort(rng.choice(n, m, replace=False)),
                              _KernelRows(arch), kernel_name(kernel), progress)
    weights = np.maximum(scores, 0.0) + np.finfo(np.float64).tiny
    return np.sort(rng.choice(n, m, replace=False, p=weights / weights.sum()))


def _leverage_scores(x, pilot, rows: _KernelRows, kind: str, progress) -> np.ndarray:
    n, m = len(x), len(pilot)
    diagonal = rows.diagonal(kind, x)
    ridge = diagonal.sum() / m
    pilot_kernel = rows((kind,), x[pilot])[kind]
    factor = _jittered_cholesky(pilot_kernel + ridge * m / n * np.eye(m), "the pilot sample")[0]
    scores = np.empty(n)
    step = _block_rows(m, 1)
    for start in _blocks(n, step, progress, "leverage scores"):
        block = rows((kind,), x[start:start + step], x[pilot])[kind]
        solved = scipy.linalg.solve_triangular(factor, block.T, lower=True, overwrite_b=True,
                                               check_finite=False)
        scores[start:start + step] = (diagonal[start:start + step]
                                      - np.einsum("ij,ij->j", solved, solved)) / ridge
    return scores


def _distinct(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The landmark indices with duplicate rows dropped (first of each kept), with a warning."""
    flat = x[indices].reshape(len(indices), -1)
    _, first = np.unique(flat, axis=0, return_index=True)
    if len(first) == len(indices):
        return indices
    kept = indices[np.sort(first)]
    _warn_at_caller(f"{len(indices) - len(kept)} of the {len(indices)} landmarks repeat the "
                    f"rows of others (identical inputs); dropped them and use {len(kept)} "
                    "distinct landmarks (duplicates would make K(Z, Z) singular)",
                    DuplicateLandmarkWarning)
    return kept


def _jittered_cholesky(matrix: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    """(lower Cholesky factor of ``matrix + jitter·I``, jitter): no jitter when ``matrix`` is
    well conditioned, else the smallest power-of-ten multiple of m·eps·mean diagonal that
    makes it so, with a warning stating the amount."""
    m = matrix.shape[0]
    scale = np.trace(matrix) / m
    if not scale > 0:
        raise NumericalError(f"the kernel of {what} has no positive diagonal entry; it must be "
                             "positive definite on the landmarks")
    jitter = 0.0
    while jitter <= _MAX_JITTER * scale:
        factor = _well_conditioned_factor(matrix, jitter)
        if factor is not None:
            if jitter > 0:
                _warn_at_caller(f"the kernel of {what} ({m} x {m}) is numerically singular; "
                                f"added jitter {jitter:.3e} (= {jitter / scale:.1e} x its mean "
                                "diagonal) to its diagonal", SingularKernelWarning)
            return factor, jitter
        jitter = m * np.finfo(np.float64).eps * scale if jitter == 0 else 10 * jitter
    raise NumericalError(f"the kernel of {what} ({m} x {m}) is not positive definite even with "
                         f"jitter {_MAX_JITTER:g} x its mean diagonal",
                         hint="fewer landmarks, or a kernel without duplicate inputs")


def _well_conditioned_factor(matrix: np.ndarray, jitter: float) -> np.ndarray | None:
    shifted = matrix + jitter * np.eye(matrix.shape[0])
    try:
        factor = scipy.linalg.cholesky(shifted, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    norm = np.max(np.sum(np.abs(shifted), axis=0))
    rcond, _ = scipy.linalg.lapack.dpocon(factor, norm, uplo="L")
    return factor if rcond >= matrix.shape[0] * np.finfo(np.float64).eps else None


# --------------------------------------------------------------------------- features

@dataclass(frozen=True)
class NystromFeatures:
    """Landmarks Z and the Cholesky factor L of K(Z, Z) (+ jitter) of one kernel:
    ``transform`` turns kernel rows K(x, Z) into features K(x, Z) L⁻ᵀ."""

    kind: str
    landmarks: np.ndarray
    factor: np.ndarray
    jitter: float

    @classmethod
    def fit(cls, rows: _KernelRows, kind: str, landmarks: np.ndarray,
            kernel_zz: np.ndarray | None = None) -> NystromFeatures:
        if kernel_zz is None:
            kernel_zz = rows((kind,), landmarks)[kind]
        factor, jitter = _jittered_cholesky(kernel_zz, f"the {len(landmarks)} landmarks")
        return cls(kind, landmarks, factor, jitter)

    @property
    def n_components(self) -> int:
        return self.factor.shape[0]

    def transform_rows(self, kernel_rows: np.ndarray) -> np.ndarray:
        """Features (m, n) — transposed, overwriting ``kernel_rows`` (n, m) in place."""
        return scipy.linalg.solve_triangular(self.factor, kernel_rows.T, lower=True,
                                             overwrite_b=True, check_finite=False)


@dataclass
class _Moments:
    """What the pass over the training rows accumulates: C = ΦᵀΦ, ΦᵀY (and ΦᵀΨ, the NTK
    features against the NNGP's, for the covariance of an NTK ensemble)."""

    gram: np.ndarray
    targets: np.ndarray
    cross: np.ndarray | None

    def __add__(self, other: _Moments) -> _Moments:
        """The moments of two sets of rows together (a sum over row chunks on a cluster)."""
        return _Moments(self.gram + other.gram, self.targets + other.targets,
                        None if self.cross is None else self.cross + other.cross)


def _accumulate(x, y, rows: _KernelRows, features: dict[str, NystromFeatures], kind: str,
                progress) -> _Moments:
    m = features[kind].n_components
    kinds = tuple(features)
    gram = np.zeros((m, m), order="F")
    targets = np.zeros((m, y.shape[1]))
    cross = np.zeros((m, features["nngp"].n_components)) if len(kinds) == 2 else None
    step = _block_rows(m, len(kinds))
    landmarks = features[kind].landmarks
    for start in _blocks(len(x), step, progress, "Nyström features"):
        block = rows(kinds, x[start:start + step], landmarks)
        phi = features[kind].transform_rows(block[kind])  # (m, rows)
        # C += Φ_bᵀ Φ_b on one triangle (half the flops of a GEMM), mirrored at the end.
        gram = scipy.linalg.blas.dsyrk(1.0, phi, beta=1.0, c=gram, overwrite_c=True, lower=1)
        targets += phi @ y[start:start + step]
        if cross is not None:
            cross += phi @ features["nngp"].transform_rows(block["nngp"]).T
    lower = np.tril(gram)
    return _Moments(lower + np.tril(lower, -1).T, targets, cross)


# --------------------------------------------------------------------------- the ensemble

class NystromEnsemble:
    """Gradient-flow ensemble (and GP posterior) of the Nyström-approximated kernel.

    Built by :func:`nystrom_ensemble`. Keeps only m x m matrices (and the landmarks):
    ``predict(x_test, t)`` evaluates the test rows against the landmarks in blocks;
    ``with_diag_reg(r)`` is the same fit at another ridge.

    Accuracy: the flow under K̃ follows the exact one while the number of eigen-directions
    the exact flow has learned, Σ (1 − e^{−sλ}), is well below m; at t = ∞ on a kernel of
    effective dimension near N (a flat spectrum) it cannot, whatever the landmarks (README,
    "Regression on a million points"): there the CG solver of :mod:`ntkdsl.krylov` is exact.
    """

    def __init__(self, rows: _KernelRows, features: dict[str, NystromFeatures], kind: str,
                 moments: _Moments, n_train: int, targets_1d: bool, learning_rate: float,
                 diag_reg: float, absolute_scale: bool):
        self._rows = rows
        self.features = features
        self.kernel = kind
        self.n_train = n_train
        self._targets_1d = targets_1d
        self._columns = moments.targets.shape[1]
        self.learning_rate = learning_rate
        raw, vectors = np.linalg.eigh(moments.gram)
        self.raw_eigenvalues = np.maximum(raw, 0.0)  # of K̃ = ΦΦᵀ (and C), rounding clipped
        self.eigenvectors = vectors
        self._projected_targets = vectors.T @ moments.targets  # Vᵀ ΦᵀY
        self._cross = moments.cross
        self._set_ridge(diag_reg, absolute_scale)

    def _set_ridge(self, diag_reg: float, absolute_scale: bool) -> None:
        scale = 1.0 if absolute_scale else self.raw_eigenvalues.sum() / self.n_train
        self.effective_diag_reg = diag_reg * scale
        self.eigenvalues = _floor_eigenvalues(self.raw_eigenvalues + self.effective_diag_reg)

    def with_diag_reg(self, diag_reg: float, *, absolute_scale: bool = False
                      ) -> NystromEnsemble:
        """The same ensemble with another ``diag_reg`` (relative to K̃'s mean diagonal, or
        absolute), without another pass over the training rows: the ridge shifts the
        eigenvalues of C and leaves its eigenvectors, so choosing it (say on validation
        data) costs m operations per value."""
        ridge = _check_nonnegative(diag_reg, "diag_reg")
        other = copy.copy(self)
        other._set_ridge(ridge, bool(absolute_scale))
        return other

    @property
    def n_components(self) -> int:
        return self.features[self.kernel].n_components

    @property
    def landmarks(self) -> np.ndarray:
        return self.features[self.kernel].landmarks

    def _gains(self, times: np.ndarray | None, factor: float = 1.0) -> np.ndarray:
        """(T, m) gains ``−expm1(−sμ)/μ`` per time (T = 1 and 1/μ for t = ∞)."""
        mu = self.eigenvalues
        if times is None:
            return (1.0 / mu)[None]
        scaled = factor * self.learning_rate * times.ravel() / (self.n_train * self._columns)
        return -np.expm1(-np.outer(scaled, mu)) / mu

    def predict(self, x_test: ArrayLike, t: ArrayLike | None = None, *,
                compute_cov: bool = False, variance_only: bool = False) -> Gaussian:
        """Ensemble mean (and covariance) on test inputs at time(s) ``t`` (None = ∞).

        Shapes as :meth:`ntkdsl.predict.GradientFlowEnsemble.predict`: mean
        ``t.shape + (n, k)`` (``(n,)`` per time for 1-D targets); covariance
        ``t.shape + (n, n)`` with ``compute_cov``, or only its diagonal ``t.shape + (n,)``
        with ``variance_only``. Test rows are evaluated against the landmarks in blocks; the
        test prior (the NNGP on the test inputs, exact) is the true kernel, so at m = N the
        covariance is the exact solver's (Nyström's "deterministic training conditional").
        """
        if is_dask_array(x_test):
            return self._predict_chunks(x_test, t, compute_cov, variance_only)
        x_test = np.asarray(x_test)
        times = _as_times(t)
        if compute_cov or variance_only:
            self._check_covariance()
        lead = () if times is None else times.shape
        n = len(x_test)
        if variance_only:
            require_memory(8.0 * n * (self._columns + 1) * max(1, int(np.prod(lead))),
                           f"the predictions on {n} test inputs", hint="predict in batches")
        kinds = KINDS if (compute_cov or variance_only) and self.kernel == "ntk" \
            else (self.kernel,)
        step = _block_rows(self.n_components, len(kinds))
        if compute_cov and n > step:  # before any kernel entry
            raise InputError(f"the full covariance of {n} test inputs is more than one block "
                             f"({step} rows at {self.n_components} landmarks)",
                             hint="use variance_only=True, or predict in smaller batches")
        parts = [self._predict_block(x_test[s:s + step], times, kinds, compute_cov,
                                     variance_only) for s in range(0, n, step)]
        mean = np.concatenate([p[0] for p in parts], axis=1)
        mean = mean.reshape(lead + mean.shape[1:2] + (() if self._targets_1d else mean.shape[2:]))
        if variance_only:
            var = np.concatenate([p[1] for p in parts], axis=1)
            return Gaussian(mean, var.reshape(lead + var.shape[1:]))
        if compute_cov:
            return Gaussian(mean, parts[0][1].reshape(lead + (n, n)))
        return Gaussian(mean, None)

    def _predict_chunks(self, x_test, t, compute_cov: bool, variance_only: bool) -> Gaussian:
        """``predict`` of a Dask array of test inputs: lazy Dask arrays of the mean (and the
        variances), one task per row chunk on the workers."""
        if compute_cov:
            raise InputError("the full covariance of a Dask array of test inputs is N x N: "
                             "not computed", hint="use variance_only=True for the variances")
        times = _as_times(t)
        lead = () if times is None else times.shape
        tail = () if self._targets_1d else (self._columns,)

        def shapes(rows: int) -> list[tuple]:
            return [lead + (rows,) + tail] + ([lead + (rows,)] if variance_only else [])

        arrays = map_row_chunks(_predict_chunk, x_test, shapes, self, t, variance_only,
                                axis=len(lead))
        return Gaussian(arrays[0], arrays[1] if variance_only else None)

    def _check_covariance(self) -> None:
        if self.kernel == "ntk" and self._cross is None:
            raise InputError("the covariance of an NTK-trained ensemble needs the NNGP's "
                             "features too: build it with nystrom_ensemble(..., "
                             "covariance=True)")

    def _predict_block(self, x, times, kinds, compute_cov, variance_only):
        block = self._rows(kinds, x, self.landmarks)
        phi = self.features[self.kernel].transform_rows(block[self.kernel]).T  # (n, m)
        rotated = phi @ self.eigenvectors  # Φ* V
        gains = self._gains(times)
        mean = np.einsum("nm,tm,mk->tnk", rotated, gains, self._projected_targets, optimize=True)
        if not (compute_cov or variance_only):
            return mean, None
        prior = (self._rows.diagonal("nngp", x) if variance_only
                 else self._rows(("nngp",), x)["nngp"])
        if self.kernel == "nngp":
            # K** − Φ* V diag(λ g(2τ)) Vᵀ Φ*ᵀ: both factors of the NNGP covariance decay.
            explained = self.raw_eigenvalues * self._gains(times, 2.0)
            if variance_only:
                return mean, prior - np.einsum("nm,tm->tn", rotated**2, explained)
            return mean, prior - np.einsum("nm,tm,lm->tnl", rotated, explained, rotated)
        return mean, self._ntk_covariance(block["nngp"], rotated, gains, prior, variance_only)

    def _ntk_covariance(self, nngp_rows, rotated, gains, prior, variance_only):
        """K** + Aᵀ K A − Aᵀ K*ᵀ − K* A with A = Φ V diag(g) Vᵀ Φ*ᵀ and K ≈ ΨΨᵀ, K* ≈ Ψ*Ψᵀ:
        with H = (ΦᵀΨ)ᵀ V diag(g) (Φ* V)ᵀ this is K** − Ψ*Ψ*ᵀ + (Ψ* − Hᵀ)(Ψ* − Hᵀ)ᵀ."""
        psi = self.features["nngp"].transform_rows(nngp_rows).T  # (n, m_K)
        mixed = self._cross.T @ self.eigenvectors  # (ΦᵀΨ)ᵀ V
        residual = psi[None] - np.einsum("km,tm,nm->tnk", mixed, gains, rotated, optimize=True)
        if variance_only:
            return prior - np.sum(psi**2, axis=1) + np.sum(residual**2, axis=2)
        return prior - psi @ psi.T + np.einsum("tnk,tlk->tnl", residual, residual)


def _predict_chunk(x, ensemble: NystromEnsemble, t, variance_only: bool) -> tuple:
    """The mean (and variances) of one chunk of test rows, on a worker."""
    result = ensemble.predict(x, t, variance_only=variance_only)
    return (result.mean,) + ((result[1],) if variance_only else ())


def nystrom_ensemble(arch, x_train: ArrayLike, y_train: ArrayLike, n_components: int, *,
                     kernel: str = "ntk", landmarks="uniform", seed: int | None = 0,
                     learning_rate: float = 1.0, diag_reg: float = 0.0,
                     diag_reg_absolute_scale: bool = False, covariance: bool = False,
                     progress: bool | None = None) -> NystromEnsemble:
    """Gradient-flow ensemble (``kernel="ntk"``) or readout-only flow / GP posterior
    (``kernel="nngp"``) of ``arch`` on N training points through m = ``n_components``
    Nyström landmarks, in O(N m (d + m)) time and O(block · m + m²) memory.

    Args:
        arch: an architecture string, a compiled network, or any object with
            ``nngp(x1, x2=None)`` and ``ntk(x1, x2=None)``.
        x_train: (N, d) training inputs (images (N, ..., C) for a convolutional network).
        y_train: (N,) or (N, k) targets.
        n_components: m, from 1 to N; m = N with ``landmarks`` = every row is the exact solver.
        landmarks: ``"uniform"`` (seeded sample), ``"leverage"`` (approximate ridge-leverage
            sampling, one more pass), or an array of distinct row indices of ``x_train``.
        covariance: for ``kernel="ntk"``, also the NNGP features (same landmarks), so that
            ``predict`` can give covariances; costs the NNGP rows beside the NTK ones.
        learning_rate, diag_reg, diag_reg_absolute_scale: as in
            :func:`ntkdsl.predict.gradient_descent_mse_ensemble` (the ridge scales with the
            mean diagonal of the approximate kernel).
        progress: a progress bar over the passes (None: on a terminal only).
    """
    kind = kernel_name(kernel)
    distributed = is_dask_array(x_train)
    x = x_train if distributed else as_real_array(x_train, "x_train")
    if x.ndim < 2:
        raise ShapeError(f"x_train must have one row per sample (2-D or images), got shape "
                         f"{x.shape}")
    n = len(x)
    if n < 2:
        raise InputError(f"need at least 2 training samples, got {n}")
    y = _dask_targets(y_train, n) if is_dask_array(y_train) else _as_targets(y_train, n)
    rate = _check_nonnegative(learning_rate, "learning_rate")
    ridge = _check_nonnegative(diag_reg, "diag_reg")
    if distributed:
        indices, z = _dask_landmarks(x, n_components, landmarks, seed)
    else:
        indices = _landmark_indices(x, n_components, landmarks, seed, arch, kind, progress)
        z = x[indices]
    m = len(indices)
    kinds = KINDS if (covariance and kind == "ntk") else (kind,)
    require_memory(8.0 * (m * m * _SQUARE_MATRICES + min(n, _block_rows(m, len(kinds))) * m
                          * len(kinds) * 2),
                   f"the Nyström solver with {m} landmarks",
                   hint="use fewer landmarks (n_components)")
    rows = _KernelRows(arch)
    kernel_zz = rows(kinds, z)
    features = {k: NystromFeatures.fit(rows, k, z, kernel_zz[k]) for k in kinds}
    if distributed:  # a sum over the row chunks, on the workers
        moments = sum_over_row_chunks(_accumulate, x, y, rows, features, kind, False)
    else:
        moments = _accumulate(x, y, rows, features, kind, progress)
    return NystromEnsemble(rows, features, kind, moments, n, np.ndim(y_train) == 1, rate,
                           ridge, bool(diag_reg_absolute_scale))


def _dask_landmarks(x, n_components, landmarks, seed) -> tuple[np.ndarray, np.ndarray]:
    """(indices, rows) of the landmarks of the Dask array ``x``: a uniform sample or the
    rows given, gathered to this process, duplicate rows dropped."""
    if isinstance(landmarks, str) and landmarks != "uniform":
        raise InputError(f"landmarks={landmarks!r} is not available for Dask arrays: "
                         "leverage sampling needs a pass over every row with a pilot sample",
                         hint="use landmarks='uniform' or an array of row indices")
    indices = (select_landmarks(x, n_components, seed=seed) if isinstance(landmarks, str)
               else _given_landmarks(len(x), n_components, landmarks))
    rows = as_real_array(x[indices].compute(), "the landmark rows of x_train")
    kept = _distinct(rows, np.arange(len(indices)))
    return indices[kept], rows[kept]


def _dask_targets(y, n: int):
    """The targets as a Dask array of shape (n, k) (a 1-D y as one column)."""
    if y.shape[0] != n or y.ndim > 2:
        raise ShapeError(f"y_train has shape {y.shape}; it needs one row (or value) per "
                         f"training sample ({n})")
    return y.reshape(n, 1) if y.ndim == 1 else y


def _landmark_indices(x, n_components, landmarks, seed, arch, kind, progress) -> np.ndarray:
    if isinstance(landmarks, str):
        indices = select_landmarks(x, n_components, method=landmarks, seed=seed, arch=arch,
                                   kernel=kind, progress=progress)
    else:
        indices = _given_landmarks(len(x), n_components, landmarks)
    return _distinct(x, indices)


def _given_landmarks(n: int, n_components, landmarks) -> np.ndarray:
    """The landmark row indices a caller gave, checked against the n training rows."""
    indices = np.asarray(landmarks)
    if indices.ndim != 1 or indices.dtype.kind not in "iu" or indices.size == 0:
        raise InputError("landmarks must be 'uniform', 'leverage' or a non-empty 1-D "
                         "array of row indices of x_train")
    if np.any(indices < 0) or np.any(indices >= n):
        raise InputError(f"landmark indices must be from 0 to {n - 1} (rows of "
                         f"x_train), got {indices.min()} .. {indices.max()}")
    if len(np.unique(indices)) != indices.size:
        raise InputError("landmark indices repeat; give each row at most once")
    if n_components is not None and n_components != indices.size:
        raise InputError(f"n_components={n_components} but {indices.size} landmark "
                         "indices were given; they must agree")
    return indices
