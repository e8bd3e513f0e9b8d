"""dice, iou, tversky beyond the golden cases: per-sample values, streaming statistics, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_support import cases_with_none, check_none_values, run_cli

import lossctl
from lossctl.functional import compute

NONE_CASES = cases_with_none("segmentation")


@pytest.mark.parametrize("case", NONE_CASES, ids=[c["id"] for c in NONE_CASES])
def test_reduction_none_matches_reference(case):
    check_none_values(case)


@pytest.mark.parametrize("loss", ["dice", "iou", "tversky(alpha=0.2, beta=0.8)"])
@pytest.mark.parametrize("kw", [{}, {"per_class": True}, {"per_sample": True}])
def test_global_statistics_stream_over_any_chunking(loss, kw):
    rng = np.random.default_rng(3)
    p = rng.random((13, 2, 4, 4)); t = (rng.random((13, 2, 4, 4)) > 0.5).astype(float)
    extra = ", ".join(f"{k}=true" for k in kw)
    text = loss if not extra else (loss[:-1] + ", " + extra + ")" if "(" in loss else f"{loss}({extra})")
    whole = lossctl.evaluate(p, t, text, provenance=False).results[0].value
    for chunk in (1, 4, 5, 13):
        assert lossctl.evaluate(p, t, text, chunk_size=chunk, provenance=False).results[0].value == \
            pytest.approx(whole, rel=1e-13)


def test_jaccard_alias_and_perfect_prediction():
    t = np.array([[0, 1, 1, 0]], dtype=float)
    assert compute("jaccard", t, t, smooth=0) == 0.0
    assert compute("dice", t, t) == 0.0


def test_empty_masks_smooth_zero_is_nan_reported(tmp_path, runner):
    np.save(tmp_path / "p.npy", np.zeros((2, 4))); np.save(tmp_path / "t.npy", np.zeros((2, 4)))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"),
                                      "--loss", "dice(smooth=0)", "--loss", "dice", "--format", "json"])
    assert code == 0
    doc = json.loads(out)
    assert doc["results"][0]["value"] is None and doc["results"][0]["non_finite"] == "nan"
    assert doc["results"][1]["value"] == 0.0


def test_extreme_logits_no_warnings():
    x = np.array([[[1e4, -1e4], [-1e4, 1e4]]], dtype=np.float32)  # (1, 2, 2): 2 classes, 2 pixels
    idx = np.array([[0, 1]])
    with np.errstate(over="raise", invalid="raise"):
        v = compute("dice", x, idx, from_logits=True, smooth=0)
    assert v == 0.0


@pytest.mark.parametrize("preds,targets,needle", [
    (np.full((2, 3, 4), 0.5), np.zeros((2, 5)), "(2, 3, 4)"),
    (np.full((2, 3, 4), 0.5), np.full((2, 4), 3), "class index 3"),
    (np.full((2, 4), 1.5), np.zeros((2, 4)), "from_logits=true"),
    (np.full((2, 4), 0.5), np.full((2, 4), 2.0), "mask"),
])
def test_bad_inputs_exit_2(tmp_path, runner, preds, targets, needle):
    np.save(tmp_path / "p.npy", preds); np.save(tmp_path / "t.npy", targets)
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "iou"])
    assert code == 2 and out == ""
    assert err.startswith("error:") and needle in err, err


def test_per_class_needs_class_axis(tmp_path, runner):
    np.save(tmp_path / "p.npy", np.full(4, 0.5)); np.save(tmp_path / "t.npy", np.ones(4))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"),
                                      "--loss", "dice(per_class=true)"])
    assert code == 2 and "per_class" in err
