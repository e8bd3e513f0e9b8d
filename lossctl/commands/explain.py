"""`lossctl explain NAME` (placeholder until the advisor lands)."""

from __future__ import annotations

from typing import Annotated

import typer


def explain(name: Annotated[str, typer.Argument(help="Loss name or alias.")]) -> int:
    """Explain a loss: formula, when to use it, pitfalls."""
    from lossctl.errors import UsageError

    raise UsageError("explain is not available yet")
