"""Helpers shared by the loss families: stable log-sigmoid/log-softmax, domain checks, shapes."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossctl.errors import DomainError, InputError
from lossctl.inputs import LazyArray, reshaped


def softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """``log(sigmoid(x)) = -softplus(-x)``, finite at x = -1e4."""
    return -softplus(-x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow for either sign."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``x - logsumexp(x)`` along ``axis`` (max-shifted: finite for logits of ±1e4)."""
    m = np.max(x, axis=axis, keepdims=True)
    shifted = x - np.where(np.isfinite(m), m, 0)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def check_range(name: str, x: np.ndarray, low: float, high: float, what: str, fix: str) -> None:
    """DomainError when ``x`` (ignoring NaN) leaves ``[low, high]``."""
    if x.size == 0:
        return
    with np.errstate(invalid="ignore"):
        bad = (x < low) | (x > high)
    if bad.any():
        count = int(bad.sum())
        first = x[bad].flat[0]
        raise DomainError(name, f"has {count} value{'s' if count != 1 else ''} outside [{low:g}, {high:g}] "
                                f"(e.g. {float(first):g}); {what}; {fix}")


def class_indices(name: str, t: np.ndarray, n_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Targets as int64 class indices in [0, C) (or ignore_index); DomainError otherwise."""
    if t.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(t) & (t == np.round(t))
        if not integral.all():
            bad = t[~integral].flat[0]
            raise DomainError(name, f"must hold integer class indices, found {float(bad):g}; "
                                    f"give class indices 0..{n_classes - 1} (or probabilities with the "
                                    f"same shape as preds)")
    idx = t.astype(np.int64, copy=False)
    valid = (idx >= 0) & (idx < n_classes)
    if ignore_index is not None:
        valid |= idx == ignore_index
    if not valid.all():
        bad = idx[~valid].flat[0]
        raise DomainError(name, f"has class index {int(bad)} outside [0, {n_classes - 1}] "
                                f"for preds with {n_classes} classes on axis 1; fix the labels or the preds")
    return idx


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
    """The working float type: float64 if any input is float64 (or integer), else float32."""
    kinds = [a.dtype for a in arrays if a.dtype.kind == "f"]
    if kinds and all(k == np.float32 for k in kinds):
        return np.float32
    return np.float64
