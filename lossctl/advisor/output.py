"""Render an :class:`~lossctl.advisor.Advice`: JSON (one document) or a rich table report."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from lossctl.advisor import Advice


def to_json_text(advice: Advice, explain: bool = False, why_not: str | None = None) -> str:
    return json.dumps(advice.to_json(explain=explain, why_not=why_not), allow_nan=False,
                      indent=2, ensure_ascii=False)


def _console(file: TextIO | None = None):
    import os

    from rich.console import Console

    file = file or sys.stdout
    is_tty = bool(getattr(file, "isatty", lambda: False)())
    no_color = bool(os.environ.get("NO_COLOR")) or not is_tty
    return Console(file=file, no_color=no_color, highlight=False, soft_wrap=False,
                   color_system=None if no_color else "auto", emoji=False,
                   width=None if is_tty else 100)


_LEVEL_STYLE = {"error": "bold red", "warn": "yellow", "info": "cyan"}


def print_table(advice: Advice, explain: bool = False, why_not: str | None = None,
                file: TextIO | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table
    from rich import box

    con = _console(file)
    facts = advice.to_json()["task"]
    inferred = set(advice.task.inferred)
    derived = set(advice.task.derived)

    def fact_str(k: str, v: Any) -> str:
        mark = "*" if k in inferred else ("~" if k in derived else "")
        if isinstance(v, bool):
            v = "true" if v else "false"
        return f"{k}={v}{mark}"

    con.print("[bold]Task:[/] " + escape(", ".join(fact_str(k, v) for k, v in facts.items()
                                                  if k != "description")))
    if inferred or derived:
        con.print("[dim]  (~ derived, * inferred from data; --explain for details)[/]")

    recs = advice.recommendations()
    support, assumptions = advice.support()
    if support != "full" or assumptions:
        con.print(f"[bold yellow]Note:[/] support: {support} (outside what the rules cover; "
                  "check these assumptions)" if support != "full" else "[bold]Note:[/]")
        for a in assumptions:
            con.print("  - " + escape(a))
    table = Table(box=box.SIMPLE_HEAD, show_lines=False, expand=False, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("loss", overflow="fold")
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("why", overflow="fold")
    for i, r in enumerate(recs, 1):
        loss = escape(r["loss"])
        if not r["evaluable"]:
            loss += " [dim](not evaluable)[/]"
        if r.get("not_first") and i > 1:
            loss += " [dim](not as a first choice here: --why-not)[/]"
        why = escape(r["reasons"][0]) if r["reasons"] else ""
        table.add_row(str(i), loss, f"{r['score']:g}", why)
    con.print(table)

    if recs:
        top = recs[0]
        for fw, code in top["code"].items():
            con.print(f"[bold]{fw} code for #1[/] ({escape(top['name'])}):")
            for line in code.splitlines():
                con.print("  " + escape(line))
        if top["evaluable"]:
            con.print(f"[dim]evaluate it: lossctl evaluate PREDS TARGETS --loss "
                      f"{escape(_shell_quote(top['loss']))}[/]")
        if top["references"]:
            con.print("[bold]references:[/] " + escape("; ".join(
                ref.split("]")[0].lstrip("[") for ref in top["references"])))

    if advice.warnings:
        con.print("\n[bold]Warnings[/]")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for w in advice.warnings:
            style = _LEVEL_STYLE[w["level"]]
            grid.add_row(f" [{style}]{w['level']}[/]", f"[dim]{escape(w['rule'])}[/]",
                         escape(w["message"]))
        con.print(grid)

    if explain:
        doc = advice.to_json(explain=True)["explain"]
        con.print("\n[bold]Facts[/]")
        for f in doc["facts"]:
            val = f["value"]
            if isinstance(val, bool):
                val = "true" if val else "false"
            con.print(f"  {escape(f['fact'])} = {escape(str(val))}  [dim]({escape(f['source'])})[/]")
        con.print(f"\n[bold]Rules fired[/] [dim]({escape(doc['rules_file'])})[/]")
        for r in doc["rules"]:
            con.print(f"  {escape(r['id'])}  {escape(r['title'])}  [dim]when {escape(r['when'])}[/]")
        con.print("\n[bold]Scores[/]")
        for i, s in enumerate(advice.ranked, 1):
            parts = " ".join(f"{rid}{c.score:+g}" for rid, c in
                             sorted(s.contributions, key=lambda rc: rc[0]))
            con.print(f"  {i}. {escape(s.entry.id)} = {s.score:g}  [dim]{escape(parts)}[/]")

    if why_not is not None:
        wn = advice.why_not(why_not)
        con.print(f"\n[bold]Why not {escape(why_not)}?[/]")
        for m in wn["matches"]:
            con.print(f"  {escape(m['loss'])} [dim]({escape(m['id'])})[/]: {escape(m['summary'])}")
            for c in m["contributions"]:
                con.print(f"    {escape(c['rule'])} {c['score']:+g}  {escape(c['reason'])}")
            for e in m["excluded_by"]:
                con.print(f"    {escape(e['rule'])} excludes it: {escape(e['reason'])}")


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)
