"""Exit codes and the exceptions that map onto them.

Every error a user can cause is a :class:`LossctlError`; the CLI prints its message as one
``error:`` line on stderr and exits with its ``exit_code``. Anything else is a bug (exit 4).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any


def cut(text: str, limit: int = 200) -> str:
    """``text`` shortened to about ``limit`` characters for a message (a user's 1 MB expression is
    never echoed whole): its start and end around ``...``."""
    text = str(text)
    if len(text) <= limit:
        return text
    half = max(1, limit // 2 - 2)
    return f"{text[:half]}...{text[-half:]} ({len(text)} characters)"


class ExitCode(IntEnum):
    OK = 0  # success; every threshold/baseline check passed
    CHECK_FAILED = 1  # the command ran, but a threshold or baseline check failed
    USAGE = 2  # bad flag, unknown loss/param, unreadable or malformed input, shape/dtype/value error
    INTERNAL = 4  # unexpected internal error (a bug): short message, traceback only with --debug
    INTERRUPTED = 130  # Ctrl-C


_OPT_OPEN, _OPT_CLOSE = "\ue000", "\ue001"  # private-use characters around an option's name


def option(name: str, value: str = "") -> str:
    """An option named in a core error message, worded by whoever shows it: ``nan_policy="omit"`` in
    Python (``str(exc)``), ``--nan-policy omit`` on the command line (:meth:`LossctlError.for_cli`)."""
    return f"{_OPT_OPEN}{name}\t{value}{_OPT_CLOSE}"


def _worded(message: str, cli: bool) -> str:
    out = []
    rest = message
    while _OPT_OPEN in rest:
        head, _, tail = rest.partition(_OPT_OPEN)
        inner, _, rest = tail.partition(_OPT_CLOSE)
        name, _, value = inner.partition("\t")
        if cli:
            out.append(head + "--" + name.replace("_", "-") + (f" {value}" if value else ""))
        else:
            out.append(head + name + (f"={value!r}" if value else ""))
    return "".join(out) + rest


def worded(message: str, cli: bool) -> str:
    """A message with :func:`option` markers in the CLI's words (``--header no``) or Python's (``header='no'``)."""
    return _worded(message, cli)


class LossctlError(Exception):
    """A problem with what the user gave us; the message says what is wrong and what to do.

    Options in the message are written with :func:`option`, so the Python API and the CLI each
    name them in their own words.
    """

    exit_code: int = ExitCode.USAGE

    def __str__(self) -> str:
        return _worded(super().__str__(), cli=False)

    def for_cli(self) -> str:
        return _worded(super().__str__(), cli=True)


class UsageError(LossctlError):
    """A bad flag, option value or combination of options."""


class InputError(LossctlError):
    """An input file that cannot be read, or whose shape, dtype or values do not fit the loss."""


class ExprError(LossctlError):
    """A loss expression that does not parse or does not bind to the registry."""

    def __init__(self, message: str, text: str = "", column: int | None = None) -> None:
        self.text = text
        self.column = column
        where = f" (column {column})" if column is not None else ""
        prefix = f"--loss {cut(text)!r}: " if text else ""
        super().__init__(f"{prefix}{message}{where}")


class PluginError(LossctlError):
    """An exception raised inside a user's plugin loss: their code failed, not lossctl (exit 2)."""

    def __init__(self, module: str, loss: str, exc: BaseException) -> None:
        import os
        import sys

        path = getattr(sys.modules.get(module), "__file__", None)
        self.plugin = os.path.basename(path) if path else module
        self.loss = loss
        detail = " ".join(str(exc).split())
        super().__init__(f"plugin {self.plugin}: loss {loss!r} raised {type(exc).__name__}"
                         + (f": {detail}" if detail else ""))


class DomainError(LossctlError):
    """A value outside a loss's domain, raised by a kernel about one of its named inputs.

    The engine adds the file that input came from before the user sees it. A kernel that can say
    which values are bad gives ``bad`` (one chunk's inputs ``{name: array}`` -> a boolean mask of
    the shape of ``input_name``'s chunk) and ``describe(count, first_sample, first_value)`` (the
    message for that many bad values): the engine then counts over the whole input, not just the
    chunk that raised (lossctl.losses._common.domain_error builds both).
    """

    def __init__(self, input_name: str, message: str, *, bad: Any = None, describe: Any = None) -> None:
        self.input_name = input_name
        self.detail = message
        self.bad = bad
        self.describe = describe
        super().__init__(f"{input_name}: {message}")


@contextmanager
def blamed_on_plugin(module: str | None, loss: str) -> Iterator[None]:
    """Run a loss's own code (kernel, shape check, prepare, finalize): for a plugin's loss
    (``module`` set) an exception that is not a LossctlError becomes a :class:`PluginError`."""
    try:
        yield
    except LossctlError:
        raise
    except Exception as exc:
        if module is None:
            raise
        raise PluginError(module, loss, exc) from exc
