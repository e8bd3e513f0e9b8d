"""Fused fast paths: the machinery that sums several losses over the same inputs in one pass.

The generic engine calls each loss's kernel on each chunk and keeps its ``reduction='none'``
values. For the common built-in losses that is wasted work when only the mean or sum is wanted,
so their fused functions compute the chunk sums directly, on what this module provides:

* every input window is read once per pass (``pread`` windows of ``.npy`` files, or
  slices of in-memory arrays) and cut into cache-sized sub-chunks;
* terms shared between losses (the residual ``d = p - t`` and ``|d|``) are computed once per
  sub-chunk, in reused scratch buffers (no temporaries);
* transcendental-heavy losses use one ``exp`` and one ``log1p`` per element;
* per-element values are formed in the inputs' float type, exactly as the kernels do; they are
  summed pairwise per cache-sized sub-chunk and the sub-chunk sums accumulated in float64 (see
  :func:`sum64`; sub-chunks lie on a fixed grid, so chunk size and thread count do not matter);
* where the optional C kernels are built (:mod:`lossctl.ckernels`), mse, mae, huber, smooth_l1,
  the hard-mask Dice/IoU/Tversky sums and the nll gather take one pass per sub-chunk in C instead
  of several NumPy passes: the same per-element values, accumulated in float64 directly.

A loss's fused function lives next to its kernel in its family module (:mod:`lossctl.losses`) and
is registered with it, ``register_loss(..., fused=Fused(fn, accepts))``; the engine finds it as
``spec.fused``. This module is below the losses and imports none of them: it holds the sub-chunk
loop (:func:`run_task`), the scratch buffers and memoised shared terms (:class:`Block`), the
float64 sums and the input predicates several families use. A loss without ``fused`` (a plugin,
also one that replaces a built-in) takes the generic kernels.

A fused loss returns ``None`` when it cannot handle a sub-chunk exactly (values outside the loss's
domain, NaN, an overflow): the engine then re-runs that stretch of samples through the generic
kernels, which raise the right error or apply the NaN policy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossctl import ckernels
from lossctl.accumulators import SKETCH_HALF, Moments, SampleStats

#: Elements per sub-chunk (on a fixed grid of samples): its scratch arrays stay in L2/L3 cache, and
#: each NumPy call is long enough that two worker threads rarely wait for the GIL.
SUB_ELEMENTS = 1 << 17
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
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


def sum64(v: np.ndarray) -> float:
    """Σv over one sub-chunk, accumulated in float64 whatever the values' type.

    float32 sums carry ~1e-7 relative error that depends on where a sub-chunk starts, and a state
    must merge to 1e-12 whatever the split (SPEC §8). The C kernel accumulates in float64 lanes at
    memory speed; NumPy's casting reduce is about twice as slow as a float32 sum.
    """
    ck = ckernels.kernels
    if ck is not None and v.flags.c_contiguous and v.dtype in FLOATS:
        return ck.float_sum(v)
    return float(np.add.reduce(v, dtype=np.float64))


# ------------------------------------------------------------------ shared terms of the fused losses
# A fused loss takes (block, the view key of each of its inputs, params) and returns (Σ values,
# Σ weights) for the sub-chunk, or None to hand the sub-chunk to the generic kernel.

FusedFn = Callable[..., "tuple[float, float] | tuple[float, float, dict[str, float]] | None"]


def c_residual_sum(blk: Block, kind: int, p: Any, t: Any, knee: float = 0.0) -> float | None:
    """Σ f(p - t) in one pass by the C kernel (``kind``: :data:`lossctl.ckernels.KIND_SQUARE` ...;
    per-element values as the losses' NumPy fused code forms them, accumulated in float64), or None
    when the kernels are not built."""
    ck = ckernels.kernels
    if ck is None:
        return None
    return ck.residual_sum(kind, blk.arrays[p], blk.arrays[t], knee)


def softplus_tail(blk: Block, x: Any) -> np.ndarray:
    """``log1p(exp(-|x|))`` for input ``x`` (memoised: terms on the same logits compute it once)."""
    key = ("L", x)
    out = blk.memo.get(key)
    if out is None:
        a = blk.abs_of(x)
        out = np.negative(a, out=blk.ws.buf(f"L{len(blk.memo)}", a.size, a.dtype))
        np.exp(out, out=out)
        np.log1p(out, out=out)
        blk.memo[key] = out
    return out


def class_rows(blk: Block, p: Any, t: Any) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """(logits (R, C), indices (R,), R, C), or None when some target is not a class index in [0, C)."""
    x, y = blk.arrays[p], blk.arrays[t]
    rows = blk.n
    if rows == 0:
        return None
    classes = x.size // rows
    if int(np.minimum.reduce(y)) < 0 or int(np.maximum.reduce(y)) >= classes:
        return None  # ignore_index, or a bad label: the kernel ignores it or names it
    return x.reshape(rows, classes), y, rows, classes


def pick(blk: Block, x: np.ndarray, y: np.ndarray, rows: int, classes: int) -> np.ndarray:
    """``x[i, y_i]`` for every row, through one flat ``take``."""
    key = ("rowbase", rows, classes)
    base = blk.ws._bufs.get(key)
    if base is None:
        base = blk.ws._bufs[key] = np.arange(rows, dtype=np.int64) * classes
    idx = np.add(base, y, out=blk.ws.buf("idx", rows, np.int64))
    return np.take(x.reshape(-1), idx, out=blk.ws.buf("pick", rows, x.dtype))


# Distribution, likelihood and embedding kernels work in float64 whatever the input dtype (their
# terms can cancel); their fused versions copy each float32 sub-chunk into a float64 scratch buffer
# (it stays in cache) instead of materialising float64 chunks and per-element temporaries.


def f64_of(blk: Block, x: Any) -> np.ndarray:
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


def range_of(blk: Block, x: Any) -> tuple[float, float]:
    """(min, max) of input ``x`` over the block (NaN propagates), memoised."""
    key = ("range", x)
    r = blk.memo.get(key)
    if r is None:
        arr = blk.arrays[x]
        r = (float(np.minimum.reduce(arr)), float(np.maximum.reduce(arr))) if arr.size else (0.0, 0.0)
        blk.memo[key] = r
    return r


def rows64(blk: Block, x: Any) -> np.ndarray:
    """Input ``x`` as float64 rows (rows, D)."""
    v = f64_of(blk, x)
    return v.reshape(blk.n, -1)


def row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


# ------------------------------------------------------------------------- a loss's fused path


@dataclass(frozen=True)
class Fused:
    """A loss's fused path, passed as ``register_loss(..., fused=Fused(fn, accepts))``.

    ``fn`` must give the same per-element values as the loss's kernel (only the summation differs),
    so fast and generic paths agree (tests/test_state_invariance.py checks every loss);
    ``accepts(plan)`` says whether the plan's inputs and params are ones ``fn`` handles.
    """

    fn: FusedFn
    accepts: Callable[[Any], bool]
    #: the named inputs passed to ``fn`` (as view keys), in order
    inputs: tuple[str, ...] = ("preds", "targets")
    #: ``fn`` may return a third item, additive ``Part.stats`` sums for the loss's ``finalize``
    stats: bool = False
    #: (C residual kind, knee) from the params, for losses whose per-element values the C kernel
    #: ``residual_stats`` also summarises (``--worst``, per-sample summaries)
    c_kind: Callable[[dict[str, Any]], tuple[int, float]] | None = None


# Input predicates for ``Fused.accepts`` that several families share.


def same_float_pair(plan: Any) -> bool:
    arrays = plan.arrays
    if set(arrays) != {"preds", "targets"}:
        return False
    p, t = arrays["preds"], arrays["targets"]
    return p.dtype in FLOATS and p.dtype == t.dtype and p.shape == t.shape


def index_targets(plan: Any) -> bool:
    """cross_entropy/nll with (N, C) logits and (N,) integer class indices, no weights or smoothing."""
    arrays, params = plan.arrays, plan.bound.params
    if set(arrays) != {"preds", "targets"} or params.get("weight") is not None \
            or params.get("label_smoothing", 0.0):
        return False
    p, t = arrays["preds"], arrays["targets"]
    ignore = params.get("ignore_index", -100)
    return p.dtype in FLOATS and p.ndim == 2 and t.ndim == 1 and t.shape[0] == p.shape[0] \
        and t.dtype.kind in "iu" and p.shape[1] >= 1 and not 0 <= ignore < p.shape[1]


def labelled_row_pairs(plan: Any) -> bool:
    """x1, x2 float rows (N, D) of one type and shape, with float labels (N,): the pair losses."""
    arrays = plan.arrays
    if set(arrays) != {"x1", "x2", "targets"}:
        return False
    a, b, y = arrays["x1"], arrays["x2"], arrays["targets"]
    return a.dtype in FLOATS and a.dtype == b.dtype and a.shape == b.shape and a.ndim == 2 \
        and y.dtype in FLOATS and y.shape == (a.shape[0],)


def same_float(plan: Any, names: tuple[str, ...]) -> bool:
    arrays = plan.arrays
    if set(arrays) != set(names):
        return False
    first = arrays[names[0]]
    return all(arrays[n].dtype in FLOATS and arrays[n].dtype == first.dtype and arrays[n].shape == first.shape
               for n in names)


def no_params(*names: str) -> Callable[[Any], bool]:
    return lambda plan: all(not plan.bound.params.get(n) for n in names)


def fused_for(plan: Any) -> Fused | None:
    """The loss's registered fused path for ``plan``, when it applies (plain inputs it accepts).

    A plan that keeps per-sample values takes a fused path only when they are wanted for its
    statistics alone (``plan.samples``), the C kernels can summarise them, and the inputs are 1-D
    and longer than what the statistics keep exactly.
    """
    fused = plan.spec.fused
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
    wanted = (plan.samples is not None and plan.n > plan.samples.EXACT_LIMIT) or plan.moments is not None
    return (fused is not None and fused.c_kind is not None and ckernels.kernels is not None and wanted
            and all(arr.ndim == 1 for arr in plan.arrays.values()))


#: ``run_task``'s K for a term that wants the moments of its per-sample values alone (no summary)
MOMENTS = -1


class _TaskMoments(Moments):
    """n, mean and Σ(v − mean)² of one fused window's per-sample values (the CLT of ``--ci``), from
    the C kernel ``residual_moments`` per sub-chunk, combined in order."""

    def run(self, kind: int, knee: float, a: np.ndarray, b: np.ndarray, offset: int) -> float | None:
        out = ckernels.kernels.residual_moments(kind, a, b, knee)
        if out is None:
            return None
        self.add(a.size, *out)
        return out[0]

    def result(self) -> tuple[int, float, float]:
        return self.n, self.mean, self.m2


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
    samples = [None if e[3] is None else _TaskMoments() if e[3] == MOMENTS else _TaskStats(e[3], e[4] + start)
               for e in entries]
    # --against --ci: the moments of d = f(preds - targets) - f(baseline - targets), view key e[5]
    pairs = [_TaskMoments() if len(e) > 5 and e[5] is not None else None for e in entries]
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite sum sends the window to the kernels
        out = _run_task(entries, views, rows, sub_rows, ws, totals, weights, stats, samples, pairs)
    if out is None:
        return None
    return [(*sums, None if ts is None else ts.result(), None if pm is None else pm.result())
            for sums, ts, pm in zip(out, samples, pairs)]


def _run_task(entries: list[tuple[Any, ...]], views: dict[Any, np.ndarray],
              rows: int, sub_rows: int, ws: Workspace, totals: list[float], weights: list[float],
              stats: list[dict[str, Any]], samples: list[_TaskStats | _TaskMoments | None],
              pairs: list[_TaskMoments | None]) -> list[tuple[float, float, dict[str, Any]]] | None:
    flat = {k: v.reshape(-1) for k, v in views.items()}
    per_row = {k: (v.size // rows if rows else 1) for k, v in views.items()}
    for i in range(0, rows, sub_rows):
        j = min(rows, i + sub_rows)
        arrays = {k: flat[k][i * per_row[k]:j * per_row[k]] for k in flat}
        blk = Block(ws, arrays, j - i)
        for k, (fused, keys, params, *rest) in enumerate(entries):
            task_stats = samples[k]
            if task_stats is not None:
                kind, knee = fused.c_kind(params)
                a, b = (arrays[keys[name]] for name in fused.inputs)
                total = task_stats.run(kind, knee, a, b, i)
                out = None if total is None else (total, a.size)
                if out is not None and pairs[k] is not None:
                    diff = ckernels.kernels.paired_moments(kind, a, arrays[rest[2]], b, knee)
                    if diff is None:
                        return None
                    pairs[k].add(a.size, *diff)
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
