"""Chunked evaluation: stream every input once, chunk by chunk, and add up each loss's statistics.

Each term's kernel turns one chunk of samples into a :class:`~lossctl.registry.Part` (additive
float64 sums, plus torch's ``reduction='none'`` values). Sums over chunks are then finalised into
``mean``/``sum`` values, so chunked evaluation equals one-shot evaluation up to float64 rounding,
and resident memory is a few chunks whatever the input size.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl import fast
from lossctl import workers as workers_module
from lossctl.arrays import LazyArray, first_bad
from lossctl.errors import DomainError, InputError, UsageError, blamed_on_plugin, option
from lossctl.expr import BoundTerm
from lossctl.registry import LossSpec, Part
from lossctl.accumulators import SampleStats, TermAccumulator
from lossctl.binding import WEIGHTS
from lossctl.intervals import BUCKETS, DRAW_BLOCK, GroupSums, part_sums, poisson_weights, bucket_of, row_sums
from lossctl.slices import KEYS

DEFAULT_CHUNK_ELEMENTS = 1 << 16
NAN_POLICIES = ("raise", "omit", "propagate")
def weighted_sums(spec: LossSpec, part: Part, w: np.ndarray) -> tuple[float, float, float]:
    """``(Σ wᵢ·values, Σ wᵢ·mean numerators, Σ wᵢ·mean denominators)`` of one chunk: every value of
    sample i (all its elements) counts wᵢ times, in the sum and in both sums of the mean."""
    values = np.asarray(part.values, dtype=np.float64)
    n = len(w)
    if values.ndim == 0 or values.shape[0] != n:
        raise UsageError(f"{spec.name}: its values are not one per sample ({values.shape} for {n} samples), so "
                         f"{option('weights')} cannot weight them; evaluate it without weights")

    def by_sample(x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return w.reshape((n,) + (1,) * (x.ndim - 1)) * x if x.ndim else x

    total = float(np.sum(by_sample(values)))
    numerator = total if part.mean_values is None else float(np.sum(by_sample(part.mean_values)))
    if part.weight is None:
        denominator = float(np.sum(w)) * (values.size // max(n, 1))
    elif np.ndim(part.weight) == 0:  # a chunk's count: spread evenly over its samples
        denominator = float(part.weight) * float(np.sum(w)) / max(n, 1)
    else:
        denominator = float(np.sum(by_sample(part.weight)))
    return total, numerator, denominator


@dataclass
class TermPlan:
    """One term of one expression bound to its inputs; its sums go into ``acc``."""

    bound: BoundTerm
    arrays: dict[str, LazyArray]
    n: int
    reduction: str
    acc: TermAccumulator = field(default_factory=TermAccumulator)
    keep_values: bool = False
    observe: Any = None  # called with each chunk {input: array} after the NaN policy (lossctl.pitfalls)
    values: list[np.ndarray] = field(default_factory=list)
    indices: list[np.ndarray] = field(default_factory=list)
    start: int = 0  # global index of the plan's first sample (per-sample indices)
    #: where the fused path may put per-sample statistics directly (the values are wanted for nothing else)
    samples: SampleStats | None = None
    #: or only their moments (the CLT of --ci without a summary: lossctl.accumulators.Moments)
    moments: Any = None
    #: --against --ci: (the baseline's preds, the Moments of the per-row differences) for a fused pass
    #: that forms d = f(preds - targets) - f(baseline - targets) beside the sum (lossctl.state.PairedState)
    pair: Any = None
    #: per-bucket / per-resample sums for confidence intervals (lossctl.intervals); the plan then
    #: takes the kernels, which give per-sample sums
    groups: GroupSums | None = None
    #: the global row index of each of the plan's samples (non-contiguous rows: slices); None: start + i
    row_ids: np.ndarray | None = None

    def global_rows(self, index: np.ndarray) -> np.ndarray:
        """Global row indices of the plan's samples at local positions ``index``."""
        return self.row_ids[index] if self.row_ids is not None else index + self.start
    #: routes each chunk's sums by slice key (``--by``: a :class:`lossctl.slices.Slicer`)
    slicer: Any = None
    #: the slice keys of the kept per-sample values (aligned with ``indices``: per-slice CLT moments)
    keys: list[np.ndarray] = field(default_factory=list)

    @property
    def spec(self) -> LossSpec:
        return self.bound.spec

    def add(self, part: Part, weights: np.ndarray | None = None) -> None:
        self.acc.add_sums(*self.sums(part, weights))

    def sums(self, part: Part, weights: np.ndarray | None = None) -> tuple[float, float, float, Any]:
        """``(Σ values, Σ mean numerators, Σ mean weights, extra statistics)`` of one part."""
        if weights is not None:  # --weights: every sum weighted per sample
            return (*weighted_sums(self.spec, part, weights), part.stats)
        values = part.values
        chunk_sum = float(np.sum(values, dtype=np.float64)) if values is not None else 0.0
        numerator = chunk_sum if part.mean_values is None else float(np.sum(part.mean_values, dtype=np.float64))
        if part.weight is None:
            weight = 0 if values is None else np.size(values)
        else:
            weight = float(np.sum(part.weight, dtype=np.float64))
        return chunk_sum, numerator, weight, part.stats


def _as_part(out: Any) -> Part:
    return out if isinstance(out, Part) else Part(values=out)


def _prepare_chunk(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return arr


def _has_nan(arr: np.ndarray) -> bool:
    if arr.dtype.kind != "f" or arr.size == 0:
        return False
    with np.errstate(all="ignore"):
        total = arr.sum()
    return bool(np.isnan(total)) and bool(np.isnan(arr).any())


def _sample_nan_mask(arr: np.ndarray, axis: int) -> np.ndarray:
    nan = np.isnan(arr)
    other = tuple(i for i in range(arr.ndim) if i != axis)
    return nan.any(axis=other) if other else nan


def _count_nans(arr: LazyArray, rows: int) -> int:
    count = 0
    for s in range(0, arr.shape[0], rows):
        chunk = arr.read(s, s + rows)
        if chunk.dtype.kind == "f":
            count += int(np.isnan(chunk).sum())
    return count


def _raise_nan(arr: LazyArray, first_index: int, rows: int) -> None:
    count = _count_nans(arr, rows)
    raise InputError(f"{arr.label} contains {count} NaN value{'s' if count != 1 else ''} "
                     f"(first at sample {first_index}); clean the data, or pass {option('nan_policy', 'omit')} "
                     f"to drop them or {option('nan_policy', 'propagate')} to keep them")


def run(plans: Sequence[TermPlan], nan_policy: str = "raise", chunk_rows: int | None = None,
        on_progress: Any = None, *, threads: int | None = None, span: tuple[int, int] | None = None) -> None:
    """Stream over the samples of every plan (grouped by sample count), accumulating each term.

    Work is split into tasks of consecutive chunks that run on ``threads`` worker threads (NumPy
    releases the GIL in its kernels); results are added up in sample order, so the value does not
    depend on the thread count. Losses registered with a fused fast path (:mod:`lossctl.fast`) are
    summed straight from zero-copy windows of the inputs; everything else goes through the kernels.
    ``on_progress(samples)`` is called after each chunk of each pass, in order, once that chunk's
    per-sample values (kept by plans with ``keep_values``) are in the plans.

    ``span=(lo, hi)``: only samples ``lo:hi`` of every plan (one partition of a distributed run,
    :mod:`lossctl.dask_engine`); indices and error messages stay those of the whole input.
    """
    if nan_policy not in NAN_POLICIES:
        raise UsageError(f"{option('nan_policy')} must be one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}")
    groups: dict[int, list[TermPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.n, []).append(plan)
    workers = workers_module.worker_count(threads)
    passes = []
    for n, group in groups.items():
        fused = {id(p): f for p in group  # (the fused sums are unweighted: weighted plans take the kernels)
                 if FAST_PATHS and WEIGHTS not in p.arrays and p.groups is None and p.row_ids is None
                 and KEYS not in p.arrays
                 and (f := fast.fused_for(p)) is not None}
        fast_plans = [p for p in group if id(p) in fused]
        slow_plans = [p for p in group if id(p) not in fused]
        rows = chunk_rows or _default_rows(group, n)
        if not chunk_rows and any(KEYS in p.arrays for p in group):  # fewer, larger chunks to route by key
            rows = max(rows, KEYED_CHUNK_ELEMENTS // _row_elements(group))
        if not chunk_rows and any(a.sequential for p in group for a in p.arrays.values()):
            rows = max(rows, SEQUENTIAL_CHUNK_ELEMENTS // _row_elements(group))  # fewer, larger hand-offs
        lo, hi = (0, n) if span is None else (max(0, span[0]), min(n, span[1]))
        if fast_plans:
            passes.append(("fast", (lo, hi), fast_plans, fused, rows))
        if slow_plans:
            passes.append(("slow", (lo, hi), slow_plans, fused, rows))
    tracker = _progress_tracker(passes)
    try:
        for kind, (lo, hi), group, fused, rows in passes:
            if kind == "fast":
                _run_fast(group, fused, hi, rows, nan_policy, on_progress, tracker, workers, lo)
            else:
                _run_slow(group, hi, rows, nan_policy, on_progress, tracker, workers, lo)
    finally:
        if tracker is not None:
            tracker.close()


FAST_PATHS = True  # tests switch this off to compare the fused sums with the kernels
KEYED_CHUNK_ELEMENTS = 1 << 19  # chunk size with slice keys (--by): the routing costs per chunk and per key
SEQUENTIAL_CHUNK_ELEMENTS = 1 << 17  # chunk size when an input is streamed (CSV): half a parsed chunk
TASK_ELEMENTS = 1 << 22  # elements of the widest input per worker task (16 MB of float32)


def _row_elements(group: Sequence[TermPlan]) -> int:
    per_row = 1
    for plan in group:
        for name, arr in plan.arrays.items():
            size = int(np.prod(arr.shape, dtype=np.int64))
            per_row = max(per_row, size // max(1, arr.shape[plan.spec.sample_axis(name)]))
    return per_row


def _default_rows(group: Sequence[TermPlan], n: int) -> int:
    # A kernel may ask for bigger chunks (``kernel.chunk_elements``): CTC loops over time steps,
    # so it needs many sequences per chunk to amortise each step.
    budget = max(getattr(p.spec.kernel, "chunk_elements", DEFAULT_CHUNK_ELEMENTS) for p in group)
    return max(1, budget // _row_elements(group))


def _tasks(group: Sequence[TermPlan], n: int, rows: int, workers: int = 1, lo: int = 0) -> list[tuple[int, int]]:
    """Consecutive ranges of whole chunks of samples ``lo:n``: at most TASK_ELEMENTS elements each,
    and (for mid-sized inputs) at least 4 tasks per worker, so every core gets work. Ranges also end
    where an input's storage units end (a Parquet row group, a shard: :func:`_cuts`), so a task
    decodes whole units."""
    chunk_elements = max(1, rows * _row_elements(group))
    total_chunks = -(-(n - lo) // rows)
    per_task = max(1, TASK_ELEMENTS // chunk_elements)
    if total_chunks > per_task:  # big enough to share: at least 4 tasks per worker
        per_task = max(1, min(per_task, -(-total_chunks // (4 * max(1, workers)))))
    per_task *= rows
    edges = [lo]
    for cut in _cuts(group, n, rows, lo):  # units much smaller than a task (tiny row groups): not every one
        if cut - edges[-1] >= per_task // 8:
            edges.append(cut)
    edges.append(n)
    return [(s, min(b, s + per_task)) for a, b in zip(edges, edges[1:]) for s in range(a, b, per_task)]


def _cuts(group: Sequence[TermPlan], n: int, rows: int, lo: int = 0) -> list[int]:
    """Where the inputs' storage units end (``LazyArray.boundaries()``: row groups, shards). A task
    then reads whole units without copying; the fused sums' sub-chunks start at each task's start,
    so the value depends on the input's layout only through the last bits of its compensated sums
    (a Parquet file equals the same array in an ``.npy`` to ~1e-16 relative), and still not on the
    thread count or the chunk size."""
    cuts: set[int] = set()
    for plan in group:
        for name, arr in plan.arrays.items():
            bounds = getattr(arr, "boundaries", None)
            if bounds is not None and plan.spec.sample_axis(name) == 0 and arr.shape[:1] == (n,):
                cuts.update(bounds())
    return sorted(c for c in cuts if lo < c < n)


def _ordered_map(fn: Any, items: Any, workers: int, count: int) -> Iterator[Any]:
    """``map(fn, items)`` on ``workers`` threads, results in order, at most 2×workers in flight.

    ``items`` may be a generator: it is advanced in the calling thread only as tasks are submitted
    (that is where sequential inputs such as a streamed CSV are read, in order).
    """
    if workers <= 1 or count <= 1:
        for item in items:
            yield fn(item)
        return
    pool = workers_module.pool("lossctl", workers)
    pending: deque[Any] = deque()
    try:
        for item in items:
            # each task runs in a copy of the caller's context (diagnostics.warn collects there)
            pending.append(pool.submit(contextvars.copy_context().run, fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error or an interrupt: drop what has not started, let the rest finish
        for fut in pending:
            fut.cancel()
        if pending:
            from concurrent.futures import wait

            wait(pending)


@dataclass
class _ChunkResult:
    part: Part
    index: np.ndarray
    omitted: int
    weights: np.ndarray | None = None  # the chunk's sample weights (--weights)
    groups: Any = None  # ("rows", per-row sums, rows) | ("groups", sums, stats) | ("unavailable", why)
    routed: Any = None  # the chunk's sums by slice key (--by)
    keys: np.ndarray | None = None  # the kept rows' slice keys (--by)


def _run_slow(group: Sequence[TermPlan], n: int, rows: int, nan_policy: str, on_progress: Any,
              tracker: Any, workers: int, lo: int = 0) -> None:
    locks = {id(p): threading.Lock() for p in group}
    sequential = {}
    for plan in group:
        for name, arr in plan.arrays.items():
            if arr.sequential:
                axis = plan.spec.sample_axis(name)
                sequential[(arr.identity(), axis, arr.shape)] = (arr, axis)
    # prefetched (sequential) inputs: one chunk per task, so what is read ahead stays small
    tasks = [(s, min(n, s + rows)) for s in range(lo, n, rows)] if sequential else _tasks(group, n, rows, workers, lo)

    def prefetched() -> Iterator[tuple[int, int, dict[int, dict[Any, np.ndarray]]]]:
        for start, stop in tasks:
            caches: dict[int, dict[Any, np.ndarray]] = {}
            if sequential:  # read here, in order, in this thread
                for s in range(start, stop, rows):
                    e = min(stop, s + rows)
                    caches[s] = {key: _prepare_chunk(arr.read(s, e, axis)) for key, (arr, axis) in sequential.items()}
            yield start, stop, caches

    def work(task: tuple[int, int, dict[int, dict[Any, np.ndarray]]]) -> Any:
        return _slow_range(group, task[0], task[1], rows, nan_policy, locks, task[2])

    for done in _ordered_map(work, prefetched(), workers, len(tasks)):
        for start, stop, results in done:
            for plan, res in zip(group, results):
                _apply_chunk(plan, res)
            _advance(on_progress, tracker, stop - start)


def _slow_range(group: Sequence[TermPlan], start: int, stop: int, rows: int, nan_policy: str,
                locks: dict[int, Any], caches: dict[int, dict[Any, np.ndarray]] | None = None,
                ) -> list[tuple[int, int, list[_ChunkResult | None]]]:
    out = []
    for s in range(start, stop, rows):
        e = min(stop, s + rows)
        cache: dict[Any, np.ndarray] = dict(caches.get(s, {})) if caches else {}
        out.append((s, e, [_compute_chunk(plan, s, e, cache, nan_policy, rows, locks.get(id(plan)))
                           for plan in group]))
    return out


def _run_fast(group: Sequence[TermPlan], fused: dict[int, Any], n: int, rows: int,
              nan_policy: str, on_progress: Any, tracker: Any, workers: int, lo: int = 0) -> None:
    """Fused sums over zero-copy windows; a window the fast path cannot take goes to the kernels."""
    locks = {id(p): threading.Lock() for p in group}
    keys: dict[Any, Any] = {}  # identity -> the LazyArray to window
    entries = []
    for plan in group:
        names = {}
        for name, arr in plan.arrays.items():
            ident = (arr.identity(), arr.shape)
            keys.setdefault(ident, arr)
            names[name] = ident
        # per-sample statistics in the fused pass: a summary with K worst, or the moments alone
        worst_k = None if not plan.keep_values else (plan.samples.k if plan.samples is not None else fast.MOMENTS)
        pair_key = None
        if plan.pair is not None:
            pair_key = (plan.pair[0].identity(), plan.pair[0].shape)
            keys.setdefault(pair_key, plan.pair[0])
        entries.append((fused[id(plan)], names, dict(plan.bound.params), worst_k, plan.start, pair_key))
    # sub-chunks on a fixed grid of samples (whatever --chunk-size says): the sums, and so the value,
    # do not depend on the chunk size or the thread count
    sub_rows = max(1, fast.SUB_ELEMENTS // _row_elements(group))

    def work(task: tuple[int, int]) -> Any:
        start, stop = task
        views: dict[Any, np.ndarray] = {}
        releases = []
        try:
            for ident, arr in keys.items():
                views[ident], release = arr.view(start, stop)
                releases.append(release)
            sums = fast.run_task(entries, views, stop - start, sub_rows, start)
            if sums is not None:
                for plan, (_, names, *_) in zip(group, entries):
                    if plan.observe is not None:
                        with locks[id(plan)]:
                            plan.observe({name: views[ident] for name, ident in names.items()})
        finally:
            views.clear()
            for release in releases:
                release()
        if sums is not None:
            return ("sums", start, stop, sums)
        return ("chunks", start, stop, _slow_range(group, start, stop, rows, nan_policy, locks))

    tasks = _tasks(group, n, sub_rows, workers, lo)
    for kind, start, stop, result in _ordered_map(work, tasks, workers, len(tasks)):
        if kind == "sums":
            for plan, (total, weight, stats, samples, diffs) in zip(group, result):
                plan.acc.add_sums(total, total, weight, stats)
                plan.acc.samples += stop - start
                if samples is not None and plan.samples is not None:
                    plan.samples.absorb(samples)
                elif samples is not None and samples[0]:  # (n, mean, m2) of the window's values
                    plan.moments._combine(*samples)
                if diffs is not None and diffs[0]:
                    plan.pair[1]._combine(*diffs)
        else:
            for _, _, results in result:
                for plan, res in zip(group, results):
                    _apply_chunk(plan, res)
        _advance(on_progress, tracker, stop - start)


def _advance(on_progress: Any, tracker: Any, samples: int) -> None:
    """Report ``samples`` more samples done, in order, to the caller and the progress bar."""
    if on_progress is not None:
        on_progress(samples)
    if tracker is not None:
        tracker.advance(samples)


def _progress_tracker(passes: Sequence[Any]) -> Any:
    """A progress bar for long evaluations (only when one is asked for: see lossctl.progress)."""
    from lossctl import progress

    return progress.tracker_for([(kind, hi - lo, group) for kind, (lo, hi), group, _, _ in passes])


def _compute_chunk(plan: TermPlan, start: int, stop: int, cache: dict[Any, np.ndarray], nan_policy: str,
                   rows: int, lock: Any = None) -> _ChunkResult | None:
    """One chunk of one term: read, apply the NaN policy, run the kernel. Touches no plan totals."""
    spec = plan.spec
    chunk: dict[str, np.ndarray] = {}
    for name, arr in plan.arrays.items():
        axis = spec.sample_axis(name)
        cache_key = (arr.identity(), axis, arr.shape)
        if cache_key not in cache:
            cache[cache_key] = _prepare_chunk(arr.read(start, stop, axis))
        chunk[name] = cache[cache_key]
    index = np.arange(start, stop)
    omitted = 0
    keys = chunk.pop(KEYS, None)
    if nan_policy != "propagate":
        chunk, index, omitted = _apply_nan_policy(plan, chunk, index, nan_policy, start, rows)
        if chunk is None:
            return _ChunkResult(part=None, index=index, omitted=omitted)  # type: ignore[arg-type]
    weights = chunk.pop(WEIGHTS, None)
    kwargs = dict(plan.bound.params)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if _takes_sample_weight(spec.kernel):  # a loss whose statistics are not per sample (global Dice)
            kwargs["sample_weight"] = weights
    if plan.observe is not None:
        if lock is None:
            plan.observe(chunk)
        else:
            with lock:
                plan.observe(chunk)
    try:
        with blamed_on_plugin(spec.plugin, spec.name):  # a plugin's failure is exit 2, not lossctl's bug
            part = _as_part(spec.kernel(**chunk, **kwargs))
    except DomainError as exc:
        arr = plan.arrays.get(exc.input_name)
        label = arr.label if arr is not None else exc.input_name
        detail = _count_domain(plan, exc, rows) if exc.bad is not None and arr is not None else exc.detail
        raise InputError(f"{spec.name}: {label} {detail}") from None
    if weights is not None and part.stats and "sample_weight" not in kwargs:
        raise UsageError(f"{spec.name} cannot be weighted per sample: its kernel sums statistics over samples "
                         f"without taking sample_weight; evaluate it without {option('weights')}")
    groups = None
    if plan.groups is not None:
        groups = _group_sums(plan, part, chunk, kwargs, weights, plan.global_rows(index))
    routed = None
    if keys is not None and plan.slicer is not None:
        kept = chunk  # (after the NaN policy: the rows the part holds)

        def run_kernel(positions: np.ndarray) -> Part:
            sub = {name: np.take(arr, positions, axis=spec.sample_axis(name)) for name, arr in kept.items()}
            extra = dict(kwargs)
            if "sample_weight" in extra:
                extra["sample_weight"] = weights[positions]
            with blamed_on_plugin(spec.plugin, spec.name):
                return _as_part(spec.kernel(**sub, **extra))

        kept_keys = keys if len(index) == stop - start else keys[index - start]
        groups_of = None
        if groups is not None:
            def groups_of(inverse: np.ndarray, count: int) -> tuple[np.ndarray | None, list[Any] | None, str]:
                return _key_group_sums(plan, groups, kept, kwargs, weights, plan.global_rows(index), inverse, count)

        routed = plan.slicer.split(part, kept_keys, weights, run_kernel, plan.sums, index, groups_of)
        if groups is not None and groups[0] == "rows" and routed.groups is not None:
            # the term's bucket/resample sums are its keys' (hash the rows and draw once, not twice)
            groups = ("groups", routed.groups.sum(axis=0), None)
        return _ChunkResult(part=part, index=index, omitted=omitted, weights=weights, groups=groups,
                            routed=routed, keys=kept_keys)
    return _ChunkResult(part=part, index=index, omitted=omitted, weights=weights, groups=groups,
                        routed=routed)


def _key_group_sums(plan: TermPlan, groups: Any, chunk: dict[str, np.ndarray], kwargs: dict[str, Any],
                    weights: np.ndarray | None, rows: np.ndarray, inverse: np.ndarray, count: int,
                    ) -> tuple[np.ndarray | None, list[Any] | None, str]:
    """One chunk's jackknife-bucket / bootstrap-resample sums per slice key (``--by`` with ``--ci``):
    ``(sums (count, groups, 4), per-key extra stats or None, why unavailable)``.

    Per-sample sums are routed at once: the jackknife by ``np.bincount`` on the combined index
    key·K + bucket, the bootstrap by summing each key's rows of the Poisson draws (``np.add.reduceat``
    over the rows sorted by key). A loss with statistics summed over samples (global Dice) runs
    :func:`_group_sums` on each key's rows."""
    gs = plan.groups
    kind = groups[0]
    if kind == "unavailable":
        return None, None, groups[1]
    out = np.zeros((count, gs.groups, 4))
    if kind == "rows":
        per_row = np.concatenate([groups[1], np.ones((len(rows), 1))], axis=1)
        if gs.kind == "jackknife":
            idx = inverse * BUCKETS + bucket_of(rows)
            for j in range(4):
                out[:, :, j] = np.bincount(idx, weights=per_row[:, j], minlength=count * BUCKETS).reshape(count, BUCKETS)
            return out, None, ""
        step = max(1, DRAW_BLOCK // gs.groups)
        for s in range(0, len(rows), step):
            inv = inverse[s:s + step]
            order = np.argsort(inv, kind="stable")
            present, starts = np.unique(inv[order], return_index=True)
            draws = poisson_weights(rows[s:s + step][order], gs.seed, gs.groups)
            block = per_row[s:s + step][order]
            for j in range(3):
                out[present, :, j] += np.add.reduceat(draws * block[:, j], starts, axis=1).T
            out[present, :, 3] += np.add.reduceat(draws, starts, axis=1).T  # (the count column is all ones)
        return out, None, ""
    # statistics summed over samples: each key's rows on their own
    spec = plan.spec
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=count))])
    stats: list[Any] = [None] * count
    why = ""
    for j in range(count):
        positions = order[bounds[j]:bounds[j + 1]]
        if not len(positions):
            continue
        sub = {name: np.take(arr, positions, axis=spec.sample_axis(name)) for name, arr in chunk.items()}
        kw = dict(kwargs)
        w = None if weights is None else weights[positions]
        if "sample_weight" in kw:
            kw["sample_weight"] = w
        with blamed_on_plugin(spec.plugin, spec.name):
            part = _as_part(spec.kernel(**sub, **kw))
        res = _group_sums(plan, part, sub, kw, w, rows[positions])
        if res[0] == "unavailable":
            why = why or res[1]
        elif res[0] == "rows":
            sums, _, _ = _key_group_sums(plan, res, sub, kw, w, rows[positions], np.zeros(len(positions), np.intp), 1)
            out[j] = sums[0]
        else:
            out[j], stats[j] = res[1], res[2]
    return out, stats, why


def _group_sums(plan: TermPlan, part: Part, chunk: dict[str, np.ndarray], kwargs: dict[str, Any],
                weights: np.ndarray | None, rows: np.ndarray) -> Any:
    """One chunk's contribution to the plan's jackknife buckets / bootstrap resamples.

    A loss whose sums are per sample gives each row's share of them (one kernel call). A loss with
    extra statistics summed over the chunk (global Dice) is run again per bucket on that bucket's
    rows, or (bootstrap) once per resample with the draws as ``sample_weight``."""
    if not part.stats:
        per_row = row_sums(part, weights, len(rows))
        if per_row is not None:
            return ("rows", per_row, rows)
        return ("unavailable", f"{plan.spec.name} has no per-sample values, so rows cannot be resampled")
    spec, groups = plan.spec, plan.groups
    kernel_weight = "sample_weight" in kwargs or _takes_sample_weight(spec.kernel)
    base = np.ones(len(rows)) if weights is None else weights
    sums = np.zeros((groups.groups, 4))
    stats: dict[str, np.ndarray] = {}

    def add(g: int, p: Part, w: np.ndarray | None, count: float) -> None:
        sums[g, :3] = part_sums(p, w)
        sums[g, 3] = count
        for key, val in (p.stats or {}).items():
            val = np.asarray(val, dtype=np.float64)
            stats.setdefault(key, np.zeros((groups.groups,) + val.shape))[g] = val

    if groups.kind == "jackknife":
        bucket = bucket_of(rows)
        for g in np.unique(bucket):
            mask = bucket == g
            sub = {name: np.compress(mask, arr, axis=spec.sample_axis(name)) for name, arr in chunk.items()}
            kw = dict(kwargs)
            if "sample_weight" in kw:
                kw["sample_weight"] = weights[mask]
            with blamed_on_plugin(spec.plugin, spec.name):
                add(int(g), _as_part(spec.kernel(**sub, **kw)), None if weights is None else weights[mask],
                    float(mask.sum()))
        return ("groups", sums, stats)
    if not kernel_weight:
        return ("unavailable", f"{spec.name} sums statistics over samples and cannot weight them, so it has "
                               f"no bootstrap; use {option('ci_method', 'jackknife')}")
    draws = poisson_weights(rows, groups.seed, groups.groups)
    for g in range(groups.groups):
        w = draws[g] * base
        with blamed_on_plugin(spec.plugin, spec.name):
            add(g, _as_part(spec.kernel(**chunk, **{**kwargs, "sample_weight": w})), w, float(draws[g].sum()))
    return ("groups", sums, stats)


_TAKES_SAMPLE_WEIGHT: dict[Any, bool] = {}


def _takes_sample_weight(kernel: Any) -> bool:
    """Whether a kernel weights its own statistics: it has a ``sample_weight`` keyword."""
    known = _TAKES_SAMPLE_WEIGHT.get(kernel)
    if known is None:
        import inspect

        try:
            known = "sample_weight" in inspect.signature(kernel).parameters
        except (TypeError, ValueError):
            known = False
        _TAKES_SAMPLE_WEIGHT[kernel] = known
    return known


def _count_domain(plan: TermPlan, exc: DomainError, rows: int) -> str:
    """The DomainError's message for the whole input: a second pass counts the bad values of every
    chunk (the kernel saw one chunk) and finds the first, as :func:`_raise_nan` does for NaN."""
    spec, name = plan.spec, exc.input_name
    count, first, value = 0, -1, None
    for s in range(0, plan.n, rows):
        e = min(plan.n, s + rows)
        chunk = {k: _prepare_chunk(a.read(s, e, spec.sample_axis(k))) for k, a in plan.arrays.items()}
        c, i, v = first_bad(chunk[name], exc.bad(chunk), spec.sample_axis(name))
        if c and first < 0:
            first, value = s + i, v
        count += c
    if not count:  # (cannot happen: the chunk that raised is among them)
        return exc.detail
    return exc.describe(count, first, value)


def _apply_chunk(plan: TermPlan, res: _ChunkResult | None) -> None:
    if res is None:
        return
    plan.acc.omitted += res.omitted
    part = res.part
    if part is None:
        return
    plan.acc.samples += len(res.index)
    plan.add(part, res.weights)
    if res.groups is not None:
        plan.groups.ratio = plan.groups.ratio or _is_ratio(part, res.weights)
        kind, *data = res.groups
        if kind == "rows":
            plan.groups.add_rows(*data)
        elif kind == "groups":
            plan.groups.add_groups(*data)
        else:
            plan.groups.unavailable = plan.groups.unavailable or data[0]
    if res.routed is not None:
        plan.slicer.absorb(res.routed)
    if plan.keep_values and part.values is not None:
        plan.values.append(np.asarray(part.values, dtype=np.float64))
        plan.indices.append(plan.global_rows(res.index))
        if res.keys is not None:
            plan.keys.append(res.keys)


def _is_ratio(part: Part, weights: np.ndarray | None) -> bool:
    """Whether a chunk's mean is not the plain mean of its per-sample values: a weight per element
    other than 1, a per-sample divisor, statistics summed over samples, or sample weights."""
    if weights is not None or part.mean_values is not None or part.stats:
        return True
    if part.weight is None:
        return False
    w = np.asarray(part.weight)
    return w.ndim == 0 or not bool(np.all(w == 1))


def _apply_nan_policy(plan: TermPlan, chunk: dict[str, np.ndarray], index: np.ndarray, policy: str,
                      start: int, rows: int) -> tuple[dict[str, np.ndarray] | None, np.ndarray, int]:
    spec = plan.spec
    nan_inputs = [name for name, arr in chunk.items() if _has_nan(arr)]
    if not nan_inputs:
        return chunk, index, 0
    if policy == "raise":
        name = nan_inputs[0]
        mask = _sample_nan_mask(chunk[name], spec.sample_axis(name))
        _raise_nan(plan.arrays[name], start + int(np.flatnonzero(mask)[0]), rows)
    # omit: element-wise losses on 1-D inputs drop elements; everything else drops samples.
    bad = np.zeros(len(index), dtype=bool)
    for name in nan_inputs:
        bad |= _sample_nan_mask(chunk[name], spec.sample_axis(name))
    keep = ~bad
    omitted = int(bad.sum())
    if not keep.any():
        return None, index, omitted
    out = {}
    for name, arr in chunk.items():
        axis = spec.sample_axis(name)
        out[name] = np.compress(keep, arr, axis=axis)
    return out, index[keep], omitted
