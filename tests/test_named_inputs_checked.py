"""An explicitly named input that no requested loss takes is an error, not silently ignored
(issue 14): ``--input NAME=PATH``, ``lossctl.evaluate(inputs=...)`` and ``LossState.update(NAME=...)``.
Extra keys of an .npz PREDS are not named explicitly and stay allowed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_support import run_cli, save_npz

import lossctl
from lossctl import LossState
from lossctl.errors import UsageError


def _ctc_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 2, 4))
    lp = x - np.log(np.exp(x).sum(2, keepdims=True))
    return {"log_probs": lp, "targets": np.array([[1, 2], [3, 0]]), "input_lengths": np.array([6, 5]),
            "target_lengths": np.array([2, 1])}


def test_cli_misspelt_ctc_input_is_exit_2_with_did_you_mean(tmp_path, runner):
    d = _ctc_inputs()
    npz = save_npz(tmp_path / "ctc.npz", log_probs=d["log_probs"], targets=d["targets"],
                   target_lengths=d["target_lengths"], input_lengths=d["input_lengths"])
    np.save(tmp_path / "il.npy", d["input_lengths"])
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "ctc", "--input", f"input_length={tmp_path / 'il.npy'}"])
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "'input_length'" in err and "did you mean 'input_lengths'?" in err
    assert "ctc takes log_probs, targets, input_lengths, target_lengths" in err


def test_cli_weights_input_for_mse_is_exit_2(tmp_path, runner):
    p, t = np.arange(4.0), np.zeros(4)
    for name, arr in (("p", p), ("t", t), ("w", np.ones(4))):
        np.save(tmp_path / f"{name}.npy", arr)
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse",
                                      "--input", f"weights={tmp_path / 'w.npy'}"])
    assert code == 2 and out == ""
    assert "unknown input 'weights'; per-sample weights are --weights PATH" in err and "mse takes preds, targets" in err


def test_cli_input_taken_by_one_of_several_losses_is_fine(tmp_path, runner):
    d = _ctc_inputs()
    npz = save_npz(tmp_path / "ctc.npz", log_probs=d["log_probs"], targets=d["targets"],
                   target_lengths=d["target_lengths"])
    np.save(tmp_path / "il.npy", d["input_lengths"])
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "ctc", "--loss", "ctc(reduction=sum)",
                                      "--input", f"input_lengths={tmp_path / 'il.npy'}", "--format", "json"])
    assert code == 0, err
    want = lossctl.evaluate(inputs=d, loss="ctc", provenance=False).results[0].value
    assert json.loads(out)["results"][0]["value"] == pytest.approx(want, rel=1e-12)


def test_npz_preds_with_extra_keys_is_not_an_error(tmp_path, runner):
    npz = save_npz(tmp_path / "b.npz", preds=np.arange(3.0), targets=np.zeros(3), notes=np.ones(7))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "mse", "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] == pytest.approx(5 / 3)


def test_api_inputs_unknown_name():
    with pytest.raises(UsageError, match=r"unknown input 'input_length'; did you mean 'input_lengths'\?"):
        lossctl.evaluate(loss="ctc", inputs={**_ctc_inputs(), "input_length": np.array([6, 5])}, provenance=False)


def test_state_update_unknown_name():
    s = LossState("mse")
    with pytest.raises(UsageError, match="unknown input 'weight'.*mse takes preds, targets"):
        s.update(preds=np.arange(3.0), targets=np.zeros(3), weight=np.ones(3))
    assert s.terms[0].samples == 0
