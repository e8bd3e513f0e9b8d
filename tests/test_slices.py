"""Slices (``--by``, SPEC §9): per-key values against pandas groupby, chunk/merge invariance, key
column errors, missing keys, one-row slices, per-slice gates and the scoring file's ``slices:``."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from cli_support import assert_usage_error
from lossctl import LossState
from lossctl.cli import app


def _slices(doc, i=0):
    return {s["key"]: s for s in doc["results"][i]["slices"]}


def _ce_rows(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]


def test_by_csv_column_equals_pandas_groupby_for_mse(runner, tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame({"pred": rng.normal(size=n), "target": rng.normal(size=n),
                       "group": rng.choice(["north", "south", "east", "west"], n)})
    df.loc[:9, "target"] += 5  # a worse group head: 'north' etc. differ
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    result = runner.invoke(app, ["evaluate", f"{path}:pred", f"{path}:target", "--loss", "mse",
                                 "--by", f"{path}:group", "-f", "json", "--chunk-size", "97"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    expected = df.assign(l=(df.pred - df.target) ** 2).groupby("group")["l"].agg(["mean", "size"])
    got = _slices(doc)
    assert set(got) == set(expected.index)
    for key, row in expected.iterrows():
        assert got[key]["value"] == pytest.approx(row["mean"], rel=1e-12)
        assert got[key]["samples"] == row["size"]
        assert got[key]["ci"] is None and got[key]["checks"] == []
    values = [s["value"] for s in doc["results"][0]["slices"]]
    assert values == sorted(values, reverse=True)  # worst first


def test_by_npy_equals_pandas_groupby_for_cross_entropy(runner, tmp_path):
    rng = np.random.default_rng(1)
    n, c = 1500, 5
    logits, labels = rng.normal(size=(n, c)) * 2, rng.integers(0, c, n)
    groups = rng.integers(0, 37, n)
    for name, arr in (("l", logits), ("y", labels), ("g", groups)):
        np.save(tmp_path / f"{name}.npy", arr)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "l.npy"), str(tmp_path / "y.npy"), "--loss", "cross_entropy",
                                 "--by", str(tmp_path / "g.npy"), "-f", "json"])
    assert result.exit_code == 0, result.stderr
    expected = pd.Series(_ce_rows(logits, labels)).groupby(groups).mean()
    got = _slices(json.loads(result.stdout))
    assert set(got) == set(int(k) for k in expected.index)
    for key, mean in expected.items():
        assert got[int(key)]["value"] == pytest.approx(mean, rel=1e-10)


def test_weighted_slices_are_weighted_means_per_group():
    rng = np.random.default_rng(2)
    p, t, w = rng.normal(size=300), rng.normal(size=300), rng.uniform(0, 2, 300)
    keys = rng.integers(0, 6, 300)
    r = LossState("mae").update(preds=p, targets=t, weights=w, keys=keys).result()
    df = pd.DataFrame({"wl": w * np.abs(p - t), "w": w, "k": keys}).groupby("k").sum()
    for sl in r.slices:
        assert sl.value == pytest.approx(df.loc[sl.key, "wl"] / df.loc[sl.key, "w"], rel=1e-12)


@pytest.mark.parametrize("expr", ["mse + 0.5*mae", "dice(from_logits=true)"])
def test_slices_chunk_and_merge_invariant(expr):
    """Random chunks, merged in a random order (and pickled), give the one-shot slices; a ratio loss
    (dice: the kernel runs per key) equals the loss of that key's rows alone."""
    rng = np.random.default_rng(3)
    n = 700
    if expr.startswith("dice"):
        p, t = rng.normal(size=(n, 3, 4)), rng.integers(0, 2, (n, 3, 4)).astype(float)
    else:
        p, t = rng.normal(size=n), rng.normal(size=n)
    keys = rng.choice(np.array(["a", "b", "c", "d", "e"]), n)
    one = LossState(expr).update(preds=p, targets=t, keys=keys).result()
    cuts = np.sort(rng.choice(np.arange(1, n), 9, replace=False))
    bounds = list(zip([0, *cuts], [*cuts, n]))
    states = [LossState(expr).update(preds=p[a:b], targets=t[a:b], keys=keys[a:b], start=a) for a, b in bounds]
    rng.shuffle(states)
    merged = pickle.loads(pickle.dumps(states[0]))
    for s in states[1:]:
        merged = merged.merge(pickle.loads(pickle.dumps(s)))
    got = {s.key: s for s in merged.result().slices}
    assert [s.key for s in merged.result().slices] == [s.key for s in one.slices]
    for sl in one.slices:
        assert got[sl.key].value == pytest.approx(sl.value, rel=1e-12)
        assert got[sl.key].samples == sl.samples == int((keys == sl.key).sum())
        alone = LossState(expr).update(preds=p[keys == sl.key], targets=t[keys == sl.key]).result().value
        assert sl.value == pytest.approx(alone, rel=1e-12)


def test_state_size_grows_with_keys_not_samples():
    rng = np.random.default_rng(4)
    sizes = []
    for n in (2_000, 200_000):
        s = LossState("mse").update(preds=rng.normal(size=n), targets=rng.normal(size=n), keys=rng.integers(0, 50, n))
        sizes.append(len(pickle.dumps(s)))
    assert sizes[1] < sizes[0] * 1.1


def test_key_column_of_wrong_length_is_exit_2(runner, tmp_path):
    np.save(tmp_path / "p.npy", np.zeros(10))
    np.save(tmp_path / "t.npy", np.ones(10))
    np.save(tmp_path / "g.npy", np.arange(7))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse",
                                 "--by", str(tmp_path / "g.npy")])
    assert_usage_error(result, "--by", "7 keys", "10 samples")


def test_missing_keys_are_a_slice_of_their_own(runner, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("p,t,g\n1,0,x\n2,0,\n3,0,x\n4,0,\n5,0,y\n")
    result = runner.invoke(app, ["evaluate", f"{path}:p", f"{path}:t", "--loss", "mse", "--by", f"{path}:g",
                                 "--min-slice-size", "1", "-f", "json"])
    assert result.exit_code == 0, result.stderr
    got = _slices(json.loads(result.stdout))
    assert got[None]["samples"] == 2 and got[None]["value"] == pytest.approx((4 + 16) / 2)
    assert got["x"]["value"] == pytest.approx(5.0) and got["y"]["value"] == pytest.approx(25.0)
    # NaN in a numeric key array: the same missing slice (API)
    r = LossState("mse").update(preds=np.arange(4.0), targets=np.zeros(4), keys=np.array([1.0, np.nan, 1.0, np.nan]))
    assert {s.key: s.samples for s in r.result().slices} == {1: 2, None: 2}


def test_one_slice_of_one_row(runner, tmp_path):
    p, t = np.array([0.5, 2.0, -1.0]), np.zeros(3)
    r = LossState("huber").update(preds=p, targets=t, keys=np.array([7, 7, 3])).result()
    got = {s.key: s for s in r.slices}
    assert got[3].samples == 1 and got[3].value == pytest.approx(0.5)  # huber(1): |x|-0.5 = 0.5
    assert got[7].value == pytest.approx((0.125 + 1.5) / 2)


def _gate_files(tmp_path):
    # group a: 40 rows with squared error 4; group b: 5 rows with error 9; group c: 40 rows error 0.25
    p = np.concatenate([np.full(40, 2.0), np.full(5, 3.0), np.full(40, 0.5)])
    g = np.array(["a"] * 40 + ["b"] * 5 + ["c"] * 40)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", np.zeros(len(p)))
    np.save(tmp_path / "g.npy", g)
    return [str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse", "--by", str(tmp_path / "g.npy")]


def test_gate_slices_respects_min_slice_size(runner, tmp_path):
    base = ["evaluate", *_gate_files(tmp_path), "--fail-above", "mse=3", "-f", "json"]
    # overall mse = (160 + 45 + 10) / 85 = 2.53: passes; without --gate-slices the slices are not gated
    plain = runner.invoke(app, base)
    assert plain.exit_code == 0, plain.stderr
    assert all(s["checks"] == [] for s in json.loads(plain.stdout)["results"][0]["slices"])
    gated = runner.invoke(app, base + ["--gate-slices"])
    assert gated.exit_code == 1
    got = _slices(json.loads(gated.stdout))
    assert got["a"]["checks"][0]["passed"] is False and got["a"]["checks"][0]["slice"] == "a"
    assert got["c"]["checks"][0]["passed"] is True
    assert got["b"]["value"] == pytest.approx(9.0) and got["b"]["checks"] == [] and got["b"]["gated"] is False
    assert "[slice a]" in gated.stderr
    smaller = runner.invoke(app, base + ["--gate-slices", "--min-slice-size", "5"])
    assert _slices(json.loads(smaller.stdout))["b"]["checks"][0]["passed"] is False
    bigger = runner.invoke(app, base + ["--gate-slices", "--min-slice-size", "41"])
    assert bigger.exit_code == 0 and all(not s["gated"] for s in json.loads(bigger.stdout)["results"][0]["slices"])


def test_markdown_shows_worst_slices_bounded(runner, tmp_path):
    rng = np.random.default_rng(5)
    n = 400
    for name, arr in (("p", rng.normal(size=n)), ("t", np.zeros(n)), ("g", rng.integers(0, 25, n))):
        np.save(tmp_path / f"{name}.npy", arr)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse",
                                 "--by", str(tmp_path / "g.npy"), "-f", "markdown"])
    assert result.exit_code == 0
    assert "Worst slices of `mse`** (25 slices)" in result.stdout
    assert "… 15 more slices" in result.stdout
    worst = LossState("mse").update(preds=np.load(tmp_path / "p.npy"), targets=np.zeros(n),
                                    keys=np.load(tmp_path / "g.npy")).result().slices[0]
    assert f"| `{worst.key}` | {worst.samples} |" in result.stdout


def test_slice_options_need_by_and_scoring_file_slices(runner, tmp_path):
    args = _gate_files(tmp_path)
    result = runner.invoke(app, ["evaluate", *args[:4], "--gate-slices"])
    assert_usage_error(result, "--by")
    cfg = tmp_path / "scoring.yaml"
    cfg.write_text(f"inputs: {{preds: {args[0]}, targets: {args[1]}}}\nlosses: [mse]\nfail_above: {{mse: 3}}\n"
                   f"slices: {{by: {args[5]}, min_size: 5, gate: true}}\n")
    result = runner.invoke(app, ["evaluate", "--config", str(cfg), "-f", "json"])
    assert result.exit_code == 1
    assert _slices(json.loads(result.stdout))["b"]["checks"][0]["passed"] is False


def test_slice_failures_in_junit_and_github_annotations(runner, tmp_path):
    import xml.etree.ElementTree as ET

    base = ["evaluate", *_gate_files(tmp_path), "--fail-above", "mse=3", "--gate-slices"]
    result = runner.invoke(app, base + ["-f", "junit"])
    assert result.exit_code == 1
    root = ET.fromstring(result.stdout)
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed == ["mse [slice a] <= 3"]
    assert len(list(root.iter("testcase"))) == 3  # the loss, slices a and c (b is below --min-slice-size)
    result = runner.invoke(app, base + ["--github"], env={"GITHUB_STEP_SUMMARY": str(tmp_path / "s.md")})
    assert result.exit_code == 1
    assert "::error" in result.stderr and "[slice a]" in result.stderr
