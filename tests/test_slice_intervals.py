"""Per-slice confidence intervals (``--by`` with ``--ci``, SPEC §9): each slice's interval equals the
one computed by NumPy on that group's rows alone (CLT, jackknife), or by a LossState run on those rows
alone keyed by their global row indices; chunk/merge/pickle invariance; the CLI's JSON and markdown;
slice gates that test the interval (pass / fail / inconclusive)."""

from __future__ import annotations

import json
import math
import pickle
from statistics import NormalDist

import numpy as np
import pytest

from lossctl import LossState
from lossctl.cli import app
from lossctl.intervals import CIConfig, bucket_of

Z975 = NormalDist().inv_cdf(0.975)
T975_19 = 2.093024054408263  # Student's t, 0.975 quantile, 19 degrees of freedom (printed tables)


def _by_key(result):
    return {s.key: s for s in result.slices}


def _data(n=900, seed=0):
    rng = np.random.default_rng(seed)
    p, t = rng.normal(size=n), rng.normal(size=n)
    keys = rng.choice(np.array(["a", "b", "c", "d"], dtype="<U8"), n, p=[0.5, 0.3, 0.15, 0.05])
    p[keys == "b"] *= 2.0  # groups with different spreads
    return p, t, keys


@pytest.mark.parametrize("expr, per_row", [
    ("mse", lambda p, t: (p - t) ** 2),
    ("mse + 0.5*mae", lambda p, t: (p - t) ** 2 + 0.5 * np.abs(p - t)),
])
def test_slice_clt_equals_numpy_on_the_group_alone(expr, per_row):
    p, t, keys = _data()
    keys[:3] = ["solo", "pair", "pair"]  # a one-row slice (no interval) and a two-row one
    res = LossState(expr, ci=True).update(preds=p, targets=t, keys=keys).result()
    assert res.ci.method == "clt"
    got = _by_key(res)
    for key in ("a", "b", "c", "d", "pair"):
        x = per_row(p[keys == key], t[keys == key])
        se = np.std(x, ddof=1) / math.sqrt(len(x))
        ci = got[key].ci
        assert ci["method"] == "clt" and ci["level"] == 0.95
        assert got[key].value == pytest.approx(x.mean(), rel=1e-12)
        assert ci["se"] == pytest.approx(se, rel=1e-10)
        assert ci["low"] == pytest.approx(x.mean() - Z975 * se, rel=1e-10)
        assert ci["high"] == pytest.approx(x.mean() + Z975 * se, rel=1e-10)
    solo = got["solo"].ci
    assert solo["low"] is None and solo["high"] is None and solo["se"] is None and "1 sample" in solo["note"]


def test_slice_clt_sum_reduction_scales_by_the_slice_size():
    p, t, keys = _data(300, 1)
    res = LossState("mse", reduction="sum", ci=True).update(preds=p, targets=t, keys=keys).result()
    for key, sl in _by_key(res).items():
        x = (p[keys == key] - t[keys == key]) ** 2
        assert sl.ci["se"] == pytest.approx(np.std(x, ddof=1) * math.sqrt(len(x)), rel=1e-10)
        assert sl.ci["low"] == pytest.approx(x.sum() - Z975 * sl.ci["se"], rel=1e-10)


def test_slice_jackknife_of_weighted_mse_equals_numpy_and_the_group_alone():
    p, t, keys = _data(2000, 2)
    w = np.random.default_rng(3).uniform(0, 2, len(p))
    res = LossState("mse", ci=True).update(preds=p, targets=t, weights=w, keys=keys).result()
    assert res.ci.method == "jackknife"  # --weights: a ratio of sums
    got = _by_key(res)
    for key in ("a", "b", "c", "d"):
        rows = np.flatnonzero(keys == key)
        num, den, b = w[rows] * (p[rows] - t[rows]) ** 2, w[rows], bucket_of(rows)
        assert len(np.unique(b)) == 20
        loo = np.array([(num.sum() - num[b == k].sum()) / (den.sum() - den[b == k].sum()) for k in range(20)])
        se = math.sqrt(19 / 20 * np.sum((loo - loo.mean()) ** 2))
        value = num.sum() / den.sum()
        ci = got[key].ci
        assert ci["method"] == "jackknife" and ci["se"] == pytest.approx(se, rel=1e-10)
        assert ci["low"] == pytest.approx(value - T975_19 * se, rel=1e-10)
        assert ci["high"] == pytest.approx(value + T975_19 * se, rel=1e-10)
        alone = LossState("mse", ci=True).update(preds=p[rows], targets=t[rows], weights=w[rows], rows=rows).result()
        for k in ("low", "high", "se"):
            assert ci[k] == pytest.approx(getattr(alone.ci, k), rel=1e-12)


@pytest.mark.parametrize("expr, method", [("dice(from_logits=true)", "auto"), ("dice(from_logits=true)", "bootstrap"),
                                          ("mse + 0.5*mae", "bootstrap"), ("cross_entropy", "jackknife")])
def test_slice_interval_equals_a_state_on_the_group_rows_alone(expr, method):
    """Ratio losses whose kernel sums statistics over samples (global Dice: run per key and per
    bucket/resample) and the bootstrap: the slice equals LossState(rows=its global rows) alone."""
    rng = np.random.default_rng(4)
    n = 600
    if expr.startswith("dice"):
        p, t = rng.normal(size=(n, 3, 4)), rng.integers(0, 2, (n, 3, 4)).astype(float)
    elif expr == "cross_entropy":
        p, t = rng.normal(size=(n, 4)), rng.integers(0, 4, n)
    else:
        p, t = rng.normal(size=n), rng.normal(size=n)
    keys = rng.integers(0, 3, n)
    cfg = CIConfig(method=method, resamples=200, seed=7)
    res = LossState(expr, ci=cfg).update(preds=p, targets=t, keys=keys).result()
    for sl in res.slices:
        rows = np.flatnonzero(keys == sl.key)
        alone = LossState(expr, ci=cfg).update(preds=p[rows], targets=t[rows], rows=rows).result()
        assert sl.value == pytest.approx(alone.value, rel=1e-12)
        assert sl.ci["method"] == alone.ci.method == res.ci.method != "clt"
        for k in ("low", "high", "se"):
            assert sl.ci[k] == pytest.approx(getattr(alone.ci, k), rel=1e-12), k


CASES = [("mse + 0.5*mae", "auto", False), ("mse", "auto", True), ("mse", "bootstrap", False),
         ("dice(from_logits=true)", "jackknife", False)]


@pytest.mark.parametrize("expr, method, weighted", CASES)
def test_slice_intervals_same_under_split_merge_pickle_and_rows(expr, method, weighted):
    rng = np.random.default_rng(5)
    n = 800
    if expr.startswith("dice"):
        p, t = rng.normal(size=(n, 2, 3)), rng.integers(0, 2, (n, 2, 3)).astype(float)
    else:
        p, t = rng.normal(size=n), rng.normal(size=n)
    w = rng.uniform(0, 2, n) if weighted else None
    keys = rng.choice(np.array(["x", "y", "z"]), n)
    cfg = CIConfig(method=method, resamples=100)

    def run(take, **kw):
        extra = {} if w is None else {"weights": w[take]}
        return LossState(expr, ci=cfg).update(preds=p[take], targets=t[take], keys=keys[take], **extra, **kw)

    ref = {s.key: s.ci for s in run(np.arange(n)).result().slices}
    cuts = np.sort(rng.choice(np.arange(1, n), 7, replace=False))
    states = [run(np.arange(a, b), start=a) for a, b in zip([0, *cuts], [*cuts, n])]
    rng.shuffle(states)
    merged = pickle.loads(pickle.dumps(states[0]))
    for s in states[1:]:
        merged = merged.merge(pickle.loads(pickle.dumps(s)))
    perm = rng.permutation(n)
    a, b = np.sort(perm[: n // 3]), np.sort(perm[n // 3:])
    by_rows = run(b, rows=b).merge(run(a, rows=a))
    for state, what in ((merged, "split/merge/pickle"), (by_rows, "rows=")):
        got = {s.key: s.ci for s in state.result().slices}
        assert set(got) == set(ref)
        for key, ci in ref.items():
            assert ci["low"] is not None
            for k in ("low", "high", "se"):
                assert abs(got[key][k] - ci[k]) <= 1e-12 * abs(ci[k]), (what, key, k, got[key][k], ci[k])


def test_no_ci_no_slice_interval():
    p, t, keys = _data(100)
    assert all(s.ci is None for s in LossState("mse").update(preds=p, targets=t, keys=keys).result().slices)


def _files(tmp_path, p, t, g):
    for name, arr in (("p", p), ("t", t), ("g", g)):
        np.save(tmp_path / f"{name}.npy", arr)
    return [str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse", "--by", str(tmp_path / "g.npy")]


def test_cli_json_and_markdown_carry_slice_intervals(runner, tmp_path):
    p, t, keys = _data(500, 6)
    g = np.searchsorted(np.array(["a", "b", "c", "d"]), keys)
    args = _files(tmp_path, p, t, g)
    result = runner.invoke(app, ["evaluate", *args, "--ci", "-f", "json", "--chunk-size", "37"])
    assert result.exit_code == 0, result.stderr
    slices = json.loads(result.stdout)["results"][0]["slices"]
    api = _by_key(LossState("mse", ci=True).update(preds=p, targets=t, keys=g).result())
    assert len(slices) == 4
    for s in slices:
        assert set(s["ci"]) == {"low", "high", "level", "method", "se"} and s["ci"]["method"] == "clt"
        for k in ("low", "high", "se"):
            assert s["ci"][k] == pytest.approx(api[s["key"]].ci[k], rel=1e-12)
    md = runner.invoke(app, ["evaluate", *args, "--ci", "-f", "markdown"])
    worst = slices[0]
    assert md.exit_code == 0
    assert f"| `{worst['key']}` | {worst['samples']} |" in md.stdout
    row = next(line for line in md.stdout.splitlines() if line.startswith(f"| `{worst['key']}` |"))
    assert f"[{worst['ci']['low']:.6g}, {worst['ci']['high']:.6g}]" in row


def _gate_data():
    # "bad": 400 rows with squared error ≈ 4 ± noise (interval far above 3); "noisy": 40 rows whose
    # mean is near 3 with a wide spread (interval contains 3); "good": 400 rows near 0.25
    rng = np.random.default_rng(8)
    bad = 2.0 + rng.normal(scale=0.05, size=400)
    noisy = np.sqrt(rng.exponential(3.0, size=40))
    noisy *= math.sqrt(3.0 / np.mean(noisy ** 2))  # mean squared error exactly 3: the limit inside the interval
    good = 0.5 + rng.normal(scale=0.05, size=400)
    p = np.concatenate([bad, noisy, good])
    g = np.array(["bad"] * 400 + ["noisy"] * 40 + ["good"] * 400)
    return p, np.zeros(len(p)), g


def test_slice_gates_with_ci_fail_pass_and_inconclusive(runner, tmp_path):
    p, t, g = _gate_data()
    args = _files(tmp_path, p, t, g)
    base = ["evaluate", *args, "--ci", "--gate-slices", "--fail-above", "mse=3.0001", "-f", "json"]
    result = runner.invoke(app, base)
    assert result.exit_code == 1  # the bad slice fails
    doc = json.loads(result.stdout)
    got = {s["key"]: s for s in doc["results"][0]["slices"]}
    verdicts = {k: s["checks"][0]["verdict"] for k, s in got.items()}
    assert verdicts == {"bad": "fail", "noisy": "inconclusive", "good": "pass"}
    assert got["noisy"]["checks"][0]["passed"] is True  # inconclusive passes by default, with a warning
    assert got["noisy"]["ci"]["low"] < 3.0001 < got["noisy"]["ci"]["high"]
    assert got["bad"]["ci"]["low"] > 3.0001 and got["good"]["ci"]["high"] <= 3.0001
    assert "inconclusive" in result.stderr
    md = runner.invoke(app, [*base[:-2], "-f", "markdown"])
    lines = {line.split("|")[1].strip(): line for line in md.stdout.splitlines() if line.startswith("| `")}
    assert lines["`noisy`"].rstrip().endswith("| inconclusive |") and lines["`bad`"].rstrip().endswith("| ✗ |")
    lo, hi = got["noisy"]["ci"]["low"], got["noisy"]["ci"]["high"]
    assert f"[{lo:.6g}, {hi:.6g}]" in lines["`noisy`"]
    # without the bad slice: exit 0 (the noisy slice is inconclusive), or 1 with --inconclusive fail
    keep = g != "bad"
    args = _files(tmp_path, p[keep], t[keep], g[keep])
    ok = runner.invoke(app, ["evaluate", *args, "--ci", "--gate-slices", "--fail-above", "mse=3.0001"])
    assert ok.exit_code == 0, ok.stderr
    assert "inconclusive" in ok.stderr and "[slice noisy]" in ok.stderr
    strict = runner.invoke(app, ["evaluate", *args, "--ci", "--gate-slices", "--fail-above", "mse=3.0001",
                                 "--inconclusive", "fail"])
    assert strict.exit_code == 1
    # without --ci the same gate is a point check: the noisy slice (3.0 <= 3.0001) passes outright
    point = runner.invoke(app, ["evaluate", *args, "--gate-slices", "--fail-above", "mse=3.0001", "-f", "json"])
    checks = {s["key"]: s["checks"][0] for s in json.loads(point.stdout)["results"][0]["slices"]}
    assert point.exit_code == 0 and checks["noisy"]["verdict"] == "pass" and checks["noisy"]["passed"]


def test_small_slices_get_intervals_but_no_gate(runner, tmp_path):
    p, t, g = _gate_data()
    args = _files(tmp_path, p, t, g)
    result = runner.invoke(app, ["evaluate", *args, "--ci", "--gate-slices", "--fail-above", "mse=3.0001",
                                 "--min-slice-size", "100", "-f", "json"])
    got = {s["key"]: s for s in json.loads(result.stdout)["results"][0]["slices"]}
    assert got["noisy"]["gated"] is False and got["noisy"]["checks"] == []
    assert got["noisy"]["ci"]["low"] is not None


@pytest.mark.parametrize("method", ["auto", "jackknife", "bootstrap"])
def test_whole_result_interval_unchanged_by_slicing(method):
    """With --by the term's bootstrap sums are added up from its keys' (the draws are made once):
    the whole result's interval stays that of the run without keys."""
    p, t, keys = _data(700, 9)
    w = np.random.default_rng(10).uniform(0, 2, len(p))
    cfg = CIConfig(method=method, resamples=100)
    plain = LossState("mse", ci=cfg).update(preds=p, targets=t, weights=w).result().ci
    sliced = LossState("mse", ci=cfg).update(preds=p, targets=t, weights=w, keys=keys).result().ci
    assert sliced.method == plain.method
    for k in ("low", "high", "se"):
        assert getattr(sliced, k) == pytest.approx(getattr(plain, k), rel=1e-12)


@pytest.mark.parametrize("method", ["auto", "jackknife", "bootstrap"])
def test_slice_intervals_after_nan_omit_are_those_of_the_kept_rows(method):
    rng = np.random.default_rng(11)
    p, t, keys = rng.normal(size=500), rng.normal(size=500), rng.integers(0, 3, 500)
    p[::7] = np.nan
    cfg = CIConfig(method=method, resamples=100)
    res = LossState("mse", nan_policy="omit", ci=cfg).update(preds=p, targets=t, keys=keys).result()
    for sl in res.slices:
        rows = np.flatnonzero((keys == sl.key) & ~np.isnan(p))
        alone = LossState("mse", ci=cfg).update(preds=p[rows], targets=t[rows], rows=rows).result().ci
        assert sl.samples == len(rows)
        for k in ("low", "high", "se"):
            assert sl.ci[k] == pytest.approx(getattr(alone, k), rel=1e-12)
