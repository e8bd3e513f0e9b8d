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
  :func:`_sum`; sub-chunks lie on a fixed grid, so chunk size and thread count do not matter);
* where the optional C kernels are built (:mod:`lossctl.ckernels`), mse, mae, huber, smooth_l1,
  the hard-mask Dice/IoU/Tversky sums and the nll gather take one pass per sub-chunk in C instead
  of several NumPy passes: the same per-element values, accumulated in float64 directly.

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

from lossctl import ckernels
from lossctl.accumulators import SKETCH_HALF, SampleStats

#: Elements per sub-chunk (on a fixed grid of samples): its scratch arrays stay in L2/L3 cache, and
#: each NumPy call is long enough that two worker threads rarely wait for the GIL.
SUB_ELEMENTS = 1 << 17
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
#: unsigned view and bit pattern of 1.0 per float type (see Block.in_unit)
_ONE_BITS = {np.dtype(np.float32): (np.uint32, 0x3F800000), np.dtype(np.float64): (np.uint64, 0x3FF0000000000000)}


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
        """Whether every value of input ``t`` lies in [0, 1] (False for NaN)."""
        key = ("unit", t)
        ok = self.memo.get(key)
        if ok is None:
            arr = self.arrays[t]
            bits = _ONE_BITS.get(arr.dtype)
            if bits is not None and arr.size and arr.flags.c_contiguous:
                # one integer max over the bit patterns: +0.0 ... 1.0 are exactly the patterns
                # 0 ... bits(1.0); negatives (sign bit), NaN and -0.0 compare above (the kernel
                # then takes the sub-chunk: -0.0 is fine there, the others raise)
                ok = int(np.maximum.reduce(arr.view(bits[0]))) <= bits[1]
            else:
                ok = bool(np.minimum.reduce(arr) >= 0) and bool(np.maximum.reduce(arr) <= 1)
            self.memo[key] = ok
        return ok


def _sum(v: np.ndarray) -> float:
    """Σv over one sub-chunk, accumulated in float64 whatever the values' type.

    float32 sums would be twice as fast but carry ~1e-7 relative error that depends on where a
    sub-chunk starts, and a state must merge to 1e-12 whatever the split (SPEC §8).
    """
    return float(np.add.reduce(v, dtype=np.float64))


# ------------------------------------------------------------------------------ fused losses
# Each takes (block, key of preds, key of targets, params) and returns (Σ values, Σ weights) for
# the sub-chunk, or None to hand the sub-chunk to the generic kernel.

FusedFn = Callable[[Block, Any, Any, dict[str, Any]], "tuple[float, float] | None"]


# kinds of _kernels.residual_sum
_SQUARE, _ABS, _HUBER = 0, 1, 2


def _c_residual_sum(blk: Block, kind: int, p: Any, t: Any, knee: float = 0.0) -> float | None:
    """Σ f(p - t) in one pass by the C kernel (per-element values as the NumPy code below forms
    them, accumulated in float64), or None when the kernels are not built."""
    ck = ckernels.kernels
    if ck is None:
        return None
    return ck.residual_sum(kind, blk.arrays[p], blk.arrays[t], knee)


def _mse(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    total = _c_residual_sum(blk, _SQUARE, p, t)
    if total is not None:
        return total, blk.arrays[p].size
    d = blk.residual(p, t)
    v = np.multiply(d, d, out=blk.ws.buf("v", d.size, d.dtype))
    return _sum(v), d.size


def _mae(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    total = _c_residual_sum(blk, _ABS, p, t)
    if total is not None:
        return total, blk.arrays[p].size
    a = blk.abs_residual(p, t)
    return _sum(a), a.size


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


def _huber(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    total = _c_residual_sum(blk, _HUBER, p, t, params["delta"])
    if total is not None:
        return total, blk.arrays[p].size
    v = _huber_core(blk, p, t, params["delta"])
    return _sum(v), v.size


# below this beta, q (d - q/2) could underflow before the division by beta: divide first
_TINY_BETA = {np.dtype(np.float32): 1e-15, np.dtype(np.float64): 1e-140}


def _smooth_l1(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    beta = params["beta"]
    if beta == 0:
        return _mae(blk, p, t, params)
    dt = blk.arrays[p].dtype
    if beta >= _TINY_BETA[dt]:
        total = _c_residual_sum(blk, _HUBER, p, t, beta)
        if total is not None:
            return total / beta, blk.arrays[p].size
        v = _huber_core(blk, p, t, beta)
        return _sum(v) / beta, v.size
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


def _nll_c(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """-Σ x[i, y_i]: one pass over the indices (range check included), gathering from the rows."""
    x, y = blk.arrays[p], blk.arrays[t]
    ck = ckernels.kernels
    if ck is None or blk.n == 0 or y.dtype not in _C_INDEX:
        return _nll(blk, p, t, params)
    total = ck.pick_sum(x, y, x.size // blk.n)
    if total is None:
        return None  # ignore_index, or a bad label: the kernel ignores it or names it
    return -total, blk.n


_C_INDEX = (np.dtype(np.int64), np.dtype(np.int32))

def _msle(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """(log1p(p) - log1p(t))² in the inputs' float type, as the kernel; values <= -1 go to the kernel."""
    if not (_range_of(blk, p)[0] > -1.0 and _range_of(blk, t)[0] > -1.0):
        return None
    x, tt = blk.arrays[p], blk.arrays[t]
    ws, n, dt = blk.ws, x.size, x.dtype
    a = np.log1p(x, out=ws.buf("ma", n, dt))
    b = np.log1p(tt, out=ws.buf("mb", n, dt))
    a -= b
    a *= a
    return _sum(a), n


def _mape(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float]:
    """|p - t| / max(|t|, eps), as the kernel."""
    a = blk.abs_residual(p, t)
    ws, n, dt = blk.ws, a.size, a.dtype
    den = blk.abs_of(t)
    den = np.maximum(den, ws.const(float(np.finfo(np.float64).eps), n, dt), out=ws.buf("md", n, dt))
    v = np.divide(a, den, out=ws.buf("mv", n, dt))
    return _sum(v), n



# ------------------------------------------------------------- more losses (issue 3 and the rest)
# These kernels work in float64 whatever the input dtype (distribution and likelihood terms can
# cancel); the fused versions copy each float32 sub-chunk into a float64 scratch buffer (it stays in
# cache) instead of materialising float64 chunks and per-element temporaries.


def _f64_of(blk: Block, x: Any) -> np.ndarray:
    """Input ``x`` of the block in float64 (float64 inputs as they are; float32 copied once, memoised)."""
    key = ("f64", x)
    out = blk.memo.get(key)
    if out is None:
        arr = blk.arrays[x]
        if arr.dtype == np.float64:
            out = arr
        else:
            out = blk.ws.buf(f"f64_{len(blk.memo)}", arr.size, np.float64)
            np.copyto(out, arr)
        blk.memo[key] = out
    return out


def _range_of(blk: Block, x: Any) -> tuple[float, float]:
    """(min, max) of input ``x`` over the block (NaN propagates), memoised."""
    key = ("range", x)
    r = blk.memo.get(key)
    if r is None:
        arr = blk.arrays[x]
        r = (float(np.minimum.reduce(arr)), float(np.maximum.reduce(arr))) if arr.size else (0.0, 0.0)
        blk.memo[key] = r
    return r


def _unit(blk: Block, x: Any) -> bool:
    return blk.in_unit(x)


def _bce(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """As the kernel: ``t max(log p, -100) + (1 - t) max(log1p(-p), -100)``, negated at the end."""
    if params.get("weight") is not None or not (_unit(blk, p) and _unit(blk, t)):
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
    return -_sum(a), n


def _hinge(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Binary hinge ``max(0, margin - t x)``; labels {0, 1} map to {-1, 1} (the loss's ``prepare``
    has checked that the whole targets hold one of the two label sets)."""
    x, tt = blk.arrays[p], blk.arrays[t]
    ws, n, dt = blk.ws, x.size, x.dtype
    lo, hi = _range_of(blk, t)
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
    return _sum(v), n


def _multi_margin(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Σ_{j≠y} max(0, margin - x_y + x_j)^p / C, as the kernel (in the scores' float type)."""
    if params.get("weight") is not None:
        return None
    got = _class_rows(blk, p, t)
    if got is None:
        return None
    x, y, rows, classes = got
    ws, dt = blk.ws, x.dtype
    picked = _picked(blk, x, y, rows, classes)
    np.subtract(dt.type(params["margin"]), picked, out=picked)  # margin - x_y
    v = ws.buf("mm", rows * classes, dt).reshape(rows, classes)
    np.add(picked[:, None], x, out=v)
    np.maximum(v, dt.type(0.0), out=v)
    if params["p"] == 2:
        v *= v
    flat = v.reshape(-1)
    flat[ws.buf("idx", rows, np.int64)] = 0  # the y-th term (idx is still _picked's flat index)
    return _sum(flat) / classes, rows


def _xlogy_ratio(blk: Block, name: str, a: np.ndarray, b: np.ndarray, a_min: float) -> np.ndarray:
    """``a log(a / b)`` per element (float64), 0 where ``a`` is 0."""
    out = np.divide(a, b, out=blk.ws.buf(name, a.size, np.float64))
    with np.errstate(divide="ignore"):
        np.log(out, out=out)
    out *= a
    if a_min == 0.0:
        np.copyto(out, 0.0, where=a == 0.0)
    return out


def _kl_div(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """Σ P (log P - log Q) in float64; mean over rows (batchmean)."""
    if params.get("from_logits") or params.get("log_target") or not _unit(blk, t):
        return None
    log_input = params.get("log_input")
    if not log_input and not _unit(blk, p):
        return None
    q, pp = _f64_of(blk, p), _f64_of(blk, t)
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
    if _range_of(blk, t)[0] == 0.0:
        np.copyto(v, 0.0, where=pp == 0.0)  # 0 log 0 = 0, whatever Q is
    return _sum(v), blk.n


def _js_div(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """½ Σ [P log(P/M) + Q log(Q/M)], M = (P + Q)/2, in float64; mean over rows."""
    if params.get("from_logits") or params.get("log_target") or params.get("log_input"):
        return None
    if not (_unit(blk, p) and _unit(blk, t)):
        return None
    q, pp = _f64_of(blk, p), _f64_of(blk, t)
    ws, n = blk.ws, q.size
    m = np.add(q, pp, out=ws.buf("m", n, np.float64))
    m *= 0.5
    a = _xlogy_ratio(blk, "jsa", pp, m, _range_of(blk, t)[0])
    b = _xlogy_ratio(blk, "jsb", q, m, _range_of(blk, p)[0])
    a += b
    return 0.5 * _sum(a), blk.n


_GKL_SERIES = 1e-3  # below this |logvar|, exp(x) - 1 - x by its Taylor series (the direct form cancels)


def _gaussian_kl(blk: Block, mu: Any, lv: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """½ Σ (μ² + exp(v) - 1 - v) in float64: ``expm1(v) - v``, and for |v| < 1e-3 (where that
    cancels) the series v²/2 + v³/6 + … + v⁶/720 on just those elements. Every term is >= 0."""
    x = _f64_of(blk, lv)
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
    m = _f64_of(blk, mu)
    sq = np.multiply(m, m, out=ws.buf("gkm", n, np.float64))
    e += sq
    return 0.5 * _sum(e), blk.n


def _poisson_nll(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """exp(x) - t x in float64 (log_input=true, full=false)."""
    if not params.get("log_input", True) or params.get("full"):
        return None
    if not _range_of(blk, t)[0] >= 0.0:
        return None
    x, tt = _f64_of(blk, p), _f64_of(blk, t)
    ws, n = blk.ws, x.size
    v = np.exp(x, out=ws.buf("pe", n, np.float64))
    u = np.multiply(tt, x, out=ws.buf("pu", n, np.float64))
    v -= u
    return _sum(v), n


_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _gaussian_nll(blk: Block, p: Any, t: Any, var: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """½ (log max(var, eps) + (p - t)² / max(var, eps)) in float64."""
    if not _range_of(blk, var)[0] >= 0.0:
        return None  # a negative variance (or NaN): the kernel names it
    x, tt, vv = _f64_of(blk, p), _f64_of(blk, t), _f64_of(blk, var)
    ws, n = blk.ws, x.size
    v = np.maximum(vv, params["eps"], out=ws.buf("gv", n, np.float64))
    d = np.subtract(x, tt, out=ws.buf("gd", n, np.float64))
    d *= d
    d /= v
    with np.errstate(divide="ignore"):
        np.log(v, out=v)
    d += v
    total = 0.5 * _sum(d)
    if params.get("full"):
        total += n * _HALF_LOG_2PI
    return total, n


def _contrastive(blk: Block, x1: Any, x2: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """(1 - y) d² + y max(0, margin - d)², d = |x1 - x2|; differences in the inputs' float type,
    row sums of squares pairwise, the per-pair terms in float64."""
    rows = blk.n
    if rows == 0:
        return None
    y = _f64_of(blk, t)
    bad = (y != 0.0) & (y != 1.0)
    if bad.any():
        return None  # other labels (or NaN): the kernel names them
    a, b = blk.arrays[x1], blk.arrays[x2]
    ws, dt = blk.ws, a.dtype
    ck = ckernels.kernels
    if ck is not None:  # one pass: the same squares, row sums in float64
        sq = np.empty(rows)
        ck.row_sq_dist(a, b, sq)
    else:
        diff = np.subtract(a, b, out=ws.buf("cd", a.size, dt))
        diff *= diff
        sq = np.add.reduce(diff.reshape(rows, -1), axis=1).astype(np.float64)
    d = np.sqrt(sq)
    hinge = np.subtract(params["margin"], d, out=d)
    np.maximum(hinge, 0.0, out=hinge)
    hinge *= hinge
    hinge *= y
    sq *= 1.0 - y
    sq += hinge
    return float(np.add.reduce(sq)), rows

def _rows64(blk: Block, x: Any) -> np.ndarray:
    """Input ``x`` as float64 rows (rows, D)."""
    v = _f64_of(blk, x)
    return v.reshape(blk.n, -1)


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _triplet(blk: Block, a: Any, p: Any, n: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """max(0, margin + |a - p + eps| - |a - n + eps|) (2-norms over rows, float64), as the kernel."""
    rows = blk.n
    if rows == 0:
        return None
    aa, pp, nn = _rows64(blk, a), _rows64(blk, p), _rows64(blk, n)
    eps = params["eps"]
    diff = np.subtract(aa, pp, out=blk.ws.buf("td", aa.size, np.float64).reshape(aa.shape))
    if eps:
        diff += eps
    d_ap = np.sqrt(_row_dot(diff, diff))
    np.subtract(aa, nn, out=diff)
    if eps:
        diff += eps
    d_an = np.sqrt(_row_dot(diff, diff))
    v = params["margin"] + d_ap
    v -= d_an
    np.maximum(v, 0.0, out=v)
    return float(np.add.reduce(v)), rows


def _cosine_embedding(blk: Block, x1: Any, x2: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """1 - cos (y = 1) or max(0, cos - margin) (y = -1); cos = x1·x2 / sqrt((|x1|² + 1e-12)(|x2|² + 1e-12))."""
    rows = blk.n
    if rows == 0:
        return None
    y = _f64_of(blk, t)
    if ((y != 1.0) & (y != -1.0)).any():
        return None  # other labels (or NaN): the kernel names them
    a, b = _rows64(blk, x1), _rows64(blk, x2)
    den = (_row_dot(a, a) + 1e-12) * (_row_dot(b, b) + 1e-12)
    cos = _row_dot(a, b) / np.sqrt(den)
    loss = np.where(y == 1.0, 1.0 - cos, np.maximum(cos - params["margin"], 0.0))
    return float(np.add.reduce(loss)), rows



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


def _overlap_stats(blk: Block, p: Any, t: Any, params: dict[str, Any]) -> tuple[float, float, dict[str, float]] | None:
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
    if not _unit(blk, p):
        return None
    if _hard_mask(blk, t):
        pp, tt = blk.arrays[p], blk.arrays[t]
        ws, n, dt = blk.ws, pp.size, pp.dtype
        d = np.subtract(pp, tt, out=ws.buf("ovd", n, dt))
        np.abs(d, out=d)  # p (t = 0) or 1 - p (t = 1; exact for p >= 0.5)
        disagree = _sum(d)
        d *= tt  # 1 - p where t = 1, else 0: exact
        fn = _sum(d)
        inter = _sum(np.multiply(pp, tt, out=d))  # p where t = 1, else 0: exact
        return 0.0, 0.0, {"i": inter, "p": inter + (disagree - fn), "t": inter + fn}
    if not _unit(blk, t):
        return None
    pp, tt = _f64_of(blk, p), _f64_of(blk, t)
    prod = np.multiply(pp, tt, out=blk.ws.buf("ov", pp.size, np.float64))
    return 0.0, 0.0, {"i": float(np.add.reduce(prod)), "p": float(np.add.reduce(pp)),
                      "t": float(np.add.reduce(tt))}

@dataclass(frozen=True)
class Fused:
    fn: FusedFn
    accepts: Callable[[Any], bool]
    #: the named inputs passed to ``fn`` (as view keys), in order
    inputs: tuple[str, ...] = ("preds", "targets")
    #: ``fn`` may return a third item, additive ``Part.stats`` sums for the loss's ``finalize``
    stats: bool = False
    #: (C residual kind, knee) from the params, for losses whose per-element values the C kernel
    #: ``residual_stats`` also summarises (``--worst``, per-sample summaries)
    c_kind: Callable[[dict[str, Any]], tuple[int, float]] | None = None


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


def _same_float(plan: Any, names: tuple[str, ...]) -> bool:
    arrays = plan.arrays
    if set(arrays) != set(names):
        return False
    first = arrays[names[0]]
    return all(arrays[n].dtype in _FLOATS and arrays[n].dtype == first.dtype and arrays[n].shape == first.shape
               for n in names)


def _no_params(*names: str) -> Callable[[Any], bool]:
    return lambda plan: all(not plan.bound.params.get(n) for n in names)


def _overlap_plain(plan: Any) -> bool:
    """Dice/IoU/Tversky on probabilities with a mask of the same shape, one global score, mean."""
    params = plan.bound.params
    return _same_float_pair(plan) and plan.reduction == "mean" and not params.get("from_logits") \
        and not params.get("per_sample") and not params.get("per_class")


def _contrastive_pairs(plan: Any) -> bool:
    arrays = plan.arrays
    if plan.bound.params.get("mining", "none") != "none" or set(arrays) != {"x1", "x2", "targets"}:
        return False
    a, b, y = arrays["x1"], arrays["x2"], arrays["targets"]
    return a.dtype in _FLOATS and a.dtype == b.dtype and a.shape == b.shape and a.ndim == 2 \
        and y.dtype in _FLOATS and y.shape == (a.shape[0],)


def _triplet_plain(plan: Any) -> bool:
    params = plan.bound.params
    if params.get("mining", "none") != "none" or params.get("swap") or params.get("p", 2.0) != 2.0:
        return False
    names = ("anchor", "positive", "negative")
    return _same_float(plan, names) and plan.arrays["anchor"].ndim == 2


def _cosine_pairs(plan: Any) -> bool:
    arrays = plan.arrays
    if set(arrays) != {"x1", "x2", "targets"}:
        return False
    a, b, y = arrays["x1"], arrays["x2"], arrays["targets"]
    return a.dtype in _FLOATS and a.dtype == b.dtype and a.shape == b.shape and a.ndim == 2 \
        and y.dtype in _FLOATS and y.shape == (a.shape[0],)


_BY_NAME: dict[str, Fused] = {
    "cross_entropy": Fused(_cross_entropy, _index_targets),
    "nll": Fused(_nll_c, _index_targets),
    "mse": Fused(_mse, _same_float_pair, c_kind=lambda params: (_SQUARE, 0.0)),
    "mae": Fused(_mae, _same_float_pair, c_kind=lambda params: (_ABS, 0.0)),
    "huber": Fused(_huber, _same_float_pair, c_kind=lambda params: (_HUBER, params["delta"])),
    "smooth_l1": Fused(_smooth_l1, _same_float_pair),
    "log_cosh": Fused(_log_cosh, _same_float_pair),
    "quantile": Fused(_quantile, _same_float_pair),
    "bce_with_logits": Fused(_bce_with_logits, lambda plan: _same_float_pair(plan)
                             and plan.bound.params.get("pos_weight") is None
                             and plan.bound.params.get("weight") is None),
    "focal": Fused(_focal, _focal_binary),
    "msle": Fused(_msle, _same_float_pair),
    "mape": Fused(_mape, _same_float_pair),
    "bce": Fused(_bce, lambda plan: _same_float_pair(plan) and plan.bound.params.get("weight") is None),
    "hinge": Fused(_hinge, _same_float_pair),
    "multi_margin": Fused(_multi_margin, lambda plan: _index_targets(plan)
                          and plan.bound.params.get("weight") is None),
    "kl_div": Fused(_kl_div, lambda plan: _same_float_pair(plan) and _no_params("from_logits", "log_target")(plan)),
    "js_div": Fused(_js_div, lambda plan: _same_float_pair(plan)
                    and _no_params("from_logits", "log_target", "log_input")(plan)),
    "gaussian_kl": Fused(_gaussian_kl, lambda plan: _same_float(plan, ("mu", "logvar")), inputs=("mu", "logvar")),
    "poisson_nll": Fused(_poisson_nll, lambda plan: _same_float_pair(plan)
                         and plan.bound.params.get("log_input", True) and not plan.bound.params.get("full")),
    "gaussian_nll": Fused(_gaussian_nll, lambda plan: _same_float(plan, ("preds", "targets", "var")),
                          inputs=("preds", "targets", "var")),
    "triplet": Fused(_triplet, _triplet_plain, inputs=("anchor", "positive", "negative")),
    "cosine_embedding": Fused(_cosine_embedding, _cosine_pairs, inputs=("x1", "x2", "targets")),
    "contrastive": Fused(_contrastive, _contrastive_pairs, inputs=("x1", "x2", "targets")),
    "dice": Fused(_overlap_stats, _overlap_plain, stats=True),
    "iou": Fused(_overlap_stats, _overlap_plain, stats=True),
    "tversky": Fused(_overlap_stats, _overlap_plain, stats=True),
}

_KERNELS: dict[Any, Fused] | None = None


def _builtin_kernels() -> dict[Any, Fused]:
    """The fused implementation of each built-in kernel function (looked up by identity)."""
    global _KERNELS
    if _KERNELS is None:
        from lossctl.losses import classification, distribution, embedding, extras, regression, segmentation

        table: dict[Any, Fused] = {}
        for module in (regression, classification, distribution, extras, embedding, segmentation):
            for name, fused in _BY_NAME.items():
                fn = getattr(module, name, None)
                if fn is not None:
                    table[fn] = fused
        _KERNELS = table
    return _KERNELS


def fused_for(plan: Any) -> Fused | None:
    """The fused implementation for ``plan``, when it applies (built-in kernel, plain inputs).

    A plan that keeps per-sample values takes a fused path only when they are wanted for its
    statistics alone (``plan.samples``), the C kernels can summarise them, and the inputs are 1-D
    and longer than what the statistics keep exactly.
    """
    fused = _builtin_kernels().get(plan.spec.kernel)
    if plan.keep_values and not _stats_path(plan, fused):
        return None
    if fused is None or not all(arr.can_view() for arr in plan.arrays.values()):
        return None
    if plan.spec.finalize is not None and not fused.stats:
        return None
    if any(plan.spec.sample_axis(name) != 0 for name in plan.arrays):
        return None
    if not fused.accepts(plan):
        return None
    return fused


def _stats_path(plan: Any, fused: Fused | None) -> bool:
    return (fused is not None and fused.c_kind is not None and ckernels.kernels is not None
            and plan.samples is not None and plan.n > plan.samples.EXACT_LIMIT
            and all(arr.ndim == 1 for arr in plan.arrays.values()))


class _TaskStats:
    """Per-sample statistics of one fused window: the C kernel's sketch counts and worst-K heap,
    and the sub-chunks' moments combined as :class:`SampleStats` combines them."""

    def __init__(self, k: int, first: int) -> None:
        self.k, self.first = k, first
        self.hist = np.zeros(2 * SKETCH_HALF, dtype=np.int64)
        self.heap_values = np.empty(max(k, 1))
        self.heap_index = np.empty(max(k, 1), dtype=np.int64)
        self.heap_n = 0
        self.stats = SampleStats(k=k)

    def run(self, kind: int, knee: float, a: np.ndarray, b: np.ndarray, offset: int) -> float | None:
        out = ckernels.kernels.residual_stats(kind, a, b, knee, self.first + offset, self.hist,
                                               self.heap_values[:self.k], self.heap_index[:self.k], self.heap_n)
        if out is None:
            return None
        total, lo, hi, m2, self.heap_n = out
        n = a.size
        if n:
            self.stats._combine(n, total / n, m2, lo, hi)
        return total

    def result(self) -> SampleStats:
        s = self.stats
        k = self.heap_n
        return SampleStats.from_sketch(self.k, s.finite, s.mean, s.m2, s.min, s.max,
                                       self.heap_values[:k].copy(), self.heap_index[:k].copy(), self.hist)


def run_task(entries: list[tuple[Any, ...]], views: dict[Any, np.ndarray], rows: int, sub_rows: int,
             start: int = 0) -> list[tuple[float, float, dict[str, Any], SampleStats | None]] | None:
    """Fused sums over one window of ``rows`` samples; None when the generic path must take it.

    ``entries`` holds (fused, {input name: view key}, params, worst K or None, first index) per term;
    ``views`` the window of each distinct input (C-contiguous, samples along axis 0), which starts at
    sample ``start``. A term with a worst K also gets its per-sample statistics (see ``_stats_path``).
    """
    ws = _workspace()
    totals = [0.0] * len(entries)
    weights = [0.0] * len(entries)
    stats: list[dict[str, Any]] = [{} for _ in entries]
    samples = [None if e[3] is None else _TaskStats(e[3], e[4] + start) for e in entries]
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite sum sends the window to the kernels
        out = _run_task(entries, views, rows, sub_rows, ws, totals, weights, stats, samples)
    if out is None:
        return None
    return [(*sums, None if ts is None else ts.result()) for sums, ts in zip(out, samples)]


def _run_task(entries: list[tuple[Any, ...]], views: dict[Any, np.ndarray],
              rows: int, sub_rows: int, ws: Workspace, totals: list[float], weights: list[float],
              stats: list[dict[str, Any]], samples: list[_TaskStats | None]) -> list[tuple[float, float, dict[str, Any]]] | None:
    flat = {k: v.reshape(-1) for k, v in views.items()}
    per_row = {k: (v.size // rows if rows else 1) for k, v in views.items()}
    for i in range(0, rows, sub_rows):
        j = min(rows, i + sub_rows)
        arrays = {k: flat[k][i * per_row[k]:j * per_row[k]] for k in flat}
        blk = Block(ws, arrays, j - i)
        for k, (fused, keys, params, *_) in enumerate(entries):
            task_stats = samples[k]
            if task_stats is not None:
                kind, knee = fused.c_kind(params)
                a, b = (arrays[keys[name]] for name in fused.inputs)
                total = task_stats.run(kind, knee, a, b, i)
                out = None if total is None else (total, a.size)
            else:
                out = fused.fn(blk, *[keys[name] for name in fused.inputs], params)
            if out is None:
                return None
            total, weight = out[0], out[1]
            if not math.isfinite(total):
                return None
            totals[k] += total
            weights[k] += weight
            if len(out) > 2:
                acc = stats[k]
                for name, value in out[2].items():
                    if not math.isfinite(value):
                        return None
                    acc[name] = acc.get(name, 0.0) + value
    return list(zip(totals, weights, stats))
