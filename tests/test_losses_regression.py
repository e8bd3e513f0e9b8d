"""Regression losses on small cases worked out by hand (derivation beside each), their parameter
ranges, shapes, integer inputs, empty inputs and the NaN policy, through the API and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cli_support import assert_usage_error as _assert_usage_error
from cli_support import evaluate_arrays as _cli

import lossctl
from lossctl import functional as F

# ------------------------------------------------------------------------------ hand-derived values


def test_mse_by_hand():
    # d = [0, 0, -2] → d² = [0, 0, 4]; mean 4/3, sum 4
    assert F.mse([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / 3, rel=1e-15)
    assert F.mse([1, 2, 3], [1, 2, 5], reduction="sum") == 4.0
    np.testing.assert_array_equal(F.l2([1, 2, 3], [1, 2, 5], reduction="none"), [0.0, 0.0, 4.0])


def test_mae_by_hand():
    # |d| = [0, 0, 2] → mean 2/3; [-1.5, 2.5] → mean 2
    assert F.mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3, rel=1e-15)
    assert F.l1([-1.5, 2.5], [0, 0]) == 2.0


def test_huber_by_hand():
    # delta = 1, d = [0.5, 2, -3]: 0.5·0.25 = 0.125; 1·(2 - 0.5) = 1.5; 1·(3 - 0.5) = 2.5 → mean 4.125/3
    np.testing.assert_allclose(F.huber([0.5, 2, -3], [0, 0, 0], reduction="none"), [0.125, 1.5, 2.5], rtol=1e-15)
    assert F.huber([0.5, 2, -3], [0, 0, 0]) == pytest.approx(1.375, rel=1e-15)
    # delta = 0.5, d = [0.25, 2]: 0.5·0.0625 = 0.03125; 0.5·(2 - 0.25) = 0.875 → mean 0.453125
    assert F.huber([0.25, 2], [0, 0], delta=0.5) == pytest.approx(0.453125, rel=1e-15)
    # at |d| = delta both branches give delta²/2: d = 0.5 → 0.125
    assert F.huber([0.5], [0], delta=0.5) == pytest.approx(0.125, rel=1e-15)


def test_smooth_l1_by_hand():
    # beta = 2, d = [1, 3]: 0.5·1/2 = 0.25; 3 - 1 = 2 → mean 1.125
    assert F.smooth_l1([1, 3], [0, 0], beta=2.0) == pytest.approx(1.125, rel=1e-15)
    # beta = 0 is L1: [1, 3] → 2
    assert F.smooth_l1([1, -3], [0, 0], beta=0.0) == 2.0
    # smooth_l1(beta) = huber(delta=beta) / beta, element-wise
    d = np.array([0.1, 0.7, 1.9, -4.0])
    np.testing.assert_allclose(F.smooth_l1(d, 0 * d, beta=0.8, reduction="none"),
                               F.huber(d, 0 * d, delta=0.8, reduction="none") / 0.8, rtol=1e-15)


def test_log_cosh_by_hand():
    # cosh(ln 2) = (2 + 1/2)/2 = 5/4 and cosh(ln 3) = (3 + 1/3)/2 = 5/3
    values = F.log_cosh([math.log(2), -math.log(3), 0.0], [0, 0, 0], reduction="none")
    np.testing.assert_allclose(values, [math.log(1.25), math.log(5 / 3), 0.0], rtol=1e-15)
    assert F.logcosh([math.log(2)], [0]) == pytest.approx(math.log(1.25), rel=1e-15)


def test_quantile_by_hand():
    # q = 0.9, t - p = [1, -1, 0]: 0.9·1 = 0.9; (1 - 0.9)·1 = 0.1; 0 → mean 1/3
    assert F.quantile([0, 2, 1], [1, 1, 1], q=0.9) == pytest.approx(1 / 3, rel=1e-15)
    # q = 0.5 is half the MAE
    d = np.array([0.3, -1.2, 2.0])
    assert F.pinball(d, 0 * d) == pytest.approx(F.mae(d, 0 * d) / 2, rel=1e-15)
    # q = 0: only over-prediction costs; q = 1: only under-prediction
    assert F.quantile([2, 0], [1, 1], q=0.0) == pytest.approx(0.5)
    assert F.quantile([2, 0], [1, 1], q=1.0) == pytest.approx(0.5)
    assert F.quantile([2, 2], [1, 1], q=1.0) == 0.0


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile"])
def test_integer_inputs_are_not_truncated_or_wrapped(loss, dtype):
    # Before the fix log_cosh returned int values ([0, 2] for d = [-1, 3]) and uint8 0 - 3 wrapped to 253.
    p, t = np.array([0, 3], dtype=dtype), np.array([1, 0], dtype=dtype)
    want = F.compute(loss, p.astype(np.float64), t.astype(np.float64), reduction="none")
    got = F.compute(loss, p, t, reduction="none")
    assert got.dtype.kind == "f"
    np.testing.assert_allclose(got, want, rtol=1e-15)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile"])
def test_n_and_n1_shapes_are_the_same(loss):
    rng = np.random.default_rng(3)
    p, t = rng.normal(size=9), rng.normal(size=9)
    want = F.compute(loss, p, t)
    assert F.compute(loss, p[:, None], t) == pytest.approx(want, rel=1e-15)
    assert F.compute(loss, p, t[:, None]) == pytest.approx(want, rel=1e-15)
    assert F.compute(loss, p[:, None], t[:, None]) == pytest.approx(want, rel=1e-15)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile"])
def test_float32_in_float32_out_precision(loss):
    rng = np.random.default_rng(4)
    p, t = rng.normal(size=50).astype(np.float32), rng.normal(size=50).astype(np.float32)
    exact = F.compute(loss, p.astype(np.float64), t.astype(np.float64))
    assert F.compute(loss, p, t) == pytest.approx(exact, rel=1e-5)


# --------------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("expr,needle", [
    ("huber(delta=-1)", "delta"),
    ("huber(delta=0)", "delta"),
    ("smooth_l1(beta=-1)", "beta"),
    ("quantile(q=1.5)", "q"),
    ("quantile(q=-0.1)", "q"),
    ("huber(delta=true)", "delta"),
    ("huber(dleta=1)", "did you mean"),
])
def test_parameter_out_of_range_is_exit_2(runner, tmp_path, expr, needle):
    result = _cli(runner, tmp_path, [1.0, 2.0], [1.5, 2.5], "--loss", expr)
    _assert_usage_error(result, needle)


def test_smooth_l1_beta_zero_is_valid(runner, tmp_path):
    result = _cli(runner, tmp_path, [1.0, 2.0], [1.5, 4.0], "--loss", "smooth_l1(beta=0)", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["value"] == pytest.approx(1.25)  # mean(0.5, 2)


def test_shape_mismatch_names_both_shapes(runner, tmp_path):
    result = _cli(runner, tmp_path, np.zeros(3), np.zeros(4), "--loss", "mse")
    _assert_usage_error(result, "(3,)", "(4,)")


def test_n1_vs_n_through_the_cli(runner, tmp_path):
    result = _cli(runner, tmp_path, np.array([[1.0], [2.0]]), np.array([0.0, 0.0]), "--loss", "mse", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["value"] == pytest.approx(2.5)  # mean(1, 4)


@pytest.mark.parametrize("loss", ["mse", "huber", "log_cosh", "quantile(q=0.2)"])
def test_empty_input_is_exit_2(runner, tmp_path, loss):
    result = _cli(runner, tmp_path, np.zeros(0), np.zeros(0), "--loss", loss)
    _assert_usage_error(result)


# ------------------------------------------------------------------------------------ NaN policy

NAN_P = np.array([1.0, np.nan, 3.0, 4.0])
NAN_T = np.array([0.0, 0.0, 1.0, 2.0])


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile"])
def test_nan_policy_raise(runner, tmp_path, loss):
    result = _cli(runner, tmp_path, NAN_P, NAN_T, "--loss", loss)
    _assert_usage_error(result, "1 NaN", "sample 1", "preds.npy")


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile"])
def test_nan_policy_omit_drops_the_element(loss):
    report = lossctl.evaluate(NAN_P, NAN_T, loss=loss, nan_policy="omit", provenance=False)
    keep = ~np.isnan(NAN_P)
    assert report.results[0].value == pytest.approx(F.compute(loss, NAN_P[keep], NAN_T[keep]), rel=1e-15)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile"])
def test_nan_policy_propagate_gives_nan(loss):
    report = lossctl.evaluate(NAN_P, NAN_T, loss=loss, nan_policy="propagate", provenance=False)
    assert math.isnan(report.results[0].value)
    values = F.compute(loss, NAN_P, NAN_T, reduction="none")
    assert np.isnan(values[1]) and np.isfinite(values[[0, 2, 3]]).all()


def test_nan_policy_omit_through_the_cli_reports_the_count(runner, tmp_path):
    result = _cli(runner, tmp_path, NAN_P, NAN_T, "--loss", "mae", "--nan-policy", "omit", "--format", "json")
    assert result.exit_code == 0, result.stderr
    res = json.loads(result.stdout)["results"][0]
    assert res["value"] == pytest.approx(5 / 3)  # mean(1, 2, 2) over the 3 kept elements
    assert res["omitted"] == 1


def test_msle_and_mape_by_hand(runner, tmp_path):
    # msle: log1p(e - 1) = 1, log1p(0) = 0 → mean(1², 0²) = 0.5
    assert F.msle(np.array([math.e - 1, 0.0]), np.array([0.0, 0.0])) == pytest.approx(0.5, rel=1e-15)
    # mape: |110 - 100|/100 = 0.1, |45 - 50|/50 = 0.1 → 0.1 (a fraction, as scikit-learn)
    assert F.mape(np.array([110.0, 45.0]), np.array([100.0, 50.0])) == pytest.approx(0.1, rel=1e-15)
    _assert_usage_error(_cli(runner, tmp_path, [-1.0, 0.5], [0.0, 0.0], "--loss", "msle"), "preds", "> -1")
