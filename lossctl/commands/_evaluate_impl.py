"""The body of `lossctl evaluate`, kept apart so the command module imports nothing heavy."""

from __future__ import annotations

import os
from collections.abc import Sequence

from lossctl import console
from lossctl.errors import ExitCode, UsageError
from lossctl.report import FORMATS, render


def parse_named_inputs(items: Sequence[str]) -> dict[str, str]:
    named: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise UsageError(f"--input {item!r}: expected NAME=PATH, e.g. --input anchor=anchor.npy")
        if not name.isidentifier():
            raise UsageError(f"--input {item!r}: {name!r} is not a valid input name")
        if name in named:
            raise UsageError(f"--input {name} given twice")
        named[name] = path
    return named


def write_output(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--output {path}: directory {directory} does not exist")
    tmp = f"{path}.lossctl-tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def run_evaluate(*, preds: str | None, targets: str | None, losses: Sequence[str], inputs: Sequence[str],
                 reduction: str, nan_policy: str, fmt: str, output: str | None, per_sample: str | None,
                 worst: int, chunk_size: int | None, plugins: Sequence[str]) -> int:
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not losses:
        raise UsageError("no loss given; pass --loss NAME, e.g. --loss mse (see 'lossctl losses')")
    if preds is None and not inputs:
        raise UsageError("no inputs given; pass PREDS [TARGETS] or --input NAME=PATH")
    if per_sample and reduction != "none" and not worst:
        pass  # per-sample values are written whatever the reduction
    from lossctl.plugins import load_plugins

    load_plugins(plugins)
    from lossctl.api import evaluate

    report = evaluate(preds, targets, list(losses), inputs=parse_named_inputs(inputs), reduction=reduction,
                      nan_policy=nan_policy, chunk_size=chunk_size, per_sample=per_sample, worst=worst,
                      provenance=fmt in ("json", "markdown", "junit") or output is not None)
    for w in report.warnings:
        console.warn(w.message)
    text = render(report, fmt)
    if output:
        write_output(output, text)
    console.stdout_write(text)
    return ExitCode.OK if report.passed else ExitCode.CHECK_FAILED
