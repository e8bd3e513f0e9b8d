"""The task-file vocabulary (SPEC §7): the fact registry, loading, normalisation and derived facts.

The registry :data:`FACTS` is the single source of truth: the task loader validates against it,
the rules loader rejects conditions over unknown facts or values with it, and
``configs/task.schema.json`` is generated from it (:func:`json_schema`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossctl.errors import UsageError
from lossctl.words import did_you_mean


@dataclass(frozen=True)
class Fact:
    """One task fact: its type, its closed value set (enums) and what it means."""

    name: str
    kind: str  # enum | bool | int | float | fraction | int_list | fraction_list | float_list | text
    doc: str
    values: tuple[str, ...] = ()
    minimum: float | None = None
    exclusive_min: bool = False
    maximum: float | None = None
    exclusive_max: bool = False
    aliases: dict[Any, str] = field(default_factory=dict)  # accepted spelling -> canonical value
    derived_only: bool = False  # computed, never written in a task file


TASKS = ("regression", "classification", "segmentation", "detection", "embedding", "ranking",
         "sequence", "generative", "distillation", "survival")
TASK_SHORTHANDS = {
    "binary_classification": ("classification", "binary"),
    "multiclass_classification": ("classification", "multiclass"),
    "multilabel_classification": ("classification", "multilabel"),
    "object_detection": ("detection", None),
}
METRICS = ("accuracy", "balanced_accuracy", "f1", "macro_f1", "precision", "recall", "auroc",
           "auprc", "log_loss", "brier", "ece", "mse", "rmse", "r2", "mae", "mape", "rmsle",
           "pinball", "crps", "dice", "iou", "miou", "hd95", "map", "ndcg", "mrr", "wer", "cer",
           "bleu", "qwk")
METRIC_ALIASES = {"roc_auc": "auroc", "auc": "auroc", "pr_auc": "auprc",
                  "average_precision": "auprc", "logloss": "log_loss", "nll": "log_loss",
                  "cross_entropy": "log_loss", "jaccard": "iou", "mean_iou": "miou",
                  "kappa": "qwk", "quadratic_kappa": "qwk", "map50": "map"}

_FACT_LIST = [
    Fact("task", "enum", "the learning task (required)", TASKS,
         aliases={k: v[0] for k, v in TASK_SHORTHANDS.items()}),
    Fact("labels", "enum", "label structure (classification, segmentation)",
         ("binary", "multiclass", "multilabel", "ordinal", "soft")),
    Fact("classes", "int", "number of classes (classes: 2 implies labels: binary)", minimum=2),
    Fact("head", "enum", "what the model outputs",
         ("logits", "probabilities", "log_probabilities", "linear", "embedding")),
    Fact("imbalance", "enum", "class imbalance (or give minority_fraction / class_counts)",
         ("none", "mild", "moderate", "extreme")),
    Fact("minority_fraction", "fraction", "fraction of samples in the rarest class",
         minimum=0.0, exclusive_min=True, maximum=1.0),
    Fact("class_counts", "int_list", "samples per class, in class-index order"),
    Fact("outliers", "enum", "outliers in the regression targets", ("none", "some", "many"),
         aliases={True: "many", False: "none"}),
    Fact("tails", "enum", "tails of the target/noise distribution", ("light", "heavy")),
    Fact("target", "enum", "kind of regression target",
         ("continuous", "count", "positive", "proportion")),
    Fact("zeros", "enum", "how many targets are exactly zero", ("few", "many")),
    Fact("noise", "enum", "label noise", ("none", "some", "heavy")),
    Fact("predict", "enum", "the functional to predict",
         ("mean", "median", "quantiles", "interval", "distribution")),
    Fact("quantiles", "fraction_list", "quantile levels to predict (predict: quantiles)",
         minimum=0.0, exclusive_min=True, maximum=1.0, exclusive_max=True),
    Fact("coverage", "fraction", "nominal coverage of a prediction interval (predict: interval)",
         minimum=0.0, exclusive_min=True, maximum=1.0, exclusive_max=True),
    Fact("calibrated", "bool", "calibrated probabilities are needed"),
    Fact("metric", "enum", "the metric the model is judged by", METRICS, aliases=METRIC_ALIASES),
    Fact("second_order", "bool", "the optimiser uses second derivatives (Newton, GBDT objective)"),
    Fact("margin", "bool", "a maximum-margin (SVM-style) classifier is wanted"),
    Fact("framework", "enum", "which code to show",
         ("pytorch", "keras", "lightgbm", "xgboost", "sklearn", "any"),
         aliases={"torch": "pytorch", "tensorflow": "keras", "tf": "keras",
                  "scikit-learn": "sklearn", "lgbm": "lightgbm"}),
    Fact("foreground", "fraction", "fraction of foreground pixels (segmentation)",
         minimum=0.0, maximum=1.0),
    Fact("boundary", "enum", "how much boundary accuracy matters", ("normal", "important")),
    Fact("detector", "enum", "detector architecture", ("one_stage", "two_stage", "set_prediction")),
    Fact("supervision", "enum", "embedding supervision (positive_pairs: positives only, the "
         "other items of the batch are the negatives)",
         ("pairs", "triplets", "class_labels", "views", "positive_pairs")),
    Fact("alignment", "enum", "is the input/target alignment known (sequence)", ("none", "per_step")),
    Fact("relevance", "enum", "relevance labels (ranking)", ("binary", "graded", "pairwise")),
    Fact("data", "enum", "what a generative model reconstructs", ("binary", "continuous")),
    Fact("teacher", "enum", "what the teacher provides (distillation)", ("logits", "probabilities")),
    Fact("model", "enum", "generative model family",
         ("vae", "gan", "diffusion", "flow", "autoregressive")),
    Fact("sequence", "enum", "sequence output: transcription (monotonic: speech, OCR, handwriting), "
         "generation (free order: translation, summarisation, captioning), tagging (one label "
         "per step)", ("transcription", "generation", "tagging")),
    Fact("censoring", "enum", "censoring of the event times (survival)", ("none", "right", "interval")),
    Fact("fn_cost", "float", "cost of a false negative (classification, segmentation)",
         minimum=0.0, exclusive_min=True),
    Fact("fp_cost", "float", "cost of a false positive (classification, segmentation)",
         minimum=0.0, exclusive_min=True),
    Fact("under_cost", "float", "cost per unit of under-prediction (regression)",
         minimum=0.0, exclusive_min=True),
    Fact("over_cost", "float", "cost per unit of over-prediction (regression)",
         minimum=0.0, exclusive_min=True),
    Fact("negative_sampling", "fraction", "fraction of negatives kept in training (calibration "
         "correction)", minimum=0.0, exclusive_min=True, maximum=1.0),
    Fact("thin_structures", "bool", "thin or tubular foreground (vessels, roads, cracks)"),
    Fact("range", "float_list", "[low, high]: the regression target is bounded"),
    Fact("overdispersed", "bool", "count variance well above the mean"),
    Fact("exposure", "bool", "each row has an exposure/offset (insurance, rates)"),
    Fact("description", "text", "free text, ignored by the rules"),
    # Derived only: computed from the facts above, usable in rules, printed by --explain.
    Fact("imbalance_ratio", "float", "n_max / n_min from class_counts", minimum=1.0,
         derived_only=True),
    Fact("pos_weight", "float", "n_neg / n_pos (BCEWithLogitsLoss pos_weight)", minimum=0.0,
         derived_only=True),
    Fact("class_weights", "float_list", "balanced class weights N / (C * n_c)", derived_only=True),
    Fact("many_classes", "bool", "classes >= 10000", derived_only=True),
    Fact("outputs", "int", "model outputs per sample (from the --preds shape)", minimum=1,
         derived_only=True),
    Fact("label_like_targets", "bool", "regression targets look like class labels (--targets)",
         derived_only=True),
    Fact("cost_quantile", "fraction", "under_cost / (under_cost + over_cost): the cost-optimal "
         "quantile", minimum=0.0, maximum=1.0, derived_only=True),
    Fact("cost_pos_weight", "float", "fn_cost / fp_cost: the cost-optimal positive weight",
         minimum=0.0, derived_only=True),
    Fact("tversky_alpha", "fraction", "fp_cost / (fn_cost + fp_cost): Tversky FP weight",
         minimum=0.0, maximum=1.0, derived_only=True),
    Fact("tversky_beta", "fraction", "fn_cost / (fn_cost + fp_cost): Tversky FN weight",
         minimum=0.0, maximum=1.0, derived_only=True),
    Fact("range_low", "float", "lower end of range", derived_only=True),
    Fact("range_high", "float", "upper end of range", derived_only=True),
]
FACTS: dict[str, Fact] = {f.name: f for f in _FACT_LIST}
# Derived facts and the written facts they come from: a rule over the derived fact covers them.
DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "cost_quantile": ("under_cost", "over_cost"), "cost_pos_weight": ("fn_cost", "fp_cost"),
    "tversky_alpha": ("fn_cost", "fp_cost"), "tversky_beta": ("fn_cost", "fp_cost"),
    "range_low": ("range",), "range_high": ("range",),
}
# Values that say "nothing special": no rule needs to mention them for the answer to cover them.
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "imbalance": ("none",), "outliers": ("none",), "tails": ("light",), "zeros": ("few",),
    "noise": ("none",), "predict": ("mean",), "boundary": ("normal",), "censoring": (),
    "target": ("continuous",),
}
INPUT_FACTS = [f.name for f in _FACT_LIST if not f.derived_only]


def _where(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line else source


class TaskError(UsageError):
    pass


def check_value(fact: Fact, value: Any, where: str) -> Any:
    """Validate and canonicalise one value for ``fact``; raise a one-line UsageError if wrong."""
    from lossctl.errors import cut
    name = fact.name
    if value is None:
        raise TaskError(f"{where}: {name} has no value; write e.g. '{name}: {_example(fact)}'")
    if fact.kind == "enum":
        if isinstance(value, bool) or not isinstance(value, str):
            if isinstance(value, bool) and value in fact.aliases:
                return fact.aliases[value]
            raise TaskError(f"{where}: {name}: {cut(repr(value))} is not one of {', '.join(fact.values)}")
        v = value.strip().lower()
        if v in fact.values:
            return v
        if v in fact.aliases:
            return fact.aliases[v]
        allowed = list(fact.values) + [a for a in fact.aliases if isinstance(a, str)]
        raise TaskError(f"{where}: unknown {name} {value!r}{did_you_mean(v, allowed)} "
                        f"(allowed: {', '.join(fact.values)})")
    if fact.kind == "bool":
        if isinstance(value, bool):
            return value
        raise TaskError(f"{where}: {name} must be true or false, not {value!r}")
    if fact.kind == "text":
        if isinstance(value, str):
            return value
        raise TaskError(f"{where}: {name} must be a string, not {value!r}")
    if fact.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TaskError(f"{where}: {name} must be an integer, not {value!r}")
        _check_range(fact, value, where)
        return value
    if fact.kind in ("float", "fraction"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TaskError(f"{where}: {name} must be a number, not {value!r}")
        _check_range(fact, float(value), where)
        return float(value)
    if fact.kind in ("int_list", "fraction_list", "float_list"):
        if not isinstance(value, list) or not value:
            raise TaskError(f"{where}: {name} must be a non-empty list, e.g. "
                            f"'{name}: {_example(fact)}'")
        out = []
        for item in value:
            if fact.kind == "int_list":
                if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                    raise TaskError(f"{where}: {name} must list positive integers, "
                                    f"not {item!r}")
                out.append(item)
            else:
                if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                    raise TaskError(f"{where}: {name} must list numbers, not {item!r}")
                _check_range(fact, float(item), where)
                out.append(float(item))
        if name == "range" and (len(out) != 2 or not out[0] < out[1]):
            raise TaskError(f"{where}: range must be [low, high] with low < high, got {value!r}")
        if fact.kind == "int_list" and len(out) < 2:
            raise TaskError(f"{where}: {name} needs at least 2 classes, got {out}")
        return out
    raise AssertionError(fact.kind)  # pragma: no cover


def _check_range(fact: Fact, v: float, where: str) -> None:
    lo, hi = fact.minimum, fact.maximum
    bad = ((lo is not None and (v < lo or (fact.exclusive_min and v == lo)))
           or (hi is not None and (v > hi or (fact.exclusive_max and v == hi))))
    if bad:
        lo_s = "" if lo is None else ("> " if fact.exclusive_min else ">= ") + f"{lo:g}"
        hi_s = "" if hi is None else ("< " if fact.exclusive_max else "<= ") + f"{hi:g}"
        rng = " and ".join(s for s in (lo_s, hi_s) if s)
        raise TaskError(f"{where}: {fact.name} must be {rng}, got {v:g}")


def _example(fact: Fact) -> str:
    return {"enum": fact.values[0] if fact.values else "x", "bool": "true", "int": "2",
            "float": "1.0", "fraction": "0.1", "int_list": "[900, 100]",
            "fraction_list": "[0.1, 0.5, 0.9]", "float_list": "[1.0, 2.0]",
            "text": "'...'"}[fact.kind]


# --------------------------------------------------------------------------------------------
# Task loading and derived facts


@dataclass
class Task:
    """Normalised task facts plus bookkeeping of where each fact came from."""

    facts: dict[str, Any]
    source: dict[str, str]  # fact -> "task file" | "derived: ..." | "inferred: ..."
    path: str = ""
    notes: list[str] = field(default_factory=list)  # conflicts between sources, for warnings

    @property
    def derived(self) -> list[str]:
        return [k for k, v in self.source.items() if v.startswith("derived")]

    @property
    def inferred(self) -> list[str]:
        return [k for k, v in self.source.items() if v.startswith("inferred")]


def load_task(path: str | Path) -> Task:
    from lossctl.advisor.yamlio import load_yaml

    data = load_yaml(path, "task file")
    return task_from_mapping(data, str(path))


def task_from_mapping(data: Any, source: str = "task") -> Task:
    """Validate a parsed task mapping (written facts only); derivation is :func:`derive`."""
    if data is None:
        raise TaskError(f"{source}: the task file is empty; write at least 'task: regression'")
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise TaskError(f"{source}: a task file must be a YAML mapping of facts "
                        f"(e.g. 'task: regression'), but this one is {kind}")
    facts: dict[str, Any] = {}
    src: dict[str, str] = {}
    shorthand_labels = None
    for key, value in data.items():
        line = getattr(data, "lines", {}).get(key)
        where = _where(source, line)
        if not isinstance(key, str):
            raise TaskError(f"{where}: keys must be strings, not {key!r}")
        k = key.strip().lower()
        fact = FACTS.get(k)
        if fact is None or fact.derived_only:
            hint = did_you_mean(k, INPUT_FACTS)
            why = " (it is derived, not written)" if fact is not None else ""
            raise TaskError(f"{where}: unknown key {key!r}{why}{hint} "
                            f"(allowed: {', '.join(INPUT_FACTS)})")
        if k == "task" and isinstance(value, str) and value.strip().lower() in TASK_SHORTHANDS:
            shorthand_labels = TASK_SHORTHANDS[value.strip().lower()][1]
        facts[k] = check_value(fact, value, where)
        src[k] = "task file"
    if "task" not in facts:
        raise TaskError(f"{source}: missing the required key 'task' "
                        f"(one of {', '.join(TASKS)})")
    if shorthand_labels is not None:
        if "labels" in facts and facts["labels"] != shorthand_labels:
            raise TaskError(f"{source}: task {data.get('task')!r} says labels are "
                            f"{shorthand_labels} but labels: {facts['labels']}; drop one")
        if "labels" not in facts:
            facts["labels"] = shorthand_labels
            src["labels"] = f"derived: task: {data.get('task')}"
    return Task(facts=facts, source=src, path=source)


def _sig(x: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits (for weights printed in expressions)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, max(0, digits - 1 - int(math.floor(math.log10(abs(x))))))


def imbalance_from_fraction(f: float) -> str:
    f = min(f, 1.0 - f) if f > 0.5 else f
    if f >= 0.4:
        return "none"
    if f >= 0.2:
        return "mild"
    if f >= 0.01:
        return "moderate"
    return "extreme"


def imbalance_from_ratio(rho: float) -> str:
    if rho <= 1.5:
        return "none"
    if rho <= 4:
        return "mild"
    if rho <= 99:
        return "moderate"
    return "extreme"


def derive(task: Task) -> Task:
    """Fill in derived facts (SPEC §7, ADVISOR §3). Written and inferred facts are never changed."""
    f, src = task.facts, task.source

    def put(name: str, value: Any, why: str) -> None:
        if name not in f:
            f[name] = value
            src[name] = f"derived: {why}"

    counts = f.get("class_counts")
    if counts:
        if "classes" in f and f["classes"] != len(counts) and f.get("labels") != "multilabel":
            raise TaskError(f"{task.path}: classes: {f['classes']} but class_counts lists "
                            f"{len(counts)} classes; make them agree")
        put("classes", len(counts), f"len(class_counts) = {len(counts)}")
    classes = f.get("classes")
    if classes is not None and "labels" not in f and f["task"] in ("classification", "segmentation"):
        if classes == 2:
            put("labels", "binary", "classes: 2")
        else:
            put("labels", "multiclass", f"classes: {classes}")
    if f.get("labels") == "binary" and classes is not None and classes != 2:
        raise TaskError(f"{task.path}: labels: binary but classes: {classes}; "
                        "use labels: multiclass or classes: 2")
    if classes is not None and classes >= 10000:
        put("many_classes", True, f"classes: {classes} >= 10000")
    if counts:
        n_min, n_max, total = min(counts), max(counts), sum(counts)
        rho = n_max / n_min
        put("imbalance_ratio", _sig(rho), f"max/min of class_counts = {n_max}/{n_min}")
        if f.get("labels") != "multilabel":
            put("minority_fraction", _sig(n_min / total), f"{n_min}/{total} from class_counts")
        put("imbalance", imbalance_from_ratio(rho), f"class_counts ratio {_sig(rho, 3)}:1")
        if len(counts) == 2 and f.get("labels") != "multilabel":
            put("pos_weight", _sig(counts[0] / counts[1]),
                f"n_neg/n_pos = {counts[0]}/{counts[1]} (class 1 is the positive class)")
        if f.get("labels") != "multilabel":
            put("class_weights", [_sig(total / (len(counts) * c)) for c in counts],
                "N / (C * n_c) from class_counts (scikit-learn 'balanced')")
    mf = f.get("minority_fraction")
    if mf is not None and "imbalance" not in f:
        put("imbalance", imbalance_from_fraction(mf), f"minority_fraction {mf:g}")
    if mf is not None and "pos_weight" not in f and f.get("labels", "binary") == "binary" \
            and f["task"] in ("classification", "segmentation") and 0 < mf < 1:
        minority = min(mf, 1 - mf)
        put("pos_weight", _sig((1 - minority) / minority),
            f"(1 - f)/f with f = {minority:g}, assuming the positive class is the minority")
    metric = f.get("metric")
    if metric is not None:
        by_metric = {"mse": "mean", "rmse": "mean", "r2": "mean", "mae": "median",
                     "pinball": "quantiles", "crps": "distribution"}
        if metric in by_metric and f["task"] == "regression":
            put("predict", by_metric[metric], f"metric: {metric}")
        if metric in ("log_loss", "brier", "ece") and f["task"] == "classification":
            put("calibrated", True, f"metric: {metric} is a calibration-sensitive score")
    under, over = f.get("under_cost"), f.get("over_cost")
    if under is not None and over is not None and f["task"] == "regression":
        q = _sig(under / (under + over), 3)
        put("cost_quantile", q, f"under_cost / (under_cost + over_cost) = {under:g}/{under + over:g}")
    fn, fp = f.get("fn_cost"), f.get("fp_cost")
    if fn is not None and fp is not None:
        put("cost_pos_weight", _sig(fn / fp), f"fn_cost / fp_cost = {fn:g}/{fp:g}")
        put("tversky_alpha", _sig(fp / (fn + fp), 3), "fp_cost / (fn_cost + fp_cost)")
        put("tversky_beta", _sig(fn / (fn + fp), 3), "fn_cost / (fn_cost + fp_cost)")
    rng = f.get("range")
    if rng is not None:
        put("range_low", rng[0], "range[0]")
        put("range_high", rng[1], "range[1]")
    if "quantiles" in f:
        put("predict", "quantiles", "quantiles given")
    if "coverage" in f:
        put("predict", "interval", "coverage given")
    if f.get("predict") == "quantiles":
        put("quantiles", [0.1, 0.5, 0.9], "default quantile levels")
    if f.get("predict") == "interval":
        cov = f.get("coverage", 0.9)
        put("coverage", cov, "default nominal coverage 0.9")
        lo = _sig((1 - cov) / 2)
        put("quantiles", [lo, _sig(1 - lo)], f"(1 -/+ coverage)/2 with coverage {cov:g}")
    return task


def normalise(data: Any, source: str = "task") -> Task:
    """Validate + derive, for a mapping given in Python."""
    return derive(task_from_mapping(data, source))


def public_facts(task: Task) -> dict[str, Any]:
    """The facts as printed in JSON: task vocabulary order, written + inferred + derived."""
    return {name: task.facts[name] for name in FACTS if name in task.facts}


# --------------------------------------------------------------------------------------------
# JSON Schema for editors (configs/task.schema.json is generated from this and tested)


def json_schema() -> dict[str, Any]:
    props: dict[str, Any] = {}
    for fact in _FACT_LIST:
        if fact.derived_only:
            continue
        props[fact.name] = _schema_for(fact)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/lossctl/lossctl/configs/task.schema.json",
        "title": "lossctl recommend task file",
        "description": "Facts about a learning task for 'lossctl recommend' (SPEC section 7). "
                       "Generated from lossctl/advisor/schema.py; do not edit by hand.",
        "type": "object",
        "required": ["task"],
        "additionalProperties": False,
        "properties": props,
    }


def _schema_for(fact: Fact) -> dict[str, Any]:
    s: dict[str, Any] = {"description": fact.doc}
    if fact.kind == "enum":
        str_aliases = [a for a in fact.aliases if isinstance(a, str)]
        s["type"] = ["string", "boolean"] if any(isinstance(a, bool) for a in fact.aliases) else "string"
        s["enum"] = list(fact.values) + str_aliases + [a for a in fact.aliases if isinstance(a, bool)]
    elif fact.kind == "bool":
        s["type"] = "boolean"
    elif fact.kind == "text":
        s["type"] = "string"
    elif fact.kind == "int":
        s["type"] = "integer"
        s.update(_bounds(fact))
    elif fact.kind in ("float", "fraction"):
        s["type"] = "number"
        s.update(_bounds(fact))
    elif fact.kind == "int_list":
        s.update({"type": "array", "minItems": 2, "items": {"type": "integer", "minimum": 1}})
    else:
        s.update({"type": "array", "minItems": 1, "items": {"type": "number", **_bounds(fact)}})
        if fact.name == "range":
            s.update({"minItems": 2, "maxItems": 2})
    return s


def _bounds(fact: Fact) -> dict[str, Any]:
    b: dict[str, Any] = {}
    if fact.minimum is not None:
        b["exclusiveMinimum" if fact.exclusive_min else "minimum"] = fact.minimum
    if fact.maximum is not None:
        b["exclusiveMaximum" if fact.exclusive_max else "maximum"] = fact.maximum
    return b
