"""`lossctl losses`: list the registry (names, aliases, parameters, formulas)."""

from typing import Annotated

import typer


def losses(
    format_: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    plugin: Annotated[list[str] | None, typer.Option("--plugin", help="Python file registering custom losses.")] = None,
) -> int:
    """List every loss lossctl can evaluate."""
    import json
    import sys

    from lossctl.errors import UsageError
    from lossctl.plugins import load_plugins
    from lossctl.registry import all_specs

    if format_ not in ("table", "json"):
        raise UsageError(f"--format must be table or json, got {format_!r}")
    load_plugins(plugin or [])
    specs = all_specs()
    if format_ == "json":
        doc = [{
            "name": s.name, "aliases": list(s.aliases), "family": s.family, "inputs": list(s.inputs),
            "optional_inputs": list(s.optional_inputs),
            "params": [{"name": p.name, "type": p.type, "default": p.default, "doc": p.doc,
                        **({"range": p.describe_range()} if p.describe_range() else {})} for p in s.params],
            "formula": s.formula, "summary": s.summary, "use_when": s.use_when, "reference": s.reference,
        } for s in specs]
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return 0
    import os

    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    table = Table(show_lines=False, header_style="bold" if tty else None)
    for col in ("loss", "aliases", "params (defaults)", "use when"):
        table.add_column(col, overflow="fold")
    for s in specs:
        params = ", ".join(f"{p.name}={p.default}" for p in s.params)
        table.add_row(s.name, ", ".join(s.aliases), params, s.use_when)
    Console(force_terminal=tty, no_color=not tty, width=160, highlight=False).print(table)
    return 0
