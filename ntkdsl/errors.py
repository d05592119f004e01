"""ntkdsl's exceptions: one base class, one subclass per kind of mistake.

Every error a user can cause is one of these. Errors about a piece of an architecture
string carry its position and render the offending line with a caret underneath, so a
message always says *where* the problem is and *what would be valid*.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Span:
    """A region of source text: 1-based line and column, 0-based character offsets."""

    line: int
    column: int
    start: int
    end: int

    @classmethod
    def at(cls, source: str, start: int, end: int) -> Span:
        """The span of ``source[start:end]``, with its line and column counted."""
        line = source.count("\n", 0, start) + 1
        column = start - (source.rfind("\n", 0, start) + 1) + 1
        return cls(line, column, start, end)


class NTKDSLError(Exception):
    """Base class of every exception ntkdsl raises on purpose."""

    def __init__(self, message: str, *, source: str | None = None, span: Span | None = None,
                 hint: str | None = None):
        self.message = message
        self.source = source
        self.span = span
        self.hint = hint
        super().__init__(self._render())

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    def _render(self) -> str:
        parts = []
        if self.span is not None:
            parts.append(f"line {self.span.line}, column {self.span.column}: {self.message}")
        else:
            parts.append(self.message)
        if self.source is not None and self.span is not None:
            parts.append(caret_excerpt(self.source, self.span))
        if self.hint:
            parts.append(self.hint)
        return "\n".join(parts)


def caret_excerpt(source: str, span: Span) -> str:
    """The source line holding ``span`` with carets under the spanned characters."""
    lines = source.split("\n")
    text = lines[span.line - 1] if 0 < span.line <= len(lines) else ""
    line_start = sum(len(line) + 1 for line in lines[: span.line - 1])
    width = max(1, min(span.end, line_start + len(text)) - span.start)
    return f"    {text}\n    {' ' * (span.column - 1)}{'^' * width}"


class ArchitectureSyntaxError(NTKDSLError, SyntaxError):
    """The architecture string (or an Fn expression) does not follow the grammar."""


class UnknownLayerError(NTKDSLError, NameError):
    """A layer name that is not in the registry."""


class LayerArgumentError(NTKDSLError, TypeError):
    """A layer got an unknown, missing, duplicated or mistyped argument."""


class LayerValueError(NTKDSLError, ValueError):
    """A layer argument has the right type but an invalid value (negative std, bad degree...)."""


class ArchitectureError(NTKDSLError, ValueError):
    """The architecture parses but has no well-defined infinite-width kernel as written
    (an activation on raw inputs, correlated branches, ...)."""


class ExpressionError(NTKDSLError, ValueError):
    """An activation expression (Fn) that is not a real function of x with finite
    Gaussian moments."""


class InputError(NTKDSLError, ValueError):
    """Input arrays of the wrong shape, dtype or with non-finite values."""


class NumericalError(NTKDSLError, ArithmeticError):
    """A computation that cannot be carried out reliably (singular kernel, overflow...)."""


class ShapeError(InputError):
    """Arrays whose shapes do not fit together."""


class ParameterError(InputError):
    """A kernel gradient asked of a number the architecture does not have, of an integer
    (a width, a degree, a repeat count), or of a template with no placeholders."""


# Exceptions that must also be scikit-learn's classes, so that scikit-learn's own checks
# (GridSearchCV, check_is_fitted users, check_estimator) recognise them. scikit-learn takes
# about a second to import, so these are made on first use: ``from ntkdsl.errors import
# NotFittedError`` (or ``ntkdsl.errors.NotFittedError``) imports it then.
_SKLEARN_BASED = ("NotFittedError",)


def __getattr__(name: str):
    if name in _SKLEARN_BASED:
        return _not_fitted_error_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _not_fitted_error_class() -> type:
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(NTKDSLError, SklearnNotFittedError):
        """An estimator used before ``fit``: both ntkdsl's error and scikit-learn's
        NotFittedError (itself a ValueError and an AttributeError)."""

    NotFittedError.__module__ = __name__
    NotFittedError.__qualname__ = "NotFittedError"
    return NotFittedError
