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

(This module is ``ntkdsl.sklearn``; inside the package, absolute imports such as ``from
sklearn.base import clone`` still name scikit-learn itself.)
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from . import network
from .errors import InputError, ParameterError
from .kinds import KINDS
from .templates import ArchTemplate


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
        """log of the free hyperparameters' bounds, (n_dims, 2)."""
        rows = [self._bounds()[n] for n in self._free()]
        return np.log(np.array(rows, dtype=float)).reshape(len(rows), 2)

    # -- the kernel --------------------------------------------------------------------
    def __call__(self, X, Y=None, eval_gradient=False):
        """K(X, Y) (n, m); with ``eval_gradient`` (Y None), also dK/dlog θ (n, n, n_dims)."""
        if eval_gradient and Y is not None:
            # scikit-learn's own words; an InputError is a ValueError, as its kernels raise
            raise InputError("Gradient can only be evaluated when Y is None.",
                             hint="call kernel(X, eval_gradient=True) for the training kernel")
        free = self._free()
        if not eval_gradient:
            return getattr(network.compile(self._template().render()), self.kind)(X, Y)
        if not free:
            K = getattr(network.compile(self._template().render()), self.kind)(X)
            return K, np.empty((*K.shape, 0))
        net = network.compile(self._template(), gradients=list(free))
        K, dK = getattr(net, self.kind)(X, eval_gradient=True)
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


__all__ = ["NNGPKernel", "NTKKernel"]
