"""``.npy`` files: read in chunks with ``pread`` (or mapped window by window), never unpickled."""

from __future__ import annotations

import math
import os

import numpy as np

from lossctl.arrays import check_dtype, input_label
from lossctl.errors import InputError
from lossctl.filearray import FileArray, StreamNpyArray, check_shape, open_binary


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
    check_shape(shape, label)
    expected = offset + math.prod(shape) * dtype.itemsize
    if os.path.getsize(path) < expected:
        raise InputError(f"{label}: file is truncated ({os.path.getsize(path)} bytes, shape {tuple(shape)} "
                         f"needs {expected}); re-save it with numpy.save")
    return FileArray(path=path, shape=tuple(shape), dtype=dtype, name=name, offset=offset, fortran=fortran)


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
    check_shape(shape, label)
    if fortran and len(shape) > 1:
        raise InputError(f"{label}: a Fortran-ordered array cannot be streamed from a compressed file; "
                         f"save it C-ordered (numpy.ascontiguousarray) or uncompressed")
    if not dtype.isnative:
        raise InputError(f"{label}: byte-swapped arrays are not supported; re-save with native byte order")
    return StreamNpyArray(path=path, shape=tuple(shape), dtype=dtype, name=name, offset=offset)
