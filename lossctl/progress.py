"""A progress bar for long evaluations: rich, on stderr, only on a TTY.

The engine reports every chunk it finishes to a :class:`Tracker`. Nothing is drawn (and rich is
not even imported) unless stderr is a terminal and the evaluation is expected to take more than
a second: the bar appears once ``SHOW_AFTER`` seconds have passed and the rate so far says the
whole run will take longer than ``MIN_TOTAL`` seconds. It is transient: it is erased when the
evaluation ends, so the report on stdout and the diagnostics on stderr look the same with or
without it. ``progress.enabled(False)`` (or ``LOSSCTL_PROGRESS=0``) turns it off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

SHOW_AFTER = 0.3  # seconds before the bar may appear
MIN_TOTAL = 1.0  # expected total seconds for a bar to be worth drawing

_enabled: ContextVar[bool | None] = ContextVar("lossctl_progress", default=None)


@contextlib.contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    """Force the bar on (still only on a TTY) or off inside this block."""
    token = _enabled.set(on)
    try:
        yield
    finally:
        _enabled.reset(token)


def _wanted(stream: Any) -> bool:
    setting = _enabled.get()
    if setting is False or os.environ.get("LOSSCTL_PROGRESS", "").strip() in ("0", "false", "no"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Tracker:
    """Counts finished samples over every pass; draws a rich bar once the run looks long."""

    def __init__(self, total: int, description: str, stream: Any = None) -> None:
        self.total = max(1, int(total))
        self.description = description
        self.done = 0
        self.started = time.monotonic()
        self.stream = stream or sys.stderr
        self._progress: Any = None
        self._task: Any = None

    def advance(self, samples: int) -> None:
        self.done += int(samples)
        if self._progress is None:
            elapsed = time.monotonic() - self.started
            if elapsed < SHOW_AFTER or self.done >= self.total:
                return
            expected = elapsed * self.total / max(1, self.done)
            if expected < MIN_TOTAL:
                return
            self._start()
        if self._progress is not None:
            self._progress.update(self._task, completed=min(self.done, self.total))

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        console = Console(file=self.stream, stderr=self.stream is sys.stderr)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                  TimeRemainingColumn(), console=console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total, completed=self.done)

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def tracker_for(passes: Sequence[tuple[str, int, Sequence[Any]]], stream: Any = None) -> Tracker | None:
    """A tracker for the engine's passes ((kind, samples, plans) each), or None when no bar is wanted."""
    stream = stream or sys.stderr
    if not passes or not _wanted(stream):
        return None
    names = []
    for _, _, plans in passes:
        for plan in plans:
            if plan.spec.name not in names:
                names.append(plan.spec.name)
    label = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    return Tracker(sum(n for _, n, _ in passes), f"evaluating {label}", stream)
