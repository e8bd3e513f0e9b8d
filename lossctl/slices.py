"""Slices (``--by``, SPEC §9): one loss value per group key, kept in the state and merged with it.

A key column gives one key per sample (ints, strings, or floats with integral values; a missing key
(NaN, or an empty CSV field) is a slice of its own, key ``None``). Each chunk's rows are grouped once
(``np.unique(..., return_inverse=True)``), and each term's additive sums are routed per key:

* a loss whose kernel returns one value per sample (mse, cross_entropy, ...): the per-sample sums of
  ``values``, ``mean_values`` and ``weight`` are added per key with ``np.bincount`` (no loop over rows,
  and no kernel call per key);
* a loss with extra statistics (global Dice, batch losses): the kernel runs once per key on that key's
  rows of the chunk (a loop over keys, not rows).

The per-key sums live in :class:`TermSlices` (arrays indexed by key, compensated), so a state's size
grows with the number of keys only, and merging two states unions their keys.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.accumulators import CompensatedSum, TermAccumulator, _two_sum
from lossctl.arrays import LazyArray, MemoryArray
from lossctl.errors import InputError, option

#: the key of the slice keys among a plan's arrays (``--by``): read in chunks with the inputs, never
#: seen by a kernel (the engine pops it, as it does the weights)
KEYS = "by"

Key = int | float | str | None


def key_label(value: Any) -> Key:
    """A JSON-friendly key: a Python int for integral numbers, ``None`` for a missing key."""
    if isinstance(value, (np.floating, float)):
        if math.isnan(value):
            return None
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, (np.integer, int, np.bool_)):
        return int(value)
    text = str(value)
    return text if text != "" else None


def group(keys: np.ndarray) -> tuple[list[Key], np.ndarray]:
    """The keys of one chunk and, per row, the position of its key among them.

    Integer keys spanning a range at most 4× the chunk's length are grouped in O(n) without sorting:
    the labels are then the whole range ``lo..hi`` (some may have no rows: callers drop keys whose
    count is 0); anything else by sorting (``np.unique``), which gives only keys that occur.
    """
    flat = np.asarray(keys).reshape(len(keys))
    if flat.dtype.kind in "iu" and len(flat):
        lo, hi = int(flat.min()), int(flat.max())
        if hi - lo <= 4 * len(flat) + 1024:
            return list(range(lo, hi + 1)), (flat - lo if lo else flat)
    uniq, inverse = np.unique(flat, return_inverse=True)  # NaNs are one value (equal_nan)
    labels = [key_label(u) for u in uniq.tolist()]
    return labels, inverse.reshape(-1)


# ------------------------------------------------------------------------------ the accumulator


def _grow(arr: np.ndarray, size: int) -> np.ndarray:
    if len(arr) >= size:
        return arr
    return np.concatenate([arr, np.zeros((size - len(arr),) + arr.shape[1:], dtype=arr.dtype)])


@dataclass
class TermSlices:
    """One term's additive sums per key: ``keys[i]`` owns element ``i`` of every array.

    With ``--ci`` (jackknife/bootstrap) also each key's per-bucket / per-resample sums: ``groups``
    (keys, groups, 4), as :class:`lossctl.intervals.GroupSums` keeps them for the whole term, and
    ``group_stats`` for losses with extra sums; ``unavailable``: why a key's rows cannot be resampled."""

    keys: list[Key] = field(default_factory=list)
    total: CompensatedSum = field(default_factory=lambda: CompensatedSum(np.zeros(0), np.zeros(0)))
    numerator: CompensatedSum = field(default_factory=lambda: CompensatedSum(np.zeros(0), np.zeros(0)))
    denominator: CompensatedSum = field(default_factory=lambda: CompensatedSum(np.zeros(0), np.zeros(0)))
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    stats: dict[Key, dict[str, CompensatedSum]] = field(default_factory=dict)  # losses with extra sums only
    groups: CompensatedSum | None = None
    group_stats: dict[Key, dict[str, CompensatedSum]] = field(default_factory=dict)
    unavailable: str = ""

    def __post_init__(self) -> None:
        self._where = {k: i for i, k in enumerate(self.keys)}

    def positions(self, labels: Sequence[Key]) -> np.ndarray:
        """The array positions of ``labels``, adding the keys not seen yet."""
        out = np.empty(len(labels), dtype=np.intp)
        for j, key in enumerate(labels):
            i = self._where.get(key)
            if i is None:
                i = self._where[key] = len(self.keys)
                self.keys.append(key)
            out[j] = i
        size = len(self.keys)
        for cs in (self.total, self.numerator, self.denominator):
            cs.hi, cs.lo = _grow(cs.hi, size), _grow(cs.lo, size)
        self.samples = _grow(self.samples, size)
        if self.groups is not None:
            self.groups.hi, self.groups.lo = _grow(self.groups.hi, size), _grow(self.groups.lo, size)
        return out

    def add(self, labels: Sequence[Key], counts: np.ndarray, total: np.ndarray, numerator: np.ndarray,
            denominator: np.ndarray, stats: Sequence[dict[str, Any] | None] | None = None,
            lo: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, groups: np.ndarray | None = None,
            group_stats: Sequence[dict[str, Any] | None] | None = None, groups_lo: np.ndarray | None = None,
            unavailable: str = "") -> None:
        """Add per-key sums (arrays aligned with ``labels``); ``lo``/``groups_lo``: their compensation
        words (merge); ``groups``: per-key bucket/resample sums (len(labels), groups, 4)."""
        if groups is not None and self.groups is None:
            shape = (len(self.keys),) + groups.shape[1:]
            self.groups = CompensatedSum(np.zeros(shape), np.zeros(shape))
        pos = self.positions(labels)
        size = len(self.keys)
        for j, (cs, x) in enumerate(((self.total, total), (self.numerator, numerator),
                                     (self.denominator, denominator))):
            hi = np.zeros(size)
            hi[pos] = x
            with np.errstate(invalid="ignore", over="ignore"):
                cs.hi, err = _two_sum(cs.hi, hi)
                cs.lo = cs.lo + err
                if lo is not None:
                    extra = np.zeros(size)
                    extra[pos] = lo[j]
                    cs.lo = cs.lo + extra
        np.add.at(self.samples, pos, np.asarray(counts, dtype=np.int64))
        _add_stats(self.stats, labels, stats)
        if groups is not None:  # (positions are distinct: one row per label)
            g = self.groups
            with np.errstate(invalid="ignore", over="ignore"):
                g.hi[pos], err = _two_sum(g.hi[pos], groups)
                g.lo[pos] = g.lo[pos] + err + (0.0 if groups_lo is None else groups_lo)
        _add_stats(self.group_stats, labels, group_stats)
        self.unavailable = self.unavailable or unavailable

    def merge(self, other: TermSlices) -> TermSlices:
        """A new table with both tables' keys (the union) and their sums added."""
        out = TermSlices()
        for src in (self, other):
            g = src.groups
            out.add(src.keys, src.samples, src.total.hi, src.numerator.hi, src.denominator.hi,
                    [src.stats.get(k) for k in src.keys], lo=(src.total.lo, src.numerator.lo, src.denominator.lo),
                    groups=None if g is None else g.hi, groups_lo=None if g is None else g.lo,
                    group_stats=[src.group_stats.get(k) for k in src.keys], unavailable=src.unavailable)
        return out

    def index_of(self, key: Key) -> int:
        """The array position of ``key``, -1 if this table has not seen it."""
        return self._where.get(key, -1)

    def accumulator(self, key: Key) -> TermAccumulator | None:
        """The key's sums as a :class:`TermAccumulator` (whose ``value()`` finalises them)."""
        i = self._where.get(key)
        if i is None:
            return None
        parts = [CompensatedSum(cs.hi[i], cs.lo[i]) for cs in (self.total, self.numerator, self.denominator)]
        return TermAccumulator(*parts, stats=dict(self.stats.get(key, {})), samples=int(self.samples[i]))

    def group_sums(self, key: Key) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """The key's bucket/resample sums (groups, 4) and extra stats (groups, …); None if not kept."""
        i = self._where.get(key)
        if i is None or self.groups is None:
            return None
        sums = CompensatedSum(self.groups.hi[i], self.groups.lo[i]).value
        stats = {k: np.asarray(v.value, dtype=np.float64) for k, v in self.group_stats.get(key, {}).items()}
        return np.asarray(sums, dtype=np.float64), stats

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_where"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"groups": None, "group_stats": {}, "unavailable": "", **state})
        self.__post_init__()


def _add_stats(table: dict[Key, dict[str, CompensatedSum]], labels: Sequence[Key],
               stats: Sequence[dict[str, Any] | None] | None) -> None:
    for key, sums in zip(labels, stats or ()):
        if not sums:
            continue
        mine = table.setdefault(key, {})
        for name, val in sums.items():
            if isinstance(val, CompensatedSum):
                mine[name] = mine[name].merge(val) if name in mine else val
            elif name in mine:
                mine[name].add(val)
            else:
                mine[name] = CompensatedSum(val)


@dataclass
class KeyMoments:
    """Per key: the count, mean and Σ(x − mean)² of the finite per-sample values of an expression
    (the per-slice CLT interval), merged pairwise (Chan et al.), vectorised over the keys."""

    keys: list[Key] = field(default_factory=list)
    n: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self._where = {k: i for i, k in enumerate(self.keys)}

    def update(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add per-sample ``values`` whose slice keys are ``keys`` (non-finite values are left out)."""
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            keys, values = np.asarray(keys)[finite], values[finite]
        if not len(values):
            return
        labels, inverse = group(keys)
        n_b = np.bincount(inverse, minlength=len(labels))
        present = np.flatnonzero(n_b)
        means = np.bincount(inverse, weights=values, minlength=len(labels)) / np.maximum(n_b, 1)
        mean_b = means[present]
        d = values - means[inverse]
        m2_b = np.bincount(inverse, weights=d * d, minlength=len(labels))[present]
        self._combine([labels[j] for j in present], n_b[present], mean_b, m2_b)

    def _combine(self, labels: Sequence[Key], n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        pos = np.empty(len(labels), dtype=np.intp)
        for j, key in enumerate(labels):
            i = self._where.get(key)
            if i is None:
                i = self._where[key] = len(self.keys)
                self.keys.append(key)
            pos[j] = i
        size = len(self.keys)
        self.n, self.mean, self.m2 = _grow(self.n, size), _grow(self.mean, size), _grow(self.m2, size)
        n_a, mean_a = self.n[pos], self.mean[pos]
        n = n_a + n_b
        delta = mean_b - mean_a
        self.mean[pos] = mean_a + delta * (n_b / n)
        self.m2[pos] = self.m2[pos] + m2_b + delta * delta * (n_a * n_b / n)
        self.n[pos] = n

    def merge(self, other: KeyMoments) -> KeyMoments:
        out = KeyMoments(list(self.keys), self.n.copy(), self.mean.copy(), self.m2.copy())
        if other.keys:
            out._combine(other.keys, other.n, other.mean, other.m2)
        return out

    def get(self, key: Key) -> tuple[int, float, float]:
        """``(n, mean, m2)`` of the key's finite values (0, 0, 0 if none)."""
        i = self._where.get(key)
        return (0, 0.0, 0.0) if i is None else (int(self.n[i]), float(self.mean[i]), float(self.m2[i]))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_where"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()


# ------------------------------------------------------------------------------ routing one chunk


@dataclass
class Routed:
    """One chunk of one term split by key (computed in a worker thread, added in order)."""

    labels: list[Key]
    counts: np.ndarray
    total: np.ndarray
    numerator: np.ndarray
    denominator: np.ndarray
    stats: list[dict[str, Any] | None] | None = None
    groups: np.ndarray | None = None  # (keys, groups, 4): bucket/resample sums (--ci)
    group_stats: list[dict[str, Any] | None] | None = None
    unavailable: str = ""

    def occurring(self) -> Routed:
        """Only the keys with rows in the chunk (:func:`group` may name a whole range of integers)."""
        if self.counts.all():
            return self
        keep = np.flatnonzero(self.counts)
        return Routed([self.labels[j] for j in keep], self.counts[keep], self.total[keep], self.numerator[keep],
                      self.denominator[keep], None if self.stats is None else [self.stats[j] for j in keep],
                      None if self.groups is None else self.groups[keep],
                      None if self.group_stats is None else [self.group_stats[j] for j in keep], self.unavailable)


class Slicer:
    """Routes a term's chunks into its :class:`TermSlices` (the engine calls ``split`` then ``absorb``)."""

    def __init__(self, table: TermSlices) -> None:
        self.table = table

    def split(self, part: Any, keys: np.ndarray, weights: np.ndarray | None, run_kernel: Callable[[np.ndarray], Any],
              sums_of: Callable[[Any, np.ndarray | None], tuple[float, float, float, dict[str, Any] | None]],
              index: np.ndarray, groups_of: Callable[[np.ndarray, int], Any] | None = None) -> Routed:
        """Split one chunk's ``part`` (``keys``: one per row of the chunk, after the NaN policy).

        ``run_kernel(positions)`` evaluates the kernel on those rows of the chunk; ``sums_of(part,
        weights)`` is the engine's ``(total, numerator, denominator, stats)`` of a part; ``index``:
        the rows' global indices. ``groups_of(inverse, count)``: the per-key bucket/resample sums
        ``(sums, stats, why)`` of the chunk (``--ci``), given each row's key position.
        """
        labels, inverse = group(keys)
        count = len(labels)
        routed = self._split(part, keys, weights, run_kernel, sums_of, index, labels, inverse, count)
        if groups_of is not None:
            routed.groups, routed.group_stats, routed.unavailable = groups_of(inverse, count)
        return routed.occurring()

    def _split(self, part: Any, keys: np.ndarray, weights: np.ndarray | None, run_kernel: Callable[[np.ndarray], Any],
               sums_of: Callable[..., Any], index: np.ndarray, labels: list[Key], inverse: np.ndarray,
               count: int) -> Routed:
        counts = np.bincount(inverse, minlength=count)
        per_row = _per_row_sums(part, len(keys), weights)
        if per_row is not None:
            sums: dict[int, np.ndarray] = {}  # (numerator and denominator are often the total, or a count)

            def by_key(x: np.ndarray | float) -> np.ndarray:
                if not isinstance(x, np.ndarray):  # the same number for every row
                    return counts * float(x)
                if id(x) not in sums:
                    sums[id(x)] = np.bincount(inverse, weights=x, minlength=count)
                return sums[id(x)]

            # rows: the global rows of key j are index[inverse == j] (a row-keyed interval takes them here)
            return Routed(labels, counts, *(by_key(x) for x in per_row))
        order = np.argsort(inverse, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        sums = np.zeros((3, count))
        stats: list[dict[str, Any] | None] = []
        for j in range(count):
            if not counts[j]:
                stats.append(None)
                continue
            positions = order[bounds[j]:bounds[j + 1]]
            rows = index[positions]  # global row indices of this key's samples
            t, m, d, s = _key_sums(run_kernel, sums_of, positions, weights, rows)
            sums[:, j] = (t, m, d)
            stats.append(s)
        return Routed(labels, counts, sums[0], sums[1], sums[2], stats)

    def absorb(self, routed: Routed) -> None:
        self.table.add(routed.labels, routed.counts, routed.total, routed.numerator, routed.denominator,
                       routed.stats, groups=routed.groups, group_stats=routed.group_stats,
                       unavailable=routed.unavailable)


def _key_sums(run_kernel: Callable[[np.ndarray], Any], sums_of: Callable[..., Any], positions: np.ndarray,
              weights: np.ndarray | None, rows: np.ndarray) -> tuple[float, float, float, dict[str, Any] | None]:
    """One key's sums over its rows of the chunk (the kernel on those rows)."""
    # rows: the row-keyed statistics of the stats branch (LossState.update(rows=)) take ``rows`` here
    w = None if weights is None else weights[positions]
    return sums_of(run_kernel(positions), w)


def _per_row_sums(part: Any, n: int, weights: np.ndarray | None) -> tuple[np.ndarray | float, ...] | None:
    """Per-row ``(Σ values, Σ mean numerators, Σ mean weights)`` of a part whose statistics are all one
    value (or one block of values) per row, weighted per row; ``None`` when they are not. A sum that
    is the same for every row is a number."""
    if part.stats or part.values is None:
        return None
    values = np.asarray(part.values, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] != n:
        return None

    def rows(x: Any) -> np.ndarray | None:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or x.shape[0] != n:
            return None
        return x if x.ndim == 1 else x.reshape(n, -1).sum(axis=1)

    total = rows(values)
    numerator = total if part.mean_values is None else rows(part.mean_values)
    per_row = values.size // n
    denominator: np.ndarray | float | None
    if part.weight is None or (np.ndim(part.weight) == 0 and float(part.weight) == values.size):
        denominator = float(per_row)
    elif np.ndim(part.weight) == 0:
        return None
    else:
        denominator = rows(part.weight)
    if total is None or numerator is None or denominator is None:
        return None
    if weights is not None:
        weighted = total * weights
        return weighted, weighted if numerator is total else numerator * weights, denominator * weights
    return total, numerator, denominator


# ------------------------------------------------------------------------------ the key column


def open_keys(spec: str, n_hint: int | None = None) -> LazyArray:
    """``--by PATH[:COL]``: an .npy/.npz array or a CSV/TSV column of keys (numbers or text)."""
    from lossctl.readers import open_input, split_spec

    path, selector = split_spec(spec)
    lower = path.lower()
    if any(lower.endswith(ext) for ext in (".csv", ".tsv", ".csv.gz", ".csv.bz2", ".csv.xz", ".tsv.gz")):
        return _csv_keys(path, selector, spec)
    if lower.endswith(".npy") and selector is None:
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{option('by')} {spec}: cannot read it as .npy ({exc})") from None
        if data.dtype.kind in "US":
            return _keys_array(np.asarray(data), spec)
    return open_input(spec, KEYS)


def _csv_keys(path: str, selector: str | None, spec: str) -> LazyArray:
    import pandas as pd

    if not os.path.isfile(path):
        raise InputError(f"{option('by')} {spec}: no such file {path!r}")
    sep = "\t" if ".tsv" in path.lower() else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas' parser errors have no common base
        raise InputError(f"{option('by')} {spec}: cannot read the CSV ({exc})") from None
    columns = list(frame.columns)
    if selector is None:
        if len(columns) != 1:
            raise InputError(f"{option('by')} {spec}: the file has {len(columns)} columns ({', '.join(columns)}); "
                             f"pick one with {path}:COL")
        col = columns[0]
    elif selector in columns:
        col = selector
    elif selector.isdigit() and int(selector) < len(columns):
        col = columns[int(selector)]
    else:
        raise InputError(f"{option('by')} {spec}: no column {selector!r} (columns: {', '.join(columns)})")
    text = frame[col].str.strip()
    present = text != ""
    numbers = pd.to_numeric(text[present], errors="coerce")
    if len(numbers) and not numbers.isna().any():  # every present key is a number: numeric keys
        data = np.full(len(text), np.nan)
        data[present.to_numpy()] = numbers.to_numpy(dtype=np.float64)
        return _keys_array(data, spec)
    return _keys_array(text.to_numpy(dtype=str), spec)


def _keys_array(data: np.ndarray, spec: str) -> LazyArray:
    if data.size == 0:
        raise InputError(f"{option('by')} {spec}: no keys (the column is empty)")
    return MemoryArray(path=spec, shape=tuple(data.shape), dtype=data.dtype, name=KEYS, data=data)


def keys_input(keys: Any) -> LazyArray:
    """In-memory keys (``LossState.update(keys=...)``): a LazyArray as it is, else an array of numbers
    or strings (``None`` in a list of strings is the missing key)."""
    if isinstance(keys, LazyArray):
        return keys
    data = np.asarray(keys)
    if data.dtype.hasobject and all(k is None or isinstance(k, (int, float, np.number)) for k in data.reshape(-1)):
        data = np.array([np.nan if k is None else float(k) for k in data.reshape(-1)]).reshape(data.shape)
    elif data.dtype.hasobject:
        data = np.array(["" if k is None else str(k) for k in data.reshape(-1)]).reshape(data.shape)
    return _keys_array(data, "keys")


def keys_for(keys: LazyArray, n: int, loss: str, arrays: dict[str, LazyArray]) -> LazyArray:
    """``keys`` as one key per sample of a term, (N,); another length is an error naming both."""
    shape = tuple(keys.shape)
    while len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 1:
        raise InputError(f"{option('by')}: {keys.label} has shape {tuple(keys.shape)}; give one key per sample, "
                         f"shape (N,) (select a column with PATH:COL)")
    if shape[0] != n:
        shapes = ", ".join(f"{a.label} {tuple(a.shape)}" for a in arrays.values())
        raise InputError(f"{option('by')}: {keys.label} has {shape[0]} keys but {loss} has {n} samples ({shapes}); "
                         f"give one key per sample")
    if shape == tuple(keys.shape):
        return keys
    from lossctl.arrays import reshaped

    return reshaped(keys, shape)
