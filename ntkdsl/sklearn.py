"""scikit-learn kernels: the NNGP and NTK of an architecture template, with the template's
numbers as hyperparameters.

    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import WhiteKernel
    from ntkdsl import ArchTemplate
    from ntkdsl.sklearn import NNGPKernel

    arch = ArchTemplate("(Dense(512, W_std={w}, b_std={b}) > Relu) * 2 > Dense(1, W_std={w})",
                        w=1.0, b=0.5)
    kernel = NNGPKernel(arch, bounds={"w": (0.1, 10.0), "b": (1e-3, 10.0)}) + WhiteKernel()
    GaussianProcessRegressor(kernel, n_restarts_optimizer=3).fit(X, y)

The placeholders given bounds are the hyperparameters (``theta`` holds their logarithms, as
for scikit-learn's own kernels), the others stay at their values; ``bounds={"w": "fixed"}``
lists w as a fixed hyperparameter. ``K, dK = kernel(X, eval_gradient=True)`` gives the
derivatives with respect to log θ from the exact kernel gradients (ntkdsl.tangents), in the
pass that computes the kernel. ``diag`` is the exact diagonal. The kernels are not
stationary.

``MarginalLikelihood`` is the log marginal likelihood of targets under such a kernel plus the
estimators' relative ridge, with its exact gradient, and ``maximise`` climbs it by Fisher
scoring (the expected information from the same kernel derivatives) in log space from the
start and from restarts: what ``NTKRegressor(optimize=...)`` and
``NTKClassifier(optimize=...)`` fit with.

(This module is ``ntkdsl.sklearn``; inside the package, absolute imports such as ``from
sklearn.base import clone`` still name scikit-learn itself.)
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.optimize
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils import check_random_state

from . import network
from .errors import InputError, NumericalError, ParameterError
from .evaluation.blas import _BlasLimit
from .kinds import KINDS
from .predict import SingularKernelWarning, _RegularisedKernel  # the estimators' factorisation
from .templates import ArchTemplate, parameter_tree

# Restarts of the optimiser: each costs up to a few dozen kernel evaluations.
MAX_RESTARTS = 1000
# The evidence's kernels of at most this many rows are evaluated on the calling thread
# alone: the panel pipeline's helper thread cost more than it saved there (measured for
# the NTK of (Dense > Relu) * L with two derivatives, 2 cores: 331 rows, L = 4, 17.5 ms
# and 17.4 ms CPU with it against 11.7 ms and 11.6 ms without; 426 rows, L = 1, 6.8 ms
# against 6.5 ms; 1,000 rows, L = 2, 35.3 ms against 33.7 ms, beside other work).
ONE_THREAD_ROWS = 1024


class _ArchitectureKernel(Kernel):
    """The kernel ``kind`` of an ArchTemplate, its placeholders given ``bounds`` (a dict:
    name -> (low, high) or "fixed") as hyperparameters."""

    kind = ""

    def __init__(self, arch: ArchTemplate, bounds: dict | None = None):
        self.arch = arch
        self.parameter_bounds = bounds

    # -- scikit-learn's parameter protocol ---------------------------------------------
    def get_params(self, deep=True):
        """``arch`` and ``bounds``; with ``deep``, also every placeholder's value."""
        params = {"arch": self.arch, "bounds": self.parameter_bounds}
        if deep and isinstance(self.arch, ArchTemplate):
            params.update(self.arch.values)
        return params

    def set_params(self, **params):
        """Set ``arch``, ``bounds`` or placeholder values by name."""
        if "arch" in params:
            self.arch = params.pop("arch")
        if "bounds" in params:
            self.parameter_bounds = params.pop("bounds")
        if params:
            self.arch = ArchTemplate(self._template().template,
                                     **{**self._template().values, **params})
        return self

    # -- hyperparameters ---------------------------------------------------------------
    @property
    def hyperparameters(self) -> list[Hyperparameter]:
        """One per placeholder given bounds, in the order of ``bounds``."""
        return [Hyperparameter(name, "numeric", bound if bound == "fixed" else tuple(bound))
                for name, bound in self._bounds().items()]

    @property
    def theta(self) -> np.ndarray:
        """log of the free hyperparameters' values."""
        values = self._template().values
        return np.log(np.array([float(values[n]) for n in self._free()], dtype=float))

    @theta.setter
    def theta(self, theta) -> None:
        theta = np.asarray(theta, dtype=float)
        free = self._free()
        if theta.shape != (len(free),):
            raise ParameterError(f"theta has shape {theta.shape}; this kernel has "
                                 f"{len(free)} free hyperparameters ({', '.join(free)})")
        template = self._template()
        self.arch = ArchTemplate(template.template, **{
            **template.values, **{n: float(np.exp(t)) for n, t in zip(free, theta)}})

    @property
    def bounds(self) -> np.ndarray:
        """log of the free hyperparameters' bounds, (n_dims, 2). An optimiser asks for them
        before it starts: a free placeholder that fills an integer (the search would write
        it as 63.99999999999998) or fills nothing is refused here."""
        free = self._free()
        if free:
            parameter_tree(self._template(), free)
        rows = [self._bounds()[n] for n in free]
        return np.log(np.array(rows, dtype=float)).reshape(len(rows), 2)

    # -- the kernel --------------------------------------------------------------------
    def __call__(self, X, Y=None, eval_gradient=False):
        """K(X, Y) (n, m); with ``eval_gradient`` (Y None), also dK/dlog θ (n, n, n_dims)."""
        if eval_gradient and Y is not None:
            # scikit-learn's own words; an InputError is a ValueError, as its kernels raise
            raise InputError("Gradient can only be evaluated when Y is None.",
                             hint="call kernel(X, eval_gradient=True) for the training kernel")
        if not eval_gradient:
            return getattr(network.compile(self._template().render()), self.kind)(X, Y)
        return self._with_gradient(X)

    def _with_gradient(self, X, threads: int | None = None):
        """(K(X), dK/dlog θ (n, n, n_dims)), the kernel evaluated on at most ``threads``."""
        free = self._free()
        if not free:
            K = getattr(network.compile(self._template().render()), self.kind)(
                X, threads=threads)
            return K, np.empty((*K.shape, 0))
        net = network.compile(self._template(), gradients=list(free))
        K, dK = getattr(net, self.kind)(X, eval_gradient=True, threads=threads)
        dK *= np.asarray(net.values)  # d/dlog θ = θ d/dθ
        return K, dK

    def diag(self, X) -> np.ndarray:
        """The exact diagonal K(x, x) of every row of X."""
        net = network.compile(self._template().render())
        return net.diagonal(X)[KINDS.index(self.kind)]

    def is_stationary(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.arch!r}, bounds={self.parameter_bounds!r})"

    # -- checks ------------------------------------------------------------------------
    def _template(self) -> ArchTemplate:
        if not isinstance(self.arch, ArchTemplate):
            raise ParameterError(f"{type(self).__name__} needs an ArchTemplate, got "
                                 f"{self.arch!r}", hint="e.g. ArchTemplate('Dense(512, "
                                 "W_std={w}) > Relu > Dense(1)', w=1.0)")
        return self.arch

    def _bounds(self) -> dict:
        """The bounds, checked: placeholders of the template, (low, high) with
        0 < low <= value <= high (log space), or "fixed"."""
        template = self._template()
        given = {} if self.parameter_bounds is None else dict(self.parameter_bounds)
        if given and not template.values:
            raise ParameterError(f"arch template {template.template!r} has no placeholders, "
                                 f"so {', '.join(map(str, given))} names no number of it",
                                 hint="write the numbers to learn as placeholders, e.g. "
                                      "ArchTemplate('Dense(512, W_std={w}) > Relu > "
                                      "Dense(1)', w=1.0)")
        for name, bound in given.items():
            if name not in template.values:
                raise ParameterError(f"bounds name {name!r}, which is not a placeholder of "
                                     f"{template.template!r}",
                                     hint=f"its placeholders are {', '.join(template.values)}")
            if isinstance(bound, str):
                if bound != "fixed":
                    raise ParameterError(f"bounds[{name!r}] is {bound!r}; give (low, high) "
                                         "or 'fixed'")
                continue
            _check_bound(name, bound, template.values[name])
        return given

    def _free(self) -> tuple[str, ...]:
        return tuple(n for n, b in self._bounds().items() if not isinstance(b, str))


def _check_bound(name: str, bound, value) -> None:
    try:
        low, high = (float(b) for b in bound)
    except (TypeError, ValueError):
        raise ParameterError(f"bounds[{name!r}] is {bound!r}; give (low, high) or "
                             "'fixed'") from None
    if not (0 < low <= high and math.isfinite(high)):
        raise ParameterError(f"bounds[{name!r}] = {bound!r}: hyperparameters are searched "
                             "in log space, so a bound needs 0 < low <= high < inf")
    # exp(log(high)) may round a last digit above high: the optimiser's values are inside.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low * (1 - 1e-12) <= value <= high * (1 + 1e-12)):
        raise ParameterError(f"{name} = {value!r} is outside its bounds {bound!r}",
                             hint=f"start {name} inside the bounds, or widen them")


class NNGPKernel(_ArchitectureKernel):
    """The NNGP kernel of an architecture template as a scikit-learn kernel (see the
    module's docstring): the Gaussian process of the network at initialisation."""

    kind = "nngp"


class NTKKernel(_ArchitectureKernel):
    """The NTK of an architecture template as a scikit-learn kernel (see the module's
    docstring)."""

    kind = "ntk"


KERNELS = {"nngp": NNGPKernel, "ntk": NTKKernel}


@dataclass(frozen=True)
class EvidenceFit:
    """The best point ``MarginalLikelihood.maximise`` found: the template with the fitted
    values (``arch``), the ridge (``diag_reg``, fitted or as given), the log marginal
    likelihood there and its ``gradient`` with respect to the logs of ``names``, the
    training kernel there (without the ridge) and the number of evaluations in all."""

    arch: ArchTemplate
    diag_reg: float
    log_marginal_likelihood: float
    names: tuple[str, ...]
    gradient: np.ndarray
    kernel: np.ndarray
    evaluations: int

    @property
    def params(self) -> dict[str, float]:
        """The fitted numbers by name (the placeholders searched, then diag_reg if it was)."""
        values = {**self.arch.values, "diag_reg": self.diag_reg}
        return {name: float(values[name]) for name in self.names}


class MarginalLikelihood:
    """log p(Y | X) for the Gaussian process with kernel ``kernel`` (an NNGPKernel or
    NTKKernel: its free hyperparameters are the numbers searched) and the noise variance
    ``diag_reg`` · mean(diag K) — the evidence ``NTKRegressor.log_marginal_likelihood()``
    reports — summed over the columns of Y (n, k), as a function of θ = the logs of the free
    hyperparameters and, if ``diag_reg_bounds`` is given, of diag_reg.

    ``value, gradient = evidence(theta)``: the gradient is exact, from the kernel's
    derivatives (one pass with the kernel):
    ∂/∂θⱼ = ½ tr((α αᵀ − k M⁻¹) ∂M/∂θⱼ) with M = K + diag_reg · mean(diag K) · I and
    α = M⁻¹ Y, where ∂M/∂θⱼ = ∂K/∂θⱼ + diag_reg · mean(diag ∂K/∂θⱼ) · I."""

    def __init__(self, kernel: _ArchitectureKernel, X, Y, diag_reg: float,
                 diag_reg_bounds=None):
        self.kernel, self.X = kernel, X
        self.Y = np.asarray(Y, dtype=float).reshape(len(X), -1)
        self.diag_reg = float(diag_reg)
        self.fit_diag_reg = diag_reg_bounds is not None
        rows = kernel.bounds
        self.theta0 = kernel.theta
        if self.fit_diag_reg:
            _check_bound("diag_reg", diag_reg_bounds, diag_reg)
            rows = np.vstack([rows, np.log(np.asarray(diag_reg_bounds, dtype=float))])
            self.theta0 = np.append(self.theta0, math.log(diag_reg))
        self.bounds = rows.reshape(-1, 2)
        self.names = (*kernel._free(), *(("diag_reg",) if self.fit_diag_reg else ()))
        if not self.names:
            raise ParameterError("nothing to optimise: no placeholder is given bounds",
                                 hint="give bounds to some placeholders, e.g. "
                                      "optimize={'w': (0.1, 10.0)}, or 'diag_reg'")

    def _at(self, theta: np.ndarray):
        """(the kernel with the placeholders of theta, the ridge) at theta."""
        p = len(self.kernel.theta)
        diag_reg = math.exp(theta[p]) if self.fit_diag_reg else self.diag_reg
        return self.kernel.clone_with_theta(theta[:p]), diag_reg

    def evaluate(self, theta) -> tuple[float, np.ndarray, np.ndarray]:
        """(log marginal likelihood, its gradient, the training kernel) at ``theta``."""
        point = self._point(theta)
        return point.value, point.gradient, point.kernel

    def _point(self, theta) -> _EvidencePoint:
        theta = np.asarray(theta, dtype=float)
        kernel, diag_reg = self._at(theta)
        K, dK = kernel._with_gradient(self.X, threads=1 if len(self.X) <= ONE_THREAD_ROWS
                                      else None)
        # The estimators' own factorisation (Cholesky, or the floored eigensystem of a
        # singular kernel): the evidence maximised is what log_marginal_likelihood() reports.
        factor = _RegularisedKernel(K, diag_reg, absolute_scale=False)
        n, columns = self.Y.shape
        p = dK.shape[2]
        alpha = factor.solve(self.Y)
        inverse = factor.inverse()
        # ∂M/∂θⱼ = ∂K/∂θⱼ + shifts[j] · I (the ridge follows mean(diag K)).
        shifts = diag_reg * np.trace(dK) / n
        # αᵀ ∂K/∂θⱼ α and tr(M⁻¹ ∂K/∂θⱼ) as matrix products over the (n, n, p) layout
        # (einsum's loops over it took a millisecond or more each at n = 426).
        weighted = (alpha.T @ dK.reshape(n, n * p)).reshape(columns, n, p)
        fit = np.einsum("cbj,bc->j", weighted, alpha) + shifts * np.sum(alpha * alpha)
        trace = inverse.reshape(-1) @ dK.reshape(n * n, p) + shifts * np.trace(inverse)
        gradient = 0.5 * (fit - columns * trace)
        if self.fit_diag_reg:  # d ridge / d log diag_reg = ridge
            gradient = np.append(gradient, 0.5 * factor.ridge * (
                np.sum(alpha * alpha) - columns * np.trace(inverse)))
        return _EvidencePoint(theta, factor.log_marginal_likelihood(self.Y), gradient, K, dK,
                              shifts, inverse, factor.ridge, columns)

    def __call__(self, theta) -> tuple[float, np.ndarray]:
        value, gradient, _ = self.evaluate(theta)
        return value, gradient

    def maximise(self, n_restarts: int = 0, random_state=None) -> EvidenceFit:
        """The best point found by Fisher scoring (``_climb``, in θ, within the bounds)
        from the start values and from ``n_restarts`` starts drawn uniformly in θ by
        ``random_state`` (as scikit-learn's GaussianProcessRegressor restarts)."""
        check_restarts(n_restarts)
        rng = check_random_state(random_state)
        starts = [self.theta0] + [rng.uniform(self.bounds[:, 0], self.bounds[:, 1])
                                  for _ in range(n_restarts)]
        best: list = []
        count = [0]

        def point(theta) -> _EvidencePoint | None:
            count[0] += 1
            try:
                found = self._point(theta)
            except NumericalError:  # not positive definite there: no evidence
                return None
            if not best or found.value > best[0].value:
                best[:] = [found]
            return found

        # BLAS held to one thread, as the kernel evaluations hold it: the factorisations of
        # a few hundred to a few thousand rows gain little from a second thread, and lose
        # much beside other work (measured 7x slower at N = 426 on the loaded 2-core machine).
        with warnings.catch_warnings(), _BlasLimit():
            # A numerically singular kernel at a trial point is floored; the fit at the
            # optimum warns again if it is singular there.
            warnings.simplefilter("ignore", SingularKernelWarning)
            for start in starts:
                if not _climb(point, np.clip(start, *self.bounds.T), self.bounds):
                    self._polish(point, best[0].theta if best else start)
        if not best:
            raise NumericalError("the training kernel is not positive definite at any "
                                 "point the optimiser tried", hint="raise diag_reg or its "
                                 "lower bound")
        found = best[0]
        kernel, diag_reg = self._at(found.theta)
        return EvidenceFit(kernel.arch, diag_reg, found.value, self.names, found.gradient,
                           found.kernel, count[0])

    def _polish(self, point, start) -> None:
        """L-BFGS-B (scipy's defaults, as scikit-learn's GaussianProcessRegressor) from
        ``start``, where Fisher scoring did not converge."""
        def objective(theta):
            found = point(theta)
            return (np.inf, np.zeros_like(theta)) if found is None else \
                (-found.value, -found.gradient)

        scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B",
                                bounds=self.bounds)


@dataclass(frozen=True)
class _EvidencePoint:
    """The evidence at ``theta`` with what its gradient and Fisher information are made of:
    the training kernel and its derivatives dK (n, n, p), ∂M/∂θⱼ = dK[..., j] + shifts[j]·I,
    M⁻¹ (``inverse``), the ridge (∂M/∂log diag_reg = ridge·I) and the target columns."""

    theta: np.ndarray
    value: float
    gradient: np.ndarray
    kernel: np.ndarray
    dK: np.ndarray
    shifts: np.ndarray
    inverse: np.ndarray
    ridge: float
    columns: int

    def fisher(self) -> np.ndarray:
        """The expected information ½ k tr(M⁻¹ ∂M/∂θᵢ M⁻¹ ∂M/∂θⱼ) (k target columns): minus
        the expected Hessian of the evidence, positive semi-definite.

        With Pᵢ = M⁻¹ ∂K/∂θᵢ (one matrix product each) and ∂M/∂θᵢ = ∂K/∂θᵢ + sᵢ I, each
        entry is tr(Pᵢ Pⱼ) + sⱼ tr(Pᵢ M⁻¹) + sᵢ tr(Pⱼ M⁻¹) + sᵢ sⱼ tr(M⁻²) (M⁻¹ and ∂K/∂θ
        symmetric); the ridge's ∂M/∂log diag_reg = ridge · I is the case ∂K = 0, s = ridge.
        The traces are sums of elementwise products, all in one product of the flattened
        matrices."""
        n, _, p = self.dK.shape
        planes = np.ascontiguousarray(self.dK.transpose(2, 0, 1))
        products = np.matmul(self.inverse, planes)  # (p, n, n): Pᵢ
        flat = products.reshape(p, n * n)
        crossed = flat @ np.ascontiguousarray(products.transpose(0, 2, 1)).reshape(p, n * n).T
        with_inverse = flat @ self.inverse.reshape(-1)  # tr(Pᵢ M⁻¹)
        squared = float(np.sum(self.inverse * self.inverse))  # tr(M⁻²)
        shifts = np.asarray(self.shifts, dtype=float)
        if len(self.gradient) > p:  # diag_reg fitted: a derivative with ∂K = 0, s = ridge
            crossed = np.pad(crossed, ((0, 1), (0, 1)))
            with_inverse = np.append(with_inverse, 0.0)
            shifts = np.append(shifts, self.ridge)
        outer = np.outer(with_inverse, shifts)
        information = crossed + outer + outer.T + squared * np.outer(shifts, shifts)
        return 0.5 * self.columns * information


# Fisher scoring: at most this many steps per start (the benchmark's fits took 8-33
# evaluations), then L-BFGS-B from the best point; a step moves at most MAX_LOG_STEP in
# each log θ, and is halved at most HALVINGS times in search of a rise.
MAX_SCORING_STEPS = 60
MAX_LOG_STEP = 2.0
HALVINGS = 30
# Converged when the gradient of the free coordinates is below GRADIENT_TOLERANCE (scipy's
# L-BFGS-B pgtol default) or a step gains less than VALUE_TOLERANCE relative (its ftol) —
# or is predicted to: ½ gᵀHg, the rise the quasi-Newton model expects of its next full
# step, below VALUE_TOLERANCE relative (that step's evaluation would only confirm it).
GRADIENT_TOLERANCE = 1e-5
VALUE_TOLERANCE = 2.220446049250313e-09
# Curvature pairs (step, change of gradient) kept for the quasi-Newton correction.
MEMORY = 5


def _climb(point, theta: np.ndarray, bounds: np.ndarray) -> bool:
    """Fisher scoring with a quasi-Newton correction, within the box ``bounds``, from
    ``theta``. The expected information F (``_EvidencePoint.fisher``) is the Gauss-Newton
    curvature of the evidence: its steps F⁻¹g are Newton-like across the flat, correlated
    valleys where L-BFGS-B crept (35-57 evaluations a fit against 14-34). F is an
    expectation (and one-hot targets are not Gaussian), so it misjudges the curvature
    along a valley: the last steps and changes of the gradient correct it as L-BFGS does,
    with F⁻¹ in place of L-BFGS's scaled identity (``_direction``), and a factor ``reach``
    on the steps follows how well each gain matched the one F predicts, as a trust
    region's radius does (halved after a fall or a poor match, doubled up to 1 after a
    good one). A step that had to be shortened forgets the pairs: they described other
    ground. Coordinates at a bound whose gradient points out are held, and so are those at
    a bound that the Newton step of the others would push out (the active set of a
    projected Newton method; clipping them instead left the others a step solved for a
    move they did not make: from the fit of the depth before, on two bounds, breast
    cancer's NTK crept 44 and 90 evaluations where this takes 10 and 10); convergence is
    judged by the projected gradient. ``point(theta)`` evaluates (None where the kernel is
    not positive definite). True when it converged."""
    low, high = bounds.T
    here = point(theta)
    if here is None:
        return False
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    reach = 1.0
    for _ in range(MAX_SCORING_STEPS):
        g = here.gradient
        low_side, high_side = here.theta <= low, here.theta >= high
        free = ~((low_side & (g < 0)) | (high_side & (g > 0)))
        if not free.any() or np.max(np.abs(g[free])) <= GRADIENT_TOLERANCE:
            return True  # the projected gradient vanishes (L-BFGS-B's pgtol)
        # The pairs that moved a coordinate held now mix its change into the others'.
        pairs = [(s, y) for s, y in pairs if not np.any(s[~free])]
        information = here.fisher()
        while True:  # the Newton step of the free coordinates, ...
            fisher = information[np.ix_(free, free)]
            newton = np.zeros_like(g)
            newton[free] = _direction(fisher, g[free], [(s[free], y[free]) for s, y in pairs])
            # ... less those at a bound it would push out (projecting them back would leave
            # the others' step solved for a move they do not make): held, and solved again.
            out = free & ((low_side & (newton < 0)) | (high_side & (newton > 0)))
            if not out.any() or not (free & ~out).any():
                break
            free &= ~out
        if 0.5 * g @ newton <= VALUE_TOLERANCE * max(abs(here.value), 1.0):
            return True  # the step's predicted rise is below what counts as progress
        newton *= min(1.0, MAX_LOG_STEP / np.max(np.abs(newton)))
        shortened = False
        for _ in range(HALVINGS):
            target = np.clip(here.theta + reach * newton, low, high)
            there = point(target)
            if there is not None and there.value >= here.value:
                break
            reach, shortened = reach / 2, True
        else:
            return True  # no rise along the step: as far as the curvature leads
        step = (target - here.theta)[free]
        predicted = g[free] @ step - 0.5 * step @ fisher @ step
        gained = there.value - here.value
        match = gained / predicted if predicted > 0 else 1.0
        reach = min(1.0, 2 * reach) if match > 0.75 else reach / 2 if match < 0.25 else reach
        moved, change = there.theta - here.theta, here.gradient - there.gradient
        if shortened:  # far from quadratic here: the pairs so far describe it no longer
            pairs = []
        elif moved @ change > 0:  # the evidence is concave along the step: a usable pair
            pairs = [*pairs[-(MEMORY - 1):], (moved, change)]
        here = there
        if gained <= VALUE_TOLERANCE * max(abs(here.value), 1.0):
            return True
    return False


def _direction(fisher: np.ndarray, gradient: np.ndarray, pairs: list) -> np.ndarray:
    """The ascent direction H g of L-BFGS's two-loop recursion over the curvature
    ``pairs`` (step s, fall of the gradient y), with F⁻¹ as the initial inverse Hessian."""
    q, alphas = gradient.copy(), []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (y @ s)
        q -= alpha * y
        alphas.append(alpha)
    r = np.linalg.lstsq(fisher, q, rcond=None)[0]
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        r += s * (alpha - (y @ r) / (y @ s))
    return r


def check_restarts(n_restarts) -> None:
    """InputError unless ``n_restarts`` is a whole number in [0, MAX_RESTARTS]."""
    if isinstance(n_restarts, bool) or not isinstance(n_restarts, numbers.Integral) \
            or not 0 <= n_restarts <= MAX_RESTARTS:
        raise InputError(f"n_restarts_optimizer must be a whole number from 0 to "
                         f"{MAX_RESTARTS}, got {n_restarts!r}")


__all__ = ["EvidenceFit", "MarginalLikelihood", "NNGPKernel", "NTKKernel"]
