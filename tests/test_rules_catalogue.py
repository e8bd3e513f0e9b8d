"""The rules catalogue against the loss registry: every entry written as evaluable binds as a
`lossctl evaluate --loss` expression (in configs/rules.yaml and in the copy shipped in the wheel),
a --rules file whose entry does not is exit 2 naming it, and --why-not knows every alias that
`evaluate` knows."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import lossctl.losses  # noqa: F401  (registers the built-ins)
from lossctl.advisor import match_loss
from lossctl.advisor.catalogue import binding_problems, entry_losses
from lossctl.advisor.rules import load_rules
from lossctl.cli import app
from lossctl.registry import all_specs

ROOT = Path(__file__).resolve().parent.parent
RULES_FILES = [ROOT / "configs" / "rules.yaml", ROOT / "lossctl" / "data" / "rules.yaml"]


@pytest.mark.parametrize("path", RULES_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_evaluable_entry_and_override_binds(path):
    problems = binding_problems(load_rules(path))
    assert not problems, "\n".join(problems)


def test_the_packaged_rules_are_the_configs_rules():
    # lossctl/data/rules.yaml is what an installed wheel reads; in the source tree it is a link
    # to configs/rules.yaml, and a copy must not drift from it
    assert RULES_FILES[1].read_bytes() == RULES_FILES[0].read_bytes()


def _rules_file(tmp_path, losses: str, recommend: str) -> str:
    p = tmp_path / "rules.yaml"
    p.write_text(textwrap.dedent(f"""\
        losses:
        {textwrap.indent(textwrap.dedent(losses), "  ")}
        rules:
          - id: R1
            when: {{}}
            recommend:
        {textwrap.indent(textwrap.dedent(recommend), "      ")}
        """))
    return str(p)


@pytest.mark.parametrize("losses,recommend,needles", [
    ("m: {call: multi_marginx}", "- {loss: m, score: 1, reason: r}",
     ["loss m", "'multi_marginx'", "did you mean 'multi_margin'"]),
    ("c: {expr: 'cross_entropy + dice(from_logit=true)'}", "- {loss: c, score: 1, reason: r}",
     ["loss c", "'from_logit'"]),
    ("h: {call: huber, params: {delta: 1.0}}", "- {loss: h, score: 1, reason: r, params: {delta: -1}}",
     ["rule R1: recommend[0] (loss h)", "delta", "> 0"]),
])
def test_a_rules_file_whose_evaluable_entry_does_not_bind_is_exit_2_naming_it(runner, tmp_path, losses,
                                                                                recommend, needles):
    task = tmp_path / "task.yaml"
    task.write_text("task: regression\n")
    r = runner.invoke(app, ["recommend", str(task), "--rules", _rules_file(tmp_path, losses, recommend)])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and "rules.yaml" in r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)


def test_values_from_task_facts_are_checked_by_name_only(tmp_path):
    ok = _rules_file(tmp_path, "b: {call: bce_with_logits, params: {pos_weight: {fact: pos_weight}}}",
                     "- {loss: b, score: 1, reason: r}")
    assert binding_problems(load_rules(ok)) == []
    bad = _rules_file(tmp_path, "b: {call: bce_with_logits, params: {pos_weigth: {fact: pos_weight}}}",
                      "- {loss: b, score: 1, reason: r}")
    (problem,) = binding_problems(load_rules(bad))
    assert "loss b" in problem and "'pos_weigth'" in problem


def test_why_not_knows_every_alias_evaluate_knows(runner):
    rs = load_rules()
    computed = set().union(*(entry_losses(e) for e in rs.losses.values()))
    for spec in all_specs():
        if spec.name not in computed:
            continue
        expected = match_loss(rs, spec.name)
        for alias in spec.aliases:
            assert match_loss(rs, alias) == expected, (alias, spec.name)
    r = runner.invoke(app, ["recommend", str(ROOT / "configs" / "tasks" / "regression_quantiles.yaml"),
                            "--why-not", "pinball"])  # was exit 2: the advisor kept its own alias table
    assert r.exit_code == 0 and "quantile" in r.stdout, r.stderr
