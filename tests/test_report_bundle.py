"""The report bundle (``--report-dir``, SPEC §10): files, PNG validity, a self-contained HTML page,
manifest hashes, the 65,536-character markdown limit, the no-matplotlib bundle, and the reliability
bins' expected calibration error against NumPy."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cli_support import assert_usage_error
from lossctl import LossState
from lossctl.api import evaluate
from lossctl.cli import app
from lossctl.report.bundle import CUT_NOTE, MAX_MARKDOWN, NO_PLOT, fit_markdown, write_bundle

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data", "poster"):
                self.refs.append(value or "")


def _check_bundle(directory: Path) -> dict:
    manifest = json.loads((directory / "manifest.json").read_text())
    listed = {f["name"] for f in manifest["files"]}
    assert listed | {"manifest.json"} == set(os.listdir(directory))  # every file, nothing else (no temp files)
    for f in manifest["files"]:
        data = (directory / f["name"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    md = (directory / "report.md").read_text(encoding="utf-8")
    assert len(md) <= MAX_MARKDOWN
    page = (directory / "report.html").read_text(encoding="utf-8")
    links = _Links()
    links.feed(page)
    assert all(r.startswith(("data:", "#")) for r in links.refs), links.refs
    assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", page.replace("data:image/png;base64,", ""))
    assert "url(" not in page and "@import" not in page
    json.loads((directory / "report.json").read_text())
    return manifest


def _check_pngs(directory: Path, names) -> None:
    import matplotlib.image

    for name in names:
        data = (directory / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        img = matplotlib.image.imread(directory / name)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_bundle_on_the_sample_data(runner, tmp_path):
    out = tmp_path / "new" / "bundle"  # created, parents too
    groups = tmp_path / "groups.npy"
    n = len(np.load(SAMPLES / "multiclass_labels.npy"))
    np.save(groups, np.arange(n) % 12)
    result = runner.invoke(app, ["evaluate", str(SAMPLES / "multiclass_logits.npy"), str(SAMPLES / "multiclass_labels.npy"),
                                 "--loss", "cross_entropy", "--loss", "focal", "--by", str(groups),
                                 "--report-dir", str(out), "-f", "json"])
    assert result.exit_code == 0, result.stderr
    manifest = _check_bundle(out)
    pngs = [f["name"] for f in manifest["files"] if f["name"].endswith(".png")]
    assert {"distribution.png", "values.png", "reliability.png", "slices.png"} <= set(pngs)
    _check_pngs(out, pngs)
    bundle_only = ("summary", "calibration")  # (stdout shows them only when asked: --worst)
    assert [{k: v for k, v in r.items() if k not in bundle_only}
            for r in json.loads((out / "report.json").read_text())["results"]] == json.loads(result.stdout)["results"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    md = (out / "report.md").read_text()
    assert "paired differences: no per-row differences" in md  # (no --against in this run)
    # regression samples: a CSV input, no classification loss: no reliability diagram, and it says why
    reg = tmp_path / "reg"
    result = runner.invoke(app, ["evaluate", str(SAMPLES / "regression_preds.npy"), str(SAMPLES / "regression_targets.npy"),
                                 "--loss", "mse", "--loss", "huber(delta=0.5)", "--report-dir", str(reg)])
    assert result.exit_code == 0, result.stderr
    manifest = _check_bundle(reg)
    pngs = [f["name"] for f in manifest["files"] if f["name"].endswith(".png")]
    assert "reliability.png" not in pngs and "distribution.png" in pngs
    _check_pngs(reg, pngs)
    assert "reliability: no probabilistic classification loss" in (reg / "report.md").read_text()


def test_bundle_without_matplotlib_has_no_pngs_and_says_so(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.delitem(sys.modules, "lossctl.report.figures", raising=False)
    report = evaluate(SAMPLES / "regression_preds.npy", SAMPLES / "regression_targets.npy", "mse", summary=True)
    manifest = write_bundle(report, str(tmp_path / "b"))
    assert manifest["figures"] is False and manifest["note"] == NO_PLOT
    assert not [n for n in os.listdir(tmp_path / "b") if n.endswith(".png")]
    _check_bundle(tmp_path / "b")
    assert NO_PLOT in (tmp_path / "b" / "report.md").read_text()
    assert NO_PLOT.replace("'", "&#x27;") in (tmp_path / "b" / "report.html").read_text()


def test_long_markdown_is_cut_with_a_note(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    p, t, keys = rng.normal(size=n), rng.normal(size=n), rng.integers(0, 40, n)
    losses = [f"huber(delta={d / 100:.2f}) + {i}*mae" for i, d in enumerate(range(1, 121))]
    report = evaluate(p, t, losses, by=keys, worst=20)
    manifest = write_bundle(report, str(tmp_path / "b"))
    md = (tmp_path / "b" / "report.md").read_text(encoding="utf-8")
    assert len(md) <= MAX_MARKDOWN and md.endswith(CUT_NOTE)
    assert md.startswith("### lossctl evaluate")
    assert {f["name"] for f in manifest["files"]} >= {"report.json", "report.md", "report.html"}
    assert fit_markdown("short") == "short"
    assert len(fit_markdown("x\n" * 40_000)) <= MAX_MARKDOWN


def test_report_dir_that_is_a_file_is_exit_2(runner, tmp_path):
    path = tmp_path / "taken"
    path.write_text("keep me")
    result = runner.invoke(app, ["evaluate", str(SAMPLES / "regression_preds.npy"),
                                 str(SAMPLES / "regression_targets.npy"), "--loss", "mse", "--report-dir", str(path)])
    assert_usage_error(result, "--report-dir", "not a directory")
    assert path.read_text() == "keep me"


def _ece(conf, correct, bins=15):
    b = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for i in range(bins):
        m = b == i
        if m.any():
            total += m.sum() / len(conf) * abs(correct[m].mean() - conf[m].mean())
    return total


def test_reliability_ece_matches_numpy_and_merges():
    logits = np.load(SAMPLES / "multiclass_logits.npy").astype(np.float64)
    labels = np.load(SAMPLES / "multiclass_labels.npy")
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    expected = _ece(prob.max(axis=1), (prob.argmax(axis=1) == labels).astype(float))
    one = LossState("cross_entropy", calibration=True).update(preds=logits, targets=labels).result()
    assert one.calibration["ece"] == pytest.approx(expected, rel=1e-12)
    assert sum(one.calibration["count"]) == len(labels)
    half = len(labels) // 3
    a = LossState("cross_entropy", calibration=True).update(preds=logits[:half], targets=labels[:half])
    b = LossState("cross_entropy", calibration=True).update(preds=logits[half:], targets=labels[half:])
    assert b.merge(a).result().calibration["ece"] == pytest.approx(expected, rel=1e-12)
    # binary: bce_with_logits on the sample's binary logits (confidence max(p, 1-p))
    x = np.load(SAMPLES / "binary_logits.npy").astype(np.float64).reshape(-1)
    y = np.load(SAMPLES / "binary_labels.npy").astype(np.float64).reshape(-1)
    p = 1 / (1 + np.exp(-x))
    expected = _ece(np.maximum(p, 1 - p), ((p >= 0.5) == (y >= 0.5)).astype(float))
    got = LossState("bce_with_logits", calibration=True).update(preds=x, targets=y).result().calibration
    assert got["ece"] == pytest.approx(expected, rel=1e-9)
    assert LossState("mse", calibration=True).update(preds=x, targets=y).result().calibration is None


def test_scoring_file_report_dir(runner, tmp_path):
    cfg = tmp_path / "scoring.yaml"
    cfg.write_text(f"inputs: {{preds: {SAMPLES / 'regression_preds.npy'}, targets: {SAMPLES / 'regression_targets.npy'}}}\n"
                   f"losses: [mae]\nslices: {{by: {SAMPLES / 'groups.csv'}:region}}\nreport: {{dir: out/bundle}}\n")
    result = runner.invoke(app, ["evaluate", "--config", str(cfg)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads((tmp_path / "out" / "bundle" / "report.json").read_text())
    assert {s["key"] for s in doc["results"][0]["slices"]} == {"north", "south", "east", "west"}
    _check_bundle(tmp_path / "out" / "bundle")


class _Axes:
    def __init__(self):
        self.calls = []

    def errorbar(self, x, y, xerr, **kw):
        self.calls.append(("errorbar", x[0], xerr[0][0], xerr[1][0]))

    def plot(self, x, y, *a, **kw):
        self.calls.append(("plot", x[0]))


def test_whiskers_follow_the_spec_json_shape():
    """Results carrying SPEC §9's ``ci`` get whiskers, others points; the baseline comes from a
    ``comparison`` block, else from a baseline check."""
    from lossctl.report.figures import _baseline_value, _point

    ax = _Axes()
    _point(ax, 1.0, 0, {"low": 0.8, "high": 1.5, "level": 0.95, "method": "clt", "se": 0.1}, "b")
    _point(ax, 2.0, 1, None, "b")
    _point(ax, None, 2, None, "b")
    assert ax.calls == [("errorbar", 1.0, pytest.approx(0.2), pytest.approx(0.5)), ("plot", 2.0)]
    assert _baseline_value({"comparison": {"baseline_value": 0.7}, "checks": []}) == 0.7
    assert _baseline_value({"checks": [{"kind": "baseline", "baseline": 0.9}]}) == 0.9
    assert _baseline_value({"checks": []}) is None


@pytest.mark.parametrize("fmt, extra", [("json", []), ("markdown", []), ("table", []), ("json", ["--worst", "3"])])
def test_report_dir_does_not_change_what_stdout_shows(runner, tmp_path, fmt, extra):
    """The bundle needs per-sample summaries and reliability bins; stdout shows them only when asked
    (--worst), as without --report-dir. The bundle's report.json keeps them."""
    args = ["evaluate", str(SAMPLES / "multiclass_logits.npy"), str(SAMPLES / "multiclass_labels.npy"),
            "--loss", "cross_entropy", "--format", fmt, "--hash", "none", *extra]
    plain = runner.invoke(app, args)
    bundled = runner.invoke(app, [*args, "--report-dir", str(tmp_path / "b")])
    assert plain.exit_code == bundled.exit_code == 0, bundled.stderr
    if fmt == "json":  # (float32 logits: the summary's kernel path and the fused path agree to ~1e-9)
        a, b = json.loads(plain.stdout)["results"][0], json.loads(bundled.stdout)["results"][0]
        assert a.keys() == b.keys() and ("summary" in a) == bool(extra)
        assert b["value"] == pytest.approx(a["value"], rel=1e-7)
    else:
        assert bundled.stdout == plain.stdout
    saved = json.loads((tmp_path / "b" / "report.json").read_text())
    assert saved["results"][0]["summary"] is not None and saved["results"][0]["calibration"]
