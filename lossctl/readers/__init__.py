"""Opening an input by its spec (``p.npy``, ``p.npz:KEY``, ``p.csv:col1,col2``, ``-`` for stdin):
the dispatch to the reader of each format (one module per format in this package).

Nothing reads more than a chunk of an ``.npy`` file at a time, and nothing ever unpickles
(``allow_pickle=False`` everywhere).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from lossctl.arrays import LazyArray, check_not_empty, input_label, reading
from lossctl.errors import InputError, option
from lossctl.readers.csv import compression, open_csv
from lossctl.readers.npy import open_npy
from lossctl.readers.npz import open_npz
from lossctl.readers.remote import filesystem, is_url, split_url
from lossctl.readers.shards import is_glob, list_shards, sharded

STDIN = "-"
ARROW_SUFFIXES = (".parquet", ".pq", ".feather", ".arrow", ".ipc")  # (lossctl.readers.arrow: imports pyarrow)
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass(frozen=True)
class ReadOptions:
    """How inputs are read: ``--header``, ``--delimiter``, ``--classes`` (SPEC §5), and
    ``--storage-option`` for URLs (SPEC §8)."""

    header: str = "auto"
    delimiter: str | None = None
    classes: tuple[str, ...] | None = None
    storage_options: Any = None  # a dict for fsspec (dotted keys already nested)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``file.npz:KEY`` → (file, KEY). A whole argument naming an existing file is used whole."""
    if is_url(spec):
        return split_url(spec)
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, _, selector = spec.rpartition(":")
    return path, selector


def open_input(spec: str, name: str = "", options: ReadOptions | None = None) -> LazyArray:
    """Open one array from ``spec`` (``p.npy``, ``p.npz``, ``p.npz:KEY``, ``p.csv:col1,col2``, ``-``)."""
    found = open_source(spec, name, options)
    if isinstance(found, LazyArray):
        return found
    keys = ", ".join(found)
    path, _ = split_spec(spec)
    raise InputError(f"{name + ': ' if name else ''}{path} holds several arrays ({keys}); "
                     f"pick one with {path}:KEY (e.g. {path}:{next(iter(found))})")


def open_source(spec: str, name: str = "", options: ReadOptions | None = None) -> LazyArray | dict[str, LazyArray]:
    """Open ``spec``: one array, or for an ``.npz`` of several arrays without a key, all of them."""
    found = _open_source(spec, name, options or ReadOptions())
    for arr in found.values() if isinstance(found, dict) else [found]:
        check_not_empty(arr)
    return found


def _open_source(spec: str, name: str, options: ReadOptions) -> LazyArray | dict[str, LazyArray]:
    found = _open_path(spec, name, options)
    if split_spec(spec)[0] == STDIN:
        for arr in found.values() if isinstance(found, dict) else [found]:
            arr.shown = STDIN
    return found


def _open_path(spec: str, name: str, options: ReadOptions) -> LazyArray | dict[str, LazyArray]:
    path, selector = split_spec(spec)
    who = f"{name}: " if name else ""
    shown = None
    if is_url(path):
        return _open_url(path, selector, name, options, who)
    if path == STDIN and not os.path.exists(path):
        path, shown = stdin_file(name), STDIN
    if os.path.isdir(path) or (is_glob(path) and not os.path.exists(path)):
        return _open_shards(path, selector, name, options, who)
    if not os.path.exists(path):
        raise InputError(f"{who}no such file: {path}")
    if shown is None and not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO blocks, /dev/zero never ends
        raise InputError(f"{who}{path} is not a regular file (a pipe, device or socket); save the data to a "
                         f"file, or pipe it in as '-'")
    root, suffix = os.path.splitext(path.lower())
    packed = compression(path)
    if packed is not None:
        root, suffix = os.path.splitext(root)
    try:
        with reading(input_label(name, shown or path)):
            return _open_format(path, selector, name, options, who, shown, suffix, packed)
    except PermissionError:
        raise InputError(f"{who}cannot read {path}: permission denied") from None


def _open_url(url: str, selector: str | None, name: str, options: ReadOptions, who: str) -> LazyArray:
    """A URL (one object, a directory or a glob of shards) through fsspec (:mod:`lossctl.readers.remote`)."""
    from lossctl.readers.remote import remote_problem

    label = f"{who}{url}"
    fs, path = filesystem(url, options.storage_options, label)
    try:
        if is_glob(path) or fs.isdir(path):
            files = list_shards(path, label, compression, listing=fs.find,
                                expand=lambda pattern: [f for f in fs.glob(pattern) if fs.isfile(f)])
            parts = [_open_object(fs, f, fs.unstrip_protocol(f), selector, name, options, who) for f in files]
            return sharded(url, parts, name, selector)
        return _open_object(fs, path, url, selector, name, options, who)
    except OSError as exc:
        raise remote_problem(label, exc) from None


def _open_object(fs: Any, path: str, url: str, selector: str | None, name: str, options: ReadOptions,
                 who: str) -> LazyArray:
    from lossctl.readers.remote import describe_object, open_remote_npy

    suffix = os.path.splitext(path.lower())[1]
    if not fs.isfile(path):
        raise InputError(f"{who}no such object: {url}")
    with reading(input_label(name, url)):
        if suffix == ".npy":
            if selector:
                raise InputError(f"{who}{url} is a single array; drop ':{selector}'")
            return open_remote_npy(fs, path, url, name)
        if suffix in ARROW_SUFFIXES:
            from lossctl.readers.arrow import open_arrow

            meta = describe_object(fs, path)
            arr = open_arrow(url, selector, name, classes=options.classes, opener=FileOpener(fs, path),
                             key=("remote", url, meta["etag"], meta["size"]))
            arr.remote = meta
            return arr
    raise InputError(f"{who}{url}: remote {suffix or 'files without a suffix'} inputs are not supported; "
                     f"use .npy, .parquet, .feather or .arrow (or copy the file here)")


class FileOpener:
    """``fs.open(path, "rb")`` as a picklable callable (a dask worker reopens the object itself)."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs, self.path = fs, path

    def __call__(self) -> Any:
        return self.fs.open(self.path, "rb")


def _open_shards(path: str, selector: str | None, name: str, options: ReadOptions, who: str) -> LazyArray:
    """A directory or glob of shards as one input (:mod:`lossctl.readers.shards`)."""
    files = list_shards(path, f"{who}{path}", compression)
    parts = []
    for file in files:
        if not stat.S_ISREG(os.stat(file).st_mode):
            raise InputError(f"{who}{file} is not a regular file (a pipe, device or socket)")
        found = _open_path(file if selector is None else f"{file}:{selector}", name, options)
        if isinstance(found, dict) or not found.shape:
            raise InputError(f"{who}{file}: a shard must be one array with a rows axis"
                             f"{'; select one with ' + path + ':KEY' if isinstance(found, dict) else ''}")
        parts.append(found)
    return sharded(path, parts, name, selector)


def _open_format(path: str, selector: str | None, name: str, options: ReadOptions, who: str, shown: str | None,
                 suffix: str, packed: str | None) -> LazyArray | dict[str, LazyArray]:
    if suffix == ".npy":
        if selector:
            raise InputError(f"{who}{shown or path} is a single array; drop ':{selector}'")
        if packed is not None:
            from lossctl.readers.npy import open_npy_stream

            return open_npy_stream(path, name)
        return open_npy(path, name)
    if suffix == ".npz" and packed is None:
        return open_npz(path, selector, name)
    if suffix in ARROW_SUFFIXES and packed is None:
        from lossctl.readers.arrow import open_arrow

        return open_arrow(path, selector, name, classes=options.classes, shown=shown)
    if suffix in _CSV_SUFFIXES:
        sep = options.delimiter if options.delimiter is not None else "\t" if suffix == ".tsv" else None
        return open_csv(path, selector, name, sep, header=options.header, classes=options.classes, shown=shown)
    raise InputError(f"{who}{path}: unsupported file type {suffix or '(none)'!r}; use .npy, .npz, .csv, .tsv, "
                     f".parquet, .feather or .arrow (.csv/.tsv/.npy also .gz, .bz2 or .xz compressed), or a "
                     f"directory or quoted glob of shards")


_STDIN_FILES: dict[str, object] = {}  # the stream read, and the file it was copied to


def stdin_file(name: str = "") -> str:
    """Standard input, copied once (in blocks) to a temporary file named for what it holds
    (``stdin.npy`` when it starts with the NPY magic, else ``stdin.csv``), so every input given
    as ``-`` (``-:p`` and ``-:t``) reads the same bytes, and an ``.npy`` is still read lazily."""
    import atexit
    import shutil
    import sys
    import tempfile

    stream = getattr(sys.stdin, "buffer", sys.stdin)
    if _STDIN_FILES.get("stream") is stream:
        return str(_STDIN_FILES["path"])
    if stream is None or (hasattr(stream, "isatty") and stream.isatty()):
        raise InputError(f"{name + ': ' if name else ''}'-' reads standard input, but nothing is piped in; "
                         f"e.g. cat preds.csv | lossctl evaluate - targets.npy ...")
    head = stream.read(6)
    if isinstance(head, str):  # a text stdin without a buffer (tests)
        head = head.encode()
    suffix = ".npy" if head == b"\x93NUMPY" else ".gz" if head[:2] == b"\x1f\x8b" else ".csv"
    folder = tempfile.mkdtemp(prefix="lossctl-stdin-")
    path = os.path.join(folder, "stdin" + (".csv.gz" if suffix == ".gz" else suffix))
    with open(path, "wb") as out:
        out.write(head)
        while True:
            block = stream.read(1 << 20)
            if not block:
                break
            out.write(block.encode() if isinstance(block, str) else block)
    if suffix == ".gz":
        import gzip

        with gzip.open(path, "rb") as fh:
            if fh.read(6) == b"\x93NUMPY":
                os.rename(path, path := os.path.join(folder, "stdin.npy.gz"))
    atexit.register(shutil.rmtree, folder, True)
    _STDIN_FILES.update(stream=stream, path=path)
    return path


def selection_hint(found: LazyArray | dict[str, LazyArray] | None) -> str:
    """``; p.csv has columns a, b: select ... with p.csv:COL`` for an input opened whole where a part
    of it was wanted (a CSV of several columns without ``:COL``, an ``.npz`` of several arrays without
    ``:KEY``); empty otherwise. Messages about missing inputs and mismatched shapes end with it."""
    if isinstance(found, dict) and found:
        first = next(iter(found.values()))
        where = first.shown or first.path
        keys = list(found)
        return (f"; {where} holds {', '.join(keys)}: pick one with {where}:KEY (e.g. {where}:{keys[0]}), "
                f"or name each with {option('input', f'NAME={where}:KEY')}")
    columns = getattr(found, "columns", ())
    if isinstance(found, LazyArray) and found.key is None and len(columns) > 1:
        where = found.shown or found.path
        return (f"; {where} has columns {', '.join(columns)}: select them with {where}:COL "
                f"(e.g. {where}:{columns[0]} {where}:{columns[1]})")
    return ""
