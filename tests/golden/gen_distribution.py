"""Golden values for kl_div, js_div and gaussian_kl (writes tests/golden/distribution.json).

References: torch.nn.functional.kl_div (reduction='batchmean', float64) for KL, except where P = 0
and Q = 0 meet (torch gives NaN there; the spec's convention 0·log 0 = 0 is then computed directly);
scipy.spatial.distance.jensenshannon(p, q, axis=1)**2 (natural log) for JS; mpmath at 50 digits for
the Gaussian KL 0.5·Σ(mu² + exp(lv) − 1 − lv) (Kingma & Welling 2014, Appendix B).
Float32 cases: the reference runs in float64 on the float32 values. Run: python tests/golden/gen_distribution.py
"""

from __future__ import annotations

import mpmath
import numpy as np
import scipy
import torch
import torch.nn.functional as F
from _gen_common import make_case, torch_version, write_cases
from scipy.spatial.distance import jensenshannon

rng = np.random.default_rng(20261129)
torch.manual_seed(0)
cases = []


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def probs(shape, axis=1):
    x = rng.random(shape)
    return x / x.sum(axis=axis, keepdims=True)


def kl_ref(q, p, mode="prob", log_target=False):
    """torch batchmean KL(P||Q) (values per sample summed over non-batch axes)."""
    q, p = t64(q), t64(p)
    if mode == "prob":
        log_q = q.log()
    elif mode == "log":
        log_q = q
    else:
        log_q = F.log_softmax(q, dim=1)
    if q.dim() == 1:
        return float(F.kl_div(log_q, p, reduction="sum", log_target=log_target))
    total = F.kl_div(log_q, p, reduction="none", log_target=log_target)
    per = total.reshape(total.shape[0], -1).sum(1)
    return float(F.kl_div(log_q, p, reduction="batchmean", log_target=log_target)), per.numpy()


for dt in ("float64", "float32"):
    # PyTorch's own KLDivLoss test inputs (common_nn): input = rand(10, 10).log(), target = rand(10, 10)
    q_log = torch.rand(10, 10, dtype=torch.float64).log().numpy().astype(dt)
    p_raw = torch.rand(10, 10, dtype=torch.float64).numpy().astype(dt)
    v, per = kl_ref(q_log, p_raw, "log")
    cases.append(make_case(f"kl_torch_common_nn_log_input_{dt}", "kl_div(log_input=true)",
                           {"preds": q_log, "targets": p_raw}, v,
                           "torch kl_div(input, target, reduction='batchmean'); inputs as torch common_nn KLDivLoss",
                           expected_none=per))
    lt = np.log(p_raw).astype(dt)
    v, per = kl_ref(q_log, lt, "log", log_target=True)
    cases.append(make_case(f"kl_torch_log_target_{dt}", "kl_div(log_input=true, log_target=true)",
                           {"preds": q_log, "targets": lt}, v, "torch kl_div(..., log_target=True, 'batchmean')"))
    q = probs((6, 5)).astype(dt)
    p = probs((6, 5)).astype(dt)
    v, per = kl_ref(q, p)
    cases.append(make_case(f"kl_probs_{dt}", "kl_div", {"preds": q, "targets": p}, v,
                           "torch kl_div(log(q), p, reduction='batchmean')", expected_none=per))
    cases.append(make_case(f"kl_probs_sum_{dt}", "kl_div", {"preds": q, "targets": p}, float(per.sum()),
                           "torch kl_div(log(q), p, reduction='sum')", reduction="sum"))
    logits = rng.normal(0, 3, (5, 4, 3)).astype(dt)
    p3 = probs((5, 4, 3)).astype(dt)
    v, per = kl_ref(logits, p3, "logits")
    cases.append(make_case(f"kl_from_logits_3d_{dt}", "kl_div(from_logits=true)", {"preds": logits, "targets": p3},
                           v, "torch kl_div(log_softmax(x, 1), p, reduction='batchmean')", expected_none=per))
    big = (rng.choice([-1e4, 1e4, 0.0], size=(4, 3))).astype(dt)
    p_big = probs((4, 3)).astype(dt)
    v, per = kl_ref(big, p_big, "logits")
    cases.append(make_case(f"kl_from_logits_pm1e4_{dt}", "kl_div(from_logits=true)", {"preds": big, "targets": p_big},
                           v, "torch kl_div(log_softmax(x, 1), p, 'batchmean'), logits ±1e4"))
    # one distribution (1-D): the plain sum
    q1, p1 = probs((1, 7))[0].astype(dt), probs((1, 7))[0].astype(dt)
    cases.append(make_case(f"kl_1d_single_distribution_{dt}", "kl_div", {"preds": q1, "targets": p1},
                           kl_ref(q1, p1), "torch kl_div(log(q), p, reduction='sum') for one distribution"))
    # zeros in P (0 log 0 = 0), including where Q = 0 too (torch gives nan there: direct formula)
    pz = np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=dt)
    qz = np.array([[0.0, 0.25, 0.75], [0.5, 0.5, 0.0]], dtype=dt)
    pz64, qz64 = pz.astype(np.float64), qz.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pz64 > 0, pz64 * (np.log(pz64) - np.log(qz64)), 0.0)
    cases.append(make_case(f"kl_zero_p_zero_q_{dt}", "kl_div", {"preds": qz, "targets": pz}, terms.sum(1).mean(),
                           "direct float64 formula sum P log(P/Q), P = 0 terms = 0, mean over axis 0",
                           expected_none=terms.sum(1)))
    # P > 0 where Q = 0: infinite
    cases.append(make_case(f"kl_infinite_{dt}", "kl_div",
                           {"preds": np.array([[1.0, 0.0]], dtype=dt), "targets": np.array([[0.5, 0.5]], dtype=dt)},
                           float("inf"), "KL is +inf where P > 0 and Q = 0"))

    # ------------------------------------------------------------------ Jensen–Shannon (scipy)
    q = probs((7, 4)).astype(dt)
    p = probs((7, 4)).astype(dt)
    js = jensenshannon(p.astype(np.float64), q.astype(np.float64), axis=1) ** 2
    cases.append(make_case(f"js_probs_{dt}", "js_div", {"preds": q, "targets": p}, js.mean(),
                           "scipy.spatial.distance.jensenshannon(p, q, axis=1)**2, mean over axis 0",
                           expected_none=js))
    cases.append(make_case(f"js_probs_sum_{dt}", "js_div", {"preds": q, "targets": p}, js.sum(),
                           "scipy jensenshannon**2, summed", reduction="sum"))
    logits = rng.normal(0, 2, (6, 5)).astype(dt)
    qs = torch.softmax(t64(logits), 1).numpy()
    p = probs((6, 5)).astype(dt)
    js = jensenshannon(p.astype(np.float64), qs, axis=1) ** 2
    cases.append(make_case(f"js_from_logits_{dt}", "js_div(from_logits=true)", {"preds": logits, "targets": p},
                           js.mean(), "scipy jensenshannon(p, softmax(x))**2"))
    pd_ = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], dtype=dt)
    qd = np.array([[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]], dtype=dt)
    js = jensenshannon(pd_.astype(np.float64), qd.astype(np.float64), axis=1) ** 2
    cases.append(make_case(f"js_disjoint_and_equal_{dt}", "js_div", {"preds": qd, "targets": pd_}, js.mean(),
                           "scipy jensenshannon**2: log 2 for disjoint supports, 0 for equal"))

    # --------------------------------------------------------------------- Gaussian KL (mpmath)
    mpmath.mp.dps = 50

    def gkl(mu, lv):
        mu, lv = np.asarray(mu, dtype=np.float64), np.asarray(lv, dtype=np.float64)
        per = []
        for m_row, l_row in zip(mu.reshape(len(mu), -1), lv.reshape(len(lv), -1)):
            s = mpmath.mpf(0)
            for m, l in zip(m_row, l_row):
                m, l = mpmath.mpf(float(m)), mpmath.mpf(float(l))
                s += (m * m + mpmath.exp(l) - 1 - l) / 2
            per.append(float(s))
        return np.array(per)

    mu = rng.normal(0, 1, (8, 4)).astype(dt)
    lv = rng.normal(0, 0.5, (8, 4)).astype(dt)
    per = gkl(mu, lv)
    cases.append(make_case(f"gaussian_kl_{dt}", "gaussian_kl", {"mu": mu, "logvar": lv}, per.mean(),
                           "mpmath 0.5*sum(mu^2 + exp(lv) - 1 - lv), mean over N", expected_none=per))
    cases.append(make_case(f"gaussian_kl_sum_{dt}", "gaussian_kl", {"mu": mu, "logvar": lv}, per.sum(),
                           "mpmath, summed over N", reduction="sum"))
    mu = np.array([[1e-9, 0.0], [0.0, 0.0]], dtype=dt)
    lv = np.array([[1e-8, -1e-7], [1e-5, 0.0]], dtype=dt)
    per = gkl(mu, lv)
    cases.append(make_case(f"gaussian_kl_tiny_logvar_{dt}", "gaussian_kl", {"mu": mu, "logvar": lv}, per.mean(),
                           "mpmath: exp(lv) - 1 - lv at |lv| ~ 1e-8 needs no cancellation"))
    mu = np.array([[30.0, -20.0], [0.0, 0.0]], dtype=dt)
    lv = np.array([[-30.0, 20.0], [5.0, -5.0]], dtype=dt)
    per = gkl(mu, lv)
    cases.append(make_case(f"gaussian_kl_wide_{dt}", "gaussian_kl", {"mu": mu, "logvar": lv}, per.mean(),
                           "mpmath at large |mu| and |logvar|"))

write_cases("distribution", "tests/golden/gen_distribution.py",
            f"{torch_version()}, scipy {scipy.__version__}, mpmath {mpmath.__version__}", cases)
print(f"wrote {len(cases)} cases")
