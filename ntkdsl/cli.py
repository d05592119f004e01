"""The ``ntkdsl`` command line: a thin dispatcher over the subcommands in ntkdsl.commands.

Each subcommand lives in its own module ``ntkdsl/commands/<name>.py`` exposing
``register(subparsers)`` (adds its parser and sets ``func``); add a command by adding its
module name to ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import NTKDSLError

COMMANDS: tuple[str, ...] = ("fit", "derive", "codegen", "verify")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ntkdsl",
        description="Exact infinite-width NNGP and NTK kernels of networks written as strings, "
        "e.g. \"Dense(512) > Relu > Dense(1)\".",
        epilog="Run 'ntkdsl COMMAND --help' for a command's options and examples.\n\n"
        "exit status:\n"
        "  0  success\n"
        "  1  an error in the architecture, the data or a file (message on stderr)\n"
        "  2  a command-line usage error (message on stderr)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ntkdsl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"ntkdsl.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except NTKDSLError as err:
        print(f"ntkdsl {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
