"""``--weights`` / ``weights=`` (SPEC §5, issue 14): one non-negative weight per sample for every loss.

Registry-wide, over the input generators of tests/test_state_invariance.py (so a new loss is covered):

* integer weights equal repeating each sample that many times (a weight of 0 removes the sample, as in
  scikit-learn's common tests), for the mean and the sum, element-wise losses and ratios of sums alike
  (dice/iou/tversky weight each sample's share of their sums; weighted cross_entropy both sums; ctc its
  per-target-length mean);
* weighted states split at random, updated in any order, pickled and merged in any tree give the one-shot
  weighted value to 1e-12.

Then scikit-learn's ``sample_weight`` values (golden, from scikit-learn 1.9.1: mean_squared_error,
mean_absolute_error, mean_pinball_loss, log_loss; live when scikit-learn is installed) and the CLI,
the Python API and the scoring file, with their errors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from family_support import run_cli
from test_state_invariance import (
    ALL,
    SPLITTABLE,
    Case,
    _need,
    close,
    n_samples,
    roundtrip,
    take,
)

import lossctl
import lossctl.functional
from lossctl import LossState
from lossctl.errors import InputError, UsageError


def _int_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    w = rng.integers(0, 4, n).astype(np.float64)
    w[rng.integers(n)] = 2.0  # at least one positive
    return w


def _repeated(case: Case, inputs: dict, w: np.ndarray) -> dict:
    return take(case, inputs, np.repeat(np.arange(len(w)), w.astype(int)))


NOT_MINING = [p for p in ALL if p.values[0] is None or not (p.values[0].mining or p.values[0].unbatched)]


@pytest.mark.parametrize("case", NOT_MINING)
def test_integer_weights_equal_repeated_samples(case):
    case = _need(case)
    inputs = case.inputs()
    rng = np.random.default_rng(11)
    w = _int_weights(rng, n_samples(case, inputs))
    weighted = LossState(case.expr).update(**inputs, weights=w).result()
    repeated = LossState(case.expr).update(**_repeated(case, inputs, w)).result()
    close(weighted.value, repeated.value, 1e-12, case.expr)
    for t, u in zip(weighted.terms, repeated.terms):
        close(t.value, u.value, 1e-12, f"term {t.name}")
    # the same through lossctl.evaluate, in small chunks on the worker threads, and with the sum
    report = lossctl.evaluate(inputs=inputs, loss=case.expr, weights=w, chunk_size=max(3, len(w) // 40),
                              provenance=False)
    close(report.results[0].value, repeated.value, 1e-12, "evaluate")
    if "reduction=" not in case.expr and "+" not in case.expr:
        got = lossctl.evaluate(inputs=inputs, loss=case.expr, weights=w, reduction="sum", provenance=False)
        want = lossctl.evaluate(inputs=_repeated(case, inputs, w), loss=case.expr, reduction="sum", provenance=False)
        close(got.results[0].value, want.results[0].value, 1e-12, "sum")


@pytest.mark.parametrize("case", SPLITTABLE)
def test_weighted_split_merge_equals_one_shot(case):
    case = _need(case)
    inputs = case.inputs()
    rng = np.random.default_rng(5)
    n = n_samples(case, inputs)
    w = rng.uniform(0, 3, n)
    w[rng.uniform(size=n) < 0.2] = 0.0
    ref = LossState(case.expr, worst=3).update(**inputs, weights=w).result()
    unweighted = LossState(case.expr).update(**inputs).result().value
    assert abs(ref.value - unweighted) > 1e-9 * abs(unweighted)  # the weights count
    for trial in range(2):
        cuts = [0, *sorted(rng.choice(np.arange(1, n), size=3, replace=False).tolist()), n]
        states = []
        for i in rng.permutation(len(cuts) - 1):
            a, b = cuts[i], cuts[i + 1]
            part = take(case, inputs, slice(a, b))
            states.append(roundtrip(LossState(case.expr, worst=3).update(start=a, weights=w[a:b], **part)))
        while len(states) > 1:
            i, j = sorted(rng.choice(len(states), 2, replace=False))
            b_, a_ = states.pop(j), states.pop(i)
            states.append(a_.merge(b_) if rng.uniform() < 0.5 else b_.merge(a_))
        got = states[0].result()
        close(got.value, ref.value, 1e-12, f"{case.expr} trial {trial}")
        assert got.samples == ref.samples


def test_weights_make_a_difference():
    """(so the tests above cannot pass by ignoring the weights)"""
    p, t = np.arange(4.0), np.zeros(4)
    assert LossState("mse").update(preds=p, targets=t, weights=[1, 1, 1, 1]).result().value == pytest.approx(3.5)
    assert LossState("mse").update(preds=p, targets=t, weights=[0, 0, 0, 1]).result().value == pytest.approx(9.0)
    assert LossState("mse(reduction=sum)").update(preds=p, targets=t, weights=[0, 2, 0, 1]).result().value == 11.0


# ---------------------------------------------------------------------------- scikit-learn golden values


def _sk_inputs():
    g = np.random.default_rng(2024)
    t = g.normal(0, 2, 50)
    p = t + g.normal(0, 1.5, 50)
    w = g.uniform(0, 3, 50)
    w[::7] = 0.0
    y = g.integers(0, 2, 50)
    prob = np.clip(1 / (1 + np.exp(-(2 * y - 1) * g.normal(1, 1.5, 50))), 1e-6, 1 - 1e-6)
    labels = g.integers(0, 3, 50)
    logits = g.normal(0, 2, (50, 3))
    return p, t, w, y, prob, labels, logits


def _sk_golden():
    p, t, w, y, prob, labels, logits = _sk_inputs()
    from sklearn.metrics import (
        log_loss,
        mean_absolute_error,
        mean_pinball_loss,
        mean_squared_error,
    )

    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    return {"mse": mean_squared_error(t, p, sample_weight=w), "mae": mean_absolute_error(t, p, sample_weight=w),
            "quantile(q=0.8)": mean_pinball_loss(t, p, alpha=0.8, sample_weight=w),
            "bce": log_loss(y, prob, sample_weight=w),
            "cross_entropy": log_loss(labels, soft, sample_weight=w, labels=[0, 1, 2])}


# computed by _sk_golden() with scikit-learn 1.9.1 (float64)
SKLEARN = {
    "mse": 1.440751047043535, "mae": 0.9476558723462754, "quantile(q=0.8)": 0.40879505012245104,
    "bce": 0.6369122373869963, "cross_entropy": 1.7812677371629329,
}


def _ours(expr: str) -> float:
    p, t, w, y, prob, labels, logits = _sk_inputs()
    preds, targets = {"bce": (prob, y), "cross_entropy": (logits, labels)}.get(expr, (p, t))
    return lossctl.evaluate(preds, targets, expr, weights=w, chunk_size=7, provenance=False).results[0].value


@pytest.mark.parametrize("expr", list(SKLEARN))
def test_matches_sklearn_sample_weight_golden(expr):
    assert _ours(expr) == pytest.approx(SKLEARN[expr], rel=1e-12)


def test_matches_sklearn_sample_weight_live():
    pytest.importorskip("sklearn")
    for expr, want in _sk_golden().items():
        assert _ours(expr) == pytest.approx(want, rel=1e-12), expr


# ---------------------------------------------------------------------------- CLI, API, scoring file


def _files(tmp_path, n=50):
    p, t, w, *_ = _sk_inputs()
    np.save(tmp_path / "p.npy", p[:n]); np.save(tmp_path / "t.npy", t[:n])
    np.save(tmp_path / "w.npy", w[:n])
    (tmp_path / "w.csv").write_text("id,w\n" + "".join(f"{i},{float(v)!r}\n" for i, v in enumerate(w[:n])))
    return str(tmp_path / "p.npy"), str(tmp_path / "t.npy")


@pytest.mark.parametrize("weights", ["w.npy", "w.csv:w"])
def test_cli_weights_match_sklearn(tmp_path, runner, weights):
    p, t = _files(tmp_path)
    code, out, err = run_cli(runner, ["evaluate", p, t, "--loss", "mse", "--loss", "quantile(q=0.8)",
                                      "--weights", str(tmp_path / weights), "--chunk-size", "4", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["results"][0]["value"] == pytest.approx(SKLEARN["mse"], rel=1e-12)
    assert doc["results"][1]["value"] == pytest.approx(SKLEARN["quantile(q=0.8)"], rel=1e-12)
    assert doc["inputs"]["weights"]["shape"] == [50]
    assert set(doc["provenance"]["inputs"]) == {"preds", "targets", "weights"}  # its digest too


def test_cli_weights_sum_and_worst(tmp_path, runner):
    p, t = _files(tmp_path)
    pa, ta, w, *_ = _sk_inputs()
    code, out, err = run_cli(runner, ["evaluate", p, t, "--loss", "mse", "--reduction", "sum", "--worst", "3",
                                      "--weights", str(tmp_path / "w.npy"), "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] == pytest.approx(float(np.sum(w * (pa - ta) ** 2)), rel=1e-12)


def test_scoring_file_weights(tmp_path, runner):
    _files(tmp_path)
    (tmp_path / "scoring.yaml").write_text("inputs: {preds: p.npy, targets: t.npy}\nweights: w.csv:w\nlosses: [mae]\n"
                                           "report: {format: json}\n")
    code, out, err = run_cli(runner, ["evaluate", "--config", str(tmp_path / "scoring.yaml")])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] == pytest.approx(SKLEARN["mae"], rel=1e-12)
    # the flag overrides the file
    np.save(tmp_path / "ones.npy", np.ones(50))
    code, out, err = run_cli(runner, ["evaluate", "--config", str(tmp_path / "scoring.yaml"),
                                      "--weights", str(tmp_path / "ones.npy")])
    pa, ta, *_ = _sk_inputs()
    assert json.loads(out)["results"][0]["value"] == pytest.approx(float(np.mean(np.abs(pa - ta))), rel=1e-12)


@pytest.mark.parametrize("weights, needles", [
    (np.r_[np.ones(49), -1.0], ["weights (", "w.npy) has 1 negative value", "at sample 49: -1", ">= 0"]),
    (np.r_[np.ones(10), np.nan, np.ones(38), np.inf], ["has 2 non-finite values", "at sample 10: nan"]),
    (np.zeros(50), ["every weight is 0"]),
    (np.ones(49), ["has 49 weights but the loss has 50 samples", "preds (", "p.npy) has shape (50,)"]),
    (np.ones((50, 2)), ["has shape (50, 2)", "one weight per sample"]),
])
def test_cli_weights_errors(tmp_path, runner, weights, needles):
    p, t = _files(tmp_path)
    np.save(tmp_path / "w.npy", weights)
    code, out, err = run_cli(runner, ["evaluate", p, t, "--loss", "mse", "--weights", str(tmp_path / "w.npy")])
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_api_weights_errors_and_ctc_axis():
    p, t = np.arange(5.0), np.zeros(5)
    with pytest.raises(InputError, match="negative"):
        lossctl.evaluate(p, t, "mse", weights=[1, 1, -2, 1, 1], provenance=False)
    with pytest.raises(InputError, match="every weight is 0"):
        lossctl.evaluate(p, t, "mse", weights=np.zeros(5), provenance=False)
    with pytest.raises(InputError, match="non-finite"):
        LossState("mse").update(preds=p, targets=t, weights=[1, np.nan, 1, 1, 1])
    # a batch of zero weights is fine in a streaming state; the value of all-zero weights is NaN
    s = LossState("mse").update(preds=p, targets=t, weights=np.zeros(5))
    assert math.isnan(s.result().value)
    # ctc: weights follow the batch axis (axis 1 of log_probs)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 4))
    lp = x - np.log(np.exp(x).sum(2, keepdims=True))
    d = {"log_probs": lp, "targets": np.array([[1, 2], [3, 0], [2, 2]]), "input_lengths": np.array([6, 5, 6]),
         "target_lengths": np.array([2, 1, 2])}
    with pytest.raises(InputError, match=r"has 6 weights but the loss has 3 samples \(axis 1 of log_probs\)"):
        lossctl.evaluate(inputs=d, loss="ctc", weights=np.ones(6), provenance=False)
    per = lossctl.functional.compute("ctc", reduction="none", **d) / np.array([2, 1, 2])
    got = lossctl.evaluate(inputs=d, loss="ctc", weights=[1, 0, 3], provenance=False).results[0].value
    assert got == pytest.approx((per[0] + 3 * per[2]) / 4, rel=1e-12)


def test_weights_and_nan_omit_drop_together():
    p, t = np.arange(6.0), np.zeros(6)
    p[2] = np.nan
    w = np.array([1.0, 2, 5, 1, 0, 1])
    got = lossctl.evaluate(p, t, "mse", weights=w, nan_policy="omit", chunk_size=2, provenance=False)
    keep = ~np.isnan(p)
    assert got.results[0].value == pytest.approx(np.average(p[keep] ** 2, weights=w[keep]), rel=1e-12)


def test_plugin_loss_with_unweighted_statistics_is_refused(monkeypatch):
    """A loss whose kernel sums statistics over samples (``Part.stats``) and takes no ``sample_weight``
    cannot be weighted: exit 2, not a silently unweighted value."""
    from lossctl import registry
    from lossctl.registry import Part, register_loss

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))

    def global_mean(stats, reduction, params):
        return stats["s"] / stats["n"] if reduction == "mean" else None

    @register_loss("pooled_abs", formula="sum|p - t| / n", summary="test", use_when="test", reference="test",
                   finalize=global_mean)
    def pooled_abs(preds, targets):
        d = np.abs(preds - targets)
        return Part(values=d, stats={"s": float(d.sum()), "n": float(d.size)})

    p, t = np.arange(4.0), np.zeros(4)
    assert lossctl.evaluate(p, t, "pooled_abs", provenance=False).results[0].value == 1.5
    with pytest.raises(UsageError, match="pooled_abs cannot be weighted per sample.*sample_weight"):
        lossctl.evaluate(p, t, "pooled_abs", weights=[1, 2, 3, 4], provenance=False)
