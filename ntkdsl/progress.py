"""ntkdsl's one progress bar: tqdm on stderr, shown by one rule wherever work takes a while
(a kernel evaluation, the estimators' kernel blocks, ``verify``'s widths, ``fit``'s stages)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress_bar(show: bool | None, total: int, **options: Any) -> Any:
    """A tqdm bar on stderr counting to ``total``, or None when none is shown: ``show=True``
    always shows it, ``False`` never, ``None`` only when stderr is a terminal (not when output
    goes to a file or a pipe). ``options`` go to tqdm (``desc``, ``unit``, ``delay``,
    ``iterable``, ...); a finished bar clears its line."""
    if show is False or (show is None and not _terminal()):
        return None
    from tqdm.auto import tqdm  # on first use: importing it takes a while

    return tqdm(total=total, file=sys.stderr, leave=False, **options)


class Stages:
    """``stage("fitting")`` moves the bar on by one named stage; ``note(text)`` shows progress
    within the stage after it. Without a bar both do nothing."""

    def __init__(self, bar: Any):
        self._bar = bar

    def __call__(self, description: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(description)
            self._bar.update(1)

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)


@contextmanager
def stages(show: bool | None, total: int, **options: Any) -> Iterator[Stages]:
    """A ``progress_bar`` of ``total`` named stages, closed on leaving the block."""
    bar = progress_bar(show, total, **options)
    try:
        yield Stages(bar)
    finally:
        if bar is not None:
            bar.close()
