"""Opening an input by its spec (``p.npy``, ``p.npz:KEY``, ``p.csv:col1,col2``): the dispatch to
the reader of each format (one module per format in this package).

Nothing reads more than a chunk of an ``.npy`` file at a time, and nothing ever unpickles
(``allow_pickle=False`` everywhere).
"""

from __future__ import annotations

import os

from lossctl.arrays import LazyArray
from lossctl.errors import InputError
from lossctl.readers.csv import open_csv
from lossctl.readers.npy import open_npy
from lossctl.readers.npz import open_npz


def split_spec(spec: str) -> tuple[str, str | None]:
    """``file.npz:KEY`` → (file, KEY). A whole argument naming an existing file is used whole."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, _, selector = spec.rpartition(":")
    return path, selector


def open_input(spec: str, name: str = "") -> LazyArray:
    """Open one array from ``spec`` (``p.npy``, ``p.npz``, ``p.npz:KEY``, ``p.csv:col1,col2``)."""
    found = open_source(spec, name)
    if isinstance(found, LazyArray):
        return found
    keys = ", ".join(found)
    path, _ = split_spec(spec)
    raise InputError(f"{name + ': ' if name else ''}{path} holds several arrays ({keys}); "
                     f"pick one with {path}:KEY")


def open_source(spec: str, name: str = "") -> LazyArray | dict[str, LazyArray]:
    """Open ``spec``: one array, or for an ``.npz`` of several arrays without a key, all of them."""
    path, selector = split_spec(spec)
    who = f"{name}: " if name else ""
    if not os.path.exists(path):
        raise InputError(f"{who}no such file: {path}")
    if os.path.isdir(path):
        raise InputError(f"{who}{path} is a directory; give a .npy, .npz, .csv or .tsv file")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            if selector:
                raise InputError(f"{who}{path} is a single array; drop ':{selector}'")
            return open_npy(path, name)
        if suffix == ".npz":
            return open_npz(path, selector, name)
        if suffix in (".csv", ".tsv", ".txt"):
            return open_csv(path, selector, name, sep="\t" if suffix == ".tsv" else None)
    except PermissionError:
        raise InputError(f"{who}cannot read {path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{who}cannot read {path}: {exc.strerror or exc}") from None
    raise InputError(f"{who}{path}: unsupported file type {suffix or '(none)'!r}; "
                     f"use .npy, .npz, .csv or .tsv")
