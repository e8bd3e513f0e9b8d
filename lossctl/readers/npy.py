"""``.npy`` files: read in chunks with ``pread`` (or mapped window by window), never unpickled."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, check_dtype, input_label
from lossctl.errors import InputError
from lossctl.filearray import FileArray


def open_binary(path: str) -> Any:
    """A compressed file's decompressed stream (``.gz``, ``.bz2``, ``.xz``)."""
    import importlib

    module = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}[os.path.splitext(path)[1].lower()]
    return importlib.import_module(module).open(path, "rb")

def open_npy(path: str, name: str) -> FileArray:
    """The array in the ``.npy`` file ``path``, checked (header, dtype, size) but not read."""
    label = input_label(name, path)
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
    check_dtype(dtype, label)
    if not dtype.isnative:
        raise InputError(f"{label}: byte-swapped arrays are not supported; re-save with native byte order")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise InputError(f"{label}: file is truncated ({os.path.getsize(path)} bytes, shape {tuple(shape)} "
                         f"needs {expected}); re-save it with numpy.save")
    return FileArray(path=path, shape=tuple(shape), dtype=dtype, name=name, offset=offset, fortran=fortran)


@dataclass
class StreamNpyArray(LazyArray):
    """An ``.npy.gz``/``.bz2``/``.xz``: read forward through its decompressed stream (a read behind
    the last one starts again from the top), so memory stays one chunk whatever the size."""

    offset: int = 0
    _fh: Any = field(default=None, repr=False)
    _pos: int = 0

    sequential = True

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        if axis != 0:
            return self.read_across(start, stop, axis)
        stop = max(start, min(stop, self.shape[0] if self.shape else 1))
        row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        want = self.offset + start * row
        if self._fh is None or self._pos > want:
            if self._fh is not None:
                self._fh.close()
            self._fh, self._pos = open_binary(self.path), 0
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


def open_npy_stream(path: str, name: str) -> StreamNpyArray:
    """The array in the compressed ``.npy`` file ``path`` (header and dtype checked, data not read)."""
    label = input_label(name, path)
    with open_binary(path) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
        except ValueError as exc:
            raise InputError(f"{label}: not a valid compressed .npy file ({exc}); write it with numpy.save "
                             f"and gzip") from None
        offset = fh.tell()
    dtype = np.dtype(dtype)
    check_dtype(dtype, label)
    if fortran and len(shape) > 1:
        raise InputError(f"{label}: a Fortran-ordered array cannot be streamed from a compressed file; "
                         f"save it C-ordered (numpy.ascontiguousarray) or uncompressed")
    if not dtype.isnative:
        raise InputError(f"{label}: byte-swapped arrays are not supported; re-save with native byte order")
    return StreamNpyArray(path=path, shape=tuple(shape), dtype=dtype, name=name, offset=offset)
