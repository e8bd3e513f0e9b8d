"""Rules as data: load and validate ``rules.yaml``, evaluate conditions, score candidate losses.

A rules file has four parts (see ``configs/rules.yaml``):

* ``references``: citation key -> one-line citation.
* ``losses``: the catalogue. Each entry is either evaluable (``call: NAME`` with ``params``, or an
  ``expr`` template such as ``"huber(delta={delta})"``) or descriptive (``describe`` template,
  ``evaluable: false``), with framework code templates, references and a tie-break ``prior``.
* ``rules``: ``id``, ``title``, ``when`` (a condition), ``recommend`` (additive score
  contributions per loss, with reason, references and parameter overrides), ``exclude`` and
  ``warn``, plus golden ``tests``.

Conditions: a mapping is an AND over its entries; ``fact: scalar`` is equality, ``fact: [a, b]``
is any-of, ``fact: {op: value}`` uses ``eq ne in not_in gt gte lt lte exists``; ``all``, ``any``
(lists) and ``not`` (a condition) combine. A fact that is absent never matches, except under
``exists: false`` and ``not``. Evaluation is a small interpreter over this tree; nothing is eval'd.

Determinism: rules are applied in rule-id order (so reordering the file changes nothing); scores
are sums; parameter overrides from later rule ids win; ties in score break on the catalogue
``prior`` then the loss id.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossctl.advisor.schema import (DERIVED_FROM, FACTS, NEUTRAL_VALUES, Fact, TaskError,
                                    check_value)
from lossctl.errors import UsageError
from lossctl.words import did_you_mean

LEVELS = ("info", "warn", "error")
OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists")
COMBINATORS = ("all", "any", "not")
FRAMEWORKS = ("pytorch", "keras", "lightgbm", "xgboost", "sklearn")
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RulesError(UsageError):
    pass


# --------------------------------------------------------------------------------------------
# Conditions


@dataclass(frozen=True)
class Cond:
    op: str  # all | any | not | test
    items: tuple["Cond", ...] = ()
    fact: str = ""
    test: str = ""  # eq ne in not_in gt gte lt lte exists
    value: Any = None

    def matches(self, facts: dict[str, Any]) -> bool:
        if self.op == "all":
            return all(c.matches(facts) for c in self.items)
        if self.op == "any":
            return any(c.matches(facts) for c in self.items)
        if self.op == "not":
            return not self.items[0].matches(facts)
        present = self.fact in facts and facts[self.fact] is not None
        if self.test == "exists":
            return present == bool(self.value)
        if not present:
            return False
        v = facts[self.fact]
        t = self.test
        if t == "eq":
            return v == self.value
        if t == "ne":
            return v != self.value
        if t == "in":
            return v in self.value
        if t == "not_in":
            return v not in self.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return {"gt": v > self.value, "gte": v >= self.value, "lt": v < self.value,
                "lte": v <= self.value}[t]

    def describe(self) -> str:
        if self.op in ("all", "any"):
            inner = (" and " if self.op == "all" else " or ").join(c.describe() for c in self.items)
            return f"({inner})" if len(self.items) > 1 else inner
        if self.op == "not":
            return f"not {self.items[0].describe()}"
        sym = {"eq": "=", "ne": "!=", "in": "in", "not_in": "not in", "gt": ">", "gte": ">=",
               "lt": "<", "lte": "<="}
        if self.test == "exists":
            return f"{self.fact} {'given' if self.value else 'not given'}"
        return f"{self.fact} {sym[self.test]} {_fmt_plain(self.value)}"


def _fmt_plain(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_plain(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def compile_condition(node: Any, where: str) -> Cond:
    """Turn a ``when`` mapping into a :class:`Cond`, validating facts, values and operators."""
    if node is None:
        return Cond("all")
    if not isinstance(node, dict):
        raise RulesError(f"{where}: a condition must be a mapping of fact: matcher, not {node!r}")
    items = []
    for key, val in node.items():
        if key in ("all", "any"):
            if not isinstance(val, list) or not val:
                raise RulesError(f"{where}: '{key}' needs a non-empty list of conditions")
            items.append(Cond(key, tuple(compile_condition(v, where) for v in val)))
        elif key == "not":
            items.append(Cond("not", (compile_condition(val, where),)))
        else:
            fact = FACTS.get(key) if isinstance(key, str) else None
            if fact is None:
                raise RulesError(f"{where}: unknown fact {key!r} in condition"
                                 f"{did_you_mean(key, list(FACTS) + list(COMBINATORS))}")
            items.append(_compile_test(fact, val, where))
    return items[0] if len(items) == 1 else Cond("all", tuple(items))


def _canon(fact: Fact, value: Any, where: str) -> Any:
    try:
        return check_value(fact, value, where)
    except TaskError as exc:
        raise RulesError(f"{exc} (in a condition)") from None


def _compile_test(fact: Fact, val: Any, where: str) -> Cond:
    if isinstance(val, list):
        return Cond("test", fact=fact.name, test="in",
                    value=tuple(_canon(fact, v, where) for v in val))
    if isinstance(val, dict):
        tests = []
        for op, arg in val.items():
            if op not in OPERATORS:
                raise RulesError(f"{where}: unknown operator {op!r} for {fact.name}"
                                 f"{did_you_mean(op, OPERATORS)} (allowed: {', '.join(OPERATORS)})")
            if op == "exists":
                if not isinstance(arg, bool):
                    raise RulesError(f"{where}: exists takes true or false, not {arg!r}")
                tests.append(Cond("test", fact=fact.name, test="exists", value=arg))
            elif op in ("in", "not_in"):
                if not isinstance(arg, list):
                    raise RulesError(f"{where}: {op} takes a list, not {arg!r}")
                tests.append(Cond("test", fact=fact.name, test=op,
                                  value=tuple(_canon(fact, v, where) for v in arg)))
            elif op in ("gt", "gte", "lt", "lte"):
                if fact.kind not in ("int", "float", "fraction"):
                    raise RulesError(f"{where}: {op} needs a numeric fact; {fact.name} is "
                                     f"{fact.kind}")
                if isinstance(arg, bool) or not isinstance(arg, (int, float)):
                    raise RulesError(f"{where}: {op} takes a number, not {arg!r}")
                tests.append(Cond("test", fact=fact.name, test=op, value=arg))
            else:
                tests.append(Cond("test", fact=fact.name, test=op,
                                  value=_canon(fact, arg, where)))
        if not tests:
            raise RulesError(f"{where}: empty matcher for {fact.name}")
        return tests[0] if len(tests) == 1 else Cond("all", tuple(tests))
    return Cond("test", fact=fact.name, test="eq", value=_canon(fact, val, where))


# --------------------------------------------------------------------------------------------
# Catalogue and rules


@dataclass(frozen=True)
class FactRef:
    """A parameter value taken from a task fact (``{fact: pos_weight, missing: "n_neg/n_pos"}``)."""

    fact: str
    missing: str


@dataclass(frozen=True)
class Missing:
    hint: str


@dataclass
class CatalogueEntry:
    id: str
    name: str
    evaluable: bool
    template: str  # expression (evaluable) or description
    params: dict[str, Any]
    code: dict[str, str]
    refs: list[str]
    applies_to: Cond | None
    prior: float = 0.0
    each: tuple[str, str] | None = None  # (template param, list param): one term per item
    call: str | None = None
    line: int | None = None
    input: str | None = None  # what the loss and its code expect: logits | probabilities | log_probabilities
    variants: list[tuple["Cond", "CatalogueEntry"]] = field(default_factory=list)
    variant: str = ""  # the condition of the variant this entry is (for --explain)

    def for_facts(self, facts: dict[str, Any]) -> "CatalogueEntry":
        """The first variant whose condition holds (head, framework, labels ...), else itself."""
        for cond, entry in self.variants:
            if cond.matches(facts):
                return entry
        return self


@dataclass
class Contribution:
    loss: str
    score: float
    reason: str
    refs: list[str]
    params: dict[str, Any]
    first: bool = False  # the loss optimises the task's metric/functional directly: rank it first


@dataclass
class Warning_:
    level: str
    message: str
    refs: list[str]
    forbids: list[str] = field(default_factory=list)  # losses this warning rules out at rank 1
    about: list[str] = field(default_factory=list)  # shown only when one of these is recommended


@dataclass
class Rule:
    id: str
    title: str
    when: Cond
    recommend: list[Contribution]
    exclude: list[tuple[str, str]]
    warn: list[Warning_]
    tests: list[dict[str, Any]]
    line: int | None = None
    not_first: list[tuple[str, str]] = field(default_factory=list)
    require_code: bool = False
    assume: list[str] = field(default_factory=list)
    support: str = "full"


@dataclass
class RuleSet:
    path: str
    references: dict[str, str]
    losses: dict[str, CatalogueEntry]
    rules: list[Rule]  # sorted by id

    def rule(self, rid: str) -> Rule:
        return next(r for r in self.rules if r.id == rid)


_RULE_KEYS = ("id", "title", "when", "recommend", "exclude", "not_first", "require_code", "warn",
              "assume", "support", "tests")
_LOSS_KEYS = ("name", "call", "expr", "describe", "evaluable", "params", "each", "code", "refs",
              "applies_to", "prior", "note", "input", "variants")
_VARIANT_KEYS = ("when", "name", "call", "expr", "describe", "params", "code", "refs", "input",
                 "note")
INPUTS = ("logits", "probabilities", "log_probabilities")
SUPPORT = ("full", "partial", "none")
_CONTRIB_KEYS = ("loss", "score", "reason", "refs", "params", "first")
_TEST_KEYS = ("facts", "expect_top", "expect_in_top", "expect_warnings", "expect_excluded",
              "expect_not_fired", "top")


def default_rules_path() -> Path:
    here = Path(__file__).resolve().parent
    # a source checkout (configs/ next to the package), or package data in an installed wheel
    for cand in (here.parent.parent / "configs" / "rules.yaml", here.parent / "data" / "rules.yaml",
                 here / "data" / "rules.yaml"):
        if cand.is_file():
            return cand
    return here.parent.parent / "configs" / "rules.yaml"


_CACHE: dict[str, RuleSet] = {}


def load_rules(path: str | Path | None = None) -> RuleSet:
    from lossctl.advisor.yamlio import load_yaml

    p = Path(path) if path is not None else default_rules_path()
    key = str(p.resolve()) if p.exists() else str(p)
    if path is None and key in _CACHE:
        return _CACHE[key]
    data = load_yaml(p, "rules file")
    rs = parse_rules(data, str(p))
    if path is None:
        _CACHE[key] = rs
    return rs


def _at(src: str, node: Any, key: Any = None) -> str:
    line = None
    if key is not None:
        line = getattr(node, "lines", {}).get(key)
    if line is None:
        line = getattr(node, "line", None)
    return f"{src}:{line}" if line else src


def _check_keys(node: Any, allowed: tuple[str, ...], where: str, what: str) -> None:
    for k in node:
        if k not in allowed:
            raise RulesError(f"{where}: unknown {what} key {k!r}{did_you_mean(k, allowed)} "
                             f"(allowed: {', '.join(allowed)})")


def _str_list(v: Any, where: str, what: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise RulesError(f"{where}: {what} must be a list of strings")
    return list(v)


def _param_value(v: Any, where: str) -> Any:
    if isinstance(v, dict):
        if set(v) - {"fact", "missing"} or "fact" not in v:
            raise RulesError(f"{where}: a parameter value mapping must be "
                             "{fact: NAME, missing: HINT}")
        if v["fact"] not in FACTS:
            raise RulesError(f"{where}: unknown fact {v['fact']!r}{did_you_mean(v['fact'], FACTS)}")
        return FactRef(v["fact"], str(v.get("missing", v["fact"])))
    if isinstance(v, float) and not math.isfinite(v):
        raise RulesError(f"{where}: parameter values must be finite")
    if isinstance(v, (list, bool, int, float, str)) or v is None:
        return v
    raise RulesError(f"{where}: unsupported parameter value {v!r}")


def parse_rules(data: Any, src: str) -> RuleSet:
    if not isinstance(data, dict):
        raise RulesError(f"{src}: a rules file must be a mapping with 'losses' and 'rules'")
    _check_keys(data, ("version", "references", "losses", "rules"), src, "top-level")
    if data.get("version", 1) != 1:
        raise RulesError(f"{_at(src, data, 'version')}: unsupported rules version "
                         f"{data.get('version')!r}; this lossctl reads version 1")
    refs = data.get("references") or {}
    if not isinstance(refs, dict):
        raise RulesError(f"{_at(src, data, 'references')}: references must map key -> citation")
    references = {str(k): str(v) for k, v in refs.items()}

    raw_losses = data.get("losses")
    if not isinstance(raw_losses, dict) or not raw_losses:
        raise RulesError(f"{src}: 'losses' (the catalogue) must be a non-empty mapping")
    losses: dict[str, CatalogueEntry] = {}
    for lid, node in raw_losses.items():
        losses[str(lid)] = _parse_loss(str(lid), node, src, raw_losses, references)

    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RulesError(f"{src}: 'rules' must be a non-empty list")
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for i, node in enumerate(raw_rules):
        rule = _parse_rule(i, node, src, losses, references)
        if rule.id in seen:
            raise RulesError(f"{_at(src, node, 'id')}: rule {rule.id}: duplicate rule id "
                             f"(first at {seen[rule.id]})")
        seen[rule.id] = _at(src, node, "id")
        rules.append(rule)
    rules.sort(key=lambda r: r.id)
    return RuleSet(path=src, references=references, losses=losses, rules=rules)


def _check_refs(keys: list[str], references: dict[str, str], where: str) -> None:
    if not references:
        return
    for k in keys:
        if k not in references:
            raise RulesError(f"{where}: unknown reference {k!r}{did_you_mean(k, references)}; "
                             "add it under 'references'")


def _parse_loss(lid: str, node: Any, src: str, parent: Any, references: dict[str, str]) -> CatalogueEntry:
    where = f"{_at(src, parent, lid)}: loss {lid}"
    if not _ID_RE.match(lid):
        raise RulesError(f"{where}: loss ids are letters, digits, '_', '.', '-'")
    if not isinstance(node, dict):
        raise RulesError(f"{where}: a catalogue entry must be a mapping")
    _check_keys(node, _LOSS_KEYS, where, "catalogue")
    n_forms = sum(k in node for k in ("call", "expr", "describe"))
    if n_forms != 1:
        raise RulesError(f"{where}: give exactly one of call (a lossctl loss name), expr (an "
                         "expression template) or describe (a description for a loss lossctl "
                         "cannot evaluate)")
    evaluable = "describe" not in node
    if "evaluable" in node and node["evaluable"] is not evaluable:
        raise RulesError(f"{where}: evaluable: {node['evaluable']} contradicts "
                         f"{'describe' if 'describe' in node else 'call/expr'}")
    params_raw = node.get("params") or {}
    if not isinstance(params_raw, dict):
        raise RulesError(f"{where}: params must be a mapping")
    params = {str(k): _param_value(v, f"{where}: param {k}") for k, v in params_raw.items()}
    call = node.get("call")
    if call is not None and (not isinstance(call, str) or not _NAME_RE.match(call)):
        raise RulesError(f"{where}: call must be a loss name such as huber")
    template = str(node.get("expr") or node.get("describe") or call)
    each = None
    if "each" in node:
        e = node["each"]
        if not (isinstance(e, dict) and len(e) == 1):
            raise RulesError(f"{where}: each must be {{template_param: list_param}}")
        (tp, lp), = e.items()
        if lp not in params:
            raise RulesError(f"{where}: each names list param {lp!r}, which is not in params")
        each = (str(tp), str(lp))
    allowed_ph = set(params) | ({each[0]} if each else set())
    for ph in _PLACEHOLDER.findall(template):
        if ph not in allowed_ph:
            raise RulesError(f"{where}: template placeholder {{{ph}}} is not a param"
                             f"{did_you_mean(ph, allowed_ph)}")
    code_raw = node.get("code") or {}
    if not isinstance(code_raw, dict):
        raise RulesError(f"{where}: code must map framework -> code template")
    code = {}
    for fw, tmpl in code_raw.items():
        if fw not in FRAMEWORKS:
            raise RulesError(f"{where}: unknown framework {fw!r}{did_you_mean(fw, FRAMEWORKS)}")
        for ph in _PLACEHOLDER.findall(str(tmpl)):
            if ph not in allowed_ph:
                raise RulesError(f"{where}: code placeholder {{{ph}}} ({fw}) is not a param")
        code[fw] = str(tmpl).rstrip("\n")
    refs = _str_list(node.get("refs"), where, "refs")
    _check_refs(refs, references, where)
    prior = node.get("prior", 0)
    if isinstance(prior, bool) or not isinstance(prior, (int, float)):
        raise RulesError(f"{where}: prior must be a number")
    applies = compile_condition(node["applies_to"], f"{where}: applies_to") \
        if node.get("applies_to") is not None else None
    inp = node.get("input")
    if inp is not None and inp not in INPUTS:
        raise RulesError(f"{where}: input must be one of {', '.join(INPUTS)}, not {inp!r}")
    entry = CatalogueEntry(id=lid, name=str(node.get("name", lid)), evaluable=evaluable,
                           template=template, params=params, code=code, refs=refs,
                           applies_to=applies, prior=float(prior), each=each, call=call,
                           line=getattr(parent, "lines", {}).get(lid), input=inp)
    raw_variants = node.get("variants") or []
    if not isinstance(raw_variants, list):
        raise RulesError(f"{where}: variants must be a list of {{when: ..., overrides}}")
    for j, v in enumerate(raw_variants):
        vw = f"{where}: variants[{j}]"
        if not isinstance(v, dict) or "when" not in v:
            raise RulesError(f"{vw} must be a mapping with 'when' and the keys it overrides")
        _check_keys(v, _VARIANT_KEYS, vw, "variant")
        merged = {k: val for k, val in node.items() if k != "variants"}
        if any(k in v for k in ("call", "expr", "describe")):
            for k in ("call", "expr", "describe", "evaluable", "each"):
                merged.pop(k, None)
            if "params" not in v:
                merged.pop("params", None)
        for k, val in v.items():
            if k == "when":
                continue
            if k == "params":  # a new form (call/expr/describe) brings its own params
                merged["params"] = dict(val or {}) if any(f in v for f in ("call", "expr", "describe")) \
                    else {**(node.get("params") or {}), **(val or {})}
            elif k == "code":
                merged["code"] = {**(node.get("code") or {}), **(val or {})}
            else:
                merged[k] = val
        cond = compile_condition(v["when"], f"{vw}: when")
        ve = _parse_loss(lid, merged, src, parent, references)
        ve.variant = cond.describe()
        entry.variants.append((cond, ve))
    return entry


def _parse_rule(i: int, node: Any, src: str, losses: dict[str, CatalogueEntry],
                references: dict[str, str]) -> Rule:
    if not isinstance(node, dict):
        raise RulesError(f"{src}: rules[{i}] must be a mapping with id, when, recommend/warn")
    rid = node.get("id")
    if not isinstance(rid, str) or not _ID_RE.match(rid):
        raise RulesError(f"{_at(src, node)}: rules[{i}] needs an id such as R02 "
                         f"(letters, digits, '_', '.', '-'), got {rid!r}")
    where = f"{_at(src, node)}: rule {rid}"
    _check_keys(node, _RULE_KEYS, where, "rule")
    if "when" not in node:
        raise RulesError(f"{where}: missing 'when' (use 'when: {{}}' to always fire)")
    when = compile_condition(node.get("when"), f"{where}: when")
    recommend = []
    for j, c in enumerate(node.get("recommend") or []):
        cw = f"{where}: recommend[{j}]"
        if not isinstance(c, dict):
            raise RulesError(f"{cw} must be a mapping with loss, score, reason")
        _check_keys(c, _CONTRIB_KEYS, cw, "recommend")
        lid = c.get("loss")
        if lid not in losses:
            raise RulesError(f"{cw}: unknown loss {lid!r}{did_you_mean(lid, losses)}; "
                             "add it to the catalogue under 'losses'")
        score = c.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise RulesError(f"{cw}: score must be a number, got {score!r}")
        reason = c.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise RulesError(f"{cw}: every contribution needs a reason")
        refs = _str_list(c.get("refs"), cw, "refs")
        _check_refs(refs, references, cw)
        params_raw = c.get("params") or {}
        if not isinstance(params_raw, dict):
            raise RulesError(f"{cw}: params must be a mapping")
        entry = losses[lid]
        for k in params_raw:
            if k not in entry.params:
                raise RulesError(f"{cw}: loss {lid} has no param {k!r}"
                                 f"{did_you_mean(k, entry.params)}")
        params = {str(k): _param_value(v, f"{cw}: param {k}") for k, v in params_raw.items()}
        first = c.get("first", False)
        if not isinstance(first, bool):
            raise RulesError(f"{cw}: first must be true or false")
        recommend.append(Contribution(lid, float(score), " ".join(reason.split()), refs, params,
                                      first))
    exclude = []
    for j, e in enumerate(node.get("exclude") or []):
        ew = f"{where}: exclude[{j}]"
        if not isinstance(e, dict) or set(e) - {"loss", "reason"} or "loss" not in e:
            raise RulesError(f"{ew} must be {{loss: ID, reason: TEXT}}")
        if e["loss"] not in losses:
            raise RulesError(f"{ew}: unknown loss {e['loss']!r}{did_you_mean(e['loss'], losses)}")
        exclude.append((e["loss"], " ".join(str(e.get("reason", "excluded")).split())))
    not_first = []
    for j, e in enumerate(node.get("not_first") or []):
        ew = f"{where}: not_first[{j}]"
        if not isinstance(e, dict) or set(e) - {"loss", "reason"} or "loss" not in e \
                or "reason" not in e:
            raise RulesError(f"{ew} must be {{loss: ID, reason: TEXT}}")
        if e["loss"] not in losses:
            raise RulesError(f"{ew}: unknown loss {e['loss']!r}{did_you_mean(e['loss'], losses)}")
        not_first.append((e["loss"], " ".join(str(e["reason"]).split())))
    require_code = node.get("require_code", False)
    if not isinstance(require_code, bool):
        raise RulesError(f"{where}: require_code must be true or false")
    assume = _str_list(node.get("assume"), where, "assume")
    support = node.get("support", "full")
    if support not in SUPPORT:
        raise RulesError(f"{where}: support must be one of {', '.join(SUPPORT)}")
    warns = []
    for j, w in enumerate(node.get("warn") or []):
        ww = f"{where}: warn[{j}]"
        if not isinstance(w, dict) or set(w) - {"level", "message", "refs", "forbids", "about"} \
                or "message" not in w:
            raise RulesError(f"{ww} must be {{level: info|warn|error, message: TEXT, refs: [...], "
                             "forbids: [...]}}")
        forbids = _str_list(w.get("forbids"), ww, "forbids")
        about = _str_list(w.get("about"), ww, "about")
        for lid in forbids + about:
            if lid not in losses:
                raise RulesError(f"{ww}: names unknown loss {lid!r}{did_you_mean(lid, losses)}")
        level = w.get("level", "warn")
        if level not in LEVELS:
            raise RulesError(f"{ww}: unknown level {level!r}{did_you_mean(level, LEVELS)}")
        refs = _str_list(w.get("refs"), ww, "refs")
        _check_refs(refs, references, ww)
        warns.append(Warning_(level, " ".join(str(w["message"]).split()), refs, forbids, about))
    if not (recommend or exclude or warns or not_first or require_code or assume) \
            and support == "full":
        raise RulesError(f"{where}: a rule must recommend, exclude, warn or constrain")
    tests = node.get("tests") or []
    if not isinstance(tests, list):
        raise RulesError(f"{where}: tests must be a list")
    for j, t in enumerate(tests):
        tw = f"{where}: tests[{j}]"
        if not isinstance(t, dict) or "facts" not in t:
            raise RulesError(f"{tw} must be a mapping with facts and expectations")
        _check_keys(t, _TEST_KEYS, tw, "test")
        for key in ("expect_top", "expect_in_top", "expect_excluded"):
            for lid in _str_list(t.get(key), tw, key):
                if lid not in losses:
                    raise RulesError(f"{tw}: {key} names unknown loss {lid!r}"
                                     f"{did_you_mean(lid, losses)}")
    return Rule(id=rid, title=str(node.get("title", rid)), when=when, recommend=recommend,
                exclude=exclude, warn=warns, tests=list(tests), line=getattr(node, "line", None),
                not_first=not_first, require_code=require_code, assume=assume, support=support)


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Scored:
    entry: CatalogueEntry
    score: float = 0.0
    contributions: list[tuple[str, Contribution]] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    applicable: bool = True
    first: list[str] = field(default_factory=list)  # rules that rank it first (metric/functional)
    blocked: list[tuple[str, str]] = field(default_factory=list)  # why it cannot be rank 1


@dataclass
class Outcome:
    ranked: list[Scored]  # recommended, best first
    all: dict[str, Scored]
    fired: list[str]
    warnings: list[dict[str, Any]]
    assumptions: list[str] = field(default_factory=list)
    support: str = "full"


_HEAD_OK = {  # head -> the loss inputs it can feed
    "logits": ("logits",), "linear": ("logits",), "probabilities": ("probabilities",),
    "log_probabilities": ("log_probabilities",),
}
_FIRST_BLOCKING_LEVELS = ("error",)


def evaluate(rs: RuleSet, facts: dict[str, Any]) -> Outcome:
    """Score every catalogue entry, then order: constraints before preferences.

    1. Excluded or inapplicable entries, and those with a non-positive score, are dropped.
    2. Entries a fired rule marks ``first`` (the loss the metric or functional asks for) rank
       above the rest; within a tier, by score, then prior, then id.
    3. Rank 1 goes to the best entry that nothing blocks: ``not_first`` in a fired rule, an
       error-level warning that ``forbids`` it, a head its input does not match, or (under
       ``require_code``) no code for the task's framework.
    """
    scored = {}
    for lid, e in rs.losses.items():
        eff = e.for_facts(facts)
        scored[lid] = Scored(entry=eff, params=dict(eff.params))
    fired: list[str] = []
    warnings: list[dict[str, Any]] = []
    assumptions: list[str] = []
    support = "full"
    require_code = []
    for rule in rs.rules:  # sorted by id: file order never matters
        if not rule.when.matches(facts):
            continue
        fired.append(rule.id)
        for c in rule.recommend:
            s = scored[c.loss]
            s.score += c.score
            s.contributions.append((rule.id, c))
            s.params.update({k: v for k, v in c.params.items() if k in s.entry.params})
            if c.first:
                s.first.append(rule.id)
        for lid, reason in rule.exclude:
            scored[lid].excluded.append((rule.id, reason))
        for lid, reason in rule.not_first:
            scored[lid].blocked.append((rule.id, reason))
        for w in rule.warn:
            warnings.append({"level": w.level, "message": w.message, "rule": rule.id,
                             "references": [_ref(rs, r) for r in w.refs], "_about": w.about})
            if w.level in _FIRST_BLOCKING_LEVELS:
                for lid in w.forbids:
                    scored[lid].blocked.append((rule.id, f"contradicted by an {w.level}-level "
                                                f"warning: {w.message}"))
        if rule.require_code:
            require_code.append(rule.id)
        for a in rule.assume:
            if a not in assumptions:
                assumptions.append(a)
        if SUPPORT.index(rule.support) > SUPPORT.index(support):
            support = rule.support
    head = facts.get("head")
    fw = facts.get("framework")
    for s in scored.values():
        s.applicable = s.entry.applies_to is None or s.entry.applies_to.matches(facts)
        if head in _HEAD_OK and s.entry.input is not None and s.entry.input not in _HEAD_OK[head]:
            s.blocked.append(("head", f"it expects {s.entry.input.replace('_', '-')} and the "
                                      f"model outputs {head.replace('_', '-')}"))
    ranked = [s for s in scored.values() if s.applicable and not s.excluded and s.score > 0]
    if require_code and fw not in (None, "any"):
        if any(fw in s.entry.code and not s.blocked for s in ranked):
            for s in ranked:
                if fw not in s.entry.code:
                    s.blocked.append((require_code[0], f"no {fw} objective or code for it"))
        elif ranked:
            assumptions.append(f"framework {fw}: no candidate loss has a {fw} objective for this "
                               "task; the code shown is for other frameworks")
            support = max(support, "partial", key=SUPPORT.index)
    ranked.sort(key=lambda s: (not s.first, -round(s.score, 9), -s.entry.prior, s.entry.id))
    ok = next((i for i, s in enumerate(ranked) if not s.blocked), None)
    if ok:  # not None and not already first
        ranked.insert(0, ranked.pop(ok))
    shown = {s.entry.id for s in ranked}
    warnings = [{k: v for k, v in w.items() if k != "_about"} for w in warnings
                if not w["_about"] or shown & set(w["_about"])]
    order = {"error": 0, "warn": 1, "info": 2}
    warnings.sort(key=lambda w: (order[w["level"]], w["rule"]))
    return Outcome(ranked=ranked, all=scored, fired=fired, warnings=warnings,
                   assumptions=assumptions, support=support)


def _ref(rs: RuleSet, key: str) -> str:
    cite = rs.references.get(key)
    return f"[{key}] {cite}" if cite else key


# --------------------------------------------------------------------------------------------
# Rendering a recommendation: expression, params, code


def resolve_params(params: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, FactRef):
            out[k] = facts.get(v.fact, Missing(v.missing)) if facts.get(v.fact) is not None \
                else Missing(v.missing)
        else:
            out[k] = v
    return out


def fmt_expr_value(v: Any) -> str:
    """A value in lossctl expression syntax (SPEC §3)."""
    if isinstance(v, Missing):
        return v.hint
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_expr_value(x) for x in v) + "]"
    s = str(v)
    if _NAME_RE.match(s) and s.lower() not in ("true", "false", "none"):
        return s
    return "'" + s.replace("'", "") + "'"


def fmt_py_value(v: Any) -> str:
    if isinstance(v, Missing):
        return v.hint
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_py_value(x) for x in v) + "]"
    return repr(v)


def _fill(template: str, values: dict[str, Any], fmt) -> str:
    return _PLACEHOLDER.sub(lambda m: fmt(values[m.group(1)]), template)


def render(entry: CatalogueEntry, params: dict[str, Any]) -> tuple[str, bool]:
    """The loss string and whether it is a valid lossctl expression."""
    missing = any(isinstance(v, Missing) for v in params.values())
    if entry.call is not None:
        args = ", ".join(f"{k}={fmt_expr_value(v)}" for k, v in params.items() if v is not None)
        text = f"{entry.call}({args})" if args else entry.call
    elif entry.each is not None:
        tp, lp = entry.each
        items = params[lp]
        if isinstance(items, Missing) or not isinstance(items, list):
            missing = True
            text = _fill(entry.template, {**params, tp: Missing(f"<each of {lp}>")}, fmt_expr_value)
        else:
            text = " + ".join(_fill(entry.template, {**params, tp: it}, fmt_expr_value)
                              for it in items)
    else:
        text = _fill(entry.template, params, fmt_expr_value)
    return text, entry.evaluable and not missing


def render_code(entry: CatalogueEntry, params: dict[str, Any], framework: str | None) -> dict[str, str]:
    if framework in (None, ""):
        wanted = ["pytorch"]
    elif framework == "any":
        wanted = list(FRAMEWORKS)
    else:
        wanted = [framework]
    out = {}
    for fw in wanted:
        tmpl = entry.code.get(fw)
        if tmpl is None:
            continue
        values = dict(params)
        if entry.each is not None:
            tp, lp = entry.each
            values[tp] = values.get(lp)
        out[fw] = _fill(tmpl, values, fmt_py_value)
    return out


# --------------------------------------------------------------------------------------------
# Coverage: which written facts the rules can take into account (support / assumptions)

# Facts that only feed derivations or rendering: their effect shows up in other facts or code.
_STRUCTURAL = ("description", "framework", "head", "classes", "class_counts", "minority_fraction",
               "quantiles", "coverage")


def _mentions(cond: Cond, out: dict[str, set], negated: bool = False) -> None:
    if cond.op in ("all", "any", "not"):
        for c in cond.items:
            _mentions(c, out, negated or cond.op == "not")
        return
    vals = out.setdefault(cond.fact, set())
    if negated:  # 'not labels in [binary]' takes every other value into account
        vals.add(_ANY)
    elif cond.test == "eq":
        vals.add(cond.value)
    elif cond.test == "in":
        vals.update(cond.value)
    else:  # ne, not_in, exists, comparisons: any value is taken into account
        vals.add(_ANY)


_ANY = object()


def _rule_tasks(cond: Cond) -> set | None:
    """Task values a rule is restricted to (from its top-level conditions), None if any task."""
    items = cond.items if cond.op == "all" else (cond,)
    for c in items:
        if c.op == "test" and c.fact == "task" and c.test in ("eq", "in"):
            return {c.value} if c.test == "eq" else set(c.value)
    return None


def uncovered_facts(rs: RuleSet, facts: dict[str, Any], written: list[str],
                    fired: list[str]) -> list[str]:
    """Written facts that no rule for this task (and no fired rule) takes into account."""
    task = facts.get("task")
    seen: dict[str, set] = {}
    for rule in rs.rules:
        tasks = _rule_tasks(rule.when)
        if rule.id in fired or tasks is None or task in tasks:
            _mentions(rule.when, seen)
    for derived, sources in DERIVED_FROM.items():
        if derived in seen:
            for src in sources:
                seen.setdefault(src, set()).add(_ANY)
    out = []
    for k in written:
        if k in _STRUCTURAL or k == "task" or k not in facts:
            continue
        vals = seen.get(k)
        v = facts[k]
        if v is False or v in NEUTRAL_VALUES.get(k, ()):
            continue
        if vals is None:
            out.append(k)
        elif _ANY not in vals and FACTS[k].kind in ("enum", "bool") and v not in vals:
            out.append(k)
    return out
