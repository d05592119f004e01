"""Architecture templates: ``{name}`` placeholders, their values, and the numbers they fill.

``ArchTemplate("(Dense(512, W_std={w}) > Relu) * {L} > Dense(1)", w=1.5, L=2)`` is the
architecture with every placeholder filled in (``render``). For kernel gradients a
placeholder also names a continuous number of the network: ``parameter_tree`` finds, in the
typed AST, every field a placeholder fills — by parsing the template once with its values
and once per placeholder with that value nudged, and comparing the trees field by field —
and returns the tree with those fields replaced by ``Parameter`` symbols, from which the
derivation builds the kernel as a function of them (ntkdsl.tangents). A placeholder that
fills an integer (a width, a degree, a repeat count) is refused: its kernel has no
derivative.
"""
from __future__ import annotations

import dataclasses
import numbers
import string
from dataclasses import dataclass

from .ast import Activation, Node, _Layer
from .errors import InputError, NTKDSLError, ParameterError
from .parser import parse
from .symbolic import AttributedSymbol


def arch_placeholders(template: str) -> list[str]:
    """Names of the ``{name}`` placeholders of an architecture template, in order.

    Raises InputError for positional ``{}`` fields, attribute/index fields or unbalanced braces.
    """
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise InputError(f"arch template {template!r}: {err}; placeholders are written "
                         "{name}, literal braces {{ and }}") from None
    for field in fields:
        if not field.isidentifier():
            raise InputError(f"arch template {template!r}: placeholder {{{field}}} must be "
                             "a name such as {L} or {w}")
    return list(dict.fromkeys(fields))


class ArchTemplate:
    """An architecture string with ``{name}`` placeholders and their values.

    It exposes the placeholders as nested parameters, the way scikit-learn exposes the
    parameters of a Pipeline step, so GridSearchCV can search them as ``arch__<name>``::

        arch = ArchTemplate("(Dense(512, W_std={w}) > Relu) * {L} > Dense(1)", w=1.5, L=2)
        GridSearchCV(NTKRegressor(arch), {"arch__L": [1, 2, 4], "arch__w": [1.0, 1.5]})

    ``ntkdsl.compile(arch, gradients=["w"])`` gives the kernels' derivatives with respect to
    the continuous placeholders named (README "Learning the architecture's numbers").
    """

    def __init__(self, template: str, **values):
        if not isinstance(template, str):
            raise InputError(f"ArchTemplate needs a string, got {type(template).__name__}")
        names = arch_placeholders(template)
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise InputError(f"ArchTemplate got values for {unknown}, which are not "
                             f"placeholders of {template!r}; its placeholders are {names}")
        self.template = template
        self.values = {name: values.get(name) for name in names}

    def get_params(self, deep=True):
        """The template and the value of every placeholder (scikit-learn protocol)."""
        return {"template": self.template, **self.values}

    def set_params(self, **params):
        """Change placeholder values (or the template) by name."""
        template = params.pop("template", self.template)
        merged = {**self.values, **params}
        self.__init__(template, **{k: v for k, v in merged.items()
                                   if k in arch_placeholders(template)})
        unknown = sorted(set(params) - set(self.values))
        if unknown:
            raise InputError(f"{unknown} are not placeholders of {template!r}; valid: "
                             f"{sorted(self.values)}")
        return self

    def render(self) -> str:
        """The architecture string with every placeholder filled in."""
        missing = [name for name, value in self.values.items() if value is None]
        if missing:
            raise InputError(f"arch template {self.template!r} has no value for "
                             f"{', '.join('{' + m + '}' for m in missing)}; pass "
                             f"ArchTemplate(..., {missing[0]}=...)")
        return self.template.format(**self.values)

    def __repr__(self) -> str:
        values = "".join(f", {k}={v!r}" for k, v in self.values.items())
        return f"ArchTemplate({self.template!r}{values})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ArchTemplate) and other.get_params() == self.get_params()

    __hash__ = None


class Parameter(AttributedSymbol):
    """A continuous number of an architecture, by the placeholder that fills it: a real
    symbol that equals no other symbol (not even a plain one of its name)."""

    attributes = ("placeholder",)
    placeholder: str

    def __new__(cls, placeholder: str):
        return super().__new__(cls, placeholder, placeholder, real=True)


@dataclass(frozen=True)
class ParameterTree:
    """The architecture (``arch``, the template filled in) with its ``parameters``
    (in the order asked for), their ``values``, and ``ast``: the typed tree in which every
    field a parameter fills holds that parameter's symbol."""

    arch: str
    parameters: tuple[Parameter, ...]
    values: tuple[float, ...]
    ast: Node


def _nudged(value) -> float:
    """A value near ``value`` that no architecture writes by chance, of the same sign."""
    number = float(value)
    return number * (1 + 2.0 ** -20) + (2.0 ** -30 if number >= 0 else -2.0 ** -30)


def parameter_tree(template, names) -> ParameterTree:
    """The tree of ``template`` (an ArchTemplate, or anything with ``template`` and
    ``values``) with the placeholders ``names`` as symbols. ParameterError for a name that
    is not a placeholder, one without a value, one that fills an integer or fills nothing,
    and a template without placeholders."""
    text, values = template.template, dict(template.values)
    if not values:
        raise ParameterError(f"arch template {text!r} has no placeholders, so it has no "
                             "numbers to differentiate",
                             hint="write the numbers to learn as placeholders, e.g. "
                                  "ArchTemplate('Dense(512, W_std={w}) > Relu > Dense(1)', w=1.0)")
    names = _checked_names(names, values, text)
    arch = template.render()
    base = parse(arch)  # every call: the values' own checks (ranges, limits)
    symbols = tuple(Parameter(n) for n in names)
    key = (text, names, tuple((k, v) for k, v in values.items() if k not in names),
           tuple((type(values[n]), int(values[n] > 0) - int(values[n] < 0)) for n in names))
    ast = _SYMBOL_TREES.get(key)
    if ast is None:
        ast = base
        for name, symbol in zip(names, symbols):
            ast = _with_symbol(ast, base, _nudged_tree(template, name), symbol)
            if ast is None:
                raise ParameterError(f"placeholder {{{name}}} of {text!r} fills no number "
                                     "of the architecture")
        if len(_SYMBOL_TREES) >= 256:
            _SYMBOL_TREES.clear()
        _SYMBOL_TREES[key] = ast
    return ParameterTree(arch, symbols, tuple(float(values[n]) for n in names), ast)


# The tree with symbols, by template, parameters, the other placeholders' values and the
# parameters' types and signs: where a parameter's fields are does not depend on its value,
# so an optimiser's new values (one parse each, for their checks) need no nudged parses.
# (The tree's spans are those of the first values' text: errors about it are raised on
# that first call.)
_SYMBOL_TREES: dict = {}


def _checked_names(names, values: dict, text: str) -> tuple[str, ...]:
    if isinstance(names, str):
        names = [names]
    names = tuple(names)
    valid = ", ".join(values)
    if not names:
        raise ParameterError("gradients=[] names no placeholder",
                             hint=f"name some of the placeholders of {text!r}: {valid}")
    for name in names:
        if not isinstance(name, str) or name not in values:
            raise ParameterError(f"{name!r} is not a placeholder of {text!r}",
                                 hint=f"its placeholders are {valid}")
        if isinstance(values[name], bool) or not isinstance(values[name], numbers.Real):
            raise ParameterError(f"placeholder {{{name}}} has the value {values[name]!r}; "
                                 "a gradient needs a number", hint=f"give {name}=<number>")
    if len(set(names)) != len(names):
        raise ParameterError(f"gradients={list(names)} names a placeholder twice")
    return names


def _nudged_tree(template, name: str) -> Node:
    values = dict(template.values)
    integer = isinstance(values[name], numbers.Integral)
    values[name] = _nudged(values[name])
    try:
        return parse(template.template.format(**values))
    except NTKDSLError:
        if not integer:
            raise
    raise ParameterError(
        f"placeholder {{{name}}} = {template.values[name]!r} fills an integer of the "
        f"architecture {template.template!r} (a width, a degree or a repeat count), which "
        "has no derivative", hint="differentiate continuous numbers only (W_std, b_std, an "
                                  "activation's parameters); search integers by grid or CV")


def _with_symbol(ast: Node, base: Node, nudged: Node, symbol: Parameter) -> Node | None:
    """``ast`` with ``symbol`` in every field where ``nudged`` differs from ``base`` (the
    three trees have one shape); None if there is no such field."""
    found = [False]

    def walk(node: Node, a: Node, b: Node) -> Node:
        if isinstance(node, _Layer):
            return _layer_with_symbol(node, a, b, symbol, found)
        children = iter([walk(n, x, y) for n, x, y in
                         zip(node.children(), a.children(), b.children())])
        return node.map_children(lambda _: next(children))

    out = walk(ast, base, nudged)
    return out if found[0] else None


def _layer_with_symbol(node, a, b, symbol: Parameter, found: list) -> Node:
    changes = {}
    for field in dataclasses.fields(node):
        if field.name == "span":
            continue
        old, new = getattr(a, field.name), getattr(b, field.name)
        if old == new:
            continue
        if isinstance(node, Activation) and field.name == "params":
            changes["params"] = tuple(
                (key, _differing(value, old_value, new_value, symbol, node))
                for (key, value), (_, old_value), (_, new_value)
                in zip(node.params, old, new))
        elif isinstance(old, (int, float)) and not isinstance(old, bool):
            changes[field.name] = symbol
        else:
            raise ParameterError(f"placeholder {{{symbol.placeholder}}} fills {field.name} "
                                 f"of {a}, which is not a number to differentiate")
    if changes:
        found[0] = True
        return dataclasses.replace(node, **changes)
    return node


def _differing(value, old, new, symbol: Parameter, node):
    if old == new:
        return value
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        return symbol
    raise ParameterError(f"placeholder {{{symbol.placeholder}}} fills a list of {node}; "
                         "only single numbers can be differentiated")


__all__ = ["ArchTemplate", "Parameter", "ParameterTree", "arch_placeholders", "parameter_tree"]
