"""cox_ph beyond the golden cases: per-sample values, a brute-force check at random, ties,
extreme risk scores, NaN policies and input errors."""

from __future__ import annotations

import numpy as np
import pytest
from family_support import cases_with_none, check_none_values, run_cli

import lossctl
from lossctl.functional import cox_ph

NONE_CASES = cases_with_none("survival")


@pytest.mark.parametrize("case", NONE_CASES, ids=[c["id"] for c in NONE_CASES])
def test_reduction_none_matches_reference(case):
    check_none_values(case)


def _brute(eta, t, e):
    terms = [np.log(np.sum(np.exp(eta[t >= t[i]]))) - eta[i] for i in range(len(eta)) if e[i] == 1]
    return float(np.mean(terms))


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    eta, t = rng.normal(size=n), rng.integers(0, 6, n).astype(float)  # many ties
    e = (rng.random(n) < 0.6).astype(float)
    e[0] = 1.0
    assert cox_ph(eta, t, event=e) == pytest.approx(_brute(eta, t, e), rel=1e-12)


def test_shift_invariant_and_finite_at_extremes():
    eta, t, e = np.array([0.3, -1.0, 2.0, 0.0]), np.array([3.0, 1.0, 2.0, 2.0]), np.array([1, 1, 0, 1])
    base = cox_ph(eta, t, event=e)
    assert cox_ph(eta + 1e4, t, event=e) == pytest.approx(base, rel=1e-9)
    assert np.isfinite(cox_ph(np.array([1e4, -1e4, 1e4, -1e4]), t, event=e))


def test_chunked_equals_one_shot_and_nan_omit_drops_the_sample():
    rng = np.random.default_rng(3)
    eta, t, e = rng.normal(size=50), rng.exponential(size=50), (rng.random(50) < 0.5).astype(float)
    one = lossctl.evaluate(eta, t, loss="cox_ph", inputs={"event": e}, provenance=False).results[0].value
    for k in (1, 7, 33):
        got = lossctl.evaluate(eta, t, loss="cox_ph", inputs={"event": e}, chunk_size=k,
                               provenance=False).results[0].value
        assert got == pytest.approx(one, rel=1e-13)
    eta_nan = eta.copy()
    eta_nan[4] = np.nan
    omit = lossctl.evaluate(eta_nan, t, loss="cox_ph", inputs={"event": e}, nan_policy="omit",
                            provenance=False).results[0].value
    keep = np.arange(50) != 4
    assert omit == pytest.approx(cox_ph(eta[keep], t[keep], event=e[keep]), rel=1e-13)


def test_no_events_is_nan_with_a_warning(runner, tmp_path):
    for name, arr in (("eta", [0.1, 0.2]), ("t", [1.0, 2.0]), ("e", [0.0, 0.0])):
        np.save(tmp_path / f"{name}.npy", np.array(arr))
    code, out, err = run_cli(runner, ["evaluate", str(tmp_path / "eta.npy"), str(tmp_path / "t.npy"),
                                      "--input", f"event={tmp_path / 'e.npy'}", "--loss", "coxph"])
    assert code in (0, 1) and "nan" in out and "warning" in err


@pytest.mark.parametrize("event,times,needle", [
    ([0, 1, 2], [1, 2, 3], "must be 1 (event observed) or 0 (censored)"),
    ([0, 1], [1, 2, 3], "event must have shape (3,)"),
    ([0, 1, 1], [1, 2], "must have shape (3,)"),
])
def test_bad_inputs_are_exit_2(runner, tmp_path, event, times, needle):
    np.save(tmp_path / "eta.npy", np.array([0.1, 0.2, 0.3]))
    np.save(tmp_path / "t.npy", np.array(times, dtype=float))
    np.save(tmp_path / "e.npy", np.array(event, dtype=float))
    code, _, err = run_cli(runner, ["evaluate", str(tmp_path / "eta.npy"), str(tmp_path / "t.npy"),
                                      "--input", f"event={tmp_path / 'e.npy'}", "--loss", "cox_ph"])
    assert code == 2 and needle in err, err


def test_missing_event_is_exit_2(runner, tmp_path):
    np.save(tmp_path / "eta.npy", np.array([0.1, 0.2]))
    np.save(tmp_path / "t.npy", np.array([1.0, 2.0]))
    code, _, err = run_cli(runner, ["evaluate", str(tmp_path / "eta.npy"), str(tmp_path / "t.npy"), "--loss", "cox_ph"])
    assert code == 2 and "event" in err
