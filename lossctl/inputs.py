"""Reading inputs: NPY (lazily, in chunks), NPZ (whole arrays or ``file.npz:KEY``), CSV/TSV.

Every input is a :class:`LazyArray`: a shape, a dtype, where it came from, and ``read(start, stop)``
returning the samples ``start:stop`` along its sample axis. Nothing reads more than a chunk of an
``.npy`` file at a time, and nothing ever unpickles (``allow_pickle=False`` everywhere).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.errors import InputError

_NUMERIC_KINDS = "biuf"


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

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        return digest.hexdigest()

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

    def sha256(self) -> str:
        if self.path and os.path.isfile(self.path):
            return super().sha256()
        return hashlib.sha256(np.ascontiguousarray(self.data).tobytes()).hexdigest()


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
        base = first - first % mmap.ALLOCATIONGRANULARITY
        fd = os.open(self.path, os.O_RDONLY)
        try:
            mm = mmap.mmap(fd, last - base, access=mmap.ACCESS_READ, offset=base)
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
        return self.base.can_view()

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        arr, release = self.base.view(start, stop)
        return arr.reshape((arr.shape[0],) + tuple(self.shape[1:])), release

    def sha256(self) -> str:
        return self.base.sha256()


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
    label = f"{name} ({path})" if name else path
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, ...
        raise InputError(f"{label}: not a valid .npz file ({exc}); write it with numpy.savez") from None
    with npz:
        keys = list(npz.files)
        if not keys:
            raise InputError(f"{label}: the .npz file holds no arrays")

        def load(k: str) -> MemoryArray:
            try:
                data = npz[k]
            except ValueError as exc:
                raise InputError(f"{label}: array {k!r} cannot be read without pickle ({exc}); "
                                 f"save numeric arrays") from None
            _check_dtype(data.dtype, f"{label}:{k}")
            return MemoryArray(path=path, shape=tuple(data.shape), dtype=data.dtype, key=k, name=name, data=data)

        if key is not None:
            if key not in keys:
                from lossctl.registry import _did_you_mean

                raise InputError(f"{label}: no array {key!r}{_did_you_mean(key, keys)} "
                                 f"(keys: {', '.join(keys)})")
            return load(key)
        if len(keys) == 1:
            arr = load(keys[0])
            arr.key = None
            return arr
        return {k: load(k) for k in keys}


_INT_RE = re.compile(r"^-?\d+$")


def _open_csv(path: str, selector: str | None, name: str, sep: str | None) -> MemoryArray:
    import pandas as pd  # only when a CSV is read

    label = f"{name} ({path})" if name else path
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
    try:
        frame = pd.read_csv(path, sep=sep, header=0 if has_header else None, skipinitialspace=True,
                            engine="c", on_bad_lines="error", dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+)", str(exc))
        where = f" at line {m.group(1)}" if m else ""
        raise InputError(f"{label}: malformed row{where} ({str(exc).strip().splitlines()[-1]}); "
                         f"every row needs the same number of fields") from None
    except UnicodeDecodeError:
        raise InputError(f"{label}: not a UTF-8 text file") from None
    if not has_header:
        frame.columns = [str(i) for i in range(frame.shape[1])]
    columns = [str(c) for c in frame.columns]
    line0 = 2 if has_header else 1
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
    else:
        chosen = []
        for col in columns:
            if _numeric_column(frame[col]) is not None:
                chosen.append(col)
        if not chosen:
            raise InputError(f"{label}: no numeric columns (columns: {', '.join(columns)}); "
                             f"select one with {path}:COLUMN")
    arrays = []
    for col in chosen:
        values = _numeric_column(frame[col])
        if values is None:
            bad = _first_bad(frame[col])
            raise InputError(f"{label}: column {col!r} has a non-numeric value {frame[col].iloc[bad]!r} "
                             f"at line {bad + line0}; fix that row or select numeric columns")
        arrays.append(values)
    data = arrays[0] if len(arrays) == 1 else np.column_stack(arrays)
    key = selector if selector else None
    return MemoryArray(path=path, shape=tuple(data.shape), dtype=data.dtype, key=key, name=name, data=data)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text.lower() in ("nan", "inf", "-inf", "+inf")
    return True


def _numeric_column(col: Any) -> np.ndarray | None:
    import pandas as pd

    stripped = col.str.strip()
    stripped = stripped.mask(stripped == "", "nan")
    try:
        values = pd.to_numeric(stripped, errors="raise")
    except (ValueError, TypeError):
        lowered = stripped.str.lower()
        if lowered.isin(["true", "false"]).all():
            return (lowered == "true").to_numpy(dtype=np.int64)
        return None
    arr = values.to_numpy()
    if arr.dtype.kind not in _NUMERIC_KINDS:
        return None
    return arr


def _first_bad(col: Any) -> int:
    for i, value in enumerate(col):
        v = str(value).strip()
        if v and not _is_number(v):
            return i
    return 0


def hash_inputs(arrays: Mapping[str, LazyArray]) -> dict[str, str]:
    return {name: arr.sha256() for name, arr in arrays.items()}
