"""Values outside a loss's domain are counted over the whole input, not just the chunk whose kernel
raised (issue 14: msle over 1e6 values said 10,330 bad values where there were 158,575): the message
gives the exact count and the first sample, whatever the chunk size, for every loss that checks a domain."""

from __future__ import annotations

import re

import numpy as np
import pytest
from family_support import run_cli

import lossctl
from lossctl.errors import InputError

N = 1000
BAD = np.array([123, 124, 400, 401, 402, 777, 999])  # spread over many chunks; the first is 123


def _put(arr, value):
    arr = arr.copy()
    arr[BAD] = value
    return arr


def _cases():
    rng = np.random.default_rng(3)
    prob = rng.uniform(0.05, 0.95, N)
    probs2 = rng.dirichlet(np.ones(3), N)
    logits2 = rng.normal(size=(N, 3))
    labels = rng.integers(0, 3, N)
    emb = rng.normal(size=(N, 4))
    lp = np.log(rng.dirichlet(np.ones(4), (5, N)))
    return [
        ("msle", {"preds": _put(rng.uniform(0, 2, N), -3.0), "targets": prob}, "preds", "-3"),
        ("msle", {"preds": prob, "targets": _put(prob, -1.0)}, "targets", "-1"),
        ("bce", {"preds": _put(prob, 1.5), "targets": prob}, "preds", "1.5"),
        ("bce", {"preds": prob, "targets": _put(prob, -0.5)}, "targets", "-0.5"),
        ("bce_with_logits", {"preds": logits2[:, 0], "targets": _put(prob, 2.0)}, "targets", "2"),
        ("focal", {"preds": logits2[:, 0], "targets": _put(np.round(prob), 3.0)}, "targets", "3"),
        ("cross_entropy", {"preds": logits2, "targets": _put(labels, 3)}, "targets", "class index 3"),
        ("cross_entropy", {"preds": logits2, "targets": _put(labels.astype(float), 0.5)}, "targets", "0.5"),
        ("nll", {"preds": np.log(probs2), "targets": _put(labels, -2)}, "targets", "class index -2"),
        ("focal", {"preds": logits2, "targets": _put(labels, 7)}, "targets", "class index 7"),
        ("hinge", {"preds": logits2, "targets": _put(labels, 5)}, "targets", "class index 5"),
        ("multi_margin", {"preds": logits2, "targets": _put(labels, 3)}, "targets", "class index 3"),
        ("dice", {"preds": probs2, "targets": _put(labels, 4)}, "targets", "class index 4"),
        ("dice", {"preds": _put(prob, 1.25), "targets": np.round(prob)}, "preds", "1.25"),
        ("kl_div", {"preds": probs2, "targets": _put(probs2, -0.25)}, "targets", "-0.25"),
        ("poisson_nll", {"preds": prob, "targets": _put(prob, -1.0)}, "targets", "-1"),
        ("gaussian_nll", {"preds": prob, "targets": prob, "var": _put(prob, -2.0)}, "var", "-2"),
        ("cosine_embedding", {"x1": emb, "x2": emb[::-1].copy(), "targets": _put(np.ones(N), 0.0)}, "targets", "0"),
        ("contrastive", {"x1": emb, "x2": emb[::-1].copy(), "targets": _put(np.zeros(N), 2.0)}, "targets", "2"),
        ("ctc", {"log_probs": lp, "targets": _put(rng.integers(1, 4, (N, 2)), 9), "input_lengths": np.full(N, 5),
                 "target_lengths": np.full(N, 2)}, "targets", "9"),
    ]


CASES = _cases()


@pytest.mark.parametrize("chunk", [7, 64, None])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES])
def test_count_and_first_sample_over_the_whole_input(case, chunk):
    loss, inputs, name, first_value = case
    expected = int(np.sum(inputs[name] == inputs[name][BAD[0]]))  # every bad row's values (3 for kl_div, 2 for ctc)
    assert expected in (len(BAD), 2 * len(BAD), 3 * len(BAD))
    with pytest.raises(InputError) as info:
        lossctl.evaluate(loss=loss, inputs=inputs, chunk_size=chunk, provenance=False)
    msg = str(info.value)
    assert msg.startswith(f"{loss}: {name} (<array>)"), msg
    assert re.search(rf"\b{expected} (\w+ )?(values|labels)\b", msg), msg
    assert f"at sample {BAD[0]}: {first_value})" in msg or f"at sequence {BAD[0]}: {first_value}," in msg, msg


def test_msle_million_values_cli(tmp_path, runner):
    rng = np.random.default_rng(14)
    preds = rng.normal(0, 1, 1_000_000)
    targets = np.abs(rng.normal(0, 1, 1_000_000))
    expected = int(np.sum(preds <= -1))
    first = int(np.flatnonzero(preds <= -1)[0])
    np.save(tmp_path / "p.npy", preds); np.save(tmp_path / "t.npy", targets)
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "msle"])
    assert code == 2 and out == ""
    assert err.count("\n") == 1, err
    assert f"has {expected} values <= -1 (the first at sample {first}: {preds[first]:g})" in err, err


def test_nan_class_indices_under_propagate_are_counted_too():
    t = np.zeros((30, 4))
    t[[3, 17, 29], 1] = np.nan
    with pytest.raises(InputError, match=r"found 3 NaNs \(the first at sample 3\)"):
        lossctl.evaluate(np.full((30, 2, 4), 0.5), t, "dice", nan_policy="propagate", chunk_size=5, provenance=False)
