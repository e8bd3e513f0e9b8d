"""The body of `lossctl evaluate`, kept apart so the command module imports nothing heavy.

Order of work: read the scoring file (if any) and lay the flags over it; check every gate spec
and read the baseline (usage errors before any input is read); evaluate; apply the gates (pure,
:mod:`lossctl.gates`); print warnings; render; write ``--output``; GitHub annotations and job
summary; then the exit code: 2 for ``--strict`` with warnings, 1 for a failed gate (unless
``--no-fail``), else 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from lossctl import console
from lossctl.errors import ExitCode, LossctlError, UsageError, worded
from lossctl.report import FORMATS, render
from lossctl.scoring_config import ScoringConfig


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


def parse_storage_options(items: Sequence[str]) -> dict[str, Any]:
    """``--storage-option KEY=VALUE`` (repeatable) as a mapping (dotted keys are nested when read)."""
    from lossctl.readers.remote import parse_option

    out: dict[str, Any] = {}
    for item in items:
        key, value = parse_option(item)
        if key in out:
            raise UsageError(f"--storage-option {key} given twice")
        out[key] = value
    return out


#: the report format an ``--output`` file name implies when no ``--format`` is given (else table)
FORMAT_OF_EXTENSION = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".xml": "junit", ".csv": "csv"}


def output_format(path: str) -> str:
    """The format ``--output PATH`` is written in without ``--format``: from its extension."""
    return FORMAT_OF_EXTENSION.get(os.path.splitext(path)[1].lower(), "table")


def _is_stdout(path: str) -> bool:
    """Whether ``path`` is the file stdout already writes to (``--output /dev/stdout``)."""
    import sys

    try:
        here, there = os.fstat(sys.stdout.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False  # (a stdout without a file: io.UnsupportedOperation is both)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def write_output(path: str, text: str) -> None:
    """``--output``: atomically (see :func:`lossctl.userfiles.write_atomic`)."""
    from lossctl.userfiles import write_atomic

    write_atomic(path, text, f"--output {path}")


#: ``lossctl evaluate`` parameters whose option (ScoringConfig field) is named differently
_FIELD_OF_PARAM = {"loss": "losses", "input_": "inputs", "format_": "format", "plugin": "plugins", "hash_": "hash",
                   "storage_option": "storage_options"}


def flags_config(params: Mapping[str, Any]) -> ScoringConfig:
    """The command line's options (None / empty where a flag was not given), from the command's
    parameters by name; ``--input`` and ``--fail-above`` parsed into mappings."""
    from lossctl.gates import parse_fail_above

    values = {_FIELD_OF_PARAM.get(k, k): v for k, v in params.items() if k != "config"}
    for name in ("losses", "plugins", "max_increase"):
        values[name] = list(values.get(name) or [])
    values["inputs"] = parse_named_inputs(values.get("inputs") or [])
    values["storage_options"] = parse_storage_options(values.get("storage_options") or [])
    values["fail_above"] = {g.loss: g.limit for g in map(parse_fail_above, values.get("fail_above") or [])}
    return ScoringConfig(**values)


def _engine(engine: str | None, scheduler: str | None) -> str:
    """``--engine`` (default local); ``--scheduler`` alone means dask."""
    if engine is None:
        return "dask" if scheduler else "local"
    if engine not in ("local", "dask"):
        raise UsageError(f"--engine must be local or dask, got {engine!r}")
    if engine == "local" and scheduler:
        raise UsageError("--scheduler is for --engine dask; drop it, or pass --engine dask")
    return engine


def run_evaluate(params: Mapping[str, Any]) -> int:
    """``lossctl evaluate`` with the command's parameters by name (see :mod:`lossctl.commands.evaluate`)."""
    state = {"github": bool(params.get("github"))}
    try:
        return _run(state, flags_config(params), params.get("config"))
    except LossctlError as exc:
        if state["github"]:  # an error in a GitHub job is an annotation too
            from lossctl.github import command

            console.note(command("error", exc.for_cli(), title="lossctl evaluate"))
        raise


def _run(state: dict[str, bool], flags: ScoringConfig, config: str | None) -> int:
    from lossctl.scoring_config import load_config, merge

    cfg = load_config(config) if config else ScoringConfig()
    state["github"] = flags.github or cfg.github
    s = merge(cfg, flags)
    fmt_ = s.format or "table"
    if fmt_ not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt_!r}")
    from lossctl.provenance import check_algorithm, prefetch

    hash_algorithm = check_algorithm(s.hash)
    if not s.losses:
        raise UsageError("no loss given; pass --loss NAME, e.g. --loss mse (see 'lossctl losses')"
                         + ("" if not config else f", or list losses in {config}"))
    if s.preds is None and not s.inputs:
        raise UsageError("no inputs given; pass PREDS [TARGETS] or --input NAME=PATH"
                         + ("" if not config else f", or set inputs in {config}"))

    from lossctl.gates import FailAbove, Tolerance, apply_gates, load_baseline, parse_max_increase

    gates = [FailAbove(loss, limit, "--fail-above" if loss in flags.fail_above or not config else f"{config}: fail_above")
             for loss, limit in s.fail_above.items()]
    if s.max_increase and not s.baseline and not s.against:
        raise UsageError("--max-increase needs --baseline REPORT.json (an earlier report) or --against BASE (a "
                         "baseline model's predictions) to compare against")
    if s.inconclusive is not None and s.inconclusive not in ("pass", "fail"):
        raise UsageError(f"--inconclusive must be pass or fail, got {s.inconclusive!r}")
    ci = None
    if s.ci:
        from lossctl.intervals import CIConfig

        ci = CIConfig(level=0.95 if s.confidence is None else s.confidence, method=s.ci_method or "auto",
                      seed=0 if s.seed is None else s.seed, resamples=1000 if s.resamples is None else s.resamples)
    elif any(v is not None for v in (s.confidence, s.ci_method, s.seed, s.resamples)):
        raise UsageError("--confidence, --ci-method, --seed and --resamples set up --ci; add --ci")
    tolerance = parse_max_increase(s.max_increase) if s.max_increase else Tolerance()
    base = load_baseline(s.baseline) if s.baseline else None
    if s.min_slice_size is not None and s.min_slice_size < 1:
        raise UsageError(f"--min-slice-size must be >= 1, got {s.min_slice_size}")
    if (s.gate_slices or s.min_slice_size is not None) and not s.by:
        raise UsageError("--gate-slices and --min-slice-size need --by PATH[:COL] (the slice keys)")
    if s.report_dir:
        from lossctl.report.bundle import check_dir

        check_dir(s.report_dir)
    if s.output and not _is_stdout(s.output):  # a path that cannot take the report fails now, not after the work
        from lossctl.userfiles import check_output

        check_output(s.output, f"--output {s.output}")

    provenance = (fmt_ in ("json", "markdown", "junit") or s.output is not None or base is not None or s.github
                  or s.report_dir is not None)
    # the input files' digests start now, on the core that is idle while NumPy and the plugins import
    stop_prefetch = prefetch([s.preds, s.targets, *s.inputs.values(), s.weights], hash_algorithm if provenance else "none")
    try:
        from lossctl.plugins import load_plugins

        load_plugins(s.plugins)
        from lossctl.api import evaluate

        report = evaluate(s.preds, s.targets, list(s.losses), inputs=s.inputs, weights=s.weights,
                          reduction=s.reduction or "mean",
                          nan_policy=s.nan_policy or "raise", chunk_size=s.chunk_size, per_sample=s.per_sample,
                          worst=s.worst or 0, hash=hash_algorithm, provenance=provenance,
                          header=s.header or "auto", delimiter=s.delimiter, classes=s.classes,
                          storage_options=s.storage_options or None,
                          engine=_engine(s.engine, s.scheduler), scheduler=s.scheduler,
                          ci=ci, against=s.against,
                          by=s.by, summary=True if s.report_dir else None)
    finally:
        stop_prefetch()
    if base is not None:
        report.baseline = s.baseline
    apply_gates(report, gates, base, tolerance, s.allow_missing, inconclusive=s.inconclusive or "pass",
                against=bool(s.against and s.max_increase))
    if s.by:
        from lossctl.gates import apply_slice_gates

        apply_slice_gates(report, gates, s.min_slice_size, s.gate_slices, inconclusive=s.inconclusive or "pass")

    for w in report.warnings:
        if w.level == "info":  # a note (how an input was read), not a warning: --strict lets it pass
            console.note(f"note: {worded(w.message, cli=True)}")
        else:
            console.warn(w.message)
    shown = _as_without_bundle(report, s) if s.report_dir else report
    text = render(shown, fmt_)
    if s.output:
        out_fmt = s.format or output_format(s.output)
        if not _is_stdout(s.output):  # the report goes to stdout anyway: once is enough
            write_output(s.output, text if out_fmt == fmt_ else render(shown, out_fmt))
    if s.report_dir:
        from lossctl.report.bundle import write_bundle

        write_bundle(report, s.report_dir)
    console.stdout_write(text)
    if s.github:
        from lossctl.github import annotations, append_step_summary

        for line in annotations(report):
            console.note(line)
        summary = text if fmt_ == "markdown" else render(report, "markdown")
        try:
            append_step_summary(summary)
        except OSError as exc:
            console.warn(f"could not append to $GITHUB_STEP_SUMMARY: {exc.strerror or exc}")
    # (an inconclusive gate is a statistical outcome, not bad input: --strict does not make it exit 2)
    if s.strict and any(w.level != "info" and w.code != "inconclusive" for w in report.warnings):
        n = sum(w.level != "info" and w.code != "inconclusive" for w in report.warnings)
        raise UsageError(f"--strict: {n} warning{'s' if n != 1 else ''} (see above); fix the inputs or the "
                         f"loss, or drop --strict")
    if not report.passed:
        failed = [c.message for r in report.results for c in r.checks if not c.passed] + \
            [c.message for r in report.results for sl in r.slices or () for c in sl.checks if not c.passed] + \
            [c.message for c in report.checks if not c.passed]
        for message in failed[:20]:
            console.note(f"failed: {message}")
        n = len(failed)
        verdict = f"lossctl: {n} check{'s' if n != 1 else ''} failed"
        if s.no_fail:
            console.note(f"{verdict}; exit 0 because of --no-fail")
            return ExitCode.OK
        console.note(verdict)
        return ExitCode.CHECK_FAILED
    return ExitCode.OK


def _as_without_bundle(report: Any, s: ScoringConfig) -> Any:
    """The report as it reads without ``--report-dir``: the bundle's figures need per-sample summaries
    and reliability bins, which stdout and ``--output`` show only when they were asked for."""
    from dataclasses import replace

    keep = bool(s.worst)
    return replace(report, results=[replace(r, summary=r.summary if keep or r.reduction == "none" else None,
                                            calibration=None) for r in report.results])
