"""LossState: the public state API, and per-sample statistics on the fused path vs the kernels."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import lossctl
import lossctl.functional
from lossctl import LossState, engine
from lossctl.errors import UsageError


def _pair(n: int, dtype=np.float32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n).astype(dtype), rng.normal(size=n).astype(dtype)


def test_update_merge_result_matches_evaluate():
    p, t = _pair(10_000)
    a = LossState("huber(delta=0.5) + 0.1*mae", worst=3).update(preds=p[:3000], targets=t[:3000])
    b = LossState("huber(delta=0.5) + 0.1*mae", worst=3).update(preds=p[3000:], targets=t[3000:], start=3000)
    merged = pickle.loads(pickle.dumps(b)).merge(a).result()
    ref = lossctl.evaluate(p, t, loss="huber(delta=0.5) + 0.1*mae", worst=3, provenance=False).results[0]
    assert merged.value == pytest.approx(ref.value, rel=1e-12)
    assert merged.samples == ref.samples == 10_000
    assert merged.summary.worst == ref.summary.worst
    assert [t.value for t in merged.terms] == pytest.approx([t.value for t in ref.terms], rel=1e-12)


def test_merge_leaves_operands_unchanged_and_refuses_other_expressions():
    p, t = _pair(100)
    a = LossState("mse").update(preds=p[:50], targets=t[:50])
    b = LossState("mse").update(preds=p[50:], targets=t[50:])
    before = (a.result().value, b.result().value)
    a.merge(b)
    assert (a.result().value, b.result().value) == before
    with pytest.raises(UsageError):
        a.merge(LossState("mae"))


def test_default_start_continues_after_the_samples_seen():
    p, t = _pair(10)
    t[7] += 100.0
    s = LossState("mae", worst=1).update(preds=p[:5], targets=t[:5]).update(preds=p[5:], targets=t[5:])
    assert s.result().summary.worst[0][0] == 7


@pytest.mark.parametrize("loss", ["mse", "mae", "huber(delta=0.3)"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_statistics_equal_the_kernels(monkeypatch, loss, dtype):
    """--worst on a fast loss: the C pass's statistics equal those from the kernels' values."""
    p, t = _pair(300_001, dtype, seed=3)
    t[123_456] += 50.0  # a clear worst sample, off the sub-chunk grid
    fast = LossState(loss, worst=5).update(preds=p, targets=t).result()
    monkeypatch.setattr(engine, "FAST_PATHS", False)
    slow = LossState(loss, worst=5).update(preds=p, targets=t).result()
    assert fast.summary.worst[0][0] == 123_456
    assert [i for i, _ in fast.summary.worst] == [i for i, _ in slow.summary.worst]
    tol = 1e-6 if dtype == np.float32 and "huber" in loss else 1e-12  # huber's two formulas round apart
    assert [v for _, v in fast.summary.worst] == pytest.approx([v for _, v in slow.summary.worst], rel=tol)
    for field in ("count", "mean", "min", "max"):
        assert getattr(fast.summary, field) == pytest.approx(getattr(slow.summary, field), rel=tol)
    assert fast.summary.std == pytest.approx(slow.summary.std, rel=max(tol, 1e-9))
    values = np.asarray(lossctl.functional.compute(loss.split("(")[0], p, t, reduction="none",
                                               **({"delta": 0.3} if "huber" in loss else {})), dtype=np.float64)
    for q, got in ((50, fast.summary.p50), (95, fast.summary.p95)):
        assert got == pytest.approx(np.percentile(values, q), rel=0.01)
    assert fast.summary.approx and fast.value == pytest.approx(slow.value, rel=tol)


def test_fused_statistics_fall_back_on_nan_with_omit():
    p, t = _pair(200_000, seed=5)
    p[150_000] = np.nan
    s = LossState("mse", worst=2, nan_policy="omit").update(preds=p, targets=t).result()
    assert s.omitted == 1 and s.summary.count == 199_999
    d = (p.astype(np.float64) - t)[~np.isnan(p)]
    assert s.summary.worst[0][1] == pytest.approx(np.max(d * d), rel=1e-6)


def test_summary_is_exact_for_small_inputs():
    p, t = _pair(1000)
    s = LossState("mae", worst=1).update(preds=p, targets=t).result().summary
    values = np.abs(p - t).astype(np.float64)
    assert not s.approx
    assert s.p50 == np.percentile(values, 50) and s.p95 == np.percentile(values, 95)
