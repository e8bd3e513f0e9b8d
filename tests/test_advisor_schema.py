"""Task files: validation, did-you-mean errors with lines, derived facts, and the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lossctl.advisor.schema import (FACTS, TaskError, imbalance_from_fraction, imbalance_from_ratio,
                                    json_schema, load_task, normalise, public_facts)
from lossctl.advisor.yamlio import load_yaml
from lossctl.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "configs" / "task.schema.json"
TASK_FILES = sorted((ROOT / "configs" / "tasks").glob("*.yaml"))


def _write(tmp_path, text, name="task.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,needles", [
    ("task: regression\noutlier: some\n", ["task.yaml:2", "unknown key 'outlier'", "did you mean 'outliers'"]),
    ("task: regresion\n", ["task.yaml:1", "unknown task 'regresion'", "did you mean 'regression'"]),
    ("task: regression\noutliers: lots\n", ["task.yaml:2", "outliers", "'lots'", "none, some, many"]),
    ("labels: binary\n", ["missing the required key 'task'"]),
    ("- task: regression\n", ["must be a YAML mapping", "a list"]),
    ("just a string\n", ["must be a YAML mapping", "a str"]),
    ("", ["empty"]),
    ("task: classification\nclasses: 1\n", ["classes must be >= 2"]),
    ("task: classification\nclasses: two\n", ["classes must be an integer"]),
    ("task: classification\nclasses: true\n", ["classes must be an integer"]),
    ("task: classification\ncalibrated: maybe\n", ["calibrated must be true or false"]),
    ("task: classification\nminority_fraction: 0\n", ["minority_fraction must be > 0"]),
    ("task: classification\nclass_counts: [10]\n", ["at least 2 classes"]),
    ("task: classification\nclass_counts: [10, -1]\n", ["positive integers"]),
    ("task: classification\nlabels: binary\nclasses: 5\n", ["labels: binary but classes: 5"]),
    ("task: classification\nclasses: 3\nclass_counts: [1, 2]\n", ["make them agree"]),
    ("task: binary_classification\nlabels: multiclass\n", ["drop one"]),
    ("task: regression\ntask: classification\n", ["task.yaml:2", "duplicate key 'task'"]),
    ("task: regression\npos_weight: 3\n", ["unknown key 'pos_weight'", "derived"]),
    ("task: regression\nhead:\n", ["head has no value"]),
    ("task: [regression\n", ["not valid YAML"]),
    ("task: !!python/object/apply:os.system ['echo hi']\n", ["task.yaml:1", "refused"]),
    ("!!python/object/new:os.system [echo hi]\n", ["refused"]),
    ("task: !!python/name:os.system\n", ["refused"]),
])
def test_task_errors(tmp_path, text, needles):
    p = _write(tmp_path, text)
    with pytest.raises(UsageError) as exc:
        normalise_file(p)
    msg = str(exc.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def normalise_file(p):
    from lossctl.advisor.schema import derive

    return derive(load_task(p))


def test_hostile_yaml_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    p = _write(tmp_path, f"task: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(UsageError):
        load_task(p)
    assert not marker.exists()


def test_missing_and_directory(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_task(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="directory"):
        load_task(tmp_path)


@pytest.mark.parametrize("short,labels", [("binary_classification", "binary"),
                                           ("multiclass_classification", "multiclass"),
                                           ("multilabel_classification", "multilabel")])
def test_shorthands(short, labels):
    t = normalise({"task": short})
    assert t.facts["task"] == "classification" and t.facts["labels"] == labels
    assert "labels" in t.derived


def test_object_detection_shorthand():
    assert normalise({"task": "object_detection"}).facts["task"] == "detection"


def test_values_are_case_insensitive_and_aliases_canonical():
    f = normalise({"task": "Regression", "outliers": True, "framework": "torch"}).facts
    assert f == {"task": "regression", "outliers": "many", "framework": "pytorch"}
    assert normalise({"task": "regression", "outliers": False}).facts["outliers"] == "none"
    assert normalise({"task": "classification", "metric": "roc_auc"}).facts["metric"] == "auroc"


def test_derived_from_class_counts():
    t = normalise({"task": "classification", "class_counts": [300, 100]})
    f = t.facts
    assert f["classes"] == 2 and f["labels"] == "binary"
    assert f["pos_weight"] == 3.0  # PyTorch docs: 100 positives, 300 negatives -> 3
    assert f["imbalance"] == "mild" and f["imbalance_ratio"] == 3.0
    assert f["class_weights"] == [0.6667, 2.0]  # N/(C*n_c), 4 significant digits
    assert set(t.derived) >= {"classes", "labels", "pos_weight", "imbalance", "class_weights"}


def test_written_facts_win_over_derived():
    f = normalise({"task": "classification", "class_counts": [300, 100], "imbalance": "extreme"}).facts
    assert f["imbalance"] == "extreme"


def test_derived_from_minority_fraction_and_metric():
    f = normalise({"task": "binary_classification", "minority_fraction": 0.05}).facts
    assert f["imbalance"] == "moderate" and f["pos_weight"] == 19.0
    assert normalise({"task": "regression", "metric": "mae"}).facts["predict"] == "median"
    assert normalise({"task": "regression", "metric": "rmse"}).facts["predict"] == "mean"
    assert normalise({"task": "regression", "metric": "pinball"}).facts["predict"] == "quantiles"
    assert normalise({"task": "classification", "metric": "log_loss"}).facts["calibrated"] is True
    assert normalise({"task": "classification", "classes": 20000}).facts["many_classes"] is True
    f = normalise({"task": "regression", "predict": "interval"}).facts
    assert f["coverage"] == 0.9 and f["quantiles"] == [0.05, 0.95]


@pytest.mark.parametrize("f,level", [(0.5, "none"), (0.4, "none"), (0.3, "mild"), (0.2, "mild"),
                                     (0.1, "moderate"), (0.01, "moderate"), (0.005, "extreme"),
                                     (0.9, "moderate")])
def test_imbalance_from_fraction(f, level):
    assert imbalance_from_fraction(f) == level


@pytest.mark.parametrize("rho,level", [(1.0, "none"), (1.5, "none"), (4, "mild"), (99, "moderate"),
                                       (100, "extreme")])
def test_imbalance_from_ratio(rho, level):
    assert imbalance_from_ratio(rho) == level


def test_fraction_and_ratio_scales_agree():
    for f in (0.45, 0.3, 0.2, 0.1, 0.011, 0.005):
        assert imbalance_from_fraction(f) == imbalance_from_ratio((1 - f) / f), f


# --------------------------------------------------------------------- the JSON Schema

def test_schema_file_is_generated_from_the_registry():
    assert json.loads(SCHEMA.read_text()) == json_schema(), \
        "configs/task.schema.json is stale: regenerate it from lossctl.advisor.schema.json_schema()"


def test_schema_lists_exactly_the_input_facts():
    props = json.loads(SCHEMA.read_text())["properties"]
    assert set(props) == {n for n, f in FACTS.items() if not f.derived_only}


jsonschema = pytest.importorskip("jsonschema")


@pytest.mark.parametrize("path", TASK_FILES, ids=[p.name for p in TASK_FILES])
def test_example_tasks_valid_for_schema_and_loader(path):
    data = load_yaml(path, "task file")
    jsonschema.validate(dict(data), json.loads(SCHEMA.read_text()))
    normalise(dict(data))


@pytest.mark.parametrize("data", [
    {"labels": "binary"},
    {"task": "regresion"},
    {"task": "regression", "outlier": "some"},
    {"task": "regression", "outliers": "lots"},
    {"task": "classification", "classes": 1},
    {"task": "classification", "classes": 2.5},
    {"task": "classification", "calibrated": "yes please"},
    {"task": "classification", "minority_fraction": 1.5},
    {"task": "classification", "class_counts": [5]},
    {"task": "regression", "quantiles": [0.5, 1.0]},
    {"task": "regression", "coverage": 0},
    {"task": "regression", "metric": "accuracyy"},
    {"task": "regression", "pos_weight": 2.0},
])
def test_schema_and_loader_reject_the_same(data):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    with pytest.raises(TaskError):
        normalise(data)


def test_schema_and_loader_accept_every_enum_value():
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for name, prop in schema["properties"].items():
        for v in prop.get("enum", []):
            data = {"task": "regression", name: v} if name != "task" else {"task": v}
            validator.validate(data)
            normalise(data)


def test_public_facts_order():
    t = normalise({"labels": "binary", "task": "classification"})
    assert list(public_facts(t))[:2] == ["task", "labels"]
