"""The rules engine: golden cases of every rule, coverage of ADVISOR.md, determinism, validation."""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path

import pytest
import yaml

from lossctl.advisor.goldens import run_case
from lossctl.advisor.rules import compile_condition, evaluate, load_rules, parse_rules, RulesError
from lossctl.advisor.schema import TASKS, TASK_SHORTHANDS, normalise

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "configs" / "rules.yaml"
ADVISOR_IDS = (
    [f"R{i:02d}" for i in range(1, 15)] + [f"B{i:02d}" for i in range(1, 9)]
    + [f"M{i:02d}" for i in range(1, 8)] + ["L01", "L02", "O01"]
    + [f"S{i:02d}" for i in range(1, 5)] + [f"D{i:02d}" for i in range(1, 5)]
    + [f"E{i:02d}" for i in range(1, 5)] + ["G01", "G02", "K01", "K02", "Q01", "Q02", "H01"]
    + ["X01", "X02", "X03"] + [f"W{i:02d}" for i in range(1, 21)]
)

RS = load_rules(RULES)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_RAW = yaml.load(RULES.read_text(), Loader=_LOADER)


def _raw():
    return copy.deepcopy(_RAW)


def _dump(data):
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False)
CASES = [(r.id, i, c) for r in RS.rules for i, c in enumerate(r.tests)]


@pytest.mark.parametrize("rule_id,i,case", CASES, ids=[f"{r}-{i}" for r, i, _ in CASES])
def test_golden_case(rule_id, i, case):
    fails = run_case(RS, RS.rule(rule_id), i, case)
    assert not fails, "\n".join(map(str, fails))


def test_every_advisor_row_is_a_rule_with_golden_cases():
    ids = {r.id for r in RS.rules}
    missing = [rid for rid in ADVISOR_IDS if rid not in ids]
    assert not missing, f"ADVISOR.md rows without a rule: {missing}"
    untested = [r.id for r in RS.rules if not r.tests]
    assert not untested, f"rules without golden cases: {untested}"


@pytest.mark.parametrize("task", list(TASKS) + list(TASK_SHORTHANDS))
def test_every_task_value_yields_a_recommendation(task):
    out = evaluate(RS, normalise({"task": task}).facts)
    assert out.ranked, task
    assert out.ranked[0].score > 0


def test_every_catalogue_loss_is_reachable():
    reached = set()
    for rule in RS.rules:
        for c in rule.recommend:
            if c.score > 0:
                reached.add(c.loss)
    assert set(RS.losses) - reached == set()


def _shuffled_rules_file(tmp_path, seed):
    data = _raw()
    rnd = random.Random(seed)
    rnd.shuffle(data["rules"])
    for r in data["rules"]:
        if r.get("recommend"):
            rnd.shuffle(r["recommend"])
    items = list(data["losses"].items())
    rnd.shuffle(items)
    data["losses"] = dict(items)
    p = tmp_path / f"rules_{seed}.yaml"
    p.write_text(_dump(data))
    return p


def test_results_stable_under_rule_reordering(tmp_path):
    from lossctl.advisor import advise_facts
    from lossctl.advisor.goldens import case_task

    tasks = [c["facts"] for _, _, c in CASES]
    base = [advise_facts(case_task(t)).to_json(explain=True) for t in tasks]
    for seed in (1, 2):
        p = _shuffled_rules_file(tmp_path, seed)
        rs = load_rules(p)
        other = [advise_facts(case_task(t), rs).to_json(explain=True) for t in tasks]
        for a, b in zip(base, other):
            b["explain"]["rules_file"] = a["explain"]["rules_file"]
            assert a == b


# --------------------------------------------------------------------- the condition language

@pytest.mark.parametrize("cond,facts,expected", [
    ({"task": "regression"}, {"task": "regression"}, True),
    ({"task": "regression"}, {"task": "classification"}, False),
    ({"outliers": ["some", "many"]}, {"outliers": "many"}, True),
    ({"outliers": ["some", "many"]}, {}, False),
    ({"classes": {"gte": 10000}}, {"classes": 10000}, True),
    ({"classes": {"gt": 10000}}, {"classes": 10000}, False),
    ({"foreground": {"lt": 0.05}}, {"foreground": 0.01}, True),
    ({"foreground": {"lte": 0.05}}, {}, False),
    ({"head": {"exists": False}}, {}, True),
    ({"head": {"exists": True}}, {}, False),
    ({"head": {"ne": "logits"}}, {}, False),
    ({"head": {"ne": "logits"}}, {"head": "probabilities"}, True),
    ({"labels": {"not_in": ["binary"]}}, {"labels": "multiclass"}, True),
    ({"not": {"labels": "binary"}}, {}, True),
    ({"any": [{"task": "ranking"}, {"margin": True}]}, {"task": "regression", "margin": True}, True),
    ({"all": [{"task": "ranking"}, {"margin": True}]}, {"task": "ranking"}, False),
    ({"outliers": True}, {"outliers": "many"}, True),  # values are canonicalised like task files
    ({}, {}, True),
])
def test_condition_semantics(cond, facts, expected):
    assert compile_condition(cond, "t").matches(facts) is expected


# --------------------------------------------------------------------- malformed rules files

def _mutate(fn):
    data = _raw()
    fn(data)
    return data


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d["rules"][0]["when"].update({"outlier": "some"}), "unknown fact 'outlier'"),
    (lambda d: d["rules"][0]["when"].update({"task": "regresion"}), "did you mean 'regression'"),
    (lambda d: d["rules"][0]["recommend"].append({"loss": "hubber", "score": 1, "reason": "x"}),
     "did you mean 'huber'"),
    (lambda d: d["rules"][0]["recommend"].append({"loss": "huber", "score": "high", "reason": "x"}),
     "score must be a number"),
    (lambda d: d["rules"][0]["recommend"].append({"loss": "huber", "score": 1}), "needs a reason"),
    (lambda d: d["rules"][0]["recommend"].append(
        {"loss": "huber", "score": 1, "reason": "x", "params": {"dleta": 2}}), "no param 'dleta'"),
    (lambda d: d["rules"][1].update({"id": d["rules"][0]["id"]}), "duplicate rule id"),
    (lambda d: d["rules"][0]["when"].update({"classes": {"bigger": 3}}), "unknown operator 'bigger'"),
    (lambda d: d["rules"][0]["when"].update({"head": {"gt": 3}}), "needs a numeric fact"),
    (lambda d: d["rules"][0].update({"warn": [{"level": "fatal", "message": "m"}]}), "unknown level"),
    (lambda d: d["rules"][0].update({"whenn": {}}), "unknown rule key 'whenn'"),
    (lambda d: d["rules"][0].pop("when"), "missing 'when'"),
    (lambda d: d["rules"][0]["recommend"][0].update({"refs": ["Nobody99"]}), "unknown reference"),
    (lambda d: d["losses"]["huber"].update({"call": "huber", "describe": "x"}), "exactly one of"),
    (lambda d: d["losses"]["huber"]["code"].update({"pytorch": "HuberLoss({dlta})"}), "placeholder"),
    (lambda d: d.update({"rulez": []}), "unknown top-level key"),
])
def test_malformed_rules_name_the_rule(tmp_path, runner, mutate, needle):
    data = _mutate(mutate)
    with pytest.raises(RulesError) as exc:
        parse_rules(data, "rules.yaml")
    assert needle in str(exc.value)
    # and through the CLI: exit 2, one error line naming the rule or file
    p = tmp_path / "bad_rules.yaml"
    p.write_text(_dump(data))
    from lossctl.cli import app

    task = tmp_path / "t.yaml"
    task.write_text("task: regression\n")
    result = runner.invoke(app, ["recommend", str(task), "--rules", str(p)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "bad_rules.yaml" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malformed_rule_error_has_line_and_rule_id(tmp_path):
    text = RULES.read_text().replace("when: {task: regression, outliers: [some, many]}",
                                     "when: {task: regression, outliers: [some, lots]}")
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RulesError) as exc:
        load_rules(p)
    msg = str(exc.value)
    assert "rule R02" in msg and "'lots'" in msg and re.search(r"r\.yaml:\d+", msg)


def test_rules_file_not_a_mapping(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(RulesError):
        load_rules(p)


def test_golden_runner_reports_wrong_expectation():
    rule = copy.deepcopy(RS.rule("R01"))
    fails = run_case(RS, rule, 0, {"facts": {"task": "regression"}, "expect_top": "mae"})
    assert fails and "expected mae first" in str(fails[0])
