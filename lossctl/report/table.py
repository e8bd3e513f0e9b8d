"""``--format table``: a rich table for people (colour only on a TTY; NO_COLOR honoured)."""

from __future__ import annotations

import io
import math
import os
import sys
from typing import Any

from lossctl.result import Check, LossResult, Report


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
    has_ci = any(r.ci is not None for r in report.results)
    has_cmp = any(r.comparison is not None for r in report.results)
    if has_ci:
        table.add_column("interval")
    if has_cmp:
        table.add_column("vs baseline model")
    has_checks = any(r.checks for r in report.results)
    if has_checks:
        table.add_column("checks")
    for res in report.results:
        row = [res.loss, fmt_value(res.value), res.reduction]
        if has_ci:
            row.append(_interval_text(res.ci))
        if has_cmp:
            row.append(_comparison_text(res))
        if has_checks:
            row.append(", ".join(_check_text(c) for c in res.checks) or "-")
        table.add_row(*row)
        if len(res.terms) > 1:
            for t in res.terms:
                extra = [""] * (has_checks + has_ci + has_cmp)
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


def _interval_text(iv: Any) -> str:
    if iv is None:
        return "-"
    if not iv.known:
        return "none (see JSON note)"
    return f"[{fmt_value(iv.low)}, {fmt_value(iv.high)}] {iv.level * 100:g}% {iv.method}"


def _comparison_text(res: LossResult) -> str:
    c = res.comparison
    if c is None:
        return "-"
    rel = f" ({c.relative * 100:+.2f}%)" if c.relative is not None else ""
    ci = f" {_interval_text(c.diff_ci)}" if c.diff_ci is not None else ""
    return f"{fmt_value(c.baseline_value)}; diff {c.diff:+.6g}{rel}{ci}: {c.verdict}"


def _check_text(check: Check) -> str:
    """``ok <= 0.3`` / ``FAIL baseline 0.09 -> 0.0975 (+8.33%)``: the verdict with old, new and change."""
    verdict = "ok" if check.passed else "FAIL"
    if check.extra.get("verdict") == "inconclusive":
        verdict = "INCONCLUSIVE"
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
