"""Scoring files (lossctl.scoring_config, `evaluate --config`): loading, errors, flag overrides, and
agreement with the shipped JSON Schema (configs/scoring.schema.json)."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import yaml

from lossctl.cli import app
from lossctl.errors import UsageError
from lossctl.scoring_config import ScoringConfig, load_config, merge, parse_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "configs" / "scoring.schema.json").read_text())


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(3)
    t = rng.normal(size=100)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "p.npy", t + rng.normal(scale=0.3, size=100))
    np.save(tmp_path / "in" / "t.npy", t)
    np.save(tmp_path / "in" / "worse.npy", t + rng.normal(scale=1.0, size=100))
    return tmp_path


def _write(path: pathlib.Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------------ loading


def test_load_full_config_resolves_paths_against_its_directory(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = _write(tmp_path / "cfg" / "scoring.yaml", """
version: 1
inputs: {preds: ../in/p.npy, targets: /abs/t.npy, anchor: a.npz:anchor}
losses: [mse, "huber(delta=0.5)"]
reduction: sum
nan_policy: omit
chunk_size: 10
plugins: plug.py
fail_above: {mse: 1, "huber(delta=0.5)": 0.25}
baseline: {report: base.json, max_increase: [5%, 0.01], allow_missing: true}
report: {format: junit, output: out/r.xml, worst: 3, per_sample: ps.npy}
no_fail: true
github: true
strict: true
""")
    cfg = load_config(path)
    d = str(tmp_path / "cfg")
    assert cfg.preds == os.path.normpath(os.path.join(d, "../in/p.npy")) and cfg.targets == "/abs/t.npy"
    assert cfg.inputs == {"anchor": os.path.join(d, "a.npz:anchor")}
    assert cfg.losses == ["mse", "huber(delta=0.5)"]
    assert (cfg.reduction, cfg.nan_policy, cfg.chunk_size) == ("sum", "omit", 10)
    assert cfg.plugins == [os.path.join(d, "plug.py")]
    assert cfg.fail_above == {"mse": 1.0, "huber(delta=0.5)": 0.25}
    assert cfg.baseline == os.path.join(d, "base.json") and cfg.max_increase == ["5%", "0.01"]
    assert cfg.allow_missing and cfg.no_fail and cfg.github and cfg.strict
    assert (cfg.format, cfg.output, cfg.worst) == ("junit", os.path.join(d, "out/r.xml"), 3)


@pytest.mark.parametrize("text,needle", [
    ("losses: [mse]\nfail_abve: {mse: 1}\n", "2: unknown key 'fail_abve'; did you mean 'fail_above'?"),
    ("losses: [mse]\nbaseline: {report: b.json, max_increse: 5%}\n", "unknown key 'baseline.max_increse'; did you mean 'baseline.max_increase'?"),
    ("report: {fromat: json}\n", "did you mean 'report.format'?"),
    ("- mse\n", "must be a mapping"),
    ("", "it is empty"),
    ("losses: [mse\n", "not valid YAML"),
    ("losses: !!python/object/apply:os.system [echo hi]\n", "only plain YAML"),
    ("losses: [mse]\nlosses: [mae]\n", "duplicate key"),
    ("version: 2\n", "version must be 1"),
    ("losses: []\n", "non-empty list"),
    ("losses: [1]\n", "non-empty list"),
    ("fail_above: {mse: abc}\n", "fail_above.mse must be a number"),
    ("fail_above: {mse: true}\n", "fail_above.mse must be a number"),
    ("fail_above: [mse]\n", "fail_above must be a mapping"),
    ("reduction: avg\n", "reduction must be one of mean, sum, none"),
    ("nan_policy: omitt\n", "did you mean 'omit'?"),
    ("chunk_size: 0\n", "chunk_size must be an integer >= 1"),
    ("baseline: {max_increase: 5%}\n", "baseline needs 'report'"),
    ("baseline: {report: b.json, max_increase: -5%}\n", "finite number >= 0"),
    ("baseline: {report: b.json, max_increase: lots}\n", "not a number"),
    ("baseline: 3\n", "baseline must be a report path"),
    ("inputs: {preds: 3}\n", "inputs.preds must be a file path"),
    ("inputs: [a.npy]\n", "inputs must be a mapping"),
    ("strict: yes please\n", "strict must be true or false"),
    ("report: {worst: -1}\n", "report.worst must be an integer >= 0"),
    ("report: {format: xml}\n", "report.format must be one of"),
])
def test_bad_config_is_usage_error(tmp_path, text, needle):
    path = _write(tmp_path / "s.yaml", text)
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert needle in str(info.value)
    assert str(info.value).startswith(path)


def test_missing_config_file_and_directory(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(UsageError, match="directory"):
        load_config(str(tmp_path))


def _merge(cfg: ScoringConfig, **flags):
    """merge() with the command line giving ``flags`` (by evaluate's parameter names) and nothing else."""
    from lossctl.commands._evaluate_impl import flags_config

    return merge(cfg, flags_config(flags))


def test_merge_flags_override():
    cfg = ScoringConfig(preds="a.npy", targets="t.npy", inputs={"x1": "x1.npy"}, losses=["mse", "mae"],
                        reduction="sum", fail_above={"mse": 1.0, "mae": 2.0}, max_increase=["5%"], format="json",
                        plugins=["p.py"], strict=True)
    out = _merge(cfg, preds="b.npy", input_=["x2=x2.npy"], loss=["huber"], fail_above=["mse=0.5"],
                 reduction="mean", max_increase=["0.1"], format_="markdown", plugin=["q.py"], github=True)
    assert (out.preds, out.targets) == ("b.npy", "t.npy")
    assert out.inputs == {"x1": "x1.npy", "x2": "x2.npy"}
    assert out.losses == ["huber"] and out.reduction == "mean" and out.format == "markdown"
    assert out.fail_above == {"mae": 2.0, "mse": 0.5}
    assert out.max_increase == ["0.1"] and out.plugins == ["p.py", "q.py"]
    assert out.strict and out.github
    assert cfg.fail_above == {"mse": 1.0, "mae": 2.0}  # the file's config is not mutated


# ---------------------------------------------------------------------------------------- CLI


def _config(data, extra: str = "") -> str:
    return _write(data / "scoring.yaml", f"""
inputs: {{preds: in/p.npy, targets: in/t.npy}}
losses: [mse, mae]
fail_above: {{mse: 0.5}}
{extra}""")


def test_cli_config_runs_from_any_cwd(runner, data, monkeypatch, tmp_path_factory):
    cfg = _config(data)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    result = runner.invoke(app, ["evaluate", "--config", cfg, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [r["loss"] for r in doc["results"]] == ["mse", "mae"]
    assert doc["results"][0]["checks"][0]["kind"] == "fail_above"


def test_cli_flags_override_config(runner, data):
    cfg = _config(data)
    worse = str(data / "in" / "worse.npy")
    assert runner.invoke(app, ["evaluate", worse, "--config", cfg]).exit_code == 1  # PREDS overrides inputs.preds
    assert runner.invoke(app, ["evaluate", worse, "--config", cfg, "--fail-above", "mse=100"]).exit_code == 0
    r = runner.invoke(app, ["evaluate", "--config", cfg, "--loss", "huber", "--format", "json"])
    assert r.exit_code == 2 and "fail_above" in r.stderr and "names no evaluated loss" in r.stderr


def test_cli_config_baseline_cycle(runner, data):
    cfg = _config(data, "baseline: {report: base.json, max_increase: 10%}\nreport: {format: json, output: base.json}\n")
    first = runner.invoke(app, ["evaluate", "--config", cfg, "--baseline", str(data / "none.json")])
    assert first.exit_code == 2 and "no such file" in first.stderr
    plain = _config(data, "report: {format: json, output: base.json}\n")
    assert runner.invoke(app, ["evaluate", "--config", plain]).exit_code == 0
    cfg = _config(data, "baseline: {report: base.json, max_increase: 10%}\n")
    assert runner.invoke(app, ["evaluate", "--config", cfg]).exit_code == 0
    r = runner.invoke(app, ["evaluate", str(data / "in" / "worse.npy"), "--config", cfg, "--fail-above", "mse=100",
                            "--format", "json"])
    assert r.exit_code == 1
    checks = [c for res in json.loads(r.stdout)["results"] for c in res["checks"] if c["kind"] == "baseline"]
    assert len(checks) == 2 and not any(c["passed"] for c in checks)


@pytest.mark.parametrize("text", ["losses: [mse]\nbogus: 1\n", "- a\n", "losses: [mse\n", "fail_above: {mse: x}\n"])
def test_cli_bad_config_exit_2(runner, tmp_path, text):
    path = _write(tmp_path / "bad.yaml", text)
    result = runner.invoke(app, ["evaluate", "--config", path])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_cli_config_github_annotates_errors(runner, tmp_path):
    path = _write(tmp_path / "s.yaml", "github: true\nlosses: [mse]\ninputs: {preds: nope.npy, targets: nope.npy}\n")
    result = runner.invoke(app, ["evaluate", "--config", path], env={"GITHUB_STEP_SUMMARY": ""})
    assert result.exit_code == 2
    assert result.stderr.startswith("::error title=lossctl evaluate::")
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


# ----------------------------------------------------------------------------- schema agreement


SHARED_CASES = [
    ({}, True),
    ({"version": 1, "losses": "mse"}, True),
    ({"losses": ["mse", "huber(delta=0.5)"], "inputs": {"preds": "p.npy", "targets": "t.npy", "anchor": "a.npy"}}, True),
    ({"fail_above": {"mse": 0.3, "huber(delta=0.5)": 1}}, True),
    ({"baseline": "b.json"}, True),
    ({"baseline": {"report": "b.json", "max_increase": "5%", "allow_missing": True}}, True),
    ({"baseline": {"report": "b.json", "max_increase": 0.01}}, True),
    ({"baseline": {"report": "b.json", "max_increase": ["5%", 0.001]}}, True),
    ({"report": {"format": "markdown", "output": "r.md", "worst": 5, "per_sample": "s.npy"}}, True),
    ({"reduction": "none", "nan_policy": "omit", "chunk_size": 1000, "plugins": ["p.py"]}, True),
    ({"no_fail": True, "github": False, "strict": True}, True),
    ({"chunk_size": None, "report": {"worst": None}}, True),
    ({"hash": "sha256"}, True),
    ({"hash": "none"}, True),
    ({"hash": "md5"}, False),
    ({"hash": False}, False),
    ({"bogus": 1}, False),
    ({"version": 2}, False),
    ({"version": True}, False),
    ({"losses": []}, False),
    ({"losses": [3]}, False),
    ({"losses": [""]}, False),
    ({"inputs": ["p.npy"]}, False),
    ({"inputs": {"preds": 3}}, False),
    ({"inputs": {"bad name": "x.npy"}}, False),
    ({"fail_above": {"mse": "0.3"}}, False),
    ({"fail_above": {"mse": True}}, False),
    ({"fail_above": ["mse"]}, False),
    ({"reduction": "avg"}, False),
    ({"nan_policy": "skip"}, False),
    ({"chunk_size": 0}, False),
    ({"chunk_size": 1.5}, False),
    ({"plugins": 3}, False),
    ({"baseline": 3}, False),
    ({"baseline": {"max_increase": "5%"}}, False),
    ({"baseline": {"report": "b.json", "max_increase": "-5%"}}, False),
    ({"baseline": {"report": "b.json", "max_increase": -1}}, False),
    ({"baseline": {"report": "b.json", "max_increase": "lots"}}, False),
    ({"baseline": {"report": "b.json", "max_increase": True}}, False),
    ({"baseline": {"report": "b.json", "extra": 1}}, False),
    ({"baseline": {"report": "b.json", "allow_missing": "yes"}}, False),
    ({"report": {"format": "xml"}}, False),
    ({"report": {"worst": -1}}, False),
    ({"report": {"colour": True}}, False),
    ({"report": "r.md"}, False),
    ({"strict": "yes"}, False),
    ([], False),
    (None, False),
]


def _loader_accepts(doc) -> bool:
    try:
        parse_config(doc, "s.yaml")
    except UsageError:
        return False
    return True


@pytest.mark.parametrize("doc,valid", SHARED_CASES, ids=[json.dumps(d) for d, _ in SHARED_CASES])
def test_schema_agrees_with_loader(doc, valid):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert validator.is_valid(doc) is valid, list(validator.iter_errors(doc))
    assert _loader_accepts(doc) is valid


def test_schema_is_valid_and_covers_every_loader_key():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    from lossctl.scoring_config import BASELINE_KEYS, REPORT_KEYS, TOP_KEYS

    assert set(SCHEMA["properties"]) == set(TOP_KEYS)
    assert set(SCHEMA["properties"]["baseline"]["oneOf"][1]["properties"]) == set(BASELINE_KEYS)
    assert set(SCHEMA["properties"]["report"]["properties"]) == set(REPORT_KEYS)


def test_shipped_config_is_valid():
    path = ROOT / "configs" / "scoring.yaml"
    doc = yaml.safe_load(path.read_text())
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, SCHEMA)
    cfg = load_config(str(path))
    assert cfg.losses and cfg.baseline and os.path.exists(cfg.baseline) and os.path.exists(cfg.preds)


def test_merge_other_format_drops_the_files_output():
    cfg = ScoringConfig(format="json", output="r.json")
    assert _merge(cfg, format_="markdown").output is None
    assert _merge(cfg, format_="json").output == "r.json"
    assert _merge(cfg, format_="markdown", output="r.md").output == "r.md"
    assert _merge(cfg).output == "r.json"


def test_cwd_relative_input_paths_are_a_fallback(runner, data, monkeypatch):
    (data / "cfg").mkdir()
    cfg = _write(data / "cfg" / "s.yaml", "inputs: {preds: in/p.npy, targets: in/t.npy}\nlosses: [mse]\n"
                                           "report: {format: json, output: out.json}\n")
    monkeypatch.chdir(data)
    result = runner.invoke(app, ["evaluate", "--config", cfg])
    assert result.exit_code == 0, result.stderr
    assert (data / "cfg" / "out.json").exists()  # outputs are always relative to the scoring file
    assert load_config(cfg).preds == "in/p.npy"
    (data / "cfg" / "in").mkdir()
    np.save(data / "cfg" / "in" / "p.npy", np.zeros(100))
    assert load_config(cfg).preds == str(data / "cfg" / "in" / "p.npy")  # the file's own directory wins
