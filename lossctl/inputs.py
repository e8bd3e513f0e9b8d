"""Reading inputs: NPY (lazily, in chunks), NPZ (whole arrays or ``file.npz:KEY``), CSV/TSV.

Every input is a :class:`LazyArray`: a shape, a dtype, where it came from, and ``read(start, stop)``
returning the samples ``start:stop`` along its sample axis. Nothing reads more than a chunk of an
``.npy`` file at a time, and nothing ever unpickles (``allow_pickle=False`` everywhere).
"""

from __future__ import annotations

import mmap
import os
import re
import threading
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.errors import InputError

_NUMERIC_KINDS = "biuf"
_MAP_ALIGN = max(mmap.ALLOCATIONGRANULARITY, 1 << 21)


@dataclass
class LazyArray:
    """An input array read on demand. ``label`` names it in messages (``preds (p.npy)``)."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    key: str | None = None
    name: str = ""

    @property
    def label(self) -> str:
        where = self.path + (f":{self.key}" if self.key else "")
        return f"{self.name} ({where})" if self.name else where

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        raise NotImplementedError

    def identity(self) -> Any:
        """A key equal for two LazyArrays that read the same bytes (so a chunk is read once)."""
        return ("file", self.path, self.key)

    #: Read in sample order from one thread only (a streamed CSV); the engine prefetches it.
    sequential = False

    def can_view(self) -> bool:
        """Whether :meth:`view` gives zero-copy windows (C-ordered samples along axis 0)."""
        return False

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        """Samples ``start:stop`` along axis 0 without copying, and a ``release()`` callable.

        Only when :meth:`can_view`; the caller drops every reference to the window before
        calling ``release()`` (an ``.npy`` window is an ``mmap`` that is then unmapped, so the
        pages it touched stop counting as resident memory).
        """
        raise NotImplementedError

    def read_all(self) -> np.ndarray:
        return self.read(0, self.shape[0] if self.shape else 1)

    def content(self) -> str | np.ndarray:
        """What the provenance digest hashes: the file read (whole), or the array in memory."""
        return self.path

    def describe(self) -> dict[str, Any]:
        return {"path": self.path + (f":{self.key}" if self.key else ""), "shape": list(self.shape),
                "dtype": str(self.dtype)}


@dataclass
class MemoryArray(LazyArray):
    """An array already in memory (NPZ members, CSV columns, arrays passed to the Python API)."""

    data: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        if self.data.ndim == 0:
            return self.data.reshape(1)
        index = [slice(None)] * self.data.ndim
        index[axis] = slice(start, stop)
        return self.data[tuple(index)]

    def identity(self) -> Any:
        return ("memory", id(self.data))

    def can_view(self) -> bool:
        return self.data.ndim > 0 and self.data.flags.c_contiguous

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        return self.data[start:stop], _noop

    def content(self) -> str | np.ndarray:
        return self.path if self.path and os.path.isfile(self.path) else self.data


@dataclass
class NpyArray(LazyArray):
    """A C-ordered ``.npy`` file read with ``pread`` into fresh buffers: resident memory is one chunk."""

    offset: int = 0
    fortran: bool = False

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        stop = max(start, min(stop, self.shape[0] if self.shape else 1))
        if axis != 0 or self.fortran or not self.shape:
            return self._read_strided(start, stop, axis)
        row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        out = np.empty((stop - start,) + tuple(self.shape[1:]), dtype=self.dtype)
        nbytes = out.nbytes
        if nbytes:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                view = memoryview(out.reshape(-1).view(np.uint8))
                pos = self.offset + start * row_items * self.dtype.itemsize
                done = 0
                while done < nbytes:
                    got = os.preadv(fd, [view[done:]], pos + done)
                    if got <= 0:
                        raise InputError(f"{self.label}: file is truncated; expected {nbytes} more bytes "
                                         f"for shape {self.shape}; re-save it with numpy.save")
                    done += got
            finally:
                os.close(fd)
        return out

    def can_view(self) -> bool:
        return bool(self.shape) and not self.fortran

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        """A read-only ``mmap`` window over samples ``start:stop`` (unmapped by ``release()``)."""
        stop = max(start, min(stop, self.shape[0]))
        row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        count = (stop - start) * row_items
        shape = (stop - start,) + tuple(self.shape[1:])
        if count == 0:
            return np.empty(shape, dtype=self.dtype), _noop
        first = self.offset + start * row_items * self.dtype.itemsize
        last = first + count * self.dtype.itemsize
        base = first - first % _MAP_ALIGN  # 2 MB: the kernel can map whole huge folios of the page cache
        fd = os.open(self.path, os.O_RDONLY)
        try:
            end = min(os.fstat(fd).st_size, -(-last // _MAP_ALIGN) * _MAP_ALIGN)  # whole 2 MB pieces
            mm = mmap.mmap(fd, max(last, end) - base, access=mmap.ACCESS_READ, offset=base)
        finally:
            os.close(fd)
        arr = np.frombuffer(mm, dtype=self.dtype, count=count, offset=first - base).reshape(shape)

        def release() -> None:
            try:
                mm.close()
            except BufferError:  # a view is still alive somewhere: the mapping goes with it
                pass

        return arr, release

    def _read_strided(self, start: int, stop: int, axis: int) -> np.ndarray:
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                       order="F" if self.fortran else "C")
        index = [slice(None)] * len(self.shape)
        if self.shape:
            index[axis] = slice(start, stop)
        out = np.array(mm[tuple(index)])
        del mm
        return out


@dataclass
class ReshapedArray(LazyArray):
    """``base`` seen with another shape of the same sample count ((N,1) seen as (N,))."""

    base: LazyArray = field(default=None, repr=False)  # type: ignore[assignment]

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        if axis == 0 and self.base.shape[:1] == self.shape[:1]:
            chunk = self.base.read(start, stop, axis)
            return chunk.reshape((chunk.shape[0],) + tuple(self.shape[1:]))
        # A new leading batch axis (an unbatched (C,) input seen as (1, C)): small, read whole.
        whole = np.asarray(self.base.read_all()).reshape(self.shape)
        index = [slice(None)] * whole.ndim
        index[axis] = slice(start, stop)
        return whole[tuple(index)]

    def identity(self) -> Any:
        return ("reshaped", self.base.identity(), self.shape)

    def can_view(self) -> bool:
        # a view keeps the base's sample axis; a new leading batch axis ((C,) as (1, C)) is read whole
        return self.base.can_view() and self.base.shape[:1] == self.shape[:1]

    @property  # type: ignore[override]
    def sequential(self) -> bool:  # type: ignore[override]
        return self.base.sequential

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        arr, release = self.base.view(start, stop)
        return arr.reshape((arr.shape[0],) + tuple(self.shape[1:])), release

    def content(self) -> str | np.ndarray:
        return self.base.content()


def _noop() -> None:
    return None


def reshaped(arr: LazyArray, shape: tuple[int, ...]) -> LazyArray:
    if tuple(shape) == tuple(arr.shape):
        return arr
    if isinstance(arr, MemoryArray):
        return MemoryArray(arr.path, tuple(shape), arr.dtype, arr.key, arr.name, data=arr.data.reshape(shape))
    return ReshapedArray(arr.path, tuple(shape), arr.dtype, arr.key, arr.name, base=arr)


def from_array(data: Any, name: str = "") -> MemoryArray:
    """Wrap an in-memory array (Python API)."""
    arr = np.asarray(data)
    _check_dtype(arr.dtype, name or "array")
    return MemoryArray(path="<array>", shape=tuple(arr.shape), dtype=arr.dtype, name=name, data=arr)


# ------------------------------------------------------------------------------------- opening


def split_spec(spec: str) -> tuple[str, str | None]:
    """``file.npz:KEY`` → (file, KEY). A whole argument naming an existing file is used whole."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, _, selector = spec.rpartition(":")
    return path, selector


def open_input(spec: str, name: str = "") -> LazyArray:
    """Open one array from ``spec`` (``p.npy``, ``p.npz``, ``p.npz:KEY``, ``p.csv:col1,col2``)."""
    found = open_source(spec, name)
    if isinstance(found, LazyArray):
        return found
    keys = ", ".join(found)
    path, _ = split_spec(spec)
    raise InputError(f"{name + ': ' if name else ''}{path} holds several arrays ({keys}); "
                     f"pick one with {path}:KEY")


def open_source(spec: str, name: str = "") -> LazyArray | dict[str, LazyArray]:
    """Open ``spec``: one array, or for an ``.npz`` of several arrays without a key, all of them."""
    path, selector = split_spec(spec)
    who = f"{name}: " if name else ""
    if not os.path.exists(path):
        raise InputError(f"{who}no such file: {path}")
    if os.path.isdir(path):
        raise InputError(f"{who}{path} is a directory; give a .npy, .npz, .csv or .tsv file")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            if selector:
                raise InputError(f"{who}{path} is a single array; drop ':{selector}'")
            return _open_npy(path, name)
        if suffix == ".npz":
            return _open_npz(path, selector, name)
        if suffix in (".csv", ".tsv", ".txt"):
            return _open_csv(path, selector, name, sep="\t" if suffix == ".tsv" else None)
    except PermissionError:
        raise InputError(f"{who}cannot read {path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{who}cannot read {path}: {exc.strerror or exc}") from None
    raise InputError(f"{who}{path}: unsupported file type {suffix or '(none)'!r}; "
                     f"use .npy, .npz, .csv or .tsv")


def _check_dtype(dtype: np.dtype, label: str) -> None:
    if dtype.hasobject:
        raise InputError(f"{label}: object arrays need pickle, which lossctl never loads; "
                         f"save a numeric array (numpy.save with a float or int dtype)")
    if dtype.kind not in _NUMERIC_KINDS:
        raise InputError(f"{label}: dtype {dtype} is not numeric; save a float, int or bool array")


def _open_npy(path: str, name: str) -> NpyArray:
    label = f"{name} ({path})" if name else path
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                raise InputError(f"{label}: object arrays need pickle, which lossctl never loads; "
                                 f"save a numeric array") from None
            raise InputError(f"{label}: not a valid .npy file ({exc}); write it with numpy.save") from None
        offset = fh.tell()
    dtype = np.dtype(dtype)
    _check_dtype(dtype, label)
    if not dtype.isnative:
        dtype = dtype.newbyteorder("=")  # pragma: no cover - handled by np.memmap path below
        raise InputError(f"{label}: byte-swapped arrays are not supported; re-save with native byte order")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise InputError(f"{label}: file is truncated ({os.path.getsize(path)} bytes, shape {tuple(shape)} "
                         f"needs {expected}); re-save it with numpy.save")
    return NpyArray(path=path, shape=tuple(shape), dtype=dtype, name=name, offset=offset, fortran=fortran)


def _open_npz(path: str, key: str | None, name: str) -> LazyArray | dict[str, LazyArray]:
    """Members of an ``.npz``: stored (``numpy.savez``) ones are read lazily in place like an
    ``.npy`` file; compressed (``savez_compressed``) ones are decompressed whole."""
    import zipfile

    label = f"{name} ({path})" if name else path
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{label}: not a valid .npz file ({exc}); write it with numpy.savez") from None
    with zf:
        members = {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}
        keys = list(members)
        if not keys:
            raise InputError(f"{label}: the .npz file holds no arrays")
        if key is not None and key not in keys:
            from lossctl.registry import _did_you_mean

            raise InputError(f"{label}: no array {key!r}{_did_you_mean(key, keys)} (keys: {', '.join(keys)})")
        wanted = [key] if key is not None else keys
        arrays = {k: _npz_member(path, zf, members[k], k, name, label) for k in wanted}
    if key is not None:
        return arrays[key]
    if len(keys) == 1:
        only = arrays[keys[0]]
        only.key = None
        return only
    return arrays


def _npz_member(path: str, zf: Any, info: Any, key: str, name: str, label: str) -> LazyArray:
    import zipfile

    where = f"{label}:{key}"
    try:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            header_len = fh.tell()
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise InputError(f"{where}: object arrays need pickle, which lossctl never loads; "
                             f"save numeric arrays") from None
        raise InputError(f"{where}: not a valid array in the .npz ({exc}); write it with numpy.savez") from None
    dtype = np.dtype(dtype)
    _check_dtype(dtype, where)
    if info.compress_type == zipfile.ZIP_STORED and dtype.isnative:
        with open(path, "rb") as raw:  # the member's data starts after its local file header
            raw.seek(info.header_offset)
            local = raw.read(30)
            data_start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
                + int.from_bytes(local[28:30], "little")
        return NpyArray(path=path, shape=tuple(shape), dtype=dtype, key=key, name=name,
                        offset=data_start + header_len, fortran=fortran)
    with zf.open(info) as fh:
        data = np.lib.format.read_array(fh, allow_pickle=False)
    return MemoryArray(path=path, shape=tuple(data.shape), dtype=data.dtype, key=key, name=name, data=data)


_INT_RE = re.compile(r"^-?\d+$")


CSV_CHUNK_ROWS = 1 << 18  # rows parsed at a time (and sniffed at open), at most...
CSV_CHUNK_CELLS = 1 << 21  # ...this many fields per chunk (wide files get fewer rows)
_CSV_KEEP_CHUNKS = 2  # parsed chunks kept behind the furthest read (readers run in step)


def _csv_label(name: str, path: str) -> str:
    return f"{name} ({path})" if name else path


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
    from lossctl import ckernels

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
    from lossctl import ckernels

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
    from lossctl import workers
    from lossctl.engine import worker_count

    return workers.pool("lossctl-csv", worker_count())


def _simple_header(path: str, sep: str, has_header: bool, ncols: int) -> tuple[int, list[str]] | None:
    """(byte offset of the first data line, column names) when the C parser can read the file:
    a one-byte separator, no byte-order mark, an unquoted header of distinct non-empty names."""
    from lossctl import ckernels

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
        from lossctl import ckernels

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


def _open_csv(path: str, selector: str | None, name: str, sep: str | None) -> CsvArray:
    label = _csv_label(name, path)
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
                from lossctl.registry import _did_you_mean

                raise InputError(f"{label}: no column {col!r}{_did_you_mean(col, columns)} "
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
    if arr.dtype.kind not in _NUMERIC_KINDS:
        return None
    return arr


def _first_bad(col: Any) -> int:
    for i, value in enumerate(col):
        v = str(value).strip()
        if v and not _is_number(v):
            return i
    return 0

