"""`lossctl recommend`: the SPEC §7 seed table, the JSON contract, streams and exit codes, and
that every evaluable recommendation parses and runs through `lossctl evaluate`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lossctl.advisor import advise
from lossctl.advisor.rules import load_rules
from lossctl.cli import app

ROOT = Path(__file__).resolve().parent.parent
TASK_FILES = sorted((ROOT / "configs" / "tasks").glob("*.yaml"))
NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(|$|\s*[+-])")


def names(expr: str) -> set[str]:
    """Loss names in an expression (terms may carry a leading weight and '(...)' arguments)."""
    out = set()
    for term in re.split(r"\s[+-]\s", expr):
        m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*(\(|$)", term.strip())
        if m:
            out.add(m.group(1))
    return out


def run(runner, tmp_path, text, *args):
    p = tmp_path / "task.yaml"
    p.write_text(text)
    return runner.invoke(app, ["recommend", str(p), *args])


def top_json(runner, tmp_path, text, *args):
    r = run(runner, tmp_path, text, "--format", "json", *args)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


# SPEC §7 seed table: task file -> allowed loss-name sets for the first recommendation
SEED = [
    ("task: regression", [{"mse"}]),
    ("task: regression\noutliers: some", [{"huber"}, {"mae"}]),
    ("task: regression\noutliers: many", [{"huber"}, {"mae"}]),
    ("task: regression\noutliers: true", [{"huber"}, {"mae"}]),
    ("task: binary_classification", [{"bce_with_logits"}]),
    ("task: classification\nlabels: binary\nhead: logits", [{"bce_with_logits"}]),
    ("task: classification\nclasses: 2", [{"bce_with_logits"}]),
    ("task: binary_classification\nhead: probabilities", [{"bce"}]),
    ("task: multiclass_classification", [{"cross_entropy"}]),
    ("task: classification\nclasses: 10", [{"cross_entropy"}]),
    ("task: multilabel_classification", [{"bce_with_logits"}]),
    ("task: binary_classification\nimbalance: moderate", [{"focal"}, {"cross_entropy"}]),
    ("task: binary_classification\nimbalance: extreme", [{"focal"}, {"cross_entropy"}]),
    ("task: binary_classification\nclass_counts: [9900, 100]", [{"focal"}, {"cross_entropy"}]),
    ("task: binary_classification\nminority_fraction: 0.001", [{"focal"}, {"cross_entropy"}]),
    ("task: multiclass_classification\nimbalance: moderate", [{"focal"}, {"cross_entropy"}]),
    ("task: multiclass_classification\nimbalance: extreme", [{"focal"}, {"cross_entropy"}]),
    ("task: classification\nclass_counts: [1000, 50, 5]", [{"focal"}, {"cross_entropy"}]),
    ("task: segmentation", [{"cross_entropy", "dice"}]),
    ("task: segmentation\nclasses: 5", [{"cross_entropy", "dice"}]),
    ("task: segmentation\nlabels: binary", [{"bce_with_logits", "dice"}]),
    ("task: embedding", [{"triplet"}, {"contrastive"}]),
    ("task: embedding\nsupervision: pairs", [{"contrastive"}]),
    ("task: embedding\nsupervision: triplets", [{"triplet"}]),
    ("task: object_detection", [{"focal", "smooth_l1"}]),
    ("task: detection", [{"focal", "smooth_l1"}]),
    ("task: generative", [{"mse", "gaussian_kl"}, {"bce", "gaussian_kl"}]),
    ("task: generative\ndata: binary", [{"bce", "gaussian_kl"}]),
    ("task: generative\ndata: continuous", [{"mse", "gaussian_kl"}]),
    ("task: sequence\nalignment: none", [{"ctc"}]),
    ("task: sequence", [{"ctc"}]),
    ("task: distillation", [{"kl_div"}]),
    ("task: distillation\nteacher: probabilities", [{"kl_div"}]),
    ("task: binary_classification\nmargin: true", [{"hinge"}]),
    ("task: multiclass_classification\nmargin: true", [{"hinge"}]),
    ("task: classification\nmargin: true", [{"hinge"}]),
    ("task: regression\nsecond_order: true", [{"log_cosh"}]),
    ("task: regression\nsecond_order: true\noutliers: many", [{"log_cosh"}]),
]


@pytest.mark.parametrize("text,allowed", SEED, ids=[t.replace("\n", ",") for t, _ in SEED])
def test_seed_table_first_recommendation(runner, tmp_path, text, allowed):
    doc = top_json(runner, tmp_path, text + "\n")
    first = doc["recommendations"][0]
    assert first["evaluable"] is True
    assert names(first["loss"]) in allowed, first["loss"]


def test_weighted_cross_entropy_when_counts_known(runner, tmp_path):
    doc = top_json(runner, tmp_path, "task: classification\nclass_counts: [1000, 50, 5]\n")
    assert doc["recommendations"][0]["loss"] == "cross_entropy(weight=[0.3517, 7.033, 70.33])"
    assert doc["recommendations"][0]["params"] == {"weight": [0.3517, 7.033, 70.33]}


def test_json_shape(runner, tmp_path):
    doc = top_json(runner, tmp_path, "task: segmentation\nforeground: 0.02\n")
    assert set(doc) >= {"task", "recommendations", "warnings", "rules_fired"}
    assert doc["task"]["task"] == "segmentation"
    for rec in doc["recommendations"]:
        assert set(rec) >= {"loss", "evaluable", "score", "params", "reasons", "references", "code"}
        assert isinstance(rec["evaluable"], bool) and isinstance(rec["score"], (int, float))
        assert isinstance(rec["reasons"], list) and rec["reasons"]
        assert "pytorch" in rec["code"] or not rec["evaluable"]
    scores = [r["score"] for r in doc["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    for w in doc["warnings"]:
        assert w["level"] in ("info", "warn", "error") and w["message"]
    assert "S01" in doc["rules_fired"] and "S02" in doc["rules_fired"]
    assert doc["recommendations"][0]["loss"] == "cross_entropy + dice(from_logits=true)"


def test_json_stdout_is_one_document_and_stderr_empty(runner, tmp_path):
    r = run(runner, tmp_path, "task: regression\n", "--format", "json")
    assert r.exit_code == 0 and r.stderr == ""
    json.loads(r.stdout)  # exactly one document
    assert "NaN" not in r.stdout and "Infinity" not in r.stdout


def test_table_output(runner, tmp_path):
    r = run(runner, tmp_path, "task: regression\noutliers: many\n")
    assert r.exit_code == 0 and r.stderr == ""
    assert "huber(delta=1.0)" in r.stdout and "Warnings" in r.stdout
    assert "\x1b[" not in r.stdout  # no colour when not a TTY
    assert "torch.nn.HuberLoss(delta=1.0)" in r.stdout


def test_top_limits(runner, tmp_path):
    doc = top_json(runner, tmp_path, "task: regression\n", "--top", "1")
    assert len(doc["recommendations"]) == 1
    doc = top_json(runner, tmp_path, "task: regression\n", "--top", "50")
    assert len(doc["recommendations"]) == 3


@pytest.mark.parametrize("args,needle", [(["--top", "0"], "--top"), (["--format", "xml"], "--format")])
def test_bad_flags(runner, tmp_path, args, needle):
    r = run(runner, tmp_path, "task: regression\n", *args)
    assert r.exit_code == 2 and r.stdout == "" and needle in r.stderr


def test_framework_selects_code(runner, tmp_path):
    doc = top_json(runner, tmp_path, "task: regression\nframework: lightgbm\n")
    assert doc["recommendations"][0]["code"] == {"lightgbm": "lgb.LGBMRegressor(objective='regression')"}
    doc = top_json(runner, tmp_path, "task: regression\nframework: any\n")
    assert set(doc["recommendations"][0]["code"]) == {"pytorch", "keras", "lightgbm", "xgboost", "sklearn"}
    doc = top_json(runner, tmp_path, "task: binary_classification\nclass_counts: [900, 100]\nframework: xgboost\n")
    codes = {r["id"]: r["code"] for r in doc["recommendations"]}
    assert codes["bce_weighted"] == {"xgboost": "xgb.XGBClassifier(objective='binary:logistic', scale_pos_weight=9.0)"}


def test_explain_and_why_not_json(runner, tmp_path):
    doc = top_json(runner, tmp_path, "task: regression\noutliers: many\n", "--explain", "--why-not", "mse")
    facts = {f["fact"]: f for f in doc["explain"]["facts"]}
    assert facts["outliers"]["source"] == "task file"
    assert [r["id"] for r in doc["explain"]["rules"]] == doc["rules_fired"]
    wn = doc["why_not"]["matches"][0]
    assert wn["id"] == "mse" and wn["score"] == 40
    assert {"rule": "R02", "score": -60, "reason": "Squared error lets a few large residuals dominate the fit."} in wn["contributions"]
    assert "lowered by R02" in wn["summary"]


def test_why_not_excluded_and_table(runner, tmp_path):
    doc = top_json(runner, tmp_path, "task: multilabel_classification\n", "--why-not", "ce")
    m = {x["id"]: x for x in doc["why_not"]["matches"]}
    assert m["cross_entropy"]["excluded_by"][0]["rule"] == "L01"
    assert m["cross_entropy"]["summary"].startswith("excluded by L01")
    r = run(runner, tmp_path, "task: multilabel_classification\n", "--why-not", "cross_entropy", "--explain")
    assert r.exit_code == 0 and "Why not cross_entropy?" in r.stdout and "L01 excludes it" in r.stdout
    assert "Rules fired" in r.stdout


def test_why_not_unknown(runner, tmp_path):
    r = run(runner, tmp_path, "task: regression\n", "--why-not", "hubber")
    assert r.exit_code == 2 and r.stdout == "" and "did you mean 'huber'" in r.stderr


@pytest.mark.parametrize("text,needle", [
    ("task: !!python/object/apply:os.system ['echo PWNED']\n", "refused"),
    ("- task: regression\n", "mapping"),
    ("42\n", "mapping"),
    ("task: regression\nfoo: 1\n", "unknown key 'foo'"),
    ("task: regression\noutliers: lots\n", "'lots'"),
    ("outliers: some\n", "missing the required key 'task'"),
    ("task: classificaton\n", "did you mean 'classification'"),
])
def test_bad_task_files_exit_2(runner, tmp_path, text, needle):
    r = run(runner, tmp_path, text)
    assert r.exit_code == 2
    assert r.stdout == "" and "PWNED" not in r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_hostile_yaml_does_not_run(runner, tmp_path):
    marker = tmp_path / "marker"
    r = run(runner, tmp_path, f"task: !!python/object/apply:os.system ['touch {marker}']\n")
    assert r.exit_code == 2 and not marker.exists()


def test_missing_task_file(runner, tmp_path):
    r = runner.invoke(app, ["recommend", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_rules_swap(runner, tmp_path):
    rules = tmp_path / "mini.yaml"
    rules.write_text(
        "version: 1\nlosses:\n  mae: {call: mae}\n  mse: {call: mse}\nrules:\n"
        "  - id: ONLY\n    when: {task: regression}\n"
        "    recommend:\n      - {loss: mae, score: 5, reason: house style}\n")
    doc = top_json(runner, tmp_path, "task: regression\n", "--rules", str(rules))
    assert [r["loss"] for r in doc["recommendations"]] == ["mae"]
    assert doc["rules_fired"] == ["ONLY"] and doc["recommendations"][0]["reasons"] == ["house style"]


@pytest.mark.parametrize("path", TASK_FILES, ids=[p.name for p in TASK_FILES])
def test_example_task_files_run(runner, path):
    r = runner.invoke(app, ["recommend", str(path), "--format", "json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["recommendations"]
    first_line = path.read_text().splitlines()[0]
    expected = first_line.split("->")[-1].strip().split(" (")[0] if "->" in first_line else None
    if expected and "not evaluable" not in first_line and "[...]" not in expected:
        assert doc["recommendations"][0]["loss"] == expected


# ------------------------------------------------ evaluable expressions parse and run

def _all_evaluable():
    rs = load_rules()
    exprs = {}
    facts_list = [c["facts"] for r in rs.rules for c in r.tests]
    facts_list += [{"task": "classification", "class_counts": [50, 30, 20, 10]},
                   {"task": "regression", "predict": "interval", "coverage": 0.8}]
    from lossctl.advisor import advise_facts
    from lossctl.advisor.goldens import case_task

    for facts in facts_list:
        for rec in advise_facts(case_task(facts)).recommendations():
            if rec["evaluable"]:
                exprs.setdefault(rec["loss"], rec["id"])
    return exprs


EVALUABLE = _all_evaluable()


def test_evaluable_expressions_match_the_spec_grammar():
    number = r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
    value = rf"({number}|true|false|none|[A-Za-z_]\w*|\[({number})(, ({number}))*\])"
    call = rf"[a-z_][a-z0-9_]*(\([a-z_]+={value}(, [a-z_]+={value})*\))?"
    term = rf"({number}\*)?{call}"
    grammar = re.compile(rf"^{term}( [+-] {term})*$")
    for e in EVALUABLE:
        assert grammar.match(e), e


@pytest.mark.parametrize("expr", sorted(EVALUABLE))
def test_evaluable_expression_binds(expr):
    from lossctl.expr import bind
    from lossctl.registry import canonical_name
    from lossctl.errors import ExprError

    import lossctl.losses  # noqa: F401

    for n in names(expr):
        try:
            canonical_name(n)
        except ExprError:
            pytest.skip(f"{n} is not in the registry yet")
    bound = bind(expr)
    assert {b.name for b in bound} == names(expr)


def _inputs_for(expr: str):
    rng = np.random.default_rng(0)
    n, c = 16, 4
    ns = names(expr)
    m = re.search(r"weight=\[([^\]]*)\]", expr)
    if m:
        c = len(m.group(1).split(","))
    logits = rng.normal(size=(n, c))
    idx = rng.integers(0, c, size=n)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    bits = rng.integers(0, 2, size=n).astype(float)
    if "mining=" in expr:  # embeddings (N, D) as PREDS, class labels as TARGETS
        return rng.normal(size=(n, 3)), np.repeat(np.arange(4), n // 4), {}
    if "triplet" in ns:
        return None, None, {k: rng.normal(size=(n, 3)) for k in ("anchor", "positive", "negative")}
    if "info_nce" in ns:  # two views: row i of x2 is the positive of row i of x1
        x = rng.normal(size=(n, 3))
        return None, None, {"x1": x + 0.3 * rng.normal(size=(n, 3)), "x2": x + 0.3 * rng.normal(size=(n, 3))}
    if "cox_ph" in ns:  # risk scores, times, events (at least one)
        return rng.normal(size=n), rng.exponential(size=n), {"event": np.r_[1.0, bits[1:]]}
    if "contrastive" in ns:
        return None, bits, {"x1": rng.normal(size=(n, 3)), "x2": rng.normal(size=(n, 3))}
    if "cosine_embedding" in ns:
        return None, bits * 2 - 1, {"x1": rng.normal(size=(n, 3)), "x2": rng.normal(size=(n, 3))}
    if "ctc" in ns:
        t, s = 12, 3
        lp = rng.normal(size=(t, n, c))
        lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
        return None, rng.integers(1, c, size=(n, s)), {
            "log_probs": lp, "input_lengths": np.full(n, t), "target_lengths": np.full(n, s)}
    if "gaussian_kl" in ns:
        if "bce" in ns:
            return rng.uniform(0.05, 0.95, size=(n, 3)), rng.integers(0, 2, size=(n, 3)).astype(float), {}
        return rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), {}
    if "gaussian_nll" in ns:
        return rng.normal(size=n), rng.normal(size=n), {"var": rng.uniform(0.5, 2, size=n)}
    if "poisson_nll" in ns:
        return rng.normal(size=n), rng.poisson(3, size=n).astype(float), {}
    if ns & {"msle", "mape"}:  # positive targets (and predictions)
        return rng.uniform(0.5, 5, size=n), rng.uniform(0.5, 5, size=n), {}
    if "kl_div" in ns:
        return (logits if "from_logits=true" in expr else probs), probs, {}
    if "cross_entropy" in ns and "smooth_l1" in ns:
        return logits, probs, {}
    if ns & {"cross_entropy", "nll", "multi_margin"}:
        if "nll" in ns:
            return np.log(probs), idx, {}
        return logits, idx, {}
    if "hinge" in ns:
        return rng.normal(size=n), bits, {}
    if "bce" in ns:
        return rng.uniform(0.05, 0.95, size=n), bits, {}
    if ns & {"bce_with_logits", "focal", "dice", "iou", "tversky"}:
        return rng.normal(size=n), bits, {}
    if "poisson_nll" in ns:
        return rng.normal(size=n), rng.poisson(3, size=n).astype(float), {}
    return rng.normal(size=n), rng.normal(size=n), {}


@pytest.mark.parametrize("expr", sorted(EVALUABLE))
def test_evaluable_expression_runs(expr):
    from lossctl.registry import canonical_name
    from lossctl.errors import ExprError
    import lossctl.losses  # noqa: F401

    for n in names(expr):
        try:
            canonical_name(n)
        except ExprError:
            pytest.skip(f"{n} is not in the registry yet")
    from lossctl.api import evaluate

    preds, targets, inputs = _inputs_for(expr)
    report = evaluate(preds, targets, loss=expr, inputs=inputs or None, provenance=False)
    value = report.results[0].value
    assert value is not None and np.isfinite(value), (expr, value)


def test_unknown_call_in_custom_rules_is_refused_and_never_shown_evaluable(runner, tmp_path):
    from lossctl.advisor import advise_facts
    from lossctl.advisor.schema import task_from_mapping

    rules = tmp_path / "custom.yaml"
    rules.write_text(
        "version: 1\nlosses:\n  mystery: {call: not_a_lossctl_loss}\n  bad_param: {call: huber, params: {delta: -1.0}}\n"
        "rules:\n  - id: C1\n    when: {task: regression}\n    recommend:\n"
        "      - {loss: mystery, score: 5, reason: r}\n      - {loss: bad_param, score: 4, reason: r}\n")
    # --rules: an entry written as evaluable that does not bind is exit 2 naming it
    # (more cases in test_rules_catalogue.py)
    r = run(runner, tmp_path, "task: regression\n", "--rules", str(rules))
    assert r.exit_code == 2 and "loss mystery" in r.stderr and "not_a_lossctl_loss" in r.stderr
    # a rule set handed to the API unchecked is still never shown as evaluable
    advice = advise_facts(task_from_mapping({"task": "regression"}, "task"), load_rules(rules))
    doc = advice.to_json()
    assert [r["evaluable"] for r in doc["recommendations"]] == [False, False]
    assert sum(w["rule"] == "catalogue" for w in doc["warnings"]) == 2


class _FakeTTY:
    def __init__(self):
        import io

        self.buf = io.StringIO()

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass

    def isatty(self):
        return True


@pytest.mark.parametrize("no_color,coloured", [("1", False), ("", True)])
def test_colour_only_on_tty_and_no_color(monkeypatch, no_color, coloured):
    from lossctl.advisor.output import print_table

    if no_color:
        monkeypatch.setenv("NO_COLOR", no_color)
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    tty = _FakeTTY()
    print_table(advise({"task": "regression", "outliers": "many"}), file=tty)
    assert ("\x1b[" in tty.buf.getvalue()) is coloured


def test_hostile_rules_file(runner, tmp_path):
    marker = tmp_path / "marker"
    rules = tmp_path / "evil.yaml"
    rules.write_text(f"version: 1\nlosses: !!python/object/apply:os.system ['touch {marker}']\n")
    r = run(runner, tmp_path, "task: regression\n", "--rules", str(rules))
    assert r.exit_code == 2 and not marker.exists() and "evil.yaml:2" in r.stderr


def test_why_not_non_evaluable_id(runner, tmp_path):
    doc = top_json(runner, tmp_path, "task: embedding\nsupervision: class_labels\n", "--why-not", "arcface")
    m = doc["why_not"]["matches"][0]
    assert m["id"] == "arcface" and m["evaluable"] is False and m["rank"] == 2
    assert m["summary"].startswith("ranked 2 of")
