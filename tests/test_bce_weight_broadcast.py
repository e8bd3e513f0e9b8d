"""``bce(weight=[...])`` and ``bce_with_logits(weight=, pos_weight=)`` broadcast against preds as torch
broadcasts them (issue 14): a list as long as the last axis of preds, so one weight per sample for (N,)
preds (sliced per chunk along the samples) and one per column for (N, C, ...); a length torch refuses
is exit 2. Golden values: torch 2.13 ``binary_cross_entropy`` / ``binary_cross_entropy_with_logits``
(float64) on the seeded inputs below; a live cross-check runs when torch is installed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_support import run_cli

import lossctl
from lossctl.errors import InputError
from lossctl.functional import compute


def _inputs(seed, shape):
    g = np.random.default_rng(seed)
    p, t, x = g.uniform(0.02, 0.98, shape), g.uniform(0, 1, shape), g.normal(0, 3, shape)
    return p, t, x, g.uniform(0, 3, shape[-1]), g.uniform(0.5, 4, shape[-1])


# seed, shape: torch bce mean, bce_with_logits mean, bce sum, bce_with_logits sum
GOLDEN = [
    (1, (37,), (1.4891552381902315, 3.2945258103496093, 55.09874381303857, 121.89745498293554)),
    (2, (9, 4), (0.87815142796528, 2.364591790401816, 31.61345140675008, 85.12530445446536)),
    (3, (5, 3, 2), (1.6723416208529374, 5.502107413625907, 50.17024862558812, 165.06322240877722)),
]


def _lst(a):
    return "[" + ",".join(repr(float(v)) for v in a) + "]"


@pytest.mark.parametrize("chunk", [1, 4, None])
@pytest.mark.parametrize("case", GOLDEN, ids=[str(c[1]) for c in GOLDEN])
def test_weight_lists_match_torch(case, chunk):
    seed, shape, (bce_mean, bcel_mean, bce_sum, bcel_sum) = case
    p, t, x, w, pw = _inputs(seed, shape)
    exprs = [f"bce(weight={_lst(w)})", f"bce_with_logits(weight={_lst(w)}, pos_weight={_lst(pw)})"]
    report = lossctl.evaluate(inputs={"preds": p, "targets": t}, loss=exprs[:1], chunk_size=chunk, provenance=False)
    assert report.results[0].value == pytest.approx(bce_mean, rel=1e-12)
    report = lossctl.evaluate(x, t, loss=[exprs[1], exprs[1][:-1] + ", reduction=sum)"], chunk_size=chunk,
                              provenance=False)
    assert report.results[0].value == pytest.approx(bcel_mean, rel=1e-12)
    assert report.results[1].value == pytest.approx(bcel_sum, rel=1e-12)
    assert compute("bce", p, t, weight=list(w), reduction="sum") == pytest.approx(bce_sum, rel=1e-12)
    assert compute("bce_with_logits", x, t, weight=list(w), pos_weight=list(pw), reduction="sum") == \
        pytest.approx(bcel_sum, rel=1e-12)


def test_per_sample_weight_list_cli_chunked(tmp_path, runner):
    seed, shape, (bce_mean, _, bce_sum, _) = GOLDEN[0]
    p, t, _, w, _ = _inputs(seed, shape)
    np.save(tmp_path / "p.npy", p.reshape(-1, 1))  # (N, 1) is (N,)
    np.save(tmp_path / "t.npy", t)
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"),
                                      "--loss", f"bce(weight={_lst(w)})", "--loss", f"bce(weight={_lst(w)}, reduction=sum)",
                                      "--chunk-size", "5", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["results"][0]["value"] == pytest.approx(bce_mean, rel=1e-12)
    assert doc["results"][1]["value"] == pytest.approx(bce_sum, rel=1e-12)
    assert set(doc["inputs"]) == {"preds", "targets"}


def test_per_sample_weights_follow_nan_omit():
    p, t, _, w, _ = _inputs(1, (37,))
    p = p.copy(); p[[3, 20]] = np.nan
    keep = ~np.isnan(p)
    got = lossctl.evaluate(p, t, f"bce(weight={_lst(w)})", nan_policy="omit", chunk_size=6, provenance=False)
    want = compute("bce", p[keep], t[keep], weight=list(w[keep]))
    assert got.results[0].value == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("loss, shape, n, needle", [
    ("bce", (37,), 5, "give one value, or 37 (one per sample)"),
    ("bce", (9, 4), 9, "give one value, or 4 (one per column)"),
    ("bce_with_logits", (5, 3, 2), 3, "give one value, or 2 (one per column)"),
    ("bce_with_logits", (37,), 36, "give one value, or 37 (one per sample)"),
])
def test_lengths_torch_refuses_are_errors(tmp_path, runner, loss, shape, n, needle):
    p, t, *_ = _inputs(0, shape)
    with pytest.raises(InputError, match=f"has {n} entries but preds have shape") as info:
        lossctl.evaluate(p, t, f"{loss}(weight={_lst(np.ones(n))})", provenance=False)
    assert needle in str(info.value)
    np.save(tmp_path / "p.npy", p); np.save(tmp_path / "t.npy", t)
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"),
                                      "--loss", f"{loss}(weight={_lst(np.ones(n))})"])
    assert code == 2 and out == "" and needle in err and err.count("\n") == 1


def test_live_torch_crosscheck():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for seed, shape, _ in GOLDEN:
        p, t, x, w, pw = _inputs(seed, shape)
        tp, tt, tx, tw, tpw = (torch.from_numpy(a) for a in (p, t, x, w, pw))
        want = [float(F.binary_cross_entropy(tp, tt, weight=tw, reduction=r)) for r in ("mean", "sum")]
        want += [float(F.binary_cross_entropy_with_logits(tx, tt, weight=tw, pos_weight=tpw, reduction=r))
                 for r in ("mean", "sum")]
        got = [compute("bce", p, t, weight=list(w), reduction=r) for r in ("mean", "sum")]
        got += [compute("bce_with_logits", x, t, weight=list(w), pos_weight=list(pw), reduction=r)
                for r in ("mean", "sum")]
        np.testing.assert_allclose(got, want, rtol=1e-12)
        none = compute("bce", p, t, weight=list(w), reduction="none")
        np.testing.assert_allclose(none, F.binary_cross_entropy(tp, tt, weight=tw, reduction="none").numpy(), rtol=1e-12)
