"""``--format markdown``: a compact report for a CI job summary or a pull-request comment.

One table row per loss (value, limit, baseline, change, ✓/✗), combined expressions' terms as
indented rows, then failures, per-sample summaries, warnings and a one-line provenance footer.
The output is bounded (rows, worst samples and message lengths are capped) so that it stays far
below GitHub's 1 MiB step-summary limit whatever the input.
"""

from __future__ import annotations

import math
from typing import Any

from lossctl.result import Check, LossResult, Report

MAX_ROWS = 500
MAX_WORST = 20
MAX_TEXT = 300
MAX_WARNINGS = 50
MAX_BYTES = 256 * 1024
MAX_SLICES = 10  # worst slices shown per loss (all of them are in the JSON report)
PASS, FAIL = "✓", "✗"


def num(value: Any) -> str:
    if value is None:
        return "—"
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        return f"{value:.6g}"
    return f"{value:.4e}"


def _signed(value: float) -> str:
    text = num(value)
    return text if text.startswith(("-", "−", "NaN")) else "+" + text


def cell(text: str) -> str:
    """Table-cell text: one line, pipes escaped, length capped."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def code(text: str) -> str:
    """Inline code that survives backticks in the text."""
    text = cell(text)
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _limit(checks: list[Check]) -> str:
    limits = [c.limit for c in checks if c.kind == "fail_above" and c.limit is not None]
    return ", ".join(f"≤ {num(v)}" for v in limits) or "—"


def _baseline_cells(checks: list[Check]) -> tuple[str, str]:
    for c in checks:
        if c.kind == "baseline":
            old = c.extra.get("baseline")
            change = c.extra.get("change")
            pct = c.extra.get("change_pct")
            if change is None or (isinstance(change, float) and math.isnan(change)):
                return num(old), "—"
            text = _signed(change)
            if pct is not None:
                text += f" ({pct:+.2f}%)"
            elif old == 0 and change != 0:
                text += " (from 0)"
            return num(old), text
    return "—", "—"


def _status(res: LossResult) -> str:
    if not res.checks:
        return "—" if math.isfinite(res.value) else "⚠"
    return PASS if res.passed else FAIL


def _failures(report: Report) -> list[str]:
    out = [c.message for r in report.results for c in r.checks if not c.passed]
    out += [c.message for r in report.results for sl in r.slices or () for c in sl.checks if not c.passed]
    out += [c.message for c in report.checks if not c.passed]
    return out


def interval_text(iv: Any) -> str:
    """``[low, high] (95 % clt)``, or the note when there is no interval."""
    if iv is None:
        return ""
    level = f"{iv.level * 100:g} %"
    if not iv.known:
        return f"no {level} interval ({iv.note})"
    return f"[{num(iv.low)}, {num(iv.high)}] ({level} {iv.method})"


def comparison_text(res: LossResult) -> str:
    c = res.comparison
    rel = f" ({c.relative * 100:+.2f}%)" if c.relative is not None else ""
    ci = f", interval {interval_text(c.diff_ci)}" if c.diff_ci is not None else ""
    return f"vs {code(c.against)}: baseline {num(c.baseline_value)}, diff {_signed(c.diff)}{rel}{ci}: **{c.verdict}**"


def interval_lines(report: Report) -> list[str]:
    """``--ci`` / ``--against``: each loss's interval, comparison and gate verdicts, one line each."""
    todo = [r for r in report.results if r.ci is not None or r.comparison is not None]
    if not todo:
        return []
    out = ["", "**Intervals and comparisons**", ""]
    for res in todo[:MAX_ROWS]:
        parts = [f"{code(res.loss)} = {num(res.value)}"]
        if res.ci is not None:
            parts.append(interval_text(res.ci))
        if res.comparison is not None:
            parts.append(comparison_text(res))
        verdicts = [f"{c.kind}: {c.extra['verdict']}" for c in res.checks if "verdict" in c.extra]
        if verdicts:
            parts.append("gates " + ", ".join(verdicts))
        out.append("- " + cell("; ".join(parts)))
    return out


def render(report: Report, title: str = "lossctl evaluate", **_: object) -> str:
    failures = _failures(report)
    n_checks = sum(len(r.checks) + sum(len(sl.checks) for sl in r.slices or ()) for r in report.results) \
        + len(report.checks)
    if failures:
        headline = f"{FAIL} {len(failures)} of {n_checks} check{'s' if n_checks != 1 else ''} failed"
    elif n_checks:
        headline = f"{PASS} all {n_checks} check{'s' if n_checks != 1 else ''} passed"
    else:
        headline = "no gates"
    lines = [f"### {cell(title)}: {headline}", ""]
    lines += ["| loss | value | limit | baseline | change | |", "|---|---:|---:|---:|---:|:-:|"]
    rows = 0
    for res in report.results:
        if rows >= MAX_ROWS:
            lines.append(f"| … {len(report.results) - rows} more losses (see the JSON report) | | | | | |")
            break
        base, change = _baseline_cells(res.checks)
        own = [c for c in res.checks if not c.extra.get("term")]
        lines.append(f"| {code(res.loss)} | {num(res.value)} | {_limit(own)} | {base} | {change} | "
                     f"{_status(res)} |")
        rows += 1
        if len(res.terms) > 1:
            for t in res.terms:
                term_checks = [c for c in res.checks if c.extra.get("term") == t.name]
                mark = "" if not term_checks else (PASS if all(c.passed for c in term_checks) else FAIL)
                lines.append(f"| &nbsp;&nbsp;↳ {num(t.weight)} × {code(t.name)} | {num(t.value)} | "
                             f"{_limit(term_checks)} | | | {mark} |")
    for c in report.checks:
        mark = "skipped" if c.extra.get("skipped") else (PASS if c.passed else FAIL)
        lines.append(f"| {code(str(c.extra.get('loss', '?')))} | missing | — | {num(c.extra.get('baseline'))} | — "
                     f"| {mark} |")
    lines += interval_lines(report)
    if failures:
        lines += ["", "**Failed checks**", ""]
        lines += [f"- {FAIL} {cell(m)}" for m in failures[:MAX_ROWS]]
    summaries = [r for r in report.results if r.summary is not None and r.summary.count]
    if summaries:
        lines += ["", "**Per-sample values**", "",
                  "| loss | n | mean | std | min | p50 | p95 | max | worst samples (index: value) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in summaries[:MAX_ROWS]:
            s = r.summary
            assert s is not None
            worst = ", ".join(f"#{i}: {num(v)}" for i, v in s.worst[:MAX_WORST])
            if len(s.worst) > MAX_WORST:
                worst += f", … {len(s.worst) - MAX_WORST} more"
            lines.append(f"| {code(r.loss)} | {s.count} | {num(s.mean)} | {num(s.std)} | {num(s.min)} | "
                         f"{num(s.p50)} | {num(s.p95)} | {num(s.max)} | {worst or '—'} |")
    lines += _slice_lines(report)
    omitted = [r for r in report.results if r.omitted]
    if omitted:
        lines += [""] + [f"- {code(r.loss)}: {r.omitted} sample(s) with NaN omitted" for r in omitted[:MAX_ROWS]]
    if report.warnings:
        lines += ["", "**Warnings**", ""]
        lines += [f"- ⚠ {cell(w.message)}" for w in report.warnings[:MAX_WARNINGS]]
        if len(report.warnings) > MAX_WARNINGS:
            lines.append(f"- … {len(report.warnings) - MAX_WARNINGS} more")
    lines += ["", _footer(report)]
    text = "\n".join(lines) + "\n"
    if len(text.encode("utf-8")) > MAX_BYTES:  # pathological inputs (huge loss lists): keep the head
        text = text.encode("utf-8")[:MAX_BYTES].decode("utf-8", "ignore").rsplit("\n", 1)[0]
        text += "\n\n… report truncated; see the JSON report for everything.\n"
    return text


def _slice_lines(report: Report) -> list[str]:
    """The worst slices of each loss (``--by``), at most MAX_SLICES each, with a note for the rest."""
    lines: list[str] = []
    for r in report.results[:MAX_ROWS]:
        if not r.slices:
            continue
        lines += ["", f"**Worst slices of {code(r.loss)}** ({len(r.slices)} slice{'s' if len(r.slices) != 1 else ''})",
                  "", "| key | n | value | interval | |", "|---|---:|---:|---:|:-:|"]
        for sl in r.slices[:MAX_SLICES]:
            ci = slice_interval_text(sl.ci)
            mark = ("not gated (small)" if not sl.gated else "")
            if sl.checks:
                inconclusive = any(c.extra.get("verdict") == "inconclusive" for c in sl.checks)
                mark = (PASS if sl.passed else FAIL) if not inconclusive else \
                    ("inconclusive" if sl.passed else f"{FAIL} inconclusive")
            key = "(missing)" if sl.key is None else code(str(sl.key))
            lines.append(f"| {key} | {sl.samples} | {num(sl.value)} | {ci} | {mark} |")
        if len(r.slices) > MAX_SLICES:
            lines.append(f"| … {len(r.slices) - MAX_SLICES} more slices (see the JSON report) | | | | |")
    return lines


def slice_interval_text(ci: dict[str, Any] | None) -> str:
    """A slice's interval cell: ``[low, high]``, ``no interval`` (too few samples: see the JSON note), ``—`` without --ci."""
    if not ci:
        return "—"
    if ci.get("low") is None or ci.get("high") is None:
        return "no interval"
    return f"[{num(ci['low'])}, {num(ci['high'])}]"


def _footer(report: Report) -> str:
    parts = [f"lossctl {report.version}"]
    prov = report.provenance or {}
    inputs = prov.get("inputs") or {}
    for name, info in list(inputs.items())[:8]:
        digest = (info or {}).get("digest")
        if digest:
            algo, _, hexpart = digest.rpartition(":")
            parts.append(f"{cell(name)} {algo} {hexpart[:12]}")
    if prov.get("time"):
        parts.append(str(prov["time"]))
    return "<sub>" + " · ".join(parts) + "</sub>"
