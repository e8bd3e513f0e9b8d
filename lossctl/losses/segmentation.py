"""Overlap losses for segmentation: Dice, IoU (Jaccard) and Tversky.

Each is ``1 - score`` of three sums, ``I = Σ p·t``, ``P = Σ p`` and ``T = Σ t``. Those sums are
sufficient statistics: every chunk adds its own (per class where classes are scored separately) to
``Part.stats`` and ``finalize`` forms the global score once, so chunked evaluation equals one-shot.

Targets are either a mask of the preds' shape (binary or multi-label; ``from_logits`` applies a
sigmoid), or class indices ``(N, ...)`` for multiclass preds ``(N, C, ...)`` (``from_logits``
applies a softmax over axis 1; targets are one-hot encoded; the score is per class, then the mean
over classes). Preds ``(N, 1, ...)`` with a mask ``(N, ...)`` are binary.

* global (default): sums over everything (per channel, then the mean, with ``per_class=true``).
* ``per_sample=true``: the same per sample over its non-batch axes, then the mean over samples.
* ``reduction=none`` gives the per-sample values; ``sum`` adds them up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lossctl import ckernels
from lossctl.arrays import LazyArray, reshaped
from lossctl.fast import Block, Fused, f64_of, same_float_pair, sum64
from lossctl.knowledge import Curve, Knowledge
from lossctl.losses._common import (
    check_range,
    class_indices,
    log_softmax,
    shape_error,
    sigmoid,
)
from lossctl.registry import Param, Part, register_loss

_PARAMS = [
    Param("smooth", "float", 1.0, "added to numerator and denominator (keeps empty masks finite)", ge=0),
    Param("from_logits", "bool", False, "preds are logits: sigmoid (mask targets) or softmax over axis 1 "
                                        "(index targets)"),
    Param("per_sample", "bool", False, "score each sample over its non-batch axes, then average"),
    Param("per_class", "bool", False, "score each channel (axis 1) separately, then average "
                                      "(always on for index targets)"),
]


def _strip_trailing_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = list(shape)
    while len(out) > 1 and out[-1] == 1:
        out.pop()
    return tuple(out)


def _check_overlap(loss: str) -> Callable[..., dict[str, LazyArray]]:
    def check(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
        p, t = arrays["preds"], arrays["targets"]
        if p.ndim == 0:
            raise shape_error(loss, arrays, f"{loss} needs preds of shape (N, ...) or (N, C, ...)")
        if p.shape != t.shape and _strip_trailing_ones(p.shape) == _strip_trailing_ones(t.shape):
            t = reshaped(t, p.shape)
        if p.shape == t.shape:
            if params.get("per_class") and p.ndim < 2:
                raise shape_error(loss, arrays, "per_class=true needs preds with a class axis (N, C, ...)")
            return {**arrays, "targets": t}
        if p.ndim >= 2:
            index_shape = (p.shape[0],) + p.shape[2:]
            if t.shape != index_shape and _strip_trailing_ones(t.shape) == _strip_trailing_ones(index_shape):
                t = reshaped(t, index_shape)
            if t.shape == index_shape:
                if p.shape[1] == 1:  # one channel + a mask: binary
                    return {**arrays, "targets": reshaped(t, p.shape)}
                return {**arrays, "targets": t}
        raise shape_error(loss, arrays, f"{loss} needs targets of the same shape as preds (a binary or "
                                        f"multi-label mask), or class indices of shape "
                                        f"{(p.shape[0],) + p.shape[2:] if p.ndim >= 2 else '(N, ...)'} for "
                                        f"multiclass preds (N, C, ...)")

    return check


def _sums(loss: str, preds: np.ndarray, targets: np.ndarray, from_logits: bool,
          per_class: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per-sample ``(I, P, T)``: shape (N,) or (N, C) when scored per class. Returns also per-class-ness."""
    x = np.asarray(preds, dtype=np.float64)
    if targets.shape == preds.shape:  # mask targets
        if from_logits:
            p = sigmoid(x)
        else:
            p = x
            check_range("preds", p, 0.0, 1.0, f"{loss} expects probabilities", "pass from_logits=true for logits")
        t = np.asarray(targets, dtype=np.float64)
        check_range("targets", t, 0.0, 1.0, f"{loss} expects a mask in [0, 1]",
                    "give a 0/1 mask, or class indices (N, ...) for multiclass preds (N, C, ...)")
        if p.ndim == 1:
            return p * t, p, t, False
        axes = tuple(range(2 if per_class else 1, p.ndim))
        return (p * t).sum(axis=axes), p.sum(axis=axes), t.sum(axis=axes), per_class
    n_classes = x.shape[1]
    if from_logits:
        p = np.exp(log_softmax(x, axis=1))
    else:
        p = x
        check_range("preds", p, 0.0, 1.0, f"{loss} expects class probabilities",
                    "pass from_logits=true for logits")
    idx = class_indices("targets", targets, n_classes)
    shape = (1, n_classes) + (1,) * (x.ndim - 2)
    onehot = idx[:, None, ...] == np.arange(n_classes).reshape(shape)
    axes = tuple(range(2, x.ndim))
    inter = np.where(onehot, p, 0.0).sum(axis=axes)
    return inter, p.sum(axis=axes), onehot.sum(axis=axes, dtype=np.float64), True


def _overlap_loss(loss: str, score: Callable[..., np.ndarray]) -> tuple[Callable[..., Part], Callable[..., Any]]:
    def kernel(preds: np.ndarray, targets: np.ndarray, *, smooth: float = 1.0, from_logits: bool = False,
               per_sample: bool = False, per_class: bool = False, sample_weight: np.ndarray | None = None,
               **extra: float) -> Part:
        inter, p_sum, t_sum, by_class = _sums(loss, preds, targets, from_logits, per_class)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = 1.0 - score(inter, p_sum, t_sum, smooth, **extra)
        if by_class:
            values = values.mean(axis=1)
        if sample_weight is not None:  # --weights: each sample's share of the three sums, weighted
            w = sample_weight.reshape((-1,) + (1,) * (inter.ndim - 1))
            inter, p_sum, t_sum = inter * w, p_sum * w, t_sum * w
        stats = {"i": inter.sum(axis=0), "p": p_sum.sum(axis=0), "t": t_sum.sum(axis=0)}
        return Part(values=values, stats=stats)

    def finalize(stats: dict[str, Any], reduction: str, params: dict[str, Any]) -> float | None:
        if reduction != "mean" or params.get("per_sample") or not stats:
            return None
        extra = {k: v for k, v in params.items() if k in ("alpha", "beta")}
        with np.errstate(invalid="ignore", divide="ignore"):
            value = 1.0 - score(stats["i"], stats["p"], stats["t"], params["smooth"], **extra)
        return float(np.mean(value))

    return kernel, finalize


def _dice_score(i: Any, p: Any, t: Any, s: float) -> Any:
    return (2.0 * i + s) / (p + t + s)


def _iou_score(i: Any, p: Any, t: Any, s: float) -> Any:
    return (i + s) / (p + t - i + s)


def _tversky_score(i: Any, p: Any, t: Any, s: float, alpha: float = 0.5, beta: float = 0.5) -> Any:
    return (i + s) / (i + alpha * (p - i) + beta * (t - i) + s)


_dice_kernel, _dice_finalize = _overlap_loss("dice", _dice_score)
_iou_kernel, _iou_finalize = _overlap_loss("iou", _iou_score)
_tversky_kernel, _tversky_finalize = _overlap_loss("tversky", _tversky_score)


_CURVE_FG = 100.0  # foreground pixels in the overlap curves (all predicted with the same probability)


def _curve_dice(p, smooth=1.0, **_):
    tp = p * _CURVE_FG
    return 1 - (2 * tp + smooth) / (tp + _CURVE_FG + smooth)


def _hard_mask(blk: Block, t: Any) -> bool:
    """Whether float32 input ``t`` holds only +0.0 and 1.0 (three integer passes over the bits)."""
    arr = blk.arrays[t]
    if arr.dtype != np.float32 or not arr.size or not arr.flags.c_contiguous:
        return False
    bits = arr.view(np.uint32)
    ws, n = blk.ws, arr.size
    other = np.bitwise_xor(bits, np.uint32(0x3F800000), out=ws.buf("hm", n, np.uint32))
    np.minimum(other, bits, out=other)  # 0 exactly where the value is +0.0 or 1.0
    return int(np.maximum.reduce(other)) == 0


def _fused_overlap_stats(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float, dict[str, float]] | None:
    """The Dice/IoU/Tversky sufficient statistics Σ p·t, Σ p, Σ t, such that the loss's ``finalize``
    (1 - score) does not cancel the sums' rounding errors.

    float32 probabilities with a hard 0/1 mask: the disagreement D = Σ|p - t| = FP + FN, the false
    negatives FN = Σ t|p - t| and I = Σ p·t are sums of non-negative per-element terms that are exact
    or correctly rounded, summed pairwise in float32 per sub-chunk; the stats are then formed in
    float64 as i = I, p = I + (D - FN), t = I + FN, so p + t - 2i = D and p - i = FP, t - i = FN
    carry those sums' accuracy into 1 - score whatever its size. Everything else (soft masks, float64):
    the three sums in float64. Plain float32 sums of p, t and p·t lose about 1/loss in relative
    accuracy (4e-6 at a loss of 1e-3 in benchmarks/accuracy.py)."""
    ck = ckernels.kernels
    if ck is not None and blk.arrays[p].dtype == np.float32 and blk.arrays[t].dtype == np.float32:
        sums = ck.overlap_hard(blk.arrays[p], blk.arrays[t])
        if sums is not None:
            disagree, fn, inter = sums
            return 0.0, 0.0, {"i": inter, "p": inter + (disagree - fn), "t": inter + fn}
    if not blk.in_unit(p):
        return None
    if _hard_mask(blk, t):
        pp, tt = blk.arrays[p], blk.arrays[t]
        ws, n, dt = blk.ws, pp.size, pp.dtype
        d = np.subtract(pp, tt, out=ws.buf("ovd", n, dt))
        np.abs(d, out=d)  # p (t = 0) or 1 - p (t = 1; exact for p >= 0.5)
        disagree = sum64(d)
        d *= tt  # 1 - p where t = 1, else 0: exact
        fn = sum64(d)
        inter = sum64(np.multiply(pp, tt, out=d))  # p where t = 1, else 0: exact
        return 0.0, 0.0, {"i": inter, "p": inter + (disagree - fn), "t": inter + fn}
    if not blk.in_unit(t):
        return None
    pp, tt = f64_of(blk, p), f64_of(blk, t)
    prod = np.multiply(pp, tt, out=blk.ws.buf("ov", pp.size, np.float64))
    return 0.0, 0.0, {"i": float(np.add.reduce(prod)), "p": float(np.add.reduce(pp)),
                      "t": float(np.add.reduce(tt))}


def _overlap_plain(plan: Any) -> bool:
    """Dice/IoU/Tversky on probabilities with a mask of the same shape, one global score, mean."""
    params = plan.bound.params
    return same_float_pair(plan) and plan.reduction == "mean" and not params.get("from_logits") \
        and not params.get("per_sample") and not params.get("per_class")


# one fused path for the three overlap losses: the same sums, each loss's finalize forms its score
_FUSED_OVERLAP = Fused(_fused_overlap_stats, _overlap_plain, stats=True)


@register_loss(
    "dice", aliases=("dice_loss", "soft_dice"), family="segmentation", params=_PARAMS,
    check_shapes=_check_overlap("dice"), finalize=_dice_finalize,
    formula="1 - (2*sum(p*t) + smooth) / (sum(p) + sum(t) + smooth)",
    summary="Soft Dice loss (1 - F1 overlap) on probabilities or logits.",
    use_when="segmentation with small or imbalanced foreground; usually added to cross_entropy",
    reference="Milletari et al. (2016), V-Net, arXiv:1606.04797; smooth as in MONAI/segmentation_models_pytorch",
    categories=("overlap",),
    knowledge=Knowledge(
        properties=("1 - soft Dice coefficient: insensitive to the amount of background",
                    "global (batch) statistic: not a mean of per-pixel losses"),
        avoid_when=("used alone from scratch on tiny structures (unstable; add cross-entropy)",),
        pitfalls=("empty masks need the smoothing term", "from_logits=true applies sigmoid/softmax first"),
        pytorch="segmentation_models_pytorch.losses.DiceLoss('multiclass', from_logits=True)",
        keras="keras.losses.Dice()",
        curve=Curve("predicted probability on 100 foreground pixels", 0, 1, (("dice", _curve_dice),))),
    fused=_FUSED_OVERLAP,
)
def dice(preds: np.ndarray, targets: np.ndarray, *, smooth: float = 1.0, from_logits: bool = False,
         per_sample: bool = False, per_class: bool = False,
         sample_weight: np.ndarray | None = None) -> Part:
    """Soft Dice loss ``1 - (2 Σpt + smooth) / (Σp + Σt + smooth)``.

    >>> from lossctl.functional import dice
    >>> round(dice([0.9, 0.1, 0.8], [1, 0, 1], smooth=1), 6)  # 1 - (2·1.7 + 1)/(1.8 + 2 + 1) = 0.083333
    0.083333
    """
    return _dice_kernel(preds, targets, smooth=smooth, from_logits=from_logits, per_sample=per_sample,
                        per_class=per_class, sample_weight=sample_weight)


def _curve_iou(p, smooth=1.0, **_):
    tp = p * _CURVE_FG
    return 1 - (tp + smooth) / (_CURVE_FG + smooth)


@register_loss(
    "iou", aliases=("jaccard", "iou_loss", "soft_jaccard"), family="segmentation", params=_PARAMS,
    check_shapes=_check_overlap("iou"), finalize=_iou_finalize,
    formula="1 - (sum(p*t) + smooth) / (sum(p) + sum(t) - sum(p*t) + smooth)",
    summary="Soft IoU (Jaccard) loss on probabilities or logits.",
    use_when="segmentation judged by IoU/mIoU; a drop-in alternative to dice",
    reference="Rahman & Wang (2016), 'Optimizing Intersection-Over-Union in Deep Neural Networks'",
    categories=("overlap",),
    knowledge=Knowledge(
        properties=("1 - soft Jaccard index", "Jaccard = Dice / (2 - Dice): same ranking, different weighting"),
        avoid_when=("used alone from scratch (combine with cross-entropy)",),
        pitfalls=("empty masks need the smoothing term",),
        pytorch="segmentation_models_pytorch.losses.JaccardLoss('multiclass', from_logits=True)",
        keras="# keras_cv / custom: 1 - (tp + s) / (sum_p + sum_t - tp + s)",
        curve=Curve("predicted probability on 100 foreground pixels", 0, 1, (("iou", _curve_iou),))),
    fused=_FUSED_OVERLAP,
)
def iou(preds: np.ndarray, targets: np.ndarray, *, smooth: float = 1.0, from_logits: bool = False,
        per_sample: bool = False, per_class: bool = False,
        sample_weight: np.ndarray | None = None) -> Part:
    """Soft Jaccard loss ``1 - (Σpt + smooth) / (Σp + Σt - Σpt + smooth)``.

    >>> from lossctl.functional import iou
    >>> round(iou([0.9, 0.1, 0.8], [1, 0, 1], smooth=1), 6)  # 1 - (1.7 + 1)/(1.8 + 2 - 1.7 + 1) = 0.129032
    0.129032
    """
    return _iou_kernel(preds, targets, smooth=smooth, from_logits=from_logits, per_sample=per_sample,
                       per_class=per_class, sample_weight=sample_weight)


def _curve_tversky(p, alpha=0.5, beta=0.5, smooth=1.0, **_):
    tp = p * _CURVE_FG
    fn = (1 - p) * _CURVE_FG
    return 1 - (tp + smooth) / (tp + beta * fn + smooth)


@register_loss(
    "tversky", aliases=("tversky_loss",), family="segmentation",
    params=[*_PARAMS,
            Param("alpha", "float", 0.5, "weight of false positives sum(p*(1-t))", ge=0),
            Param("beta", "float", 0.5, "weight of false negatives sum((1-p)*t)", ge=0)],
    check_shapes=_check_overlap("tversky"), finalize=_tversky_finalize,
    formula="1 - (TP + smooth) / (TP + alpha*FP + beta*FN + smooth), TP = sum(p*t), FP = sum(p*(1-t)), "
            "FN = sum((1-p)*t)",
    summary="Tversky loss: Dice with separate weights for false positives and false negatives.",
    use_when="segmentation where missing foreground costs more than false alarms (raise beta)",
    reference="Salehi et al. (2017), arXiv:1706.05721 (alpha=beta=0.5 is Dice)",
    categories=("overlap",),
    knowledge=Knowledge(
        properties=("Dice with separate weights for false positives (alpha) and false negatives (beta)",
                    "alpha = beta = 0.5 is Dice"),
        avoid_when=("precision matters as much as recall (use Dice)",),
        pitfalls=("alpha/beta meanings differ between libraries: here alpha weighs FP, beta FN (as Keras)",),
        pytorch="segmentation_models_pytorch.losses.TverskyLoss('multiclass', alpha=0.3, beta=0.7)",
        keras="keras.losses.Tversky(alpha=0.3, beta=0.7)",
        curve=Curve("predicted probability on 100 foreground pixels", 0, 1, (("tversky", _curve_tversky),))),
    fused=_FUSED_OVERLAP,
)
def tversky(preds: np.ndarray, targets: np.ndarray, *, smooth: float = 1.0, from_logits: bool = False,
            per_sample: bool = False, per_class: bool = False, alpha: float = 0.5, beta: float = 0.5,
            sample_weight: np.ndarray | None = None) -> Part:
    """Tversky loss ``1 - (Σpt + smooth) / (Σpt + α Σp(1-t) + β Σ(1-p)t + smooth)``.

    >>> from lossctl.functional import tversky
    >>> # FP = 0.1, FN = 0.1 + 0.2: 1 - 2.7/(2.7 + 0.3·0.1 + 0.7·0.3) = 1 - 2.7/2.94 = 0.081633
    >>> round(tversky([0.9, 0.1, 0.8], [1, 0, 1], alpha=0.3, beta=0.7, smooth=1), 6)
    0.081633
    """
    return _tversky_kernel(preds, targets, smooth=smooth, from_logits=from_logits, per_sample=per_sample,
                           per_class=per_class, alpha=alpha, beta=beta, sample_weight=sample_weight)
