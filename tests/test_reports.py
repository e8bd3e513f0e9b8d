"""Renderers (markdown, junit, json checks, table) as pure functions of a Report: snapshot tests of a
fixed report with every kind of check, plus escaping, strict-XML validity and size bounds.

Snapshots live in tests/snapshots/; regenerate after an intended change with
``LOSSCTL_UPDATE_SNAPSHOTS=1 pytest tests/test_reports.py`` and review the diff."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import xml.parsers.expat
import xml.etree.ElementTree as ET

import pytest

from lossctl.gates import Baseline, BaselineEntry, FailAbove, Tolerance, apply_gates
from lossctl.report import render
from lossctl.result import LossResult, Report, Summary, TermResult, Warning_

SNAPSHOTS = pathlib.Path(__file__).parent / "snapshots"


def _res(loss, value, terms=None, samples=100):
    terms = terms or [(loss.split("(")[0], 1.0, value)]
    return LossResult(loss=loss, canonical=loss, value=value, reduction="mean",
                      terms=[TermResult(n, w, {}, v, "mean") for n, w, v in terms], samples=samples)


def make_report() -> Report:
    report = Report(
        version="9.9", inputs={"preds": {"path": "p.npy", "shape": [100], "dtype": "float32"}},
        results=[_res("mse", 0.25), _res("huber(delta=0.5)", 0.5),
                 _res("mse + 0.5*mae", 0.4, [("mse", 1.0, 0.25), ("mae", 0.5, 0.3)]), _res("log_cosh", math.nan)],
        warnings=[Warning_("targets look odd", code="x")],
        provenance={"time": "2026-01-02T03:04:05+00:00", "python": "3.11.0", "numpy": "2.0.0",
                    "inputs": {"preds": {"path": "p.npy", "digest": "sha256:" + "a" * 64}}})
    report.results[0].summary = Summary(100, 0.25, 0.1, 0.0, 0.2, 0.5, 0.9, [(7, 0.9), (3, 0.8)])
    report.results[1].omitted = 2
    apply_gates(report, [FailAbove("mse", 0.3), FailAbove("huber", 0.4), FailAbove("mae", 1.0)],
                Baseline("b.json", [BaselineEntry("mse", 0.2), BaselineEntry("log_cosh", 0.1),
                                    BaselineEntry("gone", 1.0)]), Tolerance(relative=0.1))
    return report


def _snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("LOSSCTL_UPDATE_SNAPSHOTS"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"snapshot {name} is missing; write it with LOSSCTL_UPDATE_SNAPSHOTS=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; see the module docstring"


def _strict_parse(text: str) -> ET.Element:
    parser = xml.parsers.expat.ParserCreate()
    parser.Parse(text.encode("utf-8"), True)  # raises on anything not well-formed XML 1.0
    return ET.fromstring(text.encode("utf-8"))


# --------------------------------------------------------------------------------------- markdown


def test_markdown_snapshot():
    _snapshot("report.md", render(make_report(), "markdown"))


def test_markdown_rows():
    text = render(make_report(), "markdown")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0] == "| `mse` | 0.25 | ≤ 0.3 | 0.2 | +0.05 (+25.00%) | ✗ |"
    assert rows[1] == "| `huber(delta=0.5)` | 0.5 | ≤ 0.4 | — | — | ✗ |"
    assert rows[3].startswith("| `log_cosh` | NaN |") and rows[3].endswith("✗ |")
    assert rows[4] == "| `gone` | missing | — | 1 | — | ✗ |"
    assert "| &nbsp;&nbsp;↳ 0.5 × `mae` | 0.3 | ≤ 1 | | | ✓ |" in text  # a gated term
    assert "| `mse` | 100 | 0.25 | 0.1 | 0 | 0.2 | 0.5 | 0.9 | #7: 0.9, #3: 0.8 |" in text
    assert "2 sample(s) with NaN omitted" in text and "⚠ targets look odd" in text
    assert text.startswith("### lossctl evaluate: ✗ 4 of 6 checks failed\n")


def test_markdown_all_passed_and_no_gates():
    report = Report(version="1", inputs={}, results=[_res("mse", 0.1)])
    assert render(report, "markdown").startswith("### lossctl evaluate: no gates")
    apply_gates(report, [FailAbove("mse", 1)])
    assert render(report, "markdown").startswith("### lossctl evaluate: ✓ all 1 check passed")


def test_markdown_escapes_table_breakers():
    report = Report(version="1", inputs={}, results=[_res("foo(sep='|', tag=`x`)\nbar", 1.0)])
    text = render(report, "markdown")
    row = [line for line in text.splitlines() if "foo" in line][0]
    assert len(re.findall(r"(?<!\\)\|", row)) == 7 and "``" in row and "\n" not in row


def test_markdown_is_bounded():
    report = Report(version="1", inputs={}, results=[_res(f"loss_{i}(x='{'y' * 200}')", float(i)) for i in range(3000)])
    for r in report.results:
        r.summary = Summary(10, 1, 1, 1, 1, 1, 1, [(i, 1.0) for i in range(1000)])
    text = render(report, "markdown")
    assert len(text.encode("utf-8")) < 300 * 1024  # far below GitHub's 1 MiB step-summary cap


# ------------------------------------------------------------------------------------------ junit


def test_junit_snapshot():
    _snapshot("report.junit.xml", render(make_report(), "junit"))


def test_junit_structure():
    root = _strict_parse(render(make_report(), "junit"))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) == root.get("tests")
    failed = [c for c in cases if c.find("failure") is not None]
    assert suite.get("failures") == str(len(failed)) == "4"
    assert {c.get("classname") for c in cases} == {"lossctl.fail_above", "lossctl.baseline"}
    names = [c.get("name") for c in cases]
    assert "mse <= 0.3" in names and "mse vs baseline" in names and "gone vs baseline" in names
    assert "mse + 0.5*mae [term mae] <= 1" in names
    # properties only at testsuite level
    assert [p.get("name") for p in suite.find("properties")][:2] == ["lossctl_version", "python_version"]
    assert all(c.find("properties") is None for c in cases)
    assert root.find("properties") is None
    base = next(c for c in cases if c.get("name") == "mse vs baseline")
    assert base.find("failure").get("type") == "baseline"
    assert "got worse than the baseline 0.2" in base.find("failure").get("message")
    out = next(c for c in cases if c.get("name") == "mse <= 0.3").find("system-out").text
    assert "p95=0.5" in out and "#7: 0.9" in out  # per-sample insight in junit too
    assert suite.find("system-err").text == "warning: targets look odd"
    assert suite.get("timestamp") == "2026-01-02T03:04:05"


def test_junit_value_case_without_gates_and_skipped_missing():
    report = Report(version="1", inputs={}, results=[_res("mse", 0.1)])
    apply_gates(report, baseline=Baseline("b.json", [BaselineEntry("gone", 1.0)]), allow_missing=True)
    root = _strict_parse(render(report, "junit"))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["lossctl.value", "lossctl.baseline"]
    assert cases[1].find("skipped") is not None and suite.get("skipped") == "1" and suite.get("failures") == "0"


def test_junit_escapes_hostile_text():
    nasty = "x(s='<&>\"\x01\x1b]]>', t='\ud800')"
    report = Report(version="1", inputs={}, results=[_res(nasty, 2.0)], warnings=[Warning_("a\x00b <c>")])
    apply_gates(report, [FailAbove(nasty, 1.0)])
    root = _strict_parse(render(report, "junit"))
    case = root.find("testsuite/testcase")
    assert case.get("name").startswith("x(s='<&>\"") and "]]>" in case.get("name")
    assert case.find("failure") is not None


# ----------------------------------------------------------------------------------- json / table


def test_json_checks_shape():
    doc = json.loads(render(make_report(), "json"))
    mse = doc["results"][0]
    fa, base = mse["checks"]
    assert {k: fa[k] for k in ("kind", "limit", "passed")} == {"kind": "fail_above", "limit": 0.3, "passed": True}
    assert base["kind"] == "baseline" and base["passed"] is False
    assert base["baseline"] == 0.2 and base["value"] == 0.25 and base["change"] == pytest.approx(0.05)
    assert base["change_pct"] == pytest.approx(25.0) and base["limit"] == pytest.approx(0.22)
    nan = doc["results"][3]
    assert nan["value"] is None and nan["non_finite"] == "nan"
    assert nan["checks"][0]["value"] is None and nan["checks"][0]["passed"] is False
    assert doc["checks"] == [{"kind": "baseline", "limit": None, "passed": False, "loss": "gone", "baseline": 1.0,
                              "value": None, "missing": True, "verdict": "fail",
                             "message": doc["checks"][0]["message"]}]
    assert doc["passed"] is False


def test_table_shows_checks_and_missing():
    text = render(make_report(), "table")
    assert "FAIL baseline" in text and "gone is in the baseline" in text
    assert "FAIL baseline 0.2 -> 0.25 (+25.00%)" in text and "ok <= 0.3" in text and "ok term mae <= 1" in text


# ------------------------------------------------------------------------------------ through the CLI


@pytest.fixture
def pair(tmp_path):
    import numpy as np

    np.save(tmp_path / "p.npy", np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    np.save(tmp_path / "t.npy", np.array([0.0, 1.5, 2.0, 6.0, 4.1]))
    return str(tmp_path / "p.npy"), str(tmp_path / "t.npy")


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown", "junit"])
def test_output_file_matches_stdout_in_every_format(runner, pair, tmp_path, fmt):
    from lossctl.cli import app

    out = tmp_path / "sub" / f"report.{fmt}"
    result = runner.invoke(app, ["evaluate", *pair, "--loss", "mse", "--fail-above", "mse=1", "--format", fmt,
                                 "--output", str(out)], env={"NO_COLOR": "1"})
    assert result.exit_code == 1
    assert out.read_text(encoding="utf-8") == result.stdout
    if fmt == "json":
        json.loads(result.stdout)
    if fmt == "junit":
        _strict_parse(result.stdout)


def test_worst_samples_rendered_through_the_cli(runner, pair):
    from lossctl.cli import app

    md = runner.invoke(app, ["evaluate", *pair, "--loss", "mae", "--worst", "2", "--format", "markdown"])
    assert md.exit_code == 0, md.stderr
    row = [line for line in md.stdout.splitlines() if line.startswith("| `mae` | 5 |")]
    # abs errors [0, 0.5, 0, 3, 0.1]: population std sqrt(6.668/5), p95 by linear interpolation 0.5 + 0.8*2.5
    assert row == ["| `mae` | 5 | 0.72 | 1.15482 | 0 | 0.1 | 2.5 | 3 | #3: 3, #1: 0.5 |"]
    xml_text = runner.invoke(app, ["evaluate", *pair, "--loss", "mae", "--worst", "2", "--format", "junit"]).stdout
    out = _strict_parse(xml_text).find("testsuite/testcase/system-out").text
    assert "per-sample: n=5 mean=0.72" in out and "worst samples: #3: 3, #1: 0.5" in out
