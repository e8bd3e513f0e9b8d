"""Worker threads for the engine and the CSV reader, kept for the life of the process, and how many.

Daemon threads, unlike ``concurrent.futures.ThreadPoolExecutor``'s: the interpreter joins an
executor's threads at exit, and a Ctrl-C that lands while the executor is starting a thread leaves
one that nothing wakes, so the process hangs after printing "interrupted". A daemon worker just
stops with the process. ``submit`` returns a standard ``concurrent.futures.Future``.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class WorkerPool:
    """``workers`` daemon threads taking ``fn(*args)`` calls from one queue, started on first use."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = max(1, int(workers))
        self.name = name
        self.pid = os.getpid()  # a forked child has none of its parent's threads: it makes its own pool
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._queue.put((fut, fn, args))
        if self._started < self.workers:
            self._start_threads()
        return fut

    def _start_threads(self) -> None:
        with self._lock:
            while self._started < self.workers:
                self._started += 1  # counted first: an interrupt here costs a thread, never a hang
                threading.Thread(target=self._work, name=f"{self.name}_{self._started}", daemon=True).start()

    def _work(self) -> None:
        if hasattr(signal, "pthread_sigmask"):  # Ctrl-C (and kill) goes to the main thread, which wakes at once
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        while True:
            fut, fn, args = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled before it started
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to whoever waits on the future
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            del fut, fn, args  # do not keep the last task's inputs alive while idle


def worker_count(threads: int | None = None) -> int:
    """Worker threads: ``threads``, else $LOSSCTL_THREADS, else the usable cores."""
    if threads is None:
        env = os.environ.get("LOSSCTL_THREADS", "").strip()
        if env.isdigit() and int(env) > 0:
            threads = int(env)
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            threads = os.cpu_count() or 1
    return max(1, int(threads))


_POOLS: dict[str, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def pool(name: str, workers: int) -> WorkerPool:
    """The process's pool called ``name`` with ``workers`` threads (made on first use)."""
    key = f"{name}/{workers}"
    with _POOLS_LOCK:
        found = _POOLS.get(key)
        if found is None or found.pid != os.getpid():
            found = _POOLS[key] = WorkerPool(workers, name)
        return found
