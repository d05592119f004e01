"""The one AST walker: ``children()`` and ``map_children(f)`` on every node type, and the
traversals built on it (layer counts, the finite networks' width rewrite, the activation layers
the derivation applies)."""
from __future__ import annotations

from typing import get_args

import pytest

from ntkdsl.ast import (
    NODE_TYPES,
    Activation,
    Conv,
    Dense,
    Flatten,
    GlobalPool,
    Identity,
    LayerNorm,
    Node,
    Pool,
    Repeat,
    Serial,
    Sum,
)
from ntkdsl.derivation import Composite, activation_layers
from ntkdsl.errors import Span
from ntkdsl.finite import with_width
from ntkdsl.parser import layer_count, parse

SPAN = Span(1, 1, 0, 3)
RELU, SIN = Activation("Relu"), Activation("Sin", (("a", 1.0), ("b", 2.0), ("c", 0.0)))
LEAVES = [Dense(8, 1.5, 0.1, span=SPAN), Identity(span=SPAN), LayerNorm(1e-6, span=SPAN),
          Activation("LeakyRelu", (("alpha", 0.1),), span=SPAN),
          Conv(8, (3, 3), padding="SAME", span=SPAN), Pool("avg", (2,), (2,), span=SPAN),
          GlobalPool("sum", span=SPAN), Flatten(span=SPAN)]
# node, its children as written in the constructor
CONTAINERS = [
    (Serial((Dense(4), RELU, Dense(1)), span=SPAN), (Dense(4), RELU, Dense(1))),
    (Sum((Dense(2), Identity()), span=SPAN), (Dense(2), Identity())),
    (Repeat(Serial((Dense(3), SIN)), 4, span=SPAN), (Serial((Dense(3), SIN)),)),
]


def test_every_node_type_is_covered():
    assert set(get_args(Node)) == set(NODE_TYPES)
    assert {type(n) for n in LEAVES} | {type(n) for n, _ in CONTAINERS} == set(NODE_TYPES)


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda n: type(n).__name__)
def test_a_layer_has_no_children_and_maps_to_itself(leaf):
    assert leaf.children() == ()
    called = []
    assert leaf.map_children(lambda child: called.append(child) or child) is leaf
    assert called == []


@pytest.mark.parametrize("node, expected", CONTAINERS, ids=lambda n: type(n).__name__)
def test_children_are_the_sub_architectures_in_order(node, expected):
    assert node.children() == expected


@pytest.mark.parametrize("node, expected", CONTAINERS, ids=lambda n: type(n).__name__)
def test_map_children_round_trips_and_applies_f_to_each_child_in_order(node, expected):
    same = node.map_children(lambda child: child)
    assert same == node and type(same) is type(node) and same.span == node.span
    seen = []

    def widen(child):
        seen.append(child)
        return Serial((child, Dense(7)))

    mapped = node.map_children(widen)
    assert seen == list(expected)
    assert mapped.children() == tuple(Serial((c, Dense(7))) for c in expected)
    assert type(mapped) is type(node) and mapped.span == node.span
    if isinstance(node, Repeat):
        assert mapped.times == node.times  # everything but the children is kept


def test_map_children_rebuilds_a_parsed_tree_bottom_up():
    """A recursive map_children (every Dense 5 wide) equals the tree parsed from the text with
    the widths changed by hand."""
    def five_wide(node):
        node = node.map_children(five_wide)
        return Dense(5, node.W_std, node.b_std, node.parameterization) if isinstance(node, Dense) else node

    tree = parse("Dense(8, W_std=1.5) > (Relu > Dense(3) + Identity) * 2 > LayerNorm > Dense(1)")
    assert five_wide(tree) == parse(
        "Dense(5, W_std=1.5) > (Relu > Dense(5) + Identity) * 2 > LayerNorm > Dense(5)")


@pytest.mark.parametrize("arch, written_out", [
    ("Dense(2) > Relu", "Dense(2) > Relu"),
    ("(Dense(2) > Relu) * 3 > Dense(1)",
     "Dense(2) > Relu > Dense(2) > Relu > Dense(2) > Relu > Dense(1)"),
    ("Dense(2) > (Relu > Dense(2) + Identity) * 2",
     "Dense(2) > (Relu > Dense(2) + Identity) > (Relu > Dense(2) + Identity)"),
    ("((Relu * 2) * 3 + Identity) > Dense(1)",
     "(Relu > Relu > Relu > Relu > Relu > Relu + Identity) > Dense(1)"),
])
def test_layer_count_equals_the_written_out_text(arch, written_out):
    tree = parse(written_out)
    leaves = sum(1 for _ in _leaves(tree))
    assert layer_count(parse(arch)) == leaves == layer_count(tree)


def _leaves(node):
    children = node.children()
    if not children:
        yield node
    for child in children:
        yield from _leaves(child)


def test_with_width_keeps_the_output_dense_of_branches():
    """The finite networks' width rewrite, through a sum: hidden Dense layers become 9 wide."""
    tree = parse("Dense(4) > (Relu > Dense(4) + Identity) > Dense(1)")
    assert with_width(tree, 9) == parse("Dense(9) > (Relu > Dense(9) + Identity) > Dense(1)")
    tree = parse("(Dense(4) > Relu > Dense(2) + Dense(2)) > Relu")
    assert with_width(tree, 9) == parse("(Dense(9) > Relu > Dense(2) + Dense(2)) > Relu")


def test_activation_layers_are_the_composed_runs_the_derivation_applies():
    tree = parse("Dense(4) > Relu > Sin(b=2.0) > Dense(2) > (Relu > Dense(2) + Identity) "
                 "> (Relu > Sin(b=2.0)) * 2 > Dense(1)")
    assert list(activation_layers(tree)) == [
        Composite((RELU, SIN)), RELU, Composite((RELU, SIN, RELU, SIN))]
