"""Architecture strings to typed ASTs: the grammar (grammars/architecture.lark) gives the
syntax, the one Transformer below gives the meaning."""
from __future__ import annotations

import lark
from lark import Transformer, v_args

from . import limits
from .ast import Node, Repeat, Serial, Sum
from .errors import ArchitectureSyntaxError, LayerArgumentError, LayerValueError, Span
from .grammars import deeper_than, grammar
from .layers import build_layer
from .params import Arg

_TOKEN_NAMES = {
    "NAME": "a layer name", "SIGNED_NUMBER": "a number", "INT": "a whole number",
    "STRING": "a quoted string", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "COMMA": "','", "EQUAL": "'='", "MORETHAN": "'>'", "PLUS": "'+'", "STAR": "'*'",
    "$END": "the end of the text",
}


def _span(meta) -> Span:
    return Span(meta.line, meta.column, meta.start_pos, meta.end_pos)


def _token_span(token: lark.Token) -> Span:
    return Span(token.line, token.column, token.start_pos, token.end_pos)


def unescape(literal: str) -> str:
    """The text of a quoted string literal; only \\\\, \\", \\', \\n and \\t are escapes."""
    body, out, i = literal[1:-1], [], 0
    escapes = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


_CONSTANTS = {"true": True, "false": False, "none": None}


class _Value:
    """A parsed argument value with its span (unwrapped when arguments are bound)."""

    __slots__ = ("span", "value")

    def __init__(self, value, span: Span):
        self.value, self.span = value, span


class ToAST(Transformer):
    """Parse tree -> AST. Every node records its span for later error messages."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def number(self, children):
        (tok,) = children
        text = str(tok)
        check_number(text, self.source, _token_span(tok))
        is_int = all(ch.isdigit() or ch in "+-" for ch in text)
        return _Value(int(text) if is_int else float(text), _token_span(tok))

    def string(self, children):
        (tok,) = children
        return _Value(unescape(str(tok)), _token_span(tok))

    def constant(self, children):
        (tok,) = children
        if str(tok).lower() not in _CONSTANTS:
            raise LayerArgumentError(
                f"'{tok}' is not a value", source=self.source, span=_token_span(tok),
                hint="valid values: numbers, quoted strings, [lists], (tuples,), True, False, "
                     "None")
        return _Value(_CONSTANTS[str(tok).lower()], _token_span(tok))

    @v_args(meta=True)
    def list(self, meta, children):
        """A list ``[a, b]`` or a tuple ``(a, b)``, ``(a,)``: both are a Python tuple."""
        items = [c for c in children if c is not None]
        for item in items:
            if isinstance(item.value, tuple):
                raise LayerArgumentError("lists and tuples cannot be nested", source=self.source,
                                         span=item.span,
                                         hint="valid: a flat list [0.1, 1.0] or tuple (3, 3)")
        return _Value(tuple(item.value for item in items), _span(meta))

    tuple = list

    @v_args(meta=True)
    def keyword(self, meta, children):
        name, value = children
        return Arg(str(name), value.value, _span(meta))

    def arguments(self, children):
        return [c if isinstance(c, Arg) else Arg(None, c.value, c.span)
                for c in children if c is not None]

    @v_args(meta=True)
    def layer(self, meta, children):
        name, args = children
        return build_layer(str(name), args or [], self.source, _span(meta))

    @v_args(meta=True)
    def serial(self, meta, children):
        return Serial(tuple(children), span=_span(meta))

    @v_args(meta=True)
    def branches(self, meta, children):
        return Sum(tuple(children), span=_span(meta))

    @v_args(meta=True)
    def repeat(self, meta, children):
        body, times = children
        # The length first: int() of thousands of digits is slow, and refused past 4300.
        if len(times) > limits.MAX_NUMBER_LENGTH or int(times) > limits.MAX_REPEAT:
            raise LayerValueError(
                f"a repeat count must be at most {limits.MAX_REPEAT}, got {_shortened(times)}",
                source=self.source, span=_token_span(times),
                hint=f"at most {limits.MAX_LAYERS} layers in all, with repeats written out")
        if int(times) < 1:
            raise ArchitectureSyntaxError("a repeat count must be >= 1", source=self.source,
                                          span=_token_span(times))
        return Repeat(body, int(times), span=_span(meta))


def _shortened(text: str, keep: int = 20) -> str:
    """A long literal cut for a message (the caret shows all of it)."""
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def check_number(text: str, source: str, span: Span) -> None:
    """Refuse a number literal that is too long, beyond float64 or out of
    ntkdsl's magnitude range (ntkdsl.limits), with a caret under it."""
    value = float(text) if len(text) <= limits.MAX_NUMBER_LENGTH else 0.0
    problem = limits.number_problem(text, value)
    if problem:
        raise LayerValueError(problem, source=source, span=span)


def _syntax_error(source: str, err: lark.exceptions.UnexpectedInput) -> ArchitectureSyntaxError:
    pos = getattr(err, "pos_in_stream", None) or 0
    token = getattr(err, "token", None)
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        found = repr(source[pos]) if pos < len(source) else "the end"
        end = pos + 1
    elif token is not None and token.type == "$END":
        found, pos, end = "the end of the text", len(source), len(source) + 1
    else:
        found, pos = repr(str(token)), token.start_pos
        end = token.end_pos
    expected = sorted({_TOKEN_NAMES.get(t, t) for t in (getattr(err, "expected", None)
                                                          or getattr(err, "allowed", None) or ())})
    hint = ("expected " + " or ".join(expected)) if expected else None
    return ArchitectureSyntaxError(f"unexpected {found}", source=source,
                                   span=Span.at(source, pos, end), hint=hint)


def parse(source: str) -> Node:
    """The AST of an architecture string, or an ntkdsl error pointing at the problem."""
    if not isinstance(source, str):
        raise ArchitectureSyntaxError(
            f"an architecture is a string such as \"Dense(512) > Relu > Dense(1)\", "
            f"got {type(source).__name__}")
    if not source.strip():
        raise ArchitectureSyntaxError("the architecture string is empty",
                                      hint="e.g. \"Dense(512) > Relu > Dense(1)\"")
    if len(source) > limits.MAX_SOURCE_LENGTH:
        raise ArchitectureSyntaxError(
            f"the architecture string has {len(source)} characters; the limit is "
            f"{limits.MAX_SOURCE_LENGTH}", source=source,
            span=Span.at(source, limits.MAX_SOURCE_LENGTH, limits.MAX_SOURCE_LENGTH + 1),
            hint="write long repeated chains with \"* N\", e.g. (Dense(512) > Relu) * 100")
    try:
        tree = grammar().parse(source)
    except lark.exceptions.UnexpectedInput as err:
        raise _syntax_error(source, err) from None
    too_deep = deeper_than(tree, limits.MAX_NESTING)
    if too_deep is not None:
        raise ArchitectureSyntaxError(
            f"the architecture is nested more than {limits.MAX_NESTING} levels deep",
            source=source, span=_span(too_deep.meta),
            hint="write a deep chain without nesting, e.g. A > B > C, or with \"* N\"")
    try:
        ast = ToAST(source).transform(tree)
    except lark.exceptions.VisitError as err:
        if isinstance(err.orig_exc, Exception) and hasattr(err.orig_exc, "span"):
            raise err.orig_exc from None
        raise
    _check_layer_count(ast, source)
    return ast


def layer_count(node: Node) -> int:
    """Layers of ``node`` with every repeat written out (counted, never expanded)."""
    parts = node.children()
    if not parts:
        return 1
    count = sum(layer_count(part) for part in parts)
    return node.times * count if isinstance(node, Repeat) else count


def _check_layer_count(ast: Node, source: str) -> None:
    total = layer_count(ast)
    if total <= limits.MAX_LAYERS:
        return
    # Point at the innermost construct that is over the limit on its own.
    node = ast
    while True:
        inner = [p for p in node.children() if layer_count(p) > limits.MAX_LAYERS]
        if not inner:
            break
        node = inner[0]
    raise LayerValueError(
        f"this architecture has {total} layers once its repeats are written out; the limit "
        f"is {limits.MAX_LAYERS}", source=source, span=node.span,
        hint="use fewer or shorter repeats")
