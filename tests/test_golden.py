"""Every golden case (values from torch / scikit-learn, see tests/golden/) through the API and the CLI,
and chunked evaluation equal to one-shot evaluation at random chunk sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from golden_support import decode_array, load_all_cases, tolerance

import lossctl
from lossctl.cli import app

CASES = load_all_cases()
IDS = [cid for cid, _ in CASES]


def _close(actual: float, expected: float, rel: float) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(actual)
    if math.isinf(expected):
        return actual == expected
    return math.isclose(actual, expected, rel_tol=rel, abs_tol=rel * 1e-3)


def _inputs(case):
    return {name: decode_array(obj) for name, obj in case["inputs"].items()}


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=IDS)
def test_api_matches_reference(case):
    report = lossctl.evaluate(inputs=_inputs(case), loss=case["loss"], reduction=case.get("reduction", "mean"),
                              nan_policy="propagate", provenance=False)
    value = report.results[0].value
    assert _close(value, case["expected"], tolerance(case)), (value, case["expected"], case.get("source"))


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=IDS)
def test_chunked_equals_one_shot(case):
    arrays = _inputs(case)
    rng = np.random.default_rng(len(case["id"]))
    whole = lossctl.evaluate(inputs=arrays, loss=case["loss"], nan_policy="propagate", provenance=False,
                             reduction=case.get("reduction", "mean"))
    for chunk in sorted({1, 2, int(rng.integers(1, 7)), 3}):
        chunked = lossctl.evaluate(inputs=arrays, loss=case["loss"], nan_policy="propagate", provenance=False,
                                   reduction=case.get("reduction", "mean"), chunk_size=chunk)
        a, b = chunked.results[0].value, whole.results[0].value
        assert _close(a, b, 1e-12 if tolerance(case) < 1e-6 else 1e-6), (chunk, a, b)


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=IDS)
def test_cli_json_matches_reference(case, tmp_path, runner):
    args = ["evaluate"]
    for name, arr in _inputs(case).items():
        path = tmp_path / f"{name}.npy"
        np.save(path, arr)
        args += ["--input", f"{name}={path}"]
    args += ["--loss", case["loss"], "--format", "json", "--nan-policy", "propagate"]
    if case.get("reduction"):
        args += ["--reduction", case["reduction"]]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), result.stderr
    doc = json.loads(result.stdout)
    res = doc["results"][0]
    expected = case["expected"]
    if isinstance(expected, float) and not math.isfinite(expected):
        assert res["value"] is None
        assert res["non_finite"] == ("nan" if math.isnan(expected) else ("inf" if expected > 0 else "-inf"))
    else:
        assert _close(res["value"], expected, tolerance(case)), (res["value"], expected)
