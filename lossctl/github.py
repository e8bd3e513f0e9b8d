"""GitHub Actions integration for ``lossctl evaluate --github``.

* Workflow-command annotations (``::error``/``::warning``) for failed gates and warnings, escaped
  by GitHub's rules (message: ``%`` ``\\r`` ``\\n``; properties also ``:`` and ``,``), at most
  :data:`MAX_PER_KIND` of each kind (GitHub shows no more than 10 per step) plus a ``::notice``
  saying how many were left out.
* The markdown report appended to ``$GITHUB_STEP_SUMMARY`` when it is set.

Annotations go to stderr: the runner reads workflow commands from both streams, and stdout stays
the report in the chosen format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from lossctl.result import Report

MAX_PER_KIND = 10
SUMMARY_LIMIT = 1024 * 1024  # GitHub's cap for one step's summary


def escape_data(text: str) -> str:
    """Escape an annotation message (the part after ``::``)."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a property value (``title=...``): the message rules plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **properties: str) -> str:
    """One workflow command line: ``::error title=T::message``."""
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items() if v is not None)
    return f"::{kind}{' ' + props if props else ''}::{escape_data(message)}"


def annotations(report: Report, limit: int = MAX_PER_KIND) -> list[str]:
    """``::error`` per failed gate and ``::warning`` per warning, at most ``limit`` of each."""
    errors: list[str] = []
    for res in report.results:
        for check in [*res.checks, *(c for sl in res.slices or () for c in sl.checks)]:
            if not check.passed:
                title = f"lossctl {check.kind.replace('_', '-')}: {res.loss}"
                errors.append(command("error", check.message or f"{res.loss}: {check.kind} check failed",
                                      title=title))
    for check in report.checks:
        if not check.passed:
            loss = check.extra.get("loss", "")
            errors.append(command("error", check.message, title=f"lossctl baseline: {loss} missing"))
    warnings = [command("warning", w.message, title=f"lossctl: {w.code or 'warning'}") for w in report.warnings]
    lines = errors[:limit] + warnings[:limit]
    if len(errors) > limit:
        lines.append(command("notice", f"{len(errors) - limit} more failed gate(s) not annotated; see the job "
                                       f"summary or the report", title="lossctl"))
    if len(warnings) > limit:
        lines.append(command("notice", f"{len(warnings) - limit} more warning(s) not annotated; see the job "
                                       f"log or the report", title="lossctl"))
    return lines


def append_step_summary(markdown: str, env: Mapping[str, str] | None = None) -> str | None:
    """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY`` if set; returns the path written (or None).

    A report that would push the summary past GitHub's 1 MiB cap is replaced by a short note.
    """
    env = os.environ if env is None else env
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    try:
        used = os.path.getsize(path)
    except OSError:
        used = 0
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    if used + len(text.encode("utf-8")) > SUMMARY_LIMIT:
        text = ("lossctl: the report is too large for the job summary (GitHub's limit is 1 MiB); see the "
                "report file or the job log.\n")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
    return path
