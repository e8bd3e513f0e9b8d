"""Where output goes: reports to stdout, diagnostics to stderr (rich only on a TTY)."""

from __future__ import annotations

import sys


def stdout_write(text: str) -> None:
    """Write machine output (JSON, CSV, reports) to stdout exactly as given."""
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


def error(message: str) -> None:
    """The one ``error:`` line for a failed command."""
    message = " ".join(str(message).split())  # always exactly one line
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    message = " ".join(str(message).split())
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()
