"""Regression losses: element-wise functions of the residual ``d = preds - targets``.

Each kernel returns one value per element; the engine reduces (mean over all elements, or sum)
in float64. Semantics and parameter names follow ``torch.nn.functional``.
"""

from __future__ import annotations

import numpy as np

from lossctl.knowledge import RESIDUAL, Curve, Knowledge
from lossctl.losses._common import float_dtype
from lossctl.errors import DomainError
from lossctl.registry import Param, register_loss

_LOG2 = float(np.log(2.0))


def _residual(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``preds - targets`` in the working float type (integer inputs must not wrap or truncate)."""
    dt = float_dtype(preds, targets)
    return np.subtract(preds, targets, dtype=dt)


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
)
def mse(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``(p - t)^2``. Example: mse([1, 2, 3], [1, 2, 5]) = mean(0, 0, 4) = 4/3."""
    d = _residual(preds, targets)
    with np.errstate(over="ignore"):  # |d| > 1.3e154: d² is inf, the correctly rounded value
        return np.multiply(d, d, out=d)


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
)
def mae(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``|p - t|``. Example: mae([1, 2, 3], [1, 2, 5]) = mean(0, 0, 2) = 2/3."""
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
)
def huber(preds: np.ndarray, targets: np.ndarray, *, delta: float = 1.0) -> np.ndarray:
    """``0.5 q^2 + delta (|d| - q)`` with ``q = min(|d|, delta)``.

    Example (delta=1): huber([0.5, 2, 0], [0, 0, 0]) = mean(0.125, 1.5, 0) = 0.541667.
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
)
def smooth_l1(preds: np.ndarray, targets: np.ndarray, *, beta: float = 1.0) -> np.ndarray:
    """``0.5 q (q / beta) + (|d| - q)`` with ``q = min(|d|, beta)``.

    ``q / beta <= 1`` is formed first, so a tiny beta neither overflows (0.5/beta) nor underflows (q²).
    Example (beta=1): smooth_l1([0.5, 2, 0], [0, 0, 0]) = mean(0.125, 1.5, 0) = 0.541667.
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
)
def log_cosh(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``log(cosh(d))``, evaluated without overflow and with full relative precision.

    For ``|d| < 1``: ``log1p(2 sinh(d/2)^2)`` (exact identity cosh d = 1 + 2 sinh²(d/2), no
    cancellation at d = 1e-8). Otherwise ``|d| + log1p(exp(-2|d|)) - log 2`` (finite at d = 1e4).
    Example: log_cosh([0, 1, 2], [0, 0, 0]) = mean(0, 0.433781, 1.325003) = 0.586261.
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
)
def quantile(preds: np.ndarray, targets: np.ndarray, *, q: float = 0.5) -> np.ndarray:
    """``max(q (t - p), (q - 1)(t - p))``.

    Example (q=0.9): quantile([0, 2, 1], [1, 1, 1], q=0.9) = mean(0.9, 0.1, 0) = 1/3.
    """
    r = np.negative(_residual(preds, targets))
    return np.maximum(q * r, (q - 1.0) * r)


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
)
def msle(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``(log1p(p) - log1p(t))^2``; values must be > -1. Example: p=[0, e-1], t=[0, 0] → mean(0, 1) = 0.5."""
    for name, x in (("preds", preds), ("targets", targets)):
        with np.errstate(invalid="ignore"):
            bad = x <= -1
        if np.any(bad):
            raise DomainError(name, f"has {int(np.sum(bad))} value(s) <= -1 (e.g. {float(x[bad].flat[0]):g}); "
                                    f"msle takes log(1 + x), so values must be > -1")
    dt = np.result_type(preds, targets, np.float32)
    d = np.log1p(np.asarray(preds, dtype=dt)) - np.log1p(np.asarray(targets, dtype=dt))
    return np.multiply(d, d, out=d)


_MAPE_EPS = float(np.finfo(np.float64).eps)


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
)
def mape(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``|p - t| / max(|t|, eps)``. Example: p=[110, 45], t=[100, 50] → mean(0.1, 0.1) = 0.1."""
    dt = np.result_type(preds, targets, np.float32)
    t = np.asarray(targets, dtype=dt)
    err = np.abs(np.asarray(preds, dtype=dt) - t)
    return err / np.maximum(np.abs(t), dt.type(_MAPE_EPS) if dt == np.float64 else np.float32(_MAPE_EPS))
