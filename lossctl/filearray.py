"""``FileArray``: an array stored C-ordered at an offset of a file (an ``.npy`` file, or an
uncompressed ``.npz`` member), read with ``pread`` into fresh buffers or mapped window by window.

Resident memory is one chunk whatever the file's size; it is the array layer's on-disk kind, under
both the ``.npy`` and the ``.npz`` readers.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, no_release, reading
from lossctl.errors import InputError

_MAP_ALIGN = max(mmap.ALLOCATIONGRANULARITY, 1 << 21)


@dataclass
class FileArray(LazyArray):
    """A C-ordered array at ``offset`` of ``path``."""

    offset: int = 0
    fortran: bool = False

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
        with reading(self.label):
            return self._view(start, stop)

    def _view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        stop = max(start, min(stop, self.shape[0]))
        row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        count = (stop - start) * row_items
        shape = (stop - start,) + tuple(self.shape[1:])
        if count == 0:
            return np.empty(shape, dtype=self.dtype), no_release
        first = self.offset + start * row_items * self.dtype.itemsize
        last = first + count * self.dtype.itemsize
        base = first - first % _MAP_ALIGN  # 2 MB: the kernel can map whole huge folios of the page cache
        fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < last:  # a page mapped past the end of the file is a SIGBUS when touched
                raise self._truncated(size, last)
            end = min(size, -(-last // _MAP_ALIGN) * _MAP_ALIGN)  # whole 2 MB pieces
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
        needed = self.offset + int(np.prod(self.shape, dtype=object) if self.shape else 1) * self.dtype.itemsize
        if os.path.getsize(self.path) < needed:  # (a file cut after it was opened: no SIGBUS)
            raise self._truncated(os.path.getsize(self.path), needed)
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                       order="F" if self.fortran else "C")
        index = [slice(None)] * len(self.shape)
        if self.shape:
            index[axis] = slice(start, stop)
        out = np.array(mm[tuple(index)])
        del mm
        return out




def open_binary(path: str) -> Any:
    """A compressed file's decompressed stream (``.gz``, ``.bz2``, ``.xz``)."""
    import importlib

    module = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}[os.path.splitext(path)[1].lower()]
    return importlib.import_module(module).open(path, "rb")


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
