"""``lossctl.evaluate``: bind the expressions, open the inputs, stream, and build the Report.

The CLI and the Python API both call :func:`evaluate`; renderers only read its :class:`Report`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lossctl import __version__, diagnostics, pitfalls
from lossctl.engine import Sources, TermPlan, normalize_shapes, resolve_inputs, run, sample_count
from lossctl.errors import InputError, UsageError
from lossctl.expr import BoundTerm, bind
from lossctl.inputs import LazyArray, from_array, open_input, open_source
from lossctl.per_sample import PerSampleSink
from lossctl.provenance import check_algorithm, provenance_block, start_hashing
from lossctl.registry import REDUCTIONS
from lossctl.result import LossResult, Report, TermResult


@dataclass
class _ExprPlan:
    text: str
    canonical: str
    terms: list[TermPlan]
    reduction: str
    sink: PerSampleSink | None = None
    weights: list[float] = field(default_factory=list)


def _open(value: Any, name: str) -> LazyArray | dict[str, LazyArray] | None:
    if value is None:
        return None
    if isinstance(value, LazyArray):
        return value
    if isinstance(value, (str, os.PathLike)):
        return open_source(os.fspath(value), name)
    if isinstance(value, Mapping):
        return {k: (v if isinstance(v, LazyArray) else from_array(v, k)) for k, v in value.items()}
    return from_array(value, name)


def evaluate(
    preds: Any = None,
    targets: Any = None,
    loss: str | Sequence[str] = "mse",
    *,
    inputs: Mapping[str, Any] | None = None,
    reduction: str = "mean",
    nan_policy: str = "raise",
    chunk_size: int | None = None,
    per_sample: str | None = None,
    worst: int = 0,
    provenance: bool = True,
    hash: str = "xxh3",
) -> Report:
    """Evaluate one or more loss expressions over saved (or in-memory) predictions and targets.

    ``preds``/``targets`` are paths (``p.npy``, ``p.npz:KEY``, ``p.csv:col``) or arrays; ``inputs``
    maps extra input names (``anchor``, ``x1``, ``log_probs``…) to paths or arrays. Returns the
    :class:`~lossctl.result.Report` that the CLI renders. ``hash`` is the inputs' digest in the
    provenance (xxh3 | sha256 | none, :mod:`lossctl.provenance`); ``provenance=False`` omits it all.
    """
    if reduction not in REDUCTIONS:
        raise UsageError(f"--reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if chunk_size is not None and chunk_size < 1:
        raise UsageError(f"--chunk-size must be a positive number of samples, got {chunk_size}")
    if worst < 0:
        raise UsageError(f"--worst must be >= 0, got {worst}")
    hash = check_algorithm(hash, "hash")
    texts = [loss] if isinstance(loss, str) else list(loss)
    if not texts:
        raise UsageError("no loss given; pass --loss NAME (see 'lossctl losses')")
    bound = [(text, bind(text)) for text in texts]  # all expression errors before any file is read

    sources = Sources(preds=_open(preds, "preds"), targets=_open(targets, "targets"))
    for name, value in (inputs or {}).items():
        opened = value if isinstance(value, LazyArray) else (
            open_input(os.fspath(value), name) if isinstance(value, (str, os.PathLike)) else from_array(value, name))
        sources.named[name] = opened

    with diagnostics.collecting() as warnings:
        plans = [_plan_expression(text, terms, sources, reduction, per_sample, worst, len(bound))
                 for text, terms in bound]
        all_terms = [t for p in plans for t in p.terms]
        used = _used_inputs(all_terms)
        hashing = start_hashing(used, hash) if provenance else None  # overlaps the evaluation

        def after_chunk(_: int) -> None:
            for p in plans:
                if p.sink is not None:
                    p.sink.flush_chunk(p.terms, p.weights)

        try:
            run(all_terms, nan_policy=nan_policy, chunk_rows=chunk_size, on_progress=after_chunk)
            pitfalls.finish_all(t.observe for t in all_terms)
            results = [_result(p) for p in plans]
        except BaseException:
            if hashing is not None:
                hashing.cancel()
            for p in plans:
                if p.sink is not None:
                    p.sink.abort()  # (one already renamed into place stays: it is complete)
            raise
        report = Report(version=__version__, inputs={k: a.describe() for k, a in used.items()},
                        results=results, warnings=warnings)
        if provenance:
            report.provenance = provenance_block(used, hashing)
    return report


def _plan_expression(text: str, terms: list[BoundTerm], sources: Sources, reduction: str,
                     per_sample: str | None, worst: int, count: int) -> _ExprPlan:
    explicit = {t.reduction for t in terms if t.reduction is not None}
    expr_reduction = explicit.pop() if len(explicit) == 1 and all(t.reduction for t in terms) else reduction
    wants_values = expr_reduction == "none" or bool(per_sample) or worst > 0
    plans = []
    for term in terms:
        arrays = resolve_inputs(term.spec, sources)
        arrays = normalize_shapes(term.spec, arrays, term.params)
        n = sample_count(term.spec, arrays)
        if n == 0:
            shapes = ", ".join(f"{a.label} {a.shape}" for a in arrays.values())
            raise InputError(f"{term.spec.name}: no samples to evaluate ({shapes}); give non-empty inputs")
        plans.append(TermPlan(bound=term, arrays=arrays, n=n, reduction=term.reduction or reduction,
                              observe=pitfalls.observer(term.spec.name, term.params),
                              keep_values=wants_values))
    from lossctl.expr import format_expr, parse

    sink = None
    if wants_values:
        path = per_sample
        if path and count > 1:
            root, ext = os.path.splitext(path)
            path = f"{root}-{_slug(text)}{ext}"
        sink = PerSampleSink(path, worst=worst or 10)
    return _ExprPlan(text=text, canonical=format_expr(parse(text)), terms=plans, reduction=expr_reduction,
                     sink=sink, weights=[t.weight for t in terms])


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in text.lower())
    return "_".join(filter(None, keep.split("_")))[:60] or "loss"


def _result(plan: _ExprPlan) -> LossResult:
    terms = []
    value = 0.0
    for tp in plan.terms:
        v = tp.value()
        if tp.denominator == 0 and tp.omitted and not tp.stats:
            raise InputError(f"{tp.spec.name}: no valid samples left after --nan-policy omit "
                             f"({tp.omitted} dropped); check the inputs for NaN")
        terms.append(TermResult(name=tp.spec.name, weight=tp.bound.weight, params=dict(tp.bound.params),
                                value=v, reduction=tp.reduction))
        value += tp.bound.weight * v
    if len(plan.terms) == 1 and plan.terms[0].bound.weight == 1.0:
        value = terms[0].value  # exactly the term's value (no 1.0 * rounding games)
    if not math.isfinite(value):
        kind = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        diagnostics.warn("non_finite", f"{plan.text}: the value is {kind}; see the inputs and the loss's "
                                       f"domain (e.g. every target ignored, or an infeasible alignment)")
    result = LossResult(loss=plan.text, canonical=plan.canonical, value=value, reduction=plan.reduction,
                        terms=terms, omitted=max(t.omitted for t in plan.terms),
                        samples=max(t.n for t in plan.terms))
    if plan.sink is not None:
        result.summary = plan.sink.finish()
        result.per_sample_path = plan.sink.path
    return result


def _used_inputs(terms: Sequence[TermPlan]) -> dict[str, LazyArray]:
    used: dict[str, LazyArray] = {}
    for tp in terms:
        for name, arr in tp.arrays.items():
            used.setdefault(name, arr)
    return used
