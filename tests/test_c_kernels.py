"""The optional C kernels (lossctl/csrc/) against float64 references and the NumPy fast paths.

The kernels are built by ``pip install`` when a C compiler is there (.ci/run checks that they
were); without them lossctl uses the NumPy fast paths, which the second half of this file also runs
(``ckernels.kernels = None``) so both stay covered. No timings here: see benchmarks/.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lossctl
from lossctl import ckernels, engine, fast

ck = ckernels.kernels
needs_c = pytest.mark.skipif(ck is None, reason="C kernels not built (no compiler at install time)")


def _pair(n, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * scale).astype(dtype), rng.standard_normal(n).astype(dtype)


def _huber_ref(d, k):
    a = np.abs(d)
    return np.where(a < k, 0.5 * d * d, k * (a - 0.5 * k))


# ---------------------------------------------------------------------------- the kernels alone

@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 17, 1000])  # the 8-lane loop and its tail
def test_residual_sums_match_float64_references(dtype, n):
    a, b = _pair(n, dtype, seed=n)
    d = (a - b).astype(np.float64)  # p - t in the inputs' type, as the kernels form it
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(ck.residual_sum(0, a, b, 0.0), np.sum(d * d), rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(ck.residual_sum(1, a, b, 0.0), np.sum(np.abs(d)), rtol=rtol, atol=1e-300)
    for knee in (0.25, 1.0, 1e4):
        np.testing.assert_allclose(ck.residual_sum(2, a, b, knee), np.sum(_huber_ref(d, knee)),
                                   rtol=rtol, atol=1e-300)


@needs_c
def test_float32_values_are_formed_in_float32_and_summed_in_float64():
    # 1e6 elements of 1 + 2^-23 squared: float32 accumulation would stall at 2^24
    a = np.full(1_000_000, 1 + 2.0**-23, dtype=np.float32)
    b = np.zeros_like(a)
    per_element = float(np.float32(a[0]) * np.float32(a[0]))  # the float32 square
    assert ck.residual_sum(0, a, b, 0.0) == pytest.approx(1_000_000 * per_element, rel=1e-15)


@needs_c
@pytest.mark.parametrize("kind", [0, 1, 2])
def test_nan_and_inf_propagate_so_the_engine_hands_the_chunk_back(kind):
    a, b = _pair(33, np.float32)
    a[20] = np.nan
    assert np.isnan(ck.residual_sum(kind, a, b, 1.0))
    a[20] = np.inf
    assert not np.isfinite(ck.residual_sum(kind, a, b, 1.0))


@needs_c
def test_huber_is_exact_at_the_knee_and_for_huge_residuals():
    a = np.array([1.0, -1.0, 1e30, -1e30, 0.0], dtype=np.float64)
    b = np.zeros_like(a)
    # |d| = knee: both branches give 0.5; |d| = 1e30: knee (|d| - knee/2)
    assert ck.residual_sum(2, a, b, 1.0) == 0.5 + 0.5 + 2 * (1e30 - 0.5)


@needs_c
def test_bad_buffers_are_refused():
    a32, b32 = _pair(10, np.float32)
    with pytest.raises(TypeError):
        ck.residual_sum(0, a32, b32.astype(np.float64), 0.0)  # mixed types
    with pytest.raises(TypeError):
        ck.residual_sum(0, a32, b32[:5], 0.0)  # lengths differ
    with pytest.raises(TypeError):
        ck.residual_sum(0, a32.astype(np.int32), b32.astype(np.int32), 0.0)
    with pytest.raises(ValueError):
        ck.residual_sum(7, a32, b32, 0.0)
    with pytest.raises((TypeError, ValueError, BufferError)):
        ck.residual_sum(0, a32[::2], b32[::2], 0.0)  # not contiguous


@needs_c
@pytest.mark.parametrize("n", [1, 8, 13, 5000])
def test_overlap_sums_match_float64_references(n):
    rng = np.random.default_rng(n)
    p = rng.random(n, dtype=np.float32)
    p[::7] = 0.0
    p[1::11] = 1.0
    t = (rng.random(n) < 0.3).astype(np.float32)
    dis, fn, inter = ck.overlap_hard(p, t)
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    np.testing.assert_allclose(dis, np.sum(np.abs(p64 - t64)), rtol=1e-12)
    np.testing.assert_allclose(fn, np.sum(t64 * (1 - p64)), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(inter, np.sum(p64 * t64), rtol=1e-12, atol=1e-300)


@needs_c
@pytest.mark.parametrize("where, value", [("t", 0.5), ("t", -0.0), ("t", np.nan), ("t", 2.0),
                                          ("p", 1.0000001), ("p", -1e-30), ("p", np.nan)])
def test_overlap_refuses_soft_masks_and_values_outside_the_unit_interval(where, value):
    rng = np.random.default_rng(1)
    p = rng.random(20, dtype=np.float32)
    t = (rng.random(20) < 0.5).astype(np.float32)
    (t if where == "t" else p)[11] = value
    assert ck.overlap_hard(p, t) is None


@needs_c
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pick_sum_gathers_one_value_per_row(index_dtype, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((37, 5)).astype(dtype)
    y = rng.integers(0, 5, 37).astype(index_dtype)
    expected = np.sum(x[np.arange(37), y].astype(np.float64))
    np.testing.assert_allclose(ck.pick_sum(x.reshape(-1), y, 5), expected, rtol=1e-13)
    for bad in (-100, 5):
        y2 = y.copy()
        y2[30] = bad
        assert ck.pick_sum(x.reshape(-1), y2, 5) is None
    with pytest.raises(TypeError):
        ck.pick_sum(x.reshape(-1), y, 4)  # rows x classes does not match


@needs_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [1, 7, 8, 128])
def test_row_sq_dist_matches_the_per_row_sums(dtype, dim):
    rng = np.random.default_rng(dim)
    a, b = (rng.standard_normal((31, dim)) * 5).astype(dtype), rng.standard_normal((31, dim)).astype(dtype)
    out = np.empty(31)
    ck.row_sq_dist(a, b, out)
    d = a - b  # in the inputs' type, as the kernel
    np.testing.assert_allclose(out, np.sum((d * d).astype(np.float64), axis=1),
                               rtol=1e-6 if dtype == np.float32 else 1e-13)
    with pytest.raises(TypeError):
        ck.row_sq_dist(a, b, np.empty(30))  # rows do not divide the elements
    with pytest.raises(TypeError):
        ck.row_sq_dist(a, b.astype(np.float64 if dtype == np.float32 else np.float32), out)


def test_residual_kind_numbers_match_the_c_enum():
    """lossctl/ckernels.py copies sums.c's kind numbers by hand (there is no shared header for Python):
    a drift would silently compute |d| where d² was asked, so read the enum and compare."""
    import re
    from pathlib import Path

    src = (Path(lossctl.__file__).parent / "csrc" / "sums.c").read_text()
    enum = re.search(r"enum\s*\{([^}]*\bKIND_[^}]*)\}", src)
    assert enum, "sums.c: no enum of KIND_ constants (residual_sum's kinds) found"
    kinds = {name: int(value) for name, value in re.findall(r"\bKIND_(\w+)\s*=\s*(\d+)", enum.group(1))}
    ours = {name[len("KIND_"):]: value for name, value in vars(ckernels).items() if name.startswith("KIND_")}
    assert kinds == ours, f"lossctl/csrc/sums.c has kinds {kinds}; lossctl/ckernels.py has {ours}"


# ------------------------------------------------ the engine with and without the C kernels

@pytest.fixture(params=["c", "numpy"])
def fast_path(request, monkeypatch):
    """Run the test once through the C kernels (when built) and once through the NumPy fast paths."""
    monkeypatch.setattr(engine, "TASK_ELEMENTS", 2048)
    monkeypatch.setattr(fast, "SUB_ELEMENTS", 256)
    if request.param == "c" and ck is None:
        pytest.skip("C kernels not built")
    if request.param == "numpy":
        monkeypatch.setattr(ckernels, "kernels", None)
    return request.param


def _values(preds, targets, losses):
    return [r.value for r in lossctl.evaluate(preds, targets, losses, provenance=False).results]


def _generic(preds, targets, losses):
    engine.FAST_PATHS = False
    try:
        return _values(preds, targets, losses)
    finally:
        engine.FAST_PATHS = True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_fast_paths_agree_with_the_kernels(fast_path, dtype):
    losses = ["mse", "mae", "huber(delta=0.7)", "smooth_l1(beta=2)", "smooth_l1(beta=0)"]
    p, t = _pair(5003, dtype, seed=3)
    np.testing.assert_allclose(_values(p, t, losses), _generic(p, t, losses),
                               rtol=2e-6 if dtype == np.float32 else 1e-12)


def test_nan_in_a_chunk_still_follows_the_nan_policy(fast_path):
    p, t = _pair(3000, np.float32, seed=4)
    p[2500] = np.nan
    with pytest.raises(lossctl.errors.InputError, match="NaN"):
        _values(p, t, ["huber"])
    omitted = lossctl.evaluate(p, t, ["huber"], nan_policy="omit", provenance=False).results[0].value
    keep = ~np.isnan(p)
    assert omitted == pytest.approx(_generic(p[keep], t[keep], ["huber"])[0], rel=1e-6)


@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
def test_nll_fast_path_agrees_and_hands_back_ignored_rows(fast_path, index_dtype):
    rng = np.random.default_rng(5)
    logp = np.log(rng.dirichlet(np.ones(6), 4001)).astype(np.float32)
    y = rng.integers(0, 6, 4001).astype(index_dtype)
    np.testing.assert_allclose(_values(logp, y, ["nll"]), _generic(logp, y, ["nll"]), rtol=1e-6)
    y[::17] = -100  # ignore_index: those rows are left out of the mean
    kept = y != -100
    expected = -np.mean(logp[kept][np.arange(kept.sum()), y[kept]].astype(np.float64))
    assert _values(logp, y, ["nll"])[0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mask", ["hard", "soft", "negative zero"])
def test_overlap_fast_paths_agree_with_the_kernels(fast_path, mask):
    rng = np.random.default_rng(6)
    p = rng.random((400, 25), dtype=np.float32)
    t = (rng.random((400, 25)) < 0.3).astype(np.float32)
    if mask == "soft":
        t[7, 3] = 0.25
    elif mask == "negative zero":
        t[t == 0] = -0.0
    losses = ["dice", "iou", "tversky(alpha=0.3, beta=0.7)"]
    np.testing.assert_allclose(_values(p, t, losses), _generic(p, t, losses), rtol=1e-6)


# ---------------------------------------------------------------------------------------- CTC

def _ctc_case(seed, frames=60, batch=7, classes=6, width=12, scale=3.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((frames, batch, classes)) * scale
    log_probs = x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)
    targets = rng.integers(1, classes, (batch, width)).astype(np.int64)
    targets[0, 1:4] = targets[0, 0]  # repeated labels: no skip between them
    target_lengths = rng.integers(0, width + 1, batch).astype(np.int64)
    input_lengths = rng.integers(0, frames + 1, batch).astype(np.int64)
    if batch > 3:
        target_lengths[1] = 0
        input_lengths[2] = 0
        input_lengths[3] = frames
    return log_probs, targets, input_lengths, target_lengths


def _c_loglik(log_probs, targets, input_lengths, target_lengths, blank=0):
    out = np.empty(log_probs.shape[1])
    lp = np.ascontiguousarray(log_probs)
    with np.errstate(over="ignore", invalid="ignore"):
        ck.ctc_loglik(lp, np.exp(lp), targets, input_lengths, target_lengths, blank, out)
    return out


@needs_c
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scale", [0.5, 3.0, 300.0])  # 300: log-probabilities down to about -2000
def test_ctc_recursion_matches_the_log_space_numpy_one(seed, scale):
    from lossctl.losses.sequence import ctc_forward

    lp, tg, il, tl = _ctc_case(seed, scale=scale)
    expected = -ctc_forward(lp, tg, il, tl, 0)
    got = _c_loglik(lp, tg, il, tl)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    np.testing.assert_array_equal(got[~finite], expected[~finite])
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-12)


@needs_c
def test_ctc_long_confident_sequences_do_not_underflow():
    # 3000 frames where the one feasible alignment has probability about e^-9000: far below the
    # smallest double; the recursion keeps it exactly (log-space NumPy agrees)
    from lossctl.losses.sequence import ctc_forward

    lp, tg, il, tl = _ctc_case(11, frames=3000, batch=2, classes=5, width=40, scale=40.0)
    il[:] = 3000
    tl[:] = 40
    expected = -ctc_forward(lp, tg, il, tl, 0)
    got = _c_loglik(lp, tg, il, tl)
    assert np.all(np.isfinite(got)) and np.all(got < -1000)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@needs_c
def test_ctc_impossible_alignments_and_nonfinite_inputs():
    lp, tg, il, tl = _ctc_case(3)
    lp[:, 4, :] = -np.inf  # every class impossible for sequence 4
    lp[5, 5, 0] = np.nan  # NaN in the blank: the C kernel marks it, the caller recomputes
    lp[7, 6, 0] = 800.0  # not a log-probability: marked too
    il[4:7] = lp.shape[0]
    tl[4:7] = 3
    got = _c_loglik(lp, tg, il, tl)
    assert got[4] == -np.inf
    assert np.isnan(got[5]) and np.isnan(got[6])


@needs_c
def test_ctc_kernel_refuses_bad_shapes():
    lp, tg, il, tl = _ctc_case(4)
    p, out = np.exp(lp), np.empty(lp.shape[1])
    with pytest.raises(TypeError):
        ck.ctc_loglik(lp.astype(np.float32), p, tg, il, tl, 0, out)
    with pytest.raises(TypeError):
        ck.ctc_loglik(lp, p[:2], tg, il, tl, 0, out)  # probs of another shape
    with pytest.raises(TypeError):
        ck.ctc_loglik(lp, p, tg[:3], il, tl, 0, out)
    with pytest.raises(TypeError):
        ck.ctc_loglik(lp, p, tg, il, tl + 100, 0, out)  # longer than the padded targets
    with pytest.raises(TypeError):
        ck.ctc_loglik(lp, p, tg, il, tl, lp.shape[2], out)  # blank outside the classes
    bad = tg.copy()
    bad[4, 0] = lp.shape[2]  # a label outside the classes: refused, never read out of bounds
    tl[4] = max(tl[4], 1)
    with pytest.raises(TypeError):
        ck.ctc_loglik(lp, p, bad, il, tl, 0, out)
    with pytest.raises((TypeError, ValueError, BufferError)):
        ck.ctc_loglik(lp, p, tg, il, tl, 0, out[:0].tobytes())  # out not writable


@pytest.mark.parametrize("zero_infinity", [False, True])
def test_ctc_loss_agrees_with_and_without_the_c_kernels(fast_path, zero_infinity):
    from lossctl.losses import sequence

    lp, tg, il, tl = _ctc_case(5, frames=80, batch=30)
    tl = np.minimum(tl, 5)
    tg[:, :5][tg[:, :5] == 0] = 1
    lp[:, 9, :] = -np.inf  # an impossible alignment
    il[9] = 80
    tl[9] = 2
    inputs = dict(log_probs=lp.astype(np.float32), targets=tg, input_lengths=il, target_lengths=tl)
    loss = f"ctc(zero_infinity={'true' if zero_infinity else 'false'})"
    got = lossctl.evaluate(inputs=inputs, loss=loss, provenance=False).results[0].value
    expected = sequence.ctc_forward(lp.astype(np.float32).astype(np.float64), tg, il, tl, 0)
    if zero_infinity:
        expected[np.isinf(expected)] = 0.0
    assert got == pytest.approx(np.mean(expected / np.maximum(tl, 1)), rel=1e-12)


# ---------------------------------------------------------------------------------------- CSV

def _parse(text, ncols, sep=","):
    raw = text.encode()
    got = ck.csv_parse(raw, 0, len(raw), sep, ncols)
    if got is None:
        return None
    data, capacity, rows, first_float = got
    return np.frombuffer(data, dtype=np.float64).reshape(ncols, capacity)[:, :rows], first_float


@needs_c
@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=20),
       style=st.sampled_from(["repr", "%.7g", "%.9g", "%.17g", "%.3e", "%.15f", "%g"]))
def test_csv_numbers_parse_exactly_as_python_float(values, style):
    import re

    texts = [repr(v) if style == "repr" else style % v for v in values]
    got = _parse("\n".join(texts) + "\n", 1)
    if any(re.fullmatch(r"-?\d+", t) and abs(int(t)) > 2**53 for t in texts):
        assert got is None  # integers past 2^53: pandas reads them exactly, not as doubles
        return
    np.testing.assert_array_equal(got[0][0], [float(t) for t in texts])


@needs_c
def test_csv_field_forms():
    text = (" 1 , -2.5e3\r\n"  # spaces around numbers, CRLF
            "+3,.5\n"
            "\n"  # an empty line: skipped
            "4.,\n"  # an empty field: NaN
            "nan,-Infinity\n"
            "-0,1E-400\n"
            "1.2345678901234567890123e22,0.1000000000000000055511151231257827\n"  # through strtod
            "7,8")  # no newline at the end
    cols, first_float = _parse(text, 2)
    np.testing.assert_array_equal(cols[0], [1, 3, 4, np.nan, -0.0, 1.2345678901234568e22, 7])
    np.testing.assert_array_equal(cols[1], [-2500, 0.5, np.nan, -np.inf, 0.0, 0.1, 8])
    assert np.signbit(cols[0][4])
    assert first_float == (2, 0)  # "4." is the first non-integer of column 0
    tabs, _ = _parse("1\t2\n3\t4\n", 2, sep="\t")
    np.testing.assert_array_equal(tabs, [[1, 3], [2, 4]])


@needs_c
@pytest.mark.parametrize("text", ['1,"2"\n', "1,2\n3\n", "1,2,3\n", "1,x\n", "1,true\n", "1,2\n   \n",
                                  "1,0x10\n", "1,1e\n", "1,--2\n", "1,2 3\n", "1,12345678901234567\n",
                                  "1,2\r3,4\n", "1,1.5.2\n", "1,\u00e9\n"])
def test_csv_parser_refuses_what_only_pandas_reads(text):
    assert _parse(text, 2) is None


def test_csv_files_read_the_same_through_both_parsers(tmp_path, monkeypatch):
    from lossctl.readers import csv, open_input

    rng = np.random.default_rng(7)
    n = 3000
    path = tmp_path / "mixed.csv"
    with open(path, "w", newline="") as fh:
        fh.write("id, pred ,target\r\n")
        for i in range(n):
            p, t = (float(v) for v in rng.standard_normal(2) * 10.0 ** rng.integers(-30, 30))
            fh.write(f"{i},{p!r}, {t:.6e}\r\n" if i % 3 else f"{i},{p:.9g},\r\n")
    monkeypatch.setattr(csv, "CSV_BLOCK_BYTES", 1000)
    via_c = open_input(str(path)).read_all()
    assert open_input(f"{path}:id").dtype == np.int64
    csv._CSV_SOURCES.clear()
    monkeypatch.setattr(ckernels, "kernels", None)
    via_pandas = open_input(str(path)).read_all()
    np.testing.assert_array_equal(via_c, via_pandas)
    assert via_c.shape == (n, 3)


def test_contrastive_fast_path_agrees_with_the_kernel(fast_path):
    rng = np.random.default_rng(8)
    x1, x2 = rng.standard_normal((700, 16)).astype(np.float32), rng.standard_normal((700, 16)).astype(np.float32)
    y = (rng.random(700) < 0.5).astype(np.float32)
    inputs = dict(x1=x1, x2=x2, targets=y)
    got = lossctl.evaluate(inputs=inputs, loss="contrastive(margin=5)", provenance=False).results[0].value
    engine.FAST_PATHS = False
    try:
        plain = lossctl.evaluate(inputs=inputs, loss="contrastive(margin=5)", provenance=False).results[0].value
    finally:
        engine.FAST_PATHS = True
    assert got == pytest.approx(plain, rel=1e-6)


_CSV_ALPHABET = list("0123456789") * 4 + list(",,,\n\n\r .-+eE") + ["nan", "inf", '"', "x", "\t", "1e400", "9" * 20]


@needs_c
@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.sampled_from(_CSV_ALPHABET), max_size=60), ncols=st.integers(1, 4),
       cut=st.integers(0, 70))
def test_csv_parser_on_hostile_text_agrees_with_pandas_or_declines(pieces, ncols, cut):
    """Random bytes: the parser never crashes or reads out of bounds, and whatever it accepts,
    pandas (as lossctl calls it) reads to the same numbers."""
    import io

    import pandas as pd

    raw = "".join(pieces).encode()
    stop = min(cut, len(raw))
    got = ck.csv_parse(raw, 0, stop, ",", ncols)  # also a range that ends mid-line
    if got is None:
        return
    data, capacity, rows, first_float = got
    values = np.frombuffer(data, dtype=np.float64).reshape(ncols, capacity)[:, :rows]
    assert len(first_float) == ncols and rows <= capacity
    text = raw[:stop].decode()
    if not text.strip("\r\n"):
        assert rows == 0
        return
    frame = pd.read_csv(io.StringIO(text), header=None, engine="c", keep_default_na=False, na_values=[""],
                        dtype=str)
    expected = np.array([[float(v) if isinstance(v, str) and v.strip() else np.nan for v in frame[c]]
                         for c in frame.columns])
    np.testing.assert_array_equal(values, expected.reshape(values.shape))


@needs_c
@pytest.mark.parametrize("text", [b"a,b\n1,2\n\n3,4", b"\n\r\n1\r\n\r\n2\n", b"x\n" * 5, b"", b"1\n\n\n2\n\r\n",
                                  b"\r\n", b"\n", b"1\r\n\r\n\r\n", b"123456789,1\n\n2\n"])
def test_csv_row_counters_agree(tmp_path, monkeypatch, text):
    from lossctl.readers import csv

    path = tmp_path / "rows.csv"
    path.write_bytes(text)
    monkeypatch.setattr(csv, "CSV_BLOCK_BYTES", 4)  # lines longer than the buffer, carried over
    assert csv._count_rows_c(str(path)) == csv._count_csv_rows(str(path))
