"""`lossctl recommend` (placeholder until the advisor lands)."""

from __future__ import annotations

from typing import Annotated

import typer


def recommend(task: Annotated[str, typer.Argument(help="Task description (YAML).")]) -> int:
    """Recommend training losses for a task described in a YAML file."""
    from lossctl.errors import UsageError

    raise UsageError("recommend is not available yet")
