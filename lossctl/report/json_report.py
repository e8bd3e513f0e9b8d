"""``--format json``: exactly one RFC 8259 document (no NaN/Infinity literals), SPEC §6."""

from __future__ import annotations

import json
import math
from typing import Any

from lossctl.result import Check, LossResult, Report, SliceResult, Summary

SCHEMA_VERSION = 1


def number(value: float | None) -> dict[str, Any]:
    """``{"value": v}``, or ``{"value": null, "non_finite": "nan"|"inf"|"-inf"}``."""
    if value is None:
        return {"value": None}
    value = float(value)
    if math.isfinite(value):
        return {"value": value}
    return {"value": None, "non_finite": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}


def finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value


def _check(check: Check) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": check.kind, "limit": finite_or_none(check.limit), "passed": check.passed}
    out.update(finite_or_none(check.extra))
    out.setdefault("verdict", "pass" if check.passed else "fail")
    if check.message:
        out["message"] = check.message
    return out


def _summary(summary: Summary) -> dict[str, Any]:
    return {
        "count": summary.count,
        **{k: finite_or_none(getattr(summary, k)) for k in ("mean", "std", "min", "p50", "p95", "max")},
        "worst": [{"index": i, **number(v)} for i, v in summary.worst],
        **({"approx": True} if summary.approx else {}),
    }


def slice_dict(sl: SliceResult) -> dict[str, Any]:
    """One slice: ``{"key", "samples", "value", "ci", "checks"}`` (``gated``: false below --min-slice-size)."""
    return {"key": finite_or_none(sl.key), "samples": sl.samples, **number(sl.value), "ci": finite_or_none(sl.ci),
            "checks": [_check(c) for c in sl.checks], "gated": sl.gated}


def result_dict(res: LossResult) -> dict[str, Any]:
    out: dict[str, Any] = {"loss": res.loss, **number(res.value), "reduction": res.reduction,
                           "canonical": res.canonical}
    out["terms"] = [{"name": t.name, "weight": t.weight, "params": finite_or_none(t.params), **number(t.value)}
                    for t in res.terms]
    out["checks"] = [_check(c) for c in res.checks]
    out["passed"] = res.passed
    out["samples"] = res.samples
    if res.omitted:
        out["omitted"] = res.omitted
    if res.summary is not None:
        out["summary"] = _summary(res.summary)
    if res.per_sample_path:
        out["per_sample"] = res.per_sample_path
    if res.ci is not None:
        out["ci"] = finite_or_none(res.ci.as_dict())
    if res.comparison is not None:
        c = res.comparison
        cmp: dict[str, Any] = {"against": c.against, "paired": c.paired,
                               "baseline_value": finite_or_none(float(c.baseline_value)),
                               "diff": finite_or_none(float(c.diff)), "relative": finite_or_none(c.relative)}
        if c.diff_ci is not None:
            cmp["diff_ci"] = [finite_or_none(c.diff_ci.low), finite_or_none(c.diff_ci.high)]
            cmp["diff_se"] = finite_or_none(c.diff_ci.se)
            cmp["diff_method"] = c.diff_ci.method
            if c.diff_ci.note:
                cmp["diff_note"] = c.diff_ci.note
        cmp["verdict"] = c.verdict
        if c.histogram is not None:
            cmp["histogram"] = finite_or_none(c.histogram)
        out["comparison"] = cmp
    if res.slices is not None:
        out["slices"] = [slice_dict(sl) for sl in res.slices]
    if res.calibration is not None:
        out["calibration"] = finite_or_none(res.calibration)
    return out


def report_dict(report: Report) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "lossctl_version": report.version,
        "inputs": report.inputs,
        "results": [result_dict(r) for r in report.results],
        "passed": report.passed,
        "warnings": [{"level": w.level, "message": w.message, **({"code": w.code} if w.code else {})}
                     for w in report.warnings],
    }
    if report.checks:
        out["checks"] = [_check(c) for c in report.checks]
    if report.baseline:
        out["baseline"] = report.baseline
    if report.provenance:
        out["provenance"] = report.provenance
    return out


def render(report: Report, **_: object) -> str:
    return json.dumps(report_dict(report), indent=2, allow_nan=False) + "\n"
