"""Every foundation loss against PyTorch itself (and scikit-learn where the contract names it), on
seeded random inputs of several shapes and parameters: mean, sum and per-element (reduction='none')
values, float64 at rel 1e-10 and float32 at rel 1e-5 (reference: float64 maths on the float32
values). Skipped when torch is not installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
sklearn_metrics = pytest.importorskip("sklearn.metrics")

import lossctl  # noqa: E402
from lossctl.functional import compute  # noqa: E402

SEEDS = range(4)  # shapes and scales cycle with seed % 3
DTYPES = ("float64", "float32")


def _t(a):
    a = np.asarray(a)
    return torch.from_numpy(a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float64))


def _cast(arrays, dtype):
    return {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in arrays.items()}


def _check(loss, arrays, params, ref, dtype, *, chunk=True):
    """Compare mean, sum and none against ``ref(arrays64, reduction)`` (arrays64 = stored values in float64)."""
    stored = _cast(arrays, dtype)
    as64 = _cast(stored, np.float64)
    rel = 1e-10 if dtype == "float64" else 1e-5
    for reduction in ("mean", "sum"):
        got = compute(loss, stored["preds"], stored["targets"], reduction=reduction, **params)
        want = float(ref(as64, reduction))
        if math.isnan(want):
            assert math.isnan(got), (reduction, got)
        else:
            assert math.isclose(got, want, rel_tol=rel, abs_tol=1e-300), (loss, params, dtype, reduction, got, want)
    got_none = np.asarray(compute(loss, stored["preds"], stored["targets"], reduction="none", **params))
    want_none = np.asarray(ref(as64, "none"), dtype=np.float64)
    scale = np.nanmax(np.abs(want_none)) if want_none.size and np.isfinite(want_none).any() else 1.0
    np.testing.assert_allclose(got_none.reshape(-1), want_none.reshape(-1), rtol=rel, atol=rel * 1e-2 * scale)
    if chunk and stored["preds"].ndim >= 1 and stored["preds"].shape[0] > 2:
        expr = loss if not params else f"{loss}({', '.join(f'{k}={_fmt(v)}' for k, v in params.items())})"
        report = lossctl.evaluate(inputs=stored, loss=expr, chunk_size=2, nan_policy="propagate", provenance=False)
        chunked = report.results[0].value
        want = float(ref(as64, "mean"))
        assert (math.isnan(chunked) and math.isnan(want)) or math.isclose(chunked, want, rel_tol=rel), (chunked, want)


def _fmt(v):
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(repr(float(x)) for x in v) + "]"
    return repr(v)


def _torch(fn, long_target=False, **kw):
    tensors = {k: (_t(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in kw.items()}

    def ref(a, reduction):
        t = _t(a["targets"])
        return fn(_t(a["preds"]), t.long() if long_target else t, reduction=reduction, **tensors).numpy()
    return ref


def _reduce(values, reduction):
    values = np.asarray(values, dtype=np.float64)
    return values.mean() if reduction == "mean" else values.sum() if reduction == "sum" else values


# ------------------------------------------------------------------------------------ regression


def _regression_inputs(seed):
    rng = np.random.default_rng(seed)
    shape = [(40,), (7, 5), (3, 4, 2)][seed % 3]
    scale = [1.0, 5.0, 0.1][seed % 3]
    return {"preds": rng.normal(size=shape) * scale, "targets": rng.normal(size=shape) * scale}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("loss,params,fn,tkw", [
    ("mse", {}, F.mse_loss, {}),
    ("mae", {}, F.l1_loss, {}),
    ("huber", {}, F.huber_loss, {}),
    ("huber", {"delta": 0.3}, F.huber_loss, {"delta": 0.3}),
    ("huber", {"delta": 7.5}, F.huber_loss, {"delta": 7.5}),
    ("smooth_l1", {}, F.smooth_l1_loss, {}),
    ("smooth_l1", {"beta": 0.25}, F.smooth_l1_loss, {"beta": 0.25}),
    ("smooth_l1", {"beta": 0.0}, F.smooth_l1_loss, {"beta": 0.0}),
])
def test_regression_vs_torch(loss, params, fn, tkw, seed, dtype):
    _check(loss, _regression_inputs(seed), params, _torch(fn, **tkw), dtype)


def _log_cosh_torch(a, reduction):
    # log cosh d = log1p((cosh d - 1)) and cosh d - 1 = expm1(|d|)^2 / (2 e^|d|): no cancellation.
    d = (_t(a["preds"]) - _t(a["targets"])).abs()
    return _reduce(torch.log1p(torch.expm1(d) ** 2 / (2 * torch.exp(d))).numpy(), reduction)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_log_cosh_vs_torch_formula(seed, dtype):
    _check("log_cosh", _regression_inputs(seed), {}, _log_cosh_torch, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("q", [0.5, 0.1, 0.9, 0.0, 1.0])
def test_quantile_vs_sklearn(q, seed, dtype):
    def ref(a, reduction):
        p, t = a["preds"].reshape(-1), a["targets"].reshape(-1)
        if reduction == "none":
            r = t - p
            return np.where(r >= 0, q * r, (q - 1) * r)
        value = sklearn_metrics.mean_pinball_loss(t, p, alpha=q)
        return value * p.size if reduction == "sum" else value
    _check("quantile", _regression_inputs(seed), {"q": q}, ref, dtype)


# ---------------------------------------------------------------------------------------- binary


def _binary_inputs(seed, soft=False):
    rng = np.random.default_rng(100 + seed)
    shape = [(30,), (8, 3), (4, 3, 2)][seed % 3]
    x = rng.normal(size=shape) * [1.0, 4.0, 12.0][seed % 3]
    t = rng.random(shape) if soft else (rng.random(shape) > 0.5).astype(np.float64)
    return x, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", ["plain", "soft", "weight"])
def test_bce_vs_torch(variant, seed, dtype):
    x, t = _binary_inputs(seed, soft=variant == "soft")
    p = 1 / (1 + np.exp(-np.clip(x, -30, 30)))
    params, kw = {}, {}
    if variant == "weight":
        w = [0.5, 2.0, 1.5][: x.shape[-1]] if x.ndim > 1 else [0.7]
        params, kw = {"weight": w}, {"weight": np.array(w)}
    _check("bce", {"preds": p, "targets": t}, params, _torch(F.binary_cross_entropy, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", ["plain", "soft", "pos_weight_scalar", "pos_weight_columns", "weight"])
def test_bce_with_logits_vs_torch(variant, seed, dtype):
    x, t = _binary_inputs(seed, soft=variant == "soft")
    cols = x.shape[-1] if x.ndim > 1 else 1
    params, kw = {}, {}
    if variant == "pos_weight_scalar":
        params, kw = {"pos_weight": 3.0}, {"pos_weight": np.array([3.0])}
    elif variant == "pos_weight_columns":
        pw = [0.5, 2.0, 4.0][:cols]
        params, kw = {"pos_weight": pw, "weight": 0.5}, {"pos_weight": np.array(pw), "weight": np.array([0.5])}
    elif variant == "weight":
        w = [2.0, 0.25, 1.0][:cols]
        params, kw = {"weight": w}, {"weight": np.array(w)}
    _check("bce_with_logits", {"preds": x, "targets": t}, params, _torch(F.binary_cross_entropy_with_logits, **kw),
           dtype)


def _torchvision_focal(alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss (torchvision/ops/focal_loss.py), in torch float64."""
    def ref(a, reduction):
        inputs, targets = _t(a["preds"]), _t(a["targets"])
        p = torch.sigmoid(inputs)
        ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce_loss * ((1 - p_t) ** gamma)
        if alpha >= 0:
            loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
        return _reduce(loss.numpy(), reduction)
    return ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 2.0), (0.6, 0.0), (0.1, 1.5), (-1.0, 3.0)])
def test_binary_focal_vs_torchvision(alpha, gamma, seed, dtype):
    x, t = _binary_inputs(seed)
    x = np.clip(x, -12, 12)  # torchvision's 1 - p_t cancels for |x| > ~15 (lossctl's does not)
    _check("focal", {"preds": x, "targets": t}, {"alpha": alpha, "gamma": gamma},
           _torchvision_focal(-1.0 if alpha is None else alpha, gamma), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("labels01", [False, True])
def test_binary_hinge_vs_sklearn(labels01, seed, dtype):
    rng = np.random.default_rng(200 + seed)
    s = rng.normal(size=25) * 2
    y = np.where(rng.random(25) > 0.5, 1, -1)
    y[:2] = [1, -1]
    targets = (y > 0).astype(np.int64) if labels01 else y.astype(np.float64)

    def ref(a, reduction):
        if reduction == "none":
            return np.maximum(0, 1 - y * a["preds"])
        value = sklearn_metrics.hinge_loss(a["targets"], a["preds"])
        return value * len(y) if reduction == "sum" else value
    _check("hinge", {"preds": s, "targets": targets}, {}, ref, dtype)


# ------------------------------------------------------------------------------------ multiclass


def _multiclass_inputs(seed, spatial=False, ignore=False):
    rng = np.random.default_rng(300 + seed)
    n, c = 12, [3, 5, 2][seed % 3]
    shape = (n, c, 3, 2) if spatial else (n, c)
    x = rng.normal(size=shape) * [1.0, 3.0, 8.0][seed % 3]
    y = rng.integers(0, c, (n,) + shape[2:])
    if ignore:
        y.reshape(-1)[::4] = -100
    return x, y


def _probs(x_shape, seed):
    rng = np.random.default_rng(400 + seed)
    p = rng.random(x_shape) + 0.05
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("variant", ["plain", "weight", "ignore", "smoothing", "smoothing_weight_ignore",
                                     "probs", "probs_weight_smoothing"])
def test_cross_entropy_vs_torch(variant, spatial, seed, dtype):
    x, y = _multiclass_inputs(seed, spatial=spatial, ignore="ignore" in variant)
    c = x.shape[1]
    w = list(np.linspace(0.5, 2.0, c))
    params, kw = {}, {}
    if "weight" in variant:
        params["weight"], kw["weight"] = w, np.array(w)
    if "smoothing" in variant:
        params["label_smoothing"] = kw["label_smoothing"] = 0.15
    targets = _probs(x.shape, seed) if variant.startswith("probs") else y
    _check("cross_entropy", {"preds": x, "targets": targets}, params,
           _torch(F.cross_entropy, long_target=not variant.startswith("probs"), **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("variant", ["plain", "weight_ignore", "ignore_index_1"])
def test_nll_vs_torch(variant, seed, dtype):
    x, y = _multiclass_inputs(seed, spatial=seed % 2 == 1, ignore=variant == "weight_ignore")
    logp = np.log(_probs(x.shape, seed))
    c = x.shape[1]
    params, kw = {}, {}
    if variant == "weight_ignore":
        w = list(np.linspace(2.0, 0.3, c))
        params, kw = {"weight": w}, {"weight": np.array(w)}
    elif variant == "ignore_index_1":
        params = kw = {"ignore_index": 1}
    _check("nll", {"preds": logp, "targets": y}, params, _torch(F.nll_loss, long_target=True, **kw), dtype)


def _multiclass_focal_ref(alpha, gamma):
    """SPEC §4 in torch float64: -α_y (1 - p_y)^γ log p_y, 1 - p_y = -expm1(log p_y)."""
    def ref(a, reduction):
        logp = F.log_softmax(_t(a["preds"]), dim=1)
        y = _t(a["targets"]).long()
        logp_y = logp.gather(1, y[:, None])[:, 0]
        loss = -((-torch.expm1(logp_y)) ** gamma) * logp_y
        if alpha is not None:
            alpha_c = torch.full((logp.shape[1],), float(alpha)) if not isinstance(alpha, list) else _t(alpha)
            loss = alpha_c[y] * loss
        return _reduce(loss.numpy(), reduction)
    return ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 0.0), (1.0, 1.0), ("list", 2.5)])
def test_multiclass_focal_vs_formula(alpha, gamma, seed, dtype):
    x, y = _multiclass_inputs(seed)
    if alpha == "list":
        alpha = list(np.linspace(0.2, 0.9, x.shape[1]))
    _check("focal", {"preds": np.clip(x, -15, 15), "targets": y}, {"alpha": alpha, "gamma": gamma},
           _multiclass_focal_ref(alpha, gamma), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("margin,squared", [(1.0, False), (0.5, False), (2.0, True)])
def test_multiclass_hinge(margin, squared, seed, dtype):
    x, y = _multiclass_inputs(seed)
    c = x.shape[1]

    def ref(a, reduction):
        s = _t(a["preds"])
        yt = torch.from_numpy(y)
        others = s.scatter(1, yt[:, None], -math.inf)
        terms = torch.clamp(margin + others.max(dim=1).values - s.gather(1, yt[:, None])[:, 0], min=0)
        if squared:
            terms = terms ** 2
        if margin == 1.0 and not squared and reduction != "none" and c > 2:  # the contract's reference
            value = sklearn_metrics.hinge_loss(y, a["preds"], labels=np.arange(c))
            assert math.isclose(value, float(terms.mean()), rel_tol=1e-12)
        return _reduce(terms.numpy(), reduction)
    _check("hinge", {"preds": x, "targets": y}, {"margin": margin, "squared": squared}, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("p,margin,weighted", [(1, 1.0, False), (2, 1.0, False), (1, 0.3, True), (2, 2.5, True)])
def test_multi_margin_vs_torch(p, margin, weighted, seed, dtype):
    x, y = _multiclass_inputs(seed)
    params, kw = {"p": p, "margin": margin}, {"p": p, "margin": margin}
    if weighted:
        w = list(np.linspace(1.5, 0.2, x.shape[1]))
        params["weight"], kw["weight"] = w, np.array(w)
    _check("multi_margin", {"preds": x, "targets": y}, params, _torch(F.multi_margin_loss, long_target=True, **kw),
           dtype)


# ------------------------------------------------------------------------- hypothesis: any inputs

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

_VALUES = st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False)
_PAIRS = st.integers(1, 12).flatmap(lambda n: st.tuples(arrays(np.float64, n, elements=_VALUES),
                                                        arrays(np.float64, n, elements=_VALUES)))
_REGRESSION = [  # (loss, params = torch keyword arguments, torch function)
    ("mse", {}, F.mse_loss), ("mae", {}, F.l1_loss), ("huber", {}, F.huber_loss),
    ("huber", {"delta": 0.5}, F.huber_loss), ("smooth_l1", {}, F.smooth_l1_loss),
    ("smooth_l1", {"beta": 0.0}, F.smooth_l1_loss),
]
# abs_tol 1e-12: torch's own (1 - t) x + softplus(-x) and log(Σ exp) lose absolute precision ~1e-16·|x|
# on near-zero losses, where lossctl's forms are exact.


@settings(max_examples=60, deadline=None)
@given(_PAIRS, st.sampled_from(_REGRESSION))
def test_hypothesis_regression_vs_torch(pt, case):
    p, t = pt
    loss, params, fn = case
    got = compute(loss, p, t, **params)
    want = fn(_t(p), _t(t), **params).item()
    assert math.isclose(got, want, rel_tol=1e-10, abs_tol=1e-300), (got, want)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    arrays(np.float64, (n, 3), elements=st.floats(-1e4, 1e4, allow_nan=False)),
    arrays(np.int64, n, elements=st.integers(0, 2)))), st.sampled_from([0.0, 0.1]))
def test_hypothesis_cross_entropy_vs_torch(xy, label_smoothing):
    x, y = xy
    got = compute("cross_entropy", x, y, label_smoothing=label_smoothing)
    want = F.cross_entropy(_t(x), torch.from_numpy(y), label_smoothing=label_smoothing).item()
    assert math.isclose(got, want, rel_tol=1e-10, abs_tol=1e-12), (got, want)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    arrays(np.float64, n, elements=st.floats(-1e4, 1e4, allow_nan=False)),
    arrays(np.float64, n, elements=st.sampled_from([0.0, 1.0, 0.3])))))
def test_hypothesis_bce_with_logits_vs_torch(xt):
    x, t = xt
    got = compute("bce_with_logits", x, t)
    want = F.binary_cross_entropy_with_logits(_t(x), _t(t)).item()
    assert math.isclose(got, want, rel_tol=1e-10, abs_tol=1e-12), (got, want)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    arrays(np.float64, (n, 4), elements=st.floats(-1e4, 1e4, allow_nan=False)),
    arrays(np.int64, n, elements=st.integers(0, 3)))), st.sampled_from([1, 2]), st.floats(0, 3))
def test_hypothesis_multi_margin_vs_torch(xy, p, margin):
    x, y = xy
    got = compute("multi_margin", x, y, p=p, margin=margin)
    want = F.multi_margin_loss(_t(x), torch.from_numpy(y), p=p, margin=margin).item()
    assert math.isclose(got, want, rel_tol=1e-10, abs_tol=1e-12), (got, want)
