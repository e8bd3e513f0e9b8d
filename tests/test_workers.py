"""The worker pool: futures in order, errors handed over, cancelled tasks skipped, daemon threads."""

from __future__ import annotations

import threading
import time

import pytest

from lossctl import workers
from lossctl.per_sample import PerSampleSink


def test_results_errors_and_cancellation():
    pool = workers.WorkerPool(2, "test")
    futures = [pool.submit(lambda x: x * x, i) for i in range(20)]
    assert [f.result(timeout=10) for f in futures] == [i * i for i in range(20)]
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=10)
    gate = threading.Event()
    blockers = [pool.submit(gate.wait, 10) for _ in range(2)]  # both workers busy
    queued = pool.submit(lambda: "ran")
    assert queued.cancel()  # not started yet: cancelled, and the workers skip it
    gate.set()
    assert all(b.result(timeout=10) for b in blockers)
    assert pool.submit(lambda: "after").result(timeout=10) == "after"
    assert queued.cancelled()


def test_threads_are_daemons_and_pools_are_shared_per_name():
    pool = workers.pool("test-shared", 2)
    assert workers.pool("test-shared", 2) is pool
    pool.submit(time.sleep, 0).result(timeout=10)
    threads = [t for t in threading.enumerate() if t.name.startswith("test-shared")]
    assert threads and all(t.daemon for t in threads)  # an interrupted run never waits for them


def test_per_sample_file_appears_only_with_values(tmp_path):
    path = tmp_path / "ps.npy"
    sink = PerSampleSink(str(path))
    assert not list(tmp_path.iterdir())  # planning an evaluation writes nothing yet
    sink.abort()
    assert not list(tmp_path.iterdir())
    empty = PerSampleSink(str(path))
    empty.finish()  # no values at all: an empty, valid file
    import numpy as np

    assert np.load(path).shape == (0,)


def test_worker_count(monkeypatch):
    monkeypatch.setenv("LOSSCTL_THREADS", "3")
    assert workers.worker_count() == 3
    assert workers.worker_count(1) == 1
    monkeypatch.setenv("LOSSCTL_THREADS", "junk")
    assert workers.worker_count() >= 1
