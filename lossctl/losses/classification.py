"""Classification losses: binary (probabilities or logits), multiclass (logits, log-probabilities),
focal, hinge and multi-margin. Class axis is axis 1; semantics follow ``torch.nn.functional``
(torchvision for binary focal, scikit-learn for hinge).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossctl import ckernels
from lossctl.arrays import LazyArray, from_array, reshaped
from lossctl.errors import DomainError, InputError
from lossctl.fast import (
    Block,
    Fused,
    class_rows,
    index_targets,
    pick,
    range_of,
    same_float_pair,
    softplus_tail,
    sum64,
)
from lossctl.knowledge import LOGIT, Curve, Knowledge
from lossctl.losses._common import (
    check_range,
    class_indices_nan,
    class_weights,
    float_dtype,
    log_softmax,
    shape_error,
    sigmoid,
    softplus_pair,
    squeeze_to,
)
from lossctl.registry import Param, Part, register_loss

_WEIGHT = Param("weight", "float_or_floats", None, "rescaling weight, broadcast against preds' last axis as in "
                "torch: one per column, or one per sample for (N,) preds", nullable=True)
_CLASS_WEIGHT = Param("weight", "floats", None, "one weight per class", nullable=True, ge=0)
_IGNORE = Param("ignore_index", "int", -100, "target value that contributes nothing")


def _as_float(x: np.ndarray, dtype: Any) -> np.ndarray:
    return x if x.dtype == dtype else x.astype(dtype)


def _broadcast_last(weight: Any) -> np.ndarray | float:
    """A scalar or per-column list parameter as an array that broadcasts over the last axis."""
    if weight is None:
        return 1.0
    return np.asarray(weight, dtype=np.float64)


def _check_column_params(loss: str, names: tuple[str, ...]) -> Any:
    """Same-shape inputs; list parameters (``weight``, ``pos_weight``) broadcast against preds as torch
    broadcasts them: one value, or one per element of the last axis, i.e. one per column of (N, C, ...)
    inputs and one per sample of (N,) inputs ((N, 1) counts as (N,)).

    Checked once on the whole shapes, so the answer cannot depend on the chunk size. A per-sample
    list becomes the input ``NAME_per_sample``, read in chunks along the samples with the others.
    """

    def check(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
        p = arrays["preds"]
        last = p.shape[-1] if p.ndim >= 1 else 1
        for name in names:
            value = params.get(name)
            if not isinstance(value, list) or len(value) in (1, last) and p.ndim >= 2:
                continue
            if len(value) not in (1, last):
                axis = "one per column" if p.ndim >= 2 else "one per sample"
                raise InputError(f"{loss}: {name}=[...] has {len(value)} entries but preds have shape {p.shape}; "
                                 f"{name} broadcasts against the last axis of preds, as in torch: give one "
                                 f"value, or {last} ({axis})")
            if p.ndim == 1 and len(value) > 1:  # (N,) preds: one value per sample
                arrays = {**arrays, f"{name}_per_sample": from_array(np.asarray(value, dtype=np.float64),
                                                                      f"{name}_per_sample")}
        return arrays

    return check


def _nonnegative_zero(x: np.ndarray) -> np.ndarray:
    """``-l`` for log-likelihoods ``l <= 0`` without producing ``-0.0`` where ``l == 0``."""
    return np.subtract(0.0, x)


# --------------------------------------------------------------------------------- binary


def _fused_bce(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """As the kernel: ``t max(log p, -100) + (1 - t) max(log1p(-p), -100)``, negated at the end."""
    if params.get("weight") is not None or not (blk.in_unit(p) and blk.in_unit(t)):
        return None  # out-of-range values: the kernel names them
    x, tt = blk.arrays[p], blk.arrays[t]
    ws, n, dt = blk.ws, x.size, x.dtype
    floor = ws.const(-100.0, n, dt)
    with np.errstate(divide="ignore"):
        a = np.log(x, out=ws.buf("a", n, dt))
        b = np.negative(x, out=ws.buf("b", n, dt))
        np.log1p(b, out=b)
    np.maximum(a, floor, out=a)
    np.maximum(b, floor, out=b)
    a *= tt
    u = np.subtract(ws.const(1.0, n, dt), tt, out=ws.buf("u", n, dt))
    u *= b
    a += u
    return -sum64(a), n


def _unweighted_pair(plan: Any) -> bool:
    return same_float_pair(plan) and plan.bound.params.get("pos_weight") is None \
        and plan.bound.params.get("weight") is None


@register_loss(
    "bce", aliases=("binary_cross_entropy",), family="classification", elementwise=True,
    params=[_WEIGHT],
    check_shapes=_check_column_params("bce", ("weight",)),
    formula="-w*(t*max(log p, -100) + (1 - t)*max(log(1 - p), -100))",
    summary="Binary cross-entropy on probabilities (log clamped at -100 as in PyTorch).",
    use_when="binary or multi-label targets when the model already outputs probabilities",
    reference="torch.nn.functional.binary_cross_entropy",
    categories=("probabilities",),
    knowledge=Knowledge(
        properties=("Bernoulli negative log-likelihood on probabilities", "strictly proper scoring rule"),
        avoid_when=("the model outputs logits (use bce_with_logits: stabler)",),
        pitfalls=("log(0) is clamped at -100 by torch: saturated sigmoids give huge, flat losses",
                  "never apply a sigmoid twice"),
        pytorch="torch.nn.BCELoss()", keras="keras.losses.BinaryCrossentropy(from_logits=False)",
        curve=Curve("predicted probability p of the target class", 0.005, 0.995,
                    (("target 1", lambda p, **_: -np.log(p)), ("target 0", lambda p, **_: -np.log1p(-p))))),
    fused=Fused(_fused_bce, _unweighted_pair),
)
def bce(preds: np.ndarray, targets: np.ndarray, *, weight: Any = None,
        weight_per_sample: np.ndarray | None = None) -> Part:
    """As torch: ``-(t max(log p, -100) + (1 - t) max(log1p(-p), -100))``, times ``weight``.

    >>> from lossctl.functional import bce
    >>> round(bce([0.9, 0.2, 1.0], [1, 0, 0]), 6)  # mean(-log 0.9, -log 0.8, 100) = 33.442835
    33.442835
    """
    dt = float_dtype(preds, targets)
    p, t = _as_float(preds, dt), _as_float(targets, dt)
    check_range("preds", p, 0.0, 1.0, "bce expects probabilities",
                "use bce_with_logits for raw scores (logits)")
    check_range("targets", t, 0.0, 1.0, "bce expects targets in [0, 1]", "rescale the labels to 0/1")
    with np.errstate(divide="ignore"):  # log(0) = -inf, then clamped to -100 as torch does
        nlog_p = np.minimum(np.negative(np.log(p)), 100.0)
        nlog_q = np.minimum(np.negative(np.log1p(-p)), 100.0)
    loss = t * nlog_p + (1.0 - t) * nlog_q
    if weight_per_sample is not None:  # this chunk's part of a per-sample list (see _check_column_params)
        weight = weight_per_sample
    return Part(values=loss * _broadcast_last(weight) if weight is not None else loss)


def _curve_softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _fused_bce_with_logits(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Σ (1 - t) x + softplus(-x), with softplus(-x) = relu(-x) + log1p(exp(-|x|)); one exp, one log1p."""
    if params.get("pos_weight") is not None or params.get("weight") is not None:
        return None
    x, tt = blk.arrays[p], blk.arrays[t]
    if not blk.in_unit(t):
        return None
    ws, n, dt = blk.ws, x.size, x.dtype
    typ = dt.type
    a = blk.abs_of(p)
    tail = softplus_tail(blk, p)
    v = np.subtract(a, x, out=ws.buf("v", n, dt))  # 2 relu(-x), exactly
    v *= typ(0.5)
    u = np.subtract(ws.const(1.0, n, dt), tt, out=ws.buf("u", n, dt))
    u *= x
    v += u
    v += tail
    return sum64(v), n


@register_loss(
    "bce_with_logits", aliases=("bce_logits", "binary_cross_entropy_with_logits", "sigmoid_cross_entropy"),
    family="classification", elementwise=True,
    params=[
        Param("pos_weight", "float_or_floats", None, "weight of positive examples (scalar or per column; "
                                                     "per sample for (N,) preds)",
              nullable=True, ge=0),
        _WEIGHT,
    ],
    check_shapes=_check_column_params("bce_with_logits", ("pos_weight", "weight")),
    formula="-w*(pw*t*log sigmoid(x) + (1 - t)*log(1 - sigmoid(x)))",
    summary="Binary cross-entropy on logits, computed with the log-sum-exp trick.",
    use_when="binary or multi-label classification with a linear (logit) head; pos_weight for imbalance",
    reference="torch.nn.functional.binary_cross_entropy_with_logits",
    categories=("logits",),
    knowledge=Knowledge(
        properties=("sigmoid + BCE fused: log-sum-exp stable for any logit",
                    "strictly proper; gradient is sigmoid(z) - y (bounded)",
                    "pos_weight scales the positive term (pos_weight = n_neg / n_pos)"),
        avoid_when=("the model already ends in a sigmoid", "labels are mutually exclusive classes (use cross_entropy)"),
        pitfalls=("Keras losses default to from_logits=False", "pos_weight shifts the predicted probabilities"),
        pytorch="torch.nn.BCEWithLogitsLoss()", keras="keras.losses.BinaryCrossentropy(from_logits=True)",
        curve=Curve(LOGIT, -6, 6, (("target 1", lambda z, **_: _curve_softplus(-z)),
                                   ("target 0", lambda z, **_: _curve_softplus(z))))),
    fused=Fused(_fused_bce_with_logits, _unweighted_pair),
)
def bce_with_logits(preds: np.ndarray, targets: np.ndarray, *, pos_weight: Any = None, weight: Any = None,
                    pos_weight_per_sample: np.ndarray | None = None,
                    weight_per_sample: np.ndarray | None = None) -> Part:
    """``pw t softplus(-x) + (1 - t) softplus(x)``, times ``weight``.

    Torch writes this as ``(1 - t) x + (1 + (pw - 1) t) softplus(-x)``; the two are equal, but the
    form used here has no cancellation, so a confident correct logit (t=0, x=-20: 2.06e-9) keeps its
    relative precision in float32 too.

    >>> from lossctl.functional import bce_with_logits
    >>> # mean(softplus(-2), softplus(-1), log 2) = mean(0.126928, 0.313262, 0.693147) = 0.377779
    >>> round(bce_with_logits([2, -1, 0], [1, 0, 1]), 6)
    0.377779
    """
    dt = float_dtype(preds, targets)
    x, t = _as_float(preds, dt), _as_float(targets, dt)
    check_range("targets", t, 0.0, 1.0, "bce_with_logits expects targets in [0, 1]", "rescale the labels to 0/1")
    if pos_weight_per_sample is not None:  # this chunk's part of per-sample lists (see _check_column_params)
        pos_weight = pos_weight_per_sample
    if weight_per_sample is not None:
        weight = weight_per_sample
    nlog_p, nlog_q = softplus_pair(x)  # -log sigmoid(x), -log(1 - sigmoid(x))
    pos = t * nlog_p if pos_weight is None else (_broadcast_last(pos_weight) * t) * nlog_p
    loss = pos + (1.0 - t) * nlog_q
    if weight is not None:
        loss = loss * _broadcast_last(weight)
    return Part(values=loss)


# ----------------------------------------------------------------------------- multiclass


def _check_multiclass(loss: str, allow_probs: bool) -> Any:
    """Shape contract of cross_entropy/nll: preds (N,C,...) or (C,); targets (N,...) or same as preds."""

    def check(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
        p, t = arrays["preds"], arrays["targets"]
        if p.ndim == 0:
            raise shape_error(loss, arrays, "preds must be logits of shape (N, C, ...) or (C,)")
        if (p.shape[0] if p.ndim == 1 else p.shape[1]) == 0:
            raise shape_error(loss, arrays, "preds have no classes (C = 0 on the class axis)")
        if p.ndim == 1:  # unbatched (C,)
            if allow_probs and t.shape == p.shape and t.dtype.kind == "f":
                return {**arrays, "preds": reshaped(p, (1,) + p.shape), "targets": reshaped(t, (1,) + t.shape)}
            if t.shape in ((), (1,)):
                return {**arrays, "preds": reshaped(p, (1,) + p.shape), "targets": reshaped(t, (1,))}
            raise shape_error(loss, arrays, "unbatched preds (C,) need one class index (shape ()) "
                                            + ("or probabilities of shape (C,)" if allow_probs else ""))
        index_shape = (p.shape[0],) + p.shape[2:]
        if t.shape == p.shape and allow_probs:
            return arrays  # class probabilities (integer one-hot rows count as probabilities too)
        if t.shape == index_shape:
            return arrays
        if t.shape == index_shape + (1,):
            return {**arrays, "targets": reshaped(t, index_shape)}
        need = f"targets must be class indices of shape {index_shape}"
        if allow_probs:
            need += f" or probabilities of shape {p.shape}"
        raise shape_error(loss, arrays, need)

    return check


def _with_nan(part: Part, nan: np.ndarray | None) -> Part:
    """NaN targets under ``--nan-policy propagate``: that sample's loss (and the mean) is NaN."""
    if nan is not None:
        part.values = np.where(nan, np.nan, part.values)
    return part


def _weighted_nll(logp: np.ndarray, idx: np.ndarray, weight: np.ndarray | None, ignore_index: int,
                  smoothing: float = 0.0) -> Part:
    """Index-target NLL with torch's weighted mean: Σ w_y·l / Σ w_y over non-ignored targets."""
    n_classes = logp.shape[1]
    ignored = idx == ignore_index
    safe = np.where(ignored, 0, idx)
    picked = _nonnegative_zero(np.take_along_axis(logp, safe[:, None, ...], axis=1)[:, 0, ...])
    w_y = np.ones(idx.shape, dtype=np.float64) if weight is None else weight[safe]
    w_y = np.where(ignored, 0.0, w_y)
    loss = w_y * picked
    if smoothing:
        wc = 1.0 if weight is None else weight.reshape((1, n_classes) + (1,) * (logp.ndim - 2))
        smooth = -np.sum(logp * wc, axis=1)
        smooth = np.where(ignored, 0.0, smooth)
        loss = (1.0 - smoothing) * loss + (smoothing / n_classes) * smooth
    return Part(values=np.where(ignored, 0.0, loss), weight=w_y)


def _fused_cross_entropy(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Σ log1p(s) + (m - x_y) over rows: ``m`` the row maximum, ``s`` = Σ exp(x_j - m) over every
    entry but one maximal one (as :func:`lossctl.losses._common.log_softmax`); one exp per logit.

    Works on the transposed block (classes × rows), so every step is a contiguous vector operation.
    """
    got = class_rows(blk, p, t)
    if got is None:
        return None
    x, y, rows, classes = got
    ws, dt = blk.ws, x.dtype
    xt = ws.buf("xt", rows * classes, dt).reshape(classes, rows)
    np.copyto(xt, x.T)
    m = ws.buf("m", rows, dt)
    np.copyto(m, xt[0])
    for j in range(1, classes):
        np.maximum(m, xt[j], out=m)
    np.subtract(xt, m, out=xt)
    eq = np.equal(xt, dt.type(0), out=ws.buf("eq", rows * classes, np.bool_).reshape(classes, rows))
    np.exp(xt, out=xt)
    xt -= eq  # drop the maximal entries (each exactly exp(0) = 1)...
    s = np.add.reduce(xt, axis=0, out=ws.buf("s", rows, dt))
    ties = int(np.count_nonzero(eq)) - rows
    if ties:  # ...but keep all except one of them when a row has several
        s += np.add.reduce(eq, axis=0, dtype=dt) - dt.type(1)
    np.log1p(s, out=s)
    picked = pick(blk, x, y, rows, classes)
    np.subtract(m, picked, out=picked)
    return sum64(s) + sum64(picked), rows


@register_loss(
    "cross_entropy", aliases=("ce", "categorical_cross_entropy", "softmax_cross_entropy"),
    family="classification",
    params=[_CLASS_WEIGHT, _IGNORE,
            Param("label_smoothing", "float", 0.0, "mix targets with the uniform distribution", ge=0, le=1)],
    check_shapes=_check_multiclass("cross_entropy", allow_probs=True),
    formula="-w_y*log softmax(x)_y (index targets; mean = sum / sum w_y) or -sum_c t_c log softmax(x)_c",
    summary="Softmax cross-entropy on logits, with class weights, ignore_index and label smoothing.",
    use_when="single-label multiclass classification (and segmentation) with a logit head",
    reference="torch.nn.functional.cross_entropy",
    categories=("logits",),
    knowledge=Knowledge(
        properties=("multinomial negative log-likelihood on raw logits (log_softmax + NLL)",
                    "strictly proper; gradient softmax(z) - onehot(y)",
                    "accepts class indices or class probabilities as targets"),
        avoid_when=("multi-label targets (labels are not exclusive: use bce_with_logits)",
                    "ordinal labels (order ignored)", "the model already ends in a softmax"),
        pitfalls=("no softmax before torch CrossEntropyLoss", "index vs one-hot targets: Keras Sparse vs Categorical",
                  "class weights change the mean's denominator and shift probabilities"),
        pytorch="torch.nn.CrossEntropyLoss()", keras="keras.losses.SparseCategoricalCrossentropy(from_logits=True)",
        curve=Curve("logit margin z_y - z_other (2 classes)", -6, 6,
                    (("cross_entropy", lambda z, **_: _curve_softplus(-z)),))),
    fused=Fused(_fused_cross_entropy, index_targets),
)
def cross_entropy(preds: np.ndarray, targets: np.ndarray, *, weight: Any = None, ignore_index: int = -100,
                  label_smoothing: float = 0.0) -> Part:
    """Softmax cross-entropy, as torch. With two classes it is bce_with_logits of the logit difference:

    >>> from lossctl.functional import cross_entropy
    >>> # mean(softplus(-2), softplus(-1), log 2) = mean(0.126928, 0.313262, 0.693147) = 0.377779
    >>> round(cross_entropy([[2, 0], [0, 1], [0, 0]], [0, 1, 1]), 6)
    0.377779
    """
    dt = float_dtype(preds)
    x = _as_float(preds, dt)
    n_classes = x.shape[1]
    logp = log_softmax(x, axis=1)
    w = class_weights("weight", weight, n_classes)
    if targets.shape == x.shape:  # class probabilities
        t = _as_float(targets, dt)
        check_range("targets", t, 0.0, 1.0, "probability targets must lie in [0, 1]",
                    "give class probabilities, or class indices of shape (N, ...)")
        if label_smoothing:
            t = t * (1.0 - label_smoothing) + label_smoothing / n_classes
        wc = 1.0 if w is None else w.reshape((1, n_classes) + (1,) * (x.ndim - 2))
        return Part(values=_nonnegative_zero(np.sum(logp * t * wc, axis=1)))
    idx, nan = class_indices_nan("targets", targets, n_classes, ignore_index)
    return _with_nan(_weighted_nll(logp, idx, w, ignore_index, label_smoothing), nan)


def _fused_nll_numpy(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    got = class_rows(blk, p, t)
    if got is None:
        return None
    x, y, rows, classes = got
    picked = pick(blk, x, y, rows, classes)
    return -sum64(picked), rows


_C_INDEX = (np.dtype(np.int64), np.dtype(np.int32))


def _fused_nll(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """-Σ x[i, y_i]: one pass over the indices (range check included), gathering from the rows."""
    x, y = blk.arrays[p], blk.arrays[t]
    ck = ckernels.kernels
    if ck is None or blk.n == 0 or y.dtype not in _C_INDEX:
        return _fused_nll_numpy(blk, p, t, params)
    total = ck.pick_sum(x, y, x.size // blk.n)
    if total is None:
        return None  # ignore_index, or a bad label: the kernel ignores it or names it
    return -total, blk.n


@register_loss(
    "nll", aliases=("nll_loss", "negative_log_likelihood"), family="classification",
    params=[_CLASS_WEIGHT, _IGNORE],
    check_shapes=_check_multiclass("nll", allow_probs=False),
    formula="-w_y*x_y with x = log-probabilities; mean = sum / sum w_y",
    summary="Negative log-likelihood on log-probabilities (a log_softmax head).",
    use_when="multiclass models whose head already applies log_softmax",
    reference="torch.nn.functional.nll_loss",
    categories=("log_probabilities",),
    knowledge=Knowledge(
        properties=("negative log-likelihood of the true class given log-probabilities",
                    "cross_entropy = log_softmax + nll"),
        avoid_when=("the model outputs raw logits (use cross_entropy)", "the model outputs probabilities (take the log first)"),
        pitfalls=("feeding probabilities or logits instead of log-probabilities gives a wrong loss silently",),
        pytorch="torch.nn.NLLLoss()", keras="keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # on log-probs",
        curve=Curve("log-probability of the true class", -6, 0, (("nll", lambda lp, **_: -lp),))),
    fused=Fused(_fused_nll, index_targets),
)
def nll(preds: np.ndarray, targets: np.ndarray, *, weight: Any = None, ignore_index: int = -100) -> Part:
    """``-w_y x_y``, as torch; mean = Σ w_y (-x_y) / Σ w_y over non-ignored targets.

    >>> from lossctl.functional import nll
    >>> round(nll([[-0.1, -2.4], [-1.2, -0.4], [-0.7, -0.7]], [0, 1, 0]), 6)  # mean(0.1, 0.4, 0.7) = 0.4
    0.4
    """
    x = _as_float(preds, float_dtype(preds))
    n_classes = x.shape[1]
    idx, nan = class_indices_nan("targets", targets, n_classes, ignore_index)
    return _with_nan(_weighted_nll(x, idx, class_weights("weight", weight, n_classes), ignore_index), nan)


# --------------------------------------------------------------------------------- focal


def _check_binary_or_multiclass(loss: str) -> Any:
    """Same shape (binary / multi-label), or preds (N,C) with targets (N,) class indices."""

    def check(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
        p, t = arrays["preds"], arrays["targets"]
        if p.shape == t.shape:
            return arrays
        sp, st = squeeze_to(p, 1), squeeze_to(t, 1)
        if sp.shape == st.shape:
            return {**arrays, "preds": sp, "targets": st}
        if p.ndim == 2 and st.shape == (p.shape[0],):
            return {**arrays, "targets": st}
        raise shape_error(loss, arrays, f"{loss} needs targets of the same shape as preds (binary), "
                                        f"or preds (N, C) with class indices (N,) (multiclass)")

    return check


def _curve_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def _curve_focal_pos(z, alpha=0.25, gamma=2.0, **_):
    a = 1.0 if alpha is None else alpha
    p = _curve_sigmoid(z)
    return a * (1 - p) ** gamma * _curve_softplus(-z)


def _curve_focal_neg(z, alpha=0.25, gamma=2.0, **_):
    a = 1.0 if alpha is None else 1 - alpha
    p = _curve_sigmoid(z)
    return a * p**gamma * _curve_softplus(z)


def _fused_focal(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Binary focal loss with one exp and one log1p per element (targets exactly 0 or 1).

    With ``z = (1 - 2t) x``: cross-entropy = softplus(z) and ``1 - p_t = sigmoid(z)``.
    """
    alpha, gamma = params.get("alpha"), params["gamma"]
    if isinstance(alpha, list):
        return None
    x, tt = blk.arrays[p], blk.arrays[t]
    ws, n, dt = blk.ws, x.size, x.dtype
    typ = dt.type
    w = np.multiply(tt, tt, out=ws.buf("w", n, dt))
    w -= tt
    if w.any():  # only labels 0/1 (NaN is truthy too); soft labels take the generic kernel
        return None
    z = np.multiply(tt, typ(-2.0), out=ws.buf("z", n, dt))
    z += typ(1.0)
    z *= x
    a = np.abs(z, out=ws.buf("a", n, dt))
    e = np.negative(a, out=ws.buf("e", n, dt))
    np.exp(e, out=e)
    ce = np.add(z, a, out=ws.buf("v", n, dt))  # 2 relu(z), exactly
    ce *= typ(0.5)
    tail = np.log1p(e, out=a)  # a is free now
    ce += tail
    # sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e)
    num = np.where(z >= 0, typ(1.0), e)
    e += typ(1.0)
    num /= e
    if gamma == 2.0:
        num *= num
    elif gamma == 1.0:
        pass
    elif gamma == 0.0:
        num.fill(1.0)
    else:
        np.power(num, typ(gamma), out=num)
    ce *= num
    if alpha is not None and alpha >= 0:
        at = np.multiply(tt, typ(2.0 * alpha - 1.0), out=z)  # α t + (1 - α)(1 - t)
        at += typ(1.0 - alpha)
        ce *= at
    return sum64(ce), n


def _focal_binary(plan: Any) -> bool:
    return same_float_pair(plan) and not isinstance(plan.bound.params.get("alpha"), list)


@register_loss(
    "focal", aliases=("focal_loss", "sigmoid_focal"), family="classification",
    params=[
        Param("alpha", "float_or_floats", 0.25, "class balance: α for positives (binary), scalar or per class "
              "(multiclass); none disables", nullable=True),
        Param("gamma", "float", 2.0, "focusing parameter; 0 gives cross-entropy", ge=0),
    ],
    check_shapes=_check_binary_or_multiclass("focal"),
    formula="-α_t (1 - p_t)^γ log p_t",
    summary="Focal loss: cross-entropy down-weighted on easy examples.",
    use_when="extreme class imbalance and dense detection (RetinaNet)",
    reference="torchvision.ops.sigmoid_focal_loss (binary); Lin et al. (2017), arXiv:1708.02002",
    categories=("logits",),
    knowledge=Knowledge(
        properties=("cross-entropy scaled by (1 - p_t)^gamma: easy examples contribute little",
                    "alpha balances positives vs negatives (0.25 for positives in RetinaNet)",
                    "gamma = 0 and alpha = none is plain BCE / CE"),
        avoid_when=("calibrated probabilities are needed without recalibration",
                    "the data is balanced and clean (plain CE is simpler)"),
        pitfalls=("initialise the output bias to -log((1 - pi)/pi), pi = 0.01, or training can diverge",
                  "alpha=0.25 down-weights positives: it pairs with gamma=2, not alone"),
        pytorch="torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction='mean')",
        keras="keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True)",
        curve=Curve(LOGIT, -6, 6, (("target 1", _curve_focal_pos), ("target 0", _curve_focal_neg)))),
    fused=Fused(_fused_focal, _focal_binary),
)
def focal(preds: np.ndarray, targets: np.ndarray, *, alpha: Any = 0.25, gamma: float = 2.0) -> Part:
    """Binary (torchvision): ``α_t (1 - p_t)^γ ce`` with ``ce`` = bce_with_logits, ``α_t = α t + (1 - α)(1 - t)``
    (α < 0 or none: no α_t), ``1 - p_t = t σ(-x) + (1 - t) σ(x)`` (no cancellation).
    Multiclass: ``-α_y (1 - p_y)^γ log p_y`` with ``p = softmax(x)``, ``1 - p_y = -expm1(log p_y)``; a
    scalar α scales every class (Keras), a list gives one α per class; none or a negative scalar disables α
    (torchvision's convention).

    Example (binary, α=0.25, γ=2):

    >>> from lossctl.functional import focal
    >>> # mean(0.25·σ(-2)²·softplus(-2), 0.25·0.5²·log 2, 0.75·σ(-1)²·softplus(-1)) = 0.020255
    >>> round(focal([2, 0, -1], [1, 1, 0], alpha=0.25, gamma=2), 6)
    0.020255
    """
    dt = float_dtype(preds, targets)
    x = _as_float(preds, dt)
    if targets.shape == x.shape:  # binary / multi-label, torchvision semantics
        if isinstance(alpha, list):
            raise InputError("focal: a per-class alpha list needs multiclass inputs (preds (N, C), "
                             "targets (N,) indices); binary focal takes one alpha")
        t = _as_float(targets, dt)
        check_range("targets", t, 0.0, 1.0, "binary focal expects targets in {0, 1}", "rescale the labels to 0/1")
        nlog_p, nlog_q = softplus_pair(x)
        ce = t * nlog_p + (1.0 - t) * nlog_q  # bce_with_logits without cancellation
        one_minus_pt = t * sigmoid(-x) + (1.0 - t) * sigmoid(x)  # 1 - p_t without cancellation
        loss = ce * one_minus_pt ** gamma if gamma else ce
        if alpha is not None and alpha >= 0:
            loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
        return Part(values=loss)
    n_classes = x.shape[1]
    idx, nan = class_indices_nan("targets", targets, n_classes)
    logp_y = np.take_along_axis(log_softmax(x, axis=1), idx[:, None], axis=1)[:, 0]
    loss = _nonnegative_zero(logp_y)
    if gamma:
        loss = (-np.expm1(logp_y)) ** gamma * loss  # 1 - p_y, accurate when p_y is near 1
    if alpha is not None and (isinstance(alpha, list) or alpha >= 0):
        a = class_weights("alpha", alpha, n_classes)
        loss = a[idx] * loss
    return _with_nan(Part(values=loss), nan)


# --------------------------------------------------------------------------------- margins


def _binary_label_problem(labels: set[float]) -> str | None:
    """Why a set of binary hinge labels is invalid (None if it is {-1, 1}, {0, 1} or a subset)."""
    if labels <= {-1.0, 1.0} or labels <= {0.0, 1.0}:
        return None
    shown = ", ".join(f"{v:g}" for v in sorted(labels)[:5])
    return (f"must hold binary labels in {{-1, 1}} (or {{0, 1}}) when they have the shape of preds, found "
            f"{shown}; relabel them, or give preds (N, C) with class indices (N,)")


def _labels_of(t: np.ndarray) -> set[float]:
    if t.size and t.dtype.kind in "fiub":  # two labels or one (the usual case): no sort
        lo, hi = np.minimum.reduce(t, axis=None), np.maximum.reduce(t, axis=None)
        if lo == lo and hi == hi:  # no NaN
            if lo == hi:
                return {float(lo)}
            if np.count_nonzero(t == lo) + np.count_nonzero(t == hi) == t.size:
                return {float(lo), float(hi)}
    if t.dtype.kind == "f":
        t = t[~np.isnan(t)]
    return set(np.unique(t).astype(np.float64).tolist())


def _scan_binary_labels(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    """Binary hinge: check the label set of the whole targets once, before chunking, so that a file
    whose chunks hold {0, 1} and {-1, 1} is an error whatever the chunk size (read in bounded chunks)."""
    p, t = arrays["preds"], arrays["targets"]
    if p.shape != t.shape or t.ndim == 0:
        return arrays
    rows = max(1, (1 << 20) // max(1, int(np.prod(t.shape[1:], dtype=np.int64))))
    seen: set[float] = set()
    for start in range(0, t.shape[0], rows):
        seen |= _labels_of(t.read(start, start + rows))
        problem = _binary_label_problem(seen)
        if problem:
            raise InputError(f"hinge: {t.label} {problem}")
    return arrays


def _curve_hinge(s, margin=1.0, squared=False, **_):
    h = np.maximum(0.0, margin - s)
    return h**2 if squared else h


def _fused_hinge(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Binary hinge ``max(0, margin - t x)``; labels {0, 1} map to {-1, 1} (the loss's ``prepare``
    has checked that the whole targets hold one of the two label sets)."""
    x, tt = blk.arrays[p], blk.arrays[t]
    ws, n, dt = blk.ws, x.size, x.dtype
    lo, hi = range_of(blk, t)
    if not (lo in (-1.0, 0.0) and hi == 1.0 or lo == hi and lo in (-1.0, 0.0, 1.0)):
        return None
    v = ws.buf("v", n, dt)
    if lo == 0.0:
        np.multiply(tt, dt.type(2.0), out=v)
        v -= dt.type(1.0)
        v *= x
    else:
        np.multiply(tt, x, out=v)
    np.subtract(ws.const(params["margin"], n, dt), v, out=v)
    np.maximum(v, ws.const(0.0, n, dt), out=v)
    if params.get("squared"):
        v *= v
    return sum64(v), n


@register_loss(
    "hinge", family="classification",
    params=[Param("margin", "float", 1.0, "required margin", ge=0),
            Param("squared", "bool", False, "square each sample's hinge term")],
    check_shapes=_check_binary_or_multiclass("hinge"),
    prepare=_scan_binary_labels,
    formula="max(0, margin - t*p) (binary, t in {-1, 1}); max(0, margin + max_{j≠y} p_j - p_y) (multiclass)",
    summary="Hinge loss (SVM); multiclass is Crammer–Singer.",
    use_when="a maximum-margin classifier is wanted (linear SVM-style scores)",
    reference="sklearn.metrics.hinge_loss; Crammer & Singer (2001)",
    knowledge=Knowledge(
        properties=("max(0, margin - y*s): the SVM loss; zero once the margin is met",
                    "multiclass: Crammer-Singer", "squared=true is smooth at the margin"),
        avoid_when=("probabilities are needed (add Platt scaling)",),
        pitfalls=("labels must be -1/+1 (0/1 is mapped)", "outputs are scores, not probabilities"),
        pytorch="torch.clamp(1 - y * s, min=0).mean()  # multiclass: torch.nn.MultiMarginLoss()",
        keras="keras.losses.Hinge()  # CategoricalHinge for multiclass",
        curve=Curve("score s of a positive sample (y = +1)", -3, 3, (("hinge", _curve_hinge),))),
    fused=Fused(_fused_hinge, same_float_pair),
)
def hinge(preds: np.ndarray, targets: np.ndarray, *, margin: float = 1.0, squared: bool = False) -> Part:
    """Binary: ``max(0, margin - t x)`` with t in {-1, 1} ({0, 1} is mapped 0 → -1).
    Multiclass (Crammer–Singer): ``max(0, margin + max_{j≠y} x_j - x_y)``. squared: the term squared.

    Example (binary):

    >>> from lossctl.functional import hinge
    >>> hinge([0.5, -2, 0], [1, -1, 1])  # mean(0.5, 0, 1) = 0.5
    0.5
    """
    dt = float_dtype(preds)
    x = _as_float(preds, dt)
    if targets.shape == x.shape:
        t = _as_float(targets, dt)
        problem = _binary_label_problem(_labels_of(t))
        if problem:
            raise DomainError("targets", problem)
        t = np.where(t == 0, -1.0, t).astype(dt, copy=False)
        loss = np.maximum(0.0, margin - t * x)
    else:
        idx, nan = class_indices_nan("targets", targets, x.shape[1])
        p_y = np.take_along_axis(x, idx[:, None], axis=1)[:, 0]
        others = x.copy()
        np.put_along_axis(others, idx[:, None], -np.inf, axis=1)
        loss = np.maximum(0.0, margin + others.max(axis=1) - p_y)
        if nan is not None:
            loss = np.where(nan, np.nan, loss)
    if squared:
        with np.errstate(over="ignore"):  # a term beyond 1.3e154 squares to inf, the correctly rounded value
            loss = loss * loss
    return Part(values=loss)


def _check_multi_margin(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    """torch's multi_margin_loss takes (N, C) or unbatched (C,) scores only (no spatial axes)."""
    out = _check_multiclass("multi_margin", allow_probs=False)(arrays, params)
    if out["preds"].ndim != 2:
        raise shape_error("multi_margin", arrays, "multi_margin needs scores of shape (N, C) or (C,) "
                                                  "with class indices of shape (N,) or ()")
    return out


def _fused_multi_margin(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Σ_{j≠y} max(0, margin - x_y + x_j)^p / C, as the kernel (in the scores' float type)."""
    if params.get("weight") is not None:
        return None
    got = class_rows(blk, p, t)
    if got is None:
        return None
    x, y, rows, classes = got
    ws, dt = blk.ws, x.dtype
    picked = pick(blk, x, y, rows, classes)
    np.subtract(dt.type(params["margin"]), picked, out=picked)  # margin - x_y
    v = ws.buf("mm", rows * classes, dt).reshape(rows, classes)
    np.add(picked[:, None], x, out=v)
    np.maximum(v, dt.type(0.0), out=v)
    if params["p"] == 2:
        v *= v
    flat = v.reshape(-1)
    flat[ws.buf("idx", rows, np.int64)] = 0  # the y-th term (idx is still pick's flat index)
    return sum64(flat) / classes, rows


def _unweighted_index_targets(plan: Any) -> bool:
    return index_targets(plan) and plan.bound.params.get("weight") is None


@register_loss(
    "multi_margin", aliases=("multi_margin_loss", "multiclass_hinge"), family="classification",
    params=[Param("p", "int", 1, "exponent (1 or 2)", ge=1, le=2),
            Param("margin", "float", 1.0, "required margin"),
            _CLASS_WEIGHT],
    check_shapes=_check_multi_margin,
    formula="sum_{j≠y} w_y max(0, margin - x_y + x_j)^p / C",
    summary="Multiclass hinge (Weston–Watkins), divided by the number of classes.",
    use_when="multiclass max-margin training with scores on every class",
    reference="torch.nn.functional.multi_margin_loss",
    knowledge=Knowledge(
        properties=("Weston-Watkins multiclass hinge: every wrong class within the margin costs",
                    "divided by the number of classes (torch)"),
        avoid_when=("probabilities are needed",),
        pitfalls=("p=2 squares each term; weight is per class",),
        pytorch="torch.nn.MultiMarginLoss(p=1, margin=1.0)", keras="keras.losses.CategoricalHinge()",
        curve=Curve("score margin s_y - s_other (2 classes)", -3, 3,
                    (("multi_margin", lambda m, margin=1.0, **_: np.maximum(0, margin - m) / 2),))),
    fused=Fused(_fused_multi_margin, _unweighted_index_targets),
)
def multi_margin(preds: np.ndarray, targets: np.ndarray, *, p: int = 1, margin: float = 1.0,
                 weight: Any = None) -> Part:
    """Weston–Watkins multiclass hinge, as torch: ``Σ_{j≠y} max(0, margin - x_y + x_j)^p / C``.

    >>> from lossctl.functional import multi_margin
    >>> round(multi_margin([[0.1, 0.2, 0.4, 0.8]], [3]), 6)  # (0.3 + 0.4 + 0.6)/4 = 0.325 (torch docs)
    0.325
    """
    x = _as_float(preds, float_dtype(preds))
    n_classes = x.shape[1]
    idx, nan = class_indices_nan("targets", targets, n_classes)
    x_y = np.take_along_axis(x, idx[:, None], axis=1)
    terms = np.maximum(0.0, margin - x_y + x)
    if p == 2:
        with np.errstate(over="ignore"):  # inf is the correctly rounded square beyond 1.3e154
            terms = terms * terms
    np.put_along_axis(terms, idx[:, None], 0.0, axis=1)
    w = class_weights("weight", weight, n_classes)
    if w is not None:
        terms = terms * w[idx][:, None]
    return _with_nan(Part(values=terms.sum(axis=1) / n_classes), nan)
