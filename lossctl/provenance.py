"""A report's provenance: versions, time, and a content digest of each input (SPEC §6).

A digest is written ``"ALGO:HEX"`` so that a reader knows what it may compare it with. The
default is xxh3_128 (the ``xxhash`` package): 128 bits are plenty to notice that an input changed,
and at about 13 GB/s on one core it is ten times cheaper than sha256 (1.3 GB/s), whose digests
doubled a two-file CLI run (benchmarks/README.md). ``sha256`` is there for
whoever needs a cryptographic digest; ``none`` skips hashing, and the inputs then carry no
``digest`` field at all (absent, not null: there is nothing to compare). Without ``xxhash``
importable the default falls back to sha256 and says so in the digest's name.

What is hashed: a file's bytes, whole (``f.npz:a`` and ``f.npz:b``, or two CSV columns, share
the file's one digest), so ``sha256:…`` equals ``sha256sum FILE``; a sharded input (a directory or
glob), its shards' bytes one after the other in their natural order (``cat $(shards) | sha256sum``);
a URL (``s3://``…), not its bytes (a second download) but the ETag the store reports (``etag:…``; for
several shards, or objects without an ETag, ``etag-ALGO:`` a digest of their URLs, ETags and sizes); an in-memory array's dtype and
shape, then its bytes (two shapes of one buffer differ).

When: :class:`Hashing` starts background threads as the evaluation starts, and the CLI starts
the files its arguments name even earlier (:func:`prefetch`), while it imports NumPy.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lossctl.version import __version__
from lossctl.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from lossctl.arrays import LazyArray

#: What ``--hash`` / ``hash:`` / ``hash=`` accept; the first is the default.
ALGORITHMS = ("xxh3", "sha256", "none")

#: Bytes per ``update()`` for xxh3, which hashes at memory speed: a file read into one reused buffer
#: of this size. (Read-only memory maps were faster, 42 vs 75 ms for 400 MB, but a page mapped
#: past the end of a file cut while it is hashed is a SIGBUS that kills the process.) 8 MB: 1 MB
#: reads took 124 ms, 32 MB 92 ms (a buffer past the cache is written to memory and read back).
#: Between two updates the thread takes the GIL back, which waits up to the 5 ms switch interval
#: while another thread runs Python (the CLI importing NumPy): 400 MB hashed beside a busy Python
#: thread took 2.9 s in 1 MB pieces, 313 ms in 16 MB. Between reads a cancelled hash stops.
_WINDOW = 1 << 23
#: sha256 is ten times slower than memory: it reads a file into a buffer that stays in cache
#: (two 400 MB files on two threads: 276 ms in 4 MB reads, 347 ms through memory maps).
_BUFFER = 1 << 22


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


def _buffered(digest: Any, fh: Any, size: int, stop: threading.Event, block: int = _BUFFER) -> None:
    """The file read into one reused buffer (never mapped: a mapped file cut while it is hashed is
    a SIGBUS that kills the process, where a read just ends early)."""
    buf = bytearray(min(block, max(size, 1)))
    view = memoryview(buf)
    while not stop.is_set():
        n = fh.readinto(buf)
        if not n:
            return
        digest.update(view[:n])


def split_digest(text: str) -> tuple[str, str]:
    """``"ALGO:HEX"`` as (algo, hex); a bare hex (reports before digests were named) is sha256."""
    algo, sep, hexpart = text.rpartition(":")
    return (algo.lower(), hexpart.lower()) if sep else ("sha256", text.lower())


class _Job:
    """One digest: a file (by real path) or an in-memory array, hashed on some worker thread."""

    def __init__(self, source: Any, new: Any) -> None:
        self.source, self._new = source, new
        self.digest: str | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.done = threading.Event()
        self._claimed = False
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """True for the one worker that gets to run this job (an early one may be taken over)."""
        with self._lock:
            claimed, self._claimed = self._claimed, True
        return not claimed

    @property
    def name(self) -> str | None:
        """The digest's own name when it is not the algorithm's (a remote object's ETag)."""
        return self.source.name(self._new) if isinstance(self.source, _Remote) else None

    def run(self) -> None:
        try:
            if isinstance(self.source, _Remote):
                self.digest = self.source.digest(self._new)
            else:
                self.digest = self._file() if isinstance(self.source, (str, tuple)) else self._array()
        except BaseException as exc:  # re-raised by result() in the calling thread
            self.error = exc
        self.done.set()

    def _file(self) -> str:
        digest = self._new()
        block = _BUFFER if digest.name == "sha256" else _WINDOW
        for path in (self.source,) if isinstance(self.source, str) else self.source:
            if not isinstance(path, str):
                raise TypeError(f"cannot hash a shard held as {type(path).__name__}")
            with open(path, "rb", buffering=0) as fh:
                _buffered(digest, fh, os.fstat(fh.fileno()).st_size, self.stop, block)
        return digest.hexdigest()

    def _array(self) -> str:
        import numpy as np

        data = self.source
        digest = self._new()
        digest.update(f"{data.dtype.str}{data.shape}".encode())
        flat = memoryview(np.ascontiguousarray(data)).cast("B")  # no copy when already contiguous
        for start in range(0, len(flat), _WINDOW):
            if self.stop.is_set():
                break
            digest.update(flat[start:start + _WINDOW])
        return digest.hexdigest()

    def wait(self) -> str:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.digest or ""


def _remote(source: Any) -> bool:
    return isinstance(source, dict) or (isinstance(source, tuple) and bool(source)
                                        and all(isinstance(s, dict) for s in source))


class _Remote:
    """What a remote input's digest is made of: each object's URL, ETag and size (hashing the
    bytes would download them a second time). One object with an ETag: ``etag:<ETag>``; several
    (shards), or none with an ETag: ``etag-<algorithm>:<hex>`` over lines ``url<TAB>etag<TAB>size``."""

    def __init__(self, source: Any) -> None:
        objs = [source] if isinstance(source, dict) else list(source)
        self.objects = objs
        self.lines = "".join(f"{o.get('url')}\t{o.get('etag')}\t{o.get('size')}\n" for o in objs)

    def name(self, new: Any) -> str:
        if len(self.objects) == 1 and self.objects[0].get("etag"):
            return "etag"
        return f"etag-{'sha256' if new().name == 'sha256' else 'xxh3_128'}"

    def digest(self, new: Any) -> str:
        if len(self.objects) == 1 and self.objects[0].get("etag"):
            return str(self.objects[0]["etag"])
        h = new()
        h.update(self.lines.encode())
        return h.hexdigest()


class _Workers:
    """Threads that run the jobs of a list that no other worker claimed, skipping stopped ones."""

    def __init__(self, jobs: list[_Job], threads: int) -> None:
        self._jobs = iter(jobs)
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, name="lossctl-hash", daemon=True)
                        for _ in range(max(1, min(len(jobs), threads)))]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                job = next(self._jobs, None)
            if job is None:
                return
            if not job.claim():
                continue
            if job.stop.is_set():
                job.done.set()
                continue
            job.run()


#: Files whose hashing :func:`prefetch` started, by (algorithm name, real path): a Hashing adopts them.
_EARLY: dict[tuple[str, str], _Job] = {}
_EARLY_LOCK = threading.Lock()


class Hashing:
    """The digests of the inputs, computed on background threads started at once.

    Distinct files in parallel, one thread each up to the worker count: hashlib and xxhash
    release the GIL, so this overlaps with the evaluation. A file whose hash :func:`prefetch`
    already started is not read again. ``cancel()`` stops every job between windows when the
    evaluation fails; ``result()`` waits for them and maps input name → digest.
    """

    def __init__(self, used: Mapping[str, LazyArray], algorithm: str) -> None:
        from lossctl.workers import worker_count

        self.name, new = _hasher(algorithm)
        self._jobs: dict[str, _Job] = {}
        by_key: dict[Any, _Job] = {}
        for input_name, arr in used.items():
            source = arr.content()
            if isinstance(source, str):
                source = os.path.realpath(source)
            elif isinstance(source, tuple):  # shards: their files' bytes one after the other
                source = tuple(os.path.realpath(s) if isinstance(s, str) else s for s in source)
            if _remote(source):  # URLs: the objects' ETags and sizes, not a second download
                source = _Remote(source)
                key: Any = ("remote", source.lines)
            else:
                key = source if isinstance(source, (str, tuple)) else ("array", id(source), source.shape,
                                                                       source.dtype.str)
            if key not in by_key:
                with _EARLY_LOCK:
                    early = _EARLY.pop((self.name, key), None) if isinstance(key, str) else None
                by_key[key] = early or _Job(source, new)
            self._jobs[input_name] = by_key[key]
        # early jobs too: one that the early thread has not reached yet is hashed here, in parallel
        self._workers = _Workers(list(by_key.values()), worker_count())

    def cancel(self) -> None:
        for job in self._jobs.values():
            job.stop.set()
        for t in self._workers.threads:
            t.join()

    def result(self) -> dict[str, str]:
        return {name: f"{job.name or self.name}:{job.wait()}" for name, job in self._jobs.items()}


def prefetch(paths: Sequence[str | None], algorithm: str) -> Callable[[], None]:
    """Start hashing the files that command-line arguments name, before NumPy is even imported.

    The CLI spends its first ~0.1 s importing NumPy and lossctl on one core, so a digest started
    then mostly overlaps idle time; one thread, the files one after the other (a second thread
    would take its CPU from the imports). ``path`` and ``path:KEY`` (an existing file before the
    last ``:``) count; anything else (globs, remote URLs) is left to :class:`Hashing`. Returns a
    function that stops what no Hashing adopted and joins the thread: call it when the evaluation
    is over, however it ended.
    """
    name, new = _hasher(algorithm) if algorithm != "none" else ("", None)
    jobs: list[_Job] = []
    for path in paths:
        if new is None or not path:
            continue
        file = path if os.path.isfile(path) else path.rpartition(":")[0]
        if file and os.path.isfile(file):
            key = (name, os.path.realpath(file))
            with _EARLY_LOCK:
                if key not in _EARLY:
                    _EARLY[key] = _Job(key[1], new)
                    jobs.append(_EARLY[key])
    workers = _Workers(jobs, 1)

    def close() -> None:
        with _EARLY_LOCK:
            for job in jobs:
                if _EARLY.get((name, job.source)) is job:  # not adopted: the evaluation did not read it
                    del _EARLY[(name, job.source)]
                    job.stop.set()
        for t in workers.threads:
            t.join()

    return close


def start_hashing(used: Mapping[str, LazyArray], algorithm: str) -> Hashing | None:
    """Start hashing ``used`` in the background, or None for ``none``."""
    return None if algorithm == "none" else Hashing(used, algorithm)


def provenance_block(used: Mapping[str, LazyArray], hashing: Hashing | None) -> dict[str, Any]:
    """The report's ``provenance`` (waits for the digests)."""
    import numpy as np

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
