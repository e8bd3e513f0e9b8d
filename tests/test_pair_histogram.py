"""``--against``'s distribution of per-row differences (``comparison.histogram``) and the bundle's
``paired_differences.png``: counts against ``np.histogram`` of the differences computed here (exact
up to 4,096 rows, within the sketch's 2^-7 relative resolution beyond), chunk/merge/pickle
invariance, and the figure in the report bundle."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from lossctl.api import evaluate
from lossctl.cli import app
from lossctl.report.bundle import NO_PLOT, write_bundle
from lossctl.state import PairedState
from test_report_bundle import _check_bundle, _check_pngs

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
RES = 2.0 ** -7  # a sketch bucket's midpoint is within this relative distance of every value in it


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n)
    p = t + rng.normal(size=n)
    b = t + 1.1 * rng.normal(size=n)
    return p, t, b, (p - t) ** 2 - (b - t) ** 2  # the per-row differences of mse, candidate − baseline


def test_exact_histogram_matches_numpy():
    p, t, b, d = _data(3000)
    hist = PairedState("mse", histogram=True).update(preds=p, baseline=b, targets=t).result().comparison.histogram
    counts, edges = np.histogram(d, bins=40, range=(d.min(), d.max()))
    assert hist["approx"] is False and hist["non_finite"] == 0
    assert np.allclose(hist["edges"], edges, rtol=1e-12, atol=1e-12)
    assert hist["counts"] == counts.tolist() and sum(hist["counts"]) == 3000
    assert hist["mean"] == pytest.approx(d.mean(), rel=1e-12)


def test_sketched_histogram_within_the_buckets_resolution():
    p, t, b, d = _data(20_000, seed=1)
    hist = PairedState("mae", histogram=True).update(preds=p, baseline=b, targets=t).result().comparison.histogram
    d = np.abs(p - t) - np.abs(b - t)
    assert hist["approx"] is True and sum(hist["counts"]) == 20_000
    edges = np.asarray(hist["edges"])
    assert edges[0] == d.min() and edges[-1] == d.max()  # (min and max are exact)
    low, high = d - RES * np.abs(d), d + RES * np.abs(d)  # where the value's bucket midpoint can be
    for i, got in enumerate(hist["counts"]):
        a, z = edges[i], edges[i + 1]
        last = i == len(hist["counts"]) - 1
        surely = ((low >= a) & ((high <= z) if last else (high < z))).sum()
        maybe = ((high >= a) & ((low <= z) if last else (low < z))).sum()
        assert surely <= got <= maybe, (i, surely, got, maybe)
    exact, _ = np.histogram(d, bins=edges)
    assert np.abs(np.asarray(hist["counts"]) - exact).sum() <= 0.01 * len(d)  # a few values at the edges move


@pytest.mark.parametrize("n", [3000, 12_000])  # exact values, then the sketch
def test_split_merge_pickle_invariance(n):
    p, t, b, _ = _data(n, seed=2)
    whole = PairedState("mse", histogram=True).update(preds=p, baseline=b, targets=t).result().comparison.histogram
    cuts = [0, n // 5, n // 2, n]
    parts = [PairedState("mse", histogram=True).update(preds=p[s:e], baseline=b[s:e], targets=t[s:e], start=s)
             for s, e in zip(cuts, cuts[1:])]
    parts = [pickle.loads(pickle.dumps(s)) for s in parts]
    for merged in (parts[0].merge(parts[1]).merge(parts[2]), parts[2].merge(parts[0].merge(parts[1]))):
        merged = pickle.loads(pickle.dumps(merged))
        got = merged.result().comparison.histogram
        assert got["counts"] == whole["counts"] and got["edges"] == whole["edges"]
        assert got["approx"] == whole["approx"] and got["mean"] == pytest.approx(whole["mean"], rel=1e-12)
    # through the API at two chunk sizes (one pass over both models)
    a = evaluate(p, t, "mse", against=b, summary=True, chunk_size=1000).results[0].comparison.histogram
    assert a["counts"] == whole["counts"] and a["edges"] == whole["edges"]


def test_degenerate_and_off_by_default():
    p, t, _, _ = _data(500)
    same = PairedState("mse", histogram=True).update(preds=p, baseline=p, targets=t).result().comparison.histogram
    assert same["counts"] == [500] and same["edges"] == [-0.5, 0.5] and same["mean"] == 0.0
    assert evaluate(p, t, "mse", against=p).results[0].comparison.histogram is None  # plain --against: no pairs
    assert evaluate(p, t, "mse", against=p, ci=True).results[0].comparison.histogram is None
    with_ci = evaluate(p, t, "mse", against=p, ci=True, summary=True).results[0].comparison
    assert sum(with_ci.histogram["counts"]) == 500 and with_ci.diff_ci is not None
    q = p.copy()
    q[3] = np.inf  # an infinite loss: its difference is not binned, it is counted apart
    inf = PairedState("mse", histogram=True).update(preds=q, baseline=p, targets=t).result().comparison.histogram
    assert inf["non_finite"] == 1 and sum(inf["counts"]) == 499


class _Axes:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append((name, a))


def test_figure_panel_draws_zero_mean_and_interval():
    from lossctl.report.figures import _paired_panel

    ax = _Axes()
    r = {"loss": "mse", "comparison": {"diff_ci": [-0.3, -0.1],
                                       "histogram": {"edges": [-1.0, 0.0, 1.0], "counts": [3, 1], "mean": -0.2}}}
    _paired_panel(ax, r)
    names = [c[0] for c in ax.calls]
    assert ("stairs", ([3, 1], [-1.0, 0.0, 1.0])) in ax.calls
    assert ("axvspan", (-0.3, -0.1)) in ax.calls
    assert [c[1][0] for c in ax.calls if c[0] == "axvline"] == [0.0, -0.2]
    assert "set_title" in names


def _baseline_file(tmp_path):
    preds = np.load(SAMPLES / "regression_preds.npy")
    rng = np.random.default_rng(5)
    path = tmp_path / "baseline_preds.npy"
    np.save(path, (preds + rng.normal(scale=0.3, size=preds.shape)).astype(np.float32))
    return path


def test_bundle_with_against_draws_paired_differences(runner, tmp_path):
    base = _baseline_file(tmp_path)
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["evaluate", str(SAMPLES / "regression_preds.npy"), str(SAMPLES / "regression_targets.npy"),
                                 "--loss", "mae", "--against", str(base), "--ci", "--report-dir", str(out), "-f", "json"])
    assert result.exit_code == 0, result.stderr
    manifest = _check_bundle(out)
    pngs = [f["name"] for f in manifest["files"] if f["name"].endswith(".png")]
    assert "paired_differences.png" in pngs
    _check_pngs(out, pngs)
    md = (out / "report.md").read_text()
    assert "Paired differences: `paired_differences.png`" in md and "no per-row differences" not in md
    cmp = json.loads((out / "report.json").read_text())["results"][0]["comparison"]
    p, t = (np.load(SAMPLES / f"regression_{k}.npy").astype(np.float64) for k in ("preds", "targets"))
    d = np.abs(p - t) - np.abs(np.load(base).astype(np.float64) - t)
    counts, _ = np.histogram(d, bins=40, range=(d.min(), d.max()))
    assert cmp["histogram"]["counts"] == counts.tolist() and sum(cmp["histogram"]["counts"]) == 2000
    # stdout is the report without the bundle's per-sample summaries and reliability bins
    bundle_only = ("summary", "calibration")
    assert json.loads(result.stdout)["results"] == [{k: v for k, v in r.items() if k not in bundle_only}
                                                    for r in json.loads((out / "report.json").read_text())["results"]]
    plain = runner.invoke(app, ["evaluate", str(SAMPLES / "regression_preds.npy"), str(SAMPLES / "regression_targets.npy"),
                                "--loss", "mae", "--against", str(base), "-f", "json"])
    assert plain.exit_code == 0 and "histogram" not in json.loads(plain.stdout)["results"][0]["comparison"]


def test_bundle_with_against_without_matplotlib_keeps_the_note(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "lossctl.report.figures", raising=False)
    report = evaluate(SAMPLES / "regression_preds.npy", SAMPLES / "regression_targets.npy", "mse",
                      against=_baseline_file(tmp_path), summary=True)
    manifest = write_bundle(report, str(tmp_path / "b"))
    assert manifest["figures"] is False and manifest["note"] == NO_PLOT
    assert not [f for f in manifest["files"] if f["name"].endswith(".png")]
    assert NO_PLOT in (tmp_path / "b" / "report.md").read_text()
    doc = json.loads((tmp_path / "b" / "report.json").read_text())
    assert sum(doc["results"][0]["comparison"]["histogram"]["counts"]) == 2000


def test_histogram_with_ci_counts_every_row_past_the_fused_paths():
    """--against --ci alone takes a fused C pass that makes no per-row values; with the histogram
    the rows must still be paired one by one (a count short of n would mean the fused pass ran)."""
    from lossctl.state import PairedState

    rng = np.random.default_rng(5)
    n = 300_001
    t = rng.standard_normal(n).astype("float32")
    p, q = t + rng.standard_normal(n).astype("float32"), t + rng.standard_normal(n).astype("float32")
    s = PairedState("mse", ci=True, histogram=True).update(preds=p, baseline=q, targets=t)
    assert sum(s.result().comparison.histogram["counts"]) == n
