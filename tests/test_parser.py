"""The architecture language: every construct parses to the right AST, every mistake
raises ntkdsl's own exception pointing at the place."""
import pytest

import ntkdsl
from ntkdsl.ast import (
    Activation,
    Conv,
    Dense,
    Flatten,
    GlobalPool,
    Identity,
    LayerNorm,
    Pool,
    Repeat,
    Serial,
    Sum,
)
from ntkdsl.errors import (
    ArchitectureError,
    ArchitectureSyntaxError,
    LayerArgumentError,
    LayerValueError,
    NTKDSLError,
    UnknownLayerError,
)
from ntkdsl.parser import parse


def test_serial_with_positional_and_keyword_arguments():
    ast = parse("Dense(512, W_std=1.5, b_std=0.1) > Relu > Dense(1)")
    assert ast == Serial((Dense(512, 1.5, 0.1), Activation("Relu"), Dense(1)))


def test_standard_parameterization_and_strings():
    ast = parse("Dense(256, parameterization='standard') > Erf > Dense(1, parameterization=\"ntk\")")
    assert ast.layers[0].parameterization == "standard"
    assert ast.layers[2].parameterization == "ntk"


def test_precedence_sum_loosest_then_serial_then_repeat():
    ast = parse("Dense(512) > (Relu > Dense(512) + Identity) * 2 > Relu")
    rep = ast.layers[1]
    assert isinstance(rep, Repeat) and rep.times == 2
    assert rep.body == Sum((Serial((Activation("Relu"), Dense(512))), Identity()))
    top = parse("Dense(4) + Dense(5) > Dense(6)")
    assert isinstance(top, Sum) and top.branches[1] == Serial((Dense(5), Dense(6)))


def test_repeat_binds_tighter_than_serial():
    ast = parse("Dense(8) > Relu * 3")
    assert ast.layers[1] == Repeat(Activation("Relu"), 3)


def test_lists_numbers_and_case_insensitive_names():
    assert parse("polynomial([0.1, 1, -0.5e-1])") == Activation("Polynomial",
                                                               (("coef", (0.1, 1.0, -0.05)),))
    assert parse("LEAKYRELU(0.1)") == Activation("LeakyRelu", (("alpha", 0.1),))
    assert parse("erf(a=2.0, b=0.5, c=0.1)").kwargs == {"a": 2.0, "b": 0.5, "c": 0.1}
    assert parse("Erf").kwargs == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert parse("layernorm") == LayerNorm()
    assert parse("Gelu(approximate=True)").kwargs == {"approximate": True}
    assert parse("Dense(3, b_std=None)") == Dense(3)


def test_multiline_and_whitespace():
    assert parse("Dense(512)\n  > Relu\n  > Dense(1)\n") == parse("Dense(512)>Relu>Dense(1)")


@pytest.mark.parametrize("text", [
    "Dense(512) > Relu > Dense(1)",
    "Dense(512, W_std=1.5, b_std=0.1) > (Relu > Dense(512) + Identity) * 3 > Relu",
    "(Dense(8, parameterization='standard') > Erf(a=2.0)) * 2 > LayerNorm > Dense(1)",
    "Dense(4) > Polynomial([0.1, 1.0]) > Dense(1)",
])
def test_printing_round_trips(text):
    ast = parse(text)
    assert parse(str(ast)) == ast


def _error(text):
    with pytest.raises(NTKDSLError) as info:
        ntkdsl.compile(text)
    return info.value


@pytest.mark.parametrize("text, cls, line, column, fragment", [
    ("Dense(512) >> Relu", ArchitectureSyntaxError, 1, 13, "expected"),
    ("Dense(512,", ArchitectureSyntaxError, 1, 11, "end of"),
    ("Dense(512) > ", ArchitectureSyntaxError, 1, 14, "a layer name"),
    ("Dense(512) @ 3", ArchitectureSyntaxError, 1, 12, "'@'"),
    ("Dense(8) > Relu * 0", ArchitectureSyntaxError, 1, 19, ">= 1"),
    ("Dense(512) > Rleu > Dense(1)", UnknownLayerError, 1, 14, "did you mean 'Relu'"),
    ("Dense(512)\n > Tanhh", UnknownLayerError, 2, 4, "valid layers"),
    ("Dense(512, w_std=2)", LayerArgumentError, 1, 12, "no argument 'w_std'"),
    ("Dense(512, W_std=1, W_std=2)", LayerArgumentError, 1, 21, "given twice"),
    ("Dense(W_std=1.0)", LayerArgumentError, 1, 1, "needs the argument 'out_dim'"),
    ("Dense(1, 2, 3, 'ntk', 5)", LayerArgumentError, 1, 23, "at most 4"),
    ("Dense(512, W_std='big')", LayerArgumentError, 1, 12, "must be a number"),
    ("Dense(512.5)", LayerArgumentError, 1, 7, "whole number"),
    ("Dense(-3)", LayerValueError, 1, 7, ">= 1"),
    ("Dense(3, W_std=-1.0)", LayerValueError, 1, 10, ">= 0"),
    ("Dense(3, b_std=-0.1)", LayerValueError, 1, 10, ">= 0"),
    ("Dense(3, parameterization='wide')", LayerValueError, 1, 10, "'ntk', 'standard'"),
    ("Dense(3) > Monomial(2.5)", LayerArgumentError, 1, 21, "whole number"),
    ("Dense(3) > Monomial(-1)", LayerValueError, 1, 21, ">= 0"),
    ("Dense(3) > Polynomial([])", LayerArgumentError, 1, 23, "list of numbers"),
    ("Dense(3) > Polynomial([[1]])", LayerArgumentError, 1, 24, "nested"),
    ("Dense(3) > Erf(a=yes)", LayerArgumentError, 1, 18, "not a value"),
    ("Dense(3, W_std=1 b_std=2)", ArchitectureSyntaxError, 1, 18, "unexpected"),
    ("Relu > Dense(1)", ArchitectureError, 1, 1, "raw inputs"),
    ("Dense(3) > (Relu + Erf)", ArchitectureError, 1, 13, "correlated"),
    ("Dense(3) > (Relu + Identity)", ArchitectureError, 1, 13, "correlated"),
    ("Dense(3) > (Dense(4) + Dense(5))", ArchitectureError, 1, 13, "same width"),
    ("Dense(3) > Relu > LayerNorm", ArchitectureError, 1, 19, "LayerNorm needs Gaussian"),
])
def test_errors_point_at_the_place(text, cls, line, column, fragment):
    err = _error(text)
    assert type(err) is cls
    assert (err.line, err.column) == (line, column), str(err)
    assert fragment in str(err)
    if err.span is not None:
        caret_line = str(err).splitlines()[2]
        assert caret_line.strip().startswith("^")
        assert caret_line.index("^") - 4 == column - 1


def test_error_messages_are_ntkdsl_exceptions_not_library_tracebacks():
    for bad in ["", "   ", "(", ")", "Dense(", "Dense(1))", "'x'", "[1, 2]", "Dense(1) + ",
                "Dense(1) * 2.5", "Dense(1) * x", "Dense(1e999)", "Dense(1)\x00"]:
        with pytest.raises(NTKDSLError):
            ntkdsl.compile(bad)


def test_non_string_architecture():
    with pytest.raises(ArchitectureSyntaxError, match="string"):
        ntkdsl.compile(42)


def test_valid_sums_of_independent_branches():
    # One free branch beside Dense-ended ones, Identity beside a Dense: exact sums.
    for text in ["Dense(3) > (Relu > Dense(3) + Identity) > Relu",
                 "Dense(3) > (Dense(3) + Dense(3) + Relu > Dense(3)) > Erf",
                 "Dense(3) > (Relu + Dense(3))"]:
        ntkdsl.compile(text)


def test_repeats_nest_and_print_back_as_written():
    ast = parse("Dense(8) > Relu * 2 * 3 > (Relu > Sin) * 2")
    assert ast.layers[1] == Repeat(Repeat(Activation("Relu"), 2), 3)
    assert isinstance(ast.layers[2], Repeat) and ast.layers[2].body == Serial(
        (Activation("Relu"), parse("Sin")))
    assert parse(str(ast)) == ast  # the printed text parses back to the same tree


# --- convolutional layers: the language (issue 14) -------------------------------------

def test_conv_and_pool_layers_parse_with_tuples_and_neural_tangents_defaults():
    ast = parse("Conv(8, (3, 3), padding='SAME', W_std=1.5, b_std=0.1) > Relu > "
                "AvgPool((2, 2), strides=(2, 2)) > conv(4, [5], parameterization='standard') > "
                "SumPool((2,)) > GlobalAvgPool > GlobalSumPool > Flatten")
    conv, _, avg, conv1d, sum_pool, gap, gsp, flatten = ast.layers
    assert conv == Conv(8, (3, 3), (1, 1), "SAME", 1.5, 0.1, "ntk")
    assert avg == Pool("avg", (2, 2), (2, 2), "VALID")
    assert conv1d == Conv(4, (5,), None, "VALID", 1.0, None, "standard")
    assert conv1d.strides == (1,)            # None is a stride of 1 on every axis
    assert sum_pool == Pool("sum", (2,))
    assert (gap, gsp, flatten) == (GlobalPool("avg"), GlobalPool("sum"), Flatten())


@pytest.mark.parametrize("text", [
    "Conv(8, (3, 3), strides=(2, 1), padding='CIRCULAR', W_std=1.4) > Relu > GlobalAvgPool > Dense(1)",
    "Conv(16, (3,), b_std=0.05, parameterization='standard') > Erf > SumPool((2,), padding='SAME')",
    "Conv(8, (2, 2)) > (Relu > Conv(8, (1, 1)) + Identity) * 2 > AvgPool((2, 2)) > Flatten",
])
def test_conv_printing_round_trips(text):
    ast = parse(text)
    assert parse(str(ast)) == ast


@pytest.mark.parametrize("text, cls, column, fragment", [
    ("Conv(8, 3)", LayerArgumentError, 9, "tuple of whole numbers"),
    ("Conv(8, (3.5,))", LayerArgumentError, 9, "tuple of whole numbers"),
    ("Conv(8, (0, 3))", LayerValueError, 9, ">= 1"),
    ("Conv(8, (3, 3), strides=(2,))", LayerValueError, 17, "'strides' has 1 axes"),
    ("AvgPool((2, 2), strides=(0, 1))", LayerValueError, 17, ">= 1"),
    ("AvgPool((2, 2), padding='FULL')", LayerValueError, 17, "'VALID', 'SAME', 'CIRCULAR'"),
    ("Conv(8, (1, 2, 3, 4, 5, 6, 7, 8, 9))", LayerValueError, 9, "at most 8 spatial axes"),
    ("Conv(8, (1001,))", LayerValueError, 9, "<= 1000"),
    ("Conv(8, (3, (3,)))", LayerArgumentError, 13, "cannot be nested"),
    ("Conv(8, (3))", ArchitectureSyntaxError, 11, "expected ','"),
    ("SumPool()", LayerArgumentError, 1, "needs the argument 'window_shape'"),
])
def test_conv_argument_errors_point_at_the_place(text, cls, column, fragment):
    with pytest.raises(NTKDSLError) as info:
        parse(text)
    err = info.value
    assert type(err) is cls
    assert (err.line, err.column) == (1, column), str(err)
    assert fragment in str(err)
