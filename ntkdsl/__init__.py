"""ntkdsl: exact infinite-width NNGP and NTK kernels of networks written as strings.

    >>> import ntkdsl
    >>> net = ntkdsl.compile("Dense(512) > Relu > Dense(1)")
    >>> net.ntk(x1, x2)          # (n1, n2) float64
    >>> print(net.formula("nngp"))
"""
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (
    ArchitectureError,
    ArchitectureSyntaxError,
    ExpressionError,
    InputError,
    LayerArgumentError,
    LayerValueError,
    NTKDSLError,
    NumericalError,
    ParameterError,
    ShapeError,
    UnknownLayerError,
)
from .network import Network, compile
from .parser import parse


def codegen(arch: str) -> str:
    """The source of a standalone Python module (numpy only, plus scipy.special where a
    formula needs it) computing the NNGP and NTK of ``arch``; see
    ``ntkdsl.standalone.module_source``. The same string always gives the same bytes."""
    from .standalone import module_source  # on first use: `import ntkdsl` stays fast
    return module_source(arch)


# Names whose modules pull in scikit-learn or are otherwise heavy: imported on first use,
# so `import ntkdsl` and the command line start fast.
_LAZY = {
    "NTKRegressor": "estimators", "NTKClassifier": "estimators", "ArchTemplate": "templates",
    "gradient_descent_mse_ensemble": "predict", "gp_inference": "predict",
    "SingularKernelWarning": "predict",
    "empirical_ntk": "finite", "monte_carlo_nngp": "finite", "FiniteNetwork": "finite",
}
if TYPE_CHECKING:  # type checkers see the lazy names as ordinary imports
    from . import estimators, evaluation, finite, formula, numerical, predict, standalone, verify  # noqa: F401 - attributes for type checkers, loaded lazily at run time
    from .estimators import NTKClassifier, NTKRegressor
    from .finite import FiniteNetwork, empirical_ntk, monte_carlo_nngp
    from .predict import SingularKernelWarning, gp_inference, gradient_descent_mse_ensemble
    from .templates import ArchTemplate

# Submodules reachable as attributes after a plain `import ntkdsl` (ntkdsl.verify.verify,
# ntkdsl.finite.FiniteNetwork, ...), loaded on first access for the same reason.
_LAZY_MODULES = ("estimators", "finite", "predict", "verify", "standalone", "formula",
                 "evaluation", "numerical", "derivation", "activations", "expressions",
                 "sklearn", "templates", "tangents", "dask")


def __getattr__(name: str):
    import importlib
    if name in _LAZY:
        return getattr(importlib.import_module(f"ntkdsl.{_LAZY[name]}"), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"ntkdsl.{name}")
    raise AttributeError(f"module 'ntkdsl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))

__all__ = [
    "ArchTemplate",
    "ArchitectureError",
    "ArchitectureSyntaxError",
    "ExpressionError",
    "FiniteNetwork",
    "InputError",
    "LayerArgumentError",
    "LayerValueError",
    "NTKClassifier",
    "NTKDSLError",
    "NTKRegressor",
    "Network",
    "NumericalError",
    "ParameterError",
    "ShapeError",
    "SingularKernelWarning",
    "UnknownLayerError",
    "__version__",
    "codegen",
    "compile",
    "empirical_ntk",
    "gp_inference",
    "gradient_descent_mse_ensemble",
    "monte_carlo_nngp",
    "parse",
]
