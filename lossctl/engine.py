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
    #: routes each chunk's sums by slice key (``--by``: a :class:`lossctl.slices.Slicer`)
    slicer: Any = None

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
        on_progress: Any = None, *, threads: int | None = None) -> None:
    """Stream over the samples of every plan (grouped by sample count), accumulating each term.

    Work is split into tasks of consecutive chunks that run on ``threads`` worker threads (NumPy
    releases the GIL in its kernels); results are added up in sample order, so the value does not
    depend on the thread count. Losses registered with a fused fast path (:mod:`lossctl.fast`) are
    summed straight from zero-copy windows of the inputs; everything else goes through the kernels.
    ``on_progress(samples)`` is called after each chunk of each pass, in order, once that chunk's
    per-sample values (kept by plans with ``keep_values``) are in the plans.
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
                 if FAST_PATHS and WEIGHTS not in p.arrays and KEYS not in p.arrays and (f := fast.fused_for(p)) is not None}
        fast_plans = [p for p in group if id(p) in fused]
        slow_plans = [p for p in group if id(p) not in fused]
        rows = chunk_rows or _default_rows(group, n)
        if not chunk_rows and any(KEYS in p.arrays for p in group):  # fewer, larger chunks to route by key
            rows = max(rows, KEYED_CHUNK_ELEMENTS // _row_elements(group))
        if not chunk_rows and any(a.sequential for p in group for a in p.arrays.values()):
            rows = max(rows, SEQUENTIAL_CHUNK_ELEMENTS // _row_elements(group))  # fewer, larger hand-offs
        if fast_plans:
            passes.append(("fast", n, fast_plans, fused, rows))
        if slow_plans:
            passes.append(("slow", n, slow_plans, fused, rows))
    tracker = _progress_tracker(passes)
    try:
        for kind, n, group, fused, rows in passes:
            if kind == "fast":
                _run_fast(group, fused, n, rows, nan_policy, on_progress, tracker, workers)
            else:
                _run_slow(group, n, rows, nan_policy, on_progress, tracker, workers)
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


def _tasks(group: Sequence[TermPlan], n: int, rows: int, workers: int = 1) -> list[tuple[int, int]]:
    """Consecutive ranges of whole chunks: at most TASK_ELEMENTS elements each, and (for mid-sized
    inputs) at least 4 tasks per worker, so every core gets work."""
    chunk_elements = max(1, rows * _row_elements(group))
    total_chunks = -(-n // rows)
    per_task = max(1, TASK_ELEMENTS // chunk_elements)
    if total_chunks > per_task:  # big enough to share: at least 4 tasks per worker
        per_task = max(1, min(per_task, -(-total_chunks // (4 * max(1, workers)))))
    per_task *= rows
    return [(s, min(n, s + per_task)) for s in range(0, n, per_task)]


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
    routed: Any = None  # the chunk's sums by slice key (--by)


def _run_slow(group: Sequence[TermPlan], n: int, rows: int, nan_policy: str, on_progress: Any,
              tracker: Any, workers: int) -> None:
    locks = {id(p): threading.Lock() for p in group}
    sequential = {}
    for plan in group:
        for name, arr in plan.arrays.items():
            if arr.sequential:
                axis = plan.spec.sample_axis(name)
                sequential[(arr.identity(), axis, arr.shape)] = (arr, axis)
    # prefetched (sequential) inputs: one chunk per task, so what is read ahead stays small
    tasks = [(s, min(n, s + rows)) for s in range(0, n, rows)] if sequential else _tasks(group, n, rows, workers)

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
              nan_policy: str, on_progress: Any, tracker: Any, workers: int) -> None:
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
        worst_k = plan.samples.k if plan.keep_values else None  # per-sample statistics in the fused pass
        entries.append((fused[id(plan)], names, dict(plan.bound.params), worst_k, plan.start))
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

    tasks = _tasks(group, n, sub_rows, workers)
    for kind, start, stop, result in _ordered_map(work, tasks, workers, len(tasks)):
        if kind == "sums":
            for plan, (total, weight, stats, samples) in zip(group, result):
                plan.acc.add_sums(total, total, weight, stats)
                plan.acc.samples += stop - start
                if samples is not None:
                    plan.samples.absorb(samples)
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

    return progress.tracker_for([(kind, n, group) for kind, n, group, _, _ in passes])


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
        routed = plan.slicer.split(part, kept_keys, weights, run_kernel, plan.sums, index)
    return _ChunkResult(part=part, index=index, omitted=omitted, weights=weights, routed=routed)


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
    if res.routed is not None:
        plan.slicer.absorb(res.routed)
    if plan.keep_values and part.values is not None:
        plan.values.append(np.asarray(part.values, dtype=np.float64))
        plan.indices.append(res.index + plan.start)


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
