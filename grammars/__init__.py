"""The Lark grammars of ntkdsl: the single source of its syntax (loaded as package data), and
the loader both parsers use — the architecture parser (ntkdsl.parser) and the activation-expression
parser (ntkdsl.expressions), which therefore need nothing from each other."""
from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources

import lark


@cache
def grammar(name: str = "architecture") -> lark.Lark:
    """The compiled Lark parser for one of the grammars in this package (``<name>.lark``)."""
    text = resources.files(__name__).joinpath(f"{name}.lark").read_text()
    return lark.Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def deeper_than(tree: lark.Tree, limit: int,
                level: Callable[[str, str], int] = lambda parent, child: 1) -> lark.Tree | None:
    """The first subtree more than ``limit`` levels deep, or None; iterative, so a deep tree
    cannot exhaust Python's recursion limit before it is refused. ``level(parent, child)``
    (rule names; the root's parent is "") is how many levels a child adds: 1 by default."""
    stack = [(tree, level("", tree.data))]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return node
        stack.extend((child, depth + level(node.data, child.data))
                     for child in node.children if isinstance(child, lark.Tree))
    return None
