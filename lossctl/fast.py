"""Fused fast paths: several losses over the same inputs in one pass, at memory speed.

The generic engine calls each loss's kernel on each chunk and keeps its ``reduction='none'``
values. For the common built-in losses that is wasted work when only the mean or sum is wanted,
so this module computes their chunk sums directly:

* every input window is read once per pass (zero-copy ``mmap`` windows of ``.npy`` files, or
  slices of in-memory arrays) and cut into cache-sized sub-chunks;
* terms shared between losses (the residual ``d = p - t`` and ``|d|``) are computed once per
  sub-chunk, in reused scratch buffers (no temporaries);
* transcendental-heavy losses use one ``exp`` and one ``log1p`` per element;
* per-element values are formed in the inputs' float type, exactly as the kernels do; they are
  summed pairwise per cache-sized sub-chunk and the sub-chunk sums accumulated in float64 (see
  :func:`_sum`; sub-chunks lie on a fixed grid, so chunk size and thread count do not matter).

A fused loss returns ``None`` when it cannot handle a sub-chunk exactly (values outside the loss's
domain, NaN, an overflow): the engine then re-runs that stretch of samples through the generic
kernels, which raise the right error or apply the NaN policy. A fused loss is used only for the
built-in kernel it stands for (a plugin that replaces the loss gets the generic path).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Elements per sub-chunk (on a fixed grid of samples): its scratch arrays stay in L2/L3 cache, and
#: each NumPy call is long enough that two worker threads rarely wait for the GIL.
SUB_ELEMENTS = 1 << 17
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Workspace:
    """Scratch buffers of one worker task, reused across its sub-chunks."""

    def __init__(self) -> None:
        self._bufs: dict[Any, np.ndarray] = {}

    def buf(self, name: str, n: int, dtype: Any) -> np.ndarray:
        key = (name, np.dtype(dtype))
        b = self._bufs.get(key)
        if b is None or b.shape[0] < n:
            b = np.empty(n, dtype=dtype)
            self._bufs[key] = b
        return b[:n]

    def const(self, value: float, n: int, dtype: Any) -> np.ndarray:
        """An array of ``value`` (NumPy's binary ufuncs are faster on two arrays than with a scalar)."""
        key = ("const", float(value), np.dtype(dtype))
        b = self._bufs.get(key)
        if b is None or b.shape[0] < n:
            b = np.full(max(n, 1), value, dtype=dtype)
            self._bufs[key] = b
        return b[:n]


_local = threading.local()


def _workspace() -> Workspace:
    """This thread's workspace: scratch buffers live as long as the worker thread."""
    ws = getattr(_local, "ws", None)
    if ws is None:
        ws = _local.ws = Workspace()
    return ws


class Block:
    """One sub-chunk: flat views of the inputs and memoised shared terms."""

    __slots__ = ("ws", "arrays", "memo", "n")

    def __init__(self, ws: Workspace, arrays: dict[Any, np.ndarray], n: int) -> None:
        self.ws = ws
        self.arrays = arrays
        self.memo: dict[Any, Any] = {}
        self.n = n

    def residual(self, p: Any, t: Any) -> np.ndarray:
        key = ("d", p, t)
        d = self.memo.get(key)
        if d is None:
            a, b = self.arrays[p], self.arrays[t]
            d = np.subtract(a, b, out=self.ws.buf(f"d{len(self.memo)}", a.size, a.dtype))
            self.memo[key] = d
        return d

    def abs_residual(self, p: Any, t: Any) -> np.ndarray:
        key = ("a", p, t)
        a = self.memo.get(key)
        if a is None:
            d = self.residual(p, t)
            a = np.abs(d, out=self.ws.buf(f"a{len(self.memo)}", d.size, d.dtype))
            self.memo[key] = a
        return a

    def abs_of(self, x: Any) -> np.ndarray:
        key = ("abs", x)
        a = self.memo.get(key)
        if a is None:
            arr = self.arrays[x]
            a = np.abs(arr, out=self.ws.buf(f"x{len(self.memo)}", arr.size, arr.dtype))
            self.memo[key] = a
        return a

    def in_unit(self, t: Any) -> bool:
        key = ("unit", t)
        ok = self.memo.get(key)
        if ok is None:
            arr = self.arrays[t]
            ok = bool(np.minimum.reduce(arr) >= 0) and bool(np.maximum.reduce(arr) <= 1)
            self.memo[key] = ok
        return ok


def _sum(v: np.ndarray) -> float:
    """Σv over one sub-chunk, pairwise; the engine adds the sub-chunk sums in float64.

    float32 values are summed pairwise in float32 within the sub-chunk (at most SUB_ELEMENTS, so
    the relative error is below ~25 ulp = 1.5e-6 for the non-negative terms the losses produce,
    typically 1e-8), which is twice as fast as casting every element to float64; the sub-chunk sums
    are then accumulated in float64. Sub-chunks lie on a fixed grid of samples, so the result does
    not depend on the chunk size or the thread count. float64 values stay float64 throughout.
    """
    return float(np.add.reduce(v))


# ------------------------------------------------------------------------------ fused losses
# Each takes (block, key of preds, key of targets, params) and returns (Σ values, Σ weights) for
# the sub-chunk, or None to hand the sub-chunk to the generic kernel.

FusedFn = Callable[[Block, Any, Any, dict[str, Any]], "tuple[float, float] | None"]


def _mse(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    d = blk.residual(p, t)
    v = np.multiply(d, d, out=blk.ws.buf("v", d.size, d.dtype))
    return _sum(v), d.size


def _mae(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    a = blk.abs_residual(p, t)
    return _sum(a), a.size


def _huber_core(blk: Block, p: Any, t: Any, knee: float) -> np.ndarray:
    """``q (2|d| - q)`` with ``q = min(|d|, knee)``: twice the Huber loss (delta = knee), per element.

    ``0.5 q (2a - q)`` is ``0.5 a²`` below the knee and ``knee (a - knee/2)`` above it; every factor
    is non-negative, so there is no cancellation, and the 0.5 comes out of the sum.
    """
    a = blk.abs_residual(p, t)
    ws, n, dt = blk.ws, a.size, a.dtype
    q = np.minimum(a, ws.const(knee, n, dt), out=ws.buf("q", n, dt))
    w = np.subtract(a, q, out=ws.buf("l", n, dt))
    w += a
    q *= w
    return q


def _huber(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    v = _huber_core(blk, p, t, params["delta"])
    return 0.5 * _sum(v), v.size


# below this beta, q (2|d| - q) could underflow before the division by beta: divide first
_TINY_BETA = {np.dtype(np.float32): 1e-15, np.dtype(np.float64): 1e-140}


def _smooth_l1(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    beta = params["beta"]
    if beta == 0:
        return _mae(blk, p, t, params)
    dt = blk.arrays[p].dtype
    if beta >= _TINY_BETA[dt]:
        v = _huber_core(blk, p, t, beta)
        return 0.5 / beta * _sum(v), v.size
    a = blk.abs_residual(p, t)
    ws, n = blk.ws, a.size
    q = np.minimum(a, ws.const(beta, n, dt), out=ws.buf("q", n, dt))
    w = np.subtract(a, q, out=ws.buf("l", n, dt))
    w += a
    q /= dt.type(beta)  # q/beta <= 1 first: nothing overflows or underflows
    q *= w
    return 0.5 * _sum(q), n


_LOG_COSH_CAP = 20.0  # log cosh(a) = log cosh(20) + (a - 20) for a >= 20, to 4e-18 relative


def _log_cosh(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
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
        total = _sum(den)
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
    return _sum(den)


def _quantile(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    q = params["q"]
    d = blk.residual(p, t)
    ws, n, dt = blk.ws, d.size, d.dtype
    typ = dt.type
    r = np.negative(d, out=ws.buf("u", n, dt))  # r = t - p
    hi = np.multiply(r, typ(q), out=ws.buf("q", n, dt))
    lo = np.multiply(r, typ(q - 1.0), out=ws.buf("l", n, dt))
    np.maximum(hi, lo, out=hi)
    return _sum(hi), n


def _softplus_tail(blk: Block, x: Any) -> np.ndarray:
    """``log1p(exp(-|x|))`` for input ``x`` (memoised: bce_with_logits and focal share it)."""
    key = ("L", x)
    out = blk.memo.get(key)
    if out is None:
        a = blk.abs_of(x)
        out = np.negative(a, out=blk.ws.buf(f"L{len(blk.memo)}", a.size, a.dtype))
        np.exp(out, out=out)
        np.log1p(out, out=out)
        blk.memo[key] = out
    return out


def _bce_with_logits(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Σ (1 - t) x + softplus(-x), with softplus(-x) = relu(-x) + log1p(exp(-|x|)); one exp, one log1p."""
    if params.get("pos_weight") is not None or params.get("weight") is not None:
        return None
    x, tt = blk.arrays[p], blk.arrays[t]
    if not blk.in_unit(t):
        return None
    ws, n, dt = blk.ws, x.size, x.dtype
    typ = dt.type
    a = blk.abs_of(p)
    tail = _softplus_tail(blk, p)
    v = np.subtract(a, x, out=ws.buf("v", n, dt))  # 2 relu(-x), exactly
    v *= typ(0.5)
    u = np.subtract(ws.const(1.0, n, dt), tt, out=ws.buf("u", n, dt))
    u *= x
    v += u
    v += tail
    return _sum(v), n


def _focal(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
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
    return _sum(ce), n


def _class_rows(blk: Block, p: Any, t: Any) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """(logits (R, C), indices (R,), R, C), or None when some target is not a class index in [0, C)."""
    x, y = blk.arrays[p], blk.arrays[t]
    rows = blk.n
    if rows == 0:
        return None
    classes = x.size // rows
    if int(np.minimum.reduce(y)) < 0 or int(np.maximum.reduce(y)) >= classes:
        return None  # ignore_index, or a bad label: the kernel ignores it or names it
    return x.reshape(rows, classes), y, rows, classes


def _picked(blk: Block, x: np.ndarray, y: np.ndarray, rows: int, classes: int) -> np.ndarray:
    """``x[i, y_i]`` for every row, through one flat ``take``."""
    key = ("rowbase", rows, classes)
    base = blk.ws._bufs.get(key)
    if base is None:
        base = blk.ws._bufs[key] = np.arange(rows, dtype=np.int64) * classes
    idx = np.add(base, y, out=blk.ws.buf("idx", rows, np.int64))
    return np.take(x.reshape(-1), idx, out=blk.ws.buf("pick", rows, x.dtype))


def _cross_entropy(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Σ log1p(s) + (m - x_y) over rows: ``m`` the row maximum, ``s`` = Σ exp(x_j - m) over every
    entry but one maximal one (as :func:`lossctl.losses._common.log_softmax`); one exp per logit.

    Works on the transposed block (classes × rows), so every step is a contiguous vector operation.
    """
    got = _class_rows(blk, p, t)
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
    picked = _picked(blk, x, y, rows, classes)
    np.subtract(m, picked, out=picked)
    return _sum(s) + _sum(picked), rows


def _nll(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    got = _class_rows(blk, p, t)
    if got is None:
        return None
    x, y, rows, classes = got
    picked = _picked(blk, x, y, rows, classes)
    return -_sum(picked), rows


@dataclass(frozen=True)
class Fused:
    fn: FusedFn
    accepts: Callable[[Any], bool]


def _same_float_pair(plan: Any) -> bool:
    arrays = plan.arrays
    if set(arrays) != {"preds", "targets"}:
        return False
    p, t = arrays["preds"], arrays["targets"]
    return p.dtype in _FLOATS and p.dtype == t.dtype and p.shape == t.shape


def _focal_binary(plan: Any) -> bool:
    return _same_float_pair(plan) and not isinstance(plan.bound.params.get("alpha"), list)


def _index_targets(plan: Any) -> bool:
    """cross_entropy/nll with (N, C) logits and (N,) integer class indices, no weights or smoothing."""
    arrays, params = plan.arrays, plan.bound.params
    if set(arrays) != {"preds", "targets"} or params.get("weight") is not None \
            or params.get("label_smoothing", 0.0):
        return False
    p, t = arrays["preds"], arrays["targets"]
    ignore = params.get("ignore_index", -100)
    return p.dtype in _FLOATS and p.ndim == 2 and t.ndim == 1 and t.shape[0] == p.shape[0] \
        and t.dtype.kind in "iu" and p.shape[1] >= 1 and not 0 <= ignore < p.shape[1]


_BY_NAME: dict[str, Fused] = {
    "cross_entropy": Fused(_cross_entropy, _index_targets),
    "nll": Fused(_nll, _index_targets),
    "mse": Fused(_mse, _same_float_pair),
    "mae": Fused(_mae, _same_float_pair),
    "huber": Fused(_huber, _same_float_pair),
    "smooth_l1": Fused(_smooth_l1, _same_float_pair),
    "log_cosh": Fused(_log_cosh, _same_float_pair),
    "quantile": Fused(_quantile, _same_float_pair),
    "bce_with_logits": Fused(_bce_with_logits, lambda plan: _same_float_pair(plan)
                             and plan.bound.params.get("pos_weight") is None
                             and plan.bound.params.get("weight") is None),
    "focal": Fused(_focal, _focal_binary),
}

_KERNELS: dict[Any, Fused] | None = None


def _builtin_kernels() -> dict[Any, Fused]:
    """The fused implementation of each built-in kernel function (looked up by identity)."""
    global _KERNELS
    if _KERNELS is None:
        from lossctl.losses import classification, regression

        table: dict[Any, Fused] = {}
        for module in (regression, classification):
            for name, fused in _BY_NAME.items():
                fn = getattr(module, name, None)
                if fn is not None:
                    table[fn] = fused
        _KERNELS = table
    return _KERNELS


def fused_for(plan: Any) -> Fused | None:
    """The fused implementation for ``plan``, when it applies (built-in kernel, plain inputs)."""
    if plan.keep_values or plan.spec.finalize is not None:
        return None
    fused = _builtin_kernels().get(plan.spec.kernel)
    if fused is None or not all(arr.can_view() for arr in plan.arrays.values()):
        return None
    if not fused.accepts(plan):
        return None
    return fused


def run_task(entries: list[tuple[Fused, dict[str, Any], dict[str, Any]]], views: dict[Any, np.ndarray],
             rows: int, sub_rows: int) -> list[tuple[float, float]] | None:
    """Fused sums over one window of ``rows`` samples; None when the generic path must take it.

    ``entries`` holds (fused, {input name: view key}, params) per term; ``views`` the window of
    each distinct input (C-contiguous, samples along axis 0).
    """
    ws = _workspace()
    totals = [0.0] * len(entries)
    weights = [0.0] * len(entries)
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite sum sends the window to the kernels
        return _run_task(entries, views, rows, sub_rows, ws, totals, weights)


def _run_task(entries: list[tuple[Fused, dict[str, Any], dict[str, Any]]], views: dict[Any, np.ndarray],
              rows: int, sub_rows: int, ws: Workspace, totals: list[float],
              weights: list[float]) -> list[tuple[float, float]] | None:
    flat = {k: v.reshape(-1) for k, v in views.items()}
    per_row = {k: (v.size // rows if rows else 1) for k, v in views.items()}
    for i in range(0, rows, sub_rows):
        j = min(rows, i + sub_rows)
        arrays = {k: flat[k][i * per_row[k]:j * per_row[k]] for k in flat}
        blk = Block(ws, arrays, j - i)
        for k, (fused, keys, params) in enumerate(entries):
            out = fused.fn(blk, keys["preds"], keys["targets"], params)
            if out is None:
                return None
            total, weight = out
            if not math.isfinite(total):
                return None
            totals[k] += total
            weights[k] += weight
    return list(zip(totals, weights))
