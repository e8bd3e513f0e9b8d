"""Properties of the fast engine that must hold for any data (no timings here: see benchmarks/).

* the value does not depend on the worker-thread count or the chunk size (up to float64 rounding);
* the fused fast paths agree with the loss kernels;
* float32 inputs accumulate in float64 (a large mean offset does not cost accuracy).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lossctl
from lossctl import engine, fast

LOSSES = ["mse", "mae", "huber(delta=0.7)", "smooth_l1(beta=2)", "log_cosh", "quantile(q=0.2)"]


def _evaluate(p, t, losses, **kw):
    return [r.value for r in lossctl.evaluate(p, t, losses, provenance=False, **kw).results]


@pytest.fixture(autouse=True)
def _small_tasks(monkeypatch):
    monkeypatch.setattr(engine, "TASK_ELEMENTS", 256)
    monkeypatch.setattr(fast, "SUB_ELEMENTS", 64)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1), chunk=st.integers(1, 4000),
       threads=st.integers(1, 4), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([1e-6, 1.0, 1e3]))
def test_value_is_independent_of_threads_and_chunks(n, seed, chunk, threads, dtype, scale):
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(n) * scale).astype(dtype)
    t = (rng.standard_normal(n) * scale).astype(dtype)
    from lossctl.functional import compute as reference  # one chunk, in memory
    one_shot = [reference(name.split("(")[0], p, t, **_params(name)) for name in LOSSES]
    import os

    old = os.environ.get("LOSSCTL_THREADS")
    os.environ["LOSSCTL_THREADS"] = str(threads)
    try:
        got = _evaluate(p, t, LOSSES, chunk_size=chunk)
    finally:
        if old is None:
            del os.environ["LOSSCTL_THREADS"]
        else:
            os.environ["LOSSCTL_THREADS"] = old
    np.testing.assert_allclose(got, one_shot, rtol=1e-12 if dtype == np.float64 else 1e-6, atol=0)


def _params(text):
    if "(" not in text:
        return {}
    inner = text[text.index("(") + 1:-1]
    key, value = inner.split("=")
    return {key: float(value)}


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 2000), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_fused_paths_agree_with_the_kernels(n, seed, dtype):
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(n) * 3).astype(dtype)
    t = rng.standard_normal(n).astype(dtype)
    x = (rng.standard_normal(n) * 5).astype(dtype)
    y = (rng.random(n) < 0.4).astype(dtype)
    fused = _evaluate(p, t, LOSSES) + _evaluate(x, y, ["bce_with_logits", "focal"])
    engine.FAST_PATHS = False
    try:
        plain = _evaluate(p, t, LOSSES) + _evaluate(x, y, ["bce_with_logits", "focal"])
    finally:
        engine.FAST_PATHS = True
    np.testing.assert_allclose(fused, plain, rtol=1e-12 if dtype == np.float64 else 2e-5)


def test_float32_sums_accumulate_in_float64_with_a_large_offset():
    rng = np.random.default_rng(0)
    n = 400_000
    p = (1000.0 + rng.standard_normal(n)).astype(np.float32)  # residuals with a large mean offset
    t = rng.standard_normal(n).astype(np.float32) * 1e-3
    d = p.astype(np.float64) - t.astype(np.float64)
    exact = {"mse": np.mean(d * d), "mae": np.mean(np.abs(d))}
    got = dict(zip(exact, _evaluate(p, t, list(exact))))
    for name, value in exact.items():
        assert abs(got[name] - value) / value < 1e-6, name  # float32 rounding of p - t only
