"""The ``ntkdsl`` command line: a thin dispatcher over the subcommands in ntkdsl.commands.

Each subcommand lives in its own module ``ntkdsl/commands/<name>.py`` exposing
``register(subparsers)`` (adds its parser and sets ``func``, and optionally ``check``, which
reports usage errors between options through the parser's ``error``); add a command by
adding its module name to ``COMMANDS``. Usage errors exit with status 2 and one line on
stderr; errors in the architecture, the data or a file exit with status 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ._version import __version__
from .commands.options import escaped_unencodable_output
from .errors import NTKDSLError

COMMANDS: tuple[str, ...] = ("fit", "derive", "codegen", "verify")


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line of stderr (exit status 2): the message and
    where to find the usage, instead of the whole usage block. Subcommand parsers are of
    this class too (argparse makes them with the parent's class)."""

    def error(self, message: str):
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    with escaped_unencodable_output():  # help, formulas and reports on any terminal
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.error(f"a command is needed: one of {', '.join(COMMANDS)}")
    check = getattr(args, "check", None)
    if check is not None:  # usage rules between options, checked before any work
        check(args)
    try:
        return int(args.func(args) or 0)
    except NTKDSLError as err:
        print(f"ntkdsl {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
