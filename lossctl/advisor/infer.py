"""Facts from data: ``lossctl recommend --targets FILE [--preds FILE]`` (SPEC §7).

Reads at most :data:`MAX_ELEMENTS` values from the start of each file (any format
``lossctl evaluate`` reads, through :func:`lossctl.readers.open_input`) and infers:

* targets: label kind (binary / multiclass / multilabel / soft, or for regression continuous /
  count / positive / proportion), classes, class counts (hence imbalance, pos_weight and class
  weights via the usual derivation), foreground fraction (segmentation), exact zeros, and
  outliers by the robust (median/MAD) z-score;
* predictions: whether the model outputs logits, probabilities or log-probabilities.

Facts written in the task file always win; a disagreement between the file and the data becomes
a warning in the report. Every inferred fact records how it was inferred (``--explain``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossctl.advisor.schema import Task

MAX_ELEMENTS = 4_000_000  # at most this many values are read from each file
MAX_CLASS_COUNTS = 1000  # above this many classes, class_counts is not listed
ROBUST_Z = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score


def _read_sample(spec: str, name: str) -> tuple[np.ndarray, str, int]:
    from lossctl.readers import open_input

    arr = open_input(spec, name=name)
    shape = tuple(arr.shape)
    n = shape[0] if shape else 1
    per_row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    rows = max(1, min(n, MAX_ELEMENTS // max(per_row, 1)))
    data = np.asarray(arr.read(0, rows) if shape else arr.read_all())
    if data.ndim >= 2 and data.shape[1:] == (1,):
        data = data.reshape(-1)
    label = getattr(arr, "label", spec) or spec
    return data, label, n


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[np.isfinite(a)]


def robust_z(x: np.ndarray) -> np.ndarray:
    """Modified z-score 0.6745 (x - median) / MAD (falls back to the mean absolute deviation)."""
    x = np.asarray(x, dtype=np.float64)
    med = np.median(x)
    dev = np.abs(x - med)
    mad = np.median(dev)
    if mad > 0:
        return 0.6745 * (x - med) / mad
    meanad = dev.mean()
    if meanad > 0:
        return (x - med) / (1.253314 * meanad)
    return np.zeros_like(x)


def outlier_level(x: np.ndarray) -> tuple[str, float]:
    if x.size < 20:
        return "none", 0.0
    frac = float(np.mean(np.abs(robust_z(x)) > ROBUST_Z))
    if frac > 0.01:
        return "many", frac
    if frac > 0.001:
        return "some", frac
    return "none", frac


def _skew(x: np.ndarray) -> float:
    if x.size < 3:
        return 0.0
    sd = x.std()
    if sd == 0:
        return 0.0
    return float(np.mean(((x - x.mean()) / sd) ** 3))


class _Inferrer:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.f = task.facts
        self.found: dict[str, tuple[Any, str]] = {}
        self.reported: set[str] = set()  # conflicts already explained by a specific note

    def put(self, name: str, value: Any, why: str) -> None:
        self.found.setdefault(name, (value, why))

    def commit(self) -> None:
        counts = self.found.get("class_counts")
        if counts is not None:
            n = len(counts[0])
            clash = ("classes" in self.f and self.f["classes"] != n
                     and self.f.get("labels") != "multilabel") \
                or ("labels" in self.f and "labels" in self.found
                    and self.f["labels"] != self.found["labels"][0])
            if clash:
                del self.found["class_counts"]  # counts of a different label structure
        for name, (value, why) in self.found.items():
            if name not in self.f:
                self.f[name] = value
                self.task.source[name] = f"inferred: {why}"
            elif self.f[name] != value and name not in ("class_counts",) \
                    and name not in self.reported:
                src = self.task.source.get(name, "task file")
                if src == "task file":
                    self.note("warn", f"the task file says {name}: {_show(self.f[name])}, but the "
                                      f"data suggest {name}: {_show(value)} ({why}); "
                                      f"using the task file")

    def note(self, level: str, message: str) -> None:
        if (level, message) not in self.task.notes:
            self.task.notes.append((level, message))

    # ---------------------------------------------------------------- targets
    def targets(self, data: np.ndarray, label: str, n_total: int) -> None:
        task = self.f["task"]
        vals = _finite(data)
        if vals.size == 0:
            self.note("warn", f"{label}: no finite values to infer facts from")
            return
        if task in ("classification", "segmentation"):
            self._labels(data, vals, label)
        elif task == "regression":
            self._regression(data, vals, label)
        elif task == "generative":
            if vals.min() >= 0 and vals.max() <= 1:
                self.put("data", "binary", f"{label}: all values in [0, 1] (Bernoulli decoder)")
            else:
                self.put("data", "continuous", f"{label}: values outside [0, 1]")
        elif task == "distillation":
            kind = _output_kind(data)
            if kind in ("logits", "probabilities"):
                self.put("teacher", kind, f"{label}: {_kind_why(kind)}")

    def _labels(self, data: np.ndarray, vals: np.ndarray, label: str) -> None:
        is_int = bool(np.all(vals == np.round(vals)))
        seg = self.f["task"] == "segmentation"
        if data.ndim == 2 and data.shape[1] >= 2 and not seg:
            rows = np.nan_to_num(np.asarray(data, dtype=np.float64))
            sums = rows.sum(axis=1)
            if is_int and set(np.unique(vals)) <= {0.0, 1.0}:
                counts = [int(c) for c in rows.sum(axis=0)]
                if np.all(sums == 1):
                    self.put("labels", "multiclass", f"{label}: one-hot rows")
                    self._counts(counts, label, "one-hot column sums")
                else:
                    self.put("labels", "multilabel", f"{label}: multi-hot rows "
                                                     f"(up to {int(sums.max())} labels per sample)")
                    self.put("classes", int(data.shape[1]), f"{label}: {data.shape[1]} label columns")
                    pos = rows.mean(axis=0)
                    med = float(np.median(pos))
                    if 0 < med < 1:
                        from lossctl.advisor.schema import imbalance_from_fraction
                        self.put("imbalance", imbalance_from_fraction(med),
                                 f"{label}: median positive rate per label {med:.3g}")
                return
            if vals.min() >= 0 and vals.max() <= 1 and np.allclose(sums, 1, atol=1e-3):
                self.put("labels", "soft", f"{label}: rows are probability distributions")
                self.put("classes", int(data.shape[1]), f"{label}: {data.shape[1]} columns")
                return
        if seg and data.ndim >= 4 and data.shape[1] >= 2 and is_int \
                and set(np.unique(vals)) <= {0.0, 1.0}:  # (N, C, H, W) channel masks
            chan = np.asarray(data, dtype=np.float64)
            sums = chan.sum(axis=1)
            c = int(data.shape[1])
            kind = "multiclass" if np.all(sums == 1) else "multilabel"
            self.put("labels", kind, f"{label}: {c} mask channels "
                                     f"({'one-hot' if kind == 'multiclass' else 'overlapping'})")
            self.put("classes", c, f"{label}: {c} mask channels")
            fg = float(np.mean(chan[:, 1:] > 0)) if kind == "multiclass" else float(np.mean(chan > 0))
            self.put("foreground", round(fg, 6), f"{label}: {fg:.3g} of mask values are foreground")
            return
        if not is_int:
            if vals.min() >= 0 and vals.max() <= 1:
                self.note("info", f"{label}: targets are probabilities in [0, 1], not class "
                                  "labels; BCE-style losses accept them as soft targets")
            else:
                self.note("warn", f"{label}: targets are continuous (e.g. {vals[0]:g}), not "
                                  "class labels; is this a regression task?")
            return
        uniq = np.unique(vals)
        if set(uniq) <= {-1.0, 1.0} and uniq.size == 2:
            counts = [int(np.sum(vals == -1)), int(np.sum(vals == 1))]
            self.put("labels", "binary", f"{label}: values -1/+1")
            self._counts(counts, label, "counts of -1 and +1")
            return
        if uniq.min() < 0:
            neg = uniq[uniq < 0]
            if not (seg or neg.size == 1 and neg[0] == -100):
                self.note("warn", f"{label}: negative integer targets ({int(uniq.min())}) are "
                                  "not class indices")
                return
            vals = vals[vals >= 0]  # ignore_index
            uniq = uniq[uniq >= 0]
        if uniq.size == 0:
            return
        n_classes = int(uniq.max()) + 1
        if n_classes < 2:
            n_classes = 2
        kind = "binary" if n_classes == 2 else "multiclass"
        self.put("labels", kind, f"{label}: integer labels 0..{n_classes - 1}")
        if seg:
            fg = float(np.mean(vals != 0))
            self.put("foreground", round(fg, 6), f"{label}: {fg:.3g} of pixels are non-zero")
        if n_classes <= MAX_CLASS_COUNTS:
            counts = np.bincount(vals.astype(np.int64), minlength=n_classes).tolist()
            if min(counts) == 0:
                self.put("classes", n_classes, f"{label}: largest label {n_classes - 1}")
                self.note("warn", f"{label}: some classes never occur in the sample "
                                  f"(counts {counts[:20]}); imbalance not inferred")
                return
            self._counts([int(c) for c in counts], label, "label counts")
        else:
            self.put("classes", n_classes, f"{label}: largest label {n_classes - 1}")

    def _counts(self, counts: list[int], label: str, what: str) -> None:
        self.put("classes", len(counts), f"{label}: {len(counts)} classes")
        if min(counts) > 0:
            self.put("class_counts", counts, f"{label}: {what}")

    def _regression(self, data: np.ndarray, vals: np.ndarray, label: str) -> None:
        is_int = bool(np.all(vals == np.round(vals)))
        uniq_n = np.unique(vals[: 200_000]).size
        if uniq_n <= 2:
            self.put("label_like_targets", True,
                     f"{label}: only {uniq_n} distinct values: these look like class labels")
        lo, hi = float(vals.min()), float(vals.max())
        zero_frac = float(np.mean(vals == 0))
        if lo >= 0 and uniq_n > 2:
            self.put("zeros", "many" if zero_frac >= 0.25 else "few",
                     f"{label}: {zero_frac:.3g} of targets are exactly 0")
        if uniq_n <= 2:
            kind, why = None, ""
        elif is_int and lo >= 0:
            kind, why = "count", "non-negative integers"
        elif lo >= 0 and hi <= 1:
            kind, why = "proportion", "all values in [0, 1]"
        elif lo >= 0 and _skew(vals[vals > 0]) > 1:
            kind, why = "positive", f"non-negative and right-skewed (skewness {_skew(vals[vals > 0]):.2g})"
        else:
            kind, why = "continuous", "real values"
        if kind:
            self.put("target", kind, f"{label}: {why}")
        if uniq_n > 2:
            x = np.log1p(vals) if kind in ("count", "positive") else vals
            level, frac = outlier_level(x)
            scale = " of log1p(y)" if kind in ("count", "positive") else ""
            self.put("outliers", level, f"{label}: {frac:.2%} of targets have robust z-score"
                                        f"{scale} above {ROBUST_Z}")

    # ---------------------------------------------------------------- predictions
    def preds(self, data: np.ndarray, label: str, targets: np.ndarray | None) -> None:
        task = self.f["task"]
        if task in ("classification", "segmentation", "detection", "distillation"):
            kind = _output_kind(data)
            if kind is None:
                return
            self.put("head", kind, f"{label}: {_kind_why(kind)}")
            written = self.f.get("head")
            if written in ("logits", "linear") and kind == "probabilities" \
                    and self.task.source.get("head") == "task file":
                self.note("error", f"{label}: predictions are all in [0, 1] although the task "
                                   "file says head: logits; a sigmoid/softmax head fed to "
                                   "BCE-with-logits or CrossEntropyLoss applies it twice "
                                   "(numerically wrong, vanishing gradients)")
                self.reported.add("head")
            if task == "classification":
                k = int(data.shape[1]) if data.ndim == 2 else 1
                self.put("outputs", k, f"{label}: shape {tuple(data.shape)}")
            if task == "classification" and data.ndim == 2 and data.shape[1] >= 2 \
                    and (targets is None or targets.ndim == 1):
                self.put("classes", int(data.shape[1]), f"{label}: {data.shape[1]} output columns")
        elif task == "regression" and targets is not None and data.shape == targets.shape:
            res = _finite(np.asarray(data, dtype=np.float64) - np.asarray(targets, dtype=np.float64))
            if res.size >= 20:
                level, frac = outlier_level(res)
                if level != "none":
                    self.note("info", f"{label}: {frac:.2%} of residuals have robust z-score "
                                      f"above {ROBUST_Z} (outliers: {level} by residuals)")


def _output_kind(data: np.ndarray) -> str | None:
    vals = _finite(data)
    if vals.size == 0:
        return None
    lo, hi = float(vals.min()), float(vals.max())
    if lo >= 0 and hi <= 1:
        return "probabilities"
    if hi <= 0 and data.ndim >= 2 and data.shape[1] >= 2:
        x = np.asarray(data[: min(len(data), 10_000)], dtype=np.float64)
        m = x.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))).ravel()
        lse = lse[np.isfinite(lse)]
        if lse.size and np.allclose(lse, 0, atol=1e-3):
            return "log_probabilities"
    return "logits"


def _kind_why(kind: str) -> str:
    return {"probabilities": "all values in [0, 1]",
            "log_probabilities": "rows are log-probabilities (logsumexp = 0)",
            "logits": "values outside [0, 1]"}[kind]


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def apply_inference(task: Task, targets: str | None = None, preds: str | None = None) -> Task:
    """Add facts inferred from ``targets``/``preds`` files to ``task`` (written facts win)."""
    inf = _Inferrer(task)
    t_data = None
    if targets is not None:
        t_data, label, n = _read_sample(targets, "targets")
        if n > len(t_data):
            task.notes.append(("info", f"{label}: inferred from the first {len(t_data):,} of "
                                       f"{n:,} samples"))
        inf.targets(t_data, label, n)
    if preds is not None:
        p_data, plabel, _ = _read_sample(preds, "preds")
        inf.preds(p_data, plabel, t_data)
    if not inf.found and not any(m.startswith(("targets", "preds")) for _, m in task.notes):
        task.notes.append(("info", f"no facts could be inferred from the data for task: "
                                   f"{task.facts['task']}"))
    inf.commit()
    return task


__all__ = ["apply_inference", "robust_z", "outlier_level", "MAX_ELEMENTS"]
