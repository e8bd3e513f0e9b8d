"""Likelihood and similarity losses beyond the core table: Poisson NLL, Gaussian NLL, cosine embedding.

Semantics, parameter names and defaults are ``torch.nn.functional``'s; the maths runs in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, MemoryArray, reshaped
from lossctl.fast import (
    Block,
    Fused,
    f64_of,
    labelled_row_pairs,
    range_of,
    row_dot,
    rows64,
    same_float,
    same_float_pair,
    sum64,
)
from lossctl.knowledge import RESIDUAL, Curve, Knowledge
from lossctl.losses._common import check_range, domain_error, plural, shape_error, shown
from lossctl.registry import Param, Part, register_loss

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _strip_trailing_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = list(shape)
    while len(out) > 1 and out[-1] == 1:
        out.pop()
    return tuple(out)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------- Poisson NLL


def _curve_poisson(x, **_):
    t = 3.0
    return np.exp(x) - t * x


def _fused_poisson_nll(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """exp(x) - t x in float64 (log_input=true, full=false)."""
    if not params.get("log_input", True) or params.get("full"):
        return None
    if not range_of(blk, t)[0] >= 0.0:
        return None
    x, tt = f64_of(blk, p), f64_of(blk, t)
    ws, n = blk.ws, x.size
    v = np.exp(x, out=ws.buf("pe", n, np.float64))
    u = np.multiply(tt, x, out=ws.buf("pu", n, np.float64))
    v -= u
    return sum64(v), n


def _poisson_nll_plain(plan: Any) -> bool:
    return same_float_pair(plan) and plan.bound.params.get("log_input", True) and not plan.bound.params.get("full")


@register_loss(
    "poisson_nll", aliases=("poisson_nll_loss", "poisson"), family="regression", elementwise=True,
    params=[
        Param("log_input", "bool", True, "preds are log-rates (exp(p) - t*p); false: rates (p - t*log(p + eps))"),
        Param("full", "bool", False, "add the Stirling term t*log t - t + 0.5*log(2*pi*t) where t > 1"),
        Param("eps", "float", 1e-8, "added inside the log when log_input=false", ge=0),
    ],
    formula="exp(p) - t*p (log_input) or p - t*log(p + eps); full adds t*log t - t + 0.5*log(2*pi*t) for t > 1",
    summary="Poisson negative log-likelihood for count targets.",
    use_when="count targets (events, visits, photons); predicts a rate",
    reference="torch.nn.functional.poisson_nll_loss",
    knowledge=Knowledge(
        properties=("Poisson deviance with a log link: predicts a rate", "keeps predictions positive"),
        avoid_when=("counts are over-dispersed (variance >> mean: negative binomial)",),
        pitfalls=("log_input=true expects the log-rate", "exp overflow for large log-rates: clamp"),
        pytorch="torch.nn.PoissonNLLLoss(log_input=True)", keras="keras.losses.Poisson()  # on rates",
        curve=Curve("log-rate prediction (target count 3)", -2, 3, (("poisson_nll", _curve_poisson),))),
    fused=Fused(_fused_poisson_nll, _poisson_nll_plain),
)
def poisson_nll(preds: np.ndarray, targets: np.ndarray, *, log_input: bool = True, full: bool = False,
                eps: float = 1e-8) -> np.ndarray:
    """Poisson negative log-likelihood, as torch (log_input: ``exp(x) - t x``).

    >>> import math
    >>> from lossctl.functional import poisson_nll
    >>> round(poisson_nll([0, math.log(2)], [1, 3]), 6)  # log-rates; mean(1, 2 - 3 log 2) = 0.460279
    0.460279
    """
    x, t = _f64(preds), _f64(targets)
    check_range("targets", t, 0.0, math.inf, "Poisson targets are counts >= 0", "fix the targets")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if log_input:
            loss = np.exp(x) - t * x
        else:
            check_range("preds", x, 0.0, math.inf, "with log_input=false preds are rates >= 0",
                        "pass log_input=true for log-rates")
            loss = x - t * np.log(x + eps)
        if full:
            safe = np.where(t > 1, t, 2.0)
            stirling = safe * np.log(safe) - safe + 0.5 * np.log(2.0 * math.pi * safe)
            loss = loss + np.where(t > 1, stirling, 0.0)
    return loss


# ---------------------------------------------------------------------------- Gaussian NLL


def _check_gaussian_nll(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    p, t, v = arrays["preds"], arrays["targets"], arrays["var"]
    if p.shape != t.shape:
        if _strip_trailing_ones(p.shape) != _strip_trailing_ones(t.shape):
            raise shape_error("gaussian_nll", arrays, "gaussian_nll needs preds (the mean) and targets of "
                                                      "the same shape")
        t = reshaped(t, p.shape)
    out = {**arrays, "targets": t}
    size = int(np.prod(v.shape, dtype=np.int64))
    if v.shape == p.shape:
        return out
    if size == 1 and p.shape[:1] != (1,):  # one variance for everything (torch accepts a float)
        data = v.read_all().reshape(())
        full = np.broadcast_to(data, p.shape)
        out["var"] = MemoryArray(v.path, p.shape, v.dtype, v.key, v.name, data=full)
        return out
    if _strip_trailing_ones(v.shape) == _strip_trailing_ones(p.shape):
        out["var"] = reshaped(v, p.shape)
        return out
    if p.ndim >= 2 and v.shape == p.shape[:-1]:  # homoscedastic over the last axis
        out["var"] = reshaped(v, v.shape + (1,))
        return out
    if v.ndim == p.ndim and v.shape[0] == p.shape[0]:
        mismatched = [(a, b) for a, b in zip(p.shape, v.shape) if a != b]
        if len(mismatched) == 1 and mismatched[0][1] == 1:
            return out
    raise shape_error("gaussian_nll", {**arrays, "targets": t},
                      f"var must have the shape of preds {p.shape}, or that shape with one axis of size 1 "
                      f"(or without the last axis), or be a single value")


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _fused_gaussian_nll(blk: Block, p: Any, t: Any, var: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """½ (log max(var, eps) + (p - t)² / max(var, eps)) in float64."""
    if not range_of(blk, var)[0] >= 0.0:
        return None  # a negative variance (or NaN): the kernel names it
    x, tt, vv = f64_of(blk, p), f64_of(blk, t), f64_of(blk, var)
    ws, n = blk.ws, x.size
    v = np.maximum(vv, params["eps"], out=ws.buf("gv", n, np.float64))
    d = np.subtract(x, tt, out=ws.buf("gd", n, np.float64))
    d *= d
    d /= v
    with np.errstate(divide="ignore"):
        np.log(v, out=v)
    d += v
    total = 0.5 * sum64(d)
    if params.get("full"):
        total += n * _HALF_LOG_2PI
    return total, n


def _gaussian_nll_plain(plan: Any) -> bool:
    return same_float(plan, ("preds", "targets", "var"))


@register_loss(
    "gaussian_nll", aliases=("gaussian_nll_loss", "heteroscedastic"), family="regression",
    inputs=("preds", "targets", "var"), check_shapes=_check_gaussian_nll,
    params=[
        Param("full", "bool", False, "add the constant 0.5*log(2*pi)"),
        Param("eps", "float", 1e-6, "variances are clamped to at least eps", ge=0),
    ],
    formula="0.5*(log(max(var, eps)) + (p - t)^2 / max(var, eps)) [+ 0.5*log(2*pi) with full]",
    summary="Gaussian negative log-likelihood with a predicted variance (named input var).",
    use_when="regression that also predicts its own uncertainty (heteroscedastic noise)",
    reference="torch.nn.functional.gaussian_nll_loss",
    knowledge=Knowledge(
        properties=("negative log-likelihood of a predicted mean and variance",
                    "a proper score for the predictive distribution"),
        avoid_when=("only point predictions are needed",),
        pitfalls=("variance can collapse or the mean under-fit (beta-NLL helps)",
                  "predict log-variance or use softplus; eps clamps the variance"),
        pytorch="torch.nn.GaussianNLLLoss(eps=1e-6)", keras="-tfp.distributions.Normal(mu, sigma).log_prob(y)",
        curve=Curve(RESIDUAL + " (variance 1)", -3, 3, (("gaussian_nll", lambda r, **_: 0.5 * r**2),))),
    fused=Fused(_fused_gaussian_nll, _gaussian_nll_plain, inputs=("preds", "targets", "var")),
)
def gaussian_nll(preds: np.ndarray, targets: np.ndarray, var: np.ndarray, *, full: bool = False,
                 eps: float = 1e-6) -> Part:
    """Gaussian negative log-likelihood, as torch: ``0.5 (log max(var, eps) + (p - t)^2 / max(var, eps))``.

    >>> from lossctl.functional import gaussian_nll
    >>> round(gaussian_nll([0], [1], var=[1]), 6)  # 0.5·(log 1 + 1²/1) = 0.5·(0 + 1) = 0.5
    0.5
    """
    x, t, v = _f64(preds), _f64(targets), _f64(var)
    if v.size and (v < 0).any():
        raise domain_error("var", {"var": v}, lambda chunk: np.asarray(chunk["var"]) < 0,
                           lambda count, first, value: f"has {plural(count, 'negative value')} (the first at "
                                                       f"sample {first}: {shown(value)}); variances must be >= 0")
    v = np.maximum(v, eps)
    d = x - t
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        loss = 0.5 * (np.log(v) + d * d / v)
    if full:
        loss = loss + _HALF_LOG_2PI
    return Part(values=np.broadcast_to(loss, np.broadcast_shapes(x.shape, v.shape)))


# ------------------------------------------------------------------------ cosine embedding


def _check_cosine(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    a, b, y = arrays["x1"], arrays["x2"], arrays["targets"]
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise shape_error("cosine_embedding", arrays, "cosine_embedding needs x1 and x2 of the same shape "
                                                      "(N, D) (or (D,) for one pair) and targets (N,)")
    if a.ndim == 1:  # one pair
        a, b = reshaped(a, (1,) + a.shape), reshaped(b, (1,) + b.shape)
    n = a.shape[0]
    if y.shape not in ((n,), (n, 1)) and not (arrays["x1"].ndim == 1 and y.shape in ((), (1,))):
        raise shape_error("cosine_embedding", arrays, f"targets must have shape ({n},): one label "
                                                      f"(1 or -1) per pair")
    return {**arrays, "x1": a, "x2": b, "targets": reshaped(y, (n,))}


def _curve_cos_pos(c, **_):
    return 1 - c


def _curve_cos_neg(c, margin=0.0, **_):
    return np.maximum(0.0, c - margin)


def _fused_cosine_embedding(blk: Block, x1: Any, x2: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """1 - cos (y = 1) or max(0, cos - margin) (y = -1); cos = x1·x2 / sqrt((|x1|² + 1e-12)(|x2|² + 1e-12))."""
    rows = blk.n
    if rows == 0:
        return None
    y = f64_of(blk, t)
    if ((y != 1.0) & (y != -1.0)).any():
        return None  # other labels (or NaN): the kernel names them
    a, b = rows64(blk, x1), rows64(blk, x2)
    den = (row_dot(a, a) + 1e-12) * (row_dot(b, b) + 1e-12)
    cos = row_dot(a, b) / np.sqrt(den)
    loss = np.where(y == 1.0, 1.0 - cos, np.maximum(cos - params["margin"], 0.0))
    return float(np.add.reduce(loss)), rows


def _not_pm_one(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return ~np.isin(y, (1.0, -1.0)) & ~np.isnan(y)


@register_loss(
    "cosine_embedding", aliases=("cosine_embedding_loss",), family="embedding",
    inputs=("x1", "x2", "targets"), positional=("", "targets"), check_shapes=_check_cosine,
    params=[Param("margin", "float", 0.0, "dissimilar pairs are penalised above this cosine", ge=-1, le=1)],
    formula="1 - cos(x1, x2) if y = 1; max(0, cos(x1, x2) - margin) if y = -1; "
            "cos = x1·x2 / sqrt((|x1|^2 + 1e-12)(|x2|^2 + 1e-12))",
    summary="Cosine embedding loss for pairs labelled similar (1) or dissimilar (-1).",
    use_when="learning embeddings compared by cosine similarity from labelled pairs",
    reference="torch.nn.functional.cosine_embedding_loss",
    knowledge=Knowledge(
        properties=("1 - cos for similar pairs, max(0, cos - margin) for dissimilar",
                    "scale-invariant: only the angle matters"),
        avoid_when=("the embedding norm carries information",),
        pitfalls=("targets are +1 / -1, not 1 / 0",),
        pytorch="torch.nn.CosineEmbeddingLoss(margin=0.0)", keras="keras.losses.CosineSimilarity()  # similar pairs only",
        curve=Curve("cosine similarity", -1, 1, (("y = +1", _curve_cos_pos), ("y = -1", _curve_cos_neg)))),
    fused=Fused(_fused_cosine_embedding, labelled_row_pairs, inputs=("x1", "x2", "targets")),
)
def cosine_embedding(x1: np.ndarray, x2: np.ndarray, targets: np.ndarray, *, margin: float = 0.0) -> Part:
    """Cosine embedding loss, as torch: ``1 - cos`` for y = 1, ``max(0, cos - margin)`` for y = -1.

    >>> from lossctl.functional import cosine_embedding
    >>> round(cosine_embedding(x1=[[1, 0]], x2=[[1, 1]], targets=[1]), 6)  # 1 - 1/√2 = 0.292893
    0.292893
    """
    a, b, y = _f64(x1), _f64(x2), _f64(targets)
    if _not_pm_one(y).any():
        raise domain_error("targets", {"targets": y}, lambda chunk: _not_pm_one(chunk["targets"]),
                           lambda count, first, value: (
                               f"must be 1 (similar) or -1 (dissimilar): {plural(count, 'value')} "
                               f"{'is' if count == 1 else 'are'} not (the first at sample {first}: {shown(value)}); "
                               f"relabel the pairs (0 → -1)"))
    eps = 1e-12  # torch's EPSILON: zero vectors give cos = 0
    with np.errstate(over="ignore", invalid="ignore"):
        cos = np.sum(a * b, axis=1) / np.sqrt((np.sum(a * a, axis=1) + eps) * (np.sum(b * b, axis=1) + eps))
    loss = np.where(y == 1, 1.0 - cos, np.maximum(cos - margin, 0.0))
    loss = np.where(np.isnan(y), np.nan, loss)
    return Part(values=loss)
