"""The array layer every loss and reader uses: an input as a :class:`LazyArray`.

A LazyArray is a shape, a dtype, where it came from, and ``read(start, stop)`` returning the samples
``start:stop`` along its sample axis, so the engine can stream any input chunk by chunk without
knowing its format. The format readers (:mod:`lossctl.readers`) subclass it; the in-memory and
reshaped views live here because the losses build them too. Only NumPy is below this module.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.errors import InputError, LossctlError
from lossctl.words import did_you_mean

NUMERIC_KINDS = "biuf"  # the dtype kinds an input may have: bool, int, uint, float


def parse_error_types() -> tuple[type[BaseException], ...]:
    """Every exception type that parsing or reading a user's input file can raise (bad bytes,
    bad compression, a bad zip, a bad header, a file cut short or too large): each one is the
    input's fault, exit 2, never lossctl's (SPEC §2)."""
    import bz2  # noqa: F401 - (bz2 raises OSError/EOFError)
    import csv
    import lzma
    import zipfile
    import zlib

    found: list[type[BaseException]] = [UnicodeError, ValueError, OverflowError, MemoryError, EOFError, OSError,
                                        csv.Error, lzma.LZMAError, zipfile.BadZipFile, zlib.error,
                                        zipfile.LargeZipFile]
    try:
        import pandas as pd

        found += [pd.errors.ParserError, pd.errors.EmptyDataError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(found)


def input_problem(label: str, exc: BaseException) -> InputError:
    """The InputError saying what went wrong reading ``label`` (one line, cut to a sane length)."""
    if isinstance(exc, UnicodeError):
        what = "not a UTF-8 text file (or a binary file given as text)"
    elif isinstance(exc, MemoryError):
        what = "the file needs more memory than there is (a header claiming a huge size, or endless lines)"
    elif isinstance(exc, PermissionError):
        what = "permission denied"
    elif isinstance(exc, OSError) and exc.strerror:
        what = exc.strerror
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
        what = f"cannot parse it ({text[:200]}{'...' if len(text) > 200 else ''})"
    return InputError(f"{label}: {what}")


@contextlib.contextmanager
def reading(label: str) -> Iterator[None]:
    """The one place where parsing a user's input turns any parse/read exception into an
    :class:`InputError` (exit 2). Wraps opening an input and every lazy read of one."""
    try:
        yield
    except LossctlError:
        raise
    except parse_error_types() as exc:
        raise input_problem(label, exc) from None


_INDEX_RE = re.compile(r"^-?\d+$")


def select_columns(selector: str, columns: Sequence[str], label: str) -> list[str]:
    """The columns ``selector`` names (``a,b`` or 0-based indices, a name first) of a table input
    (``file.csv:COL``, ``file.parquet:COL``); an unknown one is an InputError naming the choices."""
    chosen = []
    for col in (c.strip() for c in selector.split(",")):
        if col in columns:  # a name first, then a 0-based index
            chosen.append(col)
        elif _INDEX_RE.match(col) and 0 <= int(col) < len(columns):
            chosen.append(columns[int(col)])
        else:
            raise InputError(f"{label}: no column {col!r}{did_you_mean(col, columns)} "
                             f"(columns: {', '.join(columns)}; or a 0-based index)")
    return chosen


def input_label(name: str, where: str) -> str:
    """How messages name an input: ``preds (p.npy)``, or just ``p.npy`` when it has no role name."""
    return f"{name} ({where})" if name else where


@dataclass
class LazyArray:
    """An input array read on demand. ``label`` names it in messages (``preds (p.npy)``)."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    key: str | None = None
    name: str = ""
    shown: str | None = None  # how messages and reports name the file, when not by path ("-": stdin)

    @property
    def label(self) -> str:
        return input_label(self.name, (self.shown or self.path) + (f":{self.key}" if self.key else ""))

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

    #: ``boundaries()`` (optional, on inputs stored in units: Parquet row groups, shards): the rows
    #: where a unit ends; the engine ends its tasks there so that a task reads whole units.
    boundaries = None

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        """Samples ``start:stop`` along axis 0 as one window, and a ``release()`` callable.

        Only when :meth:`can_view`; the caller drops every reference to the window before
        calling ``release()`` (an ``.npy`` window is a buffer read with ``pread`` that is then
        reused for a later window, so resident memory stays a few windows).
        """
        raise NotImplementedError

    def read_across(self, start: int, stop: int, axis: int) -> np.ndarray:
        """Samples ``start:stop`` along an ``axis`` other than 0 for an input read forward along
        axis 0 only (a streamed CSV or compressed file): the whole input, sliced."""
        whole = self.read(0, self.shape[0])
        index = [slice(None)] * whole.ndim
        index[axis] = slice(start, stop)
        return whole[tuple(index)]

    def read_all(self) -> np.ndarray:
        return self.read(0, self.shape[0] if self.shape else 1)

    def content(self) -> str | np.ndarray:
        """What the provenance digest hashes: the file read (whole), or the array in memory."""
        return self.path

    def describe(self) -> dict[str, Any]:
        return {"path": (self.shown or self.path) + (f":{self.key}" if self.key else ""), "shape": list(self.shape),
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
        return self.data[start:stop], no_release

    def content(self) -> str | np.ndarray:
        return self.path if self.path and os.path.isfile(self.path) else self.data


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

    @property  # type: ignore[override]
    def boundaries(self) -> Any:  # type: ignore[override]
        return self.base.boundaries if self.base.shape[:1] == self.shape[:1] else None


def first_bad(x: np.ndarray, mask: np.ndarray, axis: int = 0) -> tuple[int, int, Any]:
    """``(count, first sample, its first bad value)`` of the True entries of ``mask`` (shape of
    ``x``), samples along ``axis``; ``(0, -1, None)`` when there are none."""
    count = int(np.count_nonzero(mask))
    if not count:
        return 0, -1, None
    if x.ndim == 0:
        return count, 0, x[()]
    m, v = np.moveaxis(mask, axis, 0), np.moveaxis(x, axis, 0)
    per_sample = m.reshape(m.shape[0], -1).any(axis=1)
    i = int(np.flatnonzero(per_sample)[0])
    return count, i, v[i][m[i]].flat[0]


def no_release() -> None:
    """The ``release()`` of a :meth:`LazyArray.view` window that maps nothing."""


def reshaped(arr: LazyArray, shape: tuple[int, ...]) -> LazyArray:
    """``arr`` seen with ``shape`` (same sample count), without reading it; ``arr`` itself if equal."""
    if tuple(shape) == tuple(arr.shape):
        return arr
    if isinstance(arr, MemoryArray):
        return MemoryArray(arr.path, tuple(shape), arr.dtype, arr.key, arr.name, arr.shown,
                           data=arr.data.reshape(shape))
    return ReshapedArray(arr.path, tuple(shape), arr.dtype, arr.key, arr.name, arr.shown, base=arr)


def from_array(data: Any, name: str = "") -> MemoryArray:
    """Wrap an in-memory array (Python API)."""
    arr = np.asarray(data)
    check_dtype(arr.dtype, name or "array")
    return check_not_empty(MemoryArray(path="<array>", shape=tuple(arr.shape), dtype=arr.dtype, name=name, data=arr))


def check_not_empty(arr: LazyArray) -> LazyArray:
    """Refuse an input whose samples have no elements, shape (N, 0): its mean would be a silent NaN.
    (0 samples is the engine's to say: CTC's concatenated targets may be empty.)"""
    if 0 in arr.shape[1:]:
        raise InputError(f"{arr.label}: the input has no elements (shape {tuple(arr.shape)}): no samples to evaluate")
    return arr


def check_dtype(dtype: np.dtype, label: str) -> None:
    """Refuse what lossctl cannot compute on: object arrays (they need pickle) and non-numbers."""
    if dtype.hasobject:
        raise InputError(f"{label}: object arrays need pickle, which lossctl never loads; "
                         f"save a numeric array (numpy.save with a float or int dtype)")
    if dtype.kind not in NUMERIC_KINDS:
        raise InputError(f"{label}: dtype {dtype} is not numeric; save a float, int or bool array")
