"""Facts inferred from data (--targets/--preds) on generated data with known properties."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lossctl.advisor import advise
from lossctl.advisor.infer import outlier_level, robust_z
from lossctl.cli import app

RNG = np.random.default_rng(1234)


def save(tmp_path, name, arr):
    p = tmp_path / name
    np.save(p, arr)
    return str(p)


def infer(tmp_path, task, targets=None, preds=None):
    t = save(tmp_path, "t.npy", targets) if targets is not None else None
    p = save(tmp_path, "p.npy", preds) if preds is not None else None
    a = advise(dict(task), targets=t, preds=p)
    return a, a.to_json(explain=True)


def test_binary_labels_counts_and_imbalance(tmp_path):
    y = np.zeros(2000, dtype=np.int64)
    y[:100] = 1
    a, doc = infer(tmp_path, {"task": "classification"}, y)
    f = doc["task"]
    assert f["labels"] == "binary" and f["classes"] == 2 and f["class_counts"] == [1900, 100]
    assert f["imbalance"] == "moderate" and f["pos_weight"] == 19.0
    assert {"labels", "classes", "class_counts"} <= set(doc["inferred"])
    assert doc["recommendations"][0]["loss"] == "focal(alpha=0.25, gamma=2.0)"
    src = {x["fact"]: x["source"] for x in doc["explain"]["facts"]}
    assert src["class_counts"].startswith("inferred: ") and src["imbalance"].startswith("derived: ")


def test_pm1_labels_are_binary(tmp_path):
    y = RNG.choice([-1, 1], size=500)
    _, doc = infer(tmp_path, {"task": "classification"}, y)
    assert doc["task"]["labels"] == "binary"


def test_multiclass_indices(tmp_path):
    y = RNG.integers(0, 5, size=5000)
    _, doc = infer(tmp_path, {"task": "classification"}, y)
    assert doc["task"]["labels"] == "multiclass" and doc["task"]["classes"] == 5
    assert doc["task"]["imbalance"] == "none"
    assert doc["recommendations"][0]["loss"] == "cross_entropy"


def test_one_hot_and_multi_hot(tmp_path):
    idx = RNG.integers(0, 3, size=300)
    onehot = np.eye(3)[idx]
    _, doc = infer(tmp_path, {"task": "classification"}, onehot)
    assert doc["task"]["labels"] == "multiclass" and doc["task"]["classes"] == 3
    multi = (RNG.random((300, 6)) < 0.3).astype(np.float32)
    multi[0] = 1
    _, doc = infer(tmp_path, {"task": "classification"}, multi)
    assert doc["task"]["labels"] == "multilabel" and doc["task"]["classes"] == 6
    assert doc["recommendations"][0]["loss"] == "bce_with_logits"


def test_soft_labels(tmp_path):
    p = RNG.dirichlet(np.ones(4), size=200)
    _, doc = infer(tmp_path, {"task": "classification"}, p)
    assert doc["task"]["labels"] == "soft"


@pytest.mark.parametrize("make,kind", [
    (lambda: RNG.normal(size=3000), "continuous"),
    (lambda: RNG.poisson(4, size=3000), "count"),
    (lambda: RNG.lognormal(0, 1, size=3000), "positive"),
    (lambda: RNG.beta(2, 5, size=3000), "proportion"),
])
def test_regression_target_kind(tmp_path, make, kind):
    _, doc = infer(tmp_path, {"task": "regression"}, make())
    assert doc["task"]["target"] == kind
    assert "target" in doc["inferred"]


def test_regression_outliers_detected_and_change_the_advice(tmp_path):
    y = RNG.normal(size=5000)
    _, clean = infer(tmp_path, {"task": "regression"}, y)
    assert clean["task"]["outliers"] == "none"
    assert clean["recommendations"][0]["loss"] == "mse"
    y = y.copy()
    y[:200] = RNG.normal(0, 50, size=200)
    _, dirty = infer(tmp_path, {"task": "regression"}, y)
    assert dirty["task"]["outliers"] == "many"
    assert dirty["recommendations"][0]["loss"] == "huber(delta=1.0)"


def test_zero_inflated_positive(tmp_path):
    y = RNG.gamma(2.0, 3.0, size=4000)
    y[RNG.random(4000) < 0.5] = 0.0
    _, doc = infer(tmp_path, {"task": "regression"}, y)
    assert doc["task"]["zeros"] == "many" and doc["task"]["target"] == "positive"
    assert doc["recommendations"][0]["id"] == "tweedie"


def test_class_labels_in_a_regression_task_warn(tmp_path):
    y = RNG.integers(0, 2, size=400).astype(float)
    _, doc = infer(tmp_path, {"task": "regression"}, y)
    assert doc["task"]["label_like_targets"] is True
    assert any(w["rule"] == "W01" and "MSE on class labels" in w["message"] for w in doc["warnings"])


@pytest.mark.parametrize("make,head", [
    (lambda: RNG.normal(0, 3, size=(200, 4)), "logits"),
    (lambda: RNG.dirichlet(np.ones(4), size=200), "probabilities"),
    (lambda: np.log(RNG.dirichlet(np.ones(4), size=200)), "log_probabilities"),
])
def test_head_from_preds(tmp_path, make, head):
    y = RNG.integers(0, 4, size=200)
    _, doc = infer(tmp_path, {"task": "classification"}, y, make())
    assert doc["task"]["head"] == head and "head" in doc["inferred"]


def test_sigmoid_head_fed_to_bce_with_logits_is_flagged(tmp_path):
    y = RNG.integers(0, 2, size=300)
    p = 1 / (1 + np.exp(-RNG.normal(size=300)))
    _, doc = infer(tmp_path, {"task": "binary_classification", "head": "logits"}, y, p)
    assert doc["task"]["head"] == "logits"  # the task file wins
    assert "head" not in doc["inferred"]
    errs = [w for w in doc["warnings"] if w["level"] == "error" and w["rule"] == "data"]
    assert errs and "applies it twice" in errs[0]["message"]
    assert doc["recommendations"][0]["loss"] == "bce_with_logits"


def test_written_facts_win_and_conflicts_are_reported(tmp_path):
    y = RNG.integers(0, 5, size=1000)
    _, doc = infer(tmp_path, {"task": "classification", "labels": "multiclass", "classes": 7}, y)
    assert doc["task"]["classes"] == 7
    assert any("classes: 7" in w["message"] and "using the task file" in w["message"]
               for w in doc["warnings"])


def test_segmentation_foreground(tmp_path):
    masks = (RNG.random((8, 32, 32)) < 0.02).astype(np.int64)
    _, doc = infer(tmp_path, {"task": "segmentation"}, masks)
    f = doc["task"]
    assert f["labels"] == "binary" and f["foreground"] < 0.05
    assert doc["recommendations"][0]["loss"] == "bce_with_logits + dice(from_logits=true)"
    assert "S02" in doc["rules_fired"]


def test_generative_data_kind(tmp_path):
    _, doc = infer(tmp_path, {"task": "generative"}, (RNG.random((50, 10)) < 0.5).astype(float))
    assert doc["task"]["data"] == "binary"
    assert doc["recommendations"][0]["loss"] == "bce + gaussian_kl"


def test_csv_and_npz_inputs(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("y,w\n" + "\n".join(f"{int(v)},{i}" for i, v in enumerate(RNG.integers(0, 3, 300))))
    a = advise({"task": "classification"}, targets=f"{csv}:y")
    assert a.task.facts["labels"] == "multiclass"
    npz = tmp_path / "t.npz"
    np.savez(npz, y=RNG.poisson(2, 500))
    a = advise({"task": "regression"}, targets=str(npz))
    assert a.task.facts["target"] == "count"


def test_large_inputs_are_sampled(tmp_path, monkeypatch):
    import lossctl.advisor.infer as inf

    monkeypatch.setattr(inf, "MAX_ELEMENTS", 1000)
    y = np.concatenate([np.zeros(1000, dtype=np.int64), np.ones(9000, dtype=np.int64)])
    a, doc = infer(tmp_path, {"task": "classification"}, y)
    assert doc["task"]["classes"] == 2  # the sample only holds zeros; no counts are inferred
    assert "class_counts" not in doc["task"]
    assert any("first 1,000 of 10,000" in w["message"] for w in doc["warnings"])


def test_cli_targets_preds(runner, tmp_path):
    t = save(tmp_path, "t.npy", RNG.integers(0, 3, size=100))
    p = save(tmp_path, "p.npy", RNG.normal(size=(100, 3)))
    task = tmp_path / "task.yaml"
    task.write_text("task: classification\n")
    r = runner.invoke(app, ["recommend", str(task), "--targets", t, "--preds", p, "--format", "json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["inferred"]) >= {"labels", "classes", "head"}
    r = runner.invoke(app, ["recommend", str(task), "--targets", t])
    assert r.exit_code == 0 and "labels=multiclass*" in r.stdout


def test_cli_bad_targets_file(runner, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("task: classification\n")
    r = runner.invoke(app, ["recommend", str(task), "--targets", str(tmp_path / "missing.npy")])
    assert r.exit_code == 2 and r.stdout == "" and "missing.npy" in r.stderr
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = runner.invoke(app, ["recommend", str(task), "--targets", str(obj)])
    assert r.exit_code == 2 and "pickle" in r.stderr


def test_robust_z_and_levels():
    x = np.r_[np.zeros(50), np.ones(50)]
    assert np.all(np.isfinite(robust_z(x)))
    assert outlier_level(np.ones(100))[0] == "none"
    assert outlier_level(RNG.standard_t(1, size=20000))[0] == "many"


def test_two_output_head_for_binary_labels(tmp_path):
    y = RNG.integers(0, 2, size=400)
    _, doc = infer(tmp_path, {"task": "classification"}, y, RNG.normal(size=(400, 2)))
    assert doc["task"]["outputs"] == 2 and doc["task"]["labels"] == "binary"
    assert doc["recommendations"][0]["loss"] == "cross_entropy"
    _, doc = infer(tmp_path, {"task": "classification"}, y, RNG.normal(size=400))
    assert doc["task"]["outputs"] == 1
    assert doc["recommendations"][0]["loss"] == "bce_with_logits"
    assert doc["explain"]["scores"][0]["contributions"][0]["rule"] == "B01"


def test_segmentation_channel_masks(tmp_path):
    idx = RNG.integers(0, 3, size=(4, 16, 16))
    onehot = np.moveaxis(np.eye(3, dtype=np.int64)[idx], -1, 1)  # (N, C, H, W)
    _, doc = infer(tmp_path, {"task": "segmentation"}, onehot)
    assert doc["task"]["labels"] == "multiclass" and doc["task"]["classes"] == 3
    assert doc["recommendations"][0]["loss"] == "cross_entropy + dice(from_logits=true)"
    multi = (RNG.random((4, 3, 16, 16)) < 0.4).astype(np.int64)
    _, doc = infer(tmp_path, {"task": "segmentation"}, multi)
    assert doc["task"]["labels"] == "multilabel"
    assert doc["recommendations"][0]["loss"] == "bce_with_logits + dice(from_logits=true)"
