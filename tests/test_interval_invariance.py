"""Every built-in loss (the registry-wide cases of test_state_invariance): its confidence interval,
by every method, is the same however the samples are chunked, ordered into a merge tree, pickled,
or given as non-contiguous rows (``rows=``, as slices feed sub-states), to 1e-12 relative; and no
loss crashes or gives NaN bounds (an interval is either two finite numbers or ``None`` with a note)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lossctl import LossState
from lossctl.intervals import CIConfig
from tests.test_state_invariance import SPLITTABLE, Case, _need, n_samples, random_cuts, roundtrip, sub_rows, take

METHODS = ("auto", "jackknife", "bootstrap")


def _cfg(method: str) -> CIConfig:
    return CIConfig(method=method, resamples=25, seed=11)


def _split(case: Case, inputs, rng, cfg: CIConfig) -> LossState:
    n = n_samples(case, inputs)
    chunks = list(itertools.pairwise(random_cuts(rng, n, sub_rows(inputs))))
    states = [roundtrip(LossState(case.expr, ci=cfg).update(start=a, **take(case, inputs, slice(a, b))))
              for a, b in (chunks[i] for i in rng.permutation(len(chunks)))]
    while len(states) > 1:
        i, j = sorted(rng.choice(len(states), 2, replace=False))
        b, a = states.pop(j), states.pop(i)
        states.append(a.merge(b) if rng.uniform() < 0.5 else b.merge(a))
    return states[0]


def _same(a, b, what: str) -> None:
    assert a.method == b.method, what
    assert (a.low is None) == (b.low is None), (what, a, b)
    for k in ("low", "high", "se"):
        x, y = getattr(a, k), getattr(b, k)
        if y is None:
            assert x is None, (what, k)
            continue
        assert math.isfinite(x) and math.isfinite(y), (what, k, x, y)
        assert abs(x - y) <= 1e-12 * max(abs(y), 1e-300) + 1e-15, (what, k, x, y)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", SPLITTABLE)
def test_interval_same_under_any_split_and_rows(case, method):
    case = _need(case)
    cfg = _cfg(method)
    inputs = case.inputs()
    ref = LossState(case.expr, ci=cfg).update(**inputs).result().ci
    _same(_split(case, inputs, np.random.default_rng(2), cfg).result().ci, ref, "split/merge")
    n = n_samples(case, inputs)
    perm = np.random.default_rng(3).permutation(n)
    a, b = np.sort(perm[: n // 3]), np.sort(perm[n // 3:])
    sliced = LossState(case.expr, ci=cfg).update(rows=b, **take(case, inputs, b)).merge(
        LossState(case.expr, ci=cfg).update(rows=a, **take(case, inputs, a)))
    _same(sliced.result().ci, ref, "rows=")


@pytest.mark.parametrize("expr", ["mse", "huber(delta=0.5)", "mae + 0.5*mse", "bce_with_logits", "dice"])
def test_interval_same_with_fast_paths_on_and_off(expr, monkeypatch):
    # rows enough for the C kernels' per-sample statistics (beyond SampleStats' exact limit)
    rng = np.random.default_rng(5)
    n = 9000
    if expr == "dice":
        p, t = rng.uniform(size=n), (rng.uniform(size=n) > 0.5).astype(np.float64)
    elif expr == "bce_with_logits":
        p, t = rng.normal(size=n), (rng.uniform(size=n) > 0.5).astype(np.float64)
    else:
        p, t = rng.normal(size=n), rng.normal(size=n)
    fast = LossState(expr, ci=CIConfig()).update(preds=p, targets=t).result().ci
    monkeypatch.setattr("lossctl.engine.FAST_PATHS", False)
    slow = LossState(expr, ci=CIConfig()).update(preds=p, targets=t).result().ci
    assert fast.method == slow.method
    for k in ("low", "high", "se"):
        assert getattr(fast, k) == pytest.approx(getattr(slow, k), rel=1e-10)
