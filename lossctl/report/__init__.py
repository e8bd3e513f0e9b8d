"""Renderers: pure functions of a :class:`~lossctl.result.Report` to text, one module per format."""

from __future__ import annotations

from collections.abc import Callable

from lossctl.result import Report

FORMATS = ("table", "json", "csv", "markdown", "junit")


def renderer(fmt: str) -> Callable[..., str]:
    if fmt == "json":
        from lossctl.report.json_report import render
    elif fmt == "csv":
        from lossctl.report.csv_report import render
    elif fmt == "table":
        from lossctl.report.table import render
    elif fmt == "markdown":
        from lossctl.report.markdown import render
    elif fmt == "junit":
        from lossctl.report.junit import render
    else:  # pragma: no cover - the CLI validates the choice
        raise ValueError(fmt)
    return render


def render(report: Report, fmt: str, **options: object) -> str:
    return renderer(fmt)(report, **options)
