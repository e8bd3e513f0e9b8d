"""Golden values for cox_ph, the negative Cox partial log-likelihood (writes tests/golden/survival.json).

Reference: an independent direct O(N²) evaluation, per event i the risk set {j: t_j >= t_i}
(Breslow ties) and torch.logsumexp over it in float64 (float32 cases: float64 maths on the
float32 values); mean = sum over events / number of events; reduction=none: the term of each event,
0 for censored samples. The ±1e4 case is also checked against mpmath at 50 digits. No survival
library (lifelines, scikit-survival, pycox, xgboost) was importable when these were generated, so
there is no cross-check against one; the doctest case (log 3 + log 2) / 2 is checked by hand.
Run: python tests/golden/gen_survival.py
"""

from __future__ import annotations

import mpmath
import numpy as np
import torch
from _gen_common import make_case, torch_version, write_cases

rng = np.random.default_rng(21)
cases = []


def cox_ref(eta, time, event):
    """Per-sample terms event_i * (logsumexp_{t_j >= t_i} eta_j - eta_i), by a loop over the events."""
    eta, time, event = (np.asarray(v, dtype=np.float64) for v in (eta, time, event))
    per = np.zeros(len(eta))
    for i in range(len(eta)):
        if event[i] == 1:
            risk = torch.as_tensor(eta[time >= time[i]])
            per[i] = float(torch.logsumexp(risk, dim=0)) - eta[i]
    return per, float(per.sum() / event.sum()) if event.sum() else float("nan")


def cox_mp(eta, time, event):
    mpmath.mp.dps = 50
    total = mpmath.mpf(0)
    for i in range(len(eta)):
        if event[i] == 1:
            s = mpmath.fsum(mpmath.exp(mpmath.mpf(float(eta[j]))) for j in range(len(eta)) if time[j] >= time[i])
            total += mpmath.log(s) - mpmath.mpf(float(eta[i]))
    return float(total / sum(event))


for dt in ("float64", "float32"):
    n = 25
    x = rng.normal(0, 1, (n, 3))
    beta = np.array([0.8, -0.5, 0.3])
    eta = (x @ beta + rng.normal(0, 0.3, n)).astype(dt)
    time = rng.exponential(1.0 / np.exp(x @ beta)).round(2).astype(dt)  # rounded: some ties
    event = (rng.random(n) < 0.7).astype(dt)
    inputs = {"preds": eta, "targets": time, "event": event}
    per, mean = cox_ref(eta, time, event)
    cases.append(make_case(f"cox_ph_{dt}", "cox_ph", inputs, mean,
                           "direct O(N^2) risk sets with torch.logsumexp (Breslow ties)", expected_none=per))
    cases.append(make_case(f"cox_ph_sum_{dt}", "coxph", inputs, per.sum(), "direct O(N^2), summed",
                           reduction="sum"))
    tied = np.array([1, 1, 2, 2, 2, 3, 5, 5], dtype=dt)
    eta_t = rng.normal(0, 1, 8).astype(dt)
    ev_t = np.array([1, 0, 1, 1, 0, 1, 1, 1], dtype=dt)
    per, mean = cox_ref(eta_t, tied, ev_t)
    cases.append(make_case(f"cox_ph_ties_{dt}", "cox_ph", {"preds": eta_t, "targets": tied, "event": ev_t}, mean,
                           "direct O(N^2), heavy ties (Breslow: tied samples in each other's risk set)",
                           expected_none=per))
    ev_int = np.array([1, 0, 1, 0, 1, 1], dtype=np.int64)
    eta_h = np.array([1e4, -1e4, 3.0, 1e4 - 1, -1e4, 0.5], dtype=dt)
    t_h = np.array([0.5, 1.0, 1.5, 2.0, 2.5, -3.0], dtype=dt)  # times may be any real
    per, mean = cox_ref(eta_h, t_h, ev_int)
    mp = cox_mp(eta_h.astype(np.float64), t_h.astype(np.float64), ev_int)
    assert abs(mean - mp) <= 1e-12 * abs(mp), (mean, mp)
    cases.append(make_case(f"cox_ph_extreme_{dt}", "cox_ph", {"preds": eta_h, "targets": t_h, "event": ev_int},
                           mean, "direct O(N^2) with torch.logsumexp, eta = +-1e4; equal to mpmath at 50 digits",
                           expected_none=per))
    ev0 = np.zeros(4, dtype=dt)
    cases.append(make_case(f"cox_ph_no_events_{dt}", "cox_ph",
                           {"preds": eta[:4], "targets": time[:4], "event": ev0}, float("nan"),
                           "no events: the mean over events is 0/0 = NaN"))
cases.append(make_case("cox_ph_hand", "cox_ph", {"preds": np.zeros(3), "targets": np.array([1.0, 2.0, 3.0]),
                                                 "event": np.array([1.0, 1.0, 0.0])},
                       (np.log(3) + np.log(2)) / 2, "by hand: risk sets {1,2,3} and {2,3}, all eta 0"))

path = write_cases("survival", "tests/golden/gen_survival.py", torch_version() + ", mpmath " + mpmath.__version__,
                   cases)
print(f"wrote {len(cases)} cases to {path}")
