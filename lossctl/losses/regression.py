"""Regression losses: element-wise functions of the residual ``d = preds - targets``.

Each kernel returns one value per element; the engine reduces (mean over all elements, or sum)
in float64. Semantics and parameter names follow ``torch.nn.functional``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossctl.ckernels import KIND_ABS, KIND_HUBER, KIND_SQUARE
from lossctl.fast import Block, Fused, c_residual_sum, range_of, same_float_pair, sum64
from lossctl.knowledge import RESIDUAL, Curve, Knowledge
from lossctl.losses._common import domain_error, float_dtype, plural, shown
from lossctl.registry import Param, register_loss

_LOG2 = float(np.log(2.0))


def _residual(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``preds - targets`` in the working float type (integer inputs must not wrap or truncate)."""
    dt = float_dtype(preds, targets)
    return np.subtract(preds, targets, dtype=dt)


def _fused_mse(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    total = c_residual_sum(blk, KIND_SQUARE, p, t)
    if total is not None:
        return total, blk.arrays[p].size
    d = blk.residual(p, t)
    v = np.multiply(d, d, out=blk.ws.buf("v", d.size, d.dtype))
    return sum64(v), d.size


@register_loss(
    "mse", aliases=("l2", "mean_squared_error"), family="regression", elementwise=True,
    formula="mean((p - t)^2)",
    summary="Mean squared error: the Gaussian log-likelihood up to constants.",
    use_when="continuous targets with light-tailed noise; predicts the conditional mean",
    reference="torch.nn.functional.mse_loss",
    categories=("regression",),
    knowledge=Knowledge(
        properties=("estimates the conditional mean (strictly consistent for it)",
                    "Gaussian maximum likelihood with fixed variance",
                    "smooth, convex; gradient grows linearly with the residual",
                    "constant second derivative (fine for Newton / GBDT)"),
        avoid_when=("outliers or heavy-tailed noise (a few residuals dominate)",
                    "the metric is MAE / a quantile (different functional)",
                    "targets are class labels (use cross-entropy)"),
        pitfalls=("in target units: standardise the target so the loss scale and LR are sane",
                  "on softmax/sigmoid outputs for classification it learns slowly when confidently wrong"),
        pytorch="torch.nn.MSELoss()", keras="keras.losses.MeanSquaredError()",
        curve=Curve(RESIDUAL, -3, 3, (("mse", lambda r, **_: r**2),))),
    fused=Fused(_fused_mse, same_float_pair, c_kind=lambda params: (KIND_SQUARE, 0.0)),
)
def mse(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``(p - t)^2``.

    >>> from lossctl.functional import mse
    >>> mse([1, 2, 3], [1, 2, 5])  # mean(0, 0, 4) = 4/3
    1.3333333333333333
    """
    d = _residual(preds, targets)
    with np.errstate(over="ignore"):  # |d| > 1.3e154: d² is inf, the correctly rounded value
        return np.multiply(d, d, out=d)


def _fused_mae(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    total = c_residual_sum(blk, KIND_ABS, p, t)
    if total is not None:
        return total, blk.arrays[p].size
    a = blk.abs_residual(p, t)
    return sum64(a), a.size


@register_loss(
    "mae", aliases=("l1", "mean_absolute_error"), family="regression", elementwise=True,
    formula="mean(|p - t|)",
    summary="Mean absolute error: the Laplace log-likelihood up to constants.",
    use_when="targets with outliers or heavy tails; predicts the conditional median",
    reference="torch.nn.functional.l1_loss",
    categories=("regression",),
    knowledge=Knowledge(
        properties=("estimates the conditional median", "robust: every residual pulls with the same force",
                    "convex, not differentiable at 0; zero second derivative"),
        avoid_when=("the mean is needed", "second-order optimisers (zero Hessian)"),
        pitfalls=("constant-magnitude gradients oscillate near the optimum: decay the learning rate",
                  "GBDT: use the library's L1 objective, not a custom one"),
        pytorch="torch.nn.L1Loss()", keras="keras.losses.MeanAbsoluteError()",
        curve=Curve(RESIDUAL, -3, 3, (("mae", lambda r, **_: np.abs(r)),))),
    fused=Fused(_fused_mae, same_float_pair, c_kind=lambda params: (KIND_ABS, 0.0)),
)
def mae(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``|p - t|``.

    >>> from lossctl.functional import mae
    >>> mae([1, 2, 3], [1, 2, 5])  # mean(0, 0, 2) = 2/3
    0.6666666666666666
    """
    d = _residual(preds, targets)
    return np.abs(d, out=d)


def _quadratic_then_linear(preds: np.ndarray, targets: np.ndarray, knee: float) -> tuple[np.ndarray, np.ndarray]:
    # Huber via q = min(|d|, knee), linear = |d| - q: no branch, no overflow at huge residuals.
    a = np.abs(_residual(preds, targets))
    q = np.minimum(a, knee)
    return q, np.subtract(a, q, out=a)


def _curve_huber(r, delta=1.0, **_):
    a = np.abs(r)
    q = np.minimum(a, delta)
    return 0.5 * q**2 + delta * (a - q)


def _huber_core(blk: Block, p: Any, t: Any, knee: float) -> np.ndarray:
    """``q (d - q/2)`` with ``q = clip(d, -knee, knee)``: the Huber loss (delta = knee), per element.

    Below the knee ``q = d`` and this is ``d·(d/2)`` (one rounding); above it ``q = ±knee`` and it is
    ``knee (|d| - knee/2)``. ``q`` and ``d - q/2`` always have the same sign, so there is no
    cancellation. Four passes after ``d`` (clip, halve, subtract, multiply) instead of five.
    """
    d = blk.residual(p, t)
    ws, n, dt = blk.ws, d.size, d.dtype
    q = np.clip(d, dt.type(-knee), dt.type(knee), out=ws.buf("q", n, dt))
    w = np.multiply(q, dt.type(0.5), out=ws.buf("l", n, dt))
    np.subtract(d, w, out=w)
    w *= q
    return w


def _fused_huber(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    total = c_residual_sum(blk, KIND_HUBER, p, t, params["delta"])
    if total is not None:
        return total, blk.arrays[p].size
    v = _huber_core(blk, p, t, params["delta"])
    return sum64(v), v.size


@register_loss(
    "huber", family="regression", elementwise=True,
    params=[Param("delta", "float", 1.0, "where the loss turns from quadratic to linear", gt=0)],
    formula="0.5*d^2 if |d| < delta else delta*(|d| - 0.5*delta), d = p - t",
    summary="Huber loss: quadratic near zero, linear in the tails (bounded outlier influence).",
    use_when="regression with some outliers where MSE's squared tails would dominate",
    reference="torch.nn.functional.huber_loss; Huber (1964)",
    categories=("regression",),
    knowledge=Knowledge(
        properties=("quadratic for |r| <= delta, linear beyond: bounded outlier influence",
                    "convex and once differentiable; gradient clipped at +-delta",
                    "estimates something between the mean and the median"),
        avoid_when=("second-order optimisers (the second derivative jumps at delta)",
                    "the exact mean is the target and there are no outliers (use MSE)"),
        pitfalls=("delta is in target units: standardise the target or tune delta",
                  "torch HuberLoss(delta) = delta * SmoothL1Loss(beta=delta)"),
        pytorch="torch.nn.HuberLoss(delta=1.0)", keras="keras.losses.Huber(delta=1.0)",
        curve=Curve(RESIDUAL, -3, 3, (("huber", _curve_huber),))),
    fused=Fused(_fused_huber, same_float_pair, c_kind=lambda params: (KIND_HUBER, params["delta"])),
)
def huber(preds: np.ndarray, targets: np.ndarray, *, delta: float = 1.0) -> np.ndarray:
    """``0.5 q^2 + delta (|d| - q)`` with ``q = min(|d|, delta)``.

    >>> from lossctl.functional import huber
    >>> round(huber([0.5, 2, 0], [0, 0, 0], delta=1), 6)  # mean(0.125, 1.5, 0) = 0.541667
    0.541667
    """
    q, linear = _quadratic_then_linear(preds, targets, delta)
    with np.errstate(over="ignore"):  # beyond 1.8e308 the value is inf, the correctly rounded one
        out = np.multiply(q, q, out=q)
        out *= 0.5
        linear *= delta
        return np.add(out, linear, out=out)


def _curve_smooth_l1(r, beta=1.0, **_):
    a = np.abs(r)
    if beta == 0:
        return a
    return np.where(a < beta, 0.5 * r**2 / beta, a - 0.5 * beta)


# below this beta, q (d - q/2) could underflow before the division by beta: divide first
_TINY_BETA = {np.dtype(np.float32): 1e-15, np.dtype(np.float64): 1e-140}


def _fused_smooth_l1(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    beta = params["beta"]
    if beta == 0:
        return _fused_mae(blk, p, t, params)
    dt = blk.arrays[p].dtype
    if beta >= _TINY_BETA[dt]:
        total = c_residual_sum(blk, KIND_HUBER, p, t, beta)
        if total is not None:
            return total / beta, blk.arrays[p].size
        v = _huber_core(blk, p, t, beta)
        return sum64(v) / beta, v.size
    a = blk.abs_residual(p, t)
    ws, n = blk.ws, a.size
    q = np.minimum(a, ws.const(beta, n, dt), out=ws.buf("q", n, dt))
    w = np.subtract(a, q, out=ws.buf("l", n, dt))
    w += a
    q /= dt.type(beta)  # q/beta <= 1 first: nothing overflows or underflows
    q *= w
    return 0.5 * sum64(q), n


@register_loss(
    "smooth_l1", family="regression", elementwise=True,
    params=[Param("beta", "float", 1.0, "width of the quadratic zone (0 gives L1)", ge=0)],
    formula="0.5*d^2/beta if |d| < beta else |d| - 0.5*beta, d = p - t (beta = 0: |d|)",
    summary="Smooth L1 (Fast R-CNN): Huber divided by beta; beta = 0 is L1.",
    use_when="bounding-box regression; robust regression where the loss scale should not depend on beta",
    reference="torch.nn.functional.smooth_l1_loss; Girshick (2015)",
    categories=("regression",),
    knowledge=Knowledge(
        properties=("Huber divided by beta: quadratic below beta, L1 above",
                    "the classic box-regression loss (Fast R-CNN)", "beta = 0 is exactly L1"),
        avoid_when=("second-order optimisers", "IoU-based metrics matter most (use GIoU/DIoU losses)"),
        pitfalls=("beta conventions differ between detection code bases (1.0 vs 1/9)",),
        pytorch="torch.nn.SmoothL1Loss(beta=1.0)", keras="keras.losses.Huber(delta=1.0)  # = beta * smooth L1",
        curve=Curve(RESIDUAL, -3, 3, (("smooth_l1", _curve_smooth_l1),))),
    fused=Fused(_fused_smooth_l1, same_float_pair),
)
def smooth_l1(preds: np.ndarray, targets: np.ndarray, *, beta: float = 1.0) -> np.ndarray:
    """``0.5 q (q / beta) + (|d| - q)`` with ``q = min(|d|, beta)``.

    ``q / beta <= 1`` is formed first, so a tiny beta neither overflows (0.5/beta) nor underflows (q²).
    >>> from lossctl.functional import smooth_l1
    >>> round(smooth_l1([0.5, 2, 0], [0, 0, 0], beta=1), 6)  # mean(0.125, 1.5, 0) = 0.541667
    0.541667
    """
    if beta == 0:
        return mae(preds, targets)
    q, linear = _quadratic_then_linear(preds, targets, beta)
    out = np.divide(q, beta)
    out *= q
    out *= 0.5
    return np.add(out, linear, out=out)


def _curve_log_cosh(r, **_):
    a = np.abs(r)
    return a + np.log1p(np.exp(-2 * a)) - np.log(2.0)


_LOG_COSH_CAP = 20.0  # log cosh(a) = log cosh(20) + (a - 20) for a >= 20, to 4e-18 relative


def _fused_log_cosh(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    """Σ log cosh(d) with one ``expm1`` and one ``log1p`` per element.

    ``cosh(a) - 1 = M (M / (2 + 2M))`` with ``M = expm1(a)``, ``a = |d|``: non-negative factors
    only, so full relative precision from ``a = 1e-30`` up. Past ``a`` ≈ 88 (float32) or 709
    (float64) ``M`` overflows; such a sub-chunk is redone with ``a`` capped at 20, beyond which
    log cosh grows exactly linearly (to 4e-18).
    """
    a = blk.abs_residual(p, t)
    ws, n, dt = blk.ws, a.size, a.dtype
    typ = dt.type
    with np.errstate(over="ignore", invalid="ignore"):
        m = np.expm1(a, out=ws.buf("u", n, dt))
        den = np.add(m, m, out=ws.buf("q", n, dt))
        den += typ(2.0)
        np.divide(m, den, out=den)
        den *= m
        np.log1p(den, out=den)
        total = sum64(den)
    if math.isfinite(total):
        return total, n
    return _log_cosh_capped(blk, a), n


def _log_cosh_capped(blk: Block, a: np.ndarray) -> float:
    ws, n, dt = blk.ws, a.size, a.dtype
    typ = dt.type
    ac = np.minimum(a, ws.const(_LOG_COSH_CAP, n, dt), out=ws.buf("q", n, dt))
    tail = np.subtract(a, ac, out=ws.buf("l", n, dt))
    m = np.expm1(ac, out=ws.buf("u", n, dt))
    den = np.add(m, m, out=ac)
    den += typ(2.0)
    np.divide(m, den, out=den)
    den *= m
    np.log1p(den, out=den)
    den += tail
    return sum64(den)


@register_loss(
    "log_cosh", aliases=("logcosh",), family="regression", elementwise=True,
    formula="mean(log(cosh(p - t)))",
    summary="Log-cosh: about d^2/2 near zero and |d| - log 2 in the tails, smooth everywhere.",
    use_when="a Huber-like loss with a continuous second derivative (Newton methods, GBDT objectives)",
    reference="keras.losses.log_cosh",
    categories=("regression",),
    knowledge=Knowledge(
        properties=("about r^2/2 near zero and |r| - log 2 in the tails",
                    "twice differentiable with a positive second derivative (1 - tanh^2)",
                    "robust like Huber without a threshold to tune"),
        avoid_when=("the exact mean is required", "very large residuals dominate training time (gradient saturates at 1)"),
        pitfalls=("naive log(cosh(x)) overflows for |x| > ~710: use |x| + log1p(exp(-2|x|)) - log 2",),
        pytorch="(e + torch.nn.functional.softplus(-2 * e) - math.log(2)).mean()  # e = pred - y",
        keras="keras.losses.LogCosh()",
        curve=Curve(RESIDUAL, -3, 3, (("log_cosh", _curve_log_cosh),))),
    fused=Fused(_fused_log_cosh, same_float_pair),
)
def log_cosh(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``log(cosh(d))``, evaluated without overflow and with full relative precision.

    For ``|d| < 1``: ``log1p(2 sinh(d/2)^2)`` (exact identity cosh d = 1 + 2 sinh²(d/2), no
    cancellation at d = 1e-8). Otherwise ``|d| + log1p(exp(-2|d|)) - log 2`` (finite at d = 1e4).
    >>> from lossctl.functional import log_cosh
    >>> round(log_cosh([0, 1, 2], [0, 0, 0]), 6)  # mean(0, 0.433781, 1.325003) = 0.586261
    0.586261
    """
    a = np.abs(_residual(preds, targets))
    small = a < 1.0
    out = np.empty_like(a)
    s = np.sinh(a[small] * 0.5)
    out[small] = np.log1p(2.0 * s * s)
    big = a[~small]
    out[~small] = big + np.log1p(np.exp(-2.0 * big)) - _LOG2
    return out


def _curve_pinball(r, q=0.9, **_):
    # r = p - t: under-prediction (r < 0) costs q per unit, over-prediction (1 - q)
    return np.maximum(-q * r, (1 - q) * r)


def _fused_quantile(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    q = params["q"]
    d = blk.residual(p, t)
    ws, n, dt = blk.ws, d.size, d.dtype
    typ = dt.type
    r = np.negative(d, out=ws.buf("u", n, dt))  # r = t - p
    hi = np.multiply(r, typ(q), out=ws.buf("q", n, dt))
    lo = np.multiply(r, typ(q - 1.0), out=ws.buf("l", n, dt))
    np.maximum(hi, lo, out=hi)
    return sum64(hi), n


@register_loss(
    "quantile", aliases=("pinball",), family="regression", elementwise=True,
    params=[Param("q", "float", 0.5, "the quantile level to predict", ge=0, le=1)],
    formula="q*max(t - p, 0) + (1 - q)*max(p - t, 0)",
    summary="Pinball (quantile) loss: its minimiser is the q-quantile of the target.",
    use_when="predicting a quantile or an interval (q=0.05/0.95); q=0.5 is half the MAE",
    reference="sklearn.metrics.mean_pinball_loss(alpha=q); Koenker & Bassett (1978)",
    categories=("regression",),
    knowledge=Knowledge(
        properties=("estimates the q-quantile (pinball loss)", "q = 0.5 is half the absolute error",
                    "asymmetric: under-prediction costs q, over-prediction 1 - q"),
        avoid_when=("the mean is needed", "second-order optimisers (zero Hessian)"),
        pitfalls=("separately trained quantiles can cross: use a joint head and sort",
                  "quantile intervals are not calibrated: use conformal prediction (CQR)"),
        pytorch="torch.maximum(q * (y - pred), (q - 1) * (y - pred)).mean()",
        keras="keras.ops.mean(keras.ops.maximum(q * e, (q - 1) * e))  # e = y - pred",
        curve=Curve(RESIDUAL, -3, 3, (("quantile", _curve_pinball),), note="drawn with q=0.9",
                    params={"q": 0.9})),
    fused=Fused(_fused_quantile, same_float_pair),
)
def quantile(preds: np.ndarray, targets: np.ndarray, *, q: float = 0.5) -> np.ndarray:
    """``max(q (t - p), (q - 1)(t - p))``.

    >>> from lossctl.functional import quantile
    >>> round(quantile([0, 2, 1], [1, 1, 1], q=0.9), 6)  # mean(0.9, 0.1, 0) = 1/3
    0.333333
    """
    r = np.negative(_residual(preds, targets))
    return np.maximum(q * r, (q - 1.0) * r)


def _fused_msle(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """(log1p(p) - log1p(t))² in the inputs' float type, as the kernel; values <= -1 go to the kernel."""
    if not (range_of(blk, p)[0] > -1.0 and range_of(blk, t)[0] > -1.0):
        return None
    x, tt = blk.arrays[p], blk.arrays[t]
    ws, n, dt = blk.ws, x.size, x.dtype
    a = np.log1p(x, out=ws.buf("ma", n, dt))
    b = np.log1p(tt, out=ws.buf("mb", n, dt))
    a -= b
    a *= a
    return sum64(a), n


def _at_most_minus_one(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return x <= -1


@register_loss(
    "msle", aliases=("mean_squared_log_error", "mean_squared_logarithmic_error"), family="regression",
    elementwise=True,
    formula="mean((log(1 + p) - log(1 + t))^2)",
    summary="Mean squared logarithmic error: squared error of log1p values (relative errors).",
    use_when="positive targets spanning orders of magnitude (prices, counts) where relative error matters",
    reference="sklearn.metrics.mean_squared_log_error; keras.losses.MeanSquaredLogarithmicError",
    knowledge=Knowledge(
        properties=("squared error of log(1 + y): penalises relative, not absolute, error",
                    "under-prediction costs more than the same over-prediction",
                    "estimates the geometric-type mean exp(E[log(1 + y)]) - 1, not the mean"),
        avoid_when=("targets can be <= -1", "the absolute error in target units is what matters (use mse/mae)"),
        pitfalls=("predictions <= -1 are undefined: end the head in softplus/exp or clip",
                  "equivalent to mse on log1p-transformed targets: transforming the target is often simpler"),
        pytorch="torch.nn.functional.mse_loss(torch.log1p(pred), torch.log1p(y))",
        keras="keras.losses.MeanSquaredLogarithmicError()",
        curve=Curve("prediction p (target t = 1)", 0.0, 5.0,
                    (("msle", lambda p, **_: (np.log1p(p) - np.log1p(1.0)) ** 2),))),
    fused=Fused(_fused_msle, same_float_pair),
)
def msle(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``(log1p(p) - log1p(t))^2``; values must be > -1.

    >>> import math
    >>> from lossctl.functional import msle
    >>> round(msle([0, math.e - 1], [0, 0]), 6)  # mean(0, 1) = 0.5
    0.5
    """
    for name, x in (("preds", preds), ("targets", targets)):
        if np.any(_at_most_minus_one(x)):
            raise domain_error(name, {name: x}, lambda chunk, name=name: _at_most_minus_one(chunk[name]),
                               lambda count, first, value: (
                                   f"has {plural(count, 'value')} <= -1 (the first at sample {first}: "
                                   f"{shown(value)}); msle takes log(1 + x), so values must be > -1"))
    dt = np.result_type(preds, targets, np.float32)
    d = np.log1p(np.asarray(preds, dtype=dt)) - np.log1p(np.asarray(targets, dtype=dt))
    return np.multiply(d, d, out=d)


_MAPE_EPS = float(np.finfo(np.float64).eps)


def _fused_mape(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    """|p - t| / max(|t|, eps), as the kernel."""
    a = blk.abs_residual(p, t)
    ws, n, dt = blk.ws, a.size, a.dtype
    den = blk.abs_of(t)
    den = np.maximum(den, ws.const(float(np.finfo(np.float64).eps), n, dt), out=ws.buf("md", n, dt))
    v = np.divide(a, den, out=ws.buf("mv", n, dt))
    return sum64(v), n


@register_loss(
    "mape", aliases=("mean_absolute_percentage_error",), family="regression", elementwise=True,
    formula="mean(|p - t| / max(|t|, eps)), eps = 2.2e-16 (a fraction: ×100 for percent)",
    summary="Mean absolute percentage error, as a fraction (scikit-learn's convention; Keras reports ×100).",
    use_when="scoring or training against a relative-error business metric on targets away from zero",
    reference="sklearn.metrics.mean_absolute_percentage_error",
    knowledge=Knowledge(
        properties=("absolute error relative to |target| (scikit-learn's fraction; Keras reports x100)",
                    "scale-free: comparable across series of different size"),
        avoid_when=("targets at or near zero (the ratio explodes)",
                    "training: it favours under-prediction (errors above are unbounded, below capped at 1)"),
        pitfalls=("a single near-zero target can dominate the mean",
                  "as a training loss, prefer mae on log targets or a weighted mae"),
        pytorch="((pred - y).abs() / y.abs().clamp_min(2.2e-16)).mean()",
        keras="keras.losses.MeanAbsolutePercentageError()  # in percent",
        curve=Curve("prediction p (target t = 1)", 0.0, 3.0,
                    (("mape", lambda p, **_: np.abs(p - 1.0)),))),
    fused=Fused(_fused_mape, same_float_pair),
)
def mape(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``|p - t| / max(|t|, eps)``.

    >>> from lossctl.functional import mape
    >>> round(mape([110, 45], [100, 50]), 6)  # mean(10/100, 5/50) = mean(0.1, 0.1) = 0.1
    0.1
    """
    dt = np.result_type(preds, targets, np.float32)
    t = np.asarray(targets, dtype=dt)
    err = np.abs(np.asarray(preds, dtype=dt) - t)
    return err / np.maximum(np.abs(t), dt.type(_MAPE_EPS) if dt == np.float64 else np.float32(_MAPE_EPS))
