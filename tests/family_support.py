"""Helpers for the family tests: per-sample (reduction='none') golden checks and CLI error runs."""

from __future__ import annotations

import json

import numpy as np
from golden_support import GOLDEN_DIR, decode_array, tolerance

import lossctl
import lossctl.functional
from lossctl.cli import app


def cases_with_none(family: str) -> list[dict]:
    doc = json.loads((GOLDEN_DIR / f"{family}.json").read_text())
    return [c for c in doc["cases"] if "expected_none" in c]


def check_none_values(case: dict) -> None:
    inputs = {k: decode_array(v) for k, v in case["inputs"].items()}
    report = lossctl.evaluate(inputs=inputs, loss=case["loss"], reduction="none", nan_policy="propagate",
                              provenance=False, worst=1)
    assert report.results[0].summary is not None
    got = lossctl.functional.compute(_bare(case["loss"]), reduction="none", **inputs, **_params(case["loss"]))
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64).reshape(-1), case["expected_none"],
                               rtol=tolerance(case), atol=tolerance(case) * 1e-3)


def _bare(loss: str) -> str:
    return loss.split("(")[0]


def _params(loss: str) -> dict:
    from lossctl.expr import parse

    return dict(parse(loss).terms[0].call.args)


def run_cli(runner, args: list[str]):
    result = runner.invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def save_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)
