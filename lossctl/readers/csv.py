"""CSV/TSV files: columns parsed in chunks as they are read, so memory stays bounded.

Plain numeric files are parsed by the C kernels (lossctl/csrc/csv.c) on worker threads, block by
block ahead of the reader; anything the C parser declines (quotes, text, ragged rows...) is read by
pandas from the top. Either way a file is parsed once for every column selection that reads it.
"""

from __future__ import annotations

import io
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
from lossctl.arrays import NUMERIC_KINDS, LazyArray, input_label, reading, select_columns
from lossctl.errors import InputError, UsageError, option


#: compressed CSV suffixes and the module that decompresses them (all read as streams)
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}


def compression(path: str) -> str | None:
    """``gzip``/``bz2``/``lzma`` for a ``.gz``/``.bz2``/``.xz`` file, else None."""
    return COMPRESSIONS.get(os.path.splitext(path)[1].lower())


def open_binary(path: str, buffering: int = -1) -> Any:
    """``path`` opened for reading bytes; a compressed file as its decompressed stream."""
    module = compression(path)
    if module is None:
        return open(path, "rb", buffering=buffering)
    import importlib

    return importlib.import_module(module).open(path, "rb")


def open_lf(path: str) -> Any:
    """``path`` opened for reading bytes (decompressed) with one line-ending rule for the whole
    file, as pandas reads it: when some line ends in a bare CR, every line end outside quotes (LF,
    CRLF, CR in any mix) reads as LF, translated as it streams (no copy of the file); a CR inside
    a quoted field stays a CR. Every parser downstream (the C parser, the row count, the row
    check, pandas) reads this stream."""
    fh = open_binary(path)
    if not _has_bare_cr_cached(path):
        return fh
    import io

    return io.BufferedReader(_LfStream(fh), buffer_size=1 << 20)


CSV_CHUNK_ROWS = 1 << 18  # rows parsed at a time (and sniffed at open), at most...
CSV_CHUNK_CELLS = 1 << 21  # ...this many fields per chunk (wide files get fewer rows)
_CSV_KEEP_CHUNKS = 2  # parsed chunks kept behind the furthest read (readers run in step)


def _count_csv_rows(path: str) -> int:
    """Non-blank lines of the file (pandas skips blank lines), counted in large binary blocks."""
    lines = blank = 0
    prev = b"\n"  # the byte before the block ("start of file" counts as after a newline)
    last = b""
    buf = np.empty(1 << 20, dtype=np.uint8)  # reused: no fresh pages per block
    with open_lf(path) as fh:
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
    with open_lf(path) as fh:
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


def _scan_rows_c(path: str, sep: str, simple: tuple[int, list[str]], has_header: bool) -> Any:
    """(lines, per column whether any row is not an integer literal) by the C parser over the whole
    file, so a column whose first float comes after the first chunk is read as float64 (not refused);
    the row count alone (:func:`_count_rows_or_error`) when the C parser declines a block."""
    try:
        rows, floats = 0, [False] * len(simple[1])
        blocks = _CsvBlocks(path, sep, simple[0], len(simple[1]))
        try:
            for n, _values, first_float in blocks:
                rows += n
                floats = [f or first >= 0 for f, first in zip(floats, first_float)]
        finally:
            blocks.close()
        return rows + (1 if has_header else 0), floats
    except _Unsupported:
        return _count_rows_or_error(path)
    except BaseException as exc:  # noqa: BLE001 - handed back to the opening thread
        return exc


_CRLF_BLANK_RE = re.compile(rb"\n\r(?=\n)")


class _Unsupported(Exception):
    """The C parser met something only pandas reads (quotes, text, ragged rows...)."""


CSV_BLOCK_BYTES = 1 << 23  # bytes of the file per C-parsed block (whole lines)


def _csv_pool() -> Any:
    """Threads that parse CSV blocks ahead of the reader (the C parser releases the GIL)."""
    return workers.pool("lossctl-csv", workers.worker_count())


def _simple_header(path: str, sep: str, has_header: bool, names: list[str]) -> tuple[int, list[str]] | None:
    """(byte offset of the first data line, column names) when the C parser can read the file:
    a one-byte separator, no byte-order mark, an unquoted header of distinct names."""
    if ckernels.kernels is None or len(sep.encode()) != 1 or sep in "\r\n\"":
        return None
    with open_lf(path) as fh:
        first = fh.readline()
    if first.startswith(b"\xef\xbb\xbf") or b'"' in first:
        return None
    if not has_header:
        return 0, names
    if len(set(names)) != len(names):
        return None
    return len(first), names


class _CsvBlocks:
    """The data lines of a CSV file as float64 columns, block by block, in order: blocks of about
    CSV_BLOCK_BYTES whole lines, parsed ahead by the C kernels on worker threads (two or three
    blocks in flight: bounded memory). Raises _Unsupported for a block the C parser refuses."""

    def __init__(self, path: str, sep: str, data_start: int, ncols: int) -> None:
        self._parse = ckernels.kernels.csv_parse  # type: ignore[union-attr]
        self._sep, self._ncols = sep, ncols
        self._stream: Any = None
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._pos, self._size = data_start, os.fstat(self._fd).st_size
        if compression(path) or _has_bare_cr_cached(path):  # read here, in order; parsed ahead on the workers
            self._stream, self._carry = open_lf(path), b""
            self._stream.read(data_start)
            self._pos, self._size = 0, 1  # (1 once the stream has been read to its end)
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
        if self._stream is not None:
            self._submit_stream()
            return
        while len(self._pending) < self._ahead and self._pos < self._size:
            stop = self._block_end(min(self._size, self._pos + CSV_BLOCK_BYTES))
            self._pending.append(self._pool.submit(self._read_and_parse, self._pos, stop))
            self._pos = stop

    def _submit_stream(self) -> None:
        while len(self._pending) < self._ahead and self._pos < self._size:
            data = self._carry + self._stream.read(CSV_BLOCK_BYTES)
            if len(data) == len(self._carry):  # the end: the last line, without its newline
                block, self._carry, self._pos = data, b"", self._size
            else:
                cut = data.rfind(b"\n") + 1
                block, self._carry = data[:cut], data[cut:]
            if block:
                self._pending.append(self._pool.submit(self._parse, block, 0, len(block), self._sep, self._ncols))

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
        if self._stream is not None:
            self._stream.close()


_QUOTED_RE = re.compile(rb'"[^"]*"')


class _RowCheck:
    """Each row of the file has exactly the header's number of fields, checked in step with the
    pandas parser (which pads a short row with NaN, and takes an extra field in every row for an
    index): a ragged row is an error naming its line, never a silent shift. Blocks without a quote
    are checked by NumPy (separators counted per line); from the first quote on, by the csv module."""

    BLOCK = 1 << 22

    def __init__(self, path: str, sep: str, ncols: int, has_header: bool, label: str) -> None:
        self.ncols, self.label, self.sep = ncols, label, sep
        self.first = "header" if has_header else "first row"
        self._fh = open_lf(path)
        self._line = 0  # file lines consumed
        if has_header:
            self._fh.readline()
            self._line = 1
        self._carry = b""
        self._checked = 0  # rows checked (blank lines are no rows)
        self._rows: Any = None  # the csv module's reader, once a quote was met
        self._done = False

    def _fail(self, line: int, fields: int) -> None:
        raise InputError(f"{self.label}: malformed row at line {line} ({fields} field{'s' if fields != 1 else ''} "
                         f"where the {self.first} has {self.ncols}); every row needs the same number of fields")

    def advance(self, n: int) -> None:
        """Check at least the next ``n`` rows (blank lines skipped, as pandas does)."""
        target = self._checked + n
        while self._checked < target and not self._done:
            if self._rows is not None:
                self._advance_csv(target)
                continue
            data = self._carry + self._fh.read(self.BLOCK)
            if len(data) == len(self._carry):
                block, self._carry = data, b""
                self._done = not block
                if block and not block.endswith(b"\n"):
                    block += b"\n"
            else:
                cut = data.rfind(b"\n") + 1
                block, self._carry = data[:cut], data[cut:]
            if not block:
                continue
            if b'"' in block:  # quoted fields dropped (separators in them are no separators)...
                bare = _QUOTED_RE.sub(b"q", block)
                if block.count(b'"') % 2 or bare.count(b"\n") != block.count(b"\n") or b'"' in bare:
                    self._start_csv(block)  # ...unless one holds a line end (or is cut): the csv module
                    continue
                block = bare
            self._check_block(block)

    def _check_block(self, block: bytes) -> None:
        raw = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(raw == 10)
        starts = np.concatenate(([0], ends[:-1] + 1))
        before = np.searchsorted(np.flatnonzero(raw == ord(self.sep)), ends)  # separators before each line end
        fields = np.diff(before, prepend=0) + 1
        length = ends - starts
        blank = (length == 0) | ((length == 1) & (raw[np.minimum(starts, len(raw) - 1)] == 13))
        bad = np.flatnonzero(~blank & (fields != self.ncols))
        if bad.size:
            self._fail(self._line + int(bad[0]) + 1, int(fields[bad[0]]))
        self._line += len(ends)
        self._checked += int(np.count_nonzero(~blank))

    def _start_csv(self, block: bytes) -> None:
        import csv as stdcsv
        import io
        import itertools

        rest = io.TextIOWrapper(self._fh, encoding="utf-8", errors="replace", newline="")
        head = io.StringIO(block.decode("utf-8", errors="replace") + self._carry.decode("utf-8", errors="replace"),
                           newline="")
        self._carry = b""
        self._rows = stdcsv.reader(itertools.chain(head, rest), delimiter=self.sep)

    def _advance_csv(self, target: int) -> None:
        while self._checked < target:
            try:
                row = next(self._rows, None)
            except Exception:  # noqa: BLE001 - what pandas reads, pandas judges
                row = None
            if row is None:
                self._done = True
                return
            if not row:
                continue
            if len(row) != self.ncols:
                self._fail(self._line + self._rows.line_num, len(row))
            self._checked += 1


class _CsvSource:
    """One CSV file parsed once, in chunks, for every column selection that reads it.

    Chunks are parsed on demand, in order, and kept only while a reader may still need them
    (readers of one evaluation move in step), so memory is a few chunks whatever the file size.
    A read behind the kept chunks re-parses the file from the top (correct, just slower).
    """

    def __init__(self, path: str, sep: str, has_header: bool, names: list[str], label: str) -> None:
        self.path, self.sep, self.has_header, self.names, self.label = path, sep, has_header, names, label
        self.line0 = 2 if has_header else 1  # file line of data row 0
        self.lock = threading.Lock()
        self.columns: list[str] = []
        self.dtypes: dict[str, np.dtype | None] = {}  # None: not numeric (in the first chunk)
        self.n_rows = 0
        self._reader: Any = None
        self._pandas_fh: Any = None  # the stream pandas reads
        self._exhausted = False
        self._blocks: deque[tuple[int, dict[str, np.ndarray]]] = deque()
        self._parsed = 0
        self._furthest = 0
        self._check: _RowCheck | None = None
        self.chunk_rows = max(1, min(CSV_CHUNK_ROWS, CSV_CHUNK_CELLS // len(names)))
        # the C parser when it can read the file (else, or when it meets something it can't, pandas)
        self._simple = _simple_header(path, sep, has_header, names)
        counted: list[Any] = []
        counter = None
        if os.path.getsize(path) > (1 << 22) or compression(path):  # count the rows while the first chunk is parsed
            simple = self._simple
            count = (lambda: _scan_rows_c(path, sep, simple, has_header)) if simple is not None else \
                (lambda: _count_rows_or_error(path))
            counter = threading.Thread(target=lambda: counted.append(count()), daemon=True)
            counter.start()
        try:
            self._restart()
            first = self._next_frame()
            if first is None or first[0] == 0:
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
            if counted:
                lines = counted[0]
            elif self._simple is not None:
                lines = _scan_rows_c(path, sep, self._simple, has_header)
            else:
                lines = _count_rows_or_error(path)
            if isinstance(lines, tuple) and self._simple is None:  # (the C parser gave up: pandas reads it)
                lines = _count_rows_or_error(path)
            if isinstance(lines, tuple):  # parsed through by the C parser: a later float widens an int column
                lines, floats = lines
                for col, later in zip(self.columns, floats):
                    if later and self.dtypes.get(col) == np.dtype(np.int64):
                        self.dtypes[col] = np.dtype(np.float64)
            elif not isinstance(lines, BaseException):  # pandas reads (some of) it: the same, by pandas
                self._widen_by_pandas()
            if isinstance(lines, BaseException):
                raise lines
            self.n_rows = lines - (1 if has_header else 0)

    def _widen_by_pandas(self) -> None:
        """Columns typed int64 by the first chunk become float64 when a later chunk holds a float
        (as one ``pandas.read_csv`` of the whole file types them), found by a pass of pandas over
        those columns alone; a later text value is left for the read to name (with its line)."""
        ints = [c for c in self.columns if self.dtypes.get(c) == np.dtype(np.int64)]
        if not ints:
            return
        import warnings

        import pandas as pd

        try:
            with warnings.catch_warnings(), open_lf(self.path) as fh:
                warnings.simplefilter("ignore", pd.errors.ParserWarning)
                chunks = pd.read_csv(fh, sep=self.sep, header=0 if self.has_header else None, names=self.names,
                                     usecols=ints, index_col=False, engine="c", chunksize=self.chunk_rows)
                for n, chunk in enumerate(chunks):
                    if n == 0:
                        continue  # (typed already)
                    for col in list(ints):
                        if _column_dtype(chunk[col]) == np.dtype(np.float64):
                            self.dtypes[col] = np.dtype(np.float64)
                            ints.remove(col)
                    if not ints:
                        return
        except (pd.errors.ParserError, ValueError, UnicodeDecodeError):
            return  # (the read itself names what is wrong)

    def _restart(self) -> None:
        if isinstance(self._reader, _CsvBlocks):
            self._reader.close()
        if self._pandas_fh is not None:
            self._pandas_fh.close()
            self._pandas_fh = None
        self._blocks.clear()
        self._parsed = 0
        self._furthest = 0
        self._exhausted = False
        if self._simple is not None:
            self._reader = _CsvBlocks(self.path, self.sep, self._simple[0], len(self._simple[1]))
            return
        import pandas as pd

        # (no skipinitialspace: it halves the parser's speed; numbers parse with spaces around them
        # anyway). The header's names are lossctl's own (the same for both parsers); index_col=False:
        # a row with an extra field is never an index, and _RowCheck refuses rows of the wrong length.
        self._check = _RowCheck(self.path, self.sep, len(self.names), self.has_header, self.label)
        self._pandas_fh = open_lf(self.path)
        self._reader = pd.read_csv(self._pandas_fh, sep=self.sep, header=0 if self.has_header else None,
                                   names=self.names, index_col=False, engine="c", on_bad_lines="error",
                                   chunksize=self.chunk_rows)

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
                for col, first, column in zip(self.columns, first_float, values):
                    # int64 for integer literals that a float64 holds exactly (|v| < 2**53)
                    whole = first < 0 and bool(np.all(np.abs(column) < 2.0 ** 53))
                    self.dtypes[col] = np.dtype(np.int64 if whole else np.float64)
            return rows, dict(zip(self.columns, values))
        frame = self._next_pandas_frame()
        if frame is None:
            return None
        if not self.columns:
            self.columns = list(self.names)
            for col in self.columns:
                self.dtypes[col] = _column_dtype(frame[col])
        return len(frame), frame

    def _next_pandas_frame(self) -> Any:
        import warnings

        import pandas as pd

        try:
            with warnings.catch_warnings():  # (pandas' "Length of header or names does not match")
                warnings.simplefilter("ignore", pd.errors.ParserWarning)
                frame = next(self._reader)
        except StopIteration:
            assert self._check is not None
            self._check.advance(1 << 62)  # the rest of the file (pandas may have dropped a ragged tail)
            self._exhausted = True
            return None
        except pd.errors.ParserError as exc:
            assert self._check is not None
            self._check.advance(1 << 62)  # names the line and its fields, if a row is ragged
            m = re.search(r"line (\d+)", str(exc))
            where = f" at line {m.group(1)}" if m else ""
            raise InputError(f"{self.label}: malformed row{where} ({str(exc).strip().splitlines()[-1]}); "
                             f"every row needs the same number of fields") from None
        except pd.errors.EmptyDataError:
            raise InputError(f"{self.label}: the file is empty") from None
        except UnicodeDecodeError:
            raise InputError(f"{self.label}: not a UTF-8 text file") from None
        assert self._check is not None
        self._check.advance(len(frame))
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

    def read(self, columns: Sequence[str], start: int, stop: int,
             classes: Sequence[str] | None = None) -> list[np.ndarray]:
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
                for i, part in enumerate(parts):
                    if not isinstance(part, np.ndarray):  # a text column explicitly selected
                        first_line = self.line0 + int(part.index[0]) if len(part) else self.line0
                        if classes is None:
                            _convert_column(part, np.dtype(np.float64), col, self.label, first_line)
                        parts[i] = _class_indices(part, classes, col, self.label, first_line)
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


def _class_indices(col: Any, classes: Sequence[str], name: str, label: str, first_line: int) -> np.ndarray:
    """String class labels as their positions in ``classes`` (int64); an unknown label is an error."""
    text = col.astype(str).str.strip().where(col.notna(), "")
    codes = text.map({c: i for i, c in enumerate(classes)}).fillna(-1).to_numpy(dtype=np.int64)
    if (codes < 0).any():
        bad = int(np.flatnonzero(codes < 0)[0])
        raise InputError(f"{label}: column {name!r} has the label {text.iloc[bad]!r} at line {bad + first_line}, "
                         f"which is not in {option('classes', ','.join(classes))}; add it to the list")
    return codes


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
                             f"at line {bad + first_line}; fix that row or select numeric columns "
                             f"(for string class labels, pass {option('classes', 'a,b,c')})")
    if values.dtype == dtype:
        return values
    if dtype.kind == "i" and values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) < 2.0 ** 53)
        if not whole.all():
            bad = int(np.flatnonzero(~whole)[0])
            what = "non-integer" if values[bad] != np.round(values[bad]) or not np.isfinite(values[bad]) else \
                "(beyond 2**53, inexact) integer"
            raise InputError(f"{label}: column {name!r} has the {what} value {float(values[bad]):g} at line "
                             f"{bad + first_line}, but the rows read before it are all integers; "
                             f"write every value of the column as a float (e.g. 1.0)")
    return values.astype(dtype)


_CSV_SOURCES: weakref.WeakValueDictionary[Any, _CsvSource] = weakref.WeakValueDictionary()


@dataclass
class CsvArray(LazyArray):
    """Columns of a CSV/TSV file, parsed in chunks as they are read (bounded memory)."""

    source: _CsvSource = field(default=None, repr=False)  # type: ignore[assignment]
    columns: tuple[str, ...] = ()
    classes: tuple[str, ...] | None = None  # string class labels -> their index (``--classes``)
    notes: tuple[str, ...] = ()  # said on stderr when the input is used (a header read as pandas')

    sequential = True

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        with reading(self.label):
            return self._read(start, stop, axis)

    def _read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        if axis != 0:
            return self.read_across(start, stop, axis)
        stop = max(start, min(stop, self.shape[0]))
        cols = self.source.read(self.columns, start, stop, self.classes)
        if len(cols) == 1:
            return cols[0]
        return np.column_stack(cols).astype(self.dtype, copy=False)

    def identity(self) -> Any:
        return ("csv", self.path, self.columns)


HEADER_CHOICES = ("auto", "yes", "no")
_HEADER_NO = "--header no (Python: header='no')"  # (a note is kept in the report as plain text)
_SNIFFED = (";", "|")  # separators a .csv may use instead of ",", told by its first line


def first_line(path: str) -> str:
    """The first line of a (possibly compressed) text file, without a byte-order mark or line end."""
    with open_lf(path) as fh:
        raw = fh.readline(1 << 20)
    return raw.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r\n")


def _split(line: str, sep: str) -> list[str]:
    import csv as stdcsv

    try:
        row = next(stdcsv.reader([line], delimiter=sep), [])
    except stdcsv.Error:
        row = line.split(sep)
    return [f.strip() for f in row] or [""]


def choose_separator(line: str, default: str | None) -> str:
    """``default`` (tab for .tsv); else ``,``, or tab, ``;`` or ``|`` when the header splits into
    more fields on it (a European spreadsheet's ``a;b``, a ``|`` table)."""
    if default is not None:
        return default
    best = ","
    for sep in ("\t", *_SNIFFED):
        if len(_split(line, sep)) > len(_split(line, best)):
            best = sep
    return best


def header_rule(fields: list[str], header: str) -> tuple[bool, bool, str | None]:
    """(the first row is a header, its first column is pandas' index column, a note to say so).

    ``auto``: a header when any field is not a number, or when the fields are exactly ``0,1,…,k-1``
    (pandas' default column names). An empty first field of a header is the index column pandas
    writes (``to_csv()`` with its default ``index=True``): read as ``read_csv(index_col=0)`` does,
    it is no column of the input (not selected by default, not counted by a column index).
    """
    if header not in HEADER_CHOICES:
        raise UsageError(f"{option('header', header)}: expected one of {', '.join(HEADER_CHOICES)}")
    if header == "no":
        return False, False, None
    k = len(fields)
    bare = [str(i) for i in range(k)]
    index = k > 1 and fields[0] == ""
    index_note = "its first column (an empty name) is pandas' index column, left out"
    if header == "yes":
        return True, index, index_note if index else None
    if fields == bare:
        return True, False, (f"first row {','.join(bare)} read as a header (pandas' default column names); "
                             f"if it is data, pass {_HEADER_NO}")
    if index and fields[1:] == bare[:-1]:
        return True, True, (f"first row {','.join(fields)} read as a header (pandas' default column names); "
                            f"{index_note}; if it is data, pass {_HEADER_NO}")
    if any(not _is_number(f) for f in fields):
        return True, index, index_note if index else None
    return False, False, None


def _names(fields: list[str], has_header: bool) -> list[str]:
    """Column names as pandas gives them: ``Unnamed: i`` for an empty one, ``a.1`` for a repeat."""
    if not has_header:
        return [str(i) for i in range(len(fields))]
    names: list[str] = []
    for i, f in enumerate(fields):
        name = f if f or i == 0 else f"Unnamed: {i}"
        base, n = name, 0
        while name in names:
            n += 1
            name = f"{base}.{n}"
        names.append(name)
    return names


_BARE_CR: dict[Any, bool] = {}  # (file, size, mtime) -> whether some line ends in a bare CR
_LINE_END_RE = re.compile(rb"\r\n?")
_SCAN_BYTES = 1 << 23


def _has_bare_cr(path: str) -> bool:
    """Whether some line of the file ends in a bare CR (old Mac, or a mix): a scan at memchr speed,
    finer only in blocks that hold a CR."""
    prev_cr = False
    with open_binary(path) as fh:
        while block := fh.read(_SCAN_BYTES):
            if prev_cr and not block.startswith(b"\n"):
                return True
            if b"\r" in block:
                crs = block.count(b"\r") - block.endswith(b"\r")
                if crs != block.count(b"\r\n"):
                    return True
            prev_cr = block.endswith(b"\r")
    return prev_cr


def _has_bare_cr_cached(path: str) -> bool:
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _BARE_CR:
        _BARE_CR[key] = _has_bare_cr(path)
    return _BARE_CR[key]


class _LfStream(io.RawIOBase):
    """A byte stream with its line ends outside quotes (CR, CRLF) read as LF: block by block,
    the quote state carried across blocks (``""`` inside quotes toggles twice: no change), a CR
    at a block's end held back until the next block tells whether an LF follows it."""

    def __init__(self, raw: Any) -> None:
        self._raw, self._out, self._pos = raw, b"", 0
        self._carry, self._quoted, self._eof = b"", False, False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        block = self._raw.read(min(_SCAN_BYTES, 1 << 20))  # (small: each block is copied a few times)
        data = self._carry + block
        self._eof = not block
        self._carry = b"\r" if data.endswith(b"\r") and not self._eof else b""
        data = data[:len(data) - len(self._carry)]
        if b'"' not in data:
            self._out = data if self._quoted else _LINE_END_RE.sub(b"\n", data)
        else:
            parts = data.split(b'"')
            for i, part in enumerate(parts):
                if not (self._quoted ^ (i % 2 == 1)):
                    parts[i] = _LINE_END_RE.sub(b"\n", part)
            self._quoted ^= (len(parts) - 1) % 2 == 1
            self._out = b'"'.join(parts)
        self._pos = 0

    def readinto(self, buffer: Any) -> int:
        while self._pos >= len(self._out) and not self._eof:
            self._fill()
        n = min(len(buffer), len(self._out) - self._pos)
        with memoryview(self._out) as out:
            buffer[:n] = out[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_csv(path: str, selector: str | None, name: str, sep: str | None, *, header: str = "auto",
             classes: Sequence[str] | None = None, shown: str | None = None) -> CsvArray:
    """Columns ``selector`` (names or 0-based indexes, comma-separated; default: the numeric ones)
    of the CSV file ``path`` (``.gz``/``.bz2``/``.xz`` compressed or not); ``sep`` None: chosen by
    :func:`choose_separator`; ``header``: auto | yes | no (:func:`header_rule`); ``classes``: string
    class labels, read as their position in the list; ``shown``: how messages name the file."""
    where = shown or path
    label = input_label(name, where)
    original = path
    first = first_line(path)
    if not first.strip():
        raise InputError(f"{label}: the file is empty (or its first line is blank)")
    sep = choose_separator(first, sep)
    fields = _split(first, sep)
    has_header, index, note = header_rule(fields, header)
    names = _names(fields, has_header)
    stat = os.stat(path)
    key = (os.path.realpath(path), sep, has_header, stat.st_size, stat.st_mtime_ns)
    source = _CSV_SOURCES.get(key)
    if source is None:
        source = _CsvSource(path, sep, has_header, names, where)  # shared by every selection: errors name the file
        _CSV_SOURCES[key] = source
    columns = source.columns[1:] if index else source.columns
    chosen = []
    if selector:
        chosen = select_columns(selector, columns, label)
        for col in chosen:
            if source.dtypes[col] is None and classes is None:  # names the first non-numeric value and its line
                source.read([col], 0, min(source.n_rows, CSV_CHUNK_ROWS))
    else:
        chosen = [col for col in columns if source.dtypes[col] is not None]
        text = [col for col in columns if source.dtypes[col] is None]
        if classes is not None and len(text) == 1 and not chosen:
            chosen = text  # the one text column: the labels
        if not chosen:
            hint = f" (string class labels: pass {option('classes', 'a,b,c')})" if text else ""
            raise InputError(f"{label}: no numeric columns (columns: {', '.join(columns)}); "
                             f"select one with {where}:COLUMN{hint}")
    text_cols = [c for c in chosen if source.dtypes[c] is None]
    if text_cols and classes is not None:
        if len(text_cols) != len(chosen):
            raise InputError(f"{label}: columns {', '.join(chosen)} mix class labels and numbers; "
                             f"select the label column alone ({where}:{text_cols[0]})")
        source.read(text_cols, 0, min(source.n_rows, CSV_CHUNK_ROWS), tuple(classes))  # an unknown label: now
    dtypes = [source.dtypes[c] or np.dtype(np.int64 if classes is not None else np.float64) for c in chosen]
    dtype = dtypes[0] if len(set(dtypes)) == 1 else np.result_type(*dtypes)
    shape = (source.n_rows,) if len(chosen) == 1 else (source.n_rows, len(chosen))
    notes = tuple(f"{label}: {note}" for note in [note] if note)
    return CsvArray(path=original, shape=shape, dtype=np.dtype(dtype), key=selector or None, name=name, source=source,
                    columns=tuple(chosen), classes=tuple(classes) if text_cols and classes is not None else None,
                    notes=notes)


#: what pandas' read_csv reads as NaN (its default na_values): numbers for the header rule
NA_SPELLINGS = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                          "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"])


def _is_number(text: str) -> bool:
    if text in NA_SPELLINGS:
        return True
    try:
        float(text.replace("_", "?"))  # (Python's float takes 1_000; CSV readers do not)
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
