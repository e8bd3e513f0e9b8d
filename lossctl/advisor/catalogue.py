"""The rules catalogue against the loss registry: which lossctl losses an entry computes, and
whether every entry that claims to be evaluable really binds as a ``lossctl evaluate --loss``
expression.

A catalogue entry is evaluable when it is written with ``call:`` or ``expr:`` (rules.py decides
that from the form alone). An entry that says so but names a loss or parameter lossctl does not
have, or a value out of range, would otherwise only be shown with ``evaluable: false`` at
recommendation time, so a renamed loss went unnoticed. :func:`binding_problems` finds them all,
naming the entry or rule; the tests run it on the built-in rules and ``lossctl recommend --rules``
refuses a file that has any (exit 2).
"""

from __future__ import annotations

import re
from typing import Any

from lossctl.advisor.rules import CatalogueEntry, FactRef, Missing, RuleSet, RulesError, render
from lossctl.errors import ExprError

# Stands in for a value a task fact fills in at recommendation time (pos_weight, class weights,
# quantiles): its parameter must exist, its value is checked when the fact is known.
_FROM_FACT = "from_task_fact__"
_CALLED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?=\s*(?:\(|\+|-|$))")


def registry_name(name: str) -> str | None:
    """The canonical lossctl loss for ``name`` or any of its aliases, or None if it is not one."""
    import lossctl.losses  # noqa: F401  (registers the built-ins: lookups by name import them)
    from lossctl.registry import canonical_name

    try:
        return canonical_name(name.strip())
    except ExprError:
        return None


def entry_losses(entry: CatalogueEntry) -> set[str]:
    """Canonical names of the lossctl losses an evaluable entry computes (empty if descriptive)."""
    if not entry.evaluable:
        return set()
    names = set(_CALLED.findall(entry.template)) | ({entry.call} if entry.call else set())
    return {canon for canon in map(registry_name, names) if canon is not None}


def _with_fact_markers(entry: CatalogueEntry, params: dict[str, Any]) -> str:
    """The entry's expression with every fact-filled value shown as the marker."""
    filled = {}
    for key, value in params.items():
        if isinstance(value, FactRef):
            one = Missing(_FROM_FACT)
            filled[key] = [one] if entry.each is not None and entry.each[1] == key else one
        else:
            filled[key] = value
    text, _ = render(entry, filled)
    return text


def bind_problem(text: str) -> str:
    """'' if ``text`` binds (a fact marker counts as the parameter's default), else why not."""
    import lossctl.losses  # noqa: F401  (registers the built-ins: lookups by name import them)
    from lossctl.expr import Call, Expr, Term, bind, parse
    from lossctl.registry import get_spec

    try:
        terms = []
        for term in parse(text).terms:
            defaults = {p.name: p.default for p in get_spec(term.call.name).params}
            args = tuple((k, defaults[k] if v == _FROM_FACT and k in defaults else v)
                         for k, v in term.call.args)
            terms.append(Term(term.weight, Call(term.call.name, args)))
        bind(Expr(tuple(terms)), text)
    except ExprError as exc:
        return " ".join(str(exc).split())
    return ""


def binding_problems(rs: RuleSet) -> list[str]:
    """One message per evaluable catalogue entry, or rule's parameter override, that does not bind."""
    out = []

    def check(where: str, entry: CatalogueEntry, params: dict[str, Any]) -> None:
        text = _with_fact_markers(entry, params)
        problem = bind_problem(text)
        if problem:
            out.append(f"{where}: {text!r} is written as evaluable (call/expr) but is not a lossctl "
                       f"expression: {problem}; fix it, or write the entry with describe: for a loss "
                       f"lossctl does not compute")

    for lid, base in rs.losses.items():
        for entry in [base] + [v for _, v in base.variants]:
            if entry.evaluable:
                where = f"{rs.path}:{base.line}: loss {lid}" if base.line else f"{rs.path}: loss {lid}"
                if entry.variant:
                    where += f" (variant when {entry.variant})"
                check(where, entry, entry.params)
    for rule in rs.rules:
        for j, c in enumerate(rule.recommend):
            for entry in [rs.losses[c.loss]] + [v for _, v in rs.losses[c.loss].variants]:
                if entry.evaluable and c.params:
                    known = {k: v for k, v in c.params.items() if k in entry.params}
                    where = f"{rs.path}:{rule.line}" if rule.line else rs.path
                    check(f"{where}: rule {rule.id}: recommend[{j}] (loss {c.loss})", entry,
                          {**entry.params, **known})
    return out


def check_bindings(rs: RuleSet) -> None:
    """RulesError (exit 2) naming the first entry that claims to be evaluable but does not bind."""
    problems = binding_problems(rs)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RulesError(problems[0] + more)
