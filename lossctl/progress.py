"""Progress bar for long evaluations: rich, on stderr, only on a TTY and only when asked for."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

_enabled: ContextVar[bool] = ContextVar("lossctl_progress", default=False)


@contextlib.contextmanager
def enabled(on: bool = True) -> Iterator[None]:
    token = _enabled.set(on)
    try:
        yield
    finally:
        _enabled.reset(token)


def tracker_for(passes: Sequence[tuple[str, int, Sequence[Any]]]) -> Any:
    if not _enabled.get():
        return None
    return None
