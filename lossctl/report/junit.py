"""``--format junit``: JUnit XML for CI test-report views (GitLab, Jenkins, Azure, GitHub actions).

One ``<testcase>`` per gate (classname ``lossctl.fail_above`` / ``lossctl.baseline``), failed
gates with a ``<failure message=... type=...>``; a loss without gates gets one passing
``lossctl.value`` testcase so that its value is still visible. Values and per-sample summaries
are in each testcase's ``<system-out>``. ``<properties>`` appear only at testsuite level (versions,
input hashes), which is what the common schemas allow. Text is escaped for XML 1.0 and characters
XML cannot carry are dropped, so a strict parser accepts the document.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape, quoteattr

from lossctl.report.markdown import num
from lossctl.result import Check, LossResult, Report, Summary

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
MAX_WORST = 20


def clean(text: object) -> str:
    return _INVALID_XML.sub("\ufffd", str(text))


def attr(text: object) -> str:
    # quoteattr escapes &, <, > and the quote; tabs/newlines become character references
    return quoteattr(clean(text), {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def text_node(text: object) -> str:
    return escape(clean(text))


def _summary_text(s: Summary) -> str:
    worst = ", ".join(f"#{i}: {num(v)}" for i, v in s.worst[:MAX_WORST])
    if len(s.worst) > MAX_WORST:
        worst += f", ... {len(s.worst) - MAX_WORST} more"
    return (f"per-sample: n={s.count} mean={num(s.mean)} std={num(s.std)} min={num(s.min)} "
            f"p50={num(s.p50)} p95={num(s.p95)} max={num(s.max)}\nworst samples: {worst or '-'}")


def _case_name(res: LossResult, check: Check | None) -> str:
    if check is None:
        return res.loss
    term = check.extra.get("term")
    label = f"{res.loss} [term {term}]" if term else res.loss
    if "slice" in check.extra:  # --gate-slices: one test case per gated slice
        label = f"{res.loss} [slice {check.extra['slice']}]"
    if check.kind == "fail_above":
        return f"{label} <= {num(check.limit)}"
    if check.kind == "baseline":
        return f"{label} vs baseline"
    return f"{label} {check.kind}"


def _out(res: LossResult, check: Check | None) -> str:
    lines = [f"value: {num(res.value)} (reduction {res.reduction}, {res.samples} samples)"]
    if check is not None and check.message:
        lines.append(check.message)
    if check is not None and check.kind == "baseline":
        e = check.extra
        lines.append(f"baseline: {num(e.get('baseline'))}  new: {num(e.get('value'))}  change: {num(e.get('change'))}"
                     + (f" ({e['change_pct']:+.2f}%)" if e.get("change_pct") is not None else ""))
    if res.ci is not None or res.comparison is not None:
        from lossctl.report.markdown import comparison_text, interval_text

        if res.ci is not None:
            lines.append(f"interval: {interval_text(res.ci)}")
        if res.comparison is not None:
            lines.append(comparison_text(res).replace("`", "").replace("**", ""))
    if check is not None and "verdict" in check.extra and (res.ci is not None or res.comparison is not None):
        lines.append(f"verdict: {check.extra['verdict']}")
    if res.summary is not None and res.summary.count:
        lines.append(_summary_text(res.summary))
    if res.omitted:
        lines.append(f"{res.omitted} sample(s) with NaN omitted")
    return "\n".join(lines)


def _testcase(classname: str, name: str, check: Check | None, out: str) -> str:
    head = f"    <testcase classname={attr(classname)} name={attr(name)}"
    body: list[str] = []
    if check is not None and check.extra.get("skipped"):
        body.append(f"      <skipped message={attr(check.message)}/>")
    elif check is not None and not check.passed:
        body.append(f"      <failure message={attr(check.message)} type={attr(check.kind)}>"
                    f"{text_node(check.message)}</failure>")
    if out:
        body.append(f"      <system-out>{text_node(out)}</system-out>")
    if not body:
        return head + "/>"
    return head + ">\n" + "\n".join(body) + "\n    </testcase>"


def render(report: Report, suite: str = "lossctl evaluate", **_: object) -> str:
    cases: list[str] = []
    failures = skipped = 0
    for res in report.results:
        checks: list[Check | None] = [*res.checks, *(c for sl in res.slices or () for c in sl.checks)] or [None]
        for check in checks:
            classname = f"lossctl.{check.kind}" if check is not None else "lossctl.value"
            cases.append(_testcase(classname, _case_name(res, check), check, _out(res, check)))
            if check is not None and not check.passed:
                failures += 1
    for check in report.checks:
        loss = str(check.extra.get("loss", "?"))
        if check.extra.get("skipped"):
            skipped += 1
        elif not check.passed:
            failures += 1
        cases.append(_testcase(f"lossctl.{check.kind}", f"{loss} vs baseline", check, check.message))
    props = [("lossctl_version", report.version)]
    prov = report.provenance or {}
    for key in ("python", "numpy"):
        if prov.get(key):
            props.append((f"{key}_version", prov[key]))
    for name, info in (prov.get("inputs") or {}).items():
        if isinstance(info, dict):
            if info.get("path"):
                props.append((f"input.{name}.path", info["path"]))
            if info.get("digest"):
                props.append((f"input.{name}.digest", info["digest"]))
    if report.baseline:
        props.append(("baseline", report.baseline))
    stamp = f" timestamp={attr(str(prov['time'])[:19])}" if prov.get("time") else ""
    counts = f'tests="{len(cases)}" failures="{failures}" errors="0" skipped="{skipped}"'
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f"<testsuites name={attr(suite)} {counts}>",
             f"  <testsuite name={attr(suite)} {counts}{stamp}>",
             "    <properties>"]
    lines += [f"      <property name={attr(k)} value={attr(v)}/>" for k, v in props]
    lines.append("    </properties>")
    lines += cases
    if report.warnings:
        lines.append("    <system-err>" + text_node("\n".join(f"warning: {w.message}" for w in report.warnings))
                     + "</system-err>")
    lines += ["  </testsuite>", "</testsuites>"]
    return "\n".join(lines) + "\n"
