"""SPEC §7: the new task keys, constraints as constraints, and `support`/`assumptions` (issue 13)."""

from __future__ import annotations

import json

import pytest

from lossctl.advisor import advise_facts
from lossctl.advisor.rules import RulesError, evaluate, load_rules, parse_rules
from lossctl.advisor.schema import TaskError, normalise, task_from_mapping
from lossctl.cli import app

RS = load_rules()


def top(facts: dict) -> str:
    return evaluate(RS, normalise(facts).facts).ranked[0].entry.id


def doc(facts: dict) -> dict:
    return advise_facts(task_from_mapping(facts), RS).to_json()


# ------------------------------------------------------------------ new keys are accepted
@pytest.mark.parametrize("facts", [
    {"task": "survival", "censoring": "right"},
    {"task": "generative", "model": "diffusion"},
    {"task": "sequence", "sequence": "generation"},
    {"task": "classification", "labels": "binary", "fn_cost": 10, "fp_cost": 1},
    {"task": "regression", "under_cost": 4, "over_cost": 1},
    {"task": "classification", "labels": "binary", "negative_sampling": 0.1},
    {"task": "segmentation", "thin_structures": True},
    {"task": "regression", "range": [0, 100]},
    {"task": "regression", "target": "count", "overdispersed": True, "exposure": True},
    {"task": "embedding", "supervision": "positive_pairs"},
])
def test_new_keys_are_accepted_and_covered(facts):
    d = doc(facts)
    assert d["recommendations"]
    assert d["support"] == "full", d["assumptions"]


@pytest.mark.parametrize("bad", [[1], [5, 1], [1, 2, 3], "0-1"])
def test_range_must_be_low_high(bad):
    with pytest.raises(TaskError):
        normalise({"task": "regression", "range": bad})


def test_negative_sampling_is_a_fraction():
    with pytest.raises(TaskError):
        normalise({"task": "classification", "negative_sampling": 0})


def test_derived_costs():
    f = normalise({"task": "regression", "under_cost": 1, "over_cost": 3}).facts
    assert f["cost_quantile"] == 0.25
    f = normalise({"task": "segmentation", "fn_cost": 5, "fp_cost": 1}).facts
    assert f["cost_pos_weight"] == 5 and f["tversky_beta"] > f["tversky_alpha"]


# ------------------------------------------------------------------ constraints
def test_calibration_demands_a_proper_scoring_rule_first():
    for facts in ({"task": "binary_classification", "minority_fraction": 0.005, "calibrated": True},
                  {"task": "binary_classification", "imbalance": "moderate", "metric": "log_loss"}):
        assert top(facts) == "bce_with_logits"
    assert top({"task": "classification", "classes": 4, "imbalance": "moderate",
                "calibrated": True}) == "cross_entropy"
    d = doc({"task": "binary_classification", "minority_fraction": 0.005, "calibrated": True})
    focal = next(r for r in d["recommendations"] if r["id"] == "focal")
    assert focal["not_first"] and not any("calibration" in r for r in focal["reasons"])


def test_domain_vetoes():
    out = evaluate(RS, normalise({"task": "regression", "target": "positive", "zeros": "many"}).facts)
    assert out.all["gamma_deviance"].excluded
    assert "gamma_deviance" not in [s.entry.id for s in out.ranked]
    out = evaluate(RS, normalise({"task": "regression", "range": [-5, 5]}).facts)
    assert out.all["msle"].excluded


@pytest.mark.parametrize("facts,loss", [
    ({"task": "regression", "target": "positive", "metric": "mape"}, "mape"),
    ({"task": "regression", "target": "positive", "metric": "rmsle"}, "msle"),
    ({"task": "regression", "target": "positive", "predict": "median"}, "mae"),
    ({"task": "regression", "under_cost": 4, "over_cost": 1}, "quantile(q=0.8)"),
    ({"task": "sequence", "sequence": "generation"}, "cross_entropy(label_smoothing=0.1)"),
])
def test_metric_or_functional_names_the_first_loss(facts, loss):
    assert doc(facts)["recommendations"][0]["loss"] == loss


def test_generation_never_gets_ctc():
    d = doc({"task": "sequence", "sequence": "generation", "alignment": "none"})
    assert "ctc" not in [r["id"] for r in d["recommendations"]]


def test_gbdt_gets_its_own_objective():
    d = doc({"task": "binary_classification", "minority_fraction": 0.05, "framework": "xgboost"})
    assert "xgboost" in d["recommendations"][0]["code"]
    d = doc({"task": "regression", "target": "positive", "metric": "rmsle", "framework": "lightgbm"})
    assert d["recommendations"][0]["loss"] == "msle" and d["recommendations"][0]["evaluable"]


def test_probability_head_code_everywhere():
    d = doc({"task": "segmentation", "labels": "binary", "head": "probabilities", "framework": "any"})
    r = d["recommendations"][0]
    assert r["loss"] == "bce + dice(from_logits=false)"
    assert all("from_logits=True" not in c and "WithLogits" not in c for c in r["code"].values())


# ------------------------------------------------------------------ support and assumptions
def test_support_partial_when_a_fact_is_not_used():
    d = doc({"task": "ranking", "tails": "heavy"})
    assert d["support"] == "partial"
    assert any(a.startswith("tails: heavy") for a in d["assumptions"])


def test_support_partial_when_the_rules_assume():
    d = doc({"task": "generative"})
    assert d["support"] == "partial" and any("assumed a VAE" in a for a in d["assumptions"])
    d = doc({"task": "survival"})
    assert d["recommendations"][0]["id"] == "cox_ph"
    assert any("right-censored" in a for a in d["assumptions"])


def test_support_none_without_rules(tmp_path):
    text = (json.dumps({"version": 1, "losses": {"mse": {"call": "mse"}},
                        "rules": [{"id": "R1", "when": {"task": "regression"},
                                   "recommend": [{"loss": "mse", "score": 1, "reason": "r"}]}]}))
    rs = parse_rules(json.loads(text), "inline")
    d = advise_facts(task_from_mapping({"task": "survival"}), rs).to_json()
    assert d["support"] == "none" and d["recommendations"] == [] and d["assumptions"]


def test_gbdt_framework_that_cannot_do_the_task_says_so():
    d = doc({"task": "detection", "framework": "lightgbm"})
    assert d["support"] == "partial"
    assert any("lightgbm" in a for a in d["assumptions"])


def test_table_prints_a_note(tmp_path):
    from typer.testing import CliRunner

    p = tmp_path / "t.yaml"
    p.write_text("task: generative\n")
    r = CliRunner().invoke(app, ["recommend", str(p)])
    assert r.exit_code == 0
    assert "support: partial" in r.stdout and "assumed a VAE" in r.stdout


# ------------------------------------------------------------------ rules-file validation
@pytest.mark.parametrize("rule,msg", [
    ({"not_first": [{"loss": "nope", "reason": "x"}]}, "unknown loss"),
    ({"support": "maybe", "assume": ["x"]}, "support must be"),
    ({"warn": [{"level": "error", "message": "m", "forbids": ["nope"]}]}, "unknown loss"),
    ({"recommend": [{"loss": "mse", "score": 1, "reason": "r", "first": "yes"}]}, "first must be"),
])
def test_malformed_constraint_keys_are_rejected(rule, msg):
    data = {"version": 1, "losses": {"mse": {"call": "mse"}},
            "rules": [{"id": "R1", "when": {"task": "regression"}, **rule}]}
    with pytest.raises(RulesError, match=msg):
        parse_rules(data, "inline")


def test_variant_needs_when():
    data = {"version": 1, "losses": {"mse": {"call": "mse", "variants": [{"code": {}}]}},
            "rules": [{"id": "R1", "when": {}, "recommend": [{"loss": "mse", "score": 1, "reason": "r"}]}]}
    with pytest.raises(RulesError, match="when"):
        parse_rules(data, "inline")
