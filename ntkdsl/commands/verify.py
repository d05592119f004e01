"""ntkdsl verify: check the infinite-width theory on finite networks of growing width.

For each width, every hidden Dense of ARCH gets that width (output layers keep theirs), and
the command measures: the relative error of the Monte-Carlo NNGP and of the empirical NTK
against the analytic kernels; the relative change of the weights and of the empirical NTK
during full-batch gradient descent; and the gap between the trained network's test
predictions and the closed-form gradient-flow prediction at the same time t. It prints a
table with the fitted log-log slope of each against width (about -0.5 is expected) and, with
--plot, saves the curves.

example:
  ntkdsl verify "Dense(512, W_std=1.5, b_std=0.05) > Relu > Dense(1, W_std=1.5, b_std=0.05)"
  ntkdsl verify "Dense(512) > Erf > Dense(1)" --widths 32,128,512 --plot erf.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError

DEFAULT_WIDTHS = "64,256,1024,4096"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="measure how finite networks approach the infinite-width kernels",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", metavar="ARCH", help='architecture, e.g. "Dense(512) > Relu '
                                                     '> Dense(1)"')
    parser.add_argument("--widths", default=DEFAULT_WIDTHS,
                        help=f"comma-separated hidden widths (default {DEFAULT_WIDTHS})")
    parser.add_argument("--samples", type=int, default=16,
                        help="initialisations averaged by the Monte-Carlo NNGP (default 16)")
    parser.add_argument("--steps", type=int, default=100,
                        help="gradient-descent steps (default 100)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="learning rate as a fraction of N·k/λ_max(NTK), the stability "
                             "scale of gradient descent (default 1.0; must be < 2)")
    parser.add_argument("--train", type=int, default=16, help="training inputs (default 16)")
    parser.add_argument("--test", type=int, default=8, help="test inputs (default 8)")
    parser.add_argument("--dim", type=int, default=8, help="input features (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and networks")
    parser.add_argument("--plot", metavar="FILE.png", type=Path,
                        help="save the error curves against width")
    parser.set_defaults(func=run)


def parse_widths(text: str) -> list[int]:
    """Comma-separated whole numbers >= 1."""
    try:
        widths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--widths must be comma-separated whole numbers, e.g. "
                         f"{DEFAULT_WIDTHS}; got {text!r}") from None
    if not widths or min(widths) < 1:
        raise InputError(f"--widths must be whole numbers >= 1, got {text!r}")
    return widths


def run(args) -> int:
    from ..verify import verify

    result = verify(args.arch, parse_widths(args.widths), samples=args.samples,
                    steps=args.steps, rate=args.rate, n_train=args.train, n_test=args.test,
                    input_dim=args.dim, seed=args.seed, progress=sys.stderr.isatty())
    print(result.report())
    if args.plot:
        result.plot(args.plot)
        print(f"plot saved to {args.plot}")
    return 0
