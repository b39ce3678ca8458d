"""A progress bar on stderr for inputs that take more than a second to read.

Library code never prints: a parser calls ``current_callback()`` and, when a reporter is
active, feeds it the number of file bytes it consumed. The CLI activates one with
``with progress_bar(total_bytes, enabled=...)``; it draws nothing for the first second, nor
when stderr is not a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

_ACTIVE: ContextVar[Callable[[int], None] | None] = ContextVar("profdiag_progress", default=None)
DELAY_S = 1.0


def current_callback() -> Callable[[int], None] | None:
    """The active reporter's ``advance(n_bytes)``, or None."""
    return _ACTIVE.get()


def input_bytes(path: str | os.PathLike[str]) -> int:
    """Total bytes a parser will read from ``path`` (a directory: 0, unknown)."""
    try:
        p = Path(path)
        return p.stat().st_size if p.is_file() else 0
    except OSError:
        return 0


class _Bar:
    """Counts bytes; starts a rich progress bar once DELAY_S has passed."""

    def __init__(self, total: int, description: str, stream: Any) -> None:
        self.total = total
        self.description = description
        self.stream = stream
        self.done = 0
        self.started = time.monotonic()
        self.progress: Any = None
        self.task: Any = None

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is None:
            if time.monotonic() - self.started < DELAY_S:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=self.total or None)
        self.progress.update(self.task, completed=min(self.done, self.total or self.done))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def progress_bar(total_bytes: int, description: str = "reading", enabled: bool = True,
                 stream: Any = None) -> Iterator[Callable[[int], None] | None]:
    """Activate a byte-count reporter for parsers; off unless enabled and stderr is a TTY."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if not enabled or not (callable(isatty) and isatty()):
        yield None
        return
    bar = _Bar(total_bytes, description, stream)
    token = _ACTIVE.set(bar.advance)
    try:
        yield bar.advance
    finally:
        _ACTIVE.reset(token)
        bar.close()
