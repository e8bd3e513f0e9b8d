"""``FileArray``: an array stored C-ordered at an offset of a file (an ``.npy`` file, or an
uncompressed ``.npz`` member), read with ``pread`` (never mapped: a file cut while mapped is a SIGBUS).

Resident memory is one chunk whatever the file's size; it is the array layer's on-disk kind, under
both the ``.npy`` and the ``.npz`` readers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, check_dtype, no_release, reading
from lossctl.errors import InputError


@dataclass
class FileArray(LazyArray):
    """A C-ordered array at ``offset`` of ``path``."""

    offset: int = 0
    fortran: bool = False
    _spare: list = field(default_factory=list, repr=False, compare=False)  # buffers of released views

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_spare"] = []  # (buffers are no state: never pickled)
        return state

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        with reading(self.label):
            return self._read(start, stop, axis)

    def _truncated(self, size: int, needed: int) -> InputError:
        return InputError(f"{self.label}: file is truncated ({size} bytes, shape {self.shape} needs {needed}; "
                          f"was it changed while being read?); re-save it with numpy.save")

    def _read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        stop = max(start, min(stop, self.shape[axis] if self.shape else 1))
        if axis != 0 or self.fortran or not self.shape:
            return self._read_strided(start, stop, axis)
        out = np.empty((stop - start,) + tuple(self.shape[1:]), dtype=self.dtype)
        self._pread_rows(out, start)
        return out

    def _pread_rows(self, out: np.ndarray, start: int) -> None:
        """Fill ``out`` (C-contiguous) with the rows from ``start`` on: ``pread`` into it, never a
        mapping, so a file cut while it is read is an InputError, not a SIGBUS."""
        nbytes = out.nbytes
        if not nbytes:
            return
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        fd = os.open(self.path, os.O_RDONLY)
        try:
            view = memoryview(out.reshape(-1).view(np.uint8))
            pos = self.offset + start * row_bytes
            done = 0
            while done < nbytes:
                got = os.preadv(fd, [view[done:]], pos + done)
                if got <= 0:
                    raise self._truncated(os.fstat(fd).st_size, pos + nbytes)
                done += got
        finally:
            os.close(fd)

    def can_view(self) -> bool:
        return bool(self.shape) and not self.fortran

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        """Samples ``start:stop``, read with ``pread`` into a buffer reused once ``release()`` hands
        it back (a memory map would be zero-copy, but a page of it past the end of a file cut while
        it is read is a SIGBUS that kills the process)."""
        with reading(self.label):
            return self._view(start, stop)

    def _view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        stop = max(start, min(stop, self.shape[0]))
        shape = (stop - start,) + tuple(self.shape[1:])
        nbytes = math.prod(shape) * self.dtype.itemsize
        if nbytes == 0:
            return np.empty(shape, dtype=self.dtype), no_release
        spare = self._spare
        buf = None
        try:
            buf = spare.pop()  # (list.pop/append are atomic: views are taken on several threads)
        except IndexError:
            pass
        if buf is None or buf.nbytes < nbytes:
            buf = np.empty(nbytes, dtype=np.uint8)
        arr = buf[:nbytes].view(self.dtype).reshape(shape)
        try:
            self._pread_rows(arr, start)
        except BaseException:
            spare.append(buf)
            raise

        def release() -> None:
            if len(spare) < 8:
                spare.append(buf)

        return arr, release

    def _read_strided(self, start: int, stop: int, axis: int) -> np.ndarray:
        """Samples ``start:stop`` along ``axis`` (or of a Fortran-ordered array): the file read with
        ``pread`` in blocks of whole C-order rows, each block sliced (a Fortran array is the C array
        of the reversed shape, transposed)."""
        if not self.shape:
            out = np.empty((), dtype=self.dtype)
            self._pread_rows(out, 0)
            return out
        shape = tuple(self.shape[::-1]) if self.fortran else tuple(self.shape)
        c_axis = len(shape) - 1 - axis if self.fortran else axis
        row_items = math.prod(shape[1:])
        step = max(1, (1 << 24) // max(1, row_items * self.dtype.itemsize))
        pieces = []
        plain = FileArray(path=self.path, shape=shape, dtype=self.dtype, name=self.name, key=self.key,
                          offset=self.offset)
        if c_axis == 0:
            pieces.append(plain._read(start, stop))
        else:
            index = [slice(None)] * len(shape)
            index[c_axis] = slice(start, stop)
            for lo in range(0, shape[0], step):
                pieces.append(plain._read(lo, min(shape[0], lo + step))[tuple(index)])
        whole = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return np.ascontiguousarray(whole.T if self.fortran else whole)


def open_binary(path: str) -> Any:
    """A compressed file's decompressed stream (``.gz``, ``.bz2``, ``.xz``)."""
    import importlib

    module = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}[os.path.splitext(path)[1].lower()]
    return importlib.import_module(module).open(path, "rb")


def read_npy_header(fh: Any) -> tuple[Any, bool, np.dtype, int]:
    """The ``.npy`` header at the start of ``fh``: (shape, fortran, dtype, offset of the data).
    A ValueError, as ``numpy.lib.format`` raises it, for what is not one (object arrays too)."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    return shape, fortran, np.dtype(dtype), fh.tell()


def check_npy_header(shape: Any, dtype: np.dtype, label: str) -> None:
    """A header lossctl reads: a numeric dtype in native byte order and a shape that can exist."""
    check_dtype(dtype, label)
    if not dtype.isnative:
        raise InputError(f"{label}: byte-swapped arrays are not supported; re-save with native byte order")
    check_shape(shape, label)


def check_shape(shape: Any, label: str) -> None:
    """A header's shape names a size that can exist: every dimension a non-negative int, and
    the product within what NumPy indexes (a forged ``(2**40, 2**40)`` is refused here)."""
    if not isinstance(shape, tuple) or any(not isinstance(d, int) or d < 0 for d in shape):
        raise InputError(f"{label}: not a valid .npy header (shape {shape!r}); write it with numpy.save")
    if math.prod(shape) >= 2 ** 62:
        raise InputError(f"{label}: the header claims shape {shape}, more elements than any file holds; "
                         f"re-save it with numpy.save")


@dataclass
class StreamNpyArray(LazyArray):
    """An ``.npy.gz``/``.bz2``/``.xz``: read forward through its decompressed stream (a read behind
    the last one starts again from the top), so memory stays one chunk whatever the size."""

    offset: int = 0
    _fh: Any = field(default=None, repr=False)
    _pos: int = 0

    sequential = True

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        with reading(self.label):
            return self._read(start, stop, axis)

    def _open(self) -> Any:
        return open_binary(self.path)

    def _read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        if axis != 0:
            return self.read_across(start, stop, axis)
        stop = max(start, min(stop, self.shape[0] if self.shape else 1))
        row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        want = self.offset + start * row
        if self._fh is None or self._pos > want:
            if self._fh is not None:
                self._fh.close()
            self._fh, self._pos = self._open(), 0
        while self._pos < want:  # skip forward (decompressing) in bounded pieces
            got = len(self._fh.read(min(want - self._pos, 1 << 22)))
            if not got:
                break
            self._pos += got
        data = self._fh.read((stop - start) * row)
        self._pos += len(data)
        if len(data) != (stop - start) * row:
            raise InputError(f"{self.label}: the compressed .npy ends early; re-save it with numpy.save")
        out = np.frombuffer(data, dtype=self.dtype).reshape((stop - start,) + tuple(self.shape[1:]))
        return out.copy()

    def identity(self) -> Any:
        return ("npy-stream", self.path)
