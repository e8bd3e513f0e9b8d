"""Chunked evaluation: stream every input once, chunk by chunk, and add up each loss's statistics.

Each term's kernel turns one chunk of samples into a :class:`~lossctl.registry.Part` (additive
float64 sums, plus torch's ``reduction='none'`` values). Sums over chunks are then finalised into
``mean``/``sum`` values, so chunked evaluation equals one-shot evaluation up to float64 rounding,
and resident memory is a few chunks whatever the input size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.errors import DomainError, InputError, UsageError
from lossctl.expr import BoundTerm
from lossctl.inputs import LazyArray, reshaped
from lossctl.registry import LossSpec, Part

DEFAULT_CHUNK_ELEMENTS = 1 << 16
NAN_POLICIES = ("raise", "omit", "propagate")


# ------------------------------------------------------------------------------ input resolution


@dataclass
class Sources:
    """Where inputs come from: PREDS, TARGETS (an array, or an .npz of named arrays) and --input."""

    preds: LazyArray | dict[str, LazyArray] | None = None
    targets: LazyArray | dict[str, LazyArray] | None = None
    named: dict[str, LazyArray] = field(default_factory=dict)

    def bundle_keys(self) -> list[str]:
        keys: list[str] = []
        for src in (self.preds, self.targets):
            if isinstance(src, dict):
                keys.extend(src)
        return keys

    def lookup(self, spec: LossSpec, name: str) -> LazyArray | None:
        if name in self.named:
            return self.named[name]
        for src in (self.preds, self.targets):
            if isinstance(src, dict) and name in src:
                return src[name]
        if name in spec.positional:
            src = (self.preds, self.targets)[spec.positional.index(name)]
            if isinstance(src, LazyArray):
                return src
        return None


def resolve_inputs(spec: LossSpec, sources: Sources) -> dict[str, LazyArray]:
    """The loss's inputs by name, each labelled with its role for messages."""
    arrays: dict[str, LazyArray] = {}
    for name in spec.all_inputs():
        arr = sources.lookup(spec, name)
        if arr is None:
            if name in spec.optional_inputs:
                continue
            raise InputError(_missing_input_message(spec, name, sources))
        arrays[name] = dataclasses.replace(arr, name=name)
    return arrays


def _missing_input_message(spec: LossSpec, name: str, sources: Sources) -> str:
    ways = [f"--input {name}=PATH"]
    if name in spec.positional:
        ways.insert(0, ("PREDS", "TARGETS")[spec.positional.index(name)])
    ways.append(f"an .npz PREDS with key {name!r}")
    keys = sources.bundle_keys()
    found = f" (the .npz has keys: {', '.join(keys)})" if keys else ""
    return f"{spec.name} needs input {name!r}: give {' or '.join(ways)}{found}"


def _strip_trailing_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = list(shape)
    while len(out) > 1 and out[-1] == 1:
        out.pop()
    return tuple(out)


def normalize_shapes(spec: LossSpec, arrays: dict[str, LazyArray], params: Mapping[str, Any]) -> dict[str, LazyArray]:
    """Apply the loss's shape contract; (N,) and (N,1) count as the same."""
    if spec.elementwise:
        a, b = (arrays[n] for n in spec.inputs[:2])
        if a.shape != b.shape:
            sa, sb = _strip_trailing_ones(a.shape), _strip_trailing_ones(b.shape)
            if sa != sb:
                raise InputError(f"{spec.name}: shapes do not match: {a.label} has shape {a.shape}, "
                                 f"{b.label} has shape {b.shape}; {spec.name} needs the same shape "
                                 f"((N,) and (N,1) count as the same)")
            arrays = {**arrays, spec.inputs[0]: reshaped(a, sa), spec.inputs[1]: reshaped(b, sb)}
    if spec.check_shapes is not None:
        arrays = spec.check_shapes(dict(arrays), params) or arrays
    for name, arr in arrays.items():
        if arr.ndim == 0:
            raise InputError(f"{spec.name}: {arr.label} is a scalar (shape ()); give an array of samples")
    return arrays


def sample_count(spec: LossSpec, arrays: Mapping[str, LazyArray]) -> int:
    counts = {name: arr.shape[spec.sample_axis(name)] for name, arr in arrays.items()}
    if len(set(counts.values())) > 1:
        desc = ", ".join(f"{arrays[n].label} has shape {arrays[n].shape}" for n in counts)
        raise InputError(f"{spec.name}: inputs disagree on the number of samples: {desc}")
    return next(iter(counts.values()))


# ------------------------------------------------------------------------------------ accumulation


@dataclass
class TermPlan:
    bound: BoundTerm
    arrays: dict[str, LazyArray]
    n: int
    reduction: str
    total: float = 0.0
    numerator: float = 0.0
    denominator: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    omitted: int = 0
    keep_values: bool = False
    values: list[np.ndarray] = field(default_factory=list)
    indices: list[np.ndarray] = field(default_factory=list)

    @property
    def spec(self) -> LossSpec:
        return self.bound.spec

    def add(self, part: Part) -> None:
        values = part.values
        chunk_sum = float(np.sum(values, dtype=np.float64)) if values is not None else 0.0
        self.total += chunk_sum
        if part.mean_values is not None:
            self.numerator += float(np.sum(part.mean_values, dtype=np.float64))
        else:
            self.numerator += chunk_sum
        if part.weight is None:
            self.denominator += 0 if values is None else np.size(values)
        else:
            self.denominator += float(np.sum(part.weight, dtype=np.float64))
        if part.stats:
            for key, val in part.stats.items():
                self.stats[key] = self.stats.get(key, 0.0) + np.asarray(val, dtype=np.float64)

    def value(self) -> float:
        if self.spec.finalize is not None:
            out = self.spec.finalize(self.stats, self.reduction, self.bound.params)
            if out is not None:
                return float(out)
        if self.reduction == "sum":
            return self.total
        if self.denominator == 0:
            return math.nan
        return self.numerator / self.denominator


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
                     f"(first at sample {first_index}); clean the data, or pass --nan-policy omit "
                     f"to drop them or --nan-policy propagate to keep them")


def run(plans: Sequence[TermPlan], nan_policy: str = "raise", chunk_rows: int | None = None,
        on_progress: Any = None) -> None:
    """Stream over the samples of every plan (grouped by sample count), accumulating each term."""
    if nan_policy not in NAN_POLICIES:
        raise UsageError(f"--nan-policy must be one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}")
    groups: dict[int, list[TermPlan]] = {}
    for plan in plans:
        groups.setdefault(plan.n, []).append(plan)
    for n, group in groups.items():
        rows = chunk_rows or _default_rows(group, n)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            cache: dict[Any, np.ndarray] = {}
            for plan in group:
                _run_chunk(plan, start, stop, cache, nan_policy, rows)
            if on_progress is not None:
                on_progress(stop - start)


def _default_rows(group: Sequence[TermPlan], n: int) -> int:
    per_row = 1
    for plan in group:
        for name, arr in plan.arrays.items():
            size = int(np.prod(arr.shape, dtype=np.int64))
            per_row = max(per_row, size // max(1, arr.shape[plan.spec.sample_axis(name)]))
    return max(1, DEFAULT_CHUNK_ELEMENTS // per_row)


def _run_chunk(plan: TermPlan, start: int, stop: int, cache: dict[Any, np.ndarray], nan_policy: str,
               rows: int) -> None:
    spec = plan.spec
    chunk: dict[str, np.ndarray] = {}
    for name, arr in plan.arrays.items():
        axis = spec.sample_axis(name)
        cache_key = (arr.identity(), axis, arr.shape)
        if cache_key not in cache:
            cache[cache_key] = _prepare_chunk(arr.read(start, stop, axis))
        chunk[name] = cache[cache_key]
    index = np.arange(start, stop)
    if nan_policy != "propagate":
        chunk, index = _apply_nan_policy(plan, chunk, index, nan_policy, start, rows)
        if chunk is None:
            return
    try:
        part = _as_part(spec.kernel(**chunk, **plan.bound.params))
    except DomainError as exc:
        arr = plan.arrays.get(exc.input_name)
        label = arr.label if arr is not None else exc.input_name
        raise InputError(f"{spec.name}: {label} {exc.detail}") from None
    plan.add(part)
    if plan.keep_values and part.values is not None:
        plan.values.append(np.asarray(part.values, dtype=np.float64))
        plan.indices.append(index)


def _apply_nan_policy(plan: TermPlan, chunk: dict[str, np.ndarray], index: np.ndarray, policy: str,
                      start: int, rows: int) -> tuple[dict[str, np.ndarray] | None, np.ndarray]:
    spec = plan.spec
    nan_inputs = [name for name, arr in chunk.items() if _has_nan(arr)]
    if not nan_inputs:
        return chunk, index
    if policy == "raise":
        name = nan_inputs[0]
        mask = _sample_nan_mask(chunk[name], spec.sample_axis(name))
        _raise_nan(plan.arrays[name], start + int(np.flatnonzero(mask)[0]), rows)
    # omit: element-wise losses on 1-D inputs drop elements; everything else drops samples.
    bad = np.zeros(len(index), dtype=bool)
    for name in nan_inputs:
        bad |= _sample_nan_mask(chunk[name], spec.sample_axis(name))
    keep = ~bad
    plan.omitted += int(bad.sum())
    if not keep.any():
        return None, index
    out = {}
    for name, arr in chunk.items():
        axis = spec.sample_axis(name)
        out[name] = np.compress(keep, arr, axis=axis)
    return out, index[keep]
