"""Parquet, Feather (``.feather``) and Arrow IPC (``.arrow``) files (extra ``parquet``: pyarrow).

``file.parquet:COL`` (or ``COL1,COL2``; a name, or a 0-based index) selects columns as for a CSV;
without a selector, every numeric column. A list or fixed-size-list column is a 2-D ``(N, C)`` array.

The file is cut into *units*: its row groups (Parquet) or record batches (IPC). A read of rows
``start:stop`` decodes the units it covers, every selected column of the file at once (PREDS and
TARGETS naming two columns of one file share one :class:`_ArrowSource`, so a unit is decoded once
for both: the other columns of the range wait until asked for), and keeps the units it used only
in part for the neighbouring range. Nothing is read ahead: ``pre_buffer=False`` and no
dataset scanner (whose default fragment/batch read-ahead doubled peak RSS in benchmarks/README.md),
so resident memory is a few units whatever the file's size. A file whose units are too large to
hold a few of (a one-row-group 1e9-row Parquet file) is streamed forward instead, batch by batch
(``sequential``, as a CSV is).

Nulls follow the CSV reader's policy for empty cells: a null is NaN and ``--nan-policy`` decides
(an integer or boolean column with nulls, known from the Parquet statistics or the IPC batches'
headers, is read as float64, as a CSV integer column with a blank cell is). Where nulls were not
known up front (a Parquet file written without statistics, a remote IPC file), an integer column
keeps its type and a null in it is exit 2 naming the column and row.

``partitions()`` lists ``(file, row_offset, rows)`` per unit: what a distributed engine may read
independently.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, input_label, reading, select_columns
from lossctl.errors import InputError, option

ARROW_SUFFIXES = (".parquet", ".pq", ".feather", ".arrow", ".ipc")
INSTALL = "pip install 'lossctl[parquet]'"
#: Units (row groups / record batches) kept decoded when a read used only part of them.
CACHE_UNITS = 4
#: Decoded ranges kept for the columns not yet asked for (one per worker thread in flight).
MAX_RANGES = 16
#: A unit larger than this (decoded, all selected columns) is streamed forward, not cached.
MAX_UNIT_BYTES = 64 << 20
#: Rows per batch when a file is streamed forward (units too large to cache).
STREAM_BATCH_ROWS = 1 << 18


def pyarrow() -> Any:
    """``pyarrow`` imported, or exit 2 saying how to install it."""
    try:
        import pyarrow as pa
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError(f"reading Parquet, Feather or Arrow files needs pyarrow: {INSTALL}") from None
    return pa


def arrow_errors() -> tuple[type[BaseException], ...]:
    pa = pyarrow()
    return (pa.ArrowException,)


def is_arrow(path: str) -> bool:
    return os.path.splitext(path.lower())[1] in ARROW_SUFFIXES


#: Units kept decoded, of every file (a sharded input's files share the budget), most recent last.
_CACHE: OrderedDict[tuple[Any, int], dict[str, np.ndarray]] = OrderedDict()
_LOCK = threading.Lock()


class _ArrowSource:
    """One open Parquet/IPC file: its schema, its units, and the recently decoded ones.

    ``wanted`` grows as inputs select columns of the file, before anything is read, so the first
    decode of a unit already holds every column any input needs (one scan for PREDS and TARGETS).
    """

    def __init__(self, path: str, label: str, opener: Any = None) -> None:
        pa = pyarrow()
        self.path, self.label = path, label
        self._opener = opener  # a callable returning a binary file object (remote files), or None
        self.kind = "parquet" if path.lower().endswith((".parquet", ".pq")) else "ipc"
        self.wanted: dict[str, _Column] = {}  # column → its converter
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Event] = {}
        self._ranges: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self._stream: Any = None
        self._stream_at = 0
        self._stream_buf: dict[str, np.ndarray] = {}
        self._stream_buf_start = 0
        self._ipc: Any = None
        self._batches: list[Any] | None = None
        self._pq: Any = None
        with reading(label):
            try:
                if self.kind == "parquet":
                    self._pq = self._parquet_file()
                    meta = self._pq.metadata
                    self.schema = self._pq.schema_arrow
                    self.unit_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
                    self.nulls = self._parquet_nulls(meta)
                else:
                    self._open_ipc()
                    self.nulls = self._ipc_nulls()
            except pa.ArrowException as exc:
                raise self._bad(exc) from None
        self.offsets = np.concatenate([[0], np.cumsum(self.unit_rows, dtype=np.int64)]).astype(np.int64)
        self.n_rows = int(self.offsets[-1])
        self.columns = list(self.schema.names)

    _TRANSIENT = ("_lock", "_loading", "_ranges", "_stream", "_stream_at", "_stream_buf", "_stream_buf_start",
                  "_pq", "_ipc", "_batches")

    def __getstate__(self) -> dict[str, Any]:
        """What crosses to another process (a dask worker): the file and its layout, not the
        open handles, locks or decoded units."""
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._loading, self._ranges = {}, {}
        self._stream, self._stream_at, self._stream_buf, self._stream_buf_start = None, 0, {}, 0
        self._pq = self._ipc = self._batches = None
        if self.kind == "ipc":
            with reading(self.label):
                self._open_ipc()

    def _bad(self, exc: BaseException) -> InputError:
        text = " ".join(str(exc).split())[:200]
        what = "Parquet" if self.kind == "parquet" else "Feather/Arrow IPC"
        return InputError(f"{self.label}: not a readable {what} file ({text}); re-write it with pyarrow")

    def _file(self) -> Any:
        return self._opener() if self._opener is not None else self.path

    def _parquet_file(self) -> Any:
        import pyarrow.parquet as pq

        # pre_buffer=False: no read-ahead of whole row groups' column chunks (it doubles peak RSS);
        # a local file is memory-mapped (no copy of the pages: 25% less CPU), and unmapped when the
        # ParquetFile, made per decode, goes
        return pq.ParquetFile(self._file(), pre_buffer=False, memory_map=self._opener is None)

    def _parquet_nulls(self, meta: Any) -> dict[str, bool | None]:
        """Column name → whether some row group has nulls (None: a row group has no statistics)."""
        out: dict[str, bool | None] = {}
        names = [meta.schema.column(i).path for i in range(meta.num_columns)]
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c, name in enumerate(names):
                top = name.split(".")[0]
                st = rg.column(c).statistics
                has = None if st is None or not st.has_null_count else st.null_count > 0
                prev = out.get(top, False)
                out[top] = True if (prev or has) else (None if (prev is None or has is None) else False)
        return out

    def _open_ipc(self) -> None:
        pa = pyarrow()
        source = pa.memory_map(self.path) if self._opener is None else pa.PythonFile(self._opener(), mode="r")
        try:
            self._ipc = pa.ipc.open_file(source)
            self.schema = self._ipc.schema
            self.unit_rows = [self._ipc.get_batch(i).num_rows for i in range(self._ipc.num_record_batches)]
        except pa.ArrowInvalid:
            # the IPC *stream* format: no footer to seek by, so its (zero-copy, memory-mapped) batches are listed
            source.seek(0)
            reader = pa.ipc.open_stream(source)
            self.schema = reader.schema
            self._batches = list(reader)
            self.unit_rows = [b.num_rows for b in self._batches]

    def want(self, columns: Sequence[_Column]) -> None:
        """Add ``columns`` to what every decode reads (what was decoded without them is dropped)."""
        with self._lock:
            new = [c for c in columns if c.name not in self.wanted]
            for c in new:
                self.wanted[c.name] = c
            if new:
                with _LOCK:
                    for key in [k for k in _CACHE if k[0] is self]:
                        del _CACHE[key]
                self._ranges.clear()
                self._stream = None

    def _ipc_nulls(self) -> dict[str, bool | None]:
        """Column name → whether a record batch has nulls: read from the batches' headers of a
        memory-mapped file (nothing decoded); unknown (None) for a remote one."""
        if self._opener is not None:
            return {}
        batches = self._batches if self._batches is not None else \
            [self._ipc.get_batch(i) for i in range(len(self.unit_rows))]
        return {name: any(b.column(k).null_count for b in batches) for k, name in enumerate(self.schema.names)}

    # -- decoding -------------------------------------------------------------------------------

    def _decode_unit(self, i: int) -> dict[str, np.ndarray]:
        pa = pyarrow()
        cols = list(self.wanted)
        try:
            if self.kind == "parquet":
                table = self._parquet_file().read_row_group(i, columns=cols, use_threads=False)
            else:
                batch = self._batches[i] if self._batches is not None else self._ipc.get_batch(i)
                table = pa.Table.from_batches([batch.select(cols)])
        except pa.ArrowException as exc:
            raise self._bad(exc) from None
        first = int(self.offsets[i])
        return {c: self.wanted[c].convert(table.column(c), first) for c in cols}

    def unit(self, i: int, keep: bool) -> dict[str, np.ndarray]:
        """Unit ``i`` decoded (every wanted column), from the cache or decoded once by one thread;
        ``keep``: cache it (a unit a range uses only in part: the next range wants the rest)."""
        while True:
            with _LOCK:
                if (self, i) in _CACHE:
                    _CACHE.move_to_end((self, i))
                    return _CACHE[(self, i)]
                event = self._loading.get(i)
                if event is None:
                    event = self._loading[i] = threading.Event()
                    break
            event.wait()
        try:
            data = self._decode_unit(i)
            if keep:
                with _LOCK:
                    _CACHE[(self, i)] = data
                    while len(_CACHE) > CACHE_UNITS:
                        _CACHE.popitem(last=False)
            return data
        finally:
            with _LOCK:
                del self._loading[i]
            event.set()

    def read(self, column: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of ``column``. The first column asked for a range decodes the range
        for every wanted column and keeps the others until they are asked for (the engine asks for
        PREDS then TARGETS of the same rows), so a range is decoded once for all of them."""
        key = (start, stop)
        with self._lock:
            entry = self._ranges.get(key)
            if entry is not None and column in entry:
                out = entry.pop(column)
                if not entry:
                    del self._ranges[key]
                return out
        cols = self._assemble(start, stop)
        out = cols.pop(column)
        if cols:
            with self._lock:
                self._ranges[key] = cols
                while len(self._ranges) > MAX_RANGES:  # an input opened but never read: do not hoard
                    self._ranges.pop(next(iter(self._ranges)))
        return out

    def _assemble(self, start: int, stop: int) -> dict[str, np.ndarray]:
        first = max(0, int(np.searchsorted(self.offsets, start, side="right")) - 1)
        pieces: dict[str, list[np.ndarray]] = {c: [] for c in self.wanted}
        i = first
        while i < len(self.unit_rows) and self.offsets[i] < stop:
            lo_row, hi_row = int(self.offsets[i]), int(self.offsets[i + 1])
            lo, hi = max(start, lo_row) - lo_row, min(stop, hi_row) - lo_row
            data = self.unit(i, keep=(lo, hi) != (0, hi_row - lo_row))
            for c in pieces:
                pieces[c].append(data[c][lo:hi])
            i += 1
        return {c: p[0] if len(p) == 1 else np.concatenate(p) if p else self.wanted[c].empty()
                for c, p in pieces.items()}

    # -- forward streaming (units too big to cache) -----------------------------------------------

    def read_forward(self, column: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of ``column`` read forward through the file in small batches. Every
        wanted column is kept from the current chunk's start (the inputs read each chunk in turn),
        so one pass serves them all; a read behind that starts again from the top."""
        with self._lock:
            if self._stream is None or start < self._stream_buf_start:
                self._restart()
            cut = start - self._stream_buf_start
            if cut > 0:
                self._stream_buf = {c: v[cut:] for c, v in self._stream_buf.items()}
                self._stream_buf_start = start
            while self._stream_at < stop:
                self._next_batch()
            return self._stream_buf[column][:stop - start].copy()

    def _restart(self) -> None:
        cols = list(self.wanted)
        if self.kind == "parquet":
            self._stream = iter(self._parquet_file().iter_batches(batch_size=STREAM_BATCH_ROWS, columns=cols,
                                                                  use_threads=False))
        else:
            self._stream = (b.select(cols) for b in (self._batches if self._batches is not None else
                            (self._ipc.get_batch(i) for i in range(len(self.unit_rows)))))
        self._stream_at = 0
        self._stream_buf_start = 0
        self._stream_buf = {c: self.wanted[c].empty() for c in cols}

    def _next_batch(self) -> None:
        pa = pyarrow()
        try:
            batch = next(self._stream)
        except StopIteration:
            raise InputError(f"{self.label}: the file ends early (row {self._stream_at} of {self.n_rows})") from None
        except pa.ArrowException as exc:
            raise self._bad(exc) from None
        for c in self._stream_buf:
            got = self.wanted[c].convert(batch.column(c), self._stream_at)
            self._stream_buf[c] = np.concatenate([self._stream_buf[c], got]) if len(self._stream_buf[c]) else got
        self._stream_at += batch.num_rows


@dataclass
class _Column:
    """How one Arrow column becomes NumPy: its dtype, its width (list columns), its checks."""

    name: str
    label: str
    dtype: np.dtype
    width: int | None  # C of a list column, None for a scalar column
    list_kind: str | None = None
    classes: tuple[str, ...] | None = None

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * (self.width or 1)

    def empty(self) -> np.ndarray:
        return np.empty((0,) if self.width is None else (0, self.width), dtype=self.dtype)

    def convert(self, col: Any, first_row: int) -> np.ndarray:
        import pyarrow as pa

        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if self.classes is not None:
            return self._classes(col, first_row)
        if self.width is None and not col.null_count:  # the common case: no pyarrow.compute (0.15 s to import)
            return _plain(col, self.dtype)
        import pyarrow.compute as pc

        if self.width is not None:
            lengths = pc.list_value_length(col) if self.list_kind != "fixed" else None
            if col.null_count:
                raise self._null(col, first_row, "")
            if lengths is not None and len(col):
                bad = pc.not_equal(lengths, self.width)
                if pc.any(bad).as_py():
                    row = int(pc.index(bad, True).as_py())
                    raise InputError(f"{self.label}: list column {self.name!r} is ragged: row {first_row + row} "
                                     f"has {lengths[row].as_py()} values where the first row has {self.width}; "
                                     f"every row of a list column needs the same length")
            values = col.flatten() if self.list_kind != "fixed" else col.values.slice(
                col.offset * self.width, len(col) * self.width)
            return self._scalars(values, first_row, per_row=self.width).reshape(len(col), self.width)
        return self._scalars(col, first_row)

    def _scalars(self, col: Any, first_row: int, per_row: int = 1) -> np.ndarray:
        import pyarrow.compute as pc

        if col.null_count:
            if self.dtype.kind == "f":
                col = pc.fill_null(col.cast("float64" if self.dtype.itemsize == 8 else col.type), float("nan"))
            else:
                raise self._null(col, first_row, "", per_row)
        return _plain(col, self.dtype)

    def _null(self, col: Any, first_row: int, _: str, per_row: int = 1) -> InputError:
        import pyarrow.compute as pc

        row = first_row + int(pc.index(col.is_null(), True).as_py()) // per_row
        kind = "a list column" if self.width is not None else f"an {self.dtype} column"
        return InputError(f"{self.label}: column {self.name!r} has a null at row {row}, and {kind} cannot hold "
                          f"NaN; fill the nulls, or write the column as float")

    def _classes(self, col: Any, first_row: int) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        codes = pc.index_in(col, value_set=pa.array(list(self.classes)))
        if codes.null_count:
            row = int(pc.index(codes.is_null(), True).as_py())
            raise InputError(f"{self.label}: column {self.name!r} has the label {col[row].as_py()!r} at row "
                             f"{first_row + row}, which is not in {option('classes', ','.join(self.classes))}; "
                             f"add it to the list")
        return codes.to_numpy(zero_copy_only=False).astype(np.int64)


def _plain(col: Any, dtype: np.dtype) -> np.ndarray:
    """A null-free Arrow array as NumPy: its data buffer itself for numbers (``to_numpy`` would
    import pandas, 0.2 s), converted for booleans (bit-packed in Arrow)."""
    import pyarrow as pa

    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        native = np.dtype(t.to_pandas_dtype())
        out = np.frombuffer(col.buffers()[1], dtype=native, count=len(col), offset=col.offset * native.itemsize)
    else:
        out = col.to_numpy(zero_copy_only=False)
    return out if out.dtype == dtype else out.astype(dtype)


def _numpy_dtype(t: Any) -> np.dtype | None:
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return np.dtype(np.bool_)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return np.dtype(t.to_pandas_dtype())
    return None


def _text(t: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


_SOURCES: weakref.WeakValueDictionary[Any, _ArrowSource] = weakref.WeakValueDictionary()


def _source(path: str, label: str, opener: Any, key: Any) -> _ArrowSource:
    source = _SOURCES.get(key)
    if source is None:
        source = _ArrowSource(path, label, opener)
        _SOURCES[key] = source
    return source


def open_arrow(path: str, selector: str | None, name: str, *, classes: Sequence[str] | None = None,
               shown: str | None = None, opener: Any = None, key: Any = None) -> ArrowArray:
    """Columns ``selector`` of the Parquet/Feather/Arrow file ``path`` (default: the numeric ones)."""
    where = shown or path
    label = input_label(name, where)
    if key is None:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    source = _source(path, where, opener, key)
    columns = source.columns
    schema = source.schema
    if selector:
        chosen = select_columns(selector, columns, label)
    else:
        chosen = [c for c in columns if _numpy_dtype(schema.field(c).type) is not None]
        text = [c for c in columns if _text(schema.field(c).type)]
        if classes is not None and len(text) == 1 and not chosen:
            chosen = text
        if not chosen:
            hint = f" (string class labels: pass {option('classes', 'a,b,c')})" if text else ""
            raise InputError(f"{label}: no numeric columns (columns: {', '.join(columns)}); "
                             f"select one with {where}:COLUMN{hint}")
    convs = [_converter(source, schema.field(c), label, classes) for c in chosen]
    if len(convs) > 1 and any(c.width is not None for c in convs):
        raise InputError(f"{label}: a list column is a whole (N, C) input; select it alone "
                         f"({where}:{next(c.name for c in convs if c.width is not None)})")
    if len(convs) > 1 and any(c.classes is not None for c in convs):
        raise InputError(f"{label}: columns {', '.join(chosen)} mix class labels and numbers; "
                         f"select the label column alone")
    source.want(convs)
    dtype = convs[0].dtype if len({c.dtype for c in convs}) == 1 else np.result_type(*[c.dtype for c in convs])
    n = source.n_rows
    shape = (n,) if len(convs) == 1 and convs[0].width is None else \
        (n, convs[0].width) if len(convs) == 1 else (n, len(convs))
    return ArrowArray(path=path, shape=shape, dtype=np.dtype(dtype), key=selector or None, name=name,
                      shown=shown, source=source, converters={c.name: c for c in convs}, columns=tuple(chosen))


def _converter(source: _ArrowSource, fld: Any, label: str, classes: Sequence[str] | None) -> _Column:
    import pyarrow as pa

    t, name = fld.type, fld.name
    if _text(t):
        if classes is None:
            raise InputError(f"{label}: column {name!r} is text ({t}), not numbers; select numeric columns "
                             f"(for string class labels, pass {option('classes', 'a,b,c')})")
        return _Column(name, label, np.dtype(np.int64), None, classes=tuple(classes))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = _numpy_dtype(t.value_type)
        if inner is None:
            raise InputError(f"{label}: list column {name!r} holds {t.value_type}, not numbers; "
                             f"write a list of floats or integers")
        if pa.types.is_fixed_size_list(t):
            width, kind = t.list_size, "fixed"
        else:
            width, kind = _first_list_length(source, name), "list"
        if width == 0:
            raise InputError(f"{label}: list column {name!r} has empty lists: no values to evaluate")
        return _Column(name, label, inner, width, kind)
    dtype = _numpy_dtype(t)
    if dtype is None:
        raise InputError(f"{label}: column {name!r} is {t}, not numbers; select a numeric column "
                         f"(float, integer or boolean)")
    if dtype.kind in "iub" and source.nulls.get(name):  # nulls known from the statistics: NaN as in a CSV
        dtype = np.dtype(np.float64)
    return _Column(name, label, dtype, None)


def _first_list_length(source: _ArrowSource, name: str) -> int:
    import pyarrow as pa

    if not source.unit_rows or source.n_rows == 0:
        return 0
    with reading(source.label):
        try:
            if source.kind == "parquet":
                first = next(source._parquet_file().iter_batches(batch_size=1, columns=[name]))
            else:
                first = source._batches[0] if source._batches is not None else source._ipc.get_batch(0)
                i = 1
                while first.num_rows == 0 and i < len(source.unit_rows):
                    first = source._batches[i] if source._batches is not None else source._ipc.get_batch(i)
                    i += 1
        except pa.ArrowException as exc:
            raise source._bad(exc) from None
        value = first.column(name)[0]
    return len(value.as_py()) if value.is_valid else 0


@dataclass
class ArrowArray(LazyArray):
    """Columns of a Parquet/Feather/Arrow file, decoded unit by unit as they are read."""

    source: _ArrowSource = field(default=None, repr=False)  # type: ignore[assignment]
    converters: dict[str, _Column] = field(default_factory=dict, repr=False)
    columns: tuple[str, ...] = ()

    @property  # type: ignore[override]
    def sequential(self) -> bool:  # type: ignore[override]
        return self._unit_bytes() > MAX_UNIT_BYTES

    def _unit_bytes(self) -> int:
        return max(self.source.unit_rows, default=0) * sum(c.row_bytes for c in self.source.wanted.values())

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        with reading(self.label):
            if axis != 0:
                return self.read_across(start, stop, axis)
            stop = max(start, min(stop, self.shape[0]))
            return self._columns(start, stop, copy=True)

    def _columns(self, start: int, stop: int, copy: bool) -> np.ndarray:
        if self.sequential:
            cols = [self.source.read_forward(c, start, stop) for c in self.columns]
        else:
            cols = [self.source.read(c, start, stop) for c in self.columns]
        if len(cols) == 1:
            out = cols[0]
            return out.copy() if copy and not out.flags.owndata else out
        return np.column_stack(cols).astype(self.dtype, copy=False)

    def can_view(self) -> bool:
        return not self.sequential

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        with reading(self.label):
            stop = max(start, min(stop, self.shape[0]))
            return self._columns(start, stop, copy=False), _no_release

    remote: Any = field(default=None, repr=False)  # a URL's {url, etag, size} (lossctl.readers.remote)

    def identity(self) -> Any:
        return ("arrow", self.path, self.columns)

    def content(self) -> Any:
        return self.remote if self.remote is not None else self.path

    def boundaries(self) -> list[int]:
        """Rows where a unit ends: the engine cuts its tasks there, so a task decodes whole units."""
        return [int(b) for b in self.source.offsets[1:-1]]

    def partitions(self) -> list[tuple[str, int, int]]:
        where = self.shown or self.path
        return [(where, int(self.source.offsets[i]), rows) for i, rows in enumerate(self.source.unit_rows)]


def _no_release() -> None:
    """Nothing to unmap: a view is a slice of a decoded unit."""

