"""``--engine dask``: one :class:`~lossctl.state.LossState` per partition on a dask cluster, merged in
a fixed-order tree (SPEC §8). Imported only when the dask engine is asked for.

* **Partitions** are row ranges ``[start, stop)`` of the inputs (:func:`partitions`). A task gets the
  input *specs* (paths), re-opens them on the worker and reads only its rows
  (:meth:`LossState.update_rows`): nothing big travels from the client. A reader that knows its
  shards or row groups exposes ``boundaries() -> list[int]`` (the rows where a unit ends) and
  partitions then start on those rows. Inputs that cannot read a row range without reading
  everything before it (a streamed CSV) or that are parsed whole into memory (CSV, ``.npz``) are one
  partition: splitting them would make every worker parse the whole file.
* **Merging**: the partition states merge in a tree of ``split_every`` states per node, built from
  the partition order alone, so the merged state does not depend on the cluster size or on which
  task finished first; it equals ``--engine local`` to float64 rounding (compensated sums, ≤ 1e-12
  relative).
* **Whole-batch losses** (triplet/contrastive mining, info_nce, cox_ph, and any loss with a
  ``prepare`` step that looks at the whole input): from files, each partition's worker reads the
  whole batch it needs and computes its own rows against it, exactly as the local engine does
  chunk by chunk, so the value is the local one. From dask arrays (the Python API) such a loss runs
  as one partition.
* **Dask arrays** (``lossctl.evaluate``): partitions follow the chunks along axis 0; each block
  becomes a state where it lives.

A task whose worker dies is rerun by dask on another worker; one that kills its workers more often
than the scheduler allows (``distributed.scheduler.allowed-failures``) ends the run with one
``error:`` line (exit 2), never with a value from fewer partitions. An input error found on a
worker (NaN, a value outside the loss's domain) is the local engine's message: the worker counts
over the whole input, as the local engine does.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl import diagnostics, pitfalls
from lossctl.arrays import LazyArray, MemoryArray, from_array
from lossctl.binding import Sources
from lossctl.errors import InputError, LossctlError, UsageError, option
from lossctl.readers import STDIN, ReadOptions, open_input, open_source, split_spec, stdin_file
from lossctl.result import Warning_
from lossctl.state import LossState

INSTALL = "pip install 'lossctl[dask]'"
SPLIT_EVERY = 8  # states merged per tree node: depth = ceil(log8(partitions))
PARTITION_ELEMENTS = 1 << 22  # default partition size: 4M elements of the widest input (16 MB float32)
CONNECT_TIMEOUT = "5s"


def require() -> None:
    """Import dask and distributed, or exit 2 saying how to install them."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"{option('engine', 'dask')} needs dask and distributed: {INSTALL}") from None


# ------------------------------------------------------------------------------ partitions


def partitions(arrays: Sequence[LazyArray], n: int, target_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` covering ``0:n`` in order, about ``target_rows`` each.

    Cut points are the rows where an input's shards or row groups begin (``boundaries()`` of a
    reader that has them); consecutive small pieces are joined up to ``target_rows`` and larger
    pieces split evenly. An input that cannot read a row range cheaply makes it one partition.
    """
    if n <= 0:
        return [(0, max(n, 0))]
    if any(not _splittable(a) for a in arrays):
        return [(0, n)]
    cuts: set[int] = set()
    for arr in arrays:
        bounds = getattr(arr, "boundaries", None)
        if callable(bounds):
            cuts.update(int(b) for b in bounds() if 0 < b < n)
    edges = [0, *sorted(cuts), n]
    pieces: list[tuple[int, int]] = []
    for a, b in zip(edges, edges[1:]):
        if pieces and (b - pieces[-1][0]) <= target_rows:  # join small shards
            pieces[-1] = (pieces[-1][0], b)
            continue
        k = max(1, math.ceil((b - a) / target_rows))
        pieces.extend((a + (b - a) * i // k, a + (b - a) * (i + 1) // k) for i in range(k))
    return pieces


def _splittable(arr: LazyArray) -> bool:
    base = getattr(arr, "base", None)
    if isinstance(base, LazyArray) and not _splittable(base):
        return False
    return not arr.sequential and not isinstance(arr, MemoryArray)


def default_rows(n: int, row_elements: int, workers: int) -> int:
    """Rows per partition: at most PARTITION_ELEMENTS elements, and at least one partition per worker."""
    return max(1, min(math.ceil(n / max(1, workers)), PARTITION_ELEMENTS // max(1, row_elements)))


# ------------------------------------------------------------------------------ scheduler


def parse_scheduler(text: str | None) -> tuple[str, Any]:
    """``local`` | ``local:N`` | ``tcp://HOST:PORT`` → ("local", N) or ("tcp", address)."""
    text = (text or "local").strip()
    if text == "local":
        return "local", os.cpu_count() or 1
    if text.startswith("local:"):
        count = text[len("local:"):]
        if count.isdigit() and int(count) >= 1:
            return "local", int(count)
    elif text.startswith(("tcp://", "tls://")) and ":" in text.split("://", 1)[1]:
        return "tcp", text
    raise UsageError(f"{option('scheduler', text)}: give local, local:N (N worker processes) or "
                     f"tcp://HOST:PORT (an existing dask scheduler)")


@contextlib.contextmanager
def connect(scheduler: Any) -> Iterator[Any]:
    """A ``distributed.Client``: the one given, a new ``LocalCluster`` (``local[:N]``), or a connection
    to ``tcp://HOST:PORT`` (an unreachable one is exit 2 after CONNECT_TIMEOUT)."""
    require()
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    kind, arg = parse_scheduler(scheduler)
    if kind == "local":
        import logging

        from distributed import LocalCluster

        with LocalCluster(n_workers=arg, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        _reachable(arg)
        client = Client(arg, timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # refused, timed out, or something there that does not speak dask's protocol
        if not isinstance(exc, (OSError, TimeoutError)):
            raise UsageError(f"{option('scheduler', arg)}: what answers there is not a dask scheduler "
                             f"({type(exc).__name__}); check the address (a scheduler's default port is 8786)") from None
        raise UsageError(f"{option('scheduler', arg)}: cannot reach the dask scheduler ({_short(exc)}); start it "
                         f"(dask scheduler), check host and port, or use {option('scheduler', 'local:N')}") from None
    with client:
        yield client


def _reachable(address: str) -> None:
    """Fail at once when nothing listens at ``address`` (the client would retry until its timeout)."""
    import socket

    host, _, port = address.split("://", 1)[1].rpartition(":")
    if not port.isdigit():
        raise OSError(f"no port in {address}")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=float(CONNECT_TIMEOUT.rstrip("s"))):
        pass


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


# ------------------------------------------------------------------------------ the evaluation


@dataclass(frozen=True)
class Evaluation:
    """What every partition task needs besides its rows: small, pickled to the workers."""

    exprs: tuple[str, ...]
    reduction: str
    nan_policy: str
    worst: int
    summary: tuple[bool | None, ...]
    plugins: tuple[str, ...] = ()  # plugin files whose losses the expressions use (loaded on the worker)
    custom: bool = False  # a loss comes from a plugin (a file above, or an installed entry point)
    ci: Any = None  # a CIConfig (--ci): the interval's buckets/resamples are keyed by row, so they merge

    def states(self) -> list[LossState]:
        if self.custom:
            _load_plugins(self.plugins)
        return [LossState(e, self.reduction, self.worst, nan_policy=self.nan_policy, summary=s, ci=self.ci)
                for e, s in zip(self.exprs, self.summary)]


@dataclass(frozen=True)
class FileInputs:
    """The inputs by spec (``p.npy``, ``p.csv:col``, a URL…), re-opened on each worker."""

    preds: str | None = None
    targets: str | None = None
    named: tuple[tuple[str, str], ...] = ()
    weights: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)

    def open(self) -> Sources:
        src = Sources(preds=open_source(self.preds, "preds", self.read) if self.preds else None,
                      targets=open_source(self.targets, "targets", self.read) if self.targets else None)
        for name, spec in self.named:
            src.named[name] = open_input(spec, name, self.read)
        if self.weights:
            src.weights = open_input(self.weights, "weights")
        return src


def file_inputs(preds: Any, targets: Any, named: Mapping[str, Any], weights: Any, read: ReadOptions) -> FileInputs:
    """The specs as the workers must see them: absolute paths (a worker's working directory is its
    own), stdin (``-``) as the file it was copied to; URLs as given."""
    def spec(value: Any) -> str | None:
        if value is None:
            return None
        text = os.fspath(value)
        path, selector = split_spec(text)
        if path == STDIN and not os.path.exists(path):
            return stdin_file() + (f":{selector}" if selector else "")
        if "://" in text or os.path.isabs(text):
            return text
        return os.path.join(os.getcwd(), text)  # (a glob or a PATH:COL selection too)

    return FileInputs(spec(preds), spec(targets), tuple((k, spec(v)) for k, v in named.items()),  # type: ignore[misc]
                      spec(weights), read)


@dataclass
class Partial:
    """A partition's (or a merged subtree's) states, one per expression, and what it warned."""

    states: list[LossState]
    warnings: list[Warning_]
    error: LossctlError | None = None  # a user's error in this partition (the first in partition order wins)
    observers: list[list[Any]] = field(default_factory=list)  # per state, per term: pitfalls observers


def _file_partition(ev: Evaluation, inputs: FileInputs, start: int, stop: int, which: tuple[int, ...]) -> Partial:
    """The task of one partition: re-open the inputs, evaluate rows start:stop of expressions ``which``."""
    try:
        states = ev.states()
        observed = []
        with diagnostics.collecting() as warnings:
            sources = inputs.open()
            for i in which:
                st = states[i]
                observed.append([pitfalls.observer(t.spec.name, t.params) for t in st.bound])
                st.update_rows(sources, start, stop, observers=observed[-1])
        return Partial([states[i] for i in which], list(warnings), observers=observed)
    except LossctlError as exc:
        return _failed(exc)


def _block_partition(ev: Evaluation, start: int, blocks: dict[str, Any]) -> Partial:
    """The task of one block of dask arrays (NumPy blocks by input name; ``weights`` among them)."""
    try:
        states = ev.states()
        weights = blocks.pop("weights", None)
        preds, targets = blocks.pop("preds", None), blocks.pop("targets", None)
        with diagnostics.collecting() as warnings:
            for st in states:
                st.update(preds, targets, start=start, weights=weights, **blocks)
        return Partial(states, list(warnings))
    except LossctlError as exc:
        return _failed(exc)


def _failed(exc: LossctlError) -> Partial:
    """A partition's user error, returned (not raised) so the merge reports the first partition's
    error whatever task failed first; as an InputError/UsageError with the same message (some error
    classes take other constructor arguments and would not unpickle)."""
    raw = exc.args[0] if exc.args else str(exc)
    return Partial([], [], (InputError if isinstance(exc, InputError) else UsageError)(raw))


def _merge(*parts: Partial) -> Partial:
    """Merge partials left to right (the tree fixes the order); the first error stops the merge."""
    for p in parts:
        if p.error is not None:
            return p
    states = list(parts[0].states)
    warnings = list(parts[0].warnings)
    observers = [list(obs) for obs in parts[0].observers]
    for p in parts[1:]:
        states = [a.merge(b) for a, b in zip(states, p.states)]
        warnings.extend(w for w in p.warnings if all((w.code, w.message) != (v.code, v.message) for v in warnings))
        observers = [[_merge_observers(a, b) for a, b in zip(mine, theirs)] for mine, theirs in zip(observers, p.observers)]
    return Partial(states, warnings, observers=observers)


def _merge_observers(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a.merge(b)


def tree(leaves: Sequence[Any], split_every: int = SPLIT_EVERY) -> Any:
    """The fixed-order merge tree over ``leaves`` (dask delayed objects, in partition order).

    Node names are fresh per tree (a uuid): a fixed name ("lossctl-merge-1-0") or one derived from
    the inputs could be handed another run's, or a previous evaluation's, merged state while the
    scheduler still holds that key (runs sharing a cluster, consecutive evaluations on one client)."""
    import uuid

    from dask import delayed

    level = list(leaves)
    depth = 0
    run = uuid.uuid4().hex[:16]
    while len(level) > 1:
        depth += 1
        level = [delayed(_merge, pure=True)(*level[i:i + split_every],
                                            dask_key_name=f"lossctl-merge-{run}-{depth}-{i}")
                 for i in range(0, len(level), split_every)]
    return level[0]


def _load_plugins(paths: Sequence[str]) -> None:
    from lossctl.plugins import load_plugins  # (files once per worker process; entry points too)

    load_plugins(paths)


def _compute(client: Any, root: Any) -> Any:
    """Run the graph on ``client`` (or dask's current scheduler); dask errors become one error line."""
    from distributed import KilledWorker

    try:
        if client is None:
            import dask

            done = dask.compute(root)[0]
        else:
            future = client.compute(root)
            try:
                done = future.result()
            finally:
                future.release()
    except KilledWorker as exc:
        raise UsageError(f"the dask cluster lost the workers running a partition several times ({_short(exc)}); "
                         f"no value was computed: check the workers' memory and logs, and run again") from None
    except (OSError, TimeoutError) as exc:  # the scheduler went away
        raise UsageError(f"lost the connection to the dask scheduler ({_short(exc)}); no value was computed") from None
    for part in done if isinstance(done, list) else [done]:
        if part.error is not None:
            raise part.error
    return done


@dataclass
class Outcome:
    """The merged states (in the order of the expressions) and what the engine did."""

    states: list[LossState]
    warnings: list[Warning_]
    engine: dict[str, Any]
    observers: list[list[Any]] = field(default_factory=list)  # merged pitfalls observers, per state


def evaluate_files(ev: Evaluation, inputs: FileInputs, plans: Sequence[Sequence[Any]], scheduler: Any,
                   chunk_rows: int | None = None) -> Outcome:
    """Evaluate ``ev`` over files: ``plans[i]`` are expression i's plans bound on the client (their
    sample counts and arrays decide the partitions). ``chunk_rows`` (``--chunk-size``): rows per
    partition."""
    from dask import delayed

    groups: dict[int, list[int]] = {}
    for i, terms in enumerate(plans):
        groups.setdefault(max(t.n for t in terms), []).append(i)
    import uuid

    run = uuid.uuid4().hex[:16]  # (fixed task names could collide with a previous evaluation's)
    with connect(scheduler) as client:
        workers = len(client.scheduler_info().get("workers", {})) or 1
        roots = []
        count = 0
        for n, which in groups.items():
            arrays = [a for i in which for t in plans[i] for a in t.arrays.values()]
            row_elements = max((_row_elements(a) for a in arrays), default=1)
            rows = chunk_rows or default_rows(n, row_elements, workers)
            parts = partitions(arrays, n, rows)
            count += len(parts)
            leaves = [delayed(_file_partition, pure=True)(ev, inputs, s, e, tuple(which),
                                                          dask_key_name=f"lossctl-part-{run}-{n}-{s}-{e}")
                      for s, e in parts]
            roots.append((which, tree(leaves)))
        done = _compute(client, delayed(_collect, pure=True)(*(r for _, r in roots))) if len(roots) > 1 else \
            [_compute(client, roots[0][1])]
    states: list[Any] = [None] * len(plans)
    observers: list[list[Any]] = [[] for _ in plans]
    warnings: list[Warning_] = []
    for (which, _), part in zip(roots, done):
        for i, st, obs in zip(which, part.states, part.observers):
            states[i], observers[i] = st, obs
        warnings.extend(part.warnings)
    return Outcome(states, warnings, {"name": "dask", "workers": workers, "partitions": count}, observers)


def _collect(*parts: Partial) -> list[Partial]:
    return list(parts)


def _row_elements(arr: LazyArray) -> int:
    return int(np.prod(arr.shape[1:], dtype=np.int64)) if len(arr.shape) > 1 else 1


# ------------------------------------------------------------------------------ dask collections


def is_collection(value: Any) -> bool:
    """Whether ``value`` is a dask array, DataFrame or Series (without importing dask)."""
    return type(value).__module__.split(".")[0] in ("dask", "dask_expr") and hasattr(value, "__dask_graph__")


def as_dask_array(value: Any, label: str) -> Any:
    """A dask array from a dask array, Series or DataFrame (columns as axis 1), lengths known."""
    import dask.array as da

    if isinstance(value, da.Array):
        return value
    if hasattr(value, "to_dask_array"):
        return value.to_dask_array(lengths=True)
    raise InputError(f"{label}: a {type(value).__name__} is not an array; give a dask array, Series or DataFrame")


@dataclass
class DaskInput(LazyArray):
    """A dask array seen by the client: its shape and dtype (blocks are read on the workers)."""

    arr: Any = field(default=None, repr=False)

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:  # (small reads on the client: checks)
        index = [slice(None)] * len(self.shape)
        index[axis] = slice(start, stop)
        return np.asarray(self.arr[tuple(index)].compute())

    def identity(self) -> Any:
        return ("dask", self.arr.name)

    def content(self) -> str | np.ndarray:
        return self.path


def dask_input(arr: Any, name: str) -> DaskInput:
    return DaskInput(path="<dask array>", shape=tuple(int(s) for s in arr.shape), dtype=np.dtype(arr.dtype),
                     name=name, arr=arr)


def evaluate_arrays(ev: Evaluation, arrays: Mapping[str, Any], scheduler: Any, *, whole: bool) -> Outcome:
    """Evaluate ``ev`` over dask arrays by input name (``preds``, ``targets``, named inputs, ``weights``),
    one state per chunk of the first array along axis 0 (the others are rechunked to match);
    ``whole``: one partition, for whole-batch losses."""
    from dask import delayed

    arrays = {k: (a.compute_chunk_sizes() if a.ndim and math.isnan(a.shape[0]) else a) for k, a in arrays.items()}
    if whole:  # each input in one block, whatever its sample axis (CTC's log_probs is (T, N, C))
        blocks = {name: [a.rechunk(-1).to_delayed().reshape(-1)[0]] for name, a in arrays.items()}
        starts = np.zeros(1, dtype=np.int64)
    else:
        first_name, first = next(iter(arrays.items()))
        n = int(first.shape[0])
        for name, a in arrays.items():
            if int(a.shape[0]) != n:
                raise InputError(f"{name} has {a.shape[0]} rows but {first_name} has {n}; "
                                 f"the inputs need the same number of samples")
        rows = tuple(int(c) for c in first.chunks[0])
        blocks = {name: list(a.rechunk({0: rows, **{i: -1 for i in range(1, a.ndim)}}).to_delayed().reshape(-1))
                  for name, a in arrays.items()}
        starts = np.concatenate([[0], np.cumsum(rows)])[:-1]
    leaves = [delayed(_block_partition, pure=True)(ev, int(s), {k: v[i] for k, v in blocks.items()})
              for i, s in enumerate(starts)]
    root = tree(leaves)
    if scheduler is None:
        client = _current_client()
        done = _compute(client, root)
        workers = _workers(client)
    else:
        with connect(scheduler) as client:
            done = _compute(client, root)
            workers = _workers(client)
    return Outcome(done.states, done.warnings, {"name": "dask", "workers": workers, "partitions": len(leaves)})


def _current_client() -> Any:
    """The distributed client in use (``Client()`` made by the user), or None: dask's default scheduler."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _workers(client: Any) -> int:
    if client is None:
        return os.cpu_count() or 1
    return len(client.scheduler_info().get("workers", {})) or 1


def from_numpy(value: Any, name: str) -> Any:
    """A NumPy array (or anything array-like) as a dask array, with the default partition size."""
    import dask.array as da

    arr = from_array(value, name).data
    rows = max(1, PARTITION_ELEMENTS // max(1, int(np.prod(arr.shape[1:], dtype=np.int64))))
    return da.from_array(arr, chunks=(rows,) + tuple(arr.shape[1:]))
