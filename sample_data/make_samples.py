"""Make the bundled example inputs (seeded, so the files are reproducible).

    python sample_data/make_samples.py

* regression: a model's predictions of a noisy linear target, 2% gross outliers in the targets
  (``regression_preds.npy``, ``regression_targets.npy``, ``regression.csv`` with y_true,y_pred)
* imbalanced binary: logits and 0/1 labels with 5% positives (``binary_logits.npy``,
  ``binary_labels.npy``, ``binary.csv`` with label,logit,prob)
* multiclass: logits (N, 5) and class indices (``multiclass_logits.npy``, ``multiclass_labels.npy``)
* slice keys for the 2,000 rows of each (``groups.csv`` with region (text, 4 values) and cohort
  (0..49)): ``--by sample_data/groups.csv:region``
"""

from __future__ import annotations

import pathlib

import numpy as np

HERE = pathlib.Path(__file__).parent


def main() -> None:
    rng = np.random.default_rng(20261129)
    n = 2000

    x = rng.normal(size=n)
    targets = 3.0 * x + 1.0 + rng.normal(scale=0.5, size=n)
    outliers = rng.random(n) < 0.02
    targets[outliers] += rng.choice([-1, 1], size=outliers.sum()) * rng.uniform(10, 30, size=outliers.sum())
    preds = 2.9 * x + 1.1 + rng.normal(scale=0.3, size=n)
    np.save(HERE / "regression_preds.npy", preds.astype(np.float32))
    np.save(HERE / "regression_targets.npy", targets.astype(np.float32))
    _write_csv(HERE / "regression.csv", ["y_true", "y_pred"], [targets, preds])

    labels = (rng.random(n) < 0.05).astype(np.int64)
    logits = rng.normal(loc=np.where(labels == 1, 1.5, -2.5), scale=1.2)
    np.save(HERE / "binary_logits.npy", logits.astype(np.float32))
    np.save(HERE / "binary_labels.npy", labels)
    probs = 1.0 / (1.0 + np.exp(-logits))
    _write_csv(HERE / "binary.csv", ["label", "logit", "prob"], [labels, logits, probs])

    n_classes = 5
    classes = rng.integers(0, n_classes, size=n)
    mc_logits = rng.normal(size=(n, n_classes))
    mc_logits[np.arange(n), classes] += 2.0
    np.save(HERE / "multiclass_logits.npy", mc_logits.astype(np.float32))
    np.save(HERE / "multiclass_labels.npy", classes.astype(np.int64))
    make_groups(n)


def make_groups(n: int) -> None:
    """``groups.csv``: its own seed, so adding it changed none of the other files."""
    rng = np.random.default_rng(20261204)
    regions = np.array(["north", "south", "east", "west"])[rng.integers(0, 4, n)]
    cohorts = rng.integers(0, 50, n)
    lines = ["region,cohort"] + [f"{r},{c}" for r, c in zip(regions, cohorts)]
    (HERE / "groups.csv").write_text("\n".join(lines) + "\n")


def _write_csv(path: pathlib.Path, header: list[str], columns: list[np.ndarray]) -> None:
    rows = [",".join(header)]
    for values in zip(*columns):
        rows.append(",".join(str(int(v)) if float(v).is_integer() and abs(v) < 1e9 and isinstance(v, np.integer)
                             else f"{float(v):.6g}" for v in values))
    path.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
