"""``LossState``: the one mergeable state every evaluation runs through (SPEC §8).

A state holds one loss expression's additive statistics: per term a
:class:`~lossctl.accumulators.TermAccumulator`, and, when asked for, the per-sample statistics
(:class:`~lossctl.accumulators.SampleStats`). ``update`` streams samples into it through the engine,
``merge`` combines two states into a new one, ``result`` reads the value. The CLI, the Python API and
the engines all compute through it::

    >>> import numpy as np
    >>> from lossctl import LossState
    >>> p, t = np.array([0.5, 2.0, 0.0, 1.0]), np.zeros(4)
    >>> a = LossState("huber").update(preds=p[:2], targets=t[:2])
    >>> b = LossState("huber").update(preds=p[2:], targets=t[2:], start=2)
    >>> round(a.merge(b).result().value, 6)  # huber(delta=1): mean(0.125, 1.5, 0, 0.5) = 2.125/4
    0.53125

Losses that need a whole batch at once (triplet/contrastive mining) see each ``update`` as one batch:
merging combines whole batches, so such a loss's value depends on how the samples were split.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lossctl import diagnostics
from lossctl.accumulators import SampleStats, TermAccumulator
from lossctl.calibration import PROBABILISTIC, CalibrationObserver, ReliabilityBins
from lossctl.binding import (WEIGHTS, Sources, check_named_inputs, check_weights, normalize_shapes, resolve_inputs,
                             sample_count, weights_for)
from lossctl.engine import NAN_POLICIES, TermPlan, run
from lossctl.errors import InputError, UsageError, blamed_on_plugin, option
from lossctl.expr import BoundTerm, bind, format_expr, parse
from lossctl.arrays import LazyArray, from_array
from lossctl.registry import REDUCTIONS
from lossctl.result import LossResult, SliceResult, TermResult
from lossctl.slices import KEYS, Slicer, TermSlices, keys_for, keys_input


class LossState:
    """The mergeable state of one loss expression (SPEC §8).

    ``reduction`` applies to terms without their own ``reduction=``; ``worst`` keeps the K worst
    samples; ``summary`` keeps per-sample statistics (default: when ``worst`` > 0 or the reduction is
    ``none``). ``nan_policy`` is ``raise`` | ``omit`` | ``propagate``. ``calibration``: keep
    reliability bins (:mod:`lossctl.calibration`) for the expression's first probabilistic
    classification term (bce, bce_with_logits, cross_entropy, focal).
    """

    def __init__(self, expr: str, reduction: str = "mean", worst: int = 0, *, nan_policy: str = "raise",
                 summary: bool | None = None, calibration: bool = False) -> None:
        if reduction not in REDUCTIONS:
            raise UsageError(f"{option('reduction')} must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        if nan_policy not in NAN_POLICIES:
            raise UsageError(f"{option('nan_policy')} must be one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}")
        if worst < 0:
            raise UsageError(f"{option('worst')} must be >= 0, got {worst}")
        self.expr = expr
        self.reduction = reduction
        self.worst = worst
        self.nan_policy = nan_policy
        self._bind()
        if summary is None:
            summary = self.expr_reduction == "none" or worst > 0
        self.terms = [TermAccumulator() for _ in self.bound]
        self.samples: SampleStats | None = SampleStats(k=worst or 10) if summary else None
        self.rows = 0  # samples updated so far: the default ``start`` of the next update
        self.slices: list[TermSlices] | None = None  # per term, the sums by slice key (``keys=``, --by)
        calibrated = [i for i, t in enumerate(self.bound) if t.spec.name in PROBABILISTIC]
        self.calibration: ReliabilityBins | None = ReliabilityBins() if calibration and calibrated else None
        self.calibrated_term = calibrated[0] if calibrated else -1

    def _bind(self) -> None:
        self.bound: list[BoundTerm] = bind(self.expr)
        self.canonical = format_expr(parse(self.expr))
        explicit = {t.reduction for t in self.bound if t.reduction is not None}
        all_explicit = all(t.reduction for t in self.bound)
        self.expr_reduction = explicit.pop() if len(explicit) == 1 and all_explicit else self.reduction

    # ------------------------------------------------------------------------------ updating

    def plans(self, sources: Sources, *, start: int = 0, observers: Sequence[Any] | None = None,
              stream_values: bool = False, keys: LazyArray | None = None) -> list[TermPlan]:
        """Bind this state's terms to ``sources``: plans whose sums go into this state.

        ``stream_values``: the caller wants the per-sample values from :meth:`take_chunk` (a per-sample
        file); otherwise a single-term expression may have its statistics summed on a fast path.

        Run them with :func:`lossctl.engine.run` and call :meth:`take_chunk` after each chunk; that is
        what :meth:`update` does (the CLI runs the plans of several states in one pass over the files).
        ``keys``: one slice key per sample (``--by``), routed into :attr:`slices`.
        """
        out = []
        if keys is not None and self.slices is None:
            self.slices = [TermSlices() for _ in self.bound]
        for i, term in enumerate(self.bound):
            arrays = normalize_shapes(term.spec, resolve_inputs(term.spec, sources), term.params)
            n = sample_count(term.spec, arrays)
            if n == 0:
                shapes = ", ".join(f"{a.label} {a.shape}" for a in arrays.values())
                raise InputError(f"{term.spec.name}: no samples to evaluate ({shapes}); give non-empty inputs")
            if sources.weights is not None:  # one more per-sample input of every term
                arrays = {**arrays, WEIGHTS: weights_for(term.spec, sources.weights, arrays, n)}
            if keys is not None:
                arrays = {**arrays, KEYS: keys_for(keys, n, term.spec.name, arrays)}
            out.append(TermPlan(bound=term, arrays=arrays, n=n, reduction=term.reduction or self.reduction,
                                acc=self.terms[i], keep_values=self.samples is not None, start=start,
                                observe=self._observer(i, observers[i] if observers else None),
                                slicer=Slicer(self.slices[i]) if keys is not None and self.slices else None))
        if len(out) == 1 and self.bound[0].weight == 1.0 and not stream_values:
            out[0].samples = self.samples
        return out

    def _observer(self, i: int, then: Any) -> Any:
        if self.calibration is None or i != self.calibrated_term:
            return then
        return CalibrationObserver(self.calibration, self.bound[i].spec.name, dict(self.bound[i].params), then)

    def take_chunk(self, plans: Sequence[TermPlan]) -> tuple[np.ndarray, np.ndarray] | None:
        """The per-sample values of the chunk just evaluated, with their sample indices; they are added
        to the per-sample statistics and dropped from the plans (returned for a per-sample file)."""
        if self.samples is None:
            return None
        chunk = combine_values(plans)
        if chunk is None:
            return None
        values, index = chunk
        score = values if values.ndim == 1 else values.reshape(len(values), -1).mean(axis=1)
        if len(score) != len(index):  # per-element values of a sample-less loss (1-D kl_div): by position
            index = np.arange(self.samples.count, self.samples.count + len(score))
        self.samples.update(score, index)
        return values, index

    def update(self, preds: Any = None, targets: Any = None, *, start: int | None = None, weights: Any = None,
               keys: Any = None, **inputs: Any) -> LossState:
        """Add samples (along axis 0; CTC: its batch axis) given as arrays by input name.

        ``weights``: one non-negative weight per sample (scikit-learn's ``sample_weight``): the mean
        becomes Σ wᵢ·ℓᵢ / Σ wᵢ, the sum Σ wᵢ·ℓᵢ (a batch may be all zero; the value of a state whose
        weights sum to 0 is NaN). ``start`` is the index of the first sample (for the worst samples'
        indices; default: right after the samples this state has seen). ``keys``: one slice key per
        sample (ints or strings; NaN/None/"" is the missing key): the samples are also summed per key
        (:attr:`slices`, ``result().slices``). Returns the state itself.
        """
        check_named_inputs(list(inputs), [term.spec for term in self.bound])
        w = None
        if weights is not None:
            w = weights if isinstance(weights, LazyArray) else from_array(weights, WEIGHTS)
            check_weights(w, allow_all_zero=True)
        sources = Sources(preds=_wrap(preds, "preds"), targets=_wrap(targets, "targets"), weights=w,
                          named={k: v if isinstance(v, LazyArray) else from_array(v, k) for k, v in inputs.items()})
        first = self.rows if start is None else int(start)
        plans = self.plans(sources, start=first, keys=None if keys is None else keys_input(keys))
        run(plans, nan_policy=self.nan_policy, on_progress=lambda _: self.take_chunk(plans), threads=1)
        self.rows = max(self.rows, first + max(p.n for p in plans))
        return self

    # ------------------------------------------------------------------------------ merging

    def merge(self, other: LossState) -> LossState:
        """A new state holding both states' samples; ``self`` and ``other`` are unchanged."""
        if not isinstance(other, LossState):
            raise TypeError(f"cannot merge a LossState with {type(other).__name__}")
        mine = (self.canonical, self.reduction, self.nan_policy, self.samples is not None)
        theirs = (other.canonical, other.reduction, other.nan_policy, other.samples is not None)
        if mine != theirs:
            raise UsageError(f"cannot merge states of different evaluations: {mine} and {theirs}")
        out = LossState.__new__(LossState)
        out.__setstate__(self.__getstate__())
        out.worst = max(self.worst, other.worst)
        out.terms = [a.merge(b) for a, b in zip(self.terms, other.terms)]
        out.samples = self.samples.merge(other.samples) if self.samples and other.samples else None
        out.rows = max(self.rows, other.rows)
        if self.calibration is not None and other.calibration is not None:
            out.calibration = self.calibration.merge(other.calibration)
        else:
            out.calibration = None
        if self.slices is None and other.slices is None:
            out.slices = None
        else:
            empty = [TermSlices() for _ in self.bound]
            out.slices = [a.merge(b) for a, b in zip(self.slices or empty, other.slices or empty)]
        return out

    def __getstate__(self) -> dict[str, Any]:  # the expression is re-bound on load (kernels are code)
        return {"expr": self.expr, "reduction": self.reduction, "worst": self.worst,
                "nan_policy": self.nan_policy, "terms": self.terms, "samples": self.samples, "rows": self.rows,
                "slices": self.slices, "calibration": self.calibration, "calibrated_term": self.calibrated_term}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"slices": None, "calibration": None, "calibrated_term": -1, **state})
        self._bind()

    def __repr__(self) -> str:
        return f"LossState({self.expr!r}, reduction={self.reduction!r}, samples={self.terms[0].samples})"

    # ------------------------------------------------------------------------------ reading

    def result(self) -> LossResult:
        """The value (weighted sum of the terms), each term's value, and the per-sample summary."""
        terms = []
        value = 0.0
        for term, acc in zip(self.bound, self.terms):
            if acc.empty and acc.omitted:
                raise InputError(f"{term.spec.name}: no valid samples left after {option('nan_policy', 'omit')} "
                                 f"({acc.omitted} dropped); check the inputs for NaN")
            with blamed_on_plugin(term.spec.plugin, term.spec.name):
                v = acc.value(term.spec.finalize, term.reduction or self.reduction, term.params)
            terms.append(TermResult(name=term.spec.name, weight=term.weight, params=dict(term.params),
                                    value=v, reduction=term.reduction or self.reduction))
            value += term.weight * v
        if len(terms) == 1 and terms[0].weight == 1.0:
            value = terms[0].value  # exactly the term's value
        if not math.isfinite(value):
            kind = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            diagnostics.warn("non_finite", f"{self.expr}: the value is {kind}; see the inputs and the loss's "
                                           f"domain (e.g. every target ignored, or an infeasible alignment)")
        result = LossResult(loss=self.expr, canonical=self.canonical, value=value, reduction=self.expr_reduction,
                            terms=terms, omitted=max(a.omitted for a in self.terms),
                            samples=max(a.samples + a.omitted for a in self.terms))
        if self.samples is not None:
            result.summary = self.samples.summary()
        if self.slices is not None:
            result.slices = self.slice_results()
        if self.calibration is not None:
            result.calibration = {"term": self.bound[self.calibrated_term].spec.name, **self.calibration.as_dict()}
        return result

    def slice_results(self) -> list[SliceResult]:
        """One result per slice key, worst (highest value) first; NaN values last."""
        keys: dict[Any, None] = {}
        for table in self.slices or ():
            keys.update(dict.fromkeys(table.keys))
        order = list(keys)
        values = np.zeros(len(order))
        samples = np.zeros(len(order), dtype=np.int64)
        for term, table in zip(self.bound, self.slices or ()):
            v = np.full(len(order), np.nan)
            where = np.array([table.index_of(k) for k in order], dtype=np.intp)
            found = where >= 0
            v[found] = self._slice_values(term, table)[where[found]]
            samples[found] = np.maximum(samples[found], table.samples[where[found]])
            values = v if len(self.bound) == 1 and term.weight == 1.0 else values + term.weight * v
        out = [SliceResult(key=k, samples=int(n), value=float(x)) for k, n, x in zip(order, samples, values)]
        out.sort(key=lambda s: (math.isnan(s.value), -s.value if not math.isnan(s.value) else 0.0, str(s.key)))
        return out

    def _slice_values(self, term: BoundTerm, table: TermSlices) -> np.ndarray:
        """Each key's value of one term (vectorised unless the loss finalises extra statistics)."""
        reduction = term.reduction or self.reduction
        if term.spec.finalize is not None or table.stats:
            out = []
            for key in table.keys:
                acc = table.accumulator(key)
                with blamed_on_plugin(term.spec.plugin, term.spec.name), np.errstate(all="ignore"):
                    out.append(acc.value(term.spec.finalize, reduction, term.params) if acc else math.nan)
            return np.array(out, dtype=np.float64)
        if reduction == "sum":
            return np.asarray(table.total.value, dtype=np.float64).reshape(-1)
        num = np.asarray(table.numerator.value, dtype=np.float64).reshape(-1)
        den = np.asarray(table.denominator.value, dtype=np.float64).reshape(-1)
        with np.errstate(all="ignore"):
            return np.where(den == 0, np.nan, num / np.where(den == 0, 1.0, den))


def _wrap(value: Any, name: str) -> LazyArray | dict[str, LazyArray] | None:
    if value is None or isinstance(value, LazyArray):
        return value
    if isinstance(value, Mapping):
        return {k: v if isinstance(v, LazyArray) else from_array(v, k) for k, v in value.items()}
    return from_array(value, name)


def combine_values(plans: Iterable[TermPlan]) -> tuple[np.ndarray, np.ndarray] | None:
    """One chunk's per-sample values of an expression: the weighted sum of its terms' values.

    Terms whose values have the same shape add element by element (``mse + mae`` keeps torch's
    ``reduction='none'`` shape); otherwise each term is first reduced to one value per sample (the mean
    over its non-batch axes), so ``cross_entropy + 0.5*dice`` has one value per sample. The kept values
    are cleared from the plans.
    """
    chunks = []
    weights = []
    for plan in plans:
        if plan.values:
            vals = np.concatenate(plan.values) if len(plan.values) > 1 else plan.values[0]
            idx = np.concatenate(plan.indices) if len(plan.indices) > 1 else plan.indices[0]
            chunks.append((vals.reshape(1) if vals.ndim == 0 else vals, idx))
        else:
            chunks.append(None)
        weights.append(plan.bound.weight)
        plan.values.clear()
        plan.indices.clear()
    present = [c for c in chunks if c is not None]
    if not present:
        return None
    mismatch = UsageError("per-sample values of a combined loss need every term to have the same samples; "
                          f"evaluate the terms as separate {option('loss')} options")
    if len(present) != len(chunks):
        raise mismatch
    if len(chunks) == 1:
        values, index = present[0]
        return (values if weights[0] == 1.0 else weights[0] * values), index
    if len({c[0].shape for c in present}) != 1:
        present = [(_per_sample(v, i), i) for v, i in present]
        if len({c[0].shape for c in present}) != 1:
            raise mismatch
    combined = sum(w * c[0] for w, c in zip(weights, present))
    return combined, present[0][1]


def _per_sample(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One value per sample: the mean over the non-batch axes (values of 1-D inputs stay as they are)."""
    if values.ndim <= 1 or len(values) != len(index):
        return values
    return values.reshape(len(values), -1).mean(axis=1)
