"""ntkdsl's runtime: the NumPy-only code that generated kernel programs call.

``hermite``      the Hermite-series engine of the numerical route (one coefficient cache
                 per process, shared by every compiled network)
``correlation``  ``_corr`` and ``_inv_sqrt``
``driver``       input validation, the O(n)-memory search for identical input rows, and
                 the kernels/nngp/ntk driver of standalone modules; channels-last images
                 for convolutional networks, their validation and statistics
``stencil``      window sums over spatial axes: convolution, pooling, flattening

Each module imports numpy (and SciPy's BLAS where it is installed), never ntkdsl. The
library imports them; a standalone module embeds their text (``embedded_source``), so
both run the same code.
"""
from __future__ import annotations

import ast
from functools import cache
from importlib import resources

MODULES = ("correlation", "driver", "hermite", "stencil")


@cache
def embedded_source(module: str) -> str:
    """The text of runtime module ``module`` as a standalone module embeds it: the file
    from its first definition on, verbatim. What goes before is its docstring (a stray
    string in the middle of a generated file) and ``import numpy``, which the generated
    module's header does once for all."""
    if module not in MODULES:
        raise ValueError(f"unknown runtime module {module!r}; runtime modules: {', '.join(MODULES)}")
    text = resources.files(__name__).joinpath(f"{module}.py").read_text(encoding="utf-8")
    body = ast.parse(text).body
    first = 1  # body[0] is the docstring
    while isinstance(statement := body[first], ast.Import):
        if [alias.name for alias in statement.names] != ["numpy"]:  # the header has numpy only
            raise ValueError(f"runtime module {module} imports more than numpy at the top")
        first += 1
    # Comments just above the first definition belong to it.
    start, above = body[first].lineno - 1, body[first - 1].end_lineno or 0
    lines = text.split("\n")
    while start > above and lines[start - 1].startswith("#"):
        start -= 1
    return "\n".join(lines[start:]).rstrip("\n") + "\n"


# Helper names (ntkdsl.symbolic.KernelFunction.helpers) whose text is a runtime module. A
# standalone module carries that text; the library binds the module's own functions
# instead of running the text again, so every network shares one engine and its cache.
HELPER_MODULES = {"_corr": "correlation", "_hd_engine": "hermite", "_stencil": "stencil"}


def bindings(helpers) -> dict:
    """The names the runtime modules among ``helpers`` (helper names) define, bound to
    the modules' own objects: a namespace in which generated code runs as in a standalone
    module."""
    from importlib import import_module
    namespace: dict = {}
    for helper in helpers:
        if helper in HELPER_MODULES:
            module = import_module(f"{__name__}.{HELPER_MODULES[helper]}")
            namespace.update((k, v) for k, v in vars(module).items() if not k.startswith("__"))
    return namespace
