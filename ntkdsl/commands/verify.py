"""ntkdsl verify ARCH: check the infinite-width theory on finite networks of growing width.

For each width, every hidden Dense of ARCH (one that another Dense follows) gets that width,
and every hidden Conv that many channels (output layers keep theirs), and the command
measures: the relative error of the
Monte-Carlo NNGP and of the empirical NTK against the analytic kernels; the relative change
of the weights and of the empirical NTK during full-batch gradient descent; and the gap
between the trained network's test predictions and the closed-form gradient-flow prediction
at the same time t. It prints a table with the fitted log-log slope of each against width
(about -0.5 is expected) and, with --plot, saves the curves. A convolutional ARCH gets
images (--shape, channels last).
"""
from __future__ import annotations

import argparse
import sys

from .options import add_arch, add_command, check_output_directory, comma_list, image_path, real, seed, whole

DEFAULT_WIDTHS = "64,256,1024,4096"
EXAMPLES = """
  ntkdsl verify "Dense(512, W_std=1.5, b_std=0.05) > Relu > Dense(1, W_std=1.5, b_std=0.05)"
  ntkdsl verify "Dense(512) > Erf > Dense(1)" --widths 32,128,512 --plot erf.png
  ntkdsl verify "Conv(64, (3, 3), padding='SAME') > Relu > Flatten > Dense(1)" --shape 6,6,2
"""


def register(subparsers) -> None:
    """Add the ``verify`` subcommand to the ``ntkdsl`` parser."""
    parser = add_command(
        subparsers, "verify", help="measure how finite networks approach the infinite-width "
        "kernels", description=__doc__, examples=EXAMPLES)
    add_arch(parser, "Dense(512) > Relu > Dense(1)")
    parser.add_argument("--widths", default=DEFAULT_WIDTHS, type=parse_widths,
                        metavar="W1,W2,...",
                        help=f"comma-separated hidden widths, at least two different ones "
                             f"(default: {DEFAULT_WIDTHS})")
    parser.add_argument("--samples", type=whole(2), default=16, metavar="N",
                        help="initialisations averaged by the Monte-Carlo NNGP, >= 2")
    parser.add_argument("--steps", type=whole(1), default=100, metavar="N",
                        help="full-batch gradient-descent steps, >= 1")
    parser.add_argument("--rate", type=real(0, 2, reason=" (gradient descent diverges "
                                                          "beyond 2)"),
                        default=1.0, help="learning rate as a fraction of N·k/λ_max(NTK), "
                        "the stability scale of gradient descent, between 0 and 2")
    parser.add_argument("--train", type=whole(2), default=16, metavar="N",
                        help="training inputs, >= 2")
    parser.add_argument("--test", type=whole(1), default=8, metavar="N", help="test inputs")
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--dim", type=whole(1), default=8, metavar="D",
                        help="input features (fully-connected architectures)")
    inputs.add_argument("--shape", type=comma_list(whole(1), "8,8,1"), default=None,
                        metavar="H,W,C",
                        help="one input's shape, channels last, e.g. 8,8,1 for 8x8 images or "
                             "16,3 for 1-D signals (default for a convolutional architecture: "
                             "8 positions per spatial axis, 1 channel)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of data and networks")
    parser.add_argument("--plot", metavar="FILE.png", type=image_path,
                        help="save the error curves against width (default: no plot)")
    parser.set_defaults(func=run)


def parse_widths(text: str) -> list[int]:
    """The --widths option: comma-separated whole numbers >= 1, at least two different
    ones (a slope needs two points); a bad value is a usage error."""
    widths = comma_list(whole(1), DEFAULT_WIDTHS)(text)
    if len(set(widths)) < 2:
        raise argparse.ArgumentTypeError(f"give at least two different widths to fit a slope "
                                         f"against, e.g. {DEFAULT_WIDTHS}; got {text!r}")
    return widths


def run(args) -> int:
    from ..verify import verify

    check_output_directory(args.plot, "--plot")
    result = verify(args.arch, args.widths, samples=args.samples,
                    steps=args.steps, rate=args.rate, n_train=args.train, n_test=args.test,
                    input_dim=args.dim, input_shape=args.shape, seed=args.seed,
                    progress=sys.stderr.isatty())
    print(result.report())
    if args.plot:
        result.plot(args.plot)
        print(f"plot saved to {args.plot}")
    return 0
