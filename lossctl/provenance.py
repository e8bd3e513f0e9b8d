"""A report's provenance: versions, time, and a content digest of each input (SPEC §6).

A digest is written ``"ALGO:HEX"`` so that a reader knows what it may compare it with. The
default is xxh3_128 (the ``xxhash`` package): 128 bits are plenty to notice that an input changed,
and at about 13 GB/s on one core it is ten times cheaper than sha256 (1.3 GB/s), which made
provenance cost half of a two-file evaluation (benchmarks/README.md). ``sha256`` is there for
whoever needs a cryptographic digest; ``none`` skips hashing, and the inputs then carry no
``digest`` field at all (absent, not null: there is nothing to compare). Without ``xxhash``
importable the default falls back to sha256 and says so in the digest's name.

What is hashed: a file's bytes, whole (``f.npz:a`` and ``f.npz:b``, or two CSV columns, share
the file's one digest), so ``sha256:…`` equals ``sha256sum FILE``; an in-memory array's dtype and
shape, then its bytes (two shapes of one buffer differ).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import mmap
import os
import platform
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from lossctl import __version__
from lossctl.errors import UsageError
from lossctl.inputs import LazyArray

#: What ``--hash`` / ``hash:`` / ``hash=`` accept; the first is the default.
ALGORITHMS = ("xxh3", "sha256", "none")

_BLOCK = 1 << 22  # between blocks a cancelled hash stops; 4 MB keeps the hash at full speed
#: A file is hashed through read-only memory maps of this size, one at a time: no copy out of
#: the page cache (reading into a buffer took twice as long, 53 vs 27 ms for 400 MB with xxh3),
#: and unmapping each window keeps the touched pages from counting as resident memory.
_WINDOW = 1 << 24


def check_algorithm(value: str | None, option: str = "--hash") -> str:
    """The normalised choice, or a UsageError naming the allowed values."""
    if value is None:
        return ALGORITHMS[0]
    if not isinstance(value, str) or value.lower() not in ALGORITHMS:
        raise UsageError(f"{option} must be one of {', '.join(ALGORITHMS)}, got {value!r}")
    return value.lower()


def _hasher(algorithm: str) -> tuple[str, Any]:
    """(the name written before the ``:``, a constructor of hashlib-like objects)."""
    if algorithm == "xxh3":
        try:
            import xxhash
        except ImportError:  # a broken or minimal install: still a digest, named for what it is
            return "sha256", hashlib.sha256
        return "xxh3_128", xxhash.xxh3_128
    return "sha256", hashlib.sha256


def split_digest(text: str) -> tuple[str, str]:
    """``"ALGO:HEX"`` as (algo, hex); a bare hex (reports before digests were named) is sha256."""
    algo, sep, hexpart = text.rpartition(":")
    return (algo.lower(), hexpart.lower()) if sep else ("sha256", text.lower())


class Hashing:
    """The digests of the inputs, computed on background threads started at once.

    Distinct files in parallel, one thread each up to the worker count: hashlib and xxhash
    release the GIL, so this overlaps with the evaluation. ``cancel()`` stops the threads between
    blocks when the evaluation fails; ``result()`` joins them and maps input name → digest.
    """

    def __init__(self, used: Mapping[str, LazyArray], algorithm: str) -> None:
        from lossctl.engine import worker_count

        self.name, self._new = _hasher(algorithm)
        self._keys: dict[str, Any] = {}
        jobs: dict[Any, str | np.ndarray] = {}
        for input_name, arr in used.items():
            source = arr.content()
            if isinstance(source, str):
                source = os.path.realpath(source)
            key = source if isinstance(source, str) else ("array", id(source), source.shape, source.dtype.str)
            self._keys[input_name] = key
            jobs.setdefault(key, source)
        self._jobs = list(jobs.items())
        self._digests: dict[Any, str] = {}
        self._errors: list[BaseException] = []
        self._stop = threading.Event()
        self._next = iter(range(len(self._jobs)))
        self._lock = threading.Lock()
        count = max(1, min(len(self._jobs), worker_count()))
        self._threads = [threading.Thread(target=self._run, name="lossctl-hash", daemon=True) for _ in range(count)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    i = next(self._next, None)
                if i is None:
                    return
                key, source = self._jobs[i]
                digest = self._file(source) if isinstance(source, str) else self._array(source)
                self._digests[key] = f"{self.name}:{digest}"
        except BaseException as exc:  # re-raised by result() in the calling thread
            self._errors.append(exc)
            self._stop.set()

    def _file(self, path: str) -> str:
        digest = self._new()
        with open(path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            for offset in range(0, size, _WINDOW):
                if self._stop.is_set():
                    break
                with mmap.mmap(fh.fileno(), min(_WINDOW, size - offset), access=mmap.ACCESS_READ,
                               offset=offset) as window:
                    digest.update(window)
        return digest.hexdigest()

    def _array(self, data: np.ndarray) -> str:
        digest = self._new()
        digest.update(f"{data.dtype.str}{data.shape}".encode())
        flat = memoryview(np.ascontiguousarray(data)).cast("B")  # no copy when already contiguous
        for start in range(0, len(flat), _BLOCK):
            if self._stop.is_set():
                break
            digest.update(flat[start:start + _BLOCK])
        return digest.hexdigest()

    def cancel(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def result(self) -> dict[str, str]:
        for t in self._threads:
            t.join()
        if self._errors:
            raise self._errors[0]
        return {name: self._digests[key] for name, key in self._keys.items()}


def start_hashing(used: Mapping[str, LazyArray], algorithm: str) -> Hashing | None:
    """Start hashing ``used`` in the background, or None for ``none``."""
    return None if algorithm == "none" else Hashing(used, algorithm)


def provenance_block(used: Mapping[str, LazyArray], hashing: Hashing | None) -> dict[str, Any]:
    """The report's ``provenance`` (waits for the digests)."""
    digests = hashing.result() if hashing is not None else {}
    inputs = {}
    for name, arr in used.items():
        inputs[name] = {"path": arr.describe()["path"]}
        if name in digests:
            inputs[name]["digest"] = digests[name]
    return {
        "lossctl": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
    }
