"""Sharded inputs: a directory (a Parquet dataset, or a folder of ``.npy``/``.parquet``/``.csv``
shards) or a quoted glob (``'preds/part-*.parquet:y_pred'``) is ONE input, its shards' rows
concatenated in natural sort order (``part-2`` before ``part-10``).

The partition interface, for engines that split the work (``--engine dask``):
``ShardedArray.partitions()`` returns ``[(shard, row_offset, rows), ...]`` in row order, one entry
per shard, where ``shard`` is the shard's path (or URL) and ``row_offset`` its first row in the
concatenated input; ``ShardedArray.parts`` holds each shard's own LazyArray, and
``ShardedArray.read(row_offset, row_offset + rows)`` reads exactly one shard's rows. A single
Parquet/Arrow file lists its row groups / record batches the same way (``ArrowArray.partitions``).
Any other LazyArray is one partition ``[(path, 0, N)]`` (:func:`partitions`). Opened ``.npy``,
Parquet/Arrow and remote inputs pickle (without their open handles and decoded row groups), so an
engine may ship the opened input to a worker and read a partition there; a CSV shard is streamed
in one process only.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, no_release
from lossctl.errors import InputError

GLOB_CHARS = "*?["
#: Files a directory of shards may hold besides its shards (Spark/Hive markers, dataset metadata).
_SKIPPED = re.compile(r"^(\.|_)")


def natural_key(path: str) -> list[Any]:
    """``part-2`` before ``part-10``: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def is_glob(path: str) -> bool:
    return any(c in path for c in GLOB_CHARS)


def _format_of(path: str, compressed: Callable[[str], str | None]) -> str:
    root = path.lower()
    if compressed(root):
        root = os.path.splitext(root)[0]
    suffix = os.path.splitext(root)[1]
    return {".tsv": ".csv", ".txt": ".csv", ".pq": ".parquet"}.get(suffix, suffix)


def list_shards(path: str, label: str, compressed: Callable[[str], str | None],
                listing: Callable[[str], list[str]] | None = None,
                expand: Callable[[str], list[str]] | None = None) -> list[str]:
    """The shard files of a directory or a glob, naturally sorted, all of one format.

    ``listing(dir)`` lists a directory's files recursively and ``expand(pattern)`` a glob's (both
    default to the local file system; a remote file system passes its own).
    """
    if is_glob(path):
        found = (expand or _local_glob)(path)
        if not found:
            raise InputError(f"{label}: the pattern {path} matches no files; check the path, and quote the "
                             f"pattern so the shell does not expand it")
    else:
        found = [f for f in (listing or _local_listing)(path) if not _SKIPPED.match(os.path.basename(f))]
        if not found:
            raise InputError(f"{label}: the directory {path} holds no shard files (.npy, .parquet, .csv, ...)")
    found = sorted(found, key=natural_key)
    formats = sorted({_format_of(f, compressed) for f in found})
    if len(formats) > 1:
        examples = ", ".join(next(f for f in found if _format_of(f, compressed) == fm) for fm in formats)
        raise InputError(f"{label}: the shards of {path} mix formats ({', '.join(formats)}: {examples}); "
                         f"one input's shards must all be one format (select them with a glob, e.g. "
                         f"'{os.path.join(path if not is_glob(path) else os.path.dirname(path), '*' + formats[0])}')")
    return found


def _local_glob(pattern: str) -> list[str]:
    return [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]


def _local_listing(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _SKIPPED.match(d)]
        out += [os.path.join(root, f) for f in files]
    return out


@dataclass
class ShardedArray(LazyArray):
    """The rows of ``parts`` (one LazyArray per shard, same trailing shape) one after the other."""

    parts: list[LazyArray] = field(default_factory=list, repr=False)
    offsets: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    @property  # type: ignore[override]
    def sequential(self) -> bool:  # type: ignore[override]
        return any(p.sequential for p in self.parts)

    def _pieces(self, start: int, stop: int) -> list[tuple[LazyArray, int, int]]:
        first = max(0, int(np.searchsorted(self.offsets, start, side="right")) - 1)
        out = []
        for i in range(first, len(self.parts)):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            if lo >= stop:
                break
            if hi > start:
                out.append((self.parts[i], max(start, lo) - lo, min(stop, hi) - lo))
        return out

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        if axis != 0:
            return self.read_across(start, stop, axis)
        stop = max(start, min(stop, self.shape[0]))
        pieces = [p.read(s, e) for p, s, e in self._pieces(start, stop)]
        if not pieces:
            return np.empty((0,) + tuple(self.shape[1:]), dtype=self.dtype)
        return _joined(pieces, self.dtype)

    def can_view(self) -> bool:
        return all(p.can_view() for p in self.parts)

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        stop = max(start, min(stop, self.shape[0]))
        pieces = self._pieces(start, stop)
        if len(pieces) == 1 and pieces[0][0].dtype == self.dtype:
            p, s, e = pieces[0]
            return p.view(s, e)
        if not pieces:
            return np.empty((0,) + tuple(self.shape[1:]), dtype=self.dtype), no_release
        out = []
        for p, s, e in pieces:  # across shards: copied, and each shard's window released at once
            arr, release = p.view(s, e)
            out.append(np.array(arr, dtype=self.dtype))
            del arr
            release()
        return np.concatenate(out), no_release

    def identity(self) -> Any:
        return ("shards", tuple(p.identity() for p in self.parts))

    def content(self) -> Any:
        """Every shard's content, in order: the digest hashes them one after the other."""
        return tuple(p.content() for p in self.parts)

    def boundaries(self) -> list[int]:
        """Rows where a shard (or a unit inside one: a row group) ends."""
        out = []
        for i, p in enumerate(self.parts):
            inner = getattr(p, "boundaries", None)
            out += [int(self.offsets[i]) + b for b in (inner() if inner is not None else [])]
            out.append(int(self.offsets[i + 1]))
        return out[:-1]

    def partitions(self) -> list[tuple[str, int, int]]:
        return [(p.shown or p.path, int(self.offsets[i]), int(self.offsets[i + 1] - self.offsets[i]))
                for i, p in enumerate(self.parts)]


def _joined(pieces: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if len(pieces) == 1:
        return pieces[0].astype(dtype, copy=False)
    return np.concatenate([np.asarray(p, dtype=dtype) for p in pieces])


def sharded(spec: str, parts: list[LazyArray], name: str, selector: str | None) -> ShardedArray:
    """One input of ``parts`` (opened shards, in order): trailing shapes must agree."""
    tail = tuple(parts[0].shape[1:])
    for p in parts[1:]:
        if tuple(p.shape[1:]) != tail or (len(p.shape) == 0) != (len(parts[0].shape) == 0):
            raise InputError(f"{p.label}: shard has shape {tuple(p.shape)}, but {parts[0].shown or parts[0].path} "
                             f"has {tuple(parts[0].shape)}; every shard needs the same shape after the rows axis")
    dtype = np.result_type(*[p.dtype for p in parts])
    offsets = np.concatenate([[0], np.cumsum([p.shape[0] for p in parts])]).astype(np.int64)
    return ShardedArray(path=spec, shape=(int(offsets[-1]),) + tail, dtype=np.dtype(dtype), key=selector,
                        name=name, parts=parts, offsets=offsets)


def partitions(arr: LazyArray) -> list[tuple[str, int, int]]:
    """``(shard, row_offset, rows)`` pieces of ``arr`` an engine may read independently, in row order."""
    listed = getattr(arr, "partitions", None)
    if callable(listed):
        return listed()
    base = getattr(arr, "base", None)
    if isinstance(base, LazyArray) and base.shape[:1] == arr.shape[:1]:
        return partitions(base)
    return [(arr.shown or arr.path, 0, int(arr.shape[0]) if arr.shape else 1)]
