"""Mergeable accumulators: the numbers a :class:`~lossctl.state.LossState` is made of.

Every accumulator here has ``merge(other) -> new`` that is associative and commutative, so any split
of the samples into chunks, updated in any order and merged in any tree, gives the same result as one
pass over all of them (to float64 rounding, kept small by compensated sums):

* :class:`CompensatedSum`: a float64 sum (scalar or array) with a second word for its rounding error
  (Neumaier's TwoSum), so adding a million chunk sums in any order agrees to ~1e-16 relative.
* :class:`TermAccumulator`: one loss term's additive sufficient statistics (Σ values, Σ mean
  numerators, Σ weights, the loss's extra sums such as Dice's Σp·t, samples, omitted samples).
* :class:`SampleStats`: statistics of per-sample values in bounded memory: exact count, mean, std,
  min and max (Chan et al.'s parallel update), the exact K worst samples, and quantiles from a
  log-bucketed sketch with ≤ 1 % relative error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any

import numpy as np

from lossctl.result import Summary


def _two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """``s = fl(a + b)`` and the exact rounding error ``a + b - s`` (Knuth's TwoSum, branch-free)."""
    s = a + b
    bp = s - a
    err = (a - (s - bp)) + (b - bp)
    return s, err


class CompensatedSum:
    """A float64 sum with its running rounding error: ``value = hi + lo``.

    Works on scalars and on arrays of a fixed shape (per-class statistics). Non-finite terms make the
    error word meaningless (inf - inf), so the value is then ``hi`` alone.
    """

    __slots__ = ("hi", "lo")

    def __init__(self, hi: Any = 0.0, lo: Any = 0.0) -> None:
        self.hi = np.asarray(hi, dtype=np.float64)
        self.lo = np.asarray(lo, dtype=np.float64)

    def add(self, x: Any) -> None:
        with np.errstate(invalid="ignore", over="ignore"):
            self.hi, err = _two_sum(self.hi, np.asarray(x, dtype=np.float64))
            self.lo = self.lo + err

    def merge(self, other: CompensatedSum) -> CompensatedSum:
        with np.errstate(invalid="ignore", over="ignore"):
            hi, err = _two_sum(self.hi, other.hi)
            return CompensatedSum(hi, (self.lo + other.lo) + err)

    @property
    def value(self) -> Any:
        with np.errstate(invalid="ignore", over="ignore"):
            total = self.hi + self.lo
        return np.where(np.isfinite(self.hi), total, self.hi)[()]  # a NumPy scalar or array

    def __getstate__(self) -> tuple[Any, Any]:
        return self.hi, self.lo

    def __setstate__(self, state: tuple[Any, Any]) -> None:
        self.hi, self.lo = state


def _merge_sum_dicts(a: dict[str, CompensatedSum], b: dict[str, CompensatedSum]) -> dict[str, CompensatedSum]:
    out = dict(a)
    for key, val in b.items():
        out[key] = out[key].merge(val) if key in out else val
    return out


def add_to_sums(sums: dict[str, CompensatedSum], values: Mapping[str, Any] | None) -> None:
    """Add each named statistic of a chunk (scalars or arrays) to its compensated sum in ``sums``."""
    for key, val in (values or {}).items():
        acc = sums.get(key)
        if acc is None:
            sums[key] = CompensatedSum(val)
        else:
            acc.add(val)


@dataclass
class Moments:
    """n, mean and Σ(x − mean)² of a stream of values, merged pairwise (Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size:
            mean = float(np.add.reduce(x)) / x.size
            d = x - mean
            d *= d
            self._combine(x.size, mean, float(np.add.reduce(d)))

    def add(self, n_b: int, total: float, m2_b: float) -> None:
        """Add ``n_b`` values given by their sum and their Σ(x − their mean)²."""
        if n_b:
            self._combine(n_b, total / n_b, m2_b)

    def _combine(self, n_b: int, mean_b: float, m2_b: float) -> None:
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / n)
        self.m2 += m2_b + delta * delta * (self.n * n_b / n)
        self.n = n

    def merge(self, other: Moments) -> Moments:
        out = Moments(self.n, self.mean, self.m2)
        if other.n:
            out._combine(other.n, other.mean, other.m2)
        return out


@dataclass
class TermAccumulator:
    """One term's additive statistics; ``value()`` turns them into the reduced loss.

    * ``total``: Σ of torch's ``reduction='none'`` values (the ``sum`` reduction);
    * ``numerator`` / ``denominator``: the ``mean`` reduction is their ratio (CTC divides each sample
      by its target length; weighted cross-entropy divides by Σ w_y);
    * ``stats``: extra additive sums a loss's ``finalize`` turns into the value (global Dice);
    * ``samples``: samples seen (after the NaN policy); ``omitted``: samples the NaN policy dropped.
    """

    total: CompensatedSum = field(default_factory=CompensatedSum)
    numerator: CompensatedSum = field(default_factory=CompensatedSum)
    denominator: CompensatedSum = field(default_factory=CompensatedSum)
    stats: dict[str, CompensatedSum] = field(default_factory=dict)
    samples: int = 0
    omitted: int = 0

    def add_sums(self, total: float, numerator: float, weight: float, stats: dict[str, Any] | None = None) -> None:
        self.total.add(total)
        self.numerator.add(numerator)
        self.denominator.add(weight)
        add_to_sums(self.stats, stats)

    def merge(self, other: TermAccumulator) -> TermAccumulator:
        return TermAccumulator(self.total.merge(other.total), self.numerator.merge(other.numerator),
                               self.denominator.merge(other.denominator), _merge_sum_dicts(self.stats, other.stats),
                               self.samples + other.samples, self.omitted + other.omitted)

    def value(self, finalize: Any, reduction: str, params: dict[str, Any]) -> float:
        if finalize is not None:
            out = finalize({k: v.value for k, v in self.stats.items()}, reduction, params)
            if out is not None:
                return float(out)
        if reduction == "sum":
            return float(self.total.value)
        denominator = float(self.denominator.value)
        if denominator == 0:
            return math.nan
        return float(self.numerator.value) / denominator

    @property
    def empty(self) -> bool:
        """No value was added (every sample dropped by the NaN policy, or none given)."""
        return self.denominator.value == 0 and not self.stats


# --------------------------------------------------------------------------- per-sample statistics

#: Sketch buckets: the top 18 bits of a float64 (sign, exponent, 6 mantissa bits). A bucket spans
#: [x, x(1 + 2^-6)) at most, so its midpoint is within 2^-7 = 0.78 % of every value in it (normal
#: numbers; subnormals share buckets of absolute width < 1e-300). The key is monotone in the value.
_SHIFT = 46
_HALF = SKETCH_HALF = 1 << (63 - _SHIFT)  # keys: 2·_HALF buckets (the C kernels use the same)


def _sketch_keys(values: np.ndarray) -> np.ndarray:
    """Monotone bucket keys in [0, 2·_HALF): negatives below _HALF, non-negatives from _HALF up."""
    bits = np.abs(values).view(np.uint64) >> np.uint64(_SHIFT)
    keys = bits.astype(np.int64)
    neg = values < 0
    if neg.any():
        keys[neg] = -keys[neg] - 1
    keys += _HALF
    return keys


def _bucket_value(key: int) -> float:
    """The midpoint of bucket ``key`` (the value the sketch reports for the samples in it)."""
    k = key - _HALF
    sign = 1.0
    if k < 0:
        k, sign = -k - 1, -1.0
    lo = np.array([k << _SHIFT], dtype=np.uint64).view(np.float64)[0]
    hi = np.array([(k + 1) << _SHIFT], dtype=np.uint64).view(np.float64)[0]
    mid = float(lo) + (float(hi) - float(lo)) / 2 if math.isfinite(hi) else float(lo)
    return sign * mid


def _worst_order(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Positions sorted worst first: largest value first, NaN worst of all, ties by lower index."""
    rank = np.where(np.isnan(values), np.inf, values)
    nan_first = ~np.isnan(values)  # False (NaN) sorts before True
    return np.lexsort((index, -rank, nan_first))


@dataclass
class SampleStats:
    """Per-sample values summarised in bounded memory, mergeable.

    ``count`` counts every value; mean/std/min/max and the quantiles are over the finite values (as
    before: a NaN sample shows in ``worst``, not in the mean). ``worst`` keeps the K largest values
    with their sample indices (NaN counts as worst); ties go to the lower index, so the K kept do not
    depend on the chunking.
    """

    k: int = 10
    count: int = 0
    finite: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    worst_values: np.ndarray = field(default_factory=lambda: np.empty(0))
    worst_index: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    _hist: dict[int, int] | np.ndarray | None = None  # dense counts per bucket while updating
    #: the finite values themselves while there are at most EXACT_LIMIT: exact quantiles for small runs
    _exact: np.ndarray | None = field(default_factory=lambda: np.empty(0))

    EXACT_LIMIT = 4096

    def update(self, values: np.ndarray, index: np.ndarray) -> None:
        """Add one chunk of per-sample values (1-D float64) and their global sample indices."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if values.size == 0:
            return
        self.count += values.size
        self._keep_worst(values, index)
        finite = values[np.isfinite(values)] if not np.isfinite(np.add.reduce(values)) else values
        if finite.size:
            self._add_moments(finite)
            self._add_sketch(finite)
            self._keep_exact(finite)

    def _keep_exact(self, x: np.ndarray) -> None:
        if self._exact is not None:
            self._exact = np.concatenate([self._exact, x]) if self.finite <= self.EXACT_LIMIT else None

    def _add_moments(self, x: np.ndarray) -> None:
        n_b = x.size
        mean_b = float(np.add.reduce(x)) / n_b
        d = x - mean_b
        d *= d  # (not np.dot: BLAS threads would contend with the engine's workers)
        m2_b = float(np.add.reduce(d))
        self._combine(n_b, mean_b, m2_b, float(np.minimum.reduce(x)), float(np.maximum.reduce(x)))

    def _combine(self, n_b: int, mean_b: float, m2_b: float, min_b: float, max_b: float) -> None:
        """Chan, Golub & LeVeque's pairwise update of (n, mean, M2)."""
        n_a = self.finite
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta * delta * (n_a * n_b / n)
        self.finite = n
        self.min = min(self.min, min_b)
        self.max = max(self.max, max_b)

    def _keep_worst(self, values: np.ndarray, index: np.ndarray) -> None:
        if self.k <= 0:
            return
        if values.size > self.k:  # only values that can enter the top K go into the sort: all of
            # those at or above the K-th largest (ties included, so the lowest indices can win)
            rank = np.where(np.isnan(values), np.inf, values)
            kth = np.partition(rank, values.size - self.k)[values.size - self.k]
            above = np.flatnonzero(rank > kth)
            tied = np.flatnonzero(rank == kth)
            need = self.k - above.size
            if tied.size > need and math.isinf(kth):  # NaN and inf: NaN first, then by index
                tied = tied[_worst_order(values[tied], index[tied])[:need]]
            elif tied.size > need:  # equal values: the lowest indices
                tied = tied[np.argpartition(index[tied], need - 1)[:need]]
            cut = np.concatenate([above, tied])
            values, index = values[cut], index[cut]
        self._set_worst(np.concatenate([self.worst_values, values]), np.concatenate([self.worst_index, index]))

    def _set_worst(self, values: np.ndarray, index: np.ndarray) -> None:
        order = _worst_order(values, index)[: self.k]
        self.worst_values, self.worst_index = values[order], index[order]

    def _add_sketch(self, x: np.ndarray) -> None:
        keys = _sketch_keys(x)
        lo, hi = int(np.minimum.reduce(keys)), int(np.maximum.reduce(keys))
        counts = np.bincount(keys - lo, minlength=hi - lo + 1)
        hist = self._dense()
        hist[lo:hi + 1] += counts

    def _dense(self) -> np.ndarray:
        if not isinstance(self._hist, np.ndarray):
            dense = np.zeros(2 * _HALF, dtype=np.int64)
            for key, c in (self._hist or {}).items():
                dense[key] += c
            self._hist = dense
        return self._hist

    def _sparse(self) -> dict[int, int]:
        if isinstance(self._hist, np.ndarray):
            keys = np.flatnonzero(self._hist)
            return dict(zip(keys.tolist(), self._hist[keys].tolist()))
        return dict(self._hist or {})

    @classmethod
    def from_sketch(cls, k: int, count: int, mean: float, m2: float, lo: float, hi: float,
                    worst_values: np.ndarray, worst_index: np.ndarray, hist: np.ndarray) -> SampleStats:
        """A state of ``count`` finite values from their moments, K worst and dense bucket counts
        (what the C fast path computes; the values themselves are gone, so quantiles are approximate)."""
        out = cls(k=k, count=count, finite=count, mean=mean, m2=m2, min=lo, max=hi)
        out._set_worst(worst_values, worst_index)
        out._hist = hist
        out._exact = None
        return out

    def absorb(self, other: SampleStats) -> None:
        """Add ``other``'s samples to this state in place (``merge`` is two of these into an empty one)."""
        self.count += other.count
        if other.finite:
            self._combine(other.finite, other.mean, other.m2, other.min, other.max)
        self._set_worst(np.concatenate([self.worst_values, other.worst_values]),
                        np.concatenate([self.worst_index, other.worst_index]))
        if isinstance(self._hist, np.ndarray) or isinstance(other._hist, np.ndarray):
            hist = self._dense()
            if isinstance(other._hist, np.ndarray):
                hist += other._hist
            else:
                for key, c in (other._hist or {}).items():
                    hist[key] += c
        else:  # two sparse sketches (states merged after pickling) stay sparse
            merged = dict(self._hist or {})
            for key, c in (other._hist or {}).items():
                merged[key] = merged.get(key, 0) + c
            self._hist = merged
        if self._exact is not None and other._exact is not None and self.finite <= self.EXACT_LIMIT:
            self._exact = np.concatenate([self._exact, other._exact])
        else:
            self._exact = None

    def merge(self, other: SampleStats) -> SampleStats:
        out = SampleStats(k=max(self.k, other.k))
        out.absorb(self)
        out.absorb(other)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_hist"] = self._sparse()  # a few hundred buckets, not 2 MB of zeros
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def quantile(self, q: float) -> float:
        """The q-quantile of the finite values (linear between order statistics, as NumPy's default),
        each order statistic read from its bucket: ≤ 1 % relative error."""
        if self.finite == 0:
            return math.nan
        if self._exact is not None:
            return float(np.percentile(self._exact, 100 * q))
        hist = self._sparse()
        keys = sorted(hist)
        cum = np.cumsum([hist[k] for k in keys])
        rank = q * (self.finite - 1)
        lo_rank, frac = int(math.floor(rank)), rank - math.floor(rank)

        def at(r: int) -> float:
            key = keys[int(np.searchsorted(cum, r + 1))]
            return min(max(_bucket_value(key), self.min), self.max)

        lo = at(lo_rank)
        if frac == 0:
            return lo
        return lo + (at(min(lo_rank + 1, self.finite - 1)) - lo) * frac

    def binned(self, bins: int = 40) -> tuple[list[float], list[int], bool]:
        """The finite values' histogram on ``bins`` equal-width bins over [min, max] (NumPy's
        ``np.histogram`` convention: the last bin includes max): ``(edges, counts, approx)``.

        Exact (``approx`` False) while the values themselves are kept (≤ :data:`EXACT_LIMIT`);
        otherwise each sketch bucket's count goes to the bin of its midpoint (clamped to
        [min, max]), so a value lands in a neighbouring bin only when it lies within 2^-7 of its
        magnitude from an edge. Signed values work: the sketch keys negatives below zero's. All
        values equal: one bin [v − w, v + w], w = max(|v|, 1)/2. No finite value: no bins.
        """
        if self.finite == 0:
            return [], [], False
        lo, hi = self.min, self.max
        if hi > lo:
            edges = np.linspace(lo, hi, bins + 1)
        else:
            w = max(abs(lo), 1.0) / 2
            edges = np.array([lo - w, lo + w])
        if self._exact is not None:
            counts, _ = np.histogram(self._exact, bins=edges)
            return edges.tolist(), counts.astype(np.int64).tolist(), False
        hist = self._sparse()
        keys = sorted(hist)
        mids = np.clip(np.array([_bucket_value(k) for k in keys]), lo, hi)
        counts, _ = np.histogram(mids, bins=edges, weights=np.array([hist[k] for k in keys], dtype=np.float64))
        return edges.tolist(), np.rint(counts).astype(np.int64).tolist(), True

    def summary(self) -> Summary:
        if self.count == 0:
            nan = math.nan
            return Summary(0, nan, nan, nan, nan, nan, nan, [])
        nan = math.nan
        std = math.sqrt(self.m2 / self.finite) if self.finite else nan
        return Summary(
            count=self.count, mean=self.mean if self.finite else nan, std=std,
            min=self.min if self.finite else nan, p50=self.quantile(0.5), p95=self.quantile(0.95),
            max=self.max if self.finite else nan,
            worst=[(int(i), float(v)) for i, v in zip(self.worst_index, self.worst_values)],
            approx=self._exact is None,
            histogram=[(_bucket_value(k), c) for k, c in sorted(self._sparse().items())],
        )
