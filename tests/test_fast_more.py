"""The fused fast paths of the multi-input and distribution losses agree with their kernels.

Each case is evaluated with the fast paths on (small windows and sub-chunks, several threads and
chunk sizes) and off; float32 within 1e-5 relative, float64 within 1e-10. Edge cases that the
fused paths hand back to the kernels (zeros in P, p exactly 0 or 1, {0, 1} hinge labels, NaN,
out-of-domain values) are included. No timings here: see benchmarks/.
"""

from __future__ import annotations

import numpy as np
import pytest

import lossctl
from lossctl import engine, fast
from lossctl.errors import InputError


@pytest.fixture(autouse=True)
def _small_tasks(monkeypatch):
    monkeypatch.setattr(engine, "TASK_ELEMENTS", 4096)
    monkeypatch.setattr(fast, "SUB_ELEMENTS", 512)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _case(loss, dtype, seed, n=2003):
    rng = np.random.default_rng(seed)
    f = np.dtype(dtype)
    base = loss.split("(")[0]
    c = 7
    if base == "msle":
        return dict(preds=(rng.random(n) * 3 - 0.5).astype(f), targets=(rng.random(n) * 3).astype(f))
    if base == "mape":
        t = rng.standard_normal(n) * 3
        if seed % 2:
            t[::13] = 0.0
        return dict(preds=rng.standard_normal(n).astype(f), targets=t.astype(f))
    if base == "bce":
        p = 1 / (1 + np.exp(-rng.standard_normal(n) * 3))
        if seed % 2:
            p[::5], p[1::5] = 0.0, 1.0
        return dict(preds=p.astype(f), targets=(rng.random(n) < 0.3).astype(f))
    if base == "hinge":
        t = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        return dict(preds=rng.standard_normal(n).astype(f), targets=(t if seed % 2 else (t > 0)).astype(f))
    if base == "multi_margin":
        return dict(preds=rng.standard_normal((n, c)).astype(f), targets=rng.integers(0, c, n))
    if base in ("kl_div", "js_div"):
        q, p = _softmax(rng.standard_normal((n, c)) * 2), _softmax(rng.standard_normal((n, c)) * 2)
        if seed % 2:
            p.reshape(-1)[::5] = 0.0
            q.reshape(-1)[1::9] = 0.0
        if "log_input" in loss:
            q = np.log(_softmax(rng.standard_normal((n, c))))
        return dict(preds=q.astype(f), targets=p.astype(f))
    if base == "gaussian_kl":
        lv = rng.standard_normal((n, c)) * (1e-4 if seed % 2 else 1.0)
        lv.reshape(-1)[::11] = 0.0
        return dict(mu=rng.standard_normal((n, c)).astype(f), logvar=lv.astype(f))
    if base == "poisson_nll":
        return dict(preds=(rng.standard_normal(n) * 0.5).astype(f), targets=rng.poisson(2.0, n).astype(f))
    if base == "gaussian_nll":
        v = rng.random(n)
        if seed % 2:
            v[::7] = 0.0
        return dict(preds=rng.standard_normal(n).astype(f), targets=rng.standard_normal(n).astype(f),
                    var=v.astype(f))
    if base == "contrastive":
        d = 16
        return dict(x1=(rng.standard_normal((n, d)) * 0.2).astype(f), x2=(rng.standard_normal((n, d)) * 0.2).astype(f),
                    targets=(rng.random(n) < 0.5).astype(f))
    if base == "triplet":
        d = 16
        return {k: rng.standard_normal((n, d)).astype(f) for k in ("anchor", "positive", "negative")}
    if base == "cosine_embedding":
        d = 16
        x1 = rng.standard_normal((n, d))
        if seed % 2:
            x1[::17] = 0.0
        return dict(x1=x1.astype(f), x2=rng.standard_normal((n, d)).astype(f),
                    targets=np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(f))
    if base in ("dice", "iou", "tversky"):
        return dict(preds=rng.random((n, 9)).astype(f), targets=(rng.random((n, 9)) < 0.3).astype(f))
    raise KeyError(loss)


LOSSES = ["msle", "mape", "bce", "hinge", "hinge(squared=true, margin=0.5)", "multi_margin", "multi_margin(p=2, margin=0.7)",
          "kl_div", "kl_div(log_input=true)", "js_div", "gaussian_kl", "poisson_nll", "gaussian_nll",
          "gaussian_nll(full=true, eps=0.2)", "contrastive(margin=0.5)", "triplet", "triplet(margin=0.3, eps=0)",
          "cosine_embedding", "cosine_embedding(margin=0.2)", "dice", "iou",
          "tversky(alpha=0.3, beta=0.7)"]


def _value(loss, arrays, monkeypatch, fast_paths, **kw):
    monkeypatch.setattr(engine, "FAST_PATHS", fast_paths)
    return lossctl.evaluate(loss=loss, inputs=arrays, provenance=False, **kw).results[0].value


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", LOSSES)
def test_fused_matches_kernel(loss, dtype, monkeypatch):
    tol = 1e-5 if dtype == "float32" else 1e-10
    for seed in (0, 1):
        arrays = _case(loss, dtype, seed)
        for reduction in ("mean", "sum"):
            ref = _value(loss, arrays, monkeypatch, False, reduction=reduction)
            for kw in ({}, {"chunk_size": 333}):
                got = _value(loss, arrays, monkeypatch, True, reduction=reduction, **kw)
                assert got == pytest.approx(ref, rel=tol, abs=1e-300), (loss, dtype, seed, reduction, kw)


def test_fused_paths_are_taken(monkeypatch):
    taken = []
    orig = fast.run_task

    def spy(*a, **k):
        out = orig(*a, **k)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(fast, "run_task", spy)
    for loss in LOSSES:
        taken.clear()
        lossctl.evaluate(loss=loss, inputs=_case(loss, "float32", 2), provenance=False)
        assert taken and all(taken), loss


@pytest.mark.parametrize("loss, name, bad", [
    ("msle", "preds", -1.0), ("bce", "preds", 1.5), ("bce", "targets", -0.1), ("kl_div", "targets", 2.0), ("js_div", "preds", -1.0),
    ("gaussian_nll", "var", -1.0), ("poisson_nll", "targets", -3.0), ("dice", "preds", 1.2)])
def test_out_of_domain_values_still_raise(loss, name, bad, monkeypatch):
    arrays = _case(loss, "float32", 0)
    arrays[name].reshape(-1)[1500] = bad
    with pytest.raises(InputError) as fast_err:
        _value(loss, arrays, monkeypatch, True)
    with pytest.raises(InputError) as slow_err:
        _value(loss, arrays, monkeypatch, False)
    assert str(fast_err.value) == str(slow_err.value)


@pytest.mark.parametrize("loss", ["bce", "kl_div", "gaussian_kl", "contrastive", "dice"])
def test_nan_policies_match(loss, monkeypatch):
    arrays = _case(loss, "float64", 0)
    key = "mu" if loss == "gaussian_kl" else ("x1" if loss == "contrastive" else "preds")
    arrays[key].reshape(-1)[1000] = np.nan
    for policy in ("omit", "propagate"):
        a = _value(loss, arrays, monkeypatch, True, nan_policy=policy)
        b = _value(loss, arrays, monkeypatch, False, nan_policy=policy)
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-10)
