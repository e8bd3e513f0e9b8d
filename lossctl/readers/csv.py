"""CSV/TSV files: columns parsed in chunks as they are read, so memory stays bounded.

Plain numeric files are parsed by the C kernels (lossctl/csrc/csv.c) on worker threads, block by
block ahead of the reader; anything the C parser declines (quotes, text, ragged rows...) is read by
pandas from the top. Either way a file is parsed once for every column selection that reads it.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl import ckernels, workers
from lossctl.arrays import NUMERIC_KINDS, LazyArray, input_label
from lossctl.errors import InputError
from lossctl.words import did_you_mean

_INT_RE = re.compile(r"^-?\d+$")


CSV_CHUNK_ROWS = 1 << 18  # rows parsed at a time (and sniffed at open), at most...
CSV_CHUNK_CELLS = 1 << 21  # ...this many fields per chunk (wide files get fewer rows)
_CSV_KEEP_CHUNKS = 2  # parsed chunks kept behind the furthest read (readers run in step)


def _count_csv_rows(path: str) -> int:
    """Non-blank lines of the file (pandas skips blank lines), counted in large binary blocks."""
    lines = blank = 0
    prev = b"\n"  # the byte before the block ("start of file" counts as after a newline)
    last = b""
    buf = np.empty(1 << 20, dtype=np.uint8)  # reused: no fresh pages per block
    with open(path, "rb", buffering=0) as fh:
        while True:
            got = fh.readinto(buf)
            if not got:
                break
            raw = buf[:got]
            nl = raw == 10
            lines += int(np.count_nonzero(nl))
            # a blank line: a newline right after a newline (or after "\n\r")
            blank += int(np.count_nonzero(nl[1:] & nl[:-1])) + int(prev == b"\n" and bool(nl[0]))
            block = raw.tobytes() if 13 in raw else b""
            if block:
                blank += len(_CRLF_BLANK_RE.findall(prev + block))
            prev = bytes(raw[-1:])
            last = prev
    if last and last != b"\n":
        lines += 1  # a last line without a newline
    return lines - blank


def _count_rows_c(path: str) -> int:
    """What _count_csv_rows counts, by the C kernels, over one reused buffer of whole lines."""
    count = ckernels.kernels.csv_count_rows  # type: ignore[union-attr]
    rows, kept = 0, 0  # kept: bytes of an unfinished line at the front of the buffer
    buf = bytearray(CSV_BLOCK_BYTES)
    with open(path, "rb", buffering=0) as fh:
        while True:
            if kept == len(buf):  # a line longer than the buffer
                buf.extend(bytes(len(buf)))
            with memoryview(buf) as view:
                got = fh.readinto(view[kept:])
                if not got:
                    return rows + (count(view[:kept]) if kept else 0)
                filled = kept + got
                cut = buf.rfind(b"\n", 0, filled) + 1
                if cut:
                    rows += count(view[:cut])
                    view[:filled - cut] = view[cut:filled]
                kept = filled - cut


def _count_rows_or_error(path: str) -> Any:
    try:  # the same count either way (tests/test_c_kernels.py); C where it was built
        return _count_rows_c(path) if ckernels.kernels is not None else _count_csv_rows(path)
    except BaseException as exc:  # noqa: BLE001 - handed back to the opening thread
        return exc


_CRLF_BLANK_RE = re.compile(rb"\n\r(?=\n)")


class _Unsupported(Exception):
    """The C parser met something only pandas reads (quotes, text, ragged rows...)."""


CSV_BLOCK_BYTES = 1 << 23  # bytes of the file per C-parsed block (whole lines)


def _csv_pool() -> Any:
    """Threads that parse CSV blocks ahead of the reader (the C parser releases the GIL)."""
    return workers.pool("lossctl-csv", workers.worker_count())


def _simple_header(path: str, sep: str, has_header: bool, ncols: int) -> tuple[int, list[str]] | None:
    """(byte offset of the first data line, column names) when the C parser can read the file:
    a one-byte separator, no byte-order mark, an unquoted header of distinct non-empty names."""
    if ckernels.kernels is None or len(sep.encode()) != 1 or sep in "\r\n\"":
        return None
    with open(path, "rb") as fh:
        first = fh.readline()
    if first.startswith(b"\xef\xbb\xbf") or b'"' in first:
        return None
    if not has_header:
        return 0, [str(i) for i in range(ncols)]
    try:
        names = [f.strip() for f in first.decode("utf-8").rstrip("\r\n").split(sep)]
    except UnicodeDecodeError:
        return None
    if len(names) != ncols or not all(names) or len(set(names)) != len(names):
        return None
    return len(first), names


class _CsvBlocks:
    """The data lines of a CSV file as float64 columns, block by block, in order: blocks of about
    CSV_BLOCK_BYTES whole lines, parsed ahead by the C kernels on worker threads (two or three
    blocks in flight: bounded memory). Raises _Unsupported for a block the C parser refuses."""

    def __init__(self, path: str, sep: str, data_start: int, ncols: int) -> None:
        self._parse = ckernels.kernels.csv_parse  # type: ignore[union-attr]
        self._sep, self._ncols = sep, ncols
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._pos, self._size = data_start, os.fstat(self._fd).st_size
        self._pending: deque[Any] = deque()
        self._pool = _csv_pool()
        self._ahead = self._pool.workers + 1

    def __del__(self) -> None:
        if hasattr(self, "_pool"):  # (not when __init__ failed half-way)
            self.close()
            os.close(self._fd)

    def _block_end(self, pos: int) -> int:
        """The end of the line that holds byte pos (or the end of the file)."""
        while pos < self._size:
            tail = os.pread(self._fd, 1 << 16, pos)
            nl = tail.find(b"\n")
            if nl >= 0:
                return pos + nl + 1
            pos += len(tail)
        return self._size

    def _read_and_parse(self, start: int, stop: int) -> Any:
        # read (not mapped: the pages of a mapping count as this process's memory until unmapped)
        return self._parse(os.pread(self._fd, stop - start, start), 0, stop - start, self._sep, self._ncols)

    def _submit(self) -> None:
        while len(self._pending) < self._ahead and self._pos < self._size:
            stop = self._block_end(min(self._size, self._pos + CSV_BLOCK_BYTES))
            self._pending.append(self._pool.submit(self._read_and_parse, self._pos, stop))
            self._pos = stop

    def __iter__(self) -> _CsvBlocks:
        return self

    def __next__(self) -> tuple[int, np.ndarray, tuple[int, ...]]:
        """(rows, float64 columns (ncols, rows), per column the first non-integer row or -1)."""
        self._submit()
        if not self._pending:
            raise StopIteration
        got = self._pending.popleft().result()
        if got is None:
            self.close()
            raise _Unsupported
        self._submit()
        data, capacity, rows, first_float = got
        return rows, np.frombuffer(data, dtype=np.float64).reshape(self._ncols, capacity)[:, :rows], first_float

    @property
    def done(self) -> bool:
        """Whether every block has been handed out."""
        return not self._pending and self._pos >= self._size

    def close(self) -> None:
        """Wait for the blocks in flight and drop them."""
        while self._pending:
            self._pending.popleft().result()
        self._pos = self._size


class _CsvSource:
    """One CSV file parsed once, in chunks, for every column selection that reads it.

    Chunks are parsed on demand, in order, and kept only while a reader may still need them
    (readers of one evaluation move in step), so memory is a few chunks whatever the file size.
    A read behind the kept chunks re-parses the file from the top (correct, just slower).
    """

    def __init__(self, path: str, sep: str, has_header: bool, label: str) -> None:
        self.path, self.sep, self.has_header, self.label = path, sep, has_header, label
        self.line0 = 2 if has_header else 1  # file line of data row 0
        self.lock = threading.Lock()
        self.columns: list[str] = []
        self.dtypes: dict[str, np.dtype | None] = {}  # None: not numeric (in the first chunk)
        self.n_rows = 0
        self._reader: Any = None
        self._blocks: deque[tuple[int, dict[str, np.ndarray]]] = deque()
        self._parsed = 0
        self._furthest = 0
        with open(path, encoding="utf-8", errors="replace") as fh:
            fields = fh.readline().count(sep) + 1
        self.chunk_rows = max(1, min(CSV_CHUNK_ROWS, CSV_CHUNK_CELLS // fields))
        # the C parser when it can read the file (else, or when it meets something it can't, pandas)
        self._simple = _simple_header(path, sep, has_header, fields)
        counted: list[Any] = []
        counter = None
        if os.path.getsize(path) > (1 << 22):  # count the rows while the first chunk is parsed
            counter = threading.Thread(target=lambda: counted.append(_count_rows_or_error(path)), daemon=True)
            counter.start()
        try:
            self._restart()
            first = self._next_frame()
            if first is None:
                raise InputError(f"{label}: the file has a header but no rows")
            self._store(*first)
        except KeyboardInterrupt:
            raise  # no waiting for the row count (a daemon thread): on a cold cache it reads for seconds
        except BaseException:
            if counter is not None:
                counter.join()
            raise
        if counter is not None:
            counter.join()
        if self._reader.done if isinstance(self._reader, _CsvBlocks) else first[0] < self.chunk_rows:
            self.n_rows = self._parsed  # the whole file was in the first chunk
        else:
            lines = counted[0] if counted else _count_rows_or_error(path)
            if isinstance(lines, BaseException):
                raise lines
            self.n_rows = lines - (1 if has_header else 0)

    def _restart(self) -> None:
        if isinstance(self._reader, _CsvBlocks):
            self._reader.close()
        self._blocks.clear()
        self._parsed = 0
        self._furthest = 0
        self._exhausted = False
        if self._simple is not None:
            self._reader = _CsvBlocks(self.path, self.sep, self._simple[0], len(self._simple[1]))
            return
        import pandas as pd

        # (no skipinitialspace: it halves the parser's speed; numbers parse with spaces around them
        # anyway, and column names are stripped below)
        self._reader = pd.read_csv(self.path, sep=self.sep, header=0 if self.has_header else None,
                                   engine="c", on_bad_lines="error",
                                   keep_default_na=False, na_values=[""], chunksize=self.chunk_rows)

    def _next_frame(self) -> tuple[int, Mapping[str, Any]] | None:
        """(rows, {column: values}) of the next parsed block, or None at the end of the file.

        The first block sets the columns and their dtypes: int64 for a column whose first
        chunk_rows values are all integers (or true/false), float64 for other numbers, None for
        text (the pandas reader keeps it as text; only an explicit selection reads it, and fails).
        """
        if self._simple is not None:
            try:
                rows, values, first_float = next(self._reader)
            except StopIteration:
                self._exhausted = True
                return None
            except _Unsupported:  # read the file with pandas from the top instead
                self._simple = None
                parsed = self._parsed
                self._restart()
                if parsed == 0:
                    self.columns, self.dtypes = [], {}
                return self._next_frame()
            if not self.columns:
                self.columns = list(self._simple[1])
                for col, first in zip(self.columns, first_float):
                    whole = first < 0 or first >= self.chunk_rows
                    self.dtypes[col] = np.dtype(np.int64 if whole else np.float64)
            return rows, dict(zip(self.columns, values))
        frame = self._next_pandas_frame()
        if frame is None:
            return None
        if not self.columns:
            self.columns = [str(c) for c in frame.columns]
            for col in self.columns:
                self.dtypes[col] = _column_dtype(frame[col])
        return len(frame), frame

    def _next_pandas_frame(self) -> Any:
        import pandas as pd

        try:
            frame = next(self._reader)
        except StopIteration:
            self._exhausted = True
            return None
        except pd.errors.ParserError as exc:
            m = re.search(r"line (\d+)", str(exc))
            where = f" at line {m.group(1)}" if m else ""
            raise InputError(f"{self.label}: malformed row{where} ({str(exc).strip().splitlines()[-1]}); "
                             f"every row needs the same number of fields") from None
        except pd.errors.EmptyDataError:
            raise InputError(f"{self.label}: the file is empty") from None
        except UnicodeDecodeError:
            raise InputError(f"{self.label}: not a UTF-8 text file") from None
        if not self.has_header:
            frame.columns = [str(i) for i in range(frame.shape[1])]
        else:
            frame.columns = [str(c).strip().strip('"').strip() for c in frame.columns]
        return frame

    def _store(self, rows: int, frame: Mapping[str, Any]) -> None:
        start = self._parsed
        cols = {}
        for col in self.columns:
            declared = self.dtypes.get(col)
            if declared is None:
                cols[col] = frame[col]  # kept as text: only an explicit selection reads it (and fails)
            else:
                cols[col] = _convert_column(frame[col], declared, col, self.label, self.line0 + start)
        self._blocks.append((start, cols))
        self._parsed += rows

    def read(self, columns: Sequence[str], start: int, stop: int) -> list[np.ndarray]:
        with self.lock:
            if self._blocks and start < self._blocks[0][0] or not self._blocks and start < self._parsed:
                self._restart()
            while self._parsed < stop:
                frame = self._next_frame()
                if frame is None:
                    raise InputError(f"{self.label}: has {self._parsed} rows where {self.n_rows} were counted "
                                     f"(blank or quoted multi-line rows?); clean the file or save it as .npy")
                self._store(*frame)
                # blocks far behind this read (after a switch to pandas, which starts at the top)
                while len(self._blocks) > 1 and self._blocks[0][0] + _block_len(self._blocks[0][1]) <= \
                        start - _CSV_KEEP_CHUNKS * self.chunk_rows:
                    self._blocks.popleft()
            self._furthest = max(self._furthest, stop)
            out = []
            for col in columns:
                parts = []
                for s, block in self._blocks:
                    e = s + len(block[col])
                    if e > start and s < stop:
                        parts.append(block[col][max(0, start - s):min(e, stop) - s])
                for part in parts:
                    if not isinstance(part, np.ndarray):  # a text column explicitly selected
                        _convert_column(part, np.dtype(np.float64), col, self.label,
                                        self.line0 + int(part.index[0]) if len(part) else self.line0)
                out.append(parts[0] if len(parts) == 1 else np.concatenate(parts))
            while self._blocks and self._blocks[0][0] + _block_len(self._blocks[0][1]) <= \
                    self._furthest - _CSV_KEEP_CHUNKS * self.chunk_rows:
                self._blocks.popleft()
            return out


def _block_len(block: dict[str, Any]) -> int:
    return len(next(iter(block.values()))) if block else 0


def _column_dtype(col: Any) -> np.dtype | None:
    """The dtype a column gets: int64 (integers, true/false), float64, or None (not numeric)."""
    kind = col.dtype.kind if isinstance(col.dtype, np.dtype) else "O"
    if kind in "iub":
        return np.dtype(np.int64)
    if kind == "f":
        return np.dtype(np.float64)
    values = _numeric_column(col.astype(str).where(col.notna(), ""))
    return None if values is None else np.dtype(np.int64 if values.dtype.kind in "iub" else np.float64)


def _convert_column(col: Any, dtype: np.dtype, name: str, label: str, first_line: int) -> np.ndarray:
    kind = col.dtype.kind if isinstance(col.dtype, np.dtype) else "O"
    if kind in "iufb":
        values = np.asarray(col)
    else:
        text = col.astype(str).where(col.notna(), "")
        values = _numeric_column(text)
        if values is None:
            bad = _first_bad(text)
            raise InputError(f"{label}: column {name!r} has a non-numeric value {text.iloc[bad].strip()!r} "
                             f"at line {bad + first_line}; fix that row or select numeric columns")
    if values.dtype == dtype:
        return values
    if dtype.kind == "i" and values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(values) & (values == np.round(values))
        if not whole.all():
            bad = int(np.flatnonzero(~whole)[0])
            raise InputError(f"{label}: column {name!r} has the non-integer value {float(values[bad]):g} at line "
                             f"{bad + first_line}, but the rows read before it are all integers; "
                             f"write every value of the column as a float (e.g. 1.0)")
    return values.astype(dtype)


_CSV_SOURCES: weakref.WeakValueDictionary[Any, _CsvSource] = weakref.WeakValueDictionary()


@dataclass
class CsvArray(LazyArray):
    """Columns of a CSV/TSV file, parsed in chunks as they are read (bounded memory)."""

    source: _CsvSource = field(default=None, repr=False)  # type: ignore[assignment]
    columns: tuple[str, ...] = ()

    sequential = True

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        if axis != 0:
            whole = self.read(0, self.shape[0])
            index = [slice(None)] * whole.ndim
            index[axis] = slice(start, stop)
            return whole[tuple(index)]
        stop = max(start, min(stop, self.shape[0]))
        cols = self.source.read(self.columns, start, stop)
        if len(cols) == 1:
            return cols[0]
        return np.column_stack(cols).astype(self.dtype, copy=False)

    def identity(self) -> Any:
        return ("csv", self.path, self.columns)


def open_csv(path: str, selector: str | None, name: str, sep: str | None) -> CsvArray:
    """Columns ``selector`` (names or 0-based indexes, comma-separated; default: the numeric ones)
    of the CSV file ``path``; ``sep`` None: tab or comma, whichever the first line has more of."""
    label = input_label(name, path)
    if sep is None:
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline()
        sep = "\t" if first.count("\t") > first.count(",") else ","
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().strip("\r\n")
    if not first.strip():
        raise InputError(f"{label}: the file is empty")
    fields = [f.strip().strip('"') for f in first.split(sep)]
    has_header = any(not _is_number(f) for f in fields if f != "")
    stat = os.stat(path)
    key = (os.path.realpath(path), sep, stat.st_size, stat.st_mtime_ns)
    source = _CSV_SOURCES.get(key)
    if source is None:
        source = _CsvSource(path, sep, has_header, path)  # shared by every selection: errors name the file
        _CSV_SOURCES[key] = source
    columns = source.columns
    if selector:
        wanted = [c.strip() for c in selector.split(",")]
        chosen = []
        for col in wanted:
            if col in columns:
                chosen.append(col)
            elif _INT_RE.match(col) and 0 <= int(col) < len(columns):
                chosen.append(columns[int(col)])
            else:
                raise InputError(f"{label}: no column {col!r}{did_you_mean(col, columns)} "
                                 f"(columns: {', '.join(columns)}; or a 0-based index)")
        for col in chosen:
            if source.dtypes[col] is None:  # names the first non-numeric value and its line
                source.read([col], 0, min(source.n_rows, CSV_CHUNK_ROWS))
    else:
        chosen = [col for col in columns if source.dtypes[col] is not None]
        if not chosen:
            raise InputError(f"{label}: no numeric columns (columns: {', '.join(columns)}); "
                             f"select one with {path}:COLUMN")
    dtypes = [source.dtypes[c] or np.dtype(np.float64) for c in chosen]
    dtype = dtypes[0] if len(set(dtypes)) == 1 else np.result_type(*dtypes)
    shape = (source.n_rows,) if len(chosen) == 1 else (source.n_rows, len(chosen))
    key_text = selector if selector else None
    return CsvArray(path=path, shape=shape, dtype=np.dtype(dtype), key=key_text, name=name, source=source,
                    columns=tuple(chosen))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text.lower() in ("nan", "inf", "-inf", "+inf")
    return True


def _numeric_column(col: Any) -> np.ndarray | None:
    """A text column as numbers (int64 when all are integers), or None if some value is not a number.

    Blank fields are NaN; ``nan``/``inf`` are numbers; a column of only true/false is 1/0.
    """
    import pandas as pd

    stripped = col.astype(str).str.strip()
    empty = (stripped == "").to_numpy()
    try:
        arr = pd.to_numeric(stripped.mask(empty, None), errors="raise").to_numpy()
    except (ValueError, TypeError):
        lowered = stripped.str.lower()
        if lowered.isin(["true", "false"]).all():
            return (lowered == "true").to_numpy(dtype=np.int64)
        try:  # what float() reads: "nan", "inf", "-1e3", ...
            arr = np.where(empty, "nan", stripped.to_numpy(dtype=str)).astype(np.float64)
        except ValueError:
            return None
    if arr.dtype.kind not in NUMERIC_KINDS:
        return None
    return arr


def _first_bad(col: Any) -> int:
    for i, value in enumerate(col):
        v = str(value).strip()
        if v and not _is_number(v):
            return i
    return 0
