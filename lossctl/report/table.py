"""``--format table``: a rich table for people (colour only on a TTY; NO_COLOR honoured)."""

from __future__ import annotations

import io
import math
import os
import sys

from lossctl.result import Check, Report


def fmt_value(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        return f"{value:.6g}"
    return f"{value:.4e}"


def render(report: Report, **_: object) -> str:
    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    table = Table(title=None, show_edge=True, header_style="bold" if tty else None)
    table.add_column("loss")
    table.add_column("value", justify="right")
    table.add_column("reduction")
    has_checks = any(r.checks for r in report.results)
    if has_checks:
        table.add_column("checks")
    for res in report.results:
        row = [res.loss, fmt_value(res.value), res.reduction]
        if has_checks:
            row.append(", ".join(_check_text(c) for c in res.checks) or "-")
        table.add_row(*row)
        if len(res.terms) > 1:
            for t in res.terms:
                extra = [""] if has_checks else []
                table.add_row(f"  {t.weight:g} × {t.name}", fmt_value(t.value), t.reduction, *extra)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=tty, no_color=not tty, width=max(100, _width()),
                      highlight=False)
    console.print(table)
    for check in report.checks:  # losses in the baseline that this run did not evaluate
        status = "skipped" if check.extra.get("skipped") else ("ok" if check.passed else "FAIL")
        console.print(f"{status} baseline: {check.message}", markup=False, soft_wrap=True)
    for res in report.results:
        if res.summary is not None and res.summary.count:
            s = res.summary
            console.print(f"{res.loss}: n={s.count} mean={fmt_value(s.mean)} std={fmt_value(s.std)} "
                          f"min={fmt_value(s.min)} p50={fmt_value(s.p50)} p95={fmt_value(s.p95)} "
                          f"max={fmt_value(s.max)}", markup=False)
            worst = ", ".join(f"#{i}={fmt_value(v)}" for i, v in s.worst)
            console.print(f"  worst: {worst}", markup=False)
            if res.per_sample_path:
                console.print(f"  per-sample values: {res.per_sample_path}", markup=False)
        if res.omitted:
            console.print(f"{res.loss}: {res.omitted} sample(s) with NaN omitted", markup=False)
    return buf.getvalue()


def _check_text(check: Check) -> str:
    """``ok <= 0.3`` / ``FAIL baseline 0.09 -> 0.0975 (+8.33%)``: the verdict with old, new and change."""
    verdict = "ok" if check.passed else "FAIL"
    term = f"term {check.extra['term']} " if check.extra.get("term") else ""
    if check.kind == "fail_above" and check.limit is not None:
        return f"{verdict} {term}<= {fmt_value(check.limit)}"
    if check.kind == "baseline" and check.extra.get("baseline") is not None:
        pct = check.extra.get("change_pct")
        change = f" ({pct:+.2f}%)" if pct is not None else ""
        return (f"{verdict} baseline {fmt_value(check.extra['baseline'])} -> "
                f"{fmt_value(check.extra.get('value', math.nan))}{change}")
    return f"{verdict} {check.kind}"


def _width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100
