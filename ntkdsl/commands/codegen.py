"""ntkdsl codegen ARCH: a standalone Python module computing the architecture's kernels.

The module needs numpy only (plus scipy.special where a formula needs it) — not ntkdsl,
sympy or lark — and gives the same numbers as ntkdsl. It exposes nngp(x1, x2=None),
ntk(x1, x2=None), kernels(x1, x2=None), the layer recursions pair(...) and diagonal(...),
and one <activation>_dual(q1, q2, k) per activation layer; its docstring holds the
architecture, the ntkdsl version and the derivation. The same ARCH gives the same bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from .options import add_arch, add_command

EXAMPLES = """
  ntkdsl codegen "Dense(512) > Relu > Dense(1)" -o relu_kernel.py
  python -c "import numpy, relu_kernel; print(relu_kernel.ntk(numpy.eye(3)))"
  ntkdsl codegen "Dense(512) > Erf > Dense(1)" | less
"""


def register(subparsers) -> None:
    """Add the ``codegen`` subcommand to the ``ntkdsl`` parser."""
    parser = add_command(
        subparsers, "codegen", help="write a standalone Python module (numpy only) computing "
        "the kernels", description=__doc__, examples=EXAMPLES)
    add_arch(parser, "Dense(512, W_std=1.5) > Relu > Dense(1)")
    parser.add_argument("-o", "--output", metavar="FILE.py", type=Path,
                        help="write the module to FILE.py, replacing it (default: standard "
                             "output; - also means standard output)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the module; write it to --output or stdout."""
    from ..standalone import module_source

    source = module_source(args.arch)
    if args.output is None or str(args.output) == "-":
        sys.stdout.write(source)
        return 0
    try:
        args.output.write_text(source, encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot write {args.output}: {err.strerror or err}",
                         hint="check that the directory exists and is writable") from None
    print(f"wrote {args.output}", file=sys.stderr)
    if not args.output.stem.isidentifier():
        print(f"note: '{args.output.stem}' is not a Python module name; to import the file, "
              "name it like relu_kernel.py", file=sys.stderr)
    return 0
