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
from lossctl.accumulators import CompensatedSum, Moments, SampleStats, TermAccumulator
from lossctl.calibration import PROBABILISTIC, CalibrationObserver, ReliabilityBins
from lossctl.binding import (WEIGHTS, Sources, check_named_inputs, check_weights, normalize_shapes, resolve_inputs,
                             sample_count, weights_for)
from lossctl.engine import NAN_POLICIES, TermPlan, run
from lossctl.errors import InputError, UsageError, blamed_on_plugin, option
from lossctl.intervals import (BUCKETS, CIConfig, GroupSums, bootstrap_interval, clt_interval,
                               jackknife_interval)
from lossctl.expr import BoundTerm, bind, format_expr, parse
from lossctl.arrays import LazyArray, from_array
from lossctl.registry import REDUCTIONS
from lossctl.result import Comparison, Interval, LossResult, SliceResult, TermResult
from lossctl.slices import KEYS, KeyMoments, Slicer, TermSlices, keys_for, keys_input


class LossState:
    """The mergeable state of one loss expression (SPEC §8).

    ``reduction`` applies to terms without their own ``reduction=``; ``worst`` keeps the K worst
    samples; ``summary`` keeps per-sample statistics (default: when ``worst`` > 0 or the reduction is
    ``none``). ``nan_policy`` is ``raise`` | ``omit`` | ``propagate``. ``ci`` (a
    :class:`~lossctl.intervals.CIConfig`, or True for the defaults) keeps what a confidence interval
    needs (``result().ci``): per-sample moments (CLT), and per term the sums of 20 row buckets
    (jackknife) or of the bootstrap resamples, keyed by global row index. ``calibration``: keep
    reliability bins (:mod:`lossctl.calibration`) for the expression's first probabilistic
    classification term (bce, bce_with_logits, cross_entropy, focal).
    """

    def __init__(self, expr: str, reduction: str = "mean", worst: int = 0, *, nan_policy: str = "raise",
                 summary: bool | None = None, ci: CIConfig | bool | None = None, calibration: bool = False) -> None:
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
        self.ci = CIConfig() if ci is True else (ci or None)
        if summary is None:
            summary = self.expr_reduction == "none" or worst > 0
        self.show_summary = summary
        self.terms = [TermAccumulator() for _ in self.bound]
        residual = all(t.spec.fused is not None and t.spec.fused.c_kind is not None for t in self.bound)
        self.groups: list[GroupSums | None] = [self._new_groups(t, not residual) for t in self.bound]
        self.samples: SampleStats | None = SampleStats(k=worst or 10) if summary else None
        #: the per-sample values' moments alone, for the CLT, when no summary is kept (the summary's
        #: sketch and worst-K heap cost a third of an mse pass; the C kernels skip them here)
        clt = self.ci is not None and self.ci.method in ("auto", "clt")
        self.moments: Moments | None = Moments() if clt and not summary else None
        self.rows = 0  # samples updated so far: the default ``start`` of the next update
        self.slices: list[TermSlices] | None = None  # per term, the sums by slice key (``keys=``, --by)
        #: per slice key, the moments of the expression's per-sample values (the per-slice CLT interval)
        self.slice_moments: KeyMoments | None = None
        calibrated = [i for i, t in enumerate(self.bound) if t.spec.name in PROBABILISTIC]
        self.calibration: ReliabilityBins | None = ReliabilityBins() if calibration and calibrated else None
        self.calibrated_term = calibrated[0] if calibrated else -1

    def _bind(self) -> None:
        self.bound: list[BoundTerm] = bind(self.expr)
        self.canonical = format_expr(parse(self.expr))
        explicit = {t.reduction for t in self.bound if t.reduction is not None}
        all_explicit = all(t.reduction for t in self.bound)
        self.expr_reduction = explicit.pop() if len(explicit) == 1 and all_explicit else self.reduction

    def _new_groups(self, term: BoundTerm, needed: bool) -> GroupSums | None:
        """A term's bucket/resample sums when the interval may need them: always for the jackknife and
        the bootstrap; for ``auto``/``clt`` unless every term is a residual loss with a C kernel
        (mse, mae, huber: plain means of per-sample values, whose moments the fast path keeps) and
        there are no weights (``needed``)."""
        if self.ci is None:
            return None
        if self.ci.method == "bootstrap":
            return GroupSums("bootstrap", self.ci.resamples, self.ci.seed)
        if self.ci.method == "jackknife" or needed:
            return GroupSums("jackknife", BUCKETS)
        return None

    # ------------------------------------------------------------------------------ updating

    def plans(self, sources: Sources, *, start: int = 0, observers: Sequence[Any] | None = None,
              stream_values: bool = False, rows: np.ndarray | None = None, keys: LazyArray | None = None,
              ) -> list[TermPlan]:
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
        if keys is not None and self.ci is not None and self.ci.method in ("auto", "clt") \
                and self.slice_moments is None:
            self.slice_moments = KeyMoments()
        for i, term in enumerate(self.bound):
            arrays = normalize_shapes(term.spec, resolve_inputs(term.spec, sources), term.params)
            n = sample_count(term.spec, arrays)
            if n == 0:
                shapes = ", ".join(f"{a.label} {a.shape}" for a in arrays.values())
                raise InputError(f"{term.spec.name}: no samples to evaluate ({shapes}); give non-empty inputs")
            if sources.weights is not None:  # one more per-sample input of every term
                arrays = {**arrays, WEIGHTS: weights_for(term.spec, sources.weights, arrays, n)}
            if sources.weights is not None and self.ci is not None and None in self.groups:
                self.groups = [g or self._new_groups(t, True) for g, t in zip(self.groups, self.bound)]
            if sources.weights is not None and self.ci is not None and self.groups[i] is None:
                self.groups[i] = self._new_groups(term, True)
                if self.terms[i].samples:
                    self.groups[i].unavailable = "weights were given after unweighted samples"
            if rows is not None and len(rows) != n:
                raise UsageError(f"{option('rows')} has {len(rows)} row indices for {n} samples; give one per sample")
            if keys is not None:
                arrays = {**arrays, KEYS: keys_for(keys, n, term.spec.name, arrays)}
            out.append(TermPlan(bound=term, arrays=arrays, n=n, reduction=term.reduction or self.reduction,
                                acc=self.terms[i], keep_values=self.samples is not None or self.moments is not None,
                                start=start, observe=self._observer(i, observers[i] if observers else None),
                                groups=self.groups[i], row_ids=rows,
                                slicer=Slicer(self.slices[i]) if keys is not None and self.slices else None))
        if len(out) == 1 and self.bound[0].weight == 1.0 and not stream_values:
            out[0].samples = self.samples
            out[0].moments = self.moments if self.samples is None else None
        return out

    def _observer(self, i: int, then: Any) -> Any:
        if self.calibration is None or i != self.calibrated_term:
            return then
        return CalibrationObserver(self.calibration, self.bound[i].spec.name, dict(self.bound[i].params), then)

    def take_chunk(self, plans: Sequence[TermPlan]) -> tuple[np.ndarray, np.ndarray] | None:
        """The per-sample values of the chunk just evaluated, with their sample indices; they are added
        to the per-sample statistics and dropped from the plans (returned for a per-sample file)."""
        if self.samples is None and self.moments is None:
            return None
        chunk = self.chunk_values(plans)
        if chunk is None:
            return None
        values, index = chunk
        score = values if values.ndim == 1 else values.reshape(len(values), -1).mean(axis=1)
        if self.moments is not None:  # (the CLT of finite values, as SampleStats keeps them)
            self.moments.update(score if np.isfinite(np.add.reduce(score)) else score[np.isfinite(score)])
        if self.samples is None:
            return values, index
        if len(score) != len(index):  # per-element values of a sample-less loss (1-D kl_div): by position
            index = np.arange(self.samples.count, self.samples.count + len(score))
        self.samples.update(score, index)
        return values, index

    def chunk_values(self, plans: Sequence[TermPlan]) -> tuple[np.ndarray, np.ndarray] | None:
        """:func:`combine_values` of the chunk; the per-sample values also go into the per-slice
        moments (:attr:`slice_moments`) under their slice keys."""
        keys = next((np.concatenate(p.keys) if len(p.keys) > 1 else p.keys[0] for p in plans if p.keys), None)
        for plan in plans:
            plan.keys.clear()
        chunk = combine_values(plans)
        if chunk is not None and keys is not None and self.slice_moments is not None:
            values = chunk[0]
            score = values if values.ndim == 1 else values.reshape(len(values), -1).mean(axis=1)
            if len(score) == len(keys):  # (not per-element values of a sample-less loss)
                self.slice_moments.update(keys, score)
        return chunk

    def update(self, preds: Any = None, targets: Any = None, *, start: int | None = None, weights: Any = None,
               rows: Any = None, keys: Any = None, **inputs: Any) -> LossState:
        """Add samples (along axis 0; CTC: its batch axis) given as arrays by input name.

        ``weights``: one non-negative weight per sample (scikit-learn's ``sample_weight``): the mean
        becomes Σ wᵢ·ℓᵢ / Σ wᵢ, the sum Σ wᵢ·ℓᵢ (a batch may be all zero; the value of a state whose
        weights sum to 0 is NaN). ``start`` is the index of the first sample (for the worst samples'
        indices; default: right after the samples this state has seen). ``rows``: the global row
        index of each sample (an int64 array, one per sample; default ``start + arange(n)``), for
        samples that are not consecutive rows (a slice of the data); the worst samples' indices, the
        jackknife buckets and the bootstrap draws are keyed by it. ``keys``: one slice key per
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
        row_ids = None
        if rows is not None:
            row_ids = np.asarray(rows)
            if row_ids.ndim != 1 or row_ids.dtype.kind not in "iu" or (row_ids.size and row_ids.min() < 0):
                raise UsageError(f"{option('rows')} must be a 1-D array of non-negative integer row indices")
            row_ids = row_ids.astype(np.int64)
        plans = self.plans(sources, start=first, rows=row_ids, keys=None if keys is None else keys_input(keys))
        run(plans, nan_policy=self.nan_policy, on_progress=lambda _: self.take_chunk(plans), threads=1)
        end = first + max(p.n for p in plans) if row_ids is None else int(row_ids.max(initial=-1)) + 1
        self.rows = max(self.rows, end)
        return self

    def update_rows(self, sources: Sources, start: int, stop: int, *, observers: Sequence[Any] | None = None,
                    chunk_rows: int | None = None) -> LossState:
        """Add samples ``start:stop`` of ``sources`` (whole inputs, opened lazily): one partition of a
        distributed run (:mod:`lossctl.dask_engine`). Only those rows are read (whole-batch losses
        such as mining read the batch they mine in); indices and error messages are those of the
        whole input, so the merged partitions equal one update over all samples."""
        plans = self.plans(sources, start=0, observers=observers)
        run(plans, nan_policy=self.nan_policy, chunk_rows=chunk_rows, on_progress=lambda _: self.take_chunk(plans),
            threads=1, span=(start, stop))
        self.rows = max(self.rows, min(stop, max(p.n for p in plans)))
        return self

    # ------------------------------------------------------------------------------ merging

    def merge(self, other: LossState) -> LossState:
        """A new state holding both states' samples; ``self`` and ``other`` are unchanged."""
        if not isinstance(other, LossState):
            raise TypeError(f"cannot merge a LossState with {type(other).__name__}")
        mine = (self.canonical, self.reduction, self.nan_policy, self.samples is not None, self.ci)
        theirs = (other.canonical, other.reduction, other.nan_policy, other.samples is not None, other.ci)
        if mine != theirs:
            raise UsageError(f"cannot merge states of different evaluations: {mine} and {theirs}")
        out = LossState.__new__(LossState)
        out.__setstate__(self.__getstate__())
        out.worst = max(self.worst, other.worst)
        out.terms = [a.merge(b) for a, b in zip(self.terms, other.terms)]
        out.samples = self.samples.merge(other.samples) if self.samples and other.samples else None
        out.moments = self.moments.merge(other.moments) if self.moments and other.moments else None
        out.groups = [a.merge(b) if a is not None and b is not None else (a or b)
                      for a, b in zip(self.groups, other.groups)]
        out.rows = max(self.rows, other.rows)
        out.show_summary = self.show_summary or other.show_summary
        if self.calibration is not None and other.calibration is not None:
            out.calibration = self.calibration.merge(other.calibration)
        else:
            out.calibration = None
        if self.slices is None and other.slices is None:
            out.slices = None
        else:
            empty = [TermSlices() for _ in self.bound]
            out.slices = [a.merge(b) for a, b in zip(self.slices or empty, other.slices or empty)]
        a, b = self.slice_moments, other.slice_moments
        out.slice_moments = a.merge(b) if a is not None and b is not None else (a or b)
        return out

    def __getstate__(self) -> dict[str, Any]:  # the expression is re-bound on load (kernels are code)
        return {"expr": self.expr, "reduction": self.reduction, "worst": self.worst,
                "nan_policy": self.nan_policy, "terms": self.terms, "samples": self.samples, "rows": self.rows,
                "ci": self.ci, "groups": self.groups, "show_summary": self.show_summary, "moments": self.moments,
                "slices": self.slices, "calibration": self.calibration, "calibrated_term": self.calibrated_term,
                "slice_moments": self.slice_moments}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"slices": None, "calibration": None, "calibrated_term": -1, "slice_moments": None,
                              **state})
        self._bind()
        self.__dict__.setdefault("ci", None)  # (states pickled before intervals)
        self.__dict__.setdefault("groups", [None] * len(self.bound))
        self.__dict__.setdefault("show_summary", self.samples is not None)
        self.__dict__.setdefault("moments", None)

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
        if self.samples is not None and self.show_summary:
            result.summary = self.samples.summary()
        if self.ci is not None:
            result.ci = self.interval(value)
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
        if self.ci is not None:
            method = self.interval_method()
            for sl in out:
                sl.ci = self.slice_interval(sl.key, sl.value, method).as_dict()
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

    # ------------------------------------------------------------------------------ intervals

    def is_plain_mean(self) -> bool:
        """Whether the value is the mean of per-sample values (so the CLT interval applies): every
        term is a residual loss or was seen to have no weights, divisors or summed statistics."""
        return all(g is None or not g.ratio for g in self.groups)

    def interval_method(self) -> str:
        method = self.ci.method
        if method == "auto":
            return "clt" if self.is_plain_mean() else "jackknife"
        return method

    def replicates(self, groups: Sequence[GroupSums | None] | None = None) -> dict[int, float]:
        """The expression's value per jackknife replicate (all rows but bucket k) or per bootstrap
        resample: the weighted sum of each term's value from its group sums (``groups``: per term,
        default the whole state's; a slice passes its own)."""
        per_term = []
        for term, gs in zip(self.bound, self.groups if groups is None else groups):
            if gs is None:
                raise UsageError(f"{term.spec.name}: no bucket sums were kept for its interval")
            per_term.append(self._term_replicates(term, gs))
        common = set(per_term[0]).intersection(*per_term[1:]) if per_term else set()
        return {g: sum(t.weight * vals[g] for t, vals in zip(self.bound, per_term)) for g in sorted(common)}

    def _term_replicates(self, term: BoundTerm, groups: GroupSums) -> dict[int, float]:
        """One term's value per replicate; a plain ratio of sums (no ``finalize``) all at once."""
        reduction = term.reduction or self.reduction
        if term.spec.finalize is not None or groups.stats:
            with blamed_on_plugin(term.spec.plugin, term.spec.name):
                return {g: acc.value(term.spec.finalize, reduction, term.params)
                        for g, acc in groups.group_accumulators().items()}
        sums = np.asarray(groups.sums.value, dtype=np.float64)
        if groups.kind == "jackknife":  # all rows but bucket g, for the non-empty buckets
            keep = np.flatnonzero(sums[:, 3] > 0)
            reps = sums.sum(axis=0) - sums[keep]
        else:
            keep, reps = np.arange(len(sums)), sums
        if reduction == "sum":
            vals = reps[:, 0]
        else:
            with np.errstate(all="ignore"):
                vals = np.where(reps[:, 2] == 0, np.nan, reps[:, 1] / np.where(reps[:, 2] == 0, 1.0, reps[:, 2]))
        return dict(zip(keep.tolist(), vals.tolist()))

    def unavailable(self) -> str:
        return next((g.unavailable for g in self.groups if g is not None and g.unavailable), "")

    def slice_interval(self, key: Any, value: float, method: str) -> Interval:
        """One slice's interval by the whole result's ``method``: the CLT from the slice's moments
        (:attr:`slice_moments`), or the jackknife/bootstrap from its bucket/resample sums."""
        cfg = self.ci
        tables = self.slices or []
        if method == "clt":
            if not self.is_plain_mean():
                return Interval(None, None, cfg.level, "clt", None,
                                f"{self.expr} is not a mean of per-sample values; use the jackknife or the bootstrap")
            if self.slice_moments is None:
                return Interval(None, None, cfg.level, "clt", None, "no per-sample values were kept for the slices")
            n, mean, m2 = self.slice_moments.get(key)
            scale = 1.0
            if self.expr_reduction == "sum":
                per = set()
                for table in tables:
                    i = table.index_of(key)
                    if i >= 0 and table.samples[i]:
                        per.add(float(table.denominator.value[i]) / int(table.samples[i]))
                if len(per) != 1:
                    return Interval(None, None, cfg.level, "clt", None, "terms with different sample sizes: no "
                                                                         "interval for their sum")
                scale = per.pop() * n
            return clt_interval(n, mean, m2, cfg.level, scale, center=value)
        why = self.unavailable() or next((t.unavailable for t in tables if t.unavailable), "")
        if why:
            return Interval(None, None, cfg.level, method, None, why)
        per_term: list[GroupSums | None] = []
        for gs, table in zip(self.groups, tables):
            data = None if gs is None else table.group_sums(key)
            if data is None:
                return Interval(None, None, cfg.level, method, None, "no bucket sums were kept for this slice")
            sums, stats = data
            per_term.append(GroupSums(gs.kind, gs.groups, gs.seed, CompensatedSum(sums),
                                      {k: CompensatedSum(v) for k, v in stats.items()}))
        reps = np.array(list(self.replicates(per_term).values()))
        if method == "jackknife":
            return jackknife_interval(value, reps, cfg.level)
        return bootstrap_interval(reps, cfg.level)

    def interval(self, value: float) -> Interval:
        """The confidence interval of the value (SPEC §9); see :mod:`lossctl.intervals`."""
        cfg, method = self.ci, self.interval_method()
        if method == "clt":
            if not self.is_plain_mean():
                return Interval(None, None, cfg.level, "clt", None,
                                f"{self.expr} is not a mean of per-sample values; use the jackknife or the bootstrap")
            s = self.samples
            n, mean, m2 = (s.finite, s.mean, s.m2) if s is not None else (self.moments.n, self.moments.mean,
                                                                          self.moments.m2)
            scale = 1.0
            if self.expr_reduction == "sum":
                per = {float(a.denominator.value) / a.samples for a in self.terms if a.samples}
                if len(per) != 1:
                    return Interval(None, None, cfg.level, "clt", None, "terms with different sample sizes: no "
                                                                         "interval for their sum")
                scale = per.pop() * n
            return clt_interval(n, mean, m2, cfg.level, scale, center=value)
        why = self.unavailable()
        if why:
            return Interval(None, None, cfg.level, method, None, why)
        reps = np.array(list(self.replicates().values()))
        if method == "jackknife":
            return jackknife_interval(value, reps, cfg.level)
        return bootstrap_interval(reps, cfg.level)


ROUNDING = 1e-12  # a relative difference treated as float noise: "no_difference"


class PairedState:
    """A candidate model and a baseline model scored on the same rows (``--against``, SPEC §9).

    Two :class:`LossState` of one expression, updated in the same pass over the targets, and the
    moments of the per-row differences dᵢ = ℓᵢ(candidate) − ℓᵢ(baseline) (the paired CLT interval;
    the jackknife and the bootstrap difference the two states' replicates, which share row keys).
    ``histogram``: also keep the distribution of the dᵢ in bounded memory (:attr:`diff_sketch`, a
    :class:`~lossctl.accumulators.SampleStats` without worst samples: exact moments, min and max,
    the signed log-bucketed sketch, the values themselves up to 4096), read as
    ``result().comparison.histogram`` (the report bundle's ``paired_differences.png``). It needs the
    per-row values of both models, which the fast paths do not give (2.9× a plain ``--against`` on
    ``mse`` over 1e7 rows), and the sketch itself adds ~25 % to ``--against --ci``, which streams
    the pairs anyway (benchmarks/pairhist_bench.py): so it is kept only when asked for
    (``summary=True`` in the API, ``--report-dir`` on the CLI).
    ``update``/``merge``/pickling as for :class:`LossState`.
    """

    def __init__(self, expr: str, reduction: str = "mean", worst: int = 0, *, nan_policy: str = "raise",
                 ci: CIConfig | bool | None = None, against: str = "baseline", summary: bool | None = None,
                 histogram: bool = False) -> None:
        self.cand = LossState(expr, reduction, worst, nan_policy=nan_policy, ci=ci, summary=summary)
        self.base = LossState(expr, reduction, worst, nan_policy=nan_policy, ci=ci)
        #: the CLT (and the histogram) need each row's pair of values; otherwise the two states' sums
        #: (and their buckets/resamples) are all a comparison needs, and the fast paths may take them
        self.pairs = histogram or (self.cand.ci is not None and self.cand.ci.method in ("auto", "clt"))
        for state in (self.cand, self.base):
            if not state.show_summary:  # the pairs need the per-sample values, not their summary
                state.samples, state.moments = None, (Moments() if self.pairs else None)
        self.diff = Moments()
        self.diff_sketch: SampleStats | None = SampleStats(k=0) if histogram else None
        self.against = against
        self.worst = worst

    @property
    def ci(self) -> CIConfig | None:
        return self.cand.ci

    def plans(self, sources: Sources, base_sources: Sources, *, start: int = 0, rows: np.ndarray | None = None,
              observers: Sequence[Any] | None = None, stream_values: bool = False, keys: LazyArray | None = None,
              ) -> tuple[list[TermPlan], list[TermPlan]]:
        """The candidate's and the baseline's plans (per-sample values streamed when the pairs need
        them, or ``stream_values``: the candidate's go to a per-sample file)."""
        cand = self.cand.plans(sources, start=start, observers=observers, stream_values=self.pairs or stream_values,
                               rows=rows, keys=keys)
        base = self.base.plans(base_sources, start=start, stream_values=self.pairs, rows=rows)
        if self.pairs and self.diff_sketch is None and not stream_values and keys is None and rows is None:
            self._fuse_pairs(cand, base)
        return cand, base

    def _fuse_pairs(self, cand: list[TermPlan], base: list[TermPlan]) -> None:
        """mse/mae/huber of two models on 1-D float inputs: the fused C pass forms the differences'
        moments beside the sums (``paired_moments``), so no per-sample values are made; a window the
        fast path cannot take (a NaN) still pairs its values in :meth:`take_chunk`."""
        if len(cand) != 1 or len(base) != 1 or self.cand.bound[0].weight != 1.0:
            return
        c, b = cand[0], base[0]
        fused = c.spec.fused
        p, q = c.arrays.get("preds"), b.arrays.get("preds")
        if fused is None or fused.c_kind is None or p is None or q is None or set(c.arrays) != {"preds", "targets"} \
                or set(b.arrays) != {"preds", "targets"} or c.arrays["targets"].identity() != b.arrays["targets"].identity() \
                or q.dtype != p.dtype or q.shape != p.shape or not q.can_view() \
                or self.cand.samples is not None or self.base.samples is not None:
            return
        c.moments, b.moments = self.cand.moments, self.base.moments
        c.pair = (q, self.diff)

    def take_chunk(self, cand_plans: Sequence[TermPlan], base_plans: Sequence[TermPlan],
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        """Both states' chunk; the differences of the rows both kept go into the moments. Returns the
        candidate's per-sample values (for a per-sample file)."""
        if not self.pairs:
            self.base.take_chunk(base_plans)
            return self.cand.take_chunk(cand_plans)
        c, b = _chunk(self.cand, cand_plans), _chunk(self.base, base_plans)
        if c is None or b is None:
            return c
        (vc, ic), (vb, ib) = c, b
        sc, sb = _scores(vc, ic), _scores(vb, ib)
        for state, score in ((self.cand, sc), (self.base, sb)):
            if state.moments is not None:
                state.moments.update(score if np.isfinite(np.add.reduce(score)) else score[np.isfinite(score)])
        if ic.shape != ib.shape or not np.array_equal(ic, ib):  # --nan-policy omit dropped different rows
            _, i1, i2 = np.intersect1d(ic, ib, assume_unique=True, return_indices=True)
            sc, sb = sc[i1], sb[i2]
        with np.errstate(invalid="ignore", over="ignore"):
            d = sc - sb
        finite = d if np.isfinite(np.add.reduce(d)) else d[np.isfinite(d)]
        self.diff.update(finite)
        if self.diff_sketch is not None:
            self.diff_sketch.update(d, np.empty(0, dtype=np.int64))  # (no worst samples: no indices read)
        return c

    def update(self, preds: Any = None, baseline: Any = None, targets: Any = None, *, start: int | None = None,
               rows: Any = None, weights: Any = None, **inputs: Any) -> PairedState:
        """Add samples: ``preds`` of the candidate, ``baseline`` of the baseline model (arrays, or
        mappings of named inputs), the shared ``targets`` and named ``inputs``."""
        w = None if weights is None else (weights if isinstance(weights, LazyArray) else from_array(weights, WEIGHTS))
        named = {k: v if isinstance(v, LazyArray) else from_array(v, k) for k, v in inputs.items()}
        tgt = _wrap(targets, "targets")
        sources = Sources(preds=_wrap(preds, "preds"), targets=tgt, weights=w, named=dict(named))
        base_sources = Sources(preds=_wrap(baseline, "preds"), targets=tgt, weights=w, named=dict(named))
        first = self.cand.rows if start is None else int(start)
        row_ids = None if rows is None else np.asarray(rows, dtype=np.int64)
        cp, bp = self.plans(sources, base_sources, start=first, rows=row_ids)
        run(cp + bp, nan_policy=self.cand.nan_policy, on_progress=lambda _: self.take_chunk(cp, bp), threads=1)
        end = first + max(p.n for p in cp) if row_ids is None else int(row_ids.max(initial=-1)) + 1
        self.cand.rows = self.base.rows = max(self.cand.rows, end)
        return self

    def merge(self, other: PairedState) -> PairedState:
        out = PairedState.__new__(PairedState)
        out.cand, out.base = self.cand.merge(other.cand), self.base.merge(other.base)
        out.diff = self.diff.merge(other.diff)
        mine, theirs = self.diff_sketch, other.diff_sketch
        out.diff_sketch = mine.merge(theirs) if mine is not None and theirs is not None else None
        out.against, out.worst, out.pairs = self.against, max(self.worst, other.worst), self.pairs
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"diff_sketch": None, **state})  # (states pickled before the histogram)

    def histogram(self, bins: int = 40) -> dict[str, Any] | None:
        """The per-row differences binned for display (:meth:`SampleStats.binned`): ``edges``,
        ``counts`` (of the finite dᵢ; they sum to the paired rows), ``approx``, ``mean`` (of the
        dᵢ), ``non_finite`` (rows whose difference is NaN or ±inf, not binned)."""
        s = self.diff_sketch
        if s is None:
            return None
        edges, counts, approx = s.binned(bins)
        return {"edges": edges, "counts": counts, "approx": approx, "mean": s.mean if s.finite else None,
                "non_finite": s.count - s.finite}

    def result(self) -> LossResult:
        """The candidate's result with its ``comparison`` against the baseline."""
        res = self.cand.result()
        with diagnostics.collecting():  # (the baseline's own warnings are the candidate's, once)
            base = self.base.result()
        res.comparison = self.comparison(res.value, base.value)
        return res

    def comparison(self, value: float, base_value: float) -> Comparison:
        with np.errstate(invalid="ignore", over="ignore"):
            diff = value - base_value
        relative = diff / abs(base_value) if math.isfinite(base_value) and base_value != 0 and \
            math.isfinite(diff) else None
        diff_ci = self.diff_interval(diff) if self.ci is not None else None
        return Comparison(against=self.against, paired=True, baseline_value=base_value, diff=diff,
                          relative=relative, verdict=verdict_of(diff, diff_ci, max(abs(value), abs(base_value))),
                          diff_ci=diff_ci, histogram=self.histogram())

    def diff_interval(self, diff: float) -> Interval:
        cfg = self.ci
        plain = self.cand.is_plain_mean() and self.base.is_plain_mean()
        method = ("clt" if plain else "jackknife") if cfg.method == "auto" else cfg.method
        if method == "clt":
            if not plain:
                return Interval(None, None, cfg.level, "clt", None,
                                f"{self.cand.expr} is not a mean of per-sample values; use the jackknife or the bootstrap")
            scale = 1.0
            if self.cand.expr_reduction == "sum":
                a = self.cand.terms[0]
                scale = float(a.denominator.value) / max(a.samples, 1) * self.diff.n
            return clt_interval(self.diff.n, self.diff.mean, self.diff.m2, cfg.level, scale, center=diff)
        why = self.cand.unavailable() or self.base.unavailable()
        if why:
            return Interval(None, None, cfg.level, method, None, why)
        rc, rb = self.cand.replicates(), self.base.replicates()
        reps = np.array([rc[g] - rb[g] for g in sorted(set(rc) & set(rb))])
        if method == "jackknife":
            return jackknife_interval(diff, reps, cfg.level)
        return bootstrap_interval(reps, cfg.level)

    def __repr__(self) -> str:
        return f"PairedState({self.cand.expr!r}, against={self.against!r})"


def _chunk(state: LossState, plans: Sequence[TermPlan]) -> tuple[np.ndarray, np.ndarray] | None:
    return state.take_chunk(plans) if state.samples is not None else state.chunk_values(plans)


def _scores(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One value per sample (the mean over a sample's elements), as the per-sample statistics take them."""
    values = _per_sample(values, index)
    return values.reshape(len(values), -1).mean(axis=1) if values.ndim > 1 else values


def verdict_of(diff: float, interval: Interval | None, size: float = 0.0) -> str:
    """``better`` / ``worse`` / ``no_difference`` for candidate − baseline (lower is better).

    With an interval: ``worse`` when it lies above 0, ``better`` when below, else ``no_difference``
    (also when the interval could not be computed). Without: the sign of the difference, with
    ``no_difference`` for a difference within float rounding (1e-12 relative) or not finite."""
    if interval is not None:
        if not interval.known:
            return "no_difference"
        if interval.low > 0:
            return "worse"
        if interval.high < 0:
            return "better"
        return "no_difference"
    if not math.isfinite(diff) or abs(diff) <= ROUNDING * size:
        return "no_difference"
    return "worse" if diff > 0 else "better"


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
