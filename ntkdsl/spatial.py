"""The structured ops of convolutional kernels as sympy functions: linear maps over the
spatial axes of a covariance (convolution, pooling, flattening, global pooling, the
same-position diagonal) and the views the position-pair layout needs.

A kernel program writes a convolution as ``K_2 = 2*conv3x3(K_1) + 1/100``: the op is a
function of one kernel variable with its parameters (filter, strides, padding) fixed in
its class, one class per parameter set, made on first use and cached. Formulas print it by
its ``label``; the NumPy printer (ntkdsl.printing) prints it as a call of its runtime
helper (ntkdsl.runtime.stencil) with the parameters as literals. The variable's layout
(ntkdsl.program: same positions, or all position pairs) is a parameter too, so the helper
knows where the spatial axes are.

Linear ops map 0 to 0 (the NTK of the inputs is 0); every other value of a spatial kernel
variable is an array, so the ops never see another number.
"""
from __future__ import annotations

import copyreg
from functools import cache
from typing import ClassVar

import sympy as sp

from .errors import ArchitectureError, ShapeError, Span
from .symbolic import KernelFunction


class _SpatialClass(type(KernelFunction)):
    """Metaclass of the run-time op classes: each pickles as the recipe that rebuilds it
    (``spatial_op(kind, params)``, cached, so in one process the very class)."""


def _reduce_class(cls: type):
    recipe = cls.__dict__.get("recipe")
    return cls.__qualname__ if recipe is None else (spatial_op, recipe)


copyreg.pickle(_SpatialClass, _reduce_class)

# This process's run-time classes by name, for cloudpickle (see ntkdsl.numerical).
_BY_NAME: dict[str, type] = {}


def __getattr__(name: str) -> type:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


class SpatialOp(KernelFunction, metaclass=_SpatialClass):
    """An op over spatial axes of one kernel variable. Subclasses (one per kind and
    parameters) carry ``helper`` (the runtime function called), ``params`` (its further
    arguments, Python literals), ``label`` (its name in formulas) and ``linear``."""

    nargs = 1
    kind = ""
    helper = ""
    params: ClassVar[tuple] = ()
    label = ""
    latex_label = ""
    linear = True
    view = False  # the helper returns a view of its argument, not a new array
    affine = False  # the helper takes scale and shift: scale * op(x) + shift in one call

    @classmethod
    def eval(cls, x):
        if cls.linear and x.is_zero:
            return sp.S.Zero
        return None

    def _sympystr(self, printer):
        return f"{self.label}({printer._print(self.args[0])})"

    def _latex(self, printer, exp=None):
        text = rf"{self.latex_label}\left({printer._print(self.args[0])}\right)"
        return rf"\left({text}\right)^{{{exp}}}" if exp is not None else text


class PositionView(SpatialOp):
    """Same-position values of x (or x') read at the first (second) position of every
    position pair: in formulas ``q1_1[p]`` and ``q2_1[p']``."""

    view = True
    index = "p"

    def _sympystr(self, printer):
        return f"{printer._print(self.args[0])}[{self.index}]"

    def _latex(self, printer, exp=None):
        text = rf"{printer._print(self.args[0])}[{self.index}]"
        return rf"\left({text}\right)^{{{exp}}}" if exp is not None else text


class WithDiagonal(KernelFunction):
    """A position-pair covariance of an input with itself whose same-position entries are
    ``v`` (exact variances: correlation exactly 1 where both positions are one)."""

    nargs = 2
    helper = "_st_with_diagonal"

    @classmethod
    def eval(cls, x, v):
        if x == v and x.is_number:
            return x
        return None

    def _sympystr(self, printer):
        return f"with_diagonal({printer._print(self.args[0])}, {printer._print(self.args[1])})"

    def _latex(self, printer, exp=None):
        text = (r"\operatorname{with\_diagonal}\left(" + printer._print(self.args[0]) + ", "
                + printer._print(self.args[1]) + r"\right)")
        return rf"\left({text}\right)^{{{exp}}}" if exp is not None else text


def _axes(sizes: tuple[int, ...]) -> str:
    return "x".join(map(str, sizes))


def _tt(text: str) -> str:
    return r"\mathrm{" + text.replace("_", r"\_") + "}"


def _describe(kind: str, params: tuple) -> dict:
    """The class attributes of an op: helper, its parameters, labels, linearity."""
    if kind in ("conv", "pool"):
        window, strides, padding, flag = params
        name = "conv" if kind == "conv" else ("avgpool" if flag else "sumpool")
        suffix = "" if padding == "VALID" else "_" + padding.lower()
        if set(strides) != {1}:
            suffix += f"_stride{_axes(strides)}"
        sizes = _axes(window).replace("x", r"{\times}")
        latex = (rf"\operatorname{{{name}}}_{{{sizes}"
                 + (r",\," + _tt(suffix[1:]) if suffix else "") + "}")
        return {"helper": f"_st_{kind}", "params": params, "label": f"{name}{_axes(window)}{suffix}",
                "latex_label": latex, "affine": True}
    simple = {
        "flatten": ("_st_flatten", "flatten", True),
        "global_pool": ("_st_global_pool", None, True),
        "diagonal": ("_st_diagonal", "diag", True),
        "positions": ("_st_positions", "positions", False),
        "ones": ("_st_ones", "ones", False),
    }
    if kind in simple:
        helper, label, linear = simple[kind]
        if kind == "global_pool":
            label = "globalavgpool" if params[0] else "globalsumpool"
        return {"helper": helper, "params": params, "label": label, "linear": linear,
                "latex_label": rf"\operatorname{{{label}}}"}
    if kind in ("at_first", "at_second"):
        return {"helper": f"_st_{kind}", "params": (), "label": kind,
                "index": "p" if kind == "at_first" else "p'"}
    raise ValueError(f"unknown spatial op {kind!r}")  # pragma: no cover


def spatial_op(kind: str, params: tuple = ()) -> type:
    """The op class of ``kind`` with ``params`` (cached: one class per parameter set):
    'conv' (window, strides, padding, pairs), 'pool' (window, strides, padding, average),
    'flatten' (pairs,), 'global_pool' (average,), 'diagonal', 'at_first', 'at_second',
    'positions' (pairs,), 'ones'."""
    return _op_class(kind, tuple(params))


@cache
def _op_class(kind: str, params: tuple) -> type:
    data = _describe(kind, params)
    base = PositionView if kind in ("at_first", "at_second") else SpatialOp
    name = "Spatial_" + "".join(ch if ch.isalnum() else "_" for ch in f"{kind}_{params}")
    cls = _SpatialClass(name, (base,), {**data, "kind": kind, "recipe": (kind, params),
                                         "__module__": __name__})
    _BY_NAME[name] = cls
    return cls


def conv(x: sp.Expr, window, strides, padding: str, pairs: bool) -> sp.Expr:
    return spatial_op("conv", (tuple(window), tuple(strides), padding, pairs))(x)


def pool(x: sp.Expr, window, strides, padding: str, average: bool) -> sp.Expr:
    return spatial_op("pool", (tuple(window), tuple(strides), padding, average))(x)


def flatten(x: sp.Expr, pairs: bool) -> sp.Expr:
    return spatial_op("flatten", (pairs,))(x)


def global_pool(x: sp.Expr, average: bool) -> sp.Expr:
    return spatial_op("global_pool", (average,))(x)


def diagonal(x: sp.Expr) -> sp.Expr:
    return spatial_op("diagonal")(x)


def at_first(x: sp.Expr) -> sp.Expr:
    return spatial_op("at_first")(x)


def at_second(x: sp.Expr) -> sp.Expr:
    return spatial_op("at_second")(x)


def positions(x: sp.Expr, pairs: bool = False) -> sp.Expr:
    return spatial_op("positions", (pairs,))(x)


def ones(x: sp.Expr) -> sp.Expr:
    return spatial_op("ones")(x)


def with_diagonal(x: sp.Expr, v: sp.Expr) -> sp.Expr:
    return WithDiagonal(x, v)


# ------------------------------------------------------------------- the layers' placement
# Two rules of where spatial layers may go, checked by the kernels' derivation (and their
# evaluation, once the input shape is known) and by finite networks: one wording for both.

def check_valid_window(layer: str, window: tuple[int, ...], sizes: tuple[int, ...], *,
                       source: str, span: Span | None,
                       inputs: tuple[int, ...] | None = None) -> None:
    """A 'VALID' filter or pooling ``window`` of ``layer`` (as written, at ``span`` of
    ``source``) must fit the positions it meets, ``sizes`` (one per spatial axis; the
    network's ``inputs``, where given, are named too): else a ShapeError."""
    if all(n >= w for n, w in zip(sizes, window)):
        return
    given = "" if inputs is None else f" (the inputs are {shape_text(inputs)})"
    raise ShapeError(
        f"{layer} has a window of {shape_text(window)} positions with padding 'VALID', "
        f"larger than its input here, {shape_text(sizes)}{given}, which leaves no output "
        "position", source=source, span=span,
        hint=f"use a window of at most {shape_text(sizes)} positions, padding='SAME' or "
             "'CIRCULAR', or larger inputs")


def no_spatial_axes(layer: str, after: str, *, source: str, span: Span | None) -> ArchitectureError:
    """The error for a convolution or pooling ``layer`` (as written, at ``span``) placed
    after ``after``, a layer that leaves no spatial axes (Flatten, a global pool, Dense of
    a fully-connected network)."""
    return ArchitectureError(
        f"{layer} follows {after}, which leaves no spatial axes", source=source, span=span,
        hint="convolutions and pooling come before Flatten or a global pool, e.g. "
             "Conv(32, (3, 3)) > Relu > GlobalAvgPool > Dense(1)")


def shape_text(sizes: tuple[int, ...]) -> str:
    """Positions as ``4 x 4``."""
    return " x ".join(map(str, sizes))
