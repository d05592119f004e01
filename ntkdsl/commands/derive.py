"""ntkdsl derive ARCH: the NNGP and NTK of an architecture as formulas, layer by layer.

Each layer's map is printed with its intermediate quantities named: the correlation c_l of
the layer's input pair, its angle theta_l = arccos(c_l), and shared subexpressions z1,
z2, ...; so a deep network prints as many short lines, not one growing expression.
"""
from __future__ import annotations

import argparse
import sys

from ..kinds import KINDS
from .options import add_arch, add_command

EXAMPLES = """
  ntkdsl derive "Dense(512) > Relu > Dense(1)"
  ntkdsl derive "Dense(512, W_std=1.5, b_std=0.1) > Erf > Dense(1)" --kernel ntk
  ntkdsl derive "Dense(512) > Relu > Dense(1)" --latex > relu_ntk.tex
  ntkdsl derive "Dense(512) > Relu > Dense(1)" --expand
  ntkdsl derive "Dense(512) > Relu > Dense(1)" --diagonal
"""


def register(subparsers) -> None:
    """Add the ``derive`` subcommand to the ``ntkdsl`` parser."""
    parser = add_command(
        subparsers, "derive", help="print the NNGP and NTK of an architecture as formulas, "
        "layer by layer", description=__doc__, examples=EXAMPLES)
    add_arch(parser, "(Dense(512, W_std=1.4) > Relu) * 3 > Dense(1)")
    parser.add_argument("--kernel", choices=["both", *KINDS], default="both",
                        help="which kernel to derive (default: both; the NTK needs the "
                             "NNGP's maps, so 'ntk' shows those too)")
    parser.add_argument("--latex", action="store_true",
                        help="print LaTeX (an align environment) instead of text (default: "
                             "text)")
    parser.add_argument("--expand", action="store_true",
                        help="print each kernel composed into one expression in the input "
                             "statistics q1_0 = <x,x>/d, q2_0 = <x',x'>/d, K_0 = <x,x'>/d "
                             "(long for deep networks; default: layer by layer)")
    parser.add_argument("--diagonal", action="store_true",
                        help="derive the kernels of an input with itself (correlation "
                             "exactly 1; the recursion used for identical inputs; default: "
                             "two different inputs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the derivation on stdout; errors in ARCH raise ntkdsl's exceptions."""
    from ..formula import Formula
    from ..network import compile as compile_network

    net = compile_network(args.arch)
    program = net.diagonal_program if args.diagonal else net.program
    formula = Formula(args.arch, program, args.kernel)
    if args.expand:
        text = formula.expanded(latex=args.latex)
    else:
        text = formula.latex() if args.latex else str(formula)
    sys.stdout.write(text + "\n")
    return 0
