"""triplet and contrastive beyond the golden cases: per-sample values, mining in blocks, errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from family_support import cases_with_none, check_none_values, run_cli, save_npz

import lossctl
from lossctl.functional import compute
from lossctl.losses import embedding

NONE_CASES = cases_with_none("embedding")


@pytest.mark.parametrize("case", NONE_CASES, ids=[c["id"] for c in NONE_CASES])
def test_reduction_none_matches_reference(case):
    check_none_values(case)


def _brute_all_pairs(emb, labels, margin=1.0):
    losses = []
    for i, j in itertools.combinations(range(len(emb)), 2):
        d = np.linalg.norm(emb[i] - emb[j])
        y = float(labels[i] != labels[j])
        losses.append((1 - y) * d * d + y * max(0.0, margin - d) ** 2)
    return float(np.mean(losses))


@pytest.mark.parametrize("block", [1, 7, 64])
def test_mining_is_blockwise_and_exact(monkeypatch, block):
    """Tiny blocks (a few distances at a time) give the same value: no N×N matrix is needed."""
    rng = np.random.default_rng(9)
    emb = rng.normal(0, 1, (40, 5)); labels = rng.integers(0, 4, 40)
    expected = _brute_all_pairs(emb, labels)
    monkeypatch.setattr(embedding, "_BLOCK_ELEMENTS", block)
    for chunk in (None, 3, 17):
        v = lossctl.evaluate(emb, labels, "contrastive(mining=all_pairs)", chunk_size=chunk,
                             provenance=False).results[0].value
        assert v == pytest.approx(expected, rel=1e-12)
    hard = [lossctl.evaluate(emb, labels, "triplet(mining=batch_hard)", chunk_size=c, provenance=False)
            .results[0].value for c in (None, 5)]
    assert hard[0] == pytest.approx(hard[1], rel=1e-13)


def test_mining_from_positional_npy(tmp_path, runner):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "emb.npy", rng.normal(0, 1, (12, 3)).astype(np.float32))
    np.save(tmp_path / "lab.npy", rng.integers(0, 3, 12))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "emb.npy"), str(tmp_path / "lab.npy"),
                                      "--loss", "triplet(mining=batch_hard)", "--loss",
                                      "contrastive(mining=all_pairs)", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert all(r["value"] is not None for r in doc["results"])
    assert doc["inputs"]["embeddings"]["shape"] == [12, 3]


def test_triplet_missing_input_names_it_and_found_keys(tmp_path, runner):
    npz = save_npz(tmp_path / "t.npz", anchor=np.zeros((3, 2)), positive=np.zeros((3, 2)))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "triplet"])
    assert code == 2 and out == ""
    assert err.startswith("error:") and "'negative'" in err and "anchor, positive" in err
    assert len(err.strip().splitlines()) == 1


def test_contrastive_mining_needs_labels(tmp_path, runner):
    np.save(tmp_path / "emb.npy", np.zeros((4, 2)))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "emb.npy"), "--loss", "contrastive(mining=all_pairs)"])
    assert code == 2 and "'targets'" in err


def test_unknown_mining_is_usage_error(tmp_path, runner):
    np.save(tmp_path / "emb.npy", np.zeros((4, 2)))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "emb.npy"), "--loss", "contrastive(mining=batch_hrd)"])
    assert code == 2 and "all_pairs" in err


def test_triplet_shape_mismatch(tmp_path, runner):
    npz = save_npz(tmp_path / "t.npz", anchor=np.zeros((3, 2)), positive=np.zeros((3, 2)), negative=np.zeros((3, 4)))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "triplet"])
    assert code == 2 and "(3, 2)" in err and "(3, 4)" in err


def test_contrastive_label_domain(tmp_path, runner):
    npz = save_npz(tmp_path / "c.npz", x1=np.zeros((3, 2)), x2=np.ones((3, 2)), targets=np.array([0, 1, -1]))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "contrastive"])
    assert code == 2 and "dissimilar" in err


def test_triplet_margin_must_be_positive(tmp_path, runner):
    npz = save_npz(tmp_path / "t.npz", anchor=np.zeros((3, 2)), positive=np.zeros((3, 2)), negative=np.zeros((3, 2)))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "triplet(margin=0)"])
    assert code == 2 and "margin" in err


def test_mined_float_labels_must_be_integers():
    with pytest.raises(lossctl.errors.InputError, match="integer class labels"):
        lossctl.evaluate(np.zeros((3, 2)), np.array([0.5, 1, 1]), "triplet(mining=batch_hard)", provenance=False)


def test_explicit_tuples_via_api_keywords():
    a = np.array([[0.0, 0.0]]); p = np.array([[3.0, 4.0]]); n = np.array([[0.0, 1.0]])
    assert compute("triplet", anchor=a, positive=p, negative=n, eps=0.0) == pytest.approx(5.0)


def test_mining_nan_policy_per_sample():
    """A NaN embedding or label leaves the mining pool: raise names it, omit mines without it."""
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(15, 3)); labels = rng.integers(0, 3, 15).astype(float)
    emb[4, 1] = np.nan; labels[9] = np.nan
    keep = np.ones(15, bool); keep[[4, 9]] = False
    for loss in ("triplet(mining=batch_hard)", "contrastive(mining=all_pairs)"):
        with pytest.raises(lossctl.errors.InputError, match="first at sample 4"):
            lossctl.evaluate(emb, labels, loss, provenance=False)
        omitted = lossctl.evaluate(emb, labels, loss, nan_policy="omit", chunk_size=4, provenance=False).results[0]
        clean = lossctl.evaluate(emb[keep], labels[keep], loss, provenance=False).results[0]
        assert omitted.value == pytest.approx(clean.value, rel=1e-12) and omitted.omitted == 2
        assert np.isnan(lossctl.evaluate(emb, labels, loss, nan_policy="propagate", provenance=False).results[0].value)


def test_swap_with_mining_is_refused(tmp_path, runner):
    np.save(tmp_path / "e.npy", np.zeros((4, 2))); np.save(tmp_path / "y.npy", np.array([0, 0, 1, 1]))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "e.npy"), str(tmp_path / "y.npy"),
                                      "--loss", "triplet(mining=batch_hard, swap=true)"])
    assert code == 2 and "swap" in err


def test_forgetting_mining_hints_at_it(tmp_path, runner):
    np.save(tmp_path / "e.npy", np.zeros((4, 2))); np.save(tmp_path / "y.npy", np.array([0, 0, 1, 1]))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "e.npy"), str(tmp_path / "y.npy"), "--loss", "triplet"])
    assert code == 2 and "'anchor'" in err and "mining=batch_hard" in err


def _brute_all_triplets(emb, labels, margin=1.0, eps=1e-6):
    losses = []
    for a in range(len(emb)):
        for p in range(len(emb)):
            if p == a or labels[p] != labels[a]:
                continue
            for n in range(len(emb)):
                if labels[n] != labels[a]:
                    d_ap = np.linalg.norm(emb[a] - emb[p] + eps)
                    d_an = np.linalg.norm(emb[a] - emb[n] + eps)
                    losses.append(max(0.0, margin + d_ap - d_an))
    return float(np.mean(losses)), float(np.sum(losses))


@pytest.mark.parametrize("direct", [0, 1 << 16])
def test_triplet_all_pairs_every_valid_triplet(monkeypatch, direct):
    """mining=all_pairs (batch_all): mean over every valid triplet, term by term or by prefix sums."""
    rng = np.random.default_rng(12)
    emb = rng.normal(size=(25, 3)); labels = rng.integers(0, 4, 25)
    mean, total = _brute_all_triplets(emb, labels, margin=0.7)
    monkeypatch.setattr(embedding, "_DIRECT_TRIPLETS", direct)
    for loss in ("triplet(mining=all_pairs, margin=0.7)", "triplet(mining=batch_all, margin=0.7)"):
        for chunk in (None, 4):
            r = lossctl.evaluate(emb, labels, [loss, loss[:-1] + ", reduction=sum)"], chunk_size=chunk,
                                 provenance=False).results
            assert r[0].value == pytest.approx(mean, rel=1e-12)
            assert r[1].value == pytest.approx(total, rel=1e-12)


# ----------------------------------------------------------------------------------------- info_nce


def _info_nce_brute(a, b, tau=0.07, cosine=True, symmetric=False):
    if cosine:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = a @ b.T / tau
    rows = np.log(np.exp(s).sum(axis=1)) - np.diag(s)
    cols = np.log(np.exp(s).sum(axis=0)) - np.diag(s)
    return float(np.mean((rows + cols) / 2 if symmetric else rows))


def test_info_nce_blocks_match_brute_force(monkeypatch):
    monkeypatch.setattr(embedding, "_BLOCK_ELEMENTS", 64)  # many row blocks
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(37, 5)), rng.normal(size=(37, 5))
    for sym in (False, True):
        got = compute("info_nce", a, b, symmetric=sym, temperature=0.5)
        assert got == pytest.approx(_info_nce_brute(a, b, 0.5, symmetric=sym), rel=1e-12)


def test_info_nce_chunks_and_nan_omit():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    one = lossctl.evaluate(a, b, loss="info_nce(symmetric=true)", provenance=False).results[0].value
    for k in (1, 4, 29):
        got = lossctl.evaluate(a, b, loss="info_nce(symmetric=true)", chunk_size=k, provenance=False).results[0].value
        assert got == pytest.approx(one, rel=1e-13)
    b_nan = b.copy()
    b_nan[3, 2] = np.nan
    omit = lossctl.evaluate(a, b_nan, loss="info_nce", nan_policy="omit", provenance=False).results[0].value
    keep = np.arange(30) != 3
    assert omit == pytest.approx(_info_nce_brute(a[keep], b[keep]), rel=1e-12)


def test_info_nce_huge_dot_logits_stay_finite():
    a = np.array([[1e3, 0.0], [0.0, 1e3], [-1e3, 0.0]])
    v = compute("info_nce", a, a, similarity="dot")
    assert np.isfinite(v) and v == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("expr,shapes,needle", [
    ("info_nce", ((4, 3), (4, 2)), "same shape (N, D)"),
    ("info_nce", ((4, 3), (5, 3)), "same shape (N, D)"),
    ("info_nce(temperature=0)", ((4, 3), (4, 3)), "temperature"),
    ("info_nce(similarity=l2)", ((4, 3), (4, 3)), "similarity"),
])
def test_info_nce_errors_are_exit_2(runner, tmp_path, expr, shapes, needle):
    for name, shape in zip(("a", "b"), shapes):
        np.save(tmp_path / f"{name}.npy", np.ones(shape))
    code, _, err = run_cli(runner, ["evaluate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--loss", expr])
    assert code == 2 and needle in err, err
