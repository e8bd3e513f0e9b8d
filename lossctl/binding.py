"""Binding a loss's terms to their inputs: where each named input comes from (:class:`Sources`),
the loss's shape contract (``(N,)`` and ``(N, 1)`` are the same), the number of samples, and the
checks on what the user named (``--input`` names no loss takes; ``--weights``).

The engine streams whatever arrays a plan was bound to; this module decides which arrays those are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, first_bad, reshaped
from lossctl.errors import InputError, UsageError, blamed_on_plugin, option
from lossctl.registry import LossSpec
from lossctl.words import did_you_mean

#: the key of the per-sample weights (``--weights``) among a plan's arrays: one more per-sample input
#: of every term, read in chunks with the others; the kernels never see it (see :func:`weighted_sums`)
WEIGHTS = "weights"


# ------------------------------------------------------------------------------ input resolution


@dataclass
class Sources:
    """Where inputs come from: PREDS, TARGETS (an array, or an .npz of named arrays) and --input."""

    preds: LazyArray | dict[str, LazyArray] | None = None
    targets: LazyArray | dict[str, LazyArray] | None = None
    named: dict[str, LazyArray] = field(default_factory=dict)
    weights: LazyArray | None = None  # one non-negative weight per sample (--weights)

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
    ways = [option("input", f"{name}=PATH")]
    if name in spec.positional:
        ways.insert(0, ("PREDS", "TARGETS")[spec.positional.index(name)])
    ways.append(f"an .npz PREDS with key {name!r}")
    keys = sources.bundle_keys()
    found = f" (the .npz has keys: {', '.join(keys)})" if keys else ""
    from lossctl.readers import selection_hint  # (p.csv:COL, p.npz:KEY)

    hint = selection_hint(sources.preds) or selection_hint(sources.targets)
    return f"{spec.name} needs input {name!r}: give {' or '.join(ways)}{found}{hint}"


def check_named_inputs(names: Sequence[str], specs: Sequence[LossSpec]) -> None:
    """Every explicitly named input (``--input NAME=PATH``, ``inputs={...}``) must be one that a
    requested loss takes: a misspelt name (``input_length`` for ctc's ``input_lengths``) would
    otherwise be silently ignored. (Extra keys of an .npz PREDS are not named explicitly.)"""
    taken: dict[str, None] = {}
    for spec in specs:
        for name in spec.all_inputs():
            taken.setdefault(name, None)
    for name in names:
        if name not in taken:
            hint = did_you_mean(name, taken)
            by_name = {s.name: s for s in specs}
            losses = "; ".join(f"{s.name} takes {', '.join(s.all_inputs())}" for s in by_name.values())
            if not hint and name.lower().rstrip("s") in ("weight", "sample_weight"):
                hint = f"; per-sample weights are {option('weights', 'PATH')}"
            raise UsageError(f"unknown input {name!r}{hint}: no requested loss takes an input of that name "
                             f"({losses})")


def weights_for(spec: LossSpec, weights: LazyArray, arrays: Mapping[str, LazyArray], n: int) -> LazyArray:
    """``weights`` as one value per sample of this term, (N,) (an (N, 1) column counts as (N,))."""
    shape = _strip_trailing_ones(weights.shape)
    if len(shape) != 1:
        raise InputError(f"{weights.label} has shape {weights.shape}; {option('weights')} takes one weight per "
                         f"sample, shape (N,) or (N, 1) (select a column with PATH:COL)")
    if shape[0] != n:
        shapes = ", ".join(f"{a.label} has shape {a.shape}" for a in arrays.values())
        axes = [f"axis {spec.sample_axis(k)} of {k}" for k in arrays if spec.sample_axis(k)]
        where = f" ({', '.join(axes)})" if axes else ""
        raise InputError(f"{spec.name}: {weights.label} has {shape[0]} weights but the loss has {n} samples{where} "
                         f"({shapes}); give one weight per sample")
    return dataclasses.replace(reshaped(weights, shape), name=WEIGHTS)


def check_weights(weights: LazyArray, *, allow_all_zero: bool = False, rows: int = 1 << 20) -> None:
    """Sample weights must be finite and >= 0, and (unless ``allow_all_zero``: one batch of a
    streaming state) not all zero. One pass in chunks; the message counts over the whole input."""
    counts = {"non-finite": 0, "negative": 0}
    firsts: dict[str, tuple[int, Any]] = {}
    positive = False
    n = weights.shape[0] if weights.shape else 1
    for s in range(0, n, rows):
        w = np.asarray(weights.read(s, min(n, s + rows)))
        w = w.reshape(len(w), -1) if w.ndim else w.reshape(1, 1)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(w) if w.dtype.kind == "f" else np.ones(w.shape, dtype=bool)
            masks = {"non-finite": ~finite, "negative": finite & (w < 0)}
            positive = positive or bool(np.any(w > 0))
        for kind, mask in masks.items():
            c, i, v = first_bad(w, mask)
            counts[kind] += c
            if c and kind not in firsts:
                firsts[kind] = (s + i, v)
    for kind, count in counts.items():
        if count:
            i, v = firsts[kind]
            raise InputError(f"{weights.label} has {count} {kind} value{'s' if count != 1 else ''} (the first at "
                             f"sample {i}: {float(v):g}); sample weights must be finite and >= 0")
    if not positive and not allow_all_zero:
        raise InputError(f"{weights.label}: every weight is 0; at least one sample needs a positive weight")


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
                from lossctl.readers import selection_hint  # (p.csv:COL, p.npz:KEY)

                raise InputError(f"{spec.name}: shapes do not match: {a.label} has shape {a.shape}, "
                                 f"{b.label} has shape {b.shape}; {spec.name} needs the same shape "
                                 f"((N,) and (N,1) count as the same){selection_hint(a) or selection_hint(b)}")
            arrays = {**arrays, spec.inputs[0]: reshaped(a, sa), spec.inputs[1]: reshaped(b, sb)}
    with blamed_on_plugin(spec.plugin, spec.name):
        if spec.check_shapes is not None:
            arrays = spec.check_shapes(dict(arrays), params) or arrays
        if spec.prepare is not None:  # once, before chunking (CTC: concatenated targets → padded)
            arrays = spec.prepare(dict(arrays), params) or arrays
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


