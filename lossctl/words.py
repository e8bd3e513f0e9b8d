"""The "did you mean" hint that every error about an unknown name ends with.

A module of its own, with nothing of lossctl below it, so that the registry, the readers and the
advisor can all use the one spelling of the hint without importing each other.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def did_you_mean(word: Any, choices: Iterable[Any]) -> str:
    """``"; did you mean 'huber'?"`` for the closest of ``choices`` to ``word``, or ``""``.

    Words and choices are compared as text, so YAML values (numbers, booleans) work too.
    """
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
