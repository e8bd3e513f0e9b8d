"""Warnings raised while evaluating (pitfalls, non-finite values), collected for the report.

Kernels and checks call :func:`warn`; ``evaluate`` opens a :func:`collecting` scope and puts what
was said into ``Report.warnings`` (and on stderr). The same code/message pair is kept once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from lossctl.result import Warning_

_current: ContextVar[list[Warning_] | None] = ContextVar("lossctl_warnings", default=None)


def warn(code: str, message: str, level: str = "warn") -> None:
    sink = _current.get()
    if sink is None:
        return
    if any(w.code == code and w.message == message for w in sink):
        return
    sink.append(Warning_(message=message, level=level, code=code))


@contextlib.contextmanager
def collecting() -> Iterator[list[Warning_]]:
    sink: list[Warning_] = []
    token = _current.set(sink)
    try:
        yield sink
    finally:
        _current.reset(token)
