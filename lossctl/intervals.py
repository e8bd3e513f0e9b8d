"""Confidence intervals kept inside a :class:`~lossctl.state.LossState` (SPEC §9).

Three methods, all computed in the one pass over the samples and merged like every other state:

* ``clt``: for a loss that is the mean of per-sample values xᵢ, the normal interval
  x̄ ± z·s/√n with s² = Σ(xᵢ − x̄)²/(n − 1), from n, Σx and Σ(x − x̄)² (Chan et al.'s parallel
  moments, in :class:`~lossctl.accumulators.SampleStats`, or :class:`Moments` for paired differences).
* ``jackknife``: rows go to K = 20 buckets by a hash of their global row index; each bucket keeps
  a copy of the term's sufficient sums (:class:`GroupSums`). θ₍ₖ₎ is the value without bucket k,
  se² = (K−1)/K · Σ(θ₍ₖ₎ − θ̄)², interval θ ± t_{K−1}·se (the delete-a-group jackknife). Works for
  any value that is a function of additive sums (ratios of sums: Dice, weighted cross-entropy,
  ``--weights``, combinations of terms).
* ``bootstrap``: a Poisson(1) bootstrap. Row i gets weight Wᵣᵢ ~ Poisson(1) in resample r, drawn
  from a counter-based hash (SplitMix64) of (seed, row index, r), so the draws do not depend on
  chunking, engines or merge order. Each resample keeps its weighted sums; the interval is the
  percentile interval of the resample values, se their standard deviation.

Degenerate cases give an interval of ``None`` bounds with a ``note`` (never NaN): fewer than two
samples (CLT), fewer than two non-empty buckets (jackknife), fewer than two finite resamples.
Zero variance gives the point interval [value, value] with se 0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from lossctl.accumulators import CompensatedSum, TermAccumulator, add_to_sums
from lossctl.errors import UsageError, option
from lossctl.result import Interval

METHODS = ("auto", "clt", "jackknife", "bootstrap")
BUCKETS = 20
#: rows × resamples of Poisson draws made at once (bounds the bootstrap's temporary memory)
DRAW_BLOCK = 1 << 20


@dataclass(frozen=True)
class CIConfig:
    """What ``--ci`` asks for: the confidence level, the method, the bootstrap's seed and resamples."""

    level: float = 0.95
    method: str = "auto"
    seed: int = 0
    resamples: int = 1000

    def __post_init__(self) -> None:
        if not (isinstance(self.level, (int, float)) and 0.0 < float(self.level) < 1.0):
            raise UsageError(f"{option('confidence')} must be between 0 and 1 (e.g. 0.95), got {self.level!r}")
        if self.method not in METHODS:
            raise UsageError(f"{option('ci_method')} must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"{option('seed')} must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or not 2 <= self.resamples <= 100_000:
            raise UsageError(f"{option('resamples')} must be an integer in 2..100000, got {self.resamples!r}")


# ------------------------------------------------------------------------------------- quantiles


def normal_quantile(p: float) -> float:
    return NormalDist().inv_cdf(p)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz; Numerical Recipes)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbeta) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function: 1 − ½·I_{df/(df+t²)}(df/2, ½) for t ≥ 0."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@functools.lru_cache(maxsize=256)  # (one per slice otherwise: the bisection costs ~1 ms)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------- row hashing

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on an array of uint64 (wrapping arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def bucket_of(rows: np.ndarray) -> np.ndarray:
    """The jackknife bucket (0..19) of each global row index: a hash, so sorted data spreads evenly."""
    return (splitmix64(np.asarray(rows, dtype=np.int64).astype(np.uint64)) % np.uint64(BUCKETS)).astype(np.intp)


#: the Poisson(1) distribution function at 0, 1, 2, … (the draw is the number of entries ≤ u)
_POISSON_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])


def poisson_weights(rows: np.ndarray, seed: int, resamples: int) -> np.ndarray:
    """Poisson(1) weights, shape (resamples, len(rows)): entry (r, i) depends only on
    (seed, rows[i], r), through SplitMix64 of the row's key and the resample number."""
    key = splitmix64(np.asarray(rows, dtype=np.int64).astype(np.uint64) ^ splitmix64(np.array([seed], np.uint64)))
    r = (np.arange(1, resamples + 1, dtype=np.uint64) * _GOLDEN)[:, None]
    u = (splitmix64(key[None, :] + r) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return np.searchsorted(_POISSON_CDF, u, side="right").astype(np.float64)


def clt_interval(n: int, mean: float, m2: float, level: float, scale: float = 1.0, center: float | None = None,
                 ) -> Interval:
    """x̄ ± z·s/√n (times ``scale``: a sum is n·D times a mean), centred on ``center`` (default x̄·scale)."""
    center = mean * scale if center is None else center
    if n < 2:
        return Interval(None, None, level, "clt", None, f"{n} sample{'s' if n != 1 else ''}: no interval "
                                                       f"(a confidence interval needs at least 2)")
    if not (math.isfinite(center) and math.isfinite(m2)):
        return Interval(None, None, level, "clt", None, "the value is not finite: no interval")
    se = abs(scale) * math.sqrt(max(m2, 0.0) / (n - 1) / n)
    z = normal_quantile(0.5 + level / 2)
    return Interval(center - z * se, center + z * se, level, "clt", se)


def jackknife_interval(value: float, loo: np.ndarray, level: float) -> Interval:
    """θ ± t_{K−1}·se with se² = (K−1)/K·Σ(θ₍ₖ₎ − θ̄)² over the K leave-one-bucket-out values."""
    loo = np.asarray(loo, dtype=np.float64)
    k = loo.size
    if k < 2:
        return Interval(None, None, level, "jackknife", None,
                        f"{k} non-empty bucket{'s' if k != 1 else ''} of {BUCKETS}: no interval (the jackknife "
                        f"needs rows in at least 2)")
    if not (math.isfinite(value) and np.isfinite(loo).all()):
        return Interval(None, None, level, "jackknife", None, "a leave-one-bucket-out value is not finite: no interval")
    se = math.sqrt((k - 1) / k * float(np.sum((loo - loo.mean()) ** 2)))
    t = t_quantile(0.5 + level / 2, k - 1)
    note = f"{k} non-empty buckets of {BUCKETS}" if k < BUCKETS else ""
    return Interval(value - t * se, value + t * se, level, "jackknife", se, note)


def bootstrap_interval(values: np.ndarray, level: float) -> Interval:
    """The percentile interval of the resample values; se is their standard deviation."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return Interval(None, None, level, "bootstrap", None, "fewer than 2 finite resample values: no interval")
    lo, hi = np.quantile(finite, [0.5 - level / 2, 0.5 + level / 2])
    note = f"{values.size - finite.size} resamples without a finite value left out" if finite.size < values.size else ""
    return Interval(float(lo), float(hi), level, "bootstrap", float(np.std(finite, ddof=1)), note)


# --------------------------------------------------------------------------------- group sums


def part_sums(part: Any, weights: np.ndarray | None) -> tuple[float, float, float]:
    """``(Σ values, Σ mean numerators, Σ mean denominators)`` of one kernel output, as
    :meth:`lossctl.engine.TermPlan.add` adds them (weighted per sample with ``weights``)."""
    rows = row_sums(part, weights, None if weights is None else len(weights))
    if rows is not None:
        t, m, d = rows.sum(axis=0)
        return float(t), float(m), float(d)
    values = part.values
    total = float(np.sum(values, dtype=np.float64)) if values is not None else 0.0
    numerator = total if part.mean_values is None else float(np.sum(part.mean_values, dtype=np.float64))
    if part.weight is None:
        weight = 0.0 if values is None else float(np.size(values))
    else:
        weight = float(np.sum(part.weight, dtype=np.float64))
    return total, numerator, weight


def row_sums(part: Any, weights: np.ndarray | None, n: int | None) -> np.ndarray | None:
    """Each sample's share of the term's three sums, shape (n, 3): Σ over its values, Σ over its mean
    numerators, its mean denominator (its element count, its share of ``Part.weight``), times its
    weight. None when the values are not one (or one row) per sample."""
    values = part.values
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    n = len(values) if n is None and values.ndim else n
    if values.ndim == 0 or n is None or values.shape[0] != n or n == 0:
        return None

    def per_row(x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x.reshape(n, -1).sum(axis=1) if x.ndim > 1 else x

    out = np.empty((n, 3))
    out[:, 0] = per_row(values)
    out[:, 1] = out[:, 0] if part.mean_values is None else per_row(part.mean_values)
    if part.weight is None:
        out[:, 2] = values.size // n
    elif np.ndim(part.weight) == 0:  # a chunk's count: spread evenly over its samples
        out[:, 2] = float(part.weight) / n
    else:
        w = np.asarray(part.weight, dtype=np.float64)
        if w.ndim == 0 or w.shape[0] != n:
            return None
        out[:, 2] = per_row(w)
    if weights is not None:
        out *= np.asarray(weights, dtype=np.float64)[:, None]
    return out


@dataclass
class GroupSums:
    """One term's sums per group: per jackknife bucket (``kind="jackknife"``, 20 groups) or per
    bootstrap resample (``kind="bootstrap"``). ``sums`` is (groups, 3): Σ values, Σ mean numerators,
    Σ mean denominators; ``stats`` the loss's extra sums (global Dice) with a leading groups axis.
    ``unavailable``: why this term has no per-row breakdown (then it has no interval)."""

    kind: str
    groups: int
    seed: int = 0
    sums: CompensatedSum = field(default_factory=CompensatedSum)
    stats: dict[str, CompensatedSum] = field(default_factory=dict)
    unavailable: str = ""
    #: the term's value is not a plain mean of per-sample values (a weight, a per-sample divisor,
    #: statistics summed over samples, or --weights): ``auto`` takes the jackknife
    ratio: bool = False

    def __post_init__(self) -> None:
        if self.sums.hi.shape != (self.groups, 4):
            self.sums = CompensatedSum(np.zeros((self.groups, 4)))

    def weights_of(self, rows: np.ndarray) -> np.ndarray:
        """(groups, len(rows)): bucket indicators (jackknife) or Poisson(1) draws (bootstrap)."""
        if self.kind == "jackknife":
            return (bucket_of(rows)[None, :] == np.arange(BUCKETS)[:, None]).astype(np.float64)
        return poisson_weights(rows, self.seed, self.groups)

    def add_rows(self, per_row: np.ndarray, rows: np.ndarray) -> None:
        """Add samples' sums (n, 3) at global row indices ``rows`` (n,)."""
        per_row = np.concatenate([per_row, np.ones((len(per_row), 1))], axis=1)
        if self.kind == "jackknife":
            b = bucket_of(rows)
            self.sums.add(np.stack([np.bincount(b, weights=per_row[:, j], minlength=BUCKETS) for j in range(4)], 1))
            return
        step = max(1, DRAW_BLOCK // self.groups)
        for s in range(0, len(rows), step):
            w = poisson_weights(rows[s:s + step], self.seed, self.groups)
            self.sums.add(w @ per_row[s:s + step])

    def add_groups(self, sums: np.ndarray, stats: dict[str, np.ndarray] | None) -> None:
        """Add per-group sums (groups, 4) and per-group extra stats (groups, …) of one chunk."""
        self.sums.add(sums)
        add_to_sums(self.stats, stats)

    def merge(self, other: GroupSums) -> GroupSums:
        stats = dict(self.stats)
        for key, val in other.stats.items():
            stats[key] = stats[key].merge(val) if key in stats else val
        return GroupSums(self.kind, self.groups, self.seed, self.sums.merge(other.sums), stats,
                         self.unavailable or other.unavailable, self.ratio or other.ratio)

    def group_accumulators(self) -> dict[int, TermAccumulator]:
        """The term's sums for each jackknife replicate (all rows but bucket k; empty buckets
        skipped) or each bootstrap resample, as accumulators whose ``value`` is the term's value."""
        sums = np.asarray(self.sums.value, dtype=np.float64)
        stats = {k: np.asarray(v.value, dtype=np.float64) for k, v in self.stats.items()}
        if self.kind == "jackknife":
            full, full_stats = sums.sum(axis=0), {k: v.sum(axis=0) for k, v in stats.items()}
            keep = [g for g in range(self.groups) if sums[g, 3] > 0]
            return {g: _accumulator(full - sums[g], {k: full_stats[k] - v[g] for k, v in stats.items()}) for g in keep}
        return {g: _accumulator(sums[g], {k: v[g] for k, v in stats.items()}) for g in range(self.groups)}


def _accumulator(sums: np.ndarray, stats: dict[str, np.ndarray]) -> TermAccumulator:
    acc = TermAccumulator(CompensatedSum(sums[0]), CompensatedSum(sums[1]), CompensatedSum(sums[2]),
                          {k: CompensatedSum(v) for k, v in stats.items()})
    return acc
