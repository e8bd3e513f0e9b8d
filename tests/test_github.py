"""GitHub Actions integration (lossctl.github, `evaluate --github`): workflow-command escaping,
annotation limits, and the job summary."""

from __future__ import annotations

import numpy as np
import pytest

from lossctl.cli import app
from lossctl.gates import FailAbove, apply_gates
from lossctl.github import MAX_PER_KIND, SUMMARY_LIMIT, annotations, append_step_summary, command, escape_data, escape_property
from lossctl.result import LossResult, Report, TermResult, Warning_


def _res(loss, value):
    return LossResult(loss=loss, canonical=loss, value=value, reduction="mean",
                      terms=[TermResult(loss, 1.0, {}, value, "mean")])


@pytest.mark.parametrize("raw,data,prop", [
    ("plain", "plain", "plain"),
    ("100%", "100%25", "100%25"),
    ("a\nb\r\nc", "a%0Ab%0D%0Ac", "a%0Ab%0D%0Ac"),
    ("k: v, w", "k: v, w", "k%3A v%2C w"),
    ("%0A literal", "%250A literal", "%250A literal"),  # % first, so an existing escape is not decoded
    ("::error::x", "::error::x", "%3A%3Aerror%3A%3Ax"),
])
def test_escaping(raw, data, prop):
    assert escape_data(raw) == data
    assert escape_property(raw) == prop


def test_command_format():
    assert command("error", "mse = 2\nabove 1", title="lossctl: mse, 50%") == \
        "::error title=lossctl%3A mse%2C 50%25::mse = 2%0Aabove 1"
    assert command("notice", "x") == "::notice::x"


def test_annotations_for_failed_gates_and_warnings_with_limits():
    report = Report(version="1", inputs={}, results=[_res(f"loss{i}", 5.0) for i in range(13)] + [_res("ok", 0.1)],
                    warnings=[Warning_(f"w{i}", code="c") for i in range(12)])
    apply_gates(report, [FailAbove(r.loss, 1.0) for r in report.results])
    lines = annotations(report)
    errors = [line for line in lines if line.startswith("::error ")]
    warnings = [line for line in lines if line.startswith("::warning ")]
    notices = [line for line in lines if line.startswith("::notice ")]
    assert len(errors) == MAX_PER_KIND == 10 and len(warnings) == 10
    assert errors[0] == "::error title=lossctl fail-above%3A loss0::loss0 = 5 is above the limit 1"
    assert warnings[0] == "::warning title=lossctl%3A c::w0"
    assert len(notices) == 2
    assert "3 more failed gate(s)" in notices[0] and "2 more warning(s)" in notices[1]
    assert all("\n" not in line for line in lines)


def test_annotations_none_when_all_passed():
    report = Report(version="1", inputs={}, results=[_res("mse", 0.1)])
    apply_gates(report, [FailAbove("mse", 1.0)])
    assert annotations(report) == []


def test_step_summary_append(tmp_path):
    path = tmp_path / "summary.md"
    assert append_step_summary("x", env={}) is None
    path.write_text("before\n")
    assert append_step_summary("## report", env={"GITHUB_STEP_SUMMARY": str(path)}) == str(path)
    assert path.read_text() == "before\n## report\n"
    huge = "x" * (SUMMARY_LIMIT + 10)
    append_step_summary(huge, env={"GITHUB_STEP_SUMMARY": str(path)})
    assert "too large for the job summary" in path.read_text() and len(path.read_text()) < 1000


@pytest.fixture
def pair(tmp_path):
    np.save(tmp_path / "p.npy", np.array([0.0, 1.0, 2.0, 3.0]))
    np.save(tmp_path / "t.npy", np.array([0.5, 1.0, 2.0, 3.5]))
    return str(tmp_path / "p.npy"), str(tmp_path / "t.npy")


def test_cli_github_flag(runner, pair, tmp_path):
    p, t = pair
    summary = tmp_path / "summary.md"
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "--loss", "mae", "--fail-above", "mse=0.1",
                                 "--fail-above", "mae=1", "--github", "--format", "json"],
                           env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1
    assert result.stdout.lstrip().startswith("{")  # stdout keeps the chosen format
    errors = [line for line in result.stderr.splitlines() if line.startswith("::")]
    assert errors == ["::error title=lossctl fail-above%3A mse::mse = 0.125 is above the limit 0.1"]
    text = summary.read_text()
    assert "| `mse` | 0.125 | ≤ 0.1 | — | — | ✗ |" in text and "| `mae` | 0.25 | ≤ 1 | — | — | ✓ |" in text


def test_cli_github_without_summary_env(runner, pair):
    p, t = pair
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "--github"], env={"GITHUB_STEP_SUMMARY": ""})
    assert result.exit_code == 0 and "::" not in result.stderr


def test_cli_github_annotates_usage_errors(runner, pair):
    p, t = pair
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "--fail-above", "nope=1", "--github"],
                           env={"GITHUB_STEP_SUMMARY": ""})
    assert result.exit_code == 2
    first, last = result.stderr.strip().splitlines()
    assert first.startswith("::error title=lossctl evaluate::--fail-above nope=1")
    assert last.startswith("error: --fail-above nope=1")
