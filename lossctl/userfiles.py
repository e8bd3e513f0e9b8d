"""Reading a text file the user named (task, rules, scoring, baseline): every failure is one UsageError."""

from __future__ import annotations

from pathlib import Path

from lossctl.errors import UsageError


def read_text(path: str | Path, label: str, kind: str, missing: str | None = None) -> str:
    """The UTF-8 text of ``path``. ``label`` names it in messages (``task file 'x.yaml'``), ``kind``
    says what it should be (``a YAML file``), ``missing`` replaces the message for a missing file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(missing or f"{label} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{label} is a directory, not {kind}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{label} is not UTF-8 text; give {kind}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {label}: {exc.strerror or exc}") from None
