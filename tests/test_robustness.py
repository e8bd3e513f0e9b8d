"""Robustness: whatever shapes, dtypes and values the files hold, every loss answers with a result
(exit 0) or one `error:` line (exit 2) — never an internal error (exit 4) or a traceback."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import lossctl.losses  # noqa: F401  (registers the built-in losses)
from lossctl.cli import app
from lossctl.registry import all_specs

SHAPES = [(), (1,), (5,), (5, 1), (5, 3), (3, 5), (5, 3, 2), (0,), (0, 3), (4, 3, 2, 2)]
KINDS = [("f64", "int"), ("prob", "prob"), ("f32", "bool"), ("nan", "f64")]
COMBOS = list(itertools.product(SHAPES, SHAPES, KINDS))


def _array(rng, shape, kind):
    if kind == "int":
        return rng.integers(0, 3, size=shape)
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind == "prob":
        return rng.random(shape)
    a = rng.normal(size=shape).astype(np.float32 if kind == "f32" else np.float64)
    if kind == "nan" and a.size:
        a.flat[0] = np.nan
    return a


@pytest.mark.parametrize("name", [s.name for s in all_specs() if s.family != "custom"])
def test_no_internal_errors_on_arbitrary_inputs(name, runner, tmp_path):
    rng = np.random.default_rng(sum(map(ord, name)))
    picks = rng.choice(len(COMBOS), size=24, replace=False)
    p, t = tmp_path / "p.npy", tmp_path / "t.npy"
    for i in picks:
        sp, st, (kp, kt) = COMBOS[i]
        np.save(p, _array(rng, sp, kp))
        np.save(t, _array(rng, st, kt))
        result = runner.invoke(app, ["evaluate", str(p), str(t), "--loss", name, "--format", "json"])
        case = (name, sp, st, kp, kt, result.stderr)
        assert result.exit_code in (0, 1, 2), case
        assert "Traceback" not in result.stderr, case
        if result.exit_code == 2:
            assert result.stderr.startswith("error: ") and result.stdout == "", case
        else:
            json.loads(result.stdout)
