"""Classification losses on small cases worked out by hand (derivation beside each), their domains
and parameter ranges (exit 2 with one `error:` line naming the file), shapes and the NaN policy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cli_support import assert_usage_error as _assert_usage_error
from cli_support import evaluate_arrays as _cli

import lossctl
from lossctl import functional as F

LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------- binary


def test_bce_by_hand():
    # -log 0.9 and -log(1 - 0.2) → mean
    assert F.bce([0.9, 0.2], [1, 0]) == pytest.approx((-math.log(0.9) - math.log(0.8)) / 2, rel=1e-15)
    # soft target 0.25 at p = 0.5: -(0.25 log .5 + 0.75 log .5) = log 2
    assert F.bce([0.5], [0.25]) == pytest.approx(LN2, rel=1e-15)
    # p exactly 0 or 1: log clamped at -100, so a wrong certain answer costs 100, a right one 0
    np.testing.assert_array_equal(F.bce([0.0, 1.0, 1.0, 0.0], [1, 0, 1, 0], reduction="none"),
                                  [100.0, 100.0, 0.0, 0.0])
    # weight: scalar scales everything; a per-column list scales each column
    assert F.bce([0.5, 0.5], [1, 0], weight=3.0) == pytest.approx(3 * LN2, rel=1e-15)
    assert F.bce([[0.5, 0.5]], [[1, 0]], weight=[1.0, 3.0]) == pytest.approx((LN2 + 3 * LN2) / 2, rel=1e-15)


def test_bce_with_logits_by_hand():
    # x = 0 → σ = 1/2 → log 2 whatever the target
    assert F.bce_with_logits([0.0, 0.0], [1, 0]) == pytest.approx(LN2, rel=1e-15)
    # pos_weight multiplies the positive term: t = 1 → 3 log 2; t = 0 unchanged → log 2
    np.testing.assert_allclose(F.bce_logits([0.0, 0.0], [1, 0], pos_weight=3.0, reduction="none"),
                               [3 * LN2, LN2], rtol=1e-15)
    # per-column pos_weight and weight: column 0 (t=1): 2·1·log 2; column 1 (t=1): 0.5·4·log 2
    assert F.bce_with_logits([[0.0, 0.0]], [[1, 1]], pos_weight=[1.0, 4.0], weight=[2.0, 0.5]) == \
        pytest.approx((2 * LN2 + 2 * LN2) / 2, rel=1e-15)
    # x = ln 3: σ = 3/4; t = 1 → log(4/3), t = 0 → log 4
    np.testing.assert_allclose(F.bce_with_logits([math.log(3)] * 2, [1, 0], reduction="none"),
                               [math.log(4 / 3), math.log(4)], rtol=1e-15)


def test_binary_focal_by_hand():
    # x = 0 → p_t = 1/2, ce = log 2; α_t = 0.25 (t=1) or 0.75 (t=0); (1 - p_t)² = 1/4
    np.testing.assert_allclose(F.focal([0.0, 0.0], [1, 0], reduction="none"),
                               [0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2], rtol=1e-15)
    # alpha=none, gamma=0 is plain bce_with_logits
    x, t = np.array([1.3, -0.2, 2.0]), np.array([1.0, 0.0, 0.0])
    assert F.focal(x, t, alpha=None, gamma=0.0) == pytest.approx(F.bce_with_logits(x, t), rel=1e-15)
    # torchvision: a negative alpha disables the α weighting, like none
    assert F.focal(x, t, alpha=-1.0) == pytest.approx(F.focal(x, t, alpha=None), rel=1e-15)


def test_binary_hinge_by_hand():
    # max(0, 1 - t s): s = [0.5, -2, 0], t = [1, -1, 1] → [0.5, 0, 1] → mean 0.5
    assert F.hinge([0.5, -2, 0], [1, -1, 1]) == pytest.approx(0.5, rel=1e-15)
    # {0, 1} labels mean {-1, 1}
    assert F.hinge([0.5, -2, 0], [1, 0, 1]) == pytest.approx(0.5, rel=1e-15)
    # squared: [0.25, 0, 1] → 1.25/3; margin 2: [1.5, 0, 2] → 3.5/3
    assert F.hinge([0.5, -2, 0], [1, -1, 1], squared=True) == pytest.approx(1.25 / 3, rel=1e-15)
    assert F.hinge([0.5, -2, 0], [1, -1, 1], margin=2.0) == pytest.approx(3.5 / 3, rel=1e-15)


# ---------------------------------------------------------------------------------- multiclass


def test_cross_entropy_by_hand():
    # logits [ln 3, 0, 0] → softmax [3/5, 1/5, 1/5]; target 0 → log(5/3); target 1 → log 5
    x = np.array([[math.log(3), 0.0, 0.0]] * 2)
    np.testing.assert_allclose(F.cross_entropy(x, [0, 1], reduction="none"), [math.log(5 / 3), math.log(5)],
                               rtol=1e-15)
    # class weights [1, 3, 1]: Σ w_y l / Σ w_y = (1·log(5/3) + 3·log 5) / 4
    assert F.ce(x, [0, 1], weight=[1.0, 3.0, 1.0]) == \
        pytest.approx((math.log(5 / 3) + 3 * math.log(5)) / 4, rel=1e-15)
    # ignore_index: the ignored sample counts in neither numerator nor denominator
    assert F.cross_entropy(x, [0, -100]) == pytest.approx(math.log(5 / 3), rel=1e-15)
    assert F.cross_entropy(x, [0, 2], ignore_index=2) == pytest.approx(math.log(5 / 3), rel=1e-15)
    # label smoothing ε = 0.3, C = 3: (1 - ε)(-log p_y) + ε/C Σ_c(-log p_c)
    smooth = 0.7 * math.log(5 / 3) + 0.1 * (math.log(5 / 3) + 2 * math.log(5))
    assert F.cross_entropy(x[:1], [0], label_smoothing=0.3) == pytest.approx(smooth, rel=1e-14)
    # probability targets [0.5, 0.5, 0]: 0.5 log(5/3) + 0.5 log 5, divided by N only
    assert F.cross_entropy(x[:1], np.array([[0.5, 0.5, 0.0]])) == \
        pytest.approx(0.5 * math.log(5 / 3) + 0.5 * math.log(5), rel=1e-15)
    # unbatched (C,) logits with a 0-d target
    assert F.cross_entropy(x[0], np.array(1)) == pytest.approx(math.log(5), rel=1e-15)


def test_cross_entropy_label_smoothing_with_weight_by_hand():
    # torch: (1 - ε) Σ w_y l_y / Σ w_y + ε/C Σ_i Σ_c w_c (-log p_ic) / Σ w_y
    x = np.array([[math.log(3), 0.0, 0.0], [0.0, 0.0, 0.0]])
    w, eps = [2.0, 1.0, 0.5], 0.2
    nll = [math.log(5 / 3), math.log(3)]  # sample 0 → class 0, sample 1 → class 2 (uniform)
    smooth = [2 * math.log(5 / 3) + 1 * math.log(5) + 0.5 * math.log(5), (2 + 1 + 0.5) * math.log(3)]
    wy = [2.0, 0.5]
    want = (1 - eps) * (wy[0] * nll[0] + wy[1] * nll[1]) / 2.5 + eps / 3 * sum(smooth) / 2.5
    assert F.cross_entropy(x, [0, 2], weight=w, label_smoothing=eps) == pytest.approx(want, rel=1e-14)


def test_cross_entropy_all_ignored_is_nan_with_a_warning(runner, tmp_path):
    result = _cli(runner, tmp_path, np.zeros((2, 3)), np.array([-100, -100]), "--loss", "cross_entropy",
                  "--format", "json")
    assert result.exit_code == 0, result.stderr
    res = json.loads(result.stdout)["results"][0]
    assert res["value"] is None and res["non_finite"] == "nan"
    assert "warning" in result.stderr and "nan" in result.stderr


def test_nll_by_hand():
    # -x_y: [0.1, 0.4] → mean 0.25; weights [1, 3]: (1·0.1 + 3·0.4)/4 = 0.325
    lp = [[-0.1, -2.4], [-1.2, -0.4]]
    assert F.nll(lp, [0, 1]) == pytest.approx(0.25, rel=1e-15)
    assert F.nll(lp, [0, 1], weight=[1.0, 3.0]) == pytest.approx(0.325, rel=1e-15)
    assert F.nll(lp, [0, 1], ignore_index=1) == pytest.approx(0.1, rel=1e-15)


def test_multiclass_focal_by_hand():
    # logits [0, 0] → p = 1/2; -α (1 - p)^γ log p = α · 1/4 · log 2
    x = np.zeros((2, 2))
    assert F.focal(x, [0, 1]) == pytest.approx(0.25 * 0.25 * LN2, rel=1e-15)
    # per-class α [0.1, 0.9]: mean(0.1, 0.9) · 1/4 · log 2
    assert F.focal(x, [0, 1], alpha=[0.1, 0.9]) == pytest.approx(0.5 * 0.25 * LN2, rel=1e-15)
    # γ = 0, no α: cross-entropy
    rng = np.random.default_rng(5)
    z, y = rng.normal(size=(6, 4)), rng.integers(0, 4, 6)
    assert F.focal(z, y, alpha=None, gamma=0.0) == pytest.approx(F.cross_entropy(z, y), rel=1e-14)


def test_multiclass_hinge_by_hand():
    # Crammer–Singer: max(0, 1 + max_{j≠y} s_j - s_y)
    # [1, 2, 0], y=0 → 1 + 2 - 1 = 2; y=1 → max(0, 1 + 1 - 2) = 0
    assert F.hinge([[1.0, 2.0, 0.0]] * 2, [0, 1], reduction="none").tolist() == [2.0, 0.0]
    assert F.hinge([[1.0, 2.0, 0.0]], [0], squared=True) == 4.0


def test_multi_margin_by_hand():
    # torch docs: x = [0.1, 0.2, 0.4, 0.8], y = 3: (1-0.8+0.1) + (1-0.8+0.2) + (1-0.8+0.4) = 1.3 → /4 = 0.325
    x = [[0.1, 0.2, 0.4, 0.8]]
    assert F.multi_margin(x, [3]) == pytest.approx(0.325, rel=1e-14)
    # p = 2: (0.09 + 0.16 + 0.36)/4 = 0.1525; weight of class 3 = 2 doubles the sample
    assert F.multi_margin(x, [3], p=2) == pytest.approx(0.1525, rel=1e-14)
    assert F.multi_margin(x, [3], weight=[1.0, 1.0, 1.0, 2.0]) == pytest.approx(0.65, rel=1e-14)
    # margin 0.5: (0.5-0.7)^+ + (0.5-0.6)^+ + (0.5-0.4)^+ = 0.1 → /4
    assert F.multi_margin(x, [3], margin=0.5) == pytest.approx(0.025, rel=1e-12)


# ------------------------------------------------------------------------------------- shapes


def test_n_and_n1_shapes_are_the_same():
    rng = np.random.default_rng(6)
    x, t = rng.normal(size=8), (rng.random(8) > 0.5).astype(np.float64)
    for loss in ("bce_with_logits", "focal", "hinge"):
        want = F.compute(loss, x, t)
        assert F.compute(loss, x[:, None], t) == pytest.approx(want, rel=1e-15), loss
        assert F.compute(loss, x, t[:, None]) == pytest.approx(want, rel=1e-15), loss
    z, y = rng.normal(size=(8, 3)), rng.integers(0, 3, 8)
    for loss in ("cross_entropy", "nll", "focal", "hinge", "multi_margin"):
        assert F.compute(loss, z, y[:, None]) == pytest.approx(F.compute(loss, z, y), rel=1e-15), loss


def test_float_class_labels_work():
    z, y = np.random.default_rng(7).normal(size=(5, 3)), np.array([0, 2, 1, 1, 0])
    assert F.cross_entropy(z, y.astype(np.float64)) == pytest.approx(F.cross_entropy(z, y), rel=1e-15)


# ---------------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("preds,targets,loss,needles", [
    ([0.2, 1.5, 0.3], [0.0, 1.0, 1.0], "bce", ("preds.npy", "outside [0, 1]", "bce_with_logits")),
    ([0.2, -0.1, 0.3], [0.0, 1.0, 1.0], "bce", ("preds.npy", "outside [0, 1]")),
    ([0.2, 0.5, 0.3], [0.0, 2.0, 1.0], "bce", ("targets.npy", "outside [0, 1]")),
    ([0.2, 0.5, 0.3], [0.0, -1.0, 1.0], "bce_with_logits", ("targets.npy",)),
    ([[1.0, 2.0], [0.0, 1.0]], [0, 2], "cross_entropy", ("targets.npy", "class index 2")),
    ([[1.0, 2.0], [0.0, 1.0]], [0, -3], "cross_entropy", ("targets.npy", "class index -3")),
    ([[1.0, 2.0], [0.0, 1.0]], [0.0, 0.5], "cross_entropy", ("targets.npy", "integer class indices")),
    ([[-1.0, -2.0], [-0.5, -1.0]], [0, 5], "nll", ("targets.npy", "class index 5")),
    ([[1.0, 2.0], [0.0, 1.0]], [0, 2], "focal", ("targets.npy", "class index 2")),
    ([[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]], [0, 3], "hinge", ("targets.npy", "class index 3")),
    ([[1.0, 2.0], [0.0, 1.0]], [0, 2], "multi_margin", ("targets.npy", "class index 2")),
    ([0.5, -1.0, 2.0], [2, 2, 2], "hinge", ("targets.npy", "{-1, 1}")),
    ([0.5, -1.0, 2.0], [-1, 0, 1], "hinge", ("targets.npy", "{-1, 1}")),
    ([0.5, -1.0, 2.0], [0.0, 1.0, 2.0], "focal", ("targets.npy", "outside [0, 1]")),
])
def test_domain_errors_name_the_file(runner, tmp_path, preds, targets, loss, needles):
    _assert_usage_error(_cli(runner, tmp_path, preds, targets, "--loss", loss), *needles)


@pytest.mark.parametrize("expr,needle", [
    ("multi_margin(p=3)", "p"),
    ("multi_margin(p=1.5)", "integer"),
    ("focal(gamma=-1)", "gamma"),
    ("cross_entropy(label_smoothing=1.5)", "label_smoothing"),
    ("cross_entropy(weight=[1, -2])", "weight"),
    ("hinge(margin=-1)", "margin"),
    ("bce_with_logits(pos_weight=-1)", "pos_weight"),
    ("cross_entropy(weight=[1, 2, 3])", "3 entries"),
    ("multi_margin(weight=[1, 2, 3])", "3 entries"),
])
def test_parameter_errors_are_exit_2(runner, tmp_path, expr, needle):
    _assert_usage_error(_cli(runner, tmp_path, [[0.1, 0.9], [0.7, 0.3]], [1, 0], "--loss", expr), needle)


@pytest.mark.parametrize("expr", ["bce_with_logits(pos_weight=[1, 2, 3])", "bce(weight=[1, 2, 3])",
                                  "bce_with_logits(weight=[1, 2])"])
def test_column_parameter_of_the_wrong_length_is_exit_2_whatever_the_chunk(runner, tmp_path, expr):
    # 1-D inputs have no column axis; (4, 2) inputs have 2 columns. Checked once, not per chunk.
    for preds in (np.full(4, 0.5), np.full((4, 2), 0.5)):
        if "[1, 2]" in expr and preds.ndim == 2:
            continue
        for chunk in ("1", "3", "100"):
            result = _cli(runner, tmp_path, preds, np.ones_like(preds), "--loss", expr, "--chunk-size", chunk)
            _assert_usage_error(result, "entries")


@pytest.mark.parametrize("loss", ["bce", "cross_entropy", "hinge", "multi_margin"])
def test_empty_input_is_exit_2(runner, tmp_path, loss):
    preds = np.zeros(0) if loss in ("bce", "hinge") else np.zeros((0, 3))
    _assert_usage_error(_cli(runner, tmp_path, preds, np.zeros(0), "--loss", loss))


# ------------------------------------------------------------------------------------ NaN policy

X = np.array([[1.0, 0.0, -1.0], [0.0, np.nan, 0.0], [0.5, 2.0, 0.0], [0.0, 0.0, 3.0]])  # NaN at the target
Y = np.array([0, 1, 1, 2])
MULTICLASS = ["cross_entropy", "nll", "focal", "hinge", "multi_margin"]


@pytest.mark.parametrize("loss", MULTICLASS + ["bce_with_logits", "bce"])
def test_nan_policy_raise(runner, tmp_path, loss):
    preds, targets = (X, Y) if loss in MULTICLASS else (np.array([0.5, np.nan, 0.25]), np.array([1.0, 0.0, 1.0]))
    _assert_usage_error(_cli(runner, tmp_path, preds, targets, "--loss", loss), "1 NaN", "sample 1", "preds.npy")


@pytest.mark.parametrize("loss", MULTICLASS)
def test_nan_policy_omit_drops_the_sample(loss):
    report = lossctl.evaluate(X, Y, loss=loss, nan_policy="omit", provenance=False)
    keep = [0, 2, 3]
    assert report.results[0].value == pytest.approx(F.compute(loss, X[keep], Y[keep]), rel=1e-15)


@pytest.mark.parametrize("loss", ["bce", "bce_with_logits", "focal"])
def test_nan_policy_omit_binary(loss):
    p, t = np.array([0.5, np.nan, 0.25]), np.array([1.0, 0.0, 1.0])
    report = lossctl.evaluate(p, t, loss=loss, nan_policy="omit", provenance=False)
    assert report.results[0].value == pytest.approx(F.compute(loss, p[[0, 2]], t[[0, 2]]), rel=1e-15)


@pytest.mark.parametrize("loss", MULTICLASS + ["bce_with_logits", "bce"])
def test_nan_policy_propagate(loss):
    preds, targets = (X, Y) if loss in MULTICLASS else (np.array([0.5, np.nan, 0.25]), np.array([1.0, 0.0, 1.0]))
    report = lossctl.evaluate(preds, targets, loss=loss, nan_policy="propagate", provenance=False)
    assert math.isnan(report.results[0].value)


@pytest.mark.parametrize("loss", ["cross_entropy", "focal", "hinge", "multi_margin"])
def test_nan_in_another_class_logit_propagates(loss):
    # torch: a NaN logit makes the whole row's log_softmax NaN (nll_loss reads only x_y, so it is exempt).
    # An earlier version of lossctl's log_softmax dropped the NaN when it sat at the argmax position.
    for col in (0, 2):
        z = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        z[1, col] = np.nan
        values = F.compute(loss, z, np.array([0, 1]), reduction="none")
        assert np.isfinite(values[0]) and np.isnan(values[1]), (col, values)


@pytest.mark.parametrize("loss", MULTICLASS)
def test_nan_class_targets_propagate_instead_of_failing(loss):
    # Before the fix a NaN label under --nan-policy propagate was exit 2 ("must hold integer class indices").
    z = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 2.0, 0.0]])
    y = np.array([0.0, np.nan, 2.0])
    report = lossctl.evaluate(np.log(np.full((3, 3), 1 / 3)) if loss == "nll" else z, y, loss=loss,
                              nan_policy="propagate", provenance=False)
    assert math.isnan(report.results[0].value)
    omitted = lossctl.evaluate(z, y, loss=loss, nan_policy="omit", provenance=False)
    assert omitted.results[0].value == pytest.approx(F.compute(loss, z[[0, 2]], np.array([0, 2])), rel=1e-15)


@pytest.mark.parametrize("chunk", ["1", "2", "100"])
def test_hinge_mixed_label_sets_across_chunks_is_exit_2(runner, tmp_path, chunk):
    # {0, 1} in the first chunk and {-1, 1} in a later one is three labels: an error whatever the chunk
    # size (before the fix, chunk sizes 1 and 2 silently mapped the 0 to -1).
    result = _cli(runner, tmp_path, np.zeros(6), np.array([0.0, 1.0, 1.0, -1.0, 1.0, 1.0]), "--loss", "hinge",
                  "--chunk-size", chunk)
    _assert_usage_error(result, "targets.npy", "-1, 0, 1")


def test_multi_margin_rejects_spatial_scores(runner, tmp_path):
    result = _cli(runner, tmp_path, np.zeros((3, 4, 2)), np.zeros((3, 2), dtype=np.int64), "--loss", "multi_margin")
    _assert_usage_error(result, "(3, 4, 2)", "(3, 2)")


def test_cross_entropy_ignore_index_255_on_uint8_masks():
    # Segmentation masks: uint8 labels with 255 = "void". The ignored pixels drop out of the mean.
    x = np.log(np.array([[[3.0, 1.0]], [[1.0, 1.0]]])).transpose(0, 2, 1)  # (N=2, C=2, W=1)
    y = np.array([[0], [255]], dtype=np.uint8)  # (N, W)
    assert F.cross_entropy(x, y, ignore_index=255) == pytest.approx(math.log(4 / 3), rel=1e-15)
