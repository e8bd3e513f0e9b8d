"""ctc beyond the golden cases: long sequences regenerated from seeds (torch values in
tests/golden/sequence.json), per-sample values, input layouts and length errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from family_support import cases_with_none, check_none_values, run_cli, save_npz
from golden_support import GOLDEN_DIR

import lossctl
import lossctl.functional

NONE_CASES = cases_with_none("sequence")
SEEDED = json.loads((GOLDEN_DIR / "sequence.json").read_text())["seeded_cases"]


@pytest.mark.parametrize("case", NONE_CASES, ids=[c["id"] for c in NONE_CASES])
def test_reduction_none_matches_reference(case):
    check_none_values(case)


def _regenerate(case):
    g = np.random.default_rng(case["seed"])
    x = g.normal(size=(case["T"], case["N"], case["C"]))
    m = x.max(axis=2, keepdims=True)
    lp = (x - m - np.log(np.exp(x - m).sum(axis=2, keepdims=True))).astype(case["dtype"])
    targets = g.integers(1, case["high"], size=(case["N"], case["S"]))
    return {"log_probs": lp, "targets": targets, "input_lengths": np.array(case["input_lengths"]),
            "target_lengths": np.array(case["target_lengths"])}


@pytest.mark.parametrize("case", SEEDED, ids=[c["id"] for c in SEEDED])
def test_long_sequences_match_torch(case):
    inputs = _regenerate(case)
    rel = 1e-5 if case["dtype"] == "float32" else 1e-10
    report = lossctl.evaluate(inputs=inputs, loss=["ctc", "ctc(reduction=sum)"], provenance=False)
    assert math.isclose(report.results[0].value, case["expected"], rel_tol=rel)
    assert math.isclose(report.results[1].value, case["expected_sum"], rel_tol=rel)
    none = lossctl.functional.compute("ctc", reduction="none", **inputs)
    np.testing.assert_allclose(none, case["expected_none"], rtol=rel)


def test_long_sequence_through_cli_npz(tmp_path, runner):
    case = SEEDED[0]
    npz = save_npz(tmp_path / "ctc.npz", **_regenerate(case))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "ctc", "--format", "json", "--chunk-size", "1"])
    assert code == 0, err
    value = json.loads(out)["results"][0]["value"]
    assert math.isclose(value, case["expected"], rel_tol=1e-5)


def _small(**over):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2, 4))
    lp = x - np.log(np.exp(x).sum(2, keepdims=True))
    d = {"log_probs": lp, "targets": np.array([[1, 2], [3, 0]]), "input_lengths": np.array([6, 5]),
         "target_lengths": np.array([2, 1])}
    d.update(over)
    return d


def test_targets_from_positional_and_named(tmp_path, runner):
    d = _small()
    np.save(tmp_path / "lp.npy", d["log_probs"]); np.save(tmp_path / "t.npy", d["targets"])
    np.save(tmp_path / "il.npy", d["input_lengths"]); np.save(tmp_path / "tl.npy", d["target_lengths"])
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "lp.npy"), str(tmp_path / "t.npy"),
                                      "--input", f"input_lengths={tmp_path / 'il.npy'}",
                                      "--input", f"target_lengths={tmp_path / 'tl.npy'}",
                                      "--loss", "ctc", "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] == pytest.approx(lossctl.functional.compute("ctc", **d), rel=1e-12)


@pytest.mark.parametrize("over,needle", [
    ({"input_lengths": np.array([7, 5])}, "outside [0, 6]"),
    ({"input_lengths": np.array([-1, 5])}, "outside [0, 6]"),
    ({"target_lengths": np.array([3, 1])}, "only 2 columns"),
    ({"target_lengths": np.array([-1, 1])}, ">= 0"),
    ({"targets": np.array([1, 2, 3, 1]), "target_lengths": np.array([2, 1])}, "sum to 3"),
    ({"targets": np.array([[1, 4], [3, 0]])}, "outside [0, 3]"),
    ({"targets": np.array([[0, 2], [3, 0]])}, "blank"),
    ({"input_lengths": np.array([6, 5, 4])}, "(2,)"),
    ({"log_probs": np.zeros((6, 2))}, "unbatched sequence"),
    ({"log_probs": np.zeros((6, 2, 4, 1))}, "(T, N, C)"),
])
def test_bad_inputs_exit_2(tmp_path, runner, over, needle):
    npz = save_npz(tmp_path / "ctc.npz", **_small(**over))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "ctc"])
    assert code == 2 and out == ""
    assert err.startswith("error:") and needle in err, err
    assert len(err.strip().splitlines()) == 1


def test_missing_lengths_names_the_keys(tmp_path, runner):
    d = _small(); d.pop("target_lengths")
    npz = save_npz(tmp_path / "ctc.npz", **d)
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "ctc"])
    assert code == 2 and "'target_lengths'" in err and "log_probs" in err


def test_blank_out_of_range(tmp_path, runner):
    npz = save_npz(tmp_path / "ctc.npz", **_small())
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "ctc(blank=4)"])
    assert code == 2 and "blank=4" in err


def test_infeasible_is_reported_non_finite(tmp_path, runner):
    npz = save_npz(tmp_path / "ctc.npz", **_small(input_lengths=np.array([1, 5])))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "ctc", "--loss", "ctc(zero_infinity=true)",
                                      "--format", "json"])
    assert code == 0
    res = json.loads(out)["results"]
    assert res[0]["value"] is None and res[0]["non_finite"] == "inf"
    assert res[1]["value"] is not None
