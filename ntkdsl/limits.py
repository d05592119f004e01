"""Documented limits on every input size that drives time or memory (issue 12).

Each limit is checked when an architecture is parsed or its arguments are bound — before
any derivation, code generation or evaluation starts — and breaking one raises ntkdsl's own
exception (``LayerValueError``, ``ArchitectureSyntaxError`` or ``ExpressionError``) with a
caret under the offending text, the limit and what is valid. The README's "Limits" section
lists the same values; change both together.
"""
from __future__ import annotations

import math
from collections.abc import Callable

# --- the architecture string ------------------------------------------------------------
MAX_SOURCE_LENGTH = 100_000   # characters of an architecture string (parse time is linear)
MAX_NESTING = 100             # depth of parentheses / nested constructs (the transformer recurses)
# The count of "* N"; a larger count can never fit MAX_LAYERS.
MAX_REPEAT = 2_500
# Layers after writing every repeat out, branches included: compiling is linear in it
# (about 0.6 ms a layer: 2,500 layers compile and evaluate in about 1.6 s of CPU time, inside
# the fuzz test's 3 s; 5,000 took 3.1 s), and (Dense > Relu) * 1000 > Dense(1), 2,001
# layers, must fit.
MAX_LAYERS = 2_500
# Activations in a row, composed into one φ: sympy's expression for φ nests once per part.
MAX_COMPOSED = 16

# --- numbers ----------------------------------------------------------------------------
MAX_NUMBER_LENGTH = 100       # characters of one number literal
# Every number written (a layer argument or a number inside Fn) is 0 or has a magnitude in
# [MIN_MAGNITUDE, MAX_MAGNITUDE]: the kernel formulas square parameters and multiply them
# together as exact rationals, and the generated float64 code must still hold those
# products (1e50 squared and divided by 1e-50 squared is 1e200 < 1.8e308). Subnormal and
# tiny values are refused rather than rounded, since their squares would silently be 0.
MAX_MAGNITUDE = 1e50
MIN_MAGNITUDE = 1e-50
FLOAT64_MAX = 1.7976931348623157e308

# --- layer arguments --------------------------------------------------------------------
MAX_WIDTH = 10 ** 9           # Dense out_dim (enters the standard parameterisation's NTK)
MAX_DEGREE = 100              # Monomial degree: Isserlis constants up to (2n-1)!! stay < 1e308
# RectifiedMonomial degree: J_n is simplified symbolically (measured: 4 s at 5, 16 s at 6)
MAX_RECTIFIED_DEGREE = 5
# Polynomial coefficients: the dual's size grows with n (measured: 5 s at 20, 25 s at 30)
MAX_COEFFICIENTS = 20

# Conv filters and pooling windows: spatial axes, and the size of a filter/window/stride
# along one axis (the stencil costs one shifted add per filter position, per entry).
MAX_SPATIAL_AXES = 8
MAX_WINDOW = 1_000

# --- the numerical route (evaluation) ----------------------------------------------------
# Nested-quadrature nodes (function values) of one evaluation of a network's layers
# together, per block of entries the library evaluates (ntkdsl.runtime.hermite's
# _HD_NETWORK_BUDGET, which must equal it): about 1.3 s at 50 million nodes a second, where
# (Dense(8, b_std=2) > Elu) * 20 takes 0.7 s and 200 such layers 2.6 s. Each call also has
# its own 2**24 (_HD_DIRECT_BUDGET). Checked from the grids laid out before φ is
# evaluated; past it a NumericalError names the layer. A standalone module has the per-call
# budget only.
MAX_QUADRATURE_NODES = 2 ** 26

# --- Fn expressions -----------------------------------------------------------------------
MAX_FN_LENGTH = 2_000         # characters of the expression text
MAX_FN_DEPTH = 40             # nesting of calls, operators and signs (a chain a + b + c is one level)
MAX_FN_CALL_DEPTH = 6         # calls inside calls, sin(sin(x)) is 2 (measured: 2 s at 6, 29 s at 8)
MAX_FN_NODES = 400            # nodes of its syntax tree (numbers, names, operators, calls)
# The degree of every power and product an expression forms, by its value (sympy's: (x**20)**2
# is x**40, degree 40), counting each function call of x as one factor (sinh(x)**40 is of
# degree 40, exp(x)**40 = exp(40*x) of degree 1): the polynomial degree the derivation's
# Hermite sums and Gaussian-integration rules expand. As Monomial's MAX_DEGREE (x**100
# compiles in 0.5 s).
MAX_FN_DEGREE = MAX_DEGREE


def number_problem(text: str, value: float) -> str | None:
    """Why the number literal ``text`` (read as ``value``) is refused, or None if fine."""
    if len(text) > MAX_NUMBER_LENGTH:
        return f"a number has at most {MAX_NUMBER_LENGTH} characters, this one has {len(text)}"
    magnitude = abs(value)
    if not math.isfinite(magnitude):
        return (f"{text} is beyond the float64 range (magnitudes up to {FLOAT64_MAX:.17g}); "
                + _MAGNITUDE_RULE)
    if magnitude > MAX_MAGNITUDE or (magnitude < MIN_MAGNITUDE and not _is_zero(text)):
        return f"{text} is out of range: " + _MAGNITUDE_RULE
    return None


_MAGNITUDE_RULE = (f"a number must be 0 or have a magnitude between {MIN_MAGNITUDE:g} and "
                   f"{MAX_MAGNITUDE:g} (write 0 for none)")


def _is_zero(text: str) -> bool:
    """True when the literal is an exact zero (0, 0.0, -0e5), not a value that underflowed."""
    mantissa = text.lower().split("e", 1)[0]
    return not any(ch in "123456789" for ch in mantissa)


def at_most(limit: int, what: str) -> Callable[[int], str | None]:
    """A parameter check: a whole number from 0 to ``limit``."""
    def check(value: int) -> str | None:
        return None if 0 <= value <= limit else f"must be a whole number >= 0 and <= {limit} ({what})"

    return check
