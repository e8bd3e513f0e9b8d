"""``.npz`` files: one array, ``file.npz:KEY``, or every array of the file by its key."""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, MemoryArray, input_label
from lossctl.errors import InputError
from lossctl.filearray import FileArray, StreamNpyArray, check_npy_header, read_npy_header
from lossctl.words import did_you_mean


def open_npz(path: str, key: str | None, name: str) -> LazyArray | dict[str, LazyArray]:
    """Members of an ``.npz``: stored (``numpy.savez``) ones are read lazily in place like an
    ``.npy`` file; compressed (``savez_compressed``) ones are decompressed whole."""
    label = input_label(name, path)
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
            raise InputError(f"{label}: no array {key!r}{did_you_mean(key, keys)} (keys: {', '.join(keys)})")
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
    where = f"{label}:{key}"
    try:
        with zf.open(info) as fh:
            shape, fortran, dtype, header_len = read_npy_header(fh)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise InputError(f"{where}: object arrays need pickle, which lossctl never loads; "
                             f"save numeric arrays") from None
        raise InputError(f"{where}: not a valid array in the .npz ({exc}); write it with numpy.savez") from None
    check_npy_header(shape, dtype, where)
    nbytes = math.prod(shape) * dtype.itemsize
    if header_len + nbytes != info.file_size:  # the header must describe the member, not the file after it
        raise InputError(f"{where}: the array's header claims shape {tuple(shape)} ({nbytes} bytes) but the member "
                         f"holds {max(0, info.file_size - header_len)} bytes; re-save it with numpy.savez")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as raw:  # the member's data starts after its local file header
            raw.seek(info.header_offset)
            local = raw.read(30)
            data_start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
                + int.from_bytes(local[28:30], "little")
        if len(local) < 30 or local[:4] != b"PK\x03\x04" or info.compress_size != info.file_size \
                or data_start + info.file_size > os.path.getsize(path):
            raise InputError(f"{where}: the member is cut short or its zip headers disagree ({info.file_size} bytes "
                             f"claimed, the file has {os.path.getsize(path)}); re-save it with numpy.savez")
        return FileArray(path=path, shape=tuple(shape), dtype=dtype, key=key, name=name,
                        offset=data_start + header_len, fortran=fortran)
    if fortran and len(shape) > 1:
        with zf.open(info) as fh:  # (read whole; its size was checked against the header above)
            data = np.lib.format.read_array(fh, allow_pickle=False)
        return MemoryArray(path=path, shape=tuple(data.shape), dtype=data.dtype, key=key, name=name, data=data)
    # streamed, never decompressed whole: zipfile stops at the member's size (= the header's)
    return ZipMemberArray(path=path, shape=tuple(shape), dtype=dtype, key=key, name=name, offset=header_len,
                          member=info.filename)


@dataclass
class ZipMemberArray(StreamNpyArray):
    """A compressed ``.npz`` member read forward through its decompressed stream, one chunk at a
    time (a member that inflates far past its header's size is never decompressed whole)."""

    member: str = ""

    def _open(self) -> Any:
        zf = zipfile.ZipFile(self.path)
        return _ZipStream(zf, zf.open(self.member))

    def identity(self) -> Any:
        return ("npz-stream", self.path, self.member)


class _ZipStream:
    def __init__(self, zf: Any, fh: Any) -> None:
        self._zf, self._fh = zf, fh

    def read(self, n: int) -> bytes:
        return self._fh.read(n)

    def close(self) -> None:
        self._fh.close()
        self._zf.close()
