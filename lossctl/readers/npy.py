"""``.npy`` files: read in chunks with ``pread`` (or mapped window by window), never unpickled."""

from __future__ import annotations

import math
import os


from lossctl.arrays import input_label
from lossctl.errors import InputError
from lossctl.filearray import FileArray, StreamNpyArray, check_npy_header, open_binary, read_npy_header


def open_npy(path: str, name: str) -> FileArray:
    """The array in the ``.npy`` file ``path``, checked (header, dtype, size) but not read."""
    label = input_label(name, path)
    with open(path, "rb") as fh:
        try:
            shape, fortran, dtype, offset = read_npy_header(fh)
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                raise InputError(f"{label}: object arrays need pickle, which lossctl never loads; "
                                 f"save a numeric array") from None
            raise InputError(f"{label}: not a valid .npy file ({exc}); write it with numpy.save") from None
    check_npy_header(shape, dtype, label)
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
            shape, fortran, dtype, offset = read_npy_header(fh)
        except ValueError as exc:
            raise InputError(f"{label}: not a valid compressed .npy file ({exc}); write it with numpy.save "
                             f"and gzip") from None
    check_npy_header(shape, dtype, label)
    if fortran and len(shape) > 1:
        raise InputError(f"{label}: a Fortran-ordered array cannot be streamed from a compressed file; "
                         f"save it C-ordered (numpy.ascontiguousarray) or uncompressed")
    return StreamNpyArray(path=path, shape=tuple(shape), dtype=dtype, name=name, offset=offset)
