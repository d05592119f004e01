"""Shared pieces of the subcommands' parsers: option types that turn a bad value into a
usage error (exit status 2, one line on stderr) before any work starts, and the help
formatter that states every option's default."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError

MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's seeds are unsigned 32-bit integers


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; every option's help ends with its default
    (written out in the help text itself where the default needs words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # Identity, not ==: a default of 0 is a default to state, unlike False.
        if "default" in text or any(action.default is no for no in (None, False,
                                                                   argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


@contextmanager
def escaped_unencodable_output() -> Iterator[None]:
    """Standard output that writes a character its encoding cannot show as an escape
    (``\\u03b8``) instead of failing: help texts, formulas and reports hold a few
    non-ASCII characters, and an ASCII terminal or PYTHONIOENCODING=ascii must still get
    them (standard error does this already: Python gives it 'backslashreplace')."""
    stream = sys.stdout
    errors = getattr(stream, "errors", None)
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is None or errors not in ("strict", None):
        yield  # not a text stream we can set, or it already escapes or replaces
        return
    reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        reconfigure(errors=errors)


def add_command(subparsers, name: str, *, help: str, description: str,
                examples: str) -> argparse.ArgumentParser:
    """A subcommand parser with the shared formatter and an examples section."""
    return subparsers.add_parser(name, help=help, description=description,
                                 epilog="examples:\n" + examples.strip("\n"),
                                 formatter_class=HelpFormatter)


def add_arch(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("arch", metavar="ARCH", help=f'the architecture, e.g. "{example}"')


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An option type: a whole number in [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            valid = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"must be a whole number {valid}, got {value}")
        return value
    return parse


def real(low: float, high: float = math.inf, *, low_included: bool = False,
         reason: str = "") -> Callable[[str], float]:
    """An option type: a finite number above ``low`` (or equal, if ``low_included``) and
    below ``high``; ``reason`` says why the bounds are what they are."""
    lower = f">= {low:g}" if low_included else f"> {low:g}"
    valid = lower if math.isinf(high) else f"{lower} and < {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value < low or (value == low and not low_included)
        if not math.isfinite(value) or too_low or value >= high:
            raise argparse.ArgumentTypeError(f"must be a finite number {valid}{reason}, "
                                             f"got {text!r}")
        return value
    return parse


seed = whole(0, MAX_SEED)


def comma_list(item: Callable[[str], float], example: str) -> Callable[[str], list]:
    """An option type: comma-separated values of ``item``'s type, at least one."""
    def parse(text: str) -> list:
        parts = [part.strip() for part in text.split(",")]
        if not any(parts):
            raise argparse.ArgumentTypeError(f"give comma-separated values, e.g. {example}")
        values = []
        for part in parts:
            if not part:
                raise argparse.ArgumentTypeError(f"{text!r} has an empty entry; give "
                                                 f"comma-separated values, e.g. {example}")
            try:
                values.append(item(part))
            except argparse.ArgumentTypeError as err:
                raise argparse.ArgumentTypeError(f"{err} in {text!r}; e.g. {example}") from None
        return values
    return parse


def assignments(item: Callable[[str], object], example: str) -> Callable[[str], dict]:
    """An option type: comma-separated ``name=value`` pairs, each value of ``item``'s
    type, each name once: a dict in the order given."""
    def parse(text: str) -> dict:
        found: dict = {}
        for part in (p.strip() for p in text.split(",")):
            name, equals, value = (s.strip() for s in part.partition("="))
            if not equals or not name.isidentifier():
                raise argparse.ArgumentTypeError(f"{part!r} in {text!r} is not name=value; "
                                                 f"e.g. {example}")
            if name in found:
                raise argparse.ArgumentTypeError(f"{name} is given twice in {text!r}")
            try:
                found[name] = item(value)
            except argparse.ArgumentTypeError as err:
                raise argparse.ArgumentTypeError(f"{name}: {err}; e.g. {example}") from None
        return found
    return parse


def image_path(text: str) -> Path:
    """An option type: a file name whose extension matplotlib can write."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(text)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if path.suffix.lower().lstrip(".") not in formats:
        raise argparse.ArgumentTypeError(
            f"{text!r} does not end in an image format matplotlib writes; use one of "
            + ", ".join(f".{f}" for f in formats))
    return path


def check_output_directory(path: Path | None, option: str) -> None:
    """Refuse an output file in a directory that does not exist before any work starts
    (a file error, exit status 1, like a file that cannot be written)."""
    if path is not None and not path.parent.is_dir():
        raise InputError(f"{option} {path}: the directory {path.parent} does not exist",
                         hint="create it first, or give a path in an existing directory")
