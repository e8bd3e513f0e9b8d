"""Run the golden cases that rules carry in their ``tests:`` lists (like ESLint's RuleTester)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lossctl.advisor.rules import RuleSet, Rule, evaluate
from lossctl.advisor.schema import FACTS, derive, task_from_mapping

IN_TOP = 5


@dataclass
class GoldenFailure:
    rule: str
    case: int
    message: str

    def __str__(self) -> str:
        return f"rule {self.rule} tests[{self.case}]: {self.message}"


def _ids(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v or [])


def case_task(facts: dict[str, Any], source: str = "golden case"):
    """A Task from a golden case's facts; derived-only facts (normally inferred) are set as given."""
    given = dict(facts)
    extra = {k: given.pop(k) for k in list(given) if k in FACTS and FACTS[k].derived_only}
    task = task_from_mapping(given, source)
    for k, v in extra.items():
        task.facts[k] = v
        task.source[k] = "inferred: golden case"
    return task


def run_case(rs: RuleSet, rule: Rule, i: int, case: dict[str, Any]) -> list[GoldenFailure]:
    fails = []
    task = derive(case_task(case["facts"], f"rule {rule.id} tests[{i}]"))
    out = evaluate(rs, task.facts)
    ranked = [s.entry.id for s in out.ranked]

    def fail(msg: str) -> None:
        fails.append(GoldenFailure(rule.id, i, f"{msg} (facts {dict(case['facts'])}, "
                                              f"ranked {ranked[:IN_TOP]}, fired {out.fired})"))

    if rule.id not in out.fired:
        fail("the rule does not fire on its own golden case")
    if not ranked:
        fail("no recommendation at all")
    for lid in _ids(case.get("expect_top")):
        if not ranked or ranked[0] != lid:
            fail(f"expected {lid} first")
    for lid in _ids(case.get("expect_in_top")):
        if lid not in ranked[:IN_TOP]:
            fail(f"expected {lid} in the top {IN_TOP}")
    got_w = {w["rule"] for w in out.warnings}
    for wid in _ids(case.get("expect_warnings")):
        if wid not in got_w:
            fail(f"expected warning {wid}, got {sorted(got_w)}")
    for lid in _ids(case.get("expect_excluded")):
        if not out.all[lid].excluded:
            fail(f"expected {lid} to be excluded")
    return fails
