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
from lossctl.version import __version__
from lossctl.registry import REDUCTIONS
from lossctl.result import Report
from lossctl.state import LossState


@dataclass
class _ExprPlan:
    """One expression of the run: its state, its plans over the inputs, its per-sample file."""

    state: LossState
    terms: list[TermPlan]
    sink: PerSampleSink | None = None

    def after_chunk(self) -> None:
        chunk = self.state.take_chunk(self.terms)
        if chunk is not None and self.sink is not None:
            self.sink.write(*chunk)


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
    the logits' columns, a list or ``"a,b,c"``) say how CSV inputs are read (SPEC §5). ``by``: one
    slice key per sample (a path ``g.csv:COL`` / ``g.npy``, or an array): each result also gets
    ``.slices``, one value per key, worst first (SPEC §9). ``summary=True`` keeps the per-sample
    statistics (the report bundle's distribution figure) without ``worst``.
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
    texts = [loss] if isinstance(loss, str) else list(loss)
    if not texts:
        raise UsageError(f"no loss given; pass {option('loss', 'NAME')} (see 'lossctl losses')")
    bound = [term for text in texts for term in bind(text)]  # all expression errors before any file is read
    check_named_inputs(list(inputs or {}), [term.spec for term in bound])

    read = ReadOptions(header, _delimiter(delimiter), _classes(classes))
    sources = Sources(preds=_open(preds, "preds", read), targets=_open(targets, "targets", read))
    for name, value in (inputs or {}).items():
        opened = value if isinstance(value, LazyArray) else (
            open_input(os.fspath(value), name, read) if isinstance(value, (str, os.PathLike)) else from_array(value, name))
        sources.named[name] = opened
    if weights is not None:
        sources.weights = weights if isinstance(weights, LazyArray) else (
            open_input(os.fspath(weights), WEIGHTS) if isinstance(weights, (str, os.PathLike))
            else from_array(weights, WEIGHTS))
        check_weights(sources.weights)

    keys = None
    if by is not None:
        from lossctl.slices import keys_input, open_keys

        keys = open_keys(os.fspath(by)) if isinstance(by, (str, os.PathLike)) else keys_input(by)
    with diagnostics.collecting() as warnings:
        plans = [_plan_expression(text, sources, reduction, nan_policy, per_sample, worst, len(texts), keys, summary)
                 for text in texts]
        all_terms = [t for p in plans for t in p.terms]
        used = _used_inputs(all_terms)
        for note in dict.fromkeys(n for a in used.values() for n in getattr(a, "notes", ())):
            diagnostics.warn("input-note", note, level="info")  # (a CSV header read as pandas' column names)
        hashing = start_hashing(used, hash) if provenance else None  # overlaps the evaluation

        def after_chunk(_: int) -> None:
            for p in plans:
                p.after_chunk()

        try:
            run(all_terms, nan_policy=nan_policy, chunk_rows=chunk_size, on_progress=after_chunk)
            pitfalls.finish_all(unwrap(t.observe) for t in all_terms)
            results = [p.state.result() for p in plans]
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
                     worst: int, count: int, keys: LazyArray | None = None, summary: bool | None = None) -> _ExprPlan:
    state = LossState(text, reduction, worst, nan_policy=nan_policy,
                      summary=bool(per_sample) or worst > 0 or summary or None, calibration=bool(summary))
    observers = [pitfalls.observer(t.spec.name, t.params) for t in state.bound]
    terms = state.plans(sources, observers=observers, stream_values=bool(per_sample), keys=keys)
    sink = None
    if per_sample:
        path = per_sample
        if count > 1:
            root, ext = os.path.splitext(path)
            path = f"{root}-{_slug(text)}{ext}"
        sink = PerSampleSink(path)
    return _ExprPlan(state=state, terms=terms, sink=sink)


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
