"""Kernel gradients: the derivatives of a kernel program with respect to the architecture's
numbers, by forward-mode differentiation of the program itself.

The derivation runs once on a tree whose continuous numbers are ``Parameter`` symbols
(ntkdsl.templates.parameter_tree), so every layer's rule — the same one rule per layer
kind that gives the kernels — yields its map as a function of those numbers. Each step
``v = f(u1, u2, ..., θ)`` then gets, for every parameter θ, the tangent

    dv/dθ = Σᵢ ∂f/∂uᵢ · duᵢ/dθ + ∂f/∂θ,

a new program variable of the tangent role of v's role (ntkdsl.program.TANGENT: the
same inputs, so the same shape) assigned in the same step as v, so code generation's
common-subexpression elimination shares the work of the kernel and of its derivatives
(Γ̇ is ∂Γ/∂k, one helper call gives both). The partial derivatives are sympy's (each
function's ``fdiff``); the structured linear ops of convolutional networks (conv, pools,
flatten, position views) map tangents by themselves. The parameters become scalar inputs
of the program, so it is printed and compiled once per template and evaluated like any
kernel program for any values.
"""
from __future__ import annotations

import sympy as sp
from sympy.core.function import ArgumentIndexError

from . import activations, spatial
from .derivation import Composite, activation_layers
from .errors import ParameterError
from .program import PARAMETER, TANGENT, ElementwiseOp, KernelVariable, Program, Step
from .symbolic import ArcCosine, AtZeroVariance, SeriesWhere
from .templates import Parameter


def tangent_variable(variable: KernelVariable, parameter: Parameter) -> KernelVariable:
    """The variable holding d(variable)/d(parameter): its "layer" is the step and the
    parameter (one variable per role, layer and layout, as code generation expects)."""
    role = TANGENT[variable.role]
    layer = f"{variable.layer}_{parameter.placeholder}"
    return KernelVariable(f"{role.prefix}_{layer}", role, layer, variable.layout, real=True)


class _Differentiator:
    """d(expr)/dθ for one parameter θ, given the tangents of the program's variables
    (``tangents``: variable -> its tangent symbol; variables absent have tangent 0)."""

    def __init__(self, parameter: Parameter, tangents: dict, label: str):
        self.parameter, self.tangents, self.label = parameter, tangents, label
        self.cache: dict[sp.Expr, sp.Expr] = {}

    def depends(self, expr: sp.Expr) -> bool:
        symbols = expr.free_symbols
        return self.parameter in symbols or any(s in self.tangents for s in symbols)

    def __call__(self, expr: sp.Expr) -> sp.Expr:
        expr = sp.sympify(expr)
        if not self.depends(expr):
            return sp.S.Zero
        found = self.cache.get(expr)
        if found is None:
            found = self.cache[expr] = self._tangent(expr)
        return found

    def _tangent(self, expr: sp.Expr) -> sp.Expr:
        if isinstance(expr, sp.Symbol):
            return sp.S.One if expr == self.parameter else self.tangents[expr]
        if isinstance(expr, sp.Add):
            return sp.Add(*(self(a) for a in expr.args))
        if isinstance(expr, sp.Mul):
            args = expr.args
            return sp.Add(*(sp.Mul(*args[:i], self(a), *args[i + 1:])
                            for i, a in enumerate(args) if self.depends(a)))
        if isinstance(expr, sp.Pow):
            base, power = expr.args
            out = power * base ** (power - 1) * self(base)
            if self.depends(power):
                out += expr * sp.log(base) * self(power)
            return out
        if isinstance(expr, spatial.SpatialOp):
            # Linear ops map tangents as they map values; the others (positions, ones)
            # count positions, which no parameter changes.
            return expr.func(self(expr.args[0])) if expr.linear else sp.S.Zero
        if isinstance(expr, spatial.WithDiagonal):
            return expr.func(self(expr.args[0]), self(expr.args[1]))
        if isinstance(expr, AtZeroVariance):
            q, zero, value = expr.args
            return AtZeroVariance(q, self(zero), self(value))
        if isinstance(expr, SeriesWhere):
            # The series is the closed form rearranged (small-variance Mehler sums): the
            # tangent is the closed form's, with the closed form's accuracy.
            return self(expr.args[0])
        if isinstance(expr, sp.Piecewise):
            return sp.Piecewise(*((self(e), c) for e, c in expr.args))
        if isinstance(expr, sp.Function):
            return sp.Add(*(self._partial(expr, i) * self(a)
                            for i, a in enumerate(expr.args, start=1) if self.depends(a)))
        raise ParameterError(f"{self.label}: no derivative of {type(expr).__name__} terms")

    def _partial(self, expr: sp.Function, index: int) -> sp.Expr:
        try:
            partial = expr.fdiff(index)
        except ArgumentIndexError:
            partial = None
        if partial is not None and _infinite_at_collinear(expr):
            # J_0's slope 1/(2 pi sqrt(1 - c^2)), arcsin's and arccos's, are infinite at
            # c = +-1, where the tangent of c is 0 (collinear inputs stay collinear): the
            # product is 0 there, not inf * 0.
            c = expr.args[-1]
            partial = AtZeroVariance(1 - c**2, sp.S.Zero, partial)
        if partial is None or partial.has(sp.Derivative, sp.Subs):
            name = getattr(expr, "label", "") or expr.func.__name__
            raise ParameterError(
                f"{self.label}: {name} has no derivative in its argument {index}, so the "
                f"kernel's derivative with respect to {self.parameter.placeholder} cannot be "
                "derived through this layer",
                hint="on the numerical route, the derivatives of a dual in the variances "
                     "come from Price's theorem, which needs phi and phi' without jumps; "
                     "use an activation whose phi' is continuous or has a closed-form dual")
        return partial


def _infinite_at_collinear(expr: sp.Function) -> bool:
    """Whether the function's slope in its (last) argument, a correlation, is infinite at
    +-1: arcsin, arccos, and the arc-cosine kernel of order 0."""
    if isinstance(expr, ArcCosine):
        return expr.args[0] == 0
    return isinstance(expr, (sp.asin, sp.acos))


def check_numerical_parameters(ast, source: str) -> None:
    """ParameterError for a parameter inside an activation of the numerical route
    (``Elu({a})``): its dual is a Hermite series of one fixed φ, with no derivative in φ's
    own parameters."""
    for layer in activation_layers(ast):
        parts = layer.parts if isinstance(layer, Composite) else (layer,)
        for part in parts:
            names = [v.placeholder for _, v in part.params if isinstance(v, Parameter)]
            # Decided from the registry: building the numerical dual of a φ with a symbol
            # in it is what must not happen.
            if not names or (len(parts) == 1 and activations.lookup(part.name).dual):
                continue
            raise ParameterError(
                f"{part} has no closed-form dual here (it takes the numerical route), so the "
                f"kernel has no derivative with respect to its parameter {names[0]}",
                source=source, span=getattr(part, "span", None),
                hint="differentiate W_std and b_std here, or use an activation with a "
                     "closed-form dual for a learnt parameter (LeakyRelu, ABRelu, Erf, ...)")


def _on_grid(expr: sp.Expr) -> bool:
    """Whether an expression has values at spatial positions (reads a variable that has)."""
    return any(getattr(s, "layout", None) is not None for s in expr.free_symbols)


def parameter_input(parameter: Parameter) -> KernelVariable:
    """The scalar input of generated code that carries a parameter's value (named apart
    from every name code generation makes)."""
    return KernelVariable(f"{PARAMETER.prefix}_{parameter.placeholder}", PARAMETER, None,
                          real=True)


def gradient_program(program: Program, parameters: tuple[Parameter, ...]) -> Program:
    """The program computing its outputs (K, T) and, after them, the derivative of each
    output with respect to each parameter — dK/dθ₁ … dK/dθₚ, then dT/dθ₁ … dT/dθₚ. The
    parameters are further scalar inputs (``parameter_input``), after the program's own,
    so one compiled program serves every value of them."""
    inputs = {p: parameter_input(p) for p in parameters}
    tangents: list[dict] = [{} for _ in parameters]
    steps = []
    for step in program.steps:
        assignments = list(step.assignments)
        ops = [ElementwiseOp(a.target, a.expr.xreplace(inputs)) for a in assignments]
        for parameter, known in zip(parameters, tangents):
            differentiate = _Differentiator(parameter, known, f"step {step.layer}: {step.label}")
            for a in assignments:
                derivative = differentiate(a.expr).xreplace(inputs)
                if derivative == 0:
                    continue
                if a.target.layout is not None and not _on_grid(derivative):
                    # The same at every position (a bias's 2 b_std): on the grid of the
                    # value it is the derivative of, as the derivation places constants.
                    derivative = derivative * spatial.ones(a.target)
                elif isinstance(derivative, sp.Symbol) or derivative.is_number:
                    known[a.target] = derivative  # a copy or a constant: no new variable
                    continue
                target = tangent_variable(a.target, parameter)
                ops.append(ElementwiseOp(target, derivative))
                known[a.target] = target
        steps.append(Step(step.label, tuple(ops), step.note))
    outputs = tuple(sp.sympify(o).xreplace(inputs) for o in program.outputs)
    derivatives = tuple(
        _Differentiator(p, known, "the outputs")(o).xreplace(inputs)
        for o in program.outputs for p, known in zip(parameters, tangents))
    return Program((*program.inputs, *inputs.values()), tuple(steps), outputs + derivatives,
                   program.statistics, program.spatial)


__all__ = ["check_numerical_parameters", "gradient_program", "parameter_input", "tangent_variable"]
