"""Distribution losses: KL divergence, Jensen–Shannon divergence, and the VAE Gaussian KL term.

Every kernel works in float64 whatever the input dtype and returns one value per sample (the
divergence summed over the non-batch axes), so ``mean`` is torch's ``batchmean`` and ``sum`` is the
plain sum. A term with P = 0 contributes 0 whatever Q is (0·log 0 = 0, even where Q = 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, reshaped
from lossctl.errors import ExprError
from lossctl.fast import (
    Block,
    Fused,
    f64_of,
    no_params,
    range_of,
    same_float,
    same_float_pair,
    sum64,
)
from lossctl.knowledge import Curve, Knowledge
from lossctl.losses._common import check_range, log_softmax, shape_error
from lossctl.registry import Param, Part, register_loss

_LOG2 = float(np.log(2.0))

_Q_PARAMS = [
    Param("log_input", "bool", False, "preds are log-probabilities log Q"),
    Param("from_logits", "bool", False, "preds are logits; Q = softmax over axis 1"),
    Param("log_target", "bool", False, "targets are log-probabilities log P"),
]


def _strip_trailing_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = list(shape)
    while len(out) > 1 and out[-1] == 1:
        out.pop()
    return tuple(out)


def _check_distributions(loss: str) -> Any:
    """preds and targets of the same shape; a 1-D pair is one distribution (seen as (1, C))."""

    def check(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
        if params.get("log_input") and params.get("from_logits"):
            raise ExprError(f"{loss}: log_input=true and from_logits=true contradict each other; "
                            f"pass log_input=true for log-probabilities or from_logits=true for logits")
        p, t = arrays["preds"], arrays["targets"]
        if p.shape != t.shape:
            if _strip_trailing_ones(p.shape) != _strip_trailing_ones(t.shape) or p.ndim == 0:
                raise shape_error(loss, arrays, f"{loss} needs preds (Q) and targets (P) of the same shape, "
                                                f"class axis 1 ((C,) for a single distribution)")
            t = reshaped(t, p.shape)
        if p.ndim == 1:  # one distribution: the plain sum
            p, t = reshaped(p, (1,) + p.shape), reshaped(t, (1,) + t.shape)
        return {**arrays, "preds": p, "targets": t}

    return check


def _log_q(preds: np.ndarray, log_input: bool, from_logits: bool) -> np.ndarray:
    x = np.asarray(preds, dtype=np.float64)
    if from_logits:
        return log_softmax(x, axis=1)
    if log_input:
        return x
    check_range("preds", x, 0.0, 1.0, "Q must be probabilities",
                "pass log_input=true for log-probabilities or from_logits=true for logits")
    with np.errstate(divide="ignore"):
        return np.log(x)


def _p_and_log_p(targets: np.ndarray, log_target: bool) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(targets, dtype=np.float64)
    if log_target:
        with np.errstate(over="ignore"):
            return np.exp(t), t
    check_range("targets", t, 0.0, 1.0, "P must be probabilities", "pass log_target=true for log-probabilities")
    with np.errstate(divide="ignore"):
        return t, np.log(t)


def _per_sample(terms: np.ndarray) -> np.ndarray:
    return terms.reshape(terms.shape[0], -1).sum(axis=1)


def _xlogratio(p: np.ndarray, log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """``p * (log p - log q)`` with the convention that a term with p = 0 is 0 (whatever q is)."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = p * (log_p - log_q)
    return np.where(p == 0, 0.0, out)


def _curve_kl_binary(q, **_):
    p = np.array([0.7, 0.3])
    q2 = np.stack([q, 1 - q])
    return np.sum(p[:, None] * (np.log(p[:, None]) - np.log(q2)), axis=0)


def _fused_kl_div(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Σ P (log P - log Q) in float64; mean over rows (batchmean)."""
    if params.get("from_logits") or params.get("log_target") or not blk.in_unit(t):
        return None
    log_input = params.get("log_input")
    if not log_input and not blk.in_unit(p):
        return None
    q, pp = f64_of(blk, p), f64_of(blk, t)
    ws, n = blk.ws, q.size
    if log_input:
        lq = q
    else:
        lq = ws.buf("lq", n, np.float64)
        with np.errstate(divide="ignore"):
            np.log(q, out=lq)
    v = ws.buf("kl", n, np.float64)
    with np.errstate(divide="ignore"):
        np.log(pp, out=v)
    v -= lq
    v *= pp
    if range_of(blk, t)[0] == 0.0:
        np.copyto(v, 0.0, where=pp == 0.0)  # 0 log 0 = 0, whatever Q is
    return sum64(v), blk.n


def _kl_div_plain(plan: Any) -> bool:
    return same_float_pair(plan) and no_params("from_logits", "log_target")(plan)


@register_loss(
    "kl_div", aliases=("kl", "kl_divergence", "kld"), family="distribution", params=_Q_PARAMS,
    check_shapes=_check_distributions("kl_div"),
    formula="KL(P||Q) = sum P*(log P - log Q) over non-batch axes, mean over axis 0 (batchmean)",
    summary="Kullback–Leibler divergence KL(P‖Q) of the target distribution P from the prediction Q.",
    use_when="distillation (match a teacher's distribution) and any soft-target distribution matching",
    reference="torch.nn.functional.kl_div(log Q, P, reduction='batchmean')",
    categories=("divergence",),
    knowledge=Knowledge(
        properties=("KL(P || Q): extra nats to code P with Q", "differs from soft-target CE by the entropy of P",
                    "asymmetric; infinite where P > 0 and Q = 0"),
        avoid_when=("Q can be exactly zero where P is not (use js_div, or smooth Q)",),
        pitfalls=("torch KLDivLoss takes log Q as input, and needs reduction='batchmean' for the true KL",
                  "distillation at temperature T: multiply by T^2"),
        pytorch="torch.nn.KLDivLoss(reduction='batchmean')(q_logits.log_softmax(1), p)", keras="keras.losses.KLDivergence()",
        curve=Curve("Q(class 0) for P = (0.7, 0.3)", 0.01, 0.99, (("kl_div", _curve_kl_binary),))),
    fused=Fused(_fused_kl_div, _kl_div_plain),
)
def kl_div(preds: np.ndarray, targets: np.ndarray, *, log_input: bool = False, from_logits: bool = False,
           log_target: bool = False) -> Part:
    """KL(P || Q) with Q = preds, P = targets.

    >>> from lossctl.functional import kl_div
    >>> round(kl_div([[0.5, 0.5]], [[0.9, 0.1]]), 6)  # 0.9 log 1.8 + 0.1 log 0.2 = 0.368064
    0.368064
    """
    log_q = _log_q(preds, log_input, from_logits)
    p, log_p = _p_and_log_p(targets, log_target)
    return Part(values=_per_sample(_xlogratio(p, log_p, log_q)))


def _curve_js_binary(q, **_):
    p = np.array([0.7, 0.3])[:, None]
    q2 = np.stack([q, 1 - q])
    m = 0.5 * (p + q2)
    kl = lambda a, b: np.sum(np.where(a > 0, a * (np.log(np.where(a > 0, a, 1)) - np.log(b)), 0), axis=0)
    return 0.5 * kl(p, m) + 0.5 * kl(q2, m)


def _xlogy_ratio(blk: Block, name: str, a: np.ndarray, b: np.ndarray, a_min: float) -> np.ndarray:
    """``a log(a / b)`` per element (float64), 0 where ``a`` is 0."""
    out = np.divide(a, b, out=blk.ws.buf(name, a.size, np.float64))
    with np.errstate(divide="ignore"):
        np.log(out, out=out)
    out *= a
    if a_min == 0.0:
        np.copyto(out, 0.0, where=a == 0.0)
    return out


def _fused_js_div(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """½ Σ [P log(P/M) + Q log(Q/M)], M = (P + Q)/2, in float64; mean over rows."""
    if params.get("from_logits") or params.get("log_target") or params.get("log_input"):
        return None
    if not (blk.in_unit(p) and blk.in_unit(t)):
        return None
    q, pp = f64_of(blk, p), f64_of(blk, t)
    ws, n = blk.ws, q.size
    m = np.add(q, pp, out=ws.buf("m", n, np.float64))
    m *= 0.5
    a = _xlogy_ratio(blk, "jsa", pp, m, range_of(blk, t)[0])
    b = _xlogy_ratio(blk, "jsb", q, m, range_of(blk, p)[0])
    a += b
    return 0.5 * sum64(a), blk.n


def _js_div_plain(plan: Any) -> bool:
    return same_float_pair(plan) and no_params("from_logits", "log_target", "log_input")(plan)


@register_loss(
    "js_div", aliases=("jensen_shannon", "jsd"), family="distribution", params=_Q_PARAMS,
    check_shapes=_check_distributions("js_div"),
    formula="JS = 0.5*KL(P||M) + 0.5*KL(Q||M), M = (P + Q)/2, natural log, summed over non-batch axes, "
            "mean over axis 0",
    summary="Jensen–Shannon divergence (nats; symmetric, bounded by log 2 per distribution).",
    use_when="a symmetric, bounded alternative to KL when either distribution may have zeros",
    reference="Lin (1991), IEEE Trans. Inf. Theory 37(1); equals scipy.spatial.distance.jensenshannon(p, q)**2",
    categories=("divergence",),
    knowledge=Knowledge(
        properties=("symmetric, bounded by log 2", "finite even where one distribution is zero"),
        avoid_when=("you need the maximum-likelihood gradient of KL/CE",),
        pitfalls=("gradients vanish when the distributions barely overlap",),
        pytorch="0.5 * (kl(p, m) + kl(q, m)), m = (p + q) / 2", keras="# implement from two KLDivergence terms",
        curve=Curve("Q(class 0) for P = (0.7, 0.3)", 0.01, 0.99, (("js_div", _curve_js_binary),))),
    fused=Fused(_fused_js_div, _js_div_plain),
)
def js_div(preds: np.ndarray, targets: np.ndarray, *, log_input: bool = False, from_logits: bool = False,
           log_target: bool = False) -> Part:
    """Jensen–Shannon divergence between Q = preds and P = targets.

    >>> from lossctl.functional import js_div
    >>> round(js_div([[1, 0]], [[0, 1]]), 6)  # disjoint supports: log 2 = 0.693147
    0.693147
    """
    log_q = _log_q(preds, log_input, from_logits)
    p, log_p = _p_and_log_p(targets, log_target)
    with np.errstate(over="ignore"):
        q = np.exp(log_q)
    log_m = np.logaddexp(log_p, log_q) - _LOG2  # log((P + Q)/2), exact where either is tiny
    terms = 0.5 * (_xlogratio(p, log_p, log_m) + _xlogratio(q, log_q, log_m))
    return Part(values=_per_sample(terms))


# ----------------------------------------------------------------------------- Gaussian KL


def _expm1_minus_x(x: np.ndarray) -> np.ndarray:
    """``exp(x) - 1 - x`` at full relative precision (a Taylor series where the difference cancels)."""
    with np.errstate(over="ignore"):
        direct = np.expm1(x) - x
    small = np.abs(x) < 0.1
    if small.any():
        xs = np.where(small, x, 0.0)
        series = np.zeros_like(xs)
        term = xs.copy()
        for k in range(2, 14):  # x^k/k!; |x| < 0.1 → truncation far below 1 ulp
            term = term * xs / k
            series = series + term
        direct = np.where(small, series, direct)
    return direct


def _check_gaussian(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    mu, lv = arrays["mu"], arrays["logvar"]
    if mu.shape != lv.shape:
        if _strip_trailing_ones(mu.shape) != _strip_trailing_ones(lv.shape):
            raise shape_error("gaussian_kl", arrays, "gaussian_kl needs mu and logvar of the same shape (N, D)")
        lv = reshaped(lv, mu.shape)
    return {**arrays, "logvar": lv}


_GKL_SERIES = 1e-3  # below this |logvar|, exp(x) - 1 - x by its Taylor series (the direct form cancels)


def _fused_gaussian_kl(blk: Block, mu: Any, lv: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """½ Σ (μ² + exp(v) - 1 - v) in float64: ``expm1(v) - v``, and for |v| < 1e-3 (where that
    cancels) the series v²/2 + v³/6 + … + v⁶/720 on just those elements. Every term is >= 0."""
    x = f64_of(blk, lv)
    ws, n = blk.ws, x.size
    a = np.abs(x, out=ws.buf("gka", n, np.float64))
    small = np.flatnonzero(np.less(a, _GKL_SERIES, out=ws.buf("gks", n, np.bool_)))
    e = np.expm1(x, out=a)
    e -= x
    if small.size:
        xs = x[small]
        poly = xs * (1.0 / 720.0) + (1.0 / 120.0)
        for c in (1.0 / 24.0, 1.0 / 6.0, 0.5):
            poly *= xs
            poly += c
        poly *= xs * xs
        e[small] = poly
    m = f64_of(blk, mu)
    sq = np.multiply(m, m, out=ws.buf("gkm", n, np.float64))
    e += sq
    return 0.5 * sum64(e), blk.n


def _gaussian_kl_plain(plan: Any) -> bool:
    return same_float(plan, ("mu", "logvar"))


@register_loss(
    "gaussian_kl", aliases=("vae_kl", "kl_normal"), family="distribution",
    inputs=("mu", "logvar"), positional=("mu", "logvar"), check_shapes=_check_gaussian,
    formula="0.5 * sum_d (mu^2 + exp(logvar) - 1 - logvar), summed over D, mean over N",
    summary="KL(N(mu, exp(logvar)) ‖ N(0, 1)): the latent term of a VAE's ELBO.",
    use_when="variational autoencoders (add to a reconstruction loss: bce + gaussian_kl)",
    reference="Kingma & Welling (2014), arXiv:1312.6114, Appendix B",
    knowledge=Knowledge(
        properties=("closed-form KL(N(mu, sigma^2) || N(0, 1)) of a VAE posterior",
                    "summed over latent dimensions, mean over the batch"),
        avoid_when=("the prior is not a standard normal",),
        pitfalls=("reduce reconstruction and KL the same way, or beta changes silently",
                  "posterior collapse: KL annealing or free bits"),
        pytorch="-0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1).mean()",
        keras="-0.5 * keras.ops.sum(1 + logvar - mu**2 - keras.ops.exp(logvar), axis=1)",
        curve=Curve("mu (with logvar = 0)", -3, 3, (("gaussian_kl", lambda m, **_: 0.5 * m**2),))),
    fused=Fused(_fused_gaussian_kl, _gaussian_kl_plain, inputs=("mu", "logvar")),
)
def gaussian_kl(mu: np.ndarray, logvar: np.ndarray) -> Part:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over the latent dimensions.

    >>> from lossctl.functional import gaussian_kl
    >>> round(gaussian_kl(mu=[[1, 0]], logvar=[[0, 0]]), 6)  # 0.5·(1 + 0) = 0.5
    0.5
    """
    m = np.asarray(mu, dtype=np.float64)
    lv = np.asarray(logvar, dtype=np.float64)
    with np.errstate(over="ignore"):
        terms = 0.5 * (m * m + _expm1_minus_x(lv))
    return Part(values=_per_sample(terms) if terms.ndim > 1 else terms)
