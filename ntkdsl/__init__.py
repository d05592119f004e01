"""ntkdsl: exact infinite-width NNGP and NTK kernels of networks written as strings.

    >>> import ntkdsl
    >>> net = ntkdsl.compile("Dense(512) > Relu > Dense(1)")
    >>> net.ntk(x1, x2)          # (n1, n2) float64
    >>> print(net.formula("nngp"))
"""
__version__ = "0.1.0"

from .errors import (ArchitectureError, ArchitectureSyntaxError, ExpressionError, InputError,
                     LayerArgumentError, LayerValueError, NTKDSLError, NumericalError,
                     ShapeError, UnknownLayerError)
from .network import Network, compile
from .parser import parse

__all__ = [
    "compile", "parse", "Network", "NTKDSLError", "ArchitectureSyntaxError",
    "UnknownLayerError", "LayerArgumentError", "LayerValueError", "ArchitectureError",
    "ExpressionError", "InputError", "ShapeError", "NumericalError", "__version__",
]
