"""``lossctl.evaluate``: bind the expressions, open the inputs, stream, and build the Report.

The CLI and the Python API both call :func:`evaluate`; renderers only read its :class:`Report`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lossctl import diagnostics, pitfalls
from lossctl.arrays import LazyArray, from_array
from lossctl.calibration import unwrap
from lossctl.slices import KEYS
from lossctl.binding import WEIGHTS, Sources, check_named_inputs, check_weights
from lossctl.engine import NAN_POLICIES, TermPlan, run
from lossctl.errors import UsageError, option
from lossctl.expr import bind
from lossctl.per_sample import PerSampleSink
from lossctl.provenance import check_algorithm, provenance_block, start_hashing
from lossctl.readers import ReadOptions, open_input, open_source
from lossctl.readers.remote import nest_options
from lossctl.version import __version__
from lossctl.registry import REDUCTIONS
from lossctl.result import Report
from lossctl.intervals import CIConfig
from lossctl.state import LossState, PairedState


@dataclass
class _ExprPlan:
    """One expression of the run: its state, its plans over the inputs, its per-sample file."""

    state: LossState
    terms: list[TermPlan]
    sink: PerSampleSink | None = None
    paired: PairedState | None = None  # --against: the candidate (state) with its baseline
    base_terms: list[TermPlan] | None = None

    def after_chunk(self) -> None:
        if self.paired is not None:
            chunk = self.paired.take_chunk(self.terms, self.base_terms or [])
        else:
            chunk = self.state.take_chunk(self.terms)
        if chunk is not None and self.sink is not None:
            self.sink.write(*chunk)

    def result(self) -> Any:
        return self.paired.result() if self.paired is not None else self.state.result()


def _open(value: Any, name: str, read: ReadOptions | None = None) -> LazyArray | dict[str, LazyArray] | None:
    if value is None:
        return None
    if isinstance(value, LazyArray):
        return value
    if isinstance(value, (str, os.PathLike)):
        return open_source(os.fspath(value), name, read)
    if isinstance(value, Mapping):
        return {k: (v if isinstance(v, LazyArray) else from_array(v, k)) for k, v in value.items()}
    return from_array(value, name)


def evaluate(
    preds: Any = None,
    targets: Any = None,
    loss: str | Sequence[str] = "mse",
    *,
    inputs: Mapping[str, Any] | None = None,
    weights: Any = None,
    reduction: str = "mean",
    nan_policy: str = "raise",
    chunk_size: int | None = None,
    per_sample: str | None = None,
    worst: int = 0,
    provenance: bool = True,
    hash: str = "xxh3",
    header: str = "auto",
    delimiter: str | None = None,
    classes: str | Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    engine: str | None = None,
    scheduler: Any = None,
    data: Any = None,
    ci: CIConfig | bool | None = None,
    against: Any = None,
    by: Any = None,
    summary: bool | None = None,
) -> Report:
    """Evaluate one or more loss expressions over saved (or in-memory) predictions and targets.

    ``preds``/``targets`` are paths (``p.npy``, ``p.npz:KEY``, ``p.csv:col``) or arrays; ``inputs``
    maps extra input names (``anchor``, ``x1``, ``log_probs``…) to paths or arrays. ``weights`` (a path
    ``w.npy`` / ``w.csv:COL`` or an array): one non-negative weight per sample, for every loss
    (scikit-learn's ``sample_weight``: the mean is Σ wᵢ·ℓᵢ / Σ wᵢ, the sum Σ wᵢ·ℓᵢ). Returns the
    :class:`~lossctl.result.Report` that the CLI renders. ``hash`` is the inputs' digest in the
    provenance (xxh3 | sha256 | none, :mod:`lossctl.provenance`); ``provenance=False`` omits it all.
    ``header`` (auto | yes | no), ``delimiter`` and ``classes`` (string class labels in the order of
    the logits' columns, a list or ``"a,b,c"``) say how CSV inputs are read (SPEC §5).
    ``storage_options``: fsspec options for URL inputs (``s3://``…; dotted keys nest), SPEC §8.

    ``engine``: ``local`` (threads in this process) or ``dask`` (SPEC §8, :mod:`lossctl.dask_engine`),
    with ``scheduler`` ``local[:N]``, ``tcp://HOST:PORT`` or a ``distributed.Client``. Dask arrays,
    Series and DataFrames are evaluated by dask where they live, one state per chunk along axis 0
    (on the current ``Client`` unless ``scheduler`` says otherwise). ``data``: a pandas or dask
    DataFrame whose columns ``preds``, ``targets``, ``inputs`` and ``weights`` name (a list of columns
    is an (N, C) input): ``evaluate(preds="y_pred", targets="y_true", data=ddf, loss="mse")``.

    ``ci`` (True, or a :class:`~lossctl.intervals.CIConfig`) adds each result's confidence interval;
    ``against`` (a PREDS-like path or array, or an .npz / mapping with the same named inputs) scores a
    baseline model on the same targets in the same pass: each result gets a paired ``comparison``.

    ``by``: one
    slice key per sample (a path ``g.csv:COL`` / ``g.npy``, or an array): each result also gets
    ``.slices``, one value per key, worst first (SPEC §9). ``summary=True`` keeps the per-sample
    statistics (the report bundle's distribution figure) without ``worst``, and with ``against`` the
    distribution of the per-row differences (``comparison.histogram``, its paired-differences figure).
    """
    if reduction not in REDUCTIONS:
        raise UsageError(f"{option('reduction')} must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if nan_policy not in NAN_POLICIES:
        raise UsageError(f"{option('nan_policy')} must be one of {', '.join(NAN_POLICIES)}, got {nan_policy!r}")
    if chunk_size is not None and chunk_size < 1:
        raise UsageError(f"{option('chunk_size')} must be a positive number of samples, got {chunk_size}")
    if worst < 0:
        raise UsageError(f"{option('worst')} must be >= 0, got {worst}")
    hash = check_algorithm(hash, "hash")
    if engine not in (None, "local", "dask"):
        raise UsageError(f"{option('engine')} must be local or dask, got {engine!r}")
    if data is not None:
        preds, targets, inputs, weights = _columns(data, preds, targets, inputs, weights)
    texts = [loss] if isinstance(loss, str) else list(loss)
    if not texts:
        raise UsageError(f"no loss given; pass {option('loss', 'NAME')} (see 'lossctl losses')")
    bound = [term for text in texts for term in bind(text)]  # all expression errors before any file is read
    check_named_inputs(list(inputs or {}), [term.spec for term in bound])

    read = ReadOptions(header, _delimiter(delimiter), _classes(classes), nest_options(dict(storage_options or {})))
    given = {"preds": preds, "targets": targets, **(inputs or {}), "weights": weights}
    given = {k: v for k, v in given.items() if v is not None}
    if engine is None and any(_is_dask(v) for v in given.values()):
        engine = "dask"
    if engine == "dask":
        if per_sample:
            raise UsageError(f"{option('per_sample')} writes one value per sample in order, which needs "
                             f"{option('engine', 'local')}; drop one of them")
        if by is not None:
            raise UsageError(f"{option('by')} slices are summed by the local engine for now: drop "
                             f"{option('engine', 'dask')} or {option('by')}")
        if against is not None:
            raise UsageError(f"{option('against')} pairs two models row by row in one pass, which needs "
                             f"{option('engine', 'local')} for now; drop one of them")
        from lossctl import dask_engine

        dask_engine.require()
        if not all(isinstance(v, (str, os.PathLike)) for v in given.values()):
            if ci:
                raise UsageError(f"{option('ci')} on dask arrays is not supported yet: save the arrays (.npy) "
                                 f"and evaluate the files with {option('engine', 'dask')}, or drop {option('ci')}")
            return _evaluate_arrays(texts, given, reduction, nan_policy, worst, provenance, scheduler)
    elif any(_is_dask(v) for v in given.values()):
        raise UsageError(f"dask inputs are evaluated by dask: drop {option('engine', 'local')}, or pass NumPy arrays")
    sources = Sources(preds=_open(preds, "preds", read), targets=_open(targets, "targets", read))
    for name, value in (inputs or {}).items():
        opened = value if isinstance(value, LazyArray) else (
            open_input(os.fspath(value), name, read) if isinstance(value, (str, os.PathLike)) else from_array(value, name))
        sources.named[name] = opened
    if weights is not None:
        sources.weights = weights if isinstance(weights, LazyArray) else (
            open_input(os.fspath(weights), WEIGHTS, read) if isinstance(weights, (str, os.PathLike))
            else from_array(weights, WEIGHTS))
        check_weights(sources.weights)
    ci = CIConfig() if ci is True else (ci or None)
    base_sources = None
    if against is not None:
        base = _open(against, "against", read)
        if isinstance(base, dict):  # an .npz of named inputs: its keys replace the candidate's; the targets
            # and any input it lacks are the candidate's (the same arrays: read once for both)
            cand = sources.preds if isinstance(sources.preds, dict) else {}
            base = {**cand, **{k: v for k, v in base.items() if k != "targets"}}
        base_sources = Sources(preds=base, targets=sources.targets, named=dict(sources.named), weights=sources.weights)

    keys = None
    if by is not None:
        from lossctl.slices import keys_input, open_keys

        keys = open_keys(os.fspath(by)) if isinstance(by, (str, os.PathLike)) else keys_input(by)
    with diagnostics.collecting() as warnings:
        plans = [_plan_expression(text, sources, reduction, nan_policy, per_sample, worst, len(texts), ci,
                                  base_sources, against, keys, summary)
                 for text in texts]
        all_terms = [t for p in plans for t in p.terms]
        base_terms = [t for p in plans for t in (p.base_terms or [])]
        used = _used_inputs(all_terms)
        if base_sources is not None:  # the baseline model's predictions: described and digested too
            for name, arr in _used_inputs(base_terms).items():
                if name not in used or used[name].identity() != arr.identity():
                    used[f"against_{name}" if name != "preds" else "against"] = arr
        for note in dict.fromkeys(n for a in used.values() for n in getattr(a, "notes", ())):
            diagnostics.warn("input-note", note, level="info")  # (a CSV header read as pandas' column names)
        hashing = start_hashing(used, hash) if provenance else None  # overlaps the evaluation

        def after_chunk(_: int) -> None:
            for p in plans:
                p.after_chunk()

        try:
            if engine == "dask":
                engine_info = _run_dask(texts, plans, preds, targets, inputs or {}, weights, read, reduction,
                                        nan_policy, worst, scheduler, chunk_size, ci)
            else:
                run(all_terms + base_terms, nan_policy=nan_policy, chunk_rows=chunk_size, on_progress=after_chunk)
                pitfalls.finish_all(unwrap(t.observe) for t in all_terms)
                from lossctl import workers as workers_module

                engine_info = {"name": "local", "workers": workers_module.worker_count(None), "partitions": 1}
            results = [p.result() for p in plans]
            for p, res in zip(plans, results):
                if p.sink is not None:
                    p.sink.finish()
                    res.per_sample_path = p.sink.path
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
            report.provenance["engine"] = engine_info
    return report


def _is_dask(value: Any) -> bool:
    """A dask array, Series or DataFrame (told without importing dask)."""
    return type(value).__module__.split(".")[0] in ("dask", "dask_expr") and hasattr(value, "__dask_graph__")


def _columns(data: Any, preds: Any, targets: Any, inputs: Mapping[str, Any] | None,
             weights: Any) -> tuple[Any, Any, dict[str, Any], Any]:
    """``data=``: a pandas or dask DataFrame; string (or list of strings) inputs name its columns."""
    if not hasattr(data, "columns"):
        raise UsageError(f"{option('data')} must be a pandas or dask DataFrame, got {type(data).__name__}")
    names = [str(c) for c in data.columns]

    def col(value: Any, role: str) -> Any:
        if value is None:
            return None
        wanted = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
        if wanted is None:
            return value  # an array given beside data=
        missing = [c for c in wanted if c not in names]
        if missing:
            raise UsageError(f"{role}: no column {missing[0]!r} in {option('data')} (columns: {', '.join(names)})")
        picked = data[wanted[0]] if isinstance(value, str) else data[wanted]
        if _is_dask(picked):
            return picked.to_dask_array(lengths=True)
        return picked.to_numpy()

    named = {k: col(v, k) for k, v in (inputs or {}).items()}
    return col(preds, "preds"), col(targets, "targets"), named, col(weights, "weights")


def _evaluation(texts: Sequence[str], reduction: str, nan_policy: str, worst: int, ci: Any = None) -> Any:
    import sys

    from lossctl.dask_engine import Evaluation

    plugins = []
    terms = [t for text in texts for t in bind(text)]
    for term in terms:
        module = sys.modules.get(term.spec.plugin or "")
        path = getattr(module, "__file__", None)
        if path and (term.spec.plugin or "").startswith("lossctl_plugin_") and path not in plugins:
            plugins.append(path)  # (--plugin FILE.py; an entry point's module is importable on the workers)
    return Evaluation(tuple(texts), reduction, nan_policy, worst, tuple(worst > 0 or None for _ in texts),
                      tuple(plugins), custom=any(t.spec.plugin for t in terms), ci=ci)


def _run_dask(texts: Sequence[str], plans: Sequence[_ExprPlan], preds: Any, targets: Any, inputs: Mapping[str, Any],
              weights: Any, read: ReadOptions, reduction: str, nan_policy: str, worst: int, scheduler: Any,
              chunk_size: int | None, ci: Any = None) -> dict[str, Any]:
    """Evaluate the planned expressions over files on dask; their merged states replace the plans'."""
    from lossctl import dask_engine

    files = dask_engine.file_inputs(preds, targets, inputs, weights, read)
    outcome = dask_engine.evaluate_files(_evaluation(texts, reduction, nan_policy, worst, ci), files,
                                         [p.terms for p in plans], scheduler, chunk_size)
    for p, st in zip(plans, outcome.states):
        p.state = st
    for w in outcome.warnings:
        diagnostics.warn(w.code, w.message, w.level)
    pitfalls.finish_all(obs for per_state in outcome.observers for obs in per_state)  # merged over the partitions
    return outcome.engine


def _evaluate_arrays(texts: Sequence[str], given: Mapping[str, Any], reduction: str, nan_policy: str, worst: int,
                     provenance: bool, scheduler: Any) -> Report:
    """Dask arrays (and NumPy arrays beside them) on dask: one state per chunk along axis 0."""
    from lossctl import dask_engine

    arrays = {k: (dask_engine.as_dask_array(v, k) if _is_dask(v) else dask_engine.from_numpy(v, k))
              for k, v in given.items()}
    used = {k: dask_engine.dask_input(a, k) for k, a in arrays.items()}
    # a loss that looks at the whole input before chunking (mining, CTC's targets), or whose samples
    # are not the rows of its inputs (one unbatched distribution), runs as one partition: never a
    # value from split batches. The others are bound here, on shapes only, so shape errors come first.
    whole = any(t.spec.prepare is not None for text in texts for t in bind(text))
    if not whole:
        named = {k: v for k, v in used.items() if k not in ("preds", "targets", WEIGHTS)}
        sources = Sources(preds=used.get("preds"), targets=used.get("targets"), named=named)
        rows = next(iter(used.values())).shape[0]
        for text in texts:
            for plan in LossState(text, reduction, nan_policy=nan_policy).plans(sources):
                whole = whole or plan.n != rows or any(a.shape[plan.spec.sample_axis(k)] != rows or
                                                       plan.spec.sample_axis(k) != 0 for k, a in plan.arrays.items())
    with diagnostics.collecting() as warnings:
        outcome = dask_engine.evaluate_arrays(_evaluation(texts, reduction, nan_policy, worst), arrays,
                                              scheduler, whole=whole)
        for w in outcome.warnings:
            diagnostics.warn(w.code, w.message, w.level)
        results = [st.result() for st in outcome.states]
    report = Report(version=__version__, inputs={k: a.describe() for k, a in used.items()}, results=results,
                    warnings=warnings)
    if provenance:
        report.provenance = provenance_block(used, None)
        report.provenance["engine"] = outcome.engine
    return report


def _delimiter(value: str | None) -> str | None:
    """``--delimiter``: one character; ``tab`` or ``\\t`` for a tab."""
    if value is None:
        return None
    sep = "\t" if value in ("tab", "\\t", "TAB") else value
    if len(sep) != 1 or sep in "\r\n\"":
        raise UsageError(f"{option('delimiter', repr(value))}: give one character (e.g. ';', '|', or 'tab')")
    return sep


def _classes(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--classes a,b,c`` (or a list): the class labels, in order; a repeat or an empty one is an error."""
    if value is None:
        return None
    labels = [c.strip() for c in (value.split(",") if isinstance(value, str) else value)]
    if not labels or "" in labels:
        raise UsageError(f"{option('classes', ','.join(labels))}: give the class labels in order, comma-separated, "
                         f"e.g. {option('classes', 'cat,dog,bird')}")
    repeated = sorted({c for c in labels if labels.count(c) > 1})
    if repeated:
        raise UsageError(f"{option('classes', ','.join(labels))}: {', '.join(repeated)} given twice")
    return tuple(labels)


def _plan_expression(text: str, sources: Sources, reduction: str, nan_policy: str, per_sample: str | None,
                     worst: int, count: int, ci: CIConfig | None = None, base_sources: Sources | None = None,
                     against: Any = None, keys: LazyArray | None = None, summary: bool | None = None) -> _ExprPlan:
    paired = base_terms = None
    if base_sources is not None:
        paired = PairedState(text, reduction, worst, nan_policy=nan_policy, ci=ci,
                             against=os.fspath(against) if isinstance(against, (str, os.PathLike)) else "<array>",
                             summary=bool(per_sample) or worst > 0 or summary or None, histogram=bool(summary))
        state = paired.cand
        observers = [pitfalls.observer(t.spec.name, t.params) for t in state.bound]
        terms, base_terms = paired.plans(sources, base_sources, observers=observers, stream_values=bool(per_sample),
                                         keys=keys)
    else:
        state = LossState(text, reduction, worst, nan_policy=nan_policy,
                          summary=bool(per_sample) or worst > 0 or summary or None, ci=ci, calibration=bool(summary))
        observers = [pitfalls.observer(t.spec.name, t.params) for t in state.bound]
        terms = state.plans(sources, observers=observers, stream_values=bool(per_sample), keys=keys)
    sink = None
    if per_sample:
        path = per_sample
        if count > 1:
            root, ext = os.path.splitext(path)
            path = f"{root}-{_slug(text)}{ext}"
        sink = PerSampleSink(path)
    return _ExprPlan(state=state, terms=terms, sink=sink, paired=paired, base_terms=base_terms)


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in text.lower())
    return "_".join(filter(None, keep.split("_")))[:60] or "loss"


def _used_inputs(terms: Sequence[TermPlan]) -> dict[str, LazyArray]:
    used: dict[str, LazyArray] = {}
    for tp in terms:
        for name, arr in tp.arrays.items():
            if name in tp.spec.all_inputs() or name in (WEIGHTS, KEYS):  # (not what a loss derives from its parameters)
                used.setdefault(name, arr)
    return used
