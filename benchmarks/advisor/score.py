#!/usr/bin/env python3
"""Score `lossctl recommend` against the advisor benchmark (benchmarks/advisor/).

For every task in cases/<id>.yaml this runs `python -m lossctl recommend FILE --format json` in a
subprocess, reads `recommendations[i].loss` (best first) and compares the first and the first three
recommendations with the accepted and harmful answers in answers.yaml. The matching rule is in
README.md ("Matching rule") and in `term_matches` / `expr_matches` below.

It is a report: the exit status is 0 whatever the score (2 only for a broken benchmark, e.g. an
unreadable answers.yaml). Standard library + PyYAML; no network; lossctl is only run, never imported.

    python benchmarks/advisor/score.py                 # table + misses
    python benchmarks/advisor/score.py --json          # one JSON document
    python benchmarks/advisor/score.py --rules other_rules.yaml --case cls_ctr_calibrated_bids -v
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# --------------------------------------------------------------------------- canonical names
# A recommendation's name is lower-cased, ':', '-', '.', '/' and spaces become '_', a trailing
# '_loss' is dropped, then it goes through SYNONYMS. A synonym maps to one canonical term, or to
# several (catalogue compounds such as ce_dice), optionally with implied parameters: ANY means
# "set to a non-neutral value" (weighted_bce = bce_with_logits(pos_weight=ANY)).
ANY = "__any__"

_SYN_GROUPS: dict[str, list[str]] = {
    # regression
    "mse": ["l2", "mean_squared_error", "squared_error", "regression", "reg_squarederror", "regression_l2",
            "rmse", "squarederror", "gaussian", "diffusion_mse", "eps_mse", "epsilon_mse", "noise_mse",
            "simple_mse", "ddpm", "ddpm_simple", "v_prediction_mse", "v_mse"],
    "mae": ["l1", "mean_absolute_error", "absolute_error", "regression_l1", "reg_absoluteerror", "laplace",
            "absoluteerror"],
    "huber": ["huber_loss"],
    "smooth_l1": ["smoothl1", "smooth_l1_loss"],
    "pseudo_huber": ["pseudohuber", "reg_pseudohubererror", "pseudohubererror", "pseudo_huber_loss"],
    "log_cosh": ["logcosh"],
    "adaptive_robust": ["barron", "general_robust", "robust_adaptive", "adaptive"],
    "quantile": ["pinball", "quantile_loss", "pinball_loss", "reg_quantileerror", "quantileerror",
                 "quantile_regression"],
    "poisson_nll": ["poisson", "poisson_deviance", "count_poisson", "poisson_nll_loss", "poisson_regression"],
    "gamma": ["gamma_deviance", "gamma_nll", "reg_gamma", "gamma_regression"],
    "tweedie": ["tweedie_deviance", "reg_tweedie", "tweedie_nll", "compound_poisson", "tweedie_regression"],
    "negative_binomial": ["negative_binomial_nll", "negbin", "negbinom", "nb_nll", "neg_binomial", "neg_binomial_nll",
                          "negative_binomial_deviance", "negbin_nll", "nb"],
    "student_t_nll": ["student_t", "studentt", "studentt_nll", "t_nll", "student_nll"],
    "gaussian_nll": ["heteroscedastic", "gaussian_nll_loss", "normal_nll", "heteroscedastic_nll"],
    "beta_nll": ["beta_nll_loss", "betanll"],
    "beta_regression": ["beta_likelihood", "beta_regression_nll"],
    "crps": ["crps_gaussian", "continuous_ranked_probability_score"],
    "msle": ["mean_squared_log_error", "mean_squared_logarithmic_error", "rmsle", "reg_squaredlogerror",
             "squaredlogerror", "squared_log_error", "log_mse", "mse_log", "mse_log1p", "log1p_mse",
             "mse_on_log1p", "lognormal_nll", "log_normal"],
    "mape": ["mean_absolute_percentage_error", "mape_l1", "mape_weighted_l1", "mape_objective"],
    "frequency_severity": ["hurdle", "poisson_gamma", "zero_inflated", "hurdle_gamma"],
    # classification
    "bce_with_logits": ["bce_logits", "binary_cross_entropy_with_logits", "sigmoid_cross_entropy",
                        "binary_logistic", "binary", "logistic", "xentropy", "logloss", "binary_logloss",
                        "bcewithlogits", "bce_with_logits_loss", "non_saturating_gan", "ns_gan", "gan_bce",
                        "gan_non_saturating", "nonsaturating", "non_saturating", "pointwise_bce",
                        "binary_crossentropy_from_logits"],
    "bce": ["binary_cross_entropy", "binary_crossentropy", "bceloss"],
    "cross_entropy": ["ce", "softmax_cross_entropy", "categorical_cross_entropy", "categorical_crossentropy",
                      "sparse_categorical_crossentropy", "multiclass", "multi_softprob", "multi_softmax",
                      "softmax", "multiclassova", "token_cross_entropy", "token_ce", "seq2seq_ce",
                      "teacher_forcing_ce", "next_token_ce", "per_token_ce", "per_step_ce",
                      "soft_target_cross_entropy", "soft_cross_entropy", "cross_entropy_loss"],
    "nll": ["nll_loss", "negative_log_likelihood", "nllloss"],
    "focal": ["focal_loss", "sigmoid_focal", "sigmoid_focal_loss", "focal_binary", "focal_multiclass",
              "softmax_focal", "binary_focal", "binary_focal_crossentropy", "categorical_focal_crossentropy"],
    "hinge": ["hinge_loss", "squared_hinge", "svm"],
    "multi_margin": ["multi_margin_loss", "multiclass_hinge", "categorical_hinge", "crammer_singer",
                     "multimargin"],
    "class_balanced": ["class_balanced_loss", "cb_focal", "cb_ce", "class_balanced_ce", "class_balanced_focal",
                       "effective_number"],
    "logit_adjusted": ["logit_adjustment", "logit_adjusted_ce", "la_ce", "logit_adjusted_cross_entropy"],
    "balanced_softmax": ["balanced_softmax_ce"],
    "ldam": ["ldam_drw"],
    "gce": ["generalized_cross_entropy", "generalised_cross_entropy", "truncated_gce"],
    "sce": ["symmetric_cross_entropy"],
    "bootstrap_ce": ["bootstrapping", "bootstrap"],
    "active_passive": ["apl", "nce_rce", "active_passive_loss"],
    "asl": ["asymmetric_loss", "asymmetric"],
    "corn": ["corn_loss"],
    "coral": ["coral_loss"],
    "ordinal_threshold": ["all_threshold", "cumulative_link", "ordinal_logistic", "proportional_odds"],
    "weighted_kappa": ["qwk_loss", "kappa_loss", "weighted_kappa_loss"],
    "adaptive_softmax": ["adaptivelogsoftmaxwithloss", "adaptive_log_softmax"],
    "sampled_softmax": ["sampled_softmax_loss", "nce_sampled"],
    "soft_f1": ["f1_loss", "sigmoid_f1"],
    "auc_surrogate": ["auc_m", "libauc", "auc_margin"],
    # segmentation
    "dice": ["soft_dice", "dice_loss", "sorensen_dice"],
    "generalized_dice": ["generalised_dice", "gdl", "generalized_dice_loss"],
    "iou": ["jaccard", "soft_jaccard", "iou_loss", "jaccard_loss"],
    "lovasz": ["lovasz_softmax", "lovasz_hinge", "lovasz_loss"],
    "tversky": ["tversky_loss"],
    "focal_tversky": ["focal_tversky_loss"],
    "cldice": ["cl_dice", "soft_cldice", "soft_skeleton_dice"],
    "skeleton_recall": ["skeleton_recall_loss", "skel_recall"],
    "boundary": ["boundary_loss", "surface_loss"],
    "hausdorff": ["hausdorff_dt", "hausdorff_loss", "hd_loss", "hausdorff_distance"],
    # detection
    "giou": ["generalized_iou", "giou_loss", "generalised_iou"],
    "diou": ["diou_loss", "distance_iou"],
    "ciou": ["ciou_loss", "complete_iou"],
    "hungarian_set": ["detr", "set_prediction", "hungarian", "set_loss", "detr_set", "hungarian_matching",
                      "bipartite"],
    # embedding
    "contrastive": ["contrastive_loss", "pair_contrastive", "siamese_contrastive", "pairwise_contrastive"],
    "cosine_embedding": ["cosine_embedding_loss"],
    "triplet": ["triplet_margin", "triplet_margin_loss", "batch_hard_triplet", "triplet_loss"],
    "infonce": ["info_nce", "nt_xent", "ntxent", "clip", "clip_loss", "symmetric_infonce", "symmetric_ce",
                "multiple_negatives_ranking", "mnrl", "in_batch_softmax", "in_batch_negatives", "nce",
                "infonce_loss", "nt_xent_loss", "contrastive_infonce", "supcon_selfsup"],
    "arcface": ["arc_face", "additive_angular_margin"],
    "cosface": ["cos_face", "large_margin_cosine", "am_softmax", "additive_margin_softmax"],
    "normalized_softmax": ["norm_softmax", "normsoftmax", "normface"],
    "supcon": ["supervised_contrastive", "sup_con"],
    "multi_similarity": ["ms_loss", "multisimilarity"],
    "proxy_anchor": ["proxy_nca", "proxyanchor"],
    # ranking
    "lambdarank": ["lambdamart", "rank_ndcg", "lambda_rank", "lambda_mart", "lambdaloss"],
    "xendcg": ["rank_xendcg", "xe_ndcg"],
    "listnet": ["listwise_softmax", "listwise", "softmax_listwise", "listwise_ce", "list_net"],
    "listmle": ["list_mle"],
    "ranknet": ["pairwise_logistic", "rank_pairwise", "pairwise", "bradley_terry", "rank_net",
                "pairwise_logistic_loss"],
    "margin_ranking": ["margin_ranking_loss", "marginrankingloss", "pairwise_hinge", "ranking_hinge"],
    "bpr": ["bayesian_personalized_ranking", "bpr_loss"],
    # sequence
    "ctc": ["ctc_loss", "connectionist_temporal_classification"],
    "rnnt": ["rnn_t", "transducer", "rnnt_loss", "rnn_transducer"],
    "crf": ["crf_nll", "linear_chain_crf"],
    # generative / distillation
    "gaussian_kl": ["vae_kl", "kl_normal", "kl_prior"],
    "wgan_gp": ["wgan", "wasserstein", "wgan_gradient_penalty"],
    "flow_nll": ["exact_nll", "bits_per_dim", "log_likelihood", "flow_log_likelihood", "change_of_variables_nll",
                 "maximum_likelihood", "nll_bpd", "bpd"],
    "kl_div": ["kl", "kld", "kl_divergence", "distillation", "kd", "hinton_kd", "kd_loss", "distillation_kl",
               "soft_target_kl", "knowledge_distillation", "kd_kl"],
    "js_div": ["jensen_shannon", "jsd"],
    # survival
    "cox": ["cox_ph", "coxph", "cox_partial_likelihood", "survival_cox", "deepsurv", "cox_nll", "partial_likelihood"],
    "aft": ["survival_aft", "accelerated_failure_time", "weibull_aft", "lognormal_aft", "aft_nll"],
    "deephit": ["deep_hit"],
}
SYNONYMS: dict[str, list[tuple[str, dict]]] = {}
for _canon, _alts in _SYN_GROUPS.items():
    SYNONYMS[_canon] = [(_canon, {})]
    for _a in _alts:
        SYNONYMS[_a] = [(_canon, {})]
# implied parameters and catalogue compounds
SYNONYMS.update({
    "weighted_bce": [("bce_with_logits", {"pos_weight": ANY})],
    "weighted_bce_with_logits": [("bce_with_logits", {"pos_weight": ANY})],
    "bce_pos_weight": [("bce_with_logits", {"pos_weight": ANY})],
    "weighted_cross_entropy": [("cross_entropy", {"weight": ANY})],
    "weighted_ce": [("cross_entropy", {"weight": ANY})],
    "label_smoothing": [("cross_entropy", {"label_smoothing": ANY})],
    "label_smoothing_ce": [("cross_entropy", {"label_smoothing": ANY})],
    "cross_entropy_ls": [("cross_entropy", {"label_smoothing": ANY})],
    "ce_ls": [("cross_entropy", {"label_smoothing": ANY})],
    "gan_hinge": [("hinge", {})],
    "ce_dice": [("cross_entropy", {}), ("dice", {})],
    "dice_ce": [("cross_entropy", {}), ("dice", {})],
    "dc_and_ce": [("cross_entropy", {}), ("dice", {})],
    "bce_dice": [("bce_with_logits", {}), ("dice", {})],
    "dice_bce": [("bce_with_logits", {}), ("dice", {})],
    "focal_dice": [("focal", {}), ("dice", {})],
    "focal_giou": [("focal", {}), ("giou", {})],
    "focal_smooth_l1": [("focal", {}), ("smooth_l1", {})],
    "ce_smooth_l1": [("cross_entropy", {}), ("smooth_l1", {})],
    "ce_iou": [("cross_entropy", {}), ("iou", {})],
    "bce_weighted": [("bce_with_logits", {"pos_weight": ANY})],
    "ce_weighted": [("cross_entropy", {"weight": ANY})],
    "ce_label_smoothing": [("cross_entropy", {"label_smoothing": ANY})],
    "vae_bce": [("bce", {}), ("gaussian_kl", {})],
    "dice_focal": [("focal", {}), ("dice", {})],
})

PARAM_ALIASES = {
    "scale_pos_weight": "pos_weight", "class_weight": "weight", "class_weights": "weight",
    "ls": "label_smoothing", "smoothing": "label_smoothing",
}
# per-loss parameter aliases (alpha means the quantile level only for quantile)
LOSS_PARAM_ALIASES = {"quantile": {"alpha": "q", "quantile_alpha": "q", "tau": "q", "quantile": "q"}}
DEFAULTS = {("quantile", "q"): 0.5}
NEUTRAL = {"pos_weight": (None, 1, 1.0), "label_smoothing": (None, 0, 0.0)}


def norm_name(raw: str) -> str:
    s = raw.strip().strip("'\"").lower()
    s = re.sub(r"[:\-./ ]+", "_", s)
    s = re.sub(r"^(torch_nn_|nn_|f_|keras_losses_|losses_|tf_keras_losses_)", "", s)
    if s.endswith("_loss") and s[:-5] in SYNONYMS:
        s = s[:-5]
    return s


def canon_terms(raw_name: str, params: dict) -> list[tuple[str, dict]]:
    name = norm_name(raw_name)
    out = []
    for canon, implied in SYNONYMS.get(name, [(name, {})]):
        p = dict(implied)
        aliases = LOSS_PARAM_ALIASES.get(canon, {})
        for k, v in params.items():
            k2 = k.lower()
            k2 = aliases.get(k2, PARAM_ALIASES.get(k2, k2))
            p[k2] = v
        out.append((canon, p))
    return out


# --------------------------------------------------------------------------- expression parsing
def _split_top(s: str, seps: str) -> list[str]:
    parts, depth, quote, cur = [], 0, None, []
    for i, ch in enumerate(s):
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in seps:
            # a '-' that is part of an exponent (1e-3) or a leading sign is not a separator
            if ch == "-" and (i == 0 or s[i - 1] in "eE(*" or not "".join(cur).strip()):
                cur.append(ch)
                continue
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _value(v: str):
    v = v.strip()
    if v[:1] in "'\"" and v[-1:] == v[:1]:
        return v[1:-1]
    lv = v.lower()
    if lv in ("true", "false"):
        return lv == "true"
    if lv in ("none", "null"):
        return None
    if lv == "any":
        return ANY
    if v.startswith("[") and v.endswith("]"):
        return [_value(x) for x in _split_top(v[1:-1], ",")]
    try:
        return float(v)
    except ValueError:
        return v


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_expr(expr: str) -> list[tuple[str, dict]] | None:
    """Terms of a loss expression as (canonical name, params); None when it is not an expression."""
    terms = []
    for t in _split_top(expr, "+-"):
        t = re.sub(rf"^{_NUM}\s*\*\s*", "", t)
        t = re.sub(rf"\s*\*\s*{_NUM}$", "", t)
        m = re.fullmatch(r"([A-Za-z_][\w:.\-]*)\s*(?:\((.*)\))?", t, flags=re.S)
        if not m:
            return None
        params = {}
        if m.group(2):
            for kv in _split_top(m.group(2), ","):
                if "=" not in kv:
                    return None
                k, v = kv.split("=", 1)
                params[k.strip()] = _value(v)
        terms.extend(canon_terms(m.group(1), params))
    return terms or None


def _paren_params(text: str) -> dict:
    return {k: _value(v) for k, v in re.findall(r"([A-Za-z_]\w*)\s*=\s*([-+\w.]+)", text)}


def text_terms(text: str) -> list[tuple[str, dict]]:
    """Known loss names in free text: per top-level '+' part, the longest known name (up to five
    words joined by '_') at each position of the part's head (parenthetical asides removed); the
    part's 'k=v' pairs go to the first name found."""
    out = []
    for part in _split_top(text, "+"):
        head = re.sub(r"\([^()]*\)", " ", part)
        words = re.findall(r"[A-Za-z0-9_]+", head)
        found, i = [], 0
        while i < len(words):
            for n in range(min(5, len(words) - i), 0, -1):
                cand = norm_name("_".join(words[i:i + n]))
                if cand in SYNONYMS:
                    found.append(cand)
                    i += n
                    break
            else:
                i += 1
        params = _paren_params(part)
        for j, name in enumerate(found):
            out.extend(canon_terms(name, params if j == 0 else {}))
    return out


def rec_terms(rec: dict) -> list[tuple[str, dict]]:
    """A recommendation's terms (canonical name, params).

    - `loss` that parses as a loss expression (always so when `evaluable` is true): its terms,
      with `params` merged in (what the expression spells wins);
    - otherwise the catalogue `id` when the synonym table knows it, plus, for a compound text
      ('a + b'), the names found in each part of the text;
    - otherwise the loss names found in the text (`text_terms`)."""
    loss = str(rec.get("loss", ""))
    terms = parse_expr(loss)
    if terms is None:
        rid = norm_name(str(rec.get("id") or ""))
        if rid in SYNONYMS:
            terms = canon_terms(rid, _paren_params(loss))
            if len(_split_top(loss, "+")) > 1:
                terms += [t for t in text_terms(loss) if t[0] not in {n for n, _ in terms}]
        else:
            terms = text_terms(loss) or text_terms(str(rec.get("name") or ""))
    params = rec.get("params")
    if isinstance(params, dict) and params:
        nested = all(isinstance(v, dict) for v in params.values())
        for i, (name, p) in enumerate(terms):
            extra = {}
            if nested:
                for k, v in params.items():
                    if [c for c, _ in canon_terms(k, {})] == [name] or norm_name(k) == name:
                        extra.update(v)
            elif len(terms) == 1:
                extra = params
            if extra:
                merged = dict(canon_terms(name, extra)[0][1])
                merged.update(p)  # what the expression spells wins
                terms[i] = (name, merged)
    return terms


# --------------------------------------------------------------------------- matching
def _close(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-6 + 1e-3 * abs(b)
    if isinstance(a, list):
        return bool(a) and all(_close(x, b) for x in a)
    return str(a).lower() == str(b).lower()


def term_matches(want: tuple[str, dict], have: tuple[str, dict]) -> bool:
    wname, wparams = want
    hname, hparams = have
    if wname != hname:
        return False
    for k, v in wparams.items():
        if k in hparams:
            hv = hparams[k]
        elif (wname, k) in DEFAULTS:
            hv = DEFAULTS[(wname, k)]
        else:
            return False
        if v == ANY:
            if hv in NEUTRAL.get(k, (None, False, 0, 0.0)) and hv != ANY:
                return False
        elif hv == ANY or not _close(hv, v):
            return False
    return True


def expr_matches(want_terms, have_terms) -> bool:
    """Every wanted term is present (name + spelled parameters) among the recommendation's terms."""
    return all(any(term_matches(w, h) for h in have_terms) for w in want_terms)


def head_contradiction(head: str | None, rec: dict, terms) -> str | None:
    """A rank-1 whose loss or code snippet contradicts the task's `head`."""
    if not head:
        return None
    names = {n for n, _ in terms}
    code = rec.get("code") or {}
    snippets = code.values() if isinstance(code, dict) else [str(code)]
    text = "\n".join(str(s) for s in snippets)
    if head in ("probabilities", "log_probabilities"):
        if names & {"bce_with_logits"} and head == "probabilities":
            return "loss bce_with_logits for a probability head"
        for pat in (r"from_logits\s*=\s*True", r"WithLogits", r"with_logits", r"sigmoid\s*=\s*True",
                    r"softmax\s*=\s*True"):
            if re.search(pat, text):
                return f"snippet has {pat.replace(chr(92) + 's*', '')} for a {head} head"
        if head == "probabilities" and re.search(r"nn\.CrossEntropyLoss\(|F\.cross_entropy\(", text):
            return "torch CrossEntropyLoss (softmax inside) for a probability head"
    elif head == "logits":
        if names & {"bce", "nll"}:
            return f"loss {sorted(names & {'bce', 'nll'})[0]} (probability/log-prob form) for a logit head"
        if re.search(r"from_logits\s*=\s*False", text):
            return "snippet has from_logits=False for a logit head"
        if re.search(r"nn\.BCELoss\(|F\.binary_cross_entropy\(", text):
            return "torch BCELoss for a logit head"
        for call in re.finditer(r"(\w*Crossentropy)\(([^()]*)\)", text):
            if not re.search(r"from_logits\s*=\s*True", call.group(2)):
                return f"Keras {call.group(1)} without from_logits=True for a logit head"
    return None


# --------------------------------------------------------------------------- running
def run_case(path: Path, args) -> dict:
    cmd = [sys.executable, "-m", "lossctl", "recommend", str(path), "--format", "json", "--top", str(args.top)]
    if args.rules:
        cmd += ["--rules", str(Path(args.rules).resolve())]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(args.repo) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["NO_COLOR"] = "1"
    try:
        p = subprocess.run(cmd, cwd=args.repo, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "detail": f"timeout after {args.timeout}s"}
    first_err = next((l for l in p.stderr.splitlines() if l.strip()), "")
    first_err = re.sub(r" \(allowed: [^)]*\)", "", first_err.replace(str(path.parent) + os.sep, ""))
    if p.returncode == 2:
        return {"status": "unsupported", "detail": first_err}
    if p.returncode != 0:
        return {"status": "error", "detail": f"exit {p.returncode}: {first_err}"}
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        return {"status": "error", "detail": f"stdout is not JSON ({e})"}
    return {"status": "ok", "doc": doc}


def run_degraded(path: Path, args) -> tuple[dict, list[str]]:
    """--degrade: drop what today's lossctl refuses (an unknown key, or a key with an unknown value)
    and run again, as a user would who edits the file until it is accepted."""
    import tempfile
    task = yaml.safe_load(path.read_text()) or {}
    dropped: list[str] = []
    res = run_case(path, args)
    with tempfile.TemporaryDirectory() as tmp:
        while res["status"] == "unsupported" and len(dropped) < 6:
            m = re.search(r"unknown key '(\w+)'", res["detail"]) or re.search(r"unknown (\w+) '", res["detail"])
            if not m or m.group(1) not in task or m.group(1) == "task":
                break
            dropped.append(f"{m.group(1)}: {task.pop(m.group(1))}")
            p = Path(tmp) / path.name
            p.write_text(yaml.safe_dump(task, sort_keys=False))
            res = run_case(p, args)
    return res, dropped


def score_case(cid: str, task: dict, ans: dict, res: dict) -> dict:
    accepted = [(a, parse_expr(str(a))) for a in ans.get("accepted") or []]
    harmful = [(h, parse_expr(str(h))) for h in ans.get("harmful") or []]
    for label, lst in (("accepted", accepted), ("harmful", harmful)):
        for raw, t in lst:
            if t is None:
                raise SystemExit(f"error: answers.yaml: {cid}: {label} entry {raw!r} is not an expression")
    row = {"id": cid, "family": ans["family"], "tags": ans.get("tags") or [], "status": res["status"],
           "accepted": [a for a, _ in accepted], "harmful_answers": [h for h, _ in harmful],
           "top1": False, "top3": False, "harmful": False, "no_code": False, "harm_reason": None, "recommended": [],
           "support": None, "detail": res.get("detail")}
    if res["status"] != "ok":
        return row
    doc = res["doc"]
    recs = doc.get("recommendations") or []
    row["recommended"] = [str(r.get("loss")) for r in recs[:3]]
    row["support"] = doc.get("support")
    if not recs:
        return row

    def judge(rec):
        terms = rec_terms(rec)
        harm = next((h for h, t in harmful if expr_matches(t, terms)), None)
        ok = any(expr_matches(t, terms) for _, t in accepted)
        return terms, ok, harm

    fw = task.get("framework")
    code1 = recs[0].get("code")
    if fw and fw != "any" and not (isinstance(code1, dict) and code1.get(fw)):
        row["no_code"] = True
    terms1, ok1, harm1 = judge(recs[0])
    contra = head_contradiction(task.get("head"), recs[0], terms1)
    if harm1:
        row["harmful"], row["harm_reason"] = True, f"rank-1 matches harmful answer {harm1!r}"
    elif contra:
        row["harmful"], row["harm_reason"] = True, contra
    row["top1"] = ok1 and not row["harmful"]
    for i, rec in enumerate(recs[:3]):
        terms, ok, harm = judge(rec)
        if ok and not harm and not (i == 0 and contra):
            row["top3"] = True
            break
    return row


def aggregate(rows: list[dict], key) -> "OrderedDict[str, dict]":
    groups: "OrderedDict[str, list]" = OrderedDict()
    for r in rows:
        for k in key(r):
            groups.setdefault(k, []).append(r)
    out = OrderedDict()
    for k, rs in groups.items():
        n = len(rs)
        out[k] = {"cases": n,
                  "top1": sum(r["top1"] for r in rs), "top3": sum(r["top3"] for r in rs),
                  "top1_pct": round(100.0 * sum(r["top1"] for r in rs) / n, 1),
                  "top3_pct": round(100.0 * sum(r["top3"] for r in rs) / n, 1),
                  "harmful": sum(r["harmful"] for r in rs),
                  "no_code": sum(r["no_code"] for r in rs),
                  "unsupported": sum(r["status"] == "unsupported" for r in rs),
                  "errors": sum(r["status"] == "error" for r in rs)}
    return out


FAMILY_ORDER = ["regression", "classification", "segmentation", "detection", "embedding", "ranking",
                "sequence", "generative", "distillation", "survival"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--repo", type=Path, default=REPO, help="lossctl checkout to run (default: this one)")
    ap.add_argument("--rules", help="pass --rules FILE to lossctl recommend")
    ap.add_argument("--case", action="append", default=[], help="only these case ids (repeatable)")
    ap.add_argument("--top", type=int, default=5, help="--top passed to recommend (>= 3)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="recommend processes at once")
    ap.add_argument("--degrade", action="store_true",
                    help="when recommend refuses a key or value, drop it and score what the rest gives")
    ap.add_argument("-v", "--verbose", action="store_true", help="show every case, not only the misses")
    args = ap.parse_args(argv)
    args.repo = args.repo.resolve()

    try:
        answers = yaml.safe_load((HERE / "answers.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        print(f"error: answers.yaml: {e}", file=sys.stderr)
        return 2
    case_files = sorted((HERE / "cases").glob("*.yaml"))
    missing = sorted({p.stem for p in case_files} ^ set(answers))
    if missing:
        print(f"error: cases and answers.yaml disagree on: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.case:
        case_files = [p for p in case_files if p.stem in set(args.case)]

    runner = (lambda p: run_degraded(p, args)) if args.degrade else (lambda p: (run_case(p, args), []))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(runner, case_files))
    rows = []
    for p, (res, dropped) in zip(case_files, results):
        task = yaml.safe_load(p.read_text()) or {}
        row = score_case(p.stem, task, answers[p.stem], res)
        row["dropped"] = dropped
        rows.append(row)

    fam_order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    by_family = aggregate(sorted(rows, key=lambda r: fam_order.get(r["family"], 99)), lambda r: [r["family"]])
    by_tag = aggregate(rows, lambda r: r["tags"])
    total = aggregate(rows, lambda r: ["all"])["all"] if rows else {}
    supported = aggregate([r for r in rows if r["status"] == "ok"], lambda r: ["supported"]).get("supported")
    report = {"mode": "degrade" if args.degrade else "as-written", "cases": len(rows), "total": total, "supported_only": supported, "by_family": by_family, "by_tag": by_tag,
              "misses": [r for r in rows if not r["top1"]], "harmful": [r for r in rows if r["harmful"]],
              "rows": rows}
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
        return 0

    def line(name, s):
        return (f"| {name:<16} | {s['cases']:>5} | {s['top1_pct']:>5.1f} ({s['top1']:>2}) | {s['top3_pct']:>5.1f} ({s['top3']:>2}) |"
                f" {s['harmful']:>7} | {s['no_code']:>7} | {s['unsupported']:>11} | {s['errors']:>6} |")

    head = ("| slice            | cases | top-1 %    | top-3 %    | harmful | no code | unsupported | errors |\n"
            "|------------------|------:|-----------:|-----------:|--------:|--------:|------------:|-------:|")
    print(head)
    for f, s in by_family.items():
        print(line(f, s))
    if total:
        print(line("**all**", total))
    if supported:
        print(line("supported only", supported))
    print()
    print(head.replace("slice           ", "tag             "))
    for t, s in sorted(by_tag.items()):
        print(line(t, s))
    print()
    shown = rows if args.verbose else [r for r in rows if not r["top1"] or r["harmful"] or r["no_code"]]
    print(f"### {'All cases' if args.verbose else 'Misses and harmful rank-1 answers'} ({len(shown)})\n")
    for r in shown:
        mark = "HARM" if r["harmful"] else ("ok  " if r["top1"] else ("top3" if r["top3"] else "miss"))
        if r["status"] != "ok":
            got = f"[{r['status']}] {r['detail']}"
        else:
            got = " | ".join(r["recommended"]) or "(no recommendations)"
        drop = f" (dropped {'; '.join(r['dropped'])})" if r.get("dropped") else ""
        print(f"- {mark} {r['id']}{drop}: got {got}")
        print(f"       accepted: {', '.join(map(str, r['accepted']))}")
        if r["harm_reason"]:
            print(f"       harmful: {r['harm_reason']}")
        if r["no_code"]:
            print("       no code snippet for the task's framework in the rank-1 recommendation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
