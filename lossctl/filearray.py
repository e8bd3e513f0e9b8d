"""``FileArray``: an array stored C-ordered at an offset of a file (an ``.npy`` file, or an
uncompressed ``.npz`` member), read with ``pread`` into fresh buffers or mapped window by window.

Resident memory is one chunk whatever the file's size; it is the array layer's on-disk kind, under
both the ``.npy`` and the ``.npz`` readers.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, no_release
from lossctl.errors import InputError

_MAP_ALIGN = max(mmap.ALLOCATIONGRANULARITY, 1 << 21)


@dataclass
class FileArray(LazyArray):
    """A C-ordered array at ``offset`` of ``path``."""

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
            return np.empty(shape, dtype=self.dtype), no_release
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


