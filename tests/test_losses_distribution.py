"""kl_div, js_div, gaussian_kl, poisson_nll, gaussian_nll, cosine_embedding beyond the golden cases:
per-sample values, domain and shape errors (exit 2 with one error line), extremes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from family_support import cases_with_none, check_none_values, run_cli, save_npz

import lossctl
import lossctl.functional
from lossctl.functional import compute

NONE_CASES = cases_with_none("distribution") + cases_with_none("extras")


@pytest.mark.parametrize("case", NONE_CASES, ids=[c["id"] for c in NONE_CASES])
def test_reduction_none_matches_reference(case):
    check_none_values(case)


def test_kl_zero_target_is_zero_whatever_q():
    p = np.array([[0.0, 1.0]])
    for q in ([[0.0, 1.0]], [[0.5, 0.5]]):
        assert compute("kl_div", np.array(q), p) == pytest.approx(-math.log(q[0][1]) if q[0][1] < 1 else 0.0)
    assert compute("kl", np.array([[0.0, 1.0]]), p) == 0.0  # alias


def test_kl_log_target_minus_inf_is_zero_term():
    lp = np.array([[-np.inf, 0.0]])
    assert compute("kl_div", np.array([[0.3, 0.7]]), lp, log_target=True) == pytest.approx(-math.log(0.7))


def test_js_bounded_by_log2_and_symmetric():
    rng = np.random.default_rng(0)
    p = rng.random((20, 6)); p /= p.sum(1, keepdims=True)
    q = rng.random((20, 6)); q /= q.sum(1, keepdims=True)
    a, b = compute("js_div", q, p), compute("js_div", p, q)
    assert a == pytest.approx(b, rel=1e-12)
    assert 0 <= a <= math.log(2)


def test_kl_from_logits_extreme_is_finite():
    x = np.array([[1e4, -1e4, 0.0]], dtype=np.float32)
    p = np.array([[0.5, 0.0, 0.5]], dtype=np.float32)
    with np.errstate(over="raise"):
        v = compute("kl_div", x, p, from_logits=True)
    assert v == pytest.approx(0.5 * math.log(0.5) + 0.5 * (math.log(0.5) + 1e4))


def test_gaussian_kl_positional_mu_logvar():
    mu = np.array([[1.0, 0.0]]); lv = np.zeros((1, 2))
    assert compute("gaussian_kl", mu, lv) == 0.5
    assert lossctl.functional.gaussian_kl(mu=mu, logvar=lv) == 0.5


def test_poisson_large_log_rate_is_inf_without_warning():
    with np.errstate(over="raise"):
        v = compute("poisson_nll", np.array([1e4]), np.array([1.0]))
    assert v == math.inf


def test_cosine_zero_vectors():
    z = np.zeros((2, 3))
    assert compute("cosine_embedding", x1=z, x2=z, targets=np.array([1, -1])) == pytest.approx(0.5)


@pytest.mark.parametrize("args,needle", [
    (["--loss", "kl_div"], "outside [0, 1]"),
    (["--loss", "kl_div(log_input=true, from_logits=true)"], "contradict"),
    (["--loss", "js_div"], "outside [0, 1]"),
])
def test_kl_domain_errors(tmp_path, runner, args, needle):
    q = tmp_path / "q.npy"; p = tmp_path / "p.npy"
    np.save(q, np.array([[1.5, -0.5]])); np.save(p, np.array([[0.5, 0.5]]))
    code, out, err = run_cli(runner, ["evaluate", str(q), str(p), *args])
    assert code == 2 and out == ""
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1


def test_kl_shape_mismatch_names_both_shapes(tmp_path, runner):
    q = tmp_path / "q.npy"; p = tmp_path / "p.npy"
    np.save(q, np.full((3, 4), 0.25)); np.save(p, np.full((3, 5), 0.2))
    code, out, err = run_cli(runner, ["evaluate", str(q), str(p), "--loss", "kl_div"])
    assert code == 2 and "(3, 4)" in err and "(3, 5)" in err


def test_gaussian_nll_negative_var_and_bad_shape(tmp_path, runner):
    npz = save_npz(tmp_path / "g.npz", preds=np.zeros((4, 2)), targets=np.ones((4, 2)), var=-np.ones((4, 2)))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "gaussian_nll"])
    assert code == 2 and "var" in err and "negative" in err
    npz = save_npz(tmp_path / "h.npz", preds=np.zeros((4, 2)), targets=np.ones((4, 2)), var=np.ones((4, 3)))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "gaussian_nll"])
    assert code == 2 and "(4, 3)" in err


def test_gaussian_nll_missing_var_names_keys(tmp_path, runner):
    npz = save_npz(tmp_path / "g.npz", preds=np.zeros(4), targets=np.ones(4))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "gaussian_nll"])
    assert code == 2 and "'var'" in err and "preds, targets" in err


def test_gaussian_nll_scalar_var_via_input(tmp_path, runner):
    np.save(tmp_path / "v.npy", np.array(2.0))
    np.save(tmp_path / "p.npy", np.zeros(3)); np.save(tmp_path / "t.npy", np.ones(3))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"),
                                      "--input", f"var={tmp_path / 'v.npy'}", "--loss", "gaussian_nll",
                                      "--format", "json"])
    assert code == 0, err
    assert json.loads(out)["results"][0]["value"] == pytest.approx(0.5 * (math.log(2) + 0.5))


def test_cosine_bad_labels(tmp_path, runner):
    npz = save_npz(tmp_path / "c.npz", x1=np.ones((3, 2)), x2=np.ones((3, 2)), targets=np.array([0, 1, 1]))
    code, out, err = run_cli(runner, ["evaluate", npz, "--loss", "cosine_embedding"])
    assert code == 2 and "-1" in err and "targets" in err


def test_poisson_negative_counts(tmp_path, runner):
    np.save(tmp_path / "p.npy", np.zeros(3)); np.save(tmp_path / "t.npy", np.array([1.0, -2.0, 0.0]))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"),
                                      "--loss", "poisson_nll"])
    assert code == 2 and "counts" in err
