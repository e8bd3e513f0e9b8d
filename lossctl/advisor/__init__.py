"""The loss advisor behind ``lossctl recommend`` (SPEC §7).

``advise(task_path)`` reads a task file, fills in derived (and, with ``targets``/``preds``,
inferred) facts, runs the rules in ``configs/rules.yaml`` and returns an :class:`Advice` whose
``to_json()`` is the ``--format json`` document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossctl.advisor.rules import (Outcome, RuleSet, Scored, evaluate, load_rules, render,
                                   render_code, resolve_params, _ref)
from lossctl.advisor.schema import Task, derive, load_task, public_facts, task_from_mapping

__all__ = ["Advice", "advise", "advise_facts"]


@dataclass
class Advice:
    task: Task
    rules: RuleSet
    outcome: Outcome
    top: int | None = None
    extra_warnings: list[dict[str, Any]] = field(default_factory=list)

    # -- recommendations -------------------------------------------------------------------
    def recommendation(self, s: Scored) -> dict[str, Any]:
        facts = self.task.facts
        params = resolve_params(s.params, facts)
        loss, evaluable = render(s.entry, params)
        if evaluable:
            problem = expression_problem(loss)
            if problem:
                evaluable = False
                self._note_unevaluable(s.entry.id, loss, problem)
        reasons = []
        refs: list[str] = []
        for rid, c in sorted(s.contributions, key=lambda rc: (-rc[1].score, rc[0])):
            if c.score > 0:
                reasons.append(c.reason)
                refs.extend(c.refs)
        refs.extend(s.entry.refs)
        seen: list[str] = []
        for r in refs:
            if r not in seen:
                seen.append(r)
        out_params = {k: (v.hint if hasattr(v, "hint") else v) for k, v in params.items()}
        rec = {
            "loss": loss,
            "evaluable": evaluable,
            "score": _num(s.score),
            "id": s.entry.id,
            "name": s.entry.name,
            "params": out_params,
            "reasons": reasons,
            "references": [_ref(self.rules, r) for r in seen],
            "code": render_code(s.entry, params, facts.get("framework")),
            "rules": sorted({rid for rid, c in s.contributions}),
        }
        if s.blocked:
            rec["not_first"] = [f"{rid}: {why}" for rid, why in s.blocked]
        return rec

    def _note_unevaluable(self, lid: str, loss: str, problem: str) -> None:
        w = {"level": "info", "rule": "catalogue", "references": [],
             "message": f"{lid}: {loss!r} is not computable by this lossctl ({problem}); "
                        "shown with evaluable: false"}
        if w not in self.extra_warnings:
            self.extra_warnings.append(w)

    @property
    def ranked(self) -> list[Scored]:
        r = self.outcome.ranked
        return r if self.top is None else r[: self.top]

    def recommendations(self) -> list[dict[str, Any]]:
        return [self.recommendation(s) for s in self.ranked]

    # -- honesty: what the rules cover ------------------------------------------------------
    def support(self) -> tuple[str, list[str]]:
        """``full | partial | none`` and the assumptions behind the answer (SPEC §7)."""
        from lossctl.advisor.rules import SUPPORT, uncovered_facts

        facts = self.task.facts
        level = self.outcome.support
        notes = list(self.outcome.assumptions)
        written = [k for k, v in self.task.source.items() if not v.startswith("derived")]
        for k in uncovered_facts(self.rules, facts, written, self.outcome.fired):
            v = facts[k]
            v = ("true" if v else "false") if isinstance(v, bool) else v
            notes.append(f"{k}: {v} is accepted but no rule uses it for task {facts['task']}; "
                         "the recommendations ignore it")
            level = max(level, "partial", key=SUPPORT.index)
        ranked = self.ranked
        if not ranked:
            level = "none"
            notes.append(f"no rule recommends a loss for these facts (task {facts['task']})")
        else:
            top = ranked[0]
            fw = facts.get("framework")
            if fw not in (None, "any") and fw not in top.entry.code:
                notes.append(f"no {fw} code for the first recommendation ({top.entry.name})")
            if top.blocked:
                level = max(level, "partial", key=SUPPORT.index)
                notes.append("every candidate is ruled out as a first answer by a constraint; "
                             f"#1 is shown anyway: {'; '.join(w for _, w in top.blocked)}")
        return level, notes

    @property
    def warnings(self) -> list[dict[str, Any]]:
        order = {"error": 0, "warn": 1, "info": 2}
        ws = list(self.outcome.warnings) + list(self.extra_warnings)
        return sorted(ws, key=lambda w: (order[w["level"]], w.get("rule", "")))

    # -- why-not ---------------------------------------------------------------------------
    def why_not(self, name: str) -> dict[str, Any]:
        ids = match_loss(self.rules, name)
        ranks = {s.entry.id: i + 1 for i, s in enumerate(self.outcome.ranked)}
        entries = []
        for lid in ids:
            s = self.outcome.all[lid]
            params = resolve_params(s.params, self.task.facts)
            loss, evaluable = render(s.entry, params)
            item: dict[str, Any] = {
                "id": lid, "loss": loss, "evaluable": evaluable, "score": _num(s.score),
                "rank": ranks.get(lid),
                "contributions": [{"rule": rid, "score": _num(c.score), "reason": c.reason}
                                  for rid, c in s.contributions],
                "excluded_by": [{"rule": rid, "reason": why} for rid, why in s.excluded],
                "not_first": [{"rule": rid, "reason": why} for rid, why in s.blocked],
                "applicable": s.applicable,
            }
            item["summary"] = _why_summary(item, self.top, len(self.outcome.ranked))
            entries.append(item)
        return {"query": name, "matches": entries}

    def to_json(self, explain: bool = False, why_not: str | None = None) -> dict[str, Any]:
        recs = self.recommendations()  # first: it may add catalogue warnings
        support, assumptions = self.support()
        doc: dict[str, Any] = {
            "task": public_facts(self.task),
            "support": support,
            "assumptions": assumptions,
            "recommendations": recs,
            "warnings": [{k: w[k] for k in ("level", "message", "rule", "references") if k in w}
                         for w in self.warnings],
            "rules_fired": list(self.outcome.fired),
            "inferred": self.task.inferred,
            "derived": self.task.derived,
        }
        if explain:
            doc["explain"] = {
                "facts": [{"fact": k, "value": v, "source": self.task.source.get(k, "task file")}
                          for k, v in public_facts(self.task).items()],
                "rules": [{"id": rid, "title": self.rules.rule(rid).title,
                           "when": self.rules.rule(rid).when.describe()}
                          for rid in self.outcome.fired],
                "rules_file": self.rules.path,
                "scores": [{"id": s.entry.id, "score": _num(s.score),
                            "contributions": [{"rule": rid, "score": _num(c.score)}
                                              for rid, c in sorted(s.contributions,
                                                                   key=lambda rc: rc[0])]}
                           for s in self.ranked],
            }
        if why_not is not None:
            doc["why_not"] = self.why_not(why_not)
        return doc


_EXPR_CACHE: dict[str, str] = {}


def expression_problem(text: str) -> str:
    """'' if ``text`` parses and binds as a ``lossctl evaluate --loss`` expression, else why not."""
    if text in _EXPR_CACHE:
        return _EXPR_CACHE[text]
    try:
        from lossctl.expr import bind
    except ImportError:  # pragma: no cover - the parser ships with lossctl
        return ""
    try:
        bind(text)
        problem = ""
    except Exception as exc:  # ExprError: unknown loss or parameter, bad value
        problem = " ".join(str(exc).split())
    _EXPR_CACHE[text] = problem
    return problem


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(float(x), 6)


def _why_summary(item: dict[str, Any], top: int | None, n_ranked: int) -> str:
    if not item["applicable"]:
        return "not applicable to this task (its catalogue entry's applies_to does not match)"
    if item["excluded_by"]:
        ex = "; ".join(f"{e['rule']}: {e['reason']}" for e in item["excluded_by"])
        return f"excluded by {ex}"
    if item["rank"] is None:
        if not item["contributions"]:
            return "no rule recommends it for these facts (score 0)"
        lowered = [c for c in item["contributions"] if c["score"] < 0]
        if lowered:
            s = "; ".join(f"{c['rule']} ({c['score']:+g}): {c['reason']}" for c in lowered)
            return f"total score {item['score']:g} is not positive; lowered by {s}"
        return f"total score {item['score']:g} is not positive"
    shown = "" if top is None or item["rank"] <= top else f" (beyond --top {top})"
    lowered = [c for c in item["contributions"] if c["score"] < 0]
    tail = ""
    if lowered:
        tail = "; lowered by " + "; ".join(f"{c['rule']} ({c['score']:+g}): {c['reason']}"
                                         for c in lowered)
    if item.get("not_first") and item["rank"] != 1:
        tail += "; cannot rank first: " + "; ".join(f"{b['rule']}: {b['reason']}"
                                                   for b in item["not_first"])
    return f"ranked {item['rank']} of {n_ranked}{shown} with score {item['score']:g}{tail}"


def match_loss(rs: RuleSet, name: str) -> list[str]:
    """Catalogue ids that ``name`` refers to: an id, or a lossctl loss (its name or any alias, as
    the registry resolves them for ``evaluate``) that an evaluable entry computes."""
    from lossctl.advisor.catalogue import entry_losses, registry_name
    from lossctl.errors import UsageError
    from lossctl.words import did_you_mean

    key = name.strip().lower()
    if key in rs.losses:
        return [key]
    loss = registry_name(key)
    if loss in rs.losses:
        return [loss]
    hits = sorted(lid for lid, e in rs.losses.items() if loss is not None and loss in entry_losses(e))
    if hits:
        return hits
    raise UsageError(f"--why-not {name!r}: no such loss in the rules catalogue"
                     f"{did_you_mean(key, list(rs.losses))} (catalogue ids: "
                     f"{', '.join(sorted(rs.losses))})")


def advise_facts(task: Task, rules: RuleSet | None = None, top: int | None = None) -> Advice:
    rs = rules if rules is not None else load_rules()
    derive(task)
    outcome = evaluate(rs, task.facts)
    extra = [{"level": level, "message": msg, "rule": "data", "references": []}
             for level, msg in task.notes]
    return Advice(task=task, rules=rs, outcome=outcome, top=top, extra_warnings=extra)


def advise(task_path: str | Path | dict, rules_path: str | Path | None = None,
           targets: str | None = None, preds: str | None = None,
           top: int | None = None) -> Advice:
    """Read, derive, infer and evaluate: everything ``lossctl recommend`` does but rendering."""
    rs = load_rules(rules_path)
    if rules_path is not None:  # the built-in rules are checked by the tests (test_rules_catalogue.py)
        from lossctl.advisor.catalogue import check_bindings

        check_bindings(rs)
    if isinstance(task_path, dict):
        task = task_from_mapping(task_path, "task")
    else:
        task = load_task(task_path)
    if targets is not None or preds is not None:
        from lossctl.advisor.infer import apply_inference

        apply_inference(task, targets=targets, preds=preds)
    return advise_facts(task, rs, top=top)
