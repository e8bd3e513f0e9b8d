"""Confidence intervals and paired comparisons (SPEC §9), tested like a statistics library: coverage
over seeded synthetic draws, the bootstrap against a brute-force NumPy bootstrap with the same draws,
chunk/merge invariance, degenerate cases, and the CLI's done-when checks."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

import lossctl
from lossctl import LossState
from lossctl.intervals import (BUCKETS, CIConfig, bucket_of, poisson_weights, t_quantile)
from lossctl.state import PairedState
from typer.testing import CliRunner

from lossctl.cli import app


def run_cli(args):
    return CliRunner().invoke(app, [str(a) for a in args])

METHODS = ("auto", "clt", "jackknife", "bootstrap")


def _ci(method: str, resamples: int = 200) -> CIConfig:
    return CIConfig(method=method, resamples=resamples, seed=7)


def test_t_quantile_matches_tables():
    # t_{0.975} for 1, 5, 19 and 1e6 degrees of freedom (printed tables / scipy.stats.t.ppf)
    for df, expected in ((1, 12.706204736), (5, 2.570581836), (19, 2.093024054), (1e6, 1.959966)):
        assert t_quantile(0.975, df) == pytest.approx(expected, rel=1e-6)


def test_clt_interval_is_mean_plus_minus_z_se():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=500), rng.normal(size=500)
    r = LossState("mse", ci=CIConfig()).update(preds=p, targets=t).result()
    x = (p - t) ** 2
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert r.ci.method == "clt"
    assert r.ci.se == pytest.approx(se, rel=1e-12)
    assert r.ci.low == pytest.approx(x.mean() - 1.959963984540054 * se, rel=1e-12)
    assert r.ci.high == pytest.approx(x.mean() + 1.959963984540054 * se, rel=1e-12)


def test_jackknife_matches_numpy_reference_for_weighted_mse():
    rng = np.random.default_rng(1)
    p, t, w = rng.normal(size=300), rng.normal(size=300), rng.uniform(0.1, 2, size=300)
    r = LossState("mse", ci=CIConfig()).update(preds=p, targets=t, weights=w).result()
    b = bucket_of(np.arange(300))
    loo = np.array([np.sum((w * (p - t) ** 2)[b != k]) / np.sum(w[b != k]) for k in range(BUCKETS)])
    se = math.sqrt((BUCKETS - 1) / BUCKETS * np.sum((loo - loo.mean()) ** 2))
    value = np.sum(w * (p - t) ** 2) / np.sum(w)
    assert r.ci.method == "jackknife"
    assert r.ci.se == pytest.approx(se, rel=1e-10)
    assert r.ci.low == pytest.approx(value - t_quantile(0.975, BUCKETS - 1) * se, rel=1e-10)


def test_bootstrap_matches_brute_force_numpy_bootstrap():
    rng = np.random.default_rng(2)
    p = rng.uniform(size=(200, 4))
    t = (rng.uniform(size=(200, 4)) > 0.5).astype(float)
    r = LossState("dice", ci=_ci("bootstrap", 100)).update(preds=p, targets=t).result()
    w = poisson_weights(np.arange(200), 7, 100)  # the same counter-based draws, brute force
    vals = []
    for wr in w:
        i, ps, ts = (wr[:, None] * p * t).sum(), (wr[:, None] * p).sum(), (wr[:, None] * t).sum()
        vals.append(1 - (2 * i + 1) / (ps + ts + 1))
    lo, hi = np.quantile(vals, [0.025, 0.975])
    assert r.ci.low == pytest.approx(lo, rel=1e-10) and r.ci.high == pytest.approx(hi, rel=1e-10)
    assert r.ci.se == pytest.approx(np.std(vals, ddof=1), rel=1e-10)
    # the draws are Poisson(1): mean 1, variance 1
    big = poisson_weights(np.arange(20000), 3, 50)
    assert abs(big.mean() - 1) < 0.01 and abs(big.var() - 1) < 0.02


def test_poisson_draws_depend_only_on_row_seed_resample():
    rows = np.array([5, 17, 3, 1000000007])
    full = poisson_weights(np.arange(0, 1000000008), 1, 3)[:, rows] if False else None  # (too big: by pieces)
    a = poisson_weights(rows, 1, 30)
    b = np.concatenate([poisson_weights(rows[:2], 1, 30), poisson_weights(rows[2:], 1, 30)], axis=1)
    assert np.array_equal(a, b) and full is None
    assert not np.array_equal(a, poisson_weights(rows, 2, 30))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("expr", ["mse", "dice + 0.5*mse", "cross_entropy(weight=[1, 2, 3])", "huber"])
def test_interval_invariant_to_chunking_merge_order_and_pickle(expr, method):
    rng = np.random.default_rng(3)
    n = 240
    if expr.startswith("cross"):
        p, t = rng.normal(size=(n, 3)), rng.integers(0, 3, size=n)
    elif expr.startswith("dice"):
        p, t = rng.uniform(size=(n, 2)), (rng.uniform(size=(n, 2)) > 0.5).astype(float)
    else:
        p, t = rng.normal(size=n), rng.normal(size=n)
    cfg = _ci(method, 60)
    one = LossState(expr, ci=cfg).update(preds=p, targets=t).result().ci
    cuts = [0, 7, 100, 101, 180, n]
    parts = [LossState(expr, ci=cfg).update(preds=p[a:b], targets=t[a:b], start=a) for a, b in zip(cuts, cuts[1:])]
    parts = [pickle.loads(pickle.dumps(s)) for s in parts]
    tree = (parts[4].merge(parts[0])).merge(parts[2].merge(parts[1]).merge(parts[3]))
    # non-contiguous rows (a slice's sub-state) give the same as contiguous ones
    perm = np.random.default_rng(4).permutation(n)
    a, b = np.sort(perm[:90]), np.sort(perm[90:])
    sliced = LossState(expr, ci=cfg).update(preds=p[a], targets=t[a], rows=a).merge(
        LossState(expr, ci=cfg).update(preds=p[b], targets=t[b], rows=b))
    for other in (tree.result().ci, sliced.result().ci):
        assert other.method == one.method
        for k in ("low", "high", "se"):
            assert getattr(other, k) == pytest.approx(getattr(one, k), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_paired_interval_invariant_to_chunking(method):
    rng = np.random.default_rng(5)
    t = rng.normal(size=300)
    a, b = t + rng.normal(size=300), t + rng.normal(size=300)
    cfg = _ci(method, 50)
    one = PairedState("mse", ci=cfg).update(preds=a, baseline=b, targets=t).result().comparison
    parts = [PairedState("mse", ci=cfg).update(preds=a[s:e], baseline=b[s:e], targets=t[s:e], start=s)
             for s, e in ((0, 33), (33, 250), (250, 300))]
    merged = pickle.loads(pickle.dumps(parts[2])).merge(parts[0].merge(parts[1])).result().comparison
    assert merged.diff == pytest.approx(one.diff, rel=1e-12)
    assert merged.diff_ci.low == pytest.approx(one.diff_ci.low, rel=1e-12)
    assert merged.diff_ci.high == pytest.approx(one.diff_ci.high, rel=1e-12)
    if method in ("auto", "clt"):  # the paired CLT: the moments of d = ℓ(a) − ℓ(b)
        d = (a - t) ** 2 - (b - t) ** 2
        assert one.diff_ci.se == pytest.approx(d.std(ddof=1) / math.sqrt(300), rel=1e-10)


def _coverage(make, truth: float, draws: int = 400) -> float:
    hits = 0
    for seed in range(draws):
        iv = make(np.random.default_rng(1000 + seed))
        hits += iv.low <= truth <= iv.high
    return hits / draws


def test_coverage_paired_mse_difference_clt():
    # d_i = (a_i)^2 - (b_i)^2 with a ~ N(0, 1.1), b ~ N(0, 1): E d = 0.1 exactly
    n = 400

    def make(rng):
        t = np.zeros(n)
        a, b = rng.normal(scale=math.sqrt(1.1), size=n), rng.normal(size=n)
        return PairedState("mse", ci=CIConfig()).update(preds=a, baseline=b, targets=t).result().comparison.diff_ci

    cov = _coverage(make, 0.1)
    assert 0.93 <= cov <= 0.97, cov


def test_coverage_weighted_mse_ratio_jackknife():
    # a ratio of sums: Σ w·x / Σ w with w ~ U(0, 2) independent of x ~ chi2(1): the estimand is E x = 1
    n = 800

    def make(rng):
        p, w = rng.normal(size=n), rng.uniform(0, 2, size=n)
        return LossState("mse", ci=CIConfig()).update(preds=p, targets=np.zeros(n), weights=w).result().ci

    cov = _coverage(make, 1.0)
    assert 0.93 <= cov <= 0.97, cov


def test_degenerate_cases_have_clear_answers():
    one = LossState("mse", ci=CIConfig()).update(preds=[1.0], targets=[0.0]).result().ci
    assert one.low is None and one.high is None and "at least 2" in one.note
    same = LossState("mse", ci=CIConfig()).update(preds=np.ones(50), targets=np.zeros(50)).result().ci
    assert same.low == same.high == 1.0 and same.se == 0.0
    few = LossState("mse", ci=CIConfig(method="jackknife")).update(preds=[1.0, 2.0, 4.0], targets=[0.0] * 3)
    iv = few.result().ci
    assert iv.known and "non-empty buckets" in iv.note  # n < 20: fewer buckets, said so
    single = LossState("dice", ci=CIConfig()).update(preds=[[0.5, 0.5]], targets=[[1.0, 0.0]]).result().ci
    assert single.low is None and "bucket" in single.note
    # a paired comparison with one row: no interval, verdict never NaN
    c = PairedState("mse", ci=CIConfig()).update(preds=[1.0], baseline=[2.0], targets=[0.0]).result().comparison
    assert c.verdict == "no_difference" and c.diff_ci.low is None
    c = PairedState("mse").update(preds=[1.0, 2.0], baseline=[1.0, 2.0], targets=[0.0, 0.0]).result().comparison
    assert c.verdict == "no_difference" and c.diff == 0.0


def test_ci_config_validation():
    for bad in ({"level": 1.5}, {"method": "magic"}, {"seed": -1}, {"resamples": 1}):
        with pytest.raises(Exception):
            CIConfig(**bad)


# ------------------------------------------------------------------------------- through the CLI


def _pair(tmp_path, seed: int, n: int, worse: float):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n)
    base = t + rng.normal(size=n)
    cand = t + math.sqrt(1 + worse) * rng.normal(size=n)
    paths = []
    for name, arr in (("t", t), ("base", base), ("cand", cand)):
        path = tmp_path / f"{name}{seed}.npy"
        np.save(path, arr)
        paths.append(str(path))
    return paths


def test_cli_noise_only_never_fails_over_20_seeded_pairs(tmp_path):
    verdicts = []
    for seed in range(20):
        t, base, cand = _pair(tmp_path, seed, 2000, 0.0)
        r = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", base, "--ci", "--max-increase", "1%",
                     "--format", "json"])
        assert r.exit_code == 0, r.output
        check = json.loads(r.stdout)["results"][0]["checks"][0]
        verdicts.append(check["verdict"])
        assert check["verdict"] in ("pass", "inconclusive")
    assert "inconclusive" in verdicts  # (2,000 rows cannot resolve 1 %)


def test_cli_five_percent_worse_on_20000_rows_fails(tmp_path):
    t, base, cand = _pair(tmp_path, 99, 20000, 0.10)  # noise variance +10 %: mse about 5 % worse
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", base, "--ci", "--max-increase", "1%",
                 "--format", "json"])
    assert r.exit_code == 1, r.output
    res = json.loads(r.stdout)["results"][0]
    assert res["checks"][0]["verdict"] == "fail"
    assert res["comparison"]["verdict"] == "worse" and res["comparison"]["relative"] > 0.03
    assert res["comparison"]["diff"] == pytest.approx(res["value"] - res["comparison"]["baseline_value"])


def test_cli_inconclusive_fail_and_fail_above_with_ci(tmp_path):
    t, base, cand = _pair(tmp_path, 4, 500, 0.0)  # (a seed whose difference interval straddles 0)
    args = ["evaluate", cand, t, "--loss", "mse", "--against", base, "--ci", "--max-increase", "0.1%"]
    r = run_cli(args + ["--format", "json"])
    assert r.exit_code == 0 and "inconclusive" in r.stderr
    assert run_cli(args + ["--inconclusive", "fail"]).exit_code == 1
    value = json.loads(r.stdout)["results"][0]
    ci = value["ci"]
    inside = run_cli(["evaluate", cand, t, "--loss", "mse", "--ci", f"--fail-above=mse={value['value']}",
                      "--format", "json"])
    assert inside.exit_code == 0 and json.loads(inside.stdout)["results"][0]["checks"][0]["verdict"] == "inconclusive"
    below = run_cli(["evaluate", cand, t, "--loss", "mse", "--ci", f"--fail-above=mse={ci['low'] * 0.9}"])
    assert below.exit_code == 1
    above = run_cli(["evaluate", cand, t, "--loss", "mse", "--ci", f"--fail-above=mse={ci['high'] * 1.1}"])
    assert above.exit_code == 0


def test_cli_baseline_report_with_ci_gives_welch_interval(tmp_path):
    t, base, cand = _pair(tmp_path, 4, 3000, 0.0)
    report = tmp_path / "base.json"
    assert run_cli(["evaluate", base, t, "--loss", "mse", "--ci", "--output", str(report)]).exit_code == 0
    old = json.loads(report.read_text())["results"][0]
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--ci", "--baseline", str(report), "--max-increase", "1%",
                 "--format", "json"])
    new = json.loads(r.stdout)["results"][0]
    check = new["checks"][0]
    se = math.sqrt(old["ci"]["se"] ** 2 + new["ci"]["se"] ** 2)
    diff = new["value"] - old["value"]
    assert check["paired"] is False
    assert check["diff_ci"][0] == pytest.approx(diff - 1.96 * se, rel=1e-3)
    assert check["verdict"] in ("pass", "inconclusive")


def test_cli_ci_usage_errors(tmp_path):
    t, base, cand = _pair(tmp_path, 5, 50, 0.0)
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--seed", "3"])
    assert r.exit_code == 2 and "--ci" in r.stderr
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--ci", "--ci-method", "magic"])
    assert r.exit_code == 2 and "--ci-method" in r.stderr
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--ci", "--confidence", "2"])
    assert r.exit_code == 2 and "--confidence" in r.stderr


def test_against_reads_the_targets_once_per_chunk(monkeypatch, tmp_path):
    from lossctl.arrays import MemoryArray

    reads: dict[str, int] = {}
    original = MemoryArray.read

    def counting(self, start, stop, axis=0):
        reads[self.name] = reads.get(self.name, 0) + (stop - start)
        return original(self, start, stop, axis)

    original_view = MemoryArray.view

    def counting_view(self, start, stop):  # (the fused paths window the inputs instead of reading them)
        reads[self.name] = reads.get(self.name, 0) + (stop - start)
        return original_view(self, start, stop)

    monkeypatch.setattr(MemoryArray, "read", counting)
    monkeypatch.setattr(MemoryArray, "view", counting_view)
    rng = np.random.default_rng(8)
    t = rng.normal(size=5000)
    from lossctl.api import evaluate

    rep = evaluate(t + rng.normal(size=5000), t, ["mse", "mae"], against=t + rng.normal(size=5000), chunk_size=700,
                   provenance=False, ci=True)
    assert reads["targets"] == 5000  # one pass over the targets for both models and both losses
    assert all(r.comparison is not None and r.ci is not None for r in rep.results)


def test_against_npz_with_named_inputs_and_combined_expression(tmp_path):
    rng = np.random.default_rng(9)
    n = 300
    x1, x2 = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
    y = rng.integers(0, 2, size=n)
    b1 = x1 + 0.1 * rng.normal(size=(n, 4))
    np.savez(tmp_path / "cand.npz", x1=x1, x2=x2, targets=y)
    np.savez(tmp_path / "base.npz", x1=b1, x2=x2)
    r = run_cli(["evaluate", tmp_path / "cand.npz", "--loss", "contrastive + 0.5*contrastive(margin=2)",
                 "--against", tmp_path / "base.npz", "--ci", "--ci-method", "jackknife", "--format", "json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    from lossctl import LossState

    ref_base = LossState("contrastive + 0.5*contrastive(margin=2)").update(x1=b1, x2=x2, targets=y).result().value
    assert res["comparison"]["baseline_value"] == pytest.approx(ref_base, rel=1e-12)
    assert res["comparison"]["diff_method"] == "jackknife" and len(res["comparison"]["diff_ci"]) == 2


def test_scoring_file_against_and_ci(tmp_path):
    t, base, cand = _pair(tmp_path, 12, 4000, 0.10)
    cfg = tmp_path / "scoring.yaml"
    cfg.write_text(f"inputs: {{preds: {cand}, targets: {t}}}\nlosses: [mse]\nagainst: {base}\n"
                   f"ci: {{level: 0.9, method: bootstrap, seed: 3, resamples: 200}}\n"
                   f"baseline: {{report: {tmp_path / 'none.json'}, max_increase: 1%}}\n".replace(
                       f"baseline: {{report: {tmp_path / 'none.json'}, max_increase: 1%}}\n", ""))
    r = run_cli(["evaluate", "--config", cfg, "--format", "json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    assert res["ci"]["level"] == 0.9 and res["ci"]["method"] == "bootstrap"
    assert res["comparison"]["diff_method"] == "bootstrap" and res["comparison"]["verdict"] == "worse"
    bad = tmp_path / "bad.yaml"
    bad.write_text("losses: [mse]\nci: {levl: 0.9}\n")
    r = run_cli(["evaluate", "x.npy", "y.npy", "--config", bad])
    assert r.exit_code == 2 and "ci.level" in r.stderr


def test_markdown_and_junit_show_interval_and_verdict(tmp_path):
    t, base, cand = _pair(tmp_path, 99, 20000, 0.10)
    md = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", base, "--ci", "--max-increase", "1%",
                  "--format", "markdown"])
    assert md.exit_code == 1
    line = next(x for x in md.stdout.splitlines() if x.startswith("- `mse`"))
    assert "(95 % clt)" in line and "**worse**" in line and "against: fail" in line
    xml = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", base, "--ci", "--max-increase", "1%",
                   "--format", "junit"])
    assert "verdict: fail" in xml.stdout and "interval: [" in xml.stdout


def test_inconclusive_is_a_warning_that_strict_does_not_turn_into_exit_2(tmp_path):
    t, base, cand = _pair(tmp_path, 4, 500, 0.0)
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", base, "--ci", "--max-increase", "0.1%",
                 "--strict", "--github"])
    assert r.exit_code == 0, r.output
    assert "::warning title=lossctl%3A inconclusive::" in r.stderr


def test_coverage_paired_dice_difference_jackknife():
    # a ratio of sums, paired: per pixel t ~ Bernoulli(1/2); model A: p ~ U(0, 1) independent of t
    # (global dice 1 − 2·E[pt]/(E[p] + E[t]) = 1/2); model B: p ~ U(1/2, 1) on t = 1, U(0, 1/2) on
    # t = 0 (1 − 2·0.375/1 = 1/4). The true difference A − B is 1/4.
    n = 400

    def make(rng):
        t = (rng.uniform(size=(n, 4)) < 0.5).astype(float)
        a = rng.uniform(size=(n, 4))
        b = np.where(t == 1, rng.uniform(0.5, 1, size=(n, 4)), rng.uniform(0, 0.5, size=(n, 4)))
        state = PairedState("dice(smooth=0)", ci=CIConfig())
        return state.update(preds=a, baseline=b, targets=t).result().comparison.diff_ci

    iv = make(np.random.default_rng(0))
    assert iv.method == "jackknife"
    cov = _coverage(make, 0.25)
    assert 0.93 <= cov <= 0.97, cov


@pytest.mark.parametrize("ci", [[], ["--ci"]])
def test_against_keeps_per_sample_file_and_worst(tmp_path, ci):
    t, base, cand = _pair(tmp_path, 14, 6000, 0.0)  # beyond the exact-summary limit: the fast paths' territory
    out = tmp_path / "ps.npy"
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", base, "--worst", "2", "--per-sample", out,
                 "--format", "json", *ci])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)["results"][0]
    x = (np.load(cand) - np.load(t)) ** 2
    assert np.allclose(np.load(out), x, rtol=1e-12)
    assert [w["index"] for w in res["summary"]["worst"]] == list(np.argsort(-x)[:2])
    xb = (np.load(base) - np.load(t)) ** 2
    assert res["comparison"]["baseline_value"] == pytest.approx(xb.mean(), rel=1e-12)
    assert ("ci" in res) == bool(ci)


def test_table_shows_interval_comparison_and_inconclusive(tmp_path):
    t, base, cand = _pair(tmp_path, 4, 500, 0.0)
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", base, "--ci", "--max-increase", "0.1%"])
    assert r.exit_code == 0
    assert "interval" in r.stdout and "95% clt" in r.stdout and "no_difference" in r.stdout
    assert "INCONCLUSIVE" in r.stdout


def test_against_errors_name_the_file(tmp_path):
    t, base, cand = _pair(tmp_path, 15, 50, 0.0)
    short = tmp_path / "short.npy"
    np.save(short, np.zeros(10))
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", short])
    assert r.exit_code == 2 and "short.npy" in r.stderr and "(10,)" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--against", tmp_path / "missing.npy"])
    assert r.exit_code == 2 and r.stderr.startswith("error: against: no such file")
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--max-increase", "1%"])
    assert r.exit_code == 2 and "--against" in r.stderr


def test_nan_values_give_no_interval_and_never_pass(tmp_path):
    t, base, cand = _pair(tmp_path, 16, 100, 0.0)
    p = np.load(cand)
    p[5] = np.nan
    np.save(cand, p)
    r = run_cli(["evaluate", cand, t, "--loss", "mse", "--nan-policy", "propagate", "--against", base, "--ci",
                 "--max-increase", "1%", "--fail-above", "mse=100", "--format", "json"])
    assert r.exit_code == 1, r.output
    res = json.loads(r.stdout)["results"][0]  # (valid JSON: no NaN literal)
    assert res["ci"]["low"] is None and res["ci"]["note"]
    assert res["comparison"]["verdict"] == "no_difference"
    assert {c["verdict"] for c in res["checks"]} == {"fail"}


@pytest.mark.parametrize("loss", ["mse", "mae", "huber(delta=0.5)"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clt_moments_fast_path_equals_the_kernels(monkeypatch, loss, dtype):
    """--ci without a summary keeps only the moments: the C kernel residual_moments forms them in the
    fused pass (no sketch, no heap); the interval is the kernels' to 1e-12 and the state keeps no summary."""
    from lossctl import ckernels, engine

    if ckernels.kernels is None:
        pytest.skip("C kernels not built")
    rng = np.random.default_rng(21)
    p, t = rng.standard_normal(300_001).astype(dtype), rng.standard_normal(300_001).astype(dtype)
    calls = []
    real = ckernels.kernels.residual_moments

    class Spy:
        def __getattr__(self, name):
            return getattr(real.__self__ if hasattr(real, "__self__") else ckernels.kernels, name)

        def residual_moments(self, *args):
            calls.append(1)
            return real(*args)

    fast = LossState(loss, ci=True)
    monkeypatch.setattr(ckernels, "kernels", Spy())
    fast.update(preds=p, targets=t)
    monkeypatch.undo()
    assert calls, "the fused moments path was not taken"
    assert fast.samples is None and fast.moments is not None
    monkeypatch.setattr(engine, "FAST_PATHS", False)
    slow = LossState(loss, ci=True).update(preds=p, targets=t)
    a, b = fast.result(), slow.result()
    assert a.summary is None and a.ci.method == "clt"
    assert math.isclose(a.value, b.value, rel_tol=1e-12)
    for key in ("low", "high", "se"):
        assert math.isclose(getattr(a.ci, key), getattr(b.ci, key), rel_tol=1e-12), key
    # and the reference: x̄ ± z·s/√n over the per-sample values in float64
    d = (p - t)
    v = {"mse": d * d, "mae": np.abs(d)}.get(loss)
    if v is None:
        ad = np.abs(d)
        v = np.where(ad < 0.5, 0.5 * d * d, 0.5 * (ad - 0.25))
    v = v.astype(np.float64)
    assert math.isclose(a.ci.se, float(v.std(ddof=1) / math.sqrt(v.size)), rel_tol=1e-9)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber(delta=0.5)"])
@pytest.mark.parametrize("nan_row", [None, 150_000])
def test_paired_moments_fast_path_equals_the_kernels(monkeypatch, tmp_path, loss, nan_row):
    """--against --ci on mse/mae/huber: the fused C pass forms the paired differences' moments
    (paired_moments); with a NaN (omitted) one window goes to the kernels and pairs its values there.
    Both give the kernels' interval to 1e-12, and the NumPy one."""
    from lossctl import ckernels, engine

    if ckernels.kernels is None:
        pytest.skip("C kernels not built")
    rng = np.random.default_rng(22)
    n = 300_001
    t = rng.standard_normal(n).astype("float32")
    p = (t + rng.standard_normal(n)).astype("float32")
    q = (t + 1.02 * rng.standard_normal(n)).astype("float32")
    if nan_row is not None:
        p[nan_row] = np.nan
    for name, arr in (("p", p), ("q", q), ("t", t)):
        np.save(tmp_path / f"{name}.npy", arr)
    calls = []
    real = ckernels.kernels

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def paired_moments(self, *args):
            calls.append(1)
            return real.paired_moments(*args)

    kw = dict(loss=loss, against=str(tmp_path / "q.npy"), ci=True, provenance=False, nan_policy="omit")
    monkeypatch.setattr(ckernels, "kernels", Spy())
    fast = lossctl.evaluate(str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), **kw).results[0]
    monkeypatch.setattr(ckernels, "kernels", real)
    assert calls, "the fused paired path was not taken"
    monkeypatch.setattr(engine, "FAST_PATHS", False)
    slow = lossctl.evaluate(str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), **kw).results[0]
    a, b = fast.comparison, slow.comparison
    assert math.isclose(a.diff, b.diff, rel_tol=1e-12)
    for key in ("low", "high", "se"):
        assert math.isclose(getattr(a.diff_ci, key), getattr(b.diff_ci, key), rel_tol=1e-12), key
        assert math.isclose(getattr(fast.ci, key), getattr(slow.ci, key), rel_tol=1e-12), key
    keep = np.isfinite(p)

    def f(x):
        d = (x - t)[keep]
        if loss == "mse":
            return (d * d).astype(np.float64)
        if loss == "mae":
            return np.abs(d).astype(np.float64)
        ad = np.abs(d)
        return np.where(ad < 0.5, 0.5 * d * d, 0.5 * (ad - np.float32(0.25))).astype(np.float64)

    d = f(p) - f(q)
    assert math.isclose(a.diff_ci.se, float(d.std(ddof=1) / math.sqrt(d.size)), rel_tol=1e-9)
