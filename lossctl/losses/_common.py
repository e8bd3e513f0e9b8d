"""Helpers shared by the loss families: stable softplus/sigmoid/log-softmax, domain checks, shapes."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, first_bad, reshaped
from lossctl.errors import DomainError, InputError


def softplus_pair(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(softplus(-x), softplus(x))`` without overflow, sharing one ``log1p(exp(-|x|))``
    (``softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``).

    ``softplus(-x) = -log sigmoid(x)`` and ``softplus(x) = -log(1 - sigmoid(x))``, each with full
    relative precision (no ``x + softplus(-x)`` cancellation for confident logits).
    """
    tail = np.log1p(np.exp(-np.abs(x)))
    return np.maximum(-x, 0) + tail, np.maximum(x, 0) + tail


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow for either sign."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``x - logsumexp(x)`` along ``axis``, finite for logits of ±1e4 and accurate when confident.

    Shifted by the maximum ``m``: ``logsumexp(x) = m + log1p(s)`` where ``s`` sums ``exp(x_j - m)``
    over every entry except one maximal one. ``log1p(s)`` keeps full relative precision when the
    top class has probability ``1 - 1e-12`` (``log(1 + s)`` would lose about 4 of 16 digits there,
    which is what ``torch.log_softmax`` does).
    """
    top = np.argmax(x, axis=axis)
    top = np.expand_dims(top, axis)
    m = np.take_along_axis(x, top, axis=axis)
    shifted = x - np.where(np.isfinite(m), m, 0)
    e = np.exp(shifted)
    np.put_along_axis(e, top, 0.0, axis=axis)
    out = shifted - np.log1p(np.sum(e, axis=axis, keepdims=True))
    finite = np.isfinite(m)
    if not finite.all():  # a NaN/inf logit makes its whole row NaN, as in torch (not just one entry)
        out = out + np.where(finite, 0.0, np.nan).astype(out.dtype, copy=False)
    return out


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


def shown(value: Any) -> str:
    """A bad value as messages show it: ``1.5``, ``-3``, ``nan``."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):g}"


def domain_error(name: str, chunk: dict[str, np.ndarray], bad: Any, describe: Any, axis: int = 0) -> DomainError:
    """A :class:`DomainError` about input ``name`` whose bad values ``bad(chunk)`` the engine can count
    over the whole input; its message counts them in ``chunk`` (the whole input when a kernel is
    called directly). ``describe(count, first_sample, first_value)`` words it."""
    count, first, value = first_bad(chunk[name], bad(chunk), axis)
    return DomainError(name, describe(count, first, value), bad=bad, describe=describe)


def _outside(x: np.ndarray, low: float, high: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (x < low) | (x > high)  # NaN is neither (the NaN policy deals with it)


def check_range(name: str, x: np.ndarray, low: float, high: float, what: str, fix: str) -> None:
    """DomainError when ``x`` (input ``name``, ignoring NaN) leaves ``[low, high]``."""
    if x.size == 0 or not _outside(x, low, high).any():
        return

    def bad(chunk: dict[str, np.ndarray]) -> np.ndarray:
        return _outside(chunk[name], low, high)

    def describe(count: int, first: int, value: Any) -> str:
        return (f"has {plural(count, 'value')} outside [{low:g}, {high:g}] (the first at sample {first}: "
                f"{shown(value)}); {what}; {fix}")

    raise domain_error(name, {name: x}, bad, describe)


def class_indices(name: str, t: np.ndarray, n_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Targets as int64 class indices in [0, C) (or ignore_index); DomainError otherwise."""
    idx, nan = class_indices_nan(name, t, n_classes, ignore_index)
    if nan is not None:  # (reached with --nan-policy propagate)
        raise domain_error(name, {name: t}, lambda chunk: np.isnan(chunk[name]),
                           lambda count, first, value: (
                               f"must hold integer class indices, found {plural(count, 'NaN', 'NaNs')} (the first "
                               f"at sample {first}); give class indices 0..{n_classes - 1}"))
    return idx


def _not_class_index(t: np.ndarray, n_classes: int, ignore_index: int | None) -> np.ndarray:
    """Where ``t`` holds no class index in [0, C) nor ``ignore_index`` (NaN is not flagged)."""
    if t.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            ok = np.isnan(t) | ((t == np.round(t)) & (t >= 0) & (t < n_classes))
    else:
        ok = (t >= 0) & (t < n_classes)  # before any int64 cast: 1e30 or 2^63 must not wrap around
    if ignore_index is not None:
        ok |= t == ignore_index
    return ~ok


def class_indices_nan(name: str, t: np.ndarray, n_classes: int,
                      ignore_index: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`class_indices`, but NaN targets (``--nan-policy propagate``) are allowed.

    Returns ``(idx, nan_mask)``: NaN positions hold index 0 in ``idx`` and are flagged in
    ``nan_mask`` (``None`` when there are none) so the kernel can make their loss NaN.
    """
    if t.dtype.kind not in "iubf":
        raise DomainError(name, f"must hold integer class indices, got dtype {t.dtype}; "
                                f"give class indices 0..{n_classes - 1}")
    nan = None
    if t.dtype.kind == "f":
        isnan = np.isnan(t)
        if isnan.any():
            nan = isnan
    invalid = _not_class_index(t, n_classes, ignore_index)
    if invalid.any():
        def bad(chunk: dict[str, np.ndarray]) -> np.ndarray:
            return _not_class_index(chunk[name], n_classes, ignore_index)

        def describe(count: int, first: int, value: Any) -> str:
            v = float(value)
            what = f"class index {shown(value)}" if np.isfinite(v) and v == np.round(v) else shown(value)
            return (f"has {plural(count, 'value')} that {'is' if count == 1 else 'are'} not among the integer "
                    f"class indices 0..{n_classes - 1} for preds with {n_classes} classes on axis 1 (the first at "
                    f"sample {first}: {what}); fix the labels or the preds, or give probabilities with the same "
                    f"shape as preds")

        raise domain_error(name, {name: t}, bad, describe)
    if nan is not None:
        t = np.where(nan, 0, t)
    return t.astype(np.int64, copy=False), nan


def class_weights(name: str, weight: Any, n_classes: int, dtype: Any = np.float64) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=dtype).reshape(-1)
    if w.size == 1:
        return np.full(n_classes, w[0], dtype=dtype)
    if w.size != n_classes:
        raise InputError(f"{name}={list(weight)} has {w.size} entries but preds have {n_classes} classes "
                         f"on axis 1; give one weight per class")
    return w


def squeeze_to(arr: LazyArray, ndim: int) -> LazyArray:
    """Drop trailing size-1 axes of ``arr`` down to ``ndim`` dims ((N,1) → (N,))."""
    shape = list(arr.shape)
    while len(shape) > ndim and shape[-1] == 1:
        shape.pop()
    return reshaped(arr, tuple(shape))


def shape_error(loss: str, arrays: dict[str, LazyArray], need: str) -> InputError:
    have = ", ".join(f"{a.label} has shape {a.shape}" for a in arrays.values())
    return InputError(f"{loss}: {have}; {need}")


def float_dtype(*arrays: np.ndarray) -> Any:
    """The working float type: float32 when every float input is float32, else float64.

    Integer and boolean inputs follow the float inputs (float32 preds with int64 labels work in
    float32); with no float input at all the maths is float64.
    """
    kinds = [a.dtype for a in arrays if a.dtype.kind == "f"]
    if kinds and all(k == np.float32 for k in kinds):
        return np.float32
    return np.float64
