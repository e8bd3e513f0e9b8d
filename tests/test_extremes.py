"""Extreme inputs (SPEC §4 "Numerics"): logits ±1e4, probabilities exactly 0 and 1, residuals of 1e4,
1e-8 and 1e-300. Every foundation loss must stay finite where the maths is finite, raise no
RuntimeWarning (overflow, divide by zero, invalid value), keep full relative precision in float64,
and stay within 1e-5 of the exact value in float32.

Expected values are exact, written with Python's ``math`` (correctly rounded log1p/exp), with the
derivation beside each case.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from lossctl.functional import compute

LOG2 = math.log(2.0)


def sp(x: float) -> float:
    """softplus(x) = log(1 + e^x), exactly."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# (id, loss, preds, targets, params, exact per-element values, float32 too?)
CASES = [
    # log cosh d = |d| - log 2 + log1p(e^{-2|d|}); at |d| = 1e4 the last term is 0 in float64.
    ("log_cosh_1e4", "log_cosh", [1e4, -1e4, 710.0, 1e300], [0.0, 0.0, 0.0, 0.0], {},
     [1e4 - LOG2, 1e4 - LOG2, 710.0 - LOG2, 1e300], False),
    ("log_cosh_1e4_f32", "log_cosh", [1e4, -1e4, 50.0], [0.0, 0.0, 0.0], {}, [1e4 - LOG2, 1e4 - LOG2, 50 - LOG2], True),
    # log cosh d = d²/2 - d⁴/12 + ...: at 1e-8 the d⁴ term is 1e-33 relative, so d²/2 to 1e-16.
    ("log_cosh_1e-8", "log_cosh", [1e-8, -3e-8, 0.0], [0.0, 0.0, 0.0], {}, [5e-17, 4.5e-16, 0.0], False),
    ("log_cosh_1e-3_f32", "log_cosh", [1e-3, -2e-3], [0.0, 0.0], {},
     [math.log1p(math.expm1(1e-3) ** 2 / (2 * math.exp(1e-3))),  # cosh d - 1 = expm1(d)² / (2 e^d)
      math.log1p(math.expm1(2e-3) ** 2 / (2 * math.exp(2e-3)))], True),
    # d = 1e-300: d²/2 = 5e-601 underflows to exactly 0 (the nearest double), no warning.
    ("log_cosh_1e-300", "log_cosh", [1e-300], [0.0], {}, [0.0], False),
    ("mse_1e4", "mse", [1e4, 0.0], [0.0, -1e4], {}, [1e8, 1e8], True),
    ("mse_1e-150", "mse", [1e-150, 3e-150], [0.0, 0.0], {}, [1e-300, 9e-300], False),
    ("mae_1e-300", "mae", [1e-300, -2e-300], [0.0, 0.0], {}, [1e-300, 2e-300], False),
    # huber: |d| >= delta → delta (|d| - delta/2)
    ("huber_1e4", "huber", [1e4, -1e4, 0.5], [0.0, 0.0, 0.0], {"delta": 1.0}, [1e4 - 0.5, 1e4 - 0.5, 0.125], True),
    ("huber_1e-300", "huber", [1e-150, 1e-300], [0.0, 0.0], {}, [0.5e-300, 0.0], False),
    # smooth_l1, tiny beta: d < beta → 0.5 d (d / beta); 0.5 d²/beta would underflow d² first.
    ("smooth_l1_tiny_beta", "smooth_l1", [5e-301, 2e-300], [0.0, 0.0], {"beta": 1e-300},
     [1.25e-301, 1.5e-300], False),
    ("smooth_l1_1e4", "smooth_l1", [1e4, -1e4], [0.0, 0.0], {"beta": 0.5}, [1e4 - 0.25, 1e4 - 0.25], True),
    ("quantile_1e4", "quantile", [1e4, -1e4], [0.0, 0.0], {"q": 0.9}, [0.1 * 1e4, 0.9 * 1e4], True),
    ("quantile_1e-300", "quantile", [1e-300, -1e-300], [0.0, 0.0], {"q": 0.25}, [0.75e-300, 0.25e-300], False),
    # bce at p = 0 and 1: log clamped at -100 (torch); 0·log 0 terms are 0·(-100) = 0.
    ("bce_0_and_1", "bce", [0.0, 1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0, 0.5], {},
     [0.0, 0.0, 100.0, 100.0, 50.0], True),
    # p = 1e-300: -log p = 690.8 is clamped to 100 (any p < e^-100); t = 0 → -log1p(-1e-300) = 1e-300.
    ("bce_1e-300", "bce", [1e-300, 1e-300, 1e-40], [1.0, 0.0, 1.0], {}, [100.0, 1e-300, -math.log(1e-40)], False),
    # bce_with_logits: t softplus(-x) + (1 - t) softplus(x).
    ("bce_with_logits_1e4", "bce_with_logits", [1e4, -1e4, 1e4, -1e4], [0.0, 1.0, 1.0, 0.0], {},
     [1e4, 1e4, 0.0, 0.0], True),
    # confident and right: softplus(-30) = log1p(e^-30) = 9.36e-14 (torch's (1-t)x + softplus(-x) cancels here)
    ("bce_with_logits_confident", "bce_with_logits", [-30.0, 30.0, -700.0], [0.0, 1.0, 0.0], {},
     [sp(-30.0), sp(-30.0), sp(-700.0)], False),
    ("bce_with_logits_confident_f32", "bce_with_logits", [-20.0, 15.0], [0.0, 1.0], {},
     [sp(-20.0), sp(-15.0)], True),
    ("bce_with_logits_pos_weight_1e4", "bce_with_logits", [-1e4, 1e4], [1.0, 0.0], {"pos_weight": 3.0},
     [3e4, 1e4], True),
    # cross_entropy: -log softmax; a ±1e4 gap gives 0 or the gap itself.
    ("cross_entropy_1e4", "cross_entropy", [[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], [0, 0, 2], {},
     [0.0, 2e4, 2e4 + LOG2], True),
    # confident: -log p_0 = log(1 + 2 e^-30) = log1p(2 e^-30) = 1.87e-13 (log(1 + s) would keep ~3 digits)
    ("cross_entropy_confident", "cross_entropy", [[30.0, 0.0, 0.0], [0.0, 40.0, 0.0]], [0, 1], {},
     [math.log1p(2 * math.exp(-30.0)), math.log1p(2 * math.exp(-40.0))], False),
    ("cross_entropy_confident_f32", "cross_entropy", [[12.0, 0.0, 0.0]], [0], {}, [math.log1p(2 * math.exp(-12.0))],
     True),
    ("nll_1e4", "nll", [[-1e4, 0.0], [0.0, -1e4]], [0, 0], {}, [1e4, 0.0], True),
    # binary focal: α_t (1 - p_t)^γ ce; wrong with |x| = 1e4: p_t = 0, ce = 1e4.
    ("focal_binary_1e4", "focal", [1e4, -1e4, 1e4, -1e4], [0.0, 1.0, 1.0, 0.0], {},
     [0.75 * 1e4, 0.25 * 1e4, 0.0, 0.0], True),
    # right and confident, x = 20, t = 1: 0.25 σ(-20)² softplus(-20)
    ("focal_binary_confident", "focal", [20.0, -20.0], [1.0, 0.0], {},
     [0.25 * sig(-20.0) ** 2 * sp(-20.0), 0.75 * sig(-20.0) ** 2 * sp(-20.0)], True),
    ("focal_multiclass_1e4", "focal", [[1e4, -1e4], [-1e4, 1e4]], [0, 0], {"gamma": 2.0}, [0.0, 0.25 * 2e4], True),
    # 1 - p_0 = 2e^-12 / (1 + 2e^-12) = -expm1(-log1p(2e^-12)); loss = α (1 - p)^γ (-log p)
    ("focal_multiclass_confident", "focal", [[12.0, 0.0, 0.0]], [0], {"gamma": 1.0, "alpha": 0.5},
     [0.5 * (2 * math.exp(-12) / (1 + 2 * math.exp(-12))) * math.log1p(2 * math.exp(-12))], True),
    ("hinge_1e4", "hinge", [1e4, -1e4, 1e300], [1.0, 1.0, -1.0], {}, [0.0, 1e4 + 1, 1e300], False),
    ("hinge_multiclass_1e4", "hinge", [[1e4, -1e4, 0.0], [1e4, -1e4, 0.0]], [0, 1], {}, [0.0, 2e4 + 1], True),
    # multi_margin: Σ_{j≠y} max(0, 1 - x_y + x_j) / C
    ("multi_margin_1e4", "multi_margin", [[1e4, -1e4, 0.0], [1e4, -1e4, 0.0]], [0, 1], {},
     [0.0, ((2e4 + 1) + (1e4 + 1)) / 3], True),
]


def _run(loss, preds, targets, params, reduction):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            return compute(loss, preds, targets, reduction=reduction, **params)


def _targets(targets, dtype):
    t = np.asarray(targets)
    return t.astype(dtype) if t.dtype.kind == "f" else t


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_float64_exact_no_warning(case):
    _, loss, preds, targets, params, exact, _ = case
    p, t = np.asarray(preds, dtype=np.float64), _targets(targets, np.float64)
    values = np.asarray(_run(loss, p, t, params, "none"), dtype=np.float64).reshape(-1)
    assert np.isfinite(values).all(), values
    np.testing.assert_allclose(values, exact, rtol=1e-12, atol=0)
    mean = _run(loss, p, t, params, "mean")
    assert math.isfinite(mean)
    assert math.isclose(mean, math.fsum(exact) / len(exact), rel_tol=1e-12, abs_tol=0)
    assert not any(math.copysign(1.0, v) < 0 for v in values), "negative zero in the values"


@pytest.mark.parametrize("case", [c for c in CASES if c[6]], ids=[c[0] for c in CASES if c[6]])
def test_float32_within_1e5_of_exact(case):
    _, loss, preds, targets, params, exact, _ = case
    p32 = np.asarray(preds, dtype=np.float32)
    exact = np.asarray(exact)
    values = np.asarray(_run(loss, p32, _targets(targets, np.float32), params, "none"), dtype=np.float64).reshape(-1)
    assert np.isfinite(values).all(), values
    np.testing.assert_allclose(values, exact, rtol=1e-5, atol=0)
    mean = _run(loss, p32, _targets(targets, np.float32), params, "mean")
    assert math.isclose(mean, exact.mean(), rel_tol=1e-5)


@pytest.mark.parametrize("loss,preds,targets", [
    ("bce_with_logits", [-1e4, 1e4], [[0.0, 1.0]]),
    ("cross_entropy", [[1e4, -1e4]], [1]),
])
def test_float32_and_float64_agree_at_1e4(loss, preds, targets):
    p64 = np.asarray(preds, dtype=np.float64).reshape(np.asarray(targets).shape if loss != "cross_entropy" else (1, 2))
    t = np.asarray(targets, dtype=np.float64 if loss != "cross_entropy" else np.int64)
    v64 = _run(loss, p64, t, {}, "mean")
    v32 = _run(loss, p64.astype(np.float32), t.astype(np.float32) if t.dtype.kind == "f" else t, {}, "mean")
    assert math.isclose(v32, v64, rel_tol=1e-5)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile"])
def test_regression_large_random_residuals_finite(loss):
    rng = np.random.default_rng(0)
    p = rng.normal(size=1000) * 1e4
    for dtype in (np.float64, np.float32):
        value = _run(loss, p.astype(dtype), np.zeros(1000, dtype=dtype), {}, "mean")
        assert math.isfinite(value) and value > 0


@pytest.mark.parametrize("loss", ["bce_with_logits", "focal"])
def test_binary_logits_1e4_random_finite(loss):
    rng = np.random.default_rng(1)
    x = np.where(rng.random(500) > 0.5, 1e4, -1e4) * rng.random(500)
    t = (rng.random(500) > 0.5).astype(np.float64)
    for dtype in (np.float64, np.float32):
        assert math.isfinite(_run(loss, x.astype(dtype), t.astype(dtype), {}, "mean"))


@pytest.mark.parametrize("loss", ["cross_entropy", "focal", "hinge", "multi_margin"])
def test_multiclass_logits_1e4_random_finite(loss):
    rng = np.random.default_rng(2)
    x = rng.choice([-1e4, 0.0, 1e4], size=(200, 5))
    y = rng.integers(0, 5, 200)
    for dtype in (np.float64, np.float32):
        assert math.isfinite(_run(loss, x.astype(dtype), y, {}, "mean"))


@pytest.mark.parametrize("loss,preds,targets", [
    ("mse", [1e200, 1.0], [0.0, 0.0]),  # the engine's fused path sums under np.errstate (lossctl/fast.py)
    ("huber(delta=1e200)", [1e200, 1.0], [-1e200, 0.0]),
    ("hinge(squared=true)", [-1e200, 1.0], [1.0, 1.0]),
    ("multi_margin(p=2)", [[1e200, -1e200]], [1]),
])
def test_infinite_results_are_inf_without_numpy_warnings(loss, preds, targets):
    # The true value (≥ 1e400) is beyond float64: inf is the correctly rounded answer, reported by
    # lossctl as non-finite; NumPy's overflow RuntimeWarning would only be noise on stderr.
    name, _, rest = loss.partition("(")
    params = {}
    if rest:
        key, value = rest.rstrip(")").split("=")
        params[key] = True if value == "true" else (int(value) if value.isdigit() else float(value))
    value = _run(name, np.asarray(preds), np.asarray(targets), params, "mean")
    assert value == math.inf


@pytest.mark.parametrize("loss,preds,targets,params", [
    ("mse", [1e200, 1.0], [0.0, 0.0], {}),
    ("huber", [1e200, 1.0], [-1e200, 0.0], {"delta": 1e200}),
    ("hinge", [-1e200, 1.0], [1.0, 1.0], {"squared": True}),
    ("multi_margin", [[1e200, -1e200]], [1], {"p": 2}),
])
def test_kernels_overflow_to_inf_without_numpy_warnings(loss, preds, targets, params):
    # reduction='none' runs the kernels themselves (the engine's fused fast path only does mean/sum).
    values = _run(loss, np.asarray(preds), np.asarray(targets), params, "none")
    assert values[0] == math.inf
