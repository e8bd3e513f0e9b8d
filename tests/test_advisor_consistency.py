"""Self-consistency of `lossctl recommend` (SPEC §7, issue 13 part 3), over every example task in
configs/tasks/ x every `head` x every `framework`:

* no rank-1 recommendation is contradicted by an error-level warning of the same output, by the
  head (its input mode) or, for a GBDT framework, by having no objective for it;
* every code snippet of the rank-1 recommendation (all frameworks) uses the logits/probabilities
  mode the head calls for;
* every reason comes from a rule that fired for these facts, and every warning that names a loss
  family is shown only when a loss of that family is recommended (no Huber advice without Huber).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lossctl.advisor import advise_facts
from lossctl.advisor.rules import FRAMEWORKS, load_rules, render_code, resolve_params
from lossctl.advisor.schema import load_task

ROOT = Path(__file__).resolve().parent.parent
TASKS = sorted((ROOT / "configs" / "tasks").glob("*.yaml"))
HEADS = [None, "logits", "probabilities", "log_probabilities"]
FWS = [None, *FRAMEWORKS, "any"]
RS = load_rules()

# Code that feeds logits to a loss (wrong for a probability head) and code that feeds
# probabilities (wrong for a logits head): the benchmark's own head check, made stricter.
LOGIT_MODE = [r"from_logits\s*=\s*True", r"WithLogits", r"with_logits", r"sigmoid\s*=\s*True",
              r"softmax\s*=\s*True", r"CrossEntropyLoss\(", r"F\.cross_entropy\(",
              r"functional\.cross_entropy\("]
PROB_MODE = [r"from_logits\s*=\s*False", r"\bBCELoss\(", r"\bNLLLoss\(", r"\bnll_loss\("]
KERAS_CE = re.compile(r"(Binary|Categorical|SparseCategorical)(Focal)?Crossentropy\(([^)]*)\)")


def _advice(path: Path, head, fw):
    task = load_task(path)
    for key, val in (("head", head), ("framework", fw)):
        task.facts.pop(key, None)
        task.source.pop(key, None)
        if val is not None:
            task.facts[key] = val
            task.source[key] = "task file"
    return advise_facts(task, RS)


def _mode_problems(code: str, head: str | None) -> list[str]:
    out = []
    if head in ("probabilities", "log_probabilities"):
        out += [p for p in LOGIT_MODE if re.search(p, code)]
    if head in ("logits", "linear"):
        out += [p for p in PROB_MODE if re.search(p, code)]
        out += [m.group(0) for m in KERAS_CE.finditer(code) if "from_logits=True" not in m.group(3)]
    return out


CASES = [(p, h, f) for p in TASKS for h in HEADS for f in FWS]


@pytest.mark.parametrize("path,head,fw", CASES,
                         ids=[f"{p.stem}-{h}-{f}" for p, h, f in CASES])
def test_rank1_is_consistent(path, head, fw):
    adv = _advice(path, head, fw)
    assert adv.ranked, "no recommendation"
    top = adv.ranked[0]
    facts = adv.task.facts
    # 1. nothing rules out the first answer: error warnings, head, framework
    assert not top.blocked, f"rank 1 {top.entry.id} is ruled out: {top.blocked}"
    for w in adv.outcome.warnings:
        if w["level"] == "error":
            rule = RS.rule(w["rule"])
            for rw in rule.warn:
                assert top.entry.id not in rw.forbids, (top.entry.id, w["message"])
    # 2. every snippet of rank 1, in every framework, matches the head (embedding, ranking and
    # survival losses are computed from embeddings/scores, not from a class-probability head)
    code = render_code(top.entry, resolve_params(top.params, facts), "any")
    if facts["task"] in ("embedding", "ranking", "survival"):
        code = {}
    for fw_name, snippet in code.items():
        bad = _mode_problems(snippet, facts.get("head"))
        assert not bad, f"{top.entry.id} {fw_name} snippet contradicts head={facts.get('head')}: {bad}\n{snippet}"
    # a GBDT framework gets its own objective, or the output says that none fits the task
    if fw in ("lightgbm", "xgboost", "sklearn") and fw not in top.entry.code:
        support, notes = adv.support()
        assert support != "full" and any(fw in n for n in notes), (top.entry.id, fw, notes)


# A warning that talks about one loss family must not be shown when no loss of that family is.
FAMILY_WORDS = {
    r"\bHuber": {"huber", "smooth_l1", "pseudo_huber"},
    r"\bfocal loss": {"focal", "cb_focal", "focal_smooth_l1", "focal_giou", "focal_tversky"},
    r"\bCTC\b": {"ctc"},
    r"\bTversky": {"tversky", "focal_tversky"},
    r"\bGaussian NLL": {"gaussian_nll", "beta_nll"},
    r"\bInfoNCE": {"infonce"},
    r"\bDice\b": {"ce_dice", "bce_dice", "dice", "generalized_dice", "tversky", "focal_tversky",
                  "boundary_loss", "hausdorff_dt", "cldice"},
    r"\bLovasz": {"lovasz"},
    r"\bASL": {"asl"},
    r"\bAUC surrogates": {"auc_surrogate"},
}


@pytest.mark.parametrize("path,head,fw", CASES,
                         ids=[f"{p.stem}-{h}-{f}" for p, h, f in CASES])
def test_reasons_and_warnings_are_about_this_task(path, head, fw):
    adv = _advice(path, head, fw)
    shown = {s.entry.id for s in adv.ranked}
    fired = set(adv.outcome.fired)
    for s in adv.ranked:
        for rid, c in s.contributions:
            assert rid in fired
    for w in adv.warnings:
        if w["level"] == "error":  # error warnings name the losses NOT to use
            continue
        for pat, family in FAMILY_WORDS.items():
            if re.search(pat, w["message"]):
                assert shown & family, (f"warning {w['rule']} talks about {pat!r} but no such loss "
                                        f"is recommended: {w['message']}")


def test_every_catalogue_snippet_matches_its_declared_input():
    """Catalogue data: an entry (or variant) that declares its input has code in that mode."""
    for lid, base in RS.losses.items():
        for entry in [base] + [v for _, v in base.variants]:
            if entry.input is None:
                continue
            head = {"logits": "logits", "probabilities": "probabilities",
                    "log_probabilities": "log_probabilities"}[entry.input]
            for fw, code in entry.code.items():
                bad = _mode_problems(code, head)
                assert not bad, f"{lid} ({entry.variant or 'base'}) {fw}: {bad}"
