"""The CI example (README "Use in CI" and docs/ci.md) runs as written: every `lossctl evaluate` command in its code blocks,
against the committed configs/scoring.yaml, configs/examples/ and sample_data/, in a copy of the repo."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import shutil
import xml.etree.ElementTree as ET

import pytest
import yaml

from lossctl.cli import app

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", ROOT / "docs" / "ci.md")


def _doc_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCS)


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def documented_commands() -> list[tuple[str, int]]:
    """(command line, expected exit code) for each `lossctl evaluate` line in a code block."""
    out = []
    for block in _code_blocks(_doc_text()):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            m = re.search(r"(lossctl evaluate\b[^#]*?)\s*(?:#\s*(?:exit (\d+))?.*)?$", line)
            if m:
                out.append((m.group(1).strip(), int(m.group(2) or 0)))
    return out


@pytest.fixture
def repo(tmp_path, monkeypatch):
    for name in ("configs", "sample_data"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_committed_baseline_matches_sample_data():
    xxhash = pytest.importorskip("xxhash")

    base = json.loads((ROOT / "configs" / "examples" / "baseline.json").read_text())
    for name, info in base["provenance"]["inputs"].items():
        digest = "xxh3_128:" + xxhash.xxh3_128((ROOT / info["path"]).read_bytes()).hexdigest()
        assert digest == info["digest"], (f"{info['path']} changed since configs/examples/baseline.json was made; "
                                          f"rerun: python configs/examples/make_examples.py")


def test_doc_has_the_steps():
    commands = [c for c, _ in documented_commands()]
    assert "lossctl evaluate --config configs/scoring.yaml --github" in commands
    assert any("--format junit" in c for c in commands)
    assert any(code == 1 for _, code in documented_commands())
    # the YAML shown for GitHub and GitLab parses, and the example config in the doc is the real one's subset
    blocks = [b for b in _code_blocks(_doc_text()) if "runs-on" in b or "artifacts" in b]
    assert len(blocks) == 2
    for block in blocks:
        assert isinstance(yaml.safe_load(block), dict)


@pytest.mark.parametrize("command,expected", documented_commands(), ids=[c for c, _ in documented_commands()])
def test_documented_command_runs(runner, repo, command, expected):
    summary = repo / "summary.md"
    summary.write_text("earlier step\n")
    args = shlex.split(command)[1:]
    result = runner.invoke(app, args, env={"GITHUB_STEP_SUMMARY": str(summary), "NO_COLOR": "1"})
    assert result.exit_code == expected, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    uses_config = "--config" in args
    if uses_config:
        assert "warning:" not in result.stderr  # the example data has no pitfalls
    if "--github" in args:
        text = summary.read_text()
        assert text.startswith("earlier step\n")  # appended, not overwritten
        assert "| `mae` |" in text and "✓" in text and "### lossctl evaluate" in text
        assert "::error" not in result.stderr
    else:
        assert summary.read_text() == "earlier step\n"
    if "--format junit" in args:
        root = ET.parse(repo / "reports" / "lossctl-junit.xml").getroot()
        assert root.tag == "testsuites" and root.get("failures") == "0"
    if uses_config and "--format" not in args:  # the scoring file asks for JSON to stdout and reports/scoring.json
        doc = json.loads(result.stdout)
        assert json.loads((repo / "reports" / "scoring.json").read_text()) == doc
        if "--no-fail" not in args:
            assert doc["passed"] is (expected == 0)
        assert {c["kind"] for r in doc["results"] for c in r["checks"]} == {"fail_above", "baseline"}
    if expected == 1:
        assert "got worse than the baseline" in result.stderr


def test_github_step_on_a_worse_model_annotates(runner, repo):
    summary = repo / "summary.md"
    result = runner.invoke(app, ["evaluate", "configs/examples/regression_preds_worse.npy", "--config",
                                 "configs/scoring.yaml", "--github"], env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("::error ")]
    assert len(errors) == 2 and all("title=lossctl baseline%3A " in e for e in errors)
    assert "✗" in summary.read_text()


def test_baseline_refresh_round_trip(runner, repo):
    """The documented update: the accepted run's report becomes the baseline; the same model then passes."""
    result = runner.invoke(app, ["evaluate", "configs/examples/regression_preds_worse.npy", "--config",
                                 "configs/scoring.yaml", "--no-fail"])
    assert result.exit_code == 0
    shutil.copy(repo / "reports" / "scoring.json", repo / "configs" / "examples" / "baseline.json")
    again = runner.invoke(app, ["evaluate", "configs/examples/regression_preds_worse.npy", "--config",
                                "configs/scoring.yaml"])
    assert again.exit_code == 0, again.stderr
