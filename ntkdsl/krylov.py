"""Exact predictions by Krylov methods on a stored training kernel (issue 16).

For mid-size N the N x N kernel fits in memory or on disk (``np.memmap``), but its O(N³)
factorisation is too slow. Here the kernel is only multiplied by vectors, block of rows by
block of rows (so a memmap is streamed from disk), and

* t = ∞: ``(K + ridge I)⁻¹ Y`` by preconditioned conjugate gradients
  (``scipy.sparse.linalg.cg``), one target column at a time, with the randomized Nyström
  preconditioner of Frangella, Tropp & Udell (2023) — Falkon's idea: with K̃ = U Λ̂ Uᵀ the
  rank-r Nyström approximation from r uniform landmark columns,
  ``P⁻¹ = (λ̂_r + ridge) U (Λ̂ + ridge)⁻¹ Uᵀ + (I − U Uᵀ)``, which makes the spectrum of
  ``P⁻¹(K + ridge)`` cluster near 1 and stays defined at ridge 0;
* finite t: ``K⁻¹(I − e^{−sK}) Y`` with ``s = η t/(N k)`` as the top block of
  ``exp(s [[−K, Y], [0, 0]]) [0; I]`` (the integral of e^{−uK} from 0 to s), by
  ``scipy.sparse.linalg.expm_multiply`` on that operator, times in increasing order, each
  continuing from the last. Its cost grows with ``s · ‖K‖₁``: products with the kernel are
  budgeted before any work (``max_products``), beyond which the Nyström solver is the way.

Conventions (loss, times, ``diag_reg``) are those of :mod:`ntkdsl.predict`; the means equal
the exact solver's to the CG tolerance. Non-convergence within ``maxiter`` iterations is a
:class:`ConvergenceWarning` stating the residual reached.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse.linalg
from numpy.typing import ArrayLike

from .errors import InputError, ShapeError
from .evaluation import kernel_name, release_pages
from .nystrom import _check_components, _jittered_cholesky
from .predict import (
    Gaussian,
    _as_matrix,
    _as_targets,
    _as_times,
    _check_nonnegative,
    _check_shape,
    _warn_at_caller,
)

__all__ = ["ConvergenceWarning", "KrylovEnsemble", "cg_ensemble"]

# Rows of the stored kernel per block of a product: 32 MB of float64 at N = 1,000.
_BLOCK_BYTES = 32 * 2**20

# expm_multiply takes about ‖sA‖₁ products (more for accuracy, scipy's choice of degree):
# this many is the default budget for the largest time, checked before any work.
MAX_PRODUCTS = 5_000


class ConvergenceWarning(RuntimeWarning):
    """Conjugate gradients stopped at its iteration budget before reaching its tolerance."""


class _StoredKernel(scipy.sparse.linalg.LinearOperator):
    """``K + ridge·I`` for a stored symmetric K (array or memmap), multiplied in row blocks."""

    def __init__(self, kernel: np.ndarray, diag_reg: float, absolute_scale: bool):
        n = kernel.shape[0]
        super().__init__(np.float64, (n, n))
        self.kernel = kernel
        self.rows = max(1, _BLOCK_BYTES // (8 * n))
        raw_trace, column_sums = self._scan()
        self.ridge = diag_reg * (1.0 if absolute_scale else raw_trace / n)
        self.trace = raw_trace + n * self.ridge
        self.one_norm = float(np.max(column_sums)) + self.ridge
        self.products = 0

    def _blocks(self):
        """(first row, block of rows) over the stored kernel; the pages of a memmap opened
        'r+' or 'w+' leave resident memory after use, so a pass over a kernel on disk
        holds one block in RAM."""
        for start in range(0, self.shape[0], self.rows):
            stored = self.kernel[start:start + self.rows]
            yield start, np.asarray(stored)
            release_pages(stored)

    def _scan(self) -> tuple[float, np.ndarray]:
        """One pass over the stored kernel: its trace and absolute column sums (whose
        maximum is its 1-norm, which sets the cost of a flow); a non-finite entry is refused."""
        trace, column_sums = 0.0, np.zeros(self.shape[0])
        for start, block in self._blocks():
            if not np.all(np.isfinite(block)):
                i, j = np.argwhere(~np.isfinite(block))[0]
                raise InputError(f"k_train_train entry [{start + i}, {j}] is "
                                 f"{block[i, j]}; every entry must be finite")
            trace += float(np.trace(block[:, start:]))
            column_sums += np.abs(block).sum(axis=0)
        return trace, column_sums

    def _matmat(self, v):
        self.products += v.shape[1] if v.ndim == 2 else 1
        out = np.empty((self.shape[0],) + v.shape[1:])
        for start, block in self._blocks():
            out[start:start + len(block)] = block @ v
        return out + self.ridge * v

    def _matvec(self, v):
        return self._matmat(v.reshape(-1, 1)).reshape(v.shape)

    def _adjoint(self):
        return self  # symmetric


class _NystromPreconditioner(scipy.sparse.linalg.LinearOperator):
    """``P⁻¹`` from the rank-r Nyström approximation of the stored kernel (module doc)."""

    def __init__(self, operator: _StoredKernel, rank: int, seed):
        n = operator.shape[0]
        super().__init__(np.float64, (n, n))
        columns = np.sort(np.random.default_rng(seed).choice(n, rank, replace=False))
        k_xz = np.concatenate([block[:, columns] for _, block in operator._blocks()])
        factor, _ = _jittered_cholesky(k_xz[columns], f"the {rank} preconditioner landmarks")
        phi = scipy.linalg.solve_triangular(factor, k_xz.T, lower=True, check_finite=False).T
        left, singular, _ = np.linalg.svd(phi, full_matrices=False)
        eigenvalues = singular**2  # of K̃ = ΦΦᵀ = U diag(σ²) Uᵀ
        keep = eigenvalues > eigenvalues[0] * rank * np.finfo(np.float64).eps
        self.basis, eigenvalues = left[:, keep], eigenvalues[keep]
        ridge = operator.ridge
        self.weights = (eigenvalues[-1] + ridge) / (eigenvalues + ridge) - 1.0

    def _matmat(self, v):
        return v + self.basis @ (self.weights[:, None] * (self.basis.T @ v))

    def _matvec(self, v):
        return self._matmat(v.reshape(-1, 1)).reshape(v.shape)

    def _adjoint(self):
        return self


class _Augmented(scipy.sparse.linalg.LinearOperator):
    """``[[−A, Y], [0, 0]]`` of size N + k, whose exponential integrates the flow (module doc)."""

    def __init__(self, operator: _StoredKernel, targets: np.ndarray):
        n, k = targets.shape
        super().__init__(np.float64, (n + k, n + k))
        self.operator, self.targets, self.n = operator, targets, n

    def _matmat(self, v):
        top = -self.operator.matmat(v[:self.n]) + self.targets @ v[self.n:]
        return np.concatenate([top, np.zeros_like(v[self.n:])])

    def _matvec(self, v):
        return self._matmat(v.reshape(-1, 1)).reshape(v.shape)

    def _rmatmat(self, v):
        top = -self.operator.matmat(v[:self.n])
        return np.concatenate([top, self.targets.T @ v[:self.n]])

    def _rmatvec(self, v):
        return self._rmatmat(v.reshape(-1, 1)).reshape(v.shape)


class KrylovEnsemble:
    """Gradient-flow ensemble means from a stored training kernel by Krylov methods.

    Built by :func:`cg_ensemble`; ``predict(k_test_train, t)`` as
    :meth:`ntkdsl.predict.GradientFlowEnsemble.predict` (means only)."""

    def __init__(self, operator: _StoredKernel, targets: np.ndarray, targets_1d: bool,
                 kernel: str, learning_rate: float, rank: int, seed, rtol: float,
                 maxiter: int | None, max_products: int):
        self.operator, self.y_train, self.kernel = operator, targets, kernel
        self._targets_1d = targets_1d
        self.learning_rate = learning_rate
        self.rank, self.seed, self.rtol, self.maxiter = rank, seed, rtol, maxiter
        self.max_products = max_products
        self._solution = None
        self._flows: dict[float, np.ndarray] = {}

    @property
    def n_train(self) -> int:
        return self.operator.shape[0]

    @property
    def effective_diag_reg(self) -> float:
        return self.operator.ridge

    def solve(self) -> np.ndarray:
        """``(K + ridge)⁻¹ Y`` by preconditioned CG (computed once, then kept)."""
        if self._solution is None:
            preconditioner = _NystromPreconditioner(self.operator, self.rank, self.seed)
            self._solution = np.column_stack([self._cg(column, preconditioner)
                                              for column in self.y_train.T])
        return self._solution

    def _cg(self, rhs: np.ndarray, preconditioner) -> np.ndarray:
        solution, info = scipy.sparse.linalg.cg(self.operator, rhs, rtol=self.rtol,
                                                maxiter=self.maxiter, M=preconditioner)
        if info > 0:
            residual = np.linalg.norm(rhs - self.operator.matvec(solution)) / \
                np.linalg.norm(rhs)
            _warn_at_caller(f"conjugate gradients stopped after {info} iterations with "
                            f"relative residual {residual:.3e}, above its tolerance "
                            f"{self.rtol:g}; the predictions are that inaccurate",
                            ConvergenceWarning)
        return solution

    def flows(self, times: np.ndarray) -> np.ndarray:
        """``K⁻¹(I − e^{−sK}) Y`` (T, N, k) for every time (∞: the CG solution)."""
        scaled = self.learning_rate * times.ravel() / self.y_train.size
        finite = np.unique(scaled[np.isfinite(scaled)])
        self._check_budget(finite)
        n, k = self.y_train.shape
        state, reached = np.concatenate([np.zeros((n, k)), np.eye(k)]), 0.0
        augmented = _Augmented(self.operator, self.y_train)
        for s in finite:
            if s not in self._flows:
                state = scipy.sparse.linalg.expm_multiply((s - reached) * augmented, state,
                                                          traceA=-(s - reached) * self.operator.trace)
                reached = s
                self._flows[s] = state[:n]
            else:
                state, reached = np.concatenate([self._flows[s], np.eye(k)]), s
        return np.stack([self.solve() if np.isinf(s) else self._flows[s] for s in scaled])

    def _check_budget(self, scaled: np.ndarray) -> None:
        if scaled.size == 0:
            return
        products = scaled[-1] * self.operator.one_norm * self.y_train.shape[1]
        if products > self.max_products:
            raise InputError(f"gradient flow to t = {scaled[-1] * self.y_train.size / self.learning_rate:g} "
                             f"by Krylov steps needs about {products:.3g} products with the "
                             f"{self.n_train} x {self.n_train} kernel, more than the budget "
                             f"{self.max_products}",
                             hint="use the Nyström solver for long times (solver='nystrom'), "
                                  "or t = None (infinity, by conjugate gradients)")

    def predict(self, k_test_train: ArrayLike, t: ArrayLike | None = None) -> Gaussian:
        """Ensemble mean on test inputs at time(s) ``t`` (None = ∞); covariance None."""
        cross = _as_matrix(k_test_train, "k_test_train")
        _check_shape(cross, (cross.shape[0], self.n_train), "k_test_train", "test x train")
        times = _as_times(t)
        flows = self.flows(np.array([np.inf]) if times is None else times)
        mean = np.einsum("mj,tjk->tmk", cross, flows, optimize=True)
        lead = () if times is None else times.shape
        tail = mean.shape[1:2] if self._targets_1d else mean.shape[1:]
        return Gaussian(mean.reshape(lead + tail), None)


def cg_ensemble(k_train_train: np.ndarray, y_train: ArrayLike, *, kernel: str = "ntk",
                learning_rate: float = 1.0, diag_reg: float = 0.0,
                diag_reg_absolute_scale: bool = False, n_components: int | None = None,
                seed: int | None = 0, rtol: float = 1e-10, maxiter: int | None = 1000,
                max_products: int = MAX_PRODUCTS) -> KrylovEnsemble:
    """Gradient-flow ensemble means by Krylov methods on a stored kernel (module doc).

    Args:
        k_train_train: (N, N) symmetric training kernel, an array or ``np.memmap`` (read
            block by block, never copied whole).
        y_train, kernel, learning_rate, diag_reg, diag_reg_absolute_scale: as in
            :func:`ntkdsl.predict.gradient_descent_mse_ensemble`.
        n_components: rank of the Nyström preconditioner, at most N (None: min(N, 500)).
        rtol, maxiter: CG's relative residual tolerance and iteration budget.
        max_products: the most products with the kernel a finite time may take.
    """
    kind = kernel_name(kernel)
    if not isinstance(k_train_train, np.ndarray) or k_train_train.ndim != 2 \
            or k_train_train.shape[0] != k_train_train.shape[1]:
        raise ShapeError("k_train_train must be a square 2-D array or np.memmap, got "
                         f"{type(k_train_train).__name__} of shape {np.shape(k_train_train)}")
    n = k_train_train.shape[0]
    if n < 2:
        raise InputError(f"need at least 2 training samples, got {n}")
    y = _as_targets(y_train, n)
    ridge = _check_nonnegative(diag_reg, "diag_reg")
    rank = _check_components(min(n, 500) if n_components is None else n_components, n)
    operator = _StoredKernel(k_train_train, ridge, bool(diag_reg_absolute_scale))
    return KrylovEnsemble(operator, y, np.ndim(y_train) == 1, kind,
                          _check_nonnegative(learning_rate, "learning_rate"), rank, seed,
                          _check_nonnegative(rtol, "rtol"), maxiter,
                          int(max_products))
