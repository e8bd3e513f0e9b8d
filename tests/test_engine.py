"""The chunked, threaded engine and its fused fast paths (lossctl.engine, lossctl.fast)."""

from __future__ import annotations

import numpy as np
import pytest

import lossctl
from lossctl import engine, fast
from lossctl.arrays import from_array
from lossctl.errors import InputError
from lossctl.readers import open_input

FUSED = ["mse", "mae", "huber", "huber(delta=0.3)", "smooth_l1", "smooth_l1(beta=0.25)", "smooth_l1(beta=0)",
         "log_cosh", "quantile", "quantile(q=0.9)"]
BINARY = ["bce_with_logits", "focal", "focal(alpha=0.6, gamma=1.5)", "focal(alpha=none, gamma=0)"]


def _values(preds, targets, losses, **kw):
    report = lossctl.evaluate(preds, targets, losses, provenance=False, **kw)
    return [r.value for r in report.results]


def _generic(monkeypatch, *args, **kw):
    with monkeypatch.context() as m:
        m.setattr(engine, "FAST_PATHS", False)
        return _values(*args, **kw)


@pytest.fixture
def small_tasks(monkeypatch):
    """Many small tasks, so several worker threads really share the work."""
    monkeypatch.setattr(engine, "TASK_ELEMENTS", 512)
    monkeypatch.setattr(fast, "SUB_ELEMENTS", 128)


@pytest.fixture(params=[np.float32, np.float64])
def regression_files(request, tmp_path):
    rng = np.random.default_rng(1)
    n = 5003
    p = (rng.standard_normal(n) * 3).astype(request.param)
    t = rng.standard_normal(n).astype(request.param)
    p[::97] = t[::97] + 1e-9  # tiny residuals
    p[5] = 1e4  # a huge one
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    return str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), request.param


@pytest.fixture(params=[np.float32, np.float64])
def binary_files(request, tmp_path):
    rng = np.random.default_rng(2)
    n = 4099
    x = (rng.standard_normal(n) * 4).astype(request.param)
    x[:4] = [1e4, -1e4, 30, -30]
    t = (rng.random(n) < 0.3).astype(request.param)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", t)
    return str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), request.param


def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 2e-6


def test_fused_sums_match_the_kernels(regression_files, monkeypatch, small_tasks):
    p, t, dtype = regression_files
    fast_values = _values(p, t, FUSED)
    generic = _generic(monkeypatch, p, t, FUSED)
    np.testing.assert_allclose(fast_values, generic, rtol=_tol(dtype))


def test_fused_binary_losses_match_the_kernels(binary_files, monkeypatch, small_tasks):
    x, y, dtype = binary_files
    fast_values = _values(x, y, BINARY)
    generic = _generic(monkeypatch, x, y, BINARY)
    np.testing.assert_allclose(fast_values, generic, rtol=_tol(dtype) * 10)


def test_thread_count_and_chunk_size_do_not_change_the_value(regression_files, monkeypatch, small_tasks):
    p, t, dtype = regression_files
    seen = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("LOSSCTL_THREADS", threads)
        for chunk in (None, 1, 7, 1000, 10**6):
            seen.append(_values(p, t, FUSED, chunk_size=chunk))
    np.testing.assert_allclose(seen, [seen[0]] * len(seen), rtol=_tol(dtype))
    # and the threaded value is exactly reproducible
    monkeypatch.setenv("LOSSCTL_THREADS", "2")
    assert _values(p, t, FUSED) == _values(p, t, FUSED)


def test_in_memory_arrays_take_the_same_path(regression_files):
    p, t, dtype = regression_files
    a, b = np.load(p), np.load(t)
    np.testing.assert_allclose(_values(a, b, FUSED), _values(p, t, FUSED), rtol=1e-15)


def test_several_losses_in_one_pass_equal_separate_runs(regression_files):
    p, t, dtype = regression_files
    together = _values(p, t, FUSED)
    alone = [_values(p, t, [loss])[0] for loss in FUSED]
    np.testing.assert_allclose(together, alone, rtol=1e-15)


def test_mse_float64_is_exact_to_1e_10(tmp_path):
    rng = np.random.default_rng(3)
    p = 1e6 + rng.standard_normal(100_000)  # large mean offset
    t = 1e6 + rng.standard_normal(100_000)
    d = (p - t)
    exact = float(np.sum(d.astype(np.longdouble) ** 2) / len(d))
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    got = _values(str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), ["mse"])[0]
    assert abs(got - exact) / exact < 1e-10


def test_log_cosh_fused_keeps_precision_and_does_not_overflow(tmp_path):
    for dtype, tol in ((np.float64, 1e-14), (np.float32, 1e-6)):
        for d in (1e-8, 1e-3, 0.7, 3.0, 19.0, 25.0, 1e4):
            p = np.full(10, d, dtype=dtype)
            t = np.zeros(10, dtype=dtype)
            dd = float(dtype(d))
            exact = dd - np.log(2) + np.log1p(np.exp(-2 * dd)) if dd > 1 else np.log1p(2 * np.sinh(dd / 2) ** 2)
            got = _values(p, t, ["log_cosh"])[0]
            assert np.isfinite(got)
            assert abs(got - exact) <= tol * exact, (dtype, d, got, exact)


def test_nan_raise_names_the_first_sample_on_the_fast_path(tmp_path, small_tasks):
    p = np.arange(3000, dtype=np.float32)
    t = np.zeros(3000, dtype=np.float32)
    p[[2500, 2700]] = np.nan
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "t.npy", t)
    with pytest.raises(InputError, match=r"2 NaN values \(first at sample 2500\)"):
        _values(str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), ["mse"])


def test_nan_omit_and_propagate_match_the_kernels(tmp_path, monkeypatch, small_tasks):
    rng = np.random.default_rng(4)
    p = rng.standard_normal(3000)
    p[[10, 2000]] = np.nan
    t = rng.standard_normal(3000)
    omit = lossctl.evaluate(p, t, FUSED, nan_policy="omit", provenance=False)
    with monkeypatch.context() as m:
        m.setattr(engine, "FAST_PATHS", False)
        ref = lossctl.evaluate(p, t, FUSED, nan_policy="omit", provenance=False)
    np.testing.assert_allclose([r.value for r in omit.results], [r.value for r in ref.results], rtol=1e-12)
    assert [r.omitted for r in omit.results] == [2] * len(FUSED)
    prop = _values(p, t, ["mse"], nan_policy="propagate")
    assert np.isnan(prop[0])


def test_out_of_domain_targets_still_raise_the_kernels_error(binary_files, tmp_path):
    x, _, dtype = binary_files
    bad = np.load(x).copy()
    bad[100] = 1.5
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(InputError, match=r"targets .* outside \[0, 1\]"):
        _values(x, str(tmp_path / "bad.npy"), ["bce_with_logits"])


def test_soft_labels_take_the_generic_focal(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(1000)
    t = rng.random(1000)
    np.testing.assert_allclose(_values(x, t, ["focal"]), _generic(monkeypatch, x, t, ["focal"]), rtol=1e-15)


def test_infinite_inputs_give_the_kernels_answer(monkeypatch):
    p = np.array([1.0, np.inf, 2.0])
    t = np.array([0.0, 0.0, np.inf])
    assert _values(p, t, ["mae"]) == _generic(monkeypatch, p, t, ["mae"])
    big = np.full(100_000, 1e19, dtype=np.float32)  # squares overflow float32 sums, not float64 ones
    got = _values(big, np.zeros_like(big), ["mse"])[0]
    assert np.isfinite(got) and abs(got - 1e38) / 1e38 < 1e-6


def test_a_plugin_replacing_a_loss_gets_the_generic_path(monkeypatch):
    from lossctl import registry
    from lossctl.expr import bind

    term = bind("mse")[0]
    arr = from_array(np.ones(4), "preds")
    plan = engine.TermPlan(bound=term, arrays={"preds": arr, "targets": arr}, n=4, reduction="mean")
    assert fast.fused_for(plan) is term.spec.fused is not None
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_loss("mse", formula="p - t", summary="-", use_when="-", reference="-", elementwise=True,
                           replace=True)(lambda preds, targets: preds - targets)
    plan2 = engine.TermPlan(bound=bind("mse")[0], arrays=plan.arrays, n=4, reduction="mean")
    assert plan2.spec.fused is None and fast.fused_for(plan2) is None
    plan3 = engine.TermPlan(bound=term, arrays=plan.arrays, n=4, reduction="mean", keep_values=True)
    assert fast.fused_for(plan3) is None


def test_progress_callback_covers_every_sample(regression_files, small_tasks):
    p, t, _ = regression_files
    from lossctl.expr import bind

    seen = []
    for keep in ([False], [False, True]):  # a fused pass alone; a fused and a generic pass
        plans = []
        for k in keep:
            term = bind("mse")[0]
            arrays = {"preds": open_input(p, "preds"), "targets": open_input(t, "targets")}
            plans.append(engine.TermPlan(bound=term, arrays=arrays, n=arrays["preds"].shape[0], reduction="mean",
                                         keep_values=k))
        got = []
        engine.run(plans, on_progress=got.append, threads=2)
        seen.append(sum(got))
    n = np.load(p).shape[0]
    assert seen == [n, 2 * n]  # each pass reports its chunks (so each can hand over its per-sample values)


def test_npy_view_is_a_window_that_can_be_released(tmp_path):
    arr = np.arange(200_000, dtype=np.float64).reshape(100_000, 2)
    np.save(tmp_path / "a.npy", arr)
    lazy = open_input(str(tmp_path / "a.npy"))
    assert lazy.can_view()
    view, release = lazy.view(70_000, 100_500)
    np.testing.assert_array_equal(view, arr[70_000:])
    del view
    release()
    np.save(tmp_path / "f.npy", np.asfortranarray(arr))
    assert not open_input(str(tmp_path / "f.npy")).can_view()


def test_pitfall_observers_still_see_the_data_on_the_fast_path(tmp_path):
    labels = np.tile(np.arange(3.0), 400)
    preds = labels + 0.1
    report = lossctl.evaluate(preds, labels, ["mse"], provenance=False)
    fast_codes = sorted(w.code for w in report.warnings)
    engine.FAST_PATHS = False
    try:
        report = lossctl.evaluate(preds, labels, ["mse"], provenance=False)
    finally:
        engine.FAST_PATHS = True
    assert fast_codes == sorted(w.code for w in report.warnings)


# ------------------------------------------------------------------------------ streamed CSV


@pytest.fixture
def tiny_csv_chunks(monkeypatch, csv_parser):
    from lossctl.readers import csv

    monkeypatch.setattr(csv, "CSV_CHUNK_ROWS", 7)
    monkeypatch.setattr(csv, "_CSV_KEEP_CHUNKS", 2)


def test_csv_is_streamed_in_chunks_with_the_same_values(tmp_path, tiny_csv_chunks, small_tasks):
    rng = np.random.default_rng(6)
    p, t = rng.standard_normal(1000), rng.standard_normal(1000)
    path = tmp_path / "d.csv"
    with open(path, "w") as fh:
        fh.write("id,pred,target\n")
        for i, (a, b) in enumerate(zip(p, t)):
            fh.write(f"{i},{float(a)!r},{float(b)!r}\n")
            if i == 500:
                fh.write("\n")  # a blank line is skipped, as pandas does
    lazy = open_input(f"{path}:pred")
    assert lazy.shape == (1000,) and lazy.dtype == np.float64
    np.testing.assert_array_equal(lazy.read(0, 1000), p)
    np.testing.assert_array_equal(lazy.read(993, 1000), p[993:])  # behind the kept chunks: re-parsed
    assert open_input(str(path)).shape == (1000, 3)
    assert open_input(f"{path}:id").dtype == np.int64
    got = _values(f"{path}:pred", f"{path}:target", ["mse", "mae", "hinge(margin=2)"][:2], chunk_size=13)
    np.testing.assert_allclose(got, _values(p, t, ["mse", "mae"]), rtol=1e-13)


def test_csv_errors_name_the_line_in_a_later_chunk(tmp_path, tiny_csv_chunks, csv_parser):
    rows = [f"{i},{i * 0.5}" for i in range(40)]
    bad_fields = rows.copy()
    bad_fields[30] = "30,15.0,9"
    path = tmp_path / "f.csv"
    path.write_text("a,b\n" + "\n".join(bad_fields) + "\n")
    with pytest.raises(InputError, match="malformed row at line 32"):
        _values(f"{path}:a", f"{path}:b", ["mse"])
    text = rows.copy()
    text[25] = "25,oops"
    path.write_text("a,b\n" + "\n".join(text) + "\n")
    with pytest.raises(InputError, match=r"column 'b' has a non-numeric value 'oops' at line 27"):
        _values(f"{path}:a", f"{path}:b", ["mse"])
    ints = [f"{i},{i}" for i in range(40)]
    ints[20] = "20,0.5"
    path.write_text("a,b\n" + "\n".join(ints))  # no trailing newline either
    # either parser: a later float makes the column float64 (as one pandas.read_csv types it)
    assert open_input(f"{path}:b").dtype == np.float64
    assert _values(f"{path}:a", f"{path}:b", ["mse"]) == [pytest.approx(19.5 ** 2 / 40)]


def test_csv_headerless_and_selected_by_index(tmp_path, tiny_csv_chunks):
    path = tmp_path / "h.csv"
    path.write_text("".join(f"{i}.5,{i}\n" for i in range(30)))
    a = open_input(f"{path}:0")
    assert a.shape == (30,)
    np.testing.assert_array_equal(a.read(0, 30), np.arange(30) + 0.5)
    assert _values(f"{path}:0", f"{path}:1", ["mae"]) == [0.5]


# ------------------------------------------------------------------------------ progress bar


class _FakeTTY:
    def __init__(self):
        import io

        self.buf = io.StringIO()

    def isatty(self):
        return True

    def write(self, text):
        return self.buf.write(text)

    def flush(self):
        pass


def test_progress_bar_only_on_a_tty_and_only_for_long_runs(monkeypatch):
    from lossctl import progress

    class Plan:
        class spec:  # noqa: N801
            name = "mse"

    passes = [("fast", 1000, [Plan()])]
    import io

    assert progress.tracker_for(passes, io.StringIO()) is None  # not a terminal
    tty = _FakeTTY()
    with progress.enabled(False):
        assert progress.tracker_for(passes, tty) is None
    monkeypatch.setenv("LOSSCTL_PROGRESS", "0")
    assert progress.tracker_for(passes, tty) is None
    monkeypatch.delenv("LOSSCTL_PROGRESS")
    quick = progress.tracker_for(passes, tty)
    quick.advance(1000)  # finished at once: never drawn
    assert not quick.shown
    slow = progress.tracker_for(passes, tty)
    slow.started -= 5  # 5 s for 10% of the work: a long run
    slow.advance(100)
    assert slow.shown
    slow.advance(900)
    slow.close()
    assert not slow.shown


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_cross_entropy_and_nll_match_the_kernels(dtype, monkeypatch, small_tasks):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3001, 7)) * 3).astype(dtype)
    x[0] = [5, 5, 1, 5, 0, 0, 0]  # ties at the maximum
    x[1] = [40, -40, 0, 0, 0, 0, 0]  # very confident: log1p keeps the tiny loss
    y = rng.integers(0, 7, 3001)
    logp = x - np.log(np.exp(x.astype(np.float64)).sum(1, keepdims=True))
    for losses, inputs in ((["cross_entropy", "ce(ignore_index=3)"], x), (["nll"], logp.astype(dtype))):
        got = _values(inputs, y, losses)
        ref = _generic(monkeypatch, inputs, y, losses)
        np.testing.assert_allclose(got, ref, rtol=_tol(dtype) * 10)
    y2 = y.copy()
    y2[100] = -100  # ignore_index: that window goes to the kernel
    np.testing.assert_allclose(_values(x, y2, ["cross_entropy"]), _generic(monkeypatch, x, y2, ["cross_entropy"]),
                               rtol=_tol(dtype) * 10)
    y2[100] = 7
    with pytest.raises(InputError, match="class index 7"):
        _values(x, y2, ["cross_entropy"])


def test_csv_read_twice_rewinds_once(tmp_path, tiny_csv_chunks):
    from lossctl.readers import csv

    path = tmp_path / "twice.csv"
    path.write_text("p,t\n" + "".join(f"{i},{i % 7}\n" for i in range(200)))
    a, b = open_input(f"{path}:p"), open_input(f"{path}:t")
    np.testing.assert_array_equal(a.read(0, 200), np.arange(200))
    calls = []
    real = csv._CsvSource._restart

    def counting(self):
        calls.append(1)
        return real(self)

    csv._CsvSource._restart = counting
    try:
        for s in range(0, 200, 7):  # in step, as the engine reads them
            np.testing.assert_array_equal(a.read(s, s + 7), np.arange(s, min(200, s + 7)))
            np.testing.assert_array_equal(b.read(s, s + 7), np.arange(s, min(200, s + 7)) % 7)
    finally:
        csv._CsvSource._restart = real
    assert len(calls) == 1


def test_a_forked_child_gets_its_own_worker_pool(tmp_path, small_tasks, monkeypatch):
    import multiprocessing as mp

    monkeypatch.setenv("LOSSCTL_THREADS", "2")
    p = np.arange(5000, dtype=np.float64)
    t = np.zeros(5000)
    expected = _values(p, t, ["mse"])[0]  # the parent's pool now exists
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_child_mse, (p, t)).get(timeout=60)
    assert got == expected


def _child_mse(p, t):
    engine.TASK_ELEMENTS = 512
    fast.SUB_ELEMENTS = 128
    return _values(p, t, ["mse"])[0]
