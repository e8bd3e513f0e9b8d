"""Gates (lossctl.gates): --fail-above, --baseline/--max-increase, missing losses, NaN, exit codes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lossctl.cli import app
from lossctl.errors import UsageError
from lossctl.gates import (
    Baseline,
    BaselineEntry,
    FailAbove,
    Tolerance,
    apply_gates,
    baseline_check,
    baseline_from_dict,
    change_pct,
    fail_above_check,
    load_baseline,
    match_loss,
    parse_fail_above,
    parse_max_increase,
)
from lossctl.result import LossResult, Report, TermResult


def _res(loss: str, value: float, terms: list[tuple[str, float]] | None = None, reduction: str = "mean") -> LossResult:
    terms = terms or [(loss.split("(")[0], value)]
    return LossResult(loss=loss, canonical=loss, value=value, reduction=reduction,
                      terms=[TermResult(n, 1.0, {}, v, reduction) for n, v in terms])


def _report(*results: LossResult) -> Report:
    return Report(version="0", inputs={}, results=list(results))


# ---------------------------------------------------------------------------------- parsing


def test_parse_fail_above_splits_at_last_equals():
    assert parse_fail_above("huber(delta=0.5)=0.2") == FailAbove("huber(delta=0.5)", 0.2)
    assert parse_fail_above(" mse = 1e-3 ") == FailAbove("mse", 1e-3)
    assert parse_fail_above("mse=-1").limit == -1.0


@pytest.mark.parametrize("bad", ["mse", "=0.3", "mse=", "mse=abc", "mse=nan", "mse=true"])
def test_parse_fail_above_rejects(bad):
    with pytest.raises(UsageError):
        parse_fail_above(bad)


def test_parse_max_increase():
    assert parse_max_increase("0.01") == Tolerance(absolute=0.01)
    assert parse_max_increase("5%") == Tolerance(relative=0.05)
    assert parse_max_increase(["5%", "0.001"]) == Tolerance(absolute=0.001, relative=0.05)
    assert parse_max_increase(0) == Tolerance(absolute=0.0)
    for bad in ["-1", "x%", "%", "", "inf", ["1%", "2%"], ["1", "2"], "nan%"]:
        with pytest.raises(UsageError):
            parse_max_increase(bad)


# --------------------------------------------------------------------------- fail_above maths


@pytest.mark.parametrize("value,limit,passed", [
    (0.2, 0.3, True), (0.3, 0.3, True), (0.3000001, 0.3, False), (-5.0, 0.0, True),
    (math.nan, 0.3, False), (math.nan, math.inf, False), (math.inf, math.inf, False), (-math.inf, 0.3, False),
])
def test_fail_above_check(value, limit, passed):
    check = fail_above_check("mse", value, limit)
    assert check.passed is passed and check.kind == "fail_above" and check.limit == limit
    if not math.isfinite(value):
        assert "never passes" in check.message


# ---------------------------------------------------------------------------- baseline maths


def test_change_pct_rules():
    assert change_pct(2.0, 2.5) == pytest.approx(25.0)
    assert change_pct(-2.0, -1.0) == pytest.approx(50.0)  # relative to abs(old): worse by 50%
    assert change_pct(0.0, 0.0) == 0.0
    assert change_pct(0.0, 1.0) is None
    assert change_pct(math.nan, 1.0) is None


@pytest.mark.parametrize("old,new,tol,passed", [
    (1.0, 1.0, Tolerance(), True),                         # same value: no change
    (1.0, 1.0 + 1e-15, Tolerance(), True),                 # float rounding is not a regression
    (1.0, 1.0001, Tolerance(), False),                     # default tolerance is 0
    (1.0, 0.5, Tolerance(), True),                         # improvement
    (1.0, 1.04, Tolerance(relative=0.05), True),
    (1.0, 1.06, Tolerance(relative=0.05), False),
    (1.0, 1.04, Tolerance(absolute=0.05), True),
    (1.0, 1.06, Tolerance(absolute=0.05), False),
    (10.0, 10.4, Tolerance(absolute=0.01, relative=0.05), True),  # the larger allowance wins
    (0.01, 0.015, Tolerance(absolute=0.01, relative=0.05), True),
    (-2.0, -1.95, Tolerance(relative=0.05), True),         # negative baseline: relative to abs(old)
    (-2.0, -1.8, Tolerance(relative=0.05), False),
    (0.0, 0.0, Tolerance(relative=0.05), True),            # baseline 0: no change passes
    (0.0, -0.1, Tolerance(relative=0.05), True),           # ... and an improvement passes
    (0.0, 1e-9, Tolerance(relative=0.05), False),          # ... but a relative tolerance allows no increase
    (0.0, 1e-9, Tolerance(absolute=1e-6, relative=0.05), True),
    (1.0, math.nan, Tolerance(relative=1.0), False),       # NaN never passes
    (1.0, math.inf, Tolerance(absolute=1e300), False),
    (math.nan, 0.5, Tolerance(), True),                    # nothing to regress from
    (math.inf, 0.5, Tolerance(), True),
    (math.nan, math.nan, Tolerance(), False),
])
def test_baseline_check(old, new, tol, passed):
    check = baseline_check("mse", old, new, tol)
    assert check.passed is passed, check.message
    assert check.kind == "baseline"
    assert set(check.extra) >= {"baseline", "value", "change", "change_pct"}
    if math.isfinite(old) and math.isfinite(new):
        assert check.extra["change"] == pytest.approx(new - old)
        assert check.limit == pytest.approx(old + tol.allowed(old))


def test_baseline_zero_message_explains():
    check = baseline_check("mse", 0.0, 0.1, Tolerance(relative=0.05))
    assert not check.passed and "baseline is 0" in check.message


# ------------------------------------------------------------------------------------ matching


def test_match_by_text_signature_and_bare_name():
    results = [_res("huber(delta=0.5)", 0.1), _res("l2", 0.2, [("mse", 0.2)]), _res("mse + 0.5*mae", 0.3, [("mse", 0.2), ("mae", 0.2)])]
    assert [r.loss for r, _ in match_loss("huber( delta = 0.5 )", results)] == ["huber(delta=0.5)"]
    assert [r.loss for r, _ in match_loss("mse", results)] == ["l2"]  # alias resolves: same computation
    assert [r.loss for r, _ in match_loss("huber", results)] == ["huber(delta=0.5)"]  # bare name
    assert [(r.loss, t) for r, t in match_loss("mae", results)] == [("mse + 0.5*mae", 1)]  # a term
    assert match_loss("huber(delta=2)", results) == []
    two = [_res("huber(delta=1.0)", 0.1), _res("huber(delta=0.5)", 0.2), _res("2*l1", 0.3, [("mae", 0.15)])]
    assert [r.loss for r, _ in match_loss("huber", two)] == ["huber(delta=1.0)", "huber(delta=0.5)"]
    assert [r.loss for r, _ in match_loss("huber(delta=1)", two)] == ["huber(delta=1.0)"]
    assert [r.loss for r, _ in match_loss("2 * mae", two)] == ["2*l1"]
    assert match_loss("nonsense((", results) == []


def test_apply_fail_above_and_unknown_loss():
    report = _report(_res("mse", 0.2), _res("mae", 0.5))
    apply_gates(report, [FailAbove("mse", 0.3), FailAbove("mae", 0.3)])
    assert [c.passed for c in report.results[0].checks] == [True]
    assert [c.passed for c in report.results[1].checks] == [False]
    assert report.passed is False
    with pytest.raises(UsageError, match="names no evaluated loss.*did you mean 'mse'"):
        apply_gates(_report(_res("mse", 0.2)), [FailAbove("mes", 0.3)])


def test_term_gate():
    report = _report(_res("mse + 0.5*mae", 0.3, [("mse", 0.2), ("mae", 0.2)]))
    apply_gates(report, [FailAbove("mae", 0.1)])
    (check,) = report.results[0].checks
    assert not check.passed and check.extra["term"] == "mae"


def _baseline(*entries: tuple[str, float], reduction: str = "mean") -> Baseline:
    return Baseline("base.json", [BaselineEntry(loss, value, reduction) for loss, value in entries])


def test_apply_baseline_missing_and_allow_missing():
    report = _report(_res("mse", 1.0))
    apply_gates(report, baseline=_baseline(("mse", 1.0), ("mae", 0.5)), tolerance=Tolerance(relative=0.05))
    assert report.results[0].passed
    (missing,) = report.checks
    assert not missing.passed and missing.extra["missing"] and missing.extra["loss"] == "mae"
    assert report.passed is False

    report = _report(_res("mse", 1.0))
    apply_gates(report, baseline=_baseline(("mse", 1.0), ("mae", 0.5)), allow_missing=True)
    assert report.passed and report.checks[0].extra["skipped"]


def test_apply_baseline_new_loss_has_no_baseline_check():
    report = _report(_res("mse", 1.0), _res("mae", 9.0))
    apply_gates(report, baseline=_baseline(("mse", 1.0)))
    assert report.passed and report.results[1].checks == []


def test_apply_baseline_matches_by_computation():
    report = _report(_res("l2", 1.2))
    apply_gates(report, baseline=_baseline(("mse", 1.0)), tolerance=Tolerance(relative=0.1))
    (check,) = report.results[0].checks
    assert not check.passed and check.extra["baseline_loss"] == "mse" and report.checks == []


def test_apply_baseline_reduction_mismatch_is_usage_error():
    with pytest.raises(UsageError, match="not comparable"):
        apply_gates(_report(_res("mse", 1.0)), baseline=_baseline(("mse", 1.0), reduction="sum"))


def test_baseline_from_dict_validation():
    b = baseline_from_dict({"schema_version": 1, "results": [
        {"loss": "mse", "value": 0.5, "reduction": "mean"},
        {"loss": "mae", "value": None, "non_finite": "inf"},
        {"loss": "MSE", "value": 0.5, "reduction": "mean"},  # the same loss again, same value: one entry
    ], "provenance": {"inputs": {"targets": {"sha256": "ab"}, "preds": {"digest": "xxh3_128:cd"}}}}, "b.json")
    assert [(e.loss, e.value) for e in b.entries] == [("mse", 0.5), ("mae", math.inf)]
    assert b.input_digests == {"targets": "sha256:ab", "preds": "xxh3_128:cd"}  # an old bare sha256 is named
    for bad in [[], {"results": {}}, {"results": [{"value": 1}]}, {"results": [{"loss": "mse"}]},
                {"results": [{"loss": "mse", "value": "x"}]}, {"schema_version": 99, "results": []},
                {"schema_version": 0, "results": []}, {"schema_version": -7, "results": []},
                {"results": [{"loss": "mse", "value": 1.0}, {"loss": "MSE", "value": 9.0}]}]:
        with pytest.raises(UsageError):
            baseline_from_dict(bad, "b.json")


def test_load_baseline_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_baseline(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="bad.json:1:2: not valid JSON"):
        load_baseline(str(bad))
    with pytest.raises(UsageError, match="directory"):
        load_baseline(str(tmp_path))


# ---------------------------------------------------------------------------------------- CLI


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(7)
    t = rng.normal(size=200)
    p = t + rng.normal(scale=0.5, size=200)
    worse = t + rng.normal(scale=0.8, size=200)
    for name, arr in (("p", p), ("t", t), ("worse", worse)):
        np.save(tmp_path / f"{name}.npy", arr)
    return tmp_path, float(np.mean((p - t) ** 2))


def _run(runner, args):
    result = runner.invoke(app, ["evaluate", *map(str, args)])
    assert "Traceback" not in result.stderr
    return result


def test_cli_threshold_above_and_below(runner, data):
    d, mse = data
    ok = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--fail-above", f"mse={mse * 1.01}", "--format", "json"])
    assert ok.exit_code == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["passed"] is True
    assert doc["results"][0]["checks"][0] == {"kind": "fail_above", "limit": mse * 1.01, "passed": True,
                                              "verdict": "pass",
                                               "value": doc["results"][0]["value"],
                                               "message": doc["results"][0]["checks"][0]["message"]}
    bad = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--fail-above", f"mse={mse * 0.99}", "--format", "json"])
    assert bad.exit_code == 1
    doc = json.loads(bad.stdout)
    assert doc["passed"] is False and doc["results"][0]["checks"][0]["passed"] is False
    assert "is above the limit" in bad.stderr
    nofail = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--fail-above", f"mse={mse * 0.99}",
                           "--format", "json", "--no-fail"])
    assert nofail.exit_code == 0 and json.loads(nofail.stdout)["passed"] is False
    assert "--no-fail" in nofail.stderr


def test_cli_fail_above_expression_as_written(runner, data):
    d, _ = data
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "huber(delta=0.5)", "--fail-above", "huber(delta=0.5)=100"])
    assert r.exit_code == 0, r.stderr
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "huber(delta=0.5)", "--fail-above", "huber=0"])
    assert r.exit_code == 1


def test_cli_fail_above_unknown_loss_is_exit_2(runner, data):
    d, _ = data
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--fail-above", "mae=1"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith("error: --fail-above mae=1: 'mae' names no evaluated loss")
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--fail-above", "mse"])
    assert r.exit_code == 2 and "expected LOSS=VALUE" in r.stderr


def test_cli_baseline_relative(runner, data, tmp_path):
    d, _ = data
    base = tmp_path / "base.json"
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--loss", "mae", "--format", "json", "--output", base])
    assert r.exit_code == 0 and json.loads(base.read_text()) == json.loads(r.stdout)
    same = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--loss", "mae", "--baseline", base,
                         "--max-increase", "5%", "--format", "json"])
    assert same.exit_code == 0, same.stderr
    doc = json.loads(same.stdout)
    check = doc["results"][0]["checks"][0]
    assert check["kind"] == "baseline" and check["passed"] is True and check["change"] == 0.0
    assert check["baseline"] == check["value"] == doc["results"][0]["value"]
    assert doc["baseline"] == str(base)
    worse = _run(runner, [d / "worse.npy", d / "t.npy", "--loss", "mse", "--loss", "mae", "--baseline", base,
                          "--max-increase", "5%", "--format", "json"])
    assert worse.exit_code == 1
    doc = json.loads(worse.stdout)
    check = doc["results"][0]["checks"][0]
    assert check["passed"] is False and check["change"] > 0 and check["change_pct"] > 5
    assert "got worse than the baseline" in worse.stderr
    loose = _run(runner, [d / "worse.npy", d / "t.npy", "--loss", "mse", "--loss", "mae", "--baseline", base,
                          "--max-increase", "1000%"])
    assert loose.exit_code == 0, loose.stderr


def test_cli_baseline_missing_loss(runner, data, tmp_path):
    d, _ = data
    base = tmp_path / "base.json"
    _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--loss", "mae", "--format", "json", "--output", base])
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--baseline", base, "--format", "json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["checks"][0]["missing"] is True and doc["checks"][0]["loss"] == "mae" and doc["passed"] is False
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--baseline", base, "--allow-missing"])
    assert r.exit_code == 0, r.stderr


def test_cli_usage_errors(runner, data, tmp_path):
    d, _ = data
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--max-increase", "5%"])
    assert r.exit_code == 2 and "needs --baseline" in r.stderr
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    r = _run(runner, [d / "p.npy", d / "t.npy", "--loss", "mse", "--baseline", tmp_path / "junk.json"])
    assert r.exit_code == 2 and "not a lossctl JSON report" in r.stderr and r.stdout == ""


def test_cli_nan_value_never_passes(runner, tmp_path):
    p = np.array([0.1, np.nan, 0.3])
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", np.zeros(3))
    r = _run(runner, [tmp_path / "p.npy", tmp_path / "t.npy", "--loss", "mse", "--nan-policy", "propagate",
                      "--fail-above", "mse=1e300", "--format", "json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["results"][0]["value"] is None and doc["results"][0]["non_finite"] == "nan"
    assert doc["results"][0]["checks"][0]["passed"] is False


@pytest.mark.parametrize("arrays,policy,needle", [
    ((np.empty(0), np.empty(0)), "raise", "no samples"),
    ((np.array([np.nan, np.nan]), np.zeros(2)), "omit", "no valid samples"),
])
def test_cli_empty_input_never_passes(runner, tmp_path, arrays, policy, needle):
    np.save(tmp_path / "p.npy", arrays[0])
    np.save(tmp_path / "t.npy", arrays[1])
    r = _run(runner, [tmp_path / "p.npy", tmp_path / "t.npy", "--loss", "mse", "--nan-policy", policy,
                      "--fail-above", "mse=1", "--no-fail", "--format", "json"])
    assert r.exit_code == 2 and r.stdout == ""
    assert needle in r.stderr
