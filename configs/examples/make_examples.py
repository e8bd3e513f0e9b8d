"""Make the files the CI example (docs/ci.md) uses, from the bundled sample data.

    python configs/examples/make_examples.py

* ``regression_preds_worse.npy``: the sample predictions with extra noise (a model that regressed),
  to show a failing baseline gate.
* ``baseline.json``: the accepted report that ``configs/scoring.yaml`` compares against, made by
  running the scoring step itself (run this from the repository root).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> None:
    rng = np.random.default_rng(20261129)
    preds = np.load(ROOT / "sample_data" / "regression_preds.npy")
    worse = preds + rng.normal(scale=0.6, size=preds.shape).astype(preds.dtype)
    np.save(HERE / "regression_preds_worse.npy", worse)
    # the same inputs and losses as configs/scoring.yaml, without its gates (no baseline exists yet)
    subprocess.run([sys.executable, "-m", "lossctl", "evaluate", "sample_data/regression_preds.npy",
                    "sample_data/regression_targets.npy", "--loss", "mse", "--loss", "mae",
                    "--loss", "huber(delta=1.0)", "--worst", "5", "--format", "json",
                    "--output", "configs/examples/baseline.json"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
