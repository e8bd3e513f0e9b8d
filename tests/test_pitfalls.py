"""Pitfall diagnostics (lossctl.pitfalls): each pitfall is flagged on data that has it, sane data is
not flagged, chunking does not change the verdict, and --strict turns warnings into exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lossctl
from lossctl.cli import app
from lossctl.pitfalls import Observer, observer

RNG = np.random.default_rng(11)
N = 400


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _codes(loss, chunk_size=None, **inputs):
    report = lossctl.evaluate(inputs=inputs, loss=loss, provenance=False, chunk_size=chunk_size)
    return [w.code for w in report.warnings], report


LOGITS = RNG.normal(scale=2.0, size=(N, 4))
LABELS = RNG.integers(0, 4, size=N)
BIN_LOGITS = RNG.normal(scale=2.0, size=N)
BIN_LABELS = (RNG.random(N) < 0.5).astype(np.float64)
IMB_LABELS = (RNG.random(N) < 0.03).astype(np.float64)
IMB_LABELS[:3] = 1.0
Y = RNG.normal(size=N)


@pytest.mark.parametrize("loss,inputs,code", [
    ("cross_entropy", dict(preds=_softmax(LOGITS), targets=LABELS), "probabilities_to_logits_loss"),
    ("cross_entropy", dict(preds=_softmax(LOGITS), targets=_softmax(LOGITS * 0.3)), "probabilities_to_logits_loss"),
    ("kl_div", dict(preds=_softmax(LOGITS)[0], targets=_softmax(LOGITS)[1] * 0.5), "kl_rows_not_normalized"),
    ("bce_with_logits", dict(preds=1 / (1 + np.exp(-BIN_LOGITS)), targets=BIN_LABELS), "probabilities_to_logits_loss"),
    ("focal", dict(preds=1 / (1 + np.exp(-BIN_LOGITS)), targets=BIN_LABELS), "probabilities_to_logits_loss"),
    ("nll", dict(preds=_softmax(LOGITS), targets=LABELS), "logits_to_probability_loss"),
    ("nll", dict(preds=LOGITS, targets=LABELS), "logits_to_probability_loss"),
    ("mse", dict(preds=RNG.random(N), targets=BIN_LABELS), "regression_on_class_labels"),
    ("huber", dict(preds=RNG.random(N) * 3, targets=LABELS.astype(np.float32)), "regression_on_class_labels"),
    ("bce_with_logits", dict(preds=BIN_LOGITS, targets=IMB_LABELS), "class_imbalance"),
    ("bce", dict(preds=RNG.random(N), targets=IMB_LABELS), "class_imbalance"),
    ("cross_entropy", dict(preds=LOGITS, targets=np.where(RNG.random(N) < 0.97, 0, LABELS)), "class_imbalance"),
    ("kl_div", dict(preds=_softmax(LOGITS), targets=RNG.random((N, 4))), "kl_rows_not_normalized"),
    ("kl_div(log_target=true)", dict(preds=_softmax(LOGITS), targets=np.log(_softmax(LOGITS)) + 0.5),
     "kl_rows_not_normalized"),
    ("dice(from_logits=true)", dict(preds=1 / (1 + np.exp(-BIN_LOGITS)), targets=BIN_LABELS),
     "probabilities_to_logits_loss"),
])
def test_pitfall_flagged(loss, inputs, code):
    codes, report = _codes(loss, **inputs)
    assert code in codes, [w.message for w in report.warnings]
    assert codes.count(code) == 1
    chunked, _ = _codes(loss, chunk_size=7, **inputs)
    assert chunked == codes  # the verdict does not depend on chunking


@pytest.mark.parametrize("loss,inputs", [
    ("cross_entropy", dict(preds=LOGITS, targets=LABELS)),
    ("cross_entropy(weight=[1, 30])", dict(preds=LOGITS[:, :2], targets=IMB_LABELS.astype(np.int64))),
    ("bce_with_logits", dict(preds=BIN_LOGITS, targets=BIN_LABELS)),
    ("bce_with_logits(pos_weight=30)", dict(preds=BIN_LOGITS, targets=IMB_LABELS)),
    ("focal", dict(preds=BIN_LOGITS, targets=IMB_LABELS)),  # focal is the imbalance remedy
    ("bce", dict(preds=1 / (1 + np.exp(-BIN_LOGITS)), targets=BIN_LABELS)),
    ("nll", dict(preds=np.log(_softmax(LOGITS)), targets=LABELS)),
    ("mse", dict(preds=Y + 0.1, targets=Y)),
    ("mae", dict(preds=RNG.poisson(3.0, size=N) * 1.0, targets=RNG.normal(10, 3, size=N).round(2))),
    ("kl_div", dict(preds=_softmax(LOGITS), targets=_softmax(LOGITS * 0.5))),
    ("kl_div", dict(preds=_softmax(LOGITS[0:1])[0], targets=_softmax(LOGITS[1:2])[0])),
])
def test_sane_data_not_flagged(loss, inputs):
    codes, report = _codes(loss, **inputs)
    assert codes == [], [w.message for w in report.warnings]


def _ctc_inputs(log_probs):
    t, n, _ = log_probs.shape
    return dict(log_probs=log_probs, targets=RNG.integers(1, 5, size=(n, 3)), input_lengths=np.full(n, t),
                target_lengths=np.full(n, 3))


def test_ctc_raw_logits():
    x = RNG.normal(scale=3.0, size=(15, 8, 5))
    codes, _ = _codes("ctc", **_ctc_inputs(x))
    assert codes == ["ctc_raw_logits"]
    neg = x - 20.0  # all <= 0 but not normalised
    codes, report = _codes("ctc", **_ctc_inputs(neg))
    assert "ctc_raw_logits" in codes and "logsumexp" in report.warnings[0].message
    lp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    codes, _ = _codes("ctc", **_ctc_inputs(lp))
    assert codes == []


def test_messages_say_what_to_do():
    _, report = _codes("bce_with_logits", preds=BIN_LOGITS, targets=IMB_LABELS)
    (w,) = report.warnings
    assert "pos_weight=" in w.message and "ratio" in w.message
    _, report = _codes("cross_entropy", preds=_softmax(LOGITS), targets=LABELS)
    assert "expects logits" in report.warnings[0].message


def test_imbalance_weights_suggestion_is_balanced():
    targets = np.array([0] * 190 + [1] * 10)
    _, report = _codes("cross_entropy", preds=RNG.normal(size=(200, 2)), targets=targets)
    assert "weight=[0.526, 10]" in report.warnings[0].message


def test_observer_never_breaks_evaluation():
    obs = Observer("cross_entropy", {})
    obs({"preds": object(), "targets": "nonsense"})  # type: ignore[dict-item]
    assert obs.broken and obs.messages() == []
    assert observer("triplet", {}) is None and observer("mse", {}) is not None


def test_cli_warnings_on_stderr_json_and_strict(runner, tmp_path):
    np.save(tmp_path / "p.npy", RNG.random(N))
    np.save(tmp_path / "t.npy", BIN_LABELS)
    args = ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse", "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: mse: the targets only take the integer values {0, 1}")
    doc = json.loads(result.stdout)
    assert doc["warnings"][0]["code"] == "regression_on_class_labels"
    strict = runner.invoke(app, args + ["--strict"])
    assert strict.exit_code == 2
    assert strict.stderr.strip().splitlines()[-1].startswith("error: --strict: 1 warning")
    assert json.loads(strict.stdout)["warnings"]  # the report is still written


def test_large_inputs_use_bounded_samples_but_exact_range_checks():
    n = 60_000
    targets = (RNG.random(n) < 0.04).astype(np.float64)
    codes, report = _codes("bce_with_logits", preds=RNG.normal(size=n), targets=targets)
    assert codes == ["class_imbalance"] and "about" in report.warnings[0].message
    probs = RNG.random(n)
    codes, _ = _codes("bce_with_logits", preds=probs, targets=targets.round())
    assert "probabilities_to_logits_loss" in codes
    probs[12_345] = 1.5  # one value outside [0, 1], almost surely not in the strided sample
    codes, _ = _codes("bce_with_logits(pos_weight=20)", preds=probs, targets=targets)
    assert codes == []
