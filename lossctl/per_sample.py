"""Per-sample values: streamed to ``--per-sample FILE`` (.npy or .csv) and summarised.

The file is written to a temporary name next to the target and renamed into place only when the
evaluation succeeded, so a failed run never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lossctl.errors import UsageError
from lossctl.result import Summary

_NPY_HEADER_BYTES = 256


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for float64 C-order data, padded to a fixed size."""
    text = repr({"descr": "<f8", "fortran_order": False, "shape": tuple(shape)})
    body_len = _NPY_HEADER_BYTES - 10
    text = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


class PerSampleSink:
    def __init__(self, path: str | None, worst: int = 10) -> None:
        self.path = path
        self.worst = worst
        self.scores: list[np.ndarray] = []
        self.indices: list[np.ndarray] = []
        self.rows = 0
        self.row_shape: tuple[int, ...] | None = None
        self._fh: Any = None
        self._tmp: str | None = None
        self._done = False
        if path:
            ext = os.path.splitext(path)[1].lower()
            if ext not in (".npy", ".csv"):
                raise UsageError(f"--per-sample {path}: use a .npy or .csv file name")
            self._kind = ext
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise UsageError(f"--per-sample {path}: directory {directory} does not exist")
            self._tmp = f"{path}.lossctl-tmp"  # written from the first values on, renamed by finish()

    def _open(self) -> None:
        """Start the temporary file (on the first values, inside the evaluation's clean-up scope)."""
        self._fh = open(self._tmp, "wb")  # type: ignore[arg-type]
        if self._kind == ".npy":
            self._fh.write(b"\0" * _NPY_HEADER_BYTES)
        else:
            self._fh.write(b"index,value\n")

    def flush_chunk(self, terms: Sequence[Any], weights: Sequence[float]) -> None:
        chunks = []
        for term in terms:
            if term.values:
                vals = np.concatenate(term.values) if len(term.values) > 1 else term.values[0]
                idx = np.concatenate(term.indices) if len(term.indices) > 1 else term.indices[0]
                chunks.append((vals, idx))
            else:
                chunks.append(None)
            term.values.clear()
            term.indices.clear()
        present = [c for c in chunks if c is not None]
        if not present:
            return
        if len(present) != len(chunks) or len({c[0].shape for c in present}) != 1:
            raise UsageError("per-sample values of a combined loss need every term to give the same "
                             "per-sample shape; evaluate the terms as separate --loss options")
        if len(chunks) == 1 and weights[0] == 1.0:
            combined, index = present[0]
        else:
            combined = sum(w * c[0] for w, c in zip(weights, present))
            index = present[0][1]
        if combined.ndim == 0:
            combined = combined.reshape(1)
        self._write(combined, index)
        score = combined if combined.ndim == 1 else combined.reshape(len(combined), -1).mean(axis=1)
        if len(score) == len(index):
            self.scores.append(score)
            self.indices.append(index)
        else:  # per-element values of a sample-less loss: index by position
            self.scores.append(score)
            self.indices.append(np.arange(self.rows - len(combined), self.rows))

    def _write(self, values: np.ndarray, index: np.ndarray) -> None:
        if self.row_shape is None:
            self.row_shape = tuple(values.shape[1:])
        self.rows += len(values)
        if self._tmp is None:
            return
        if self._fh is None:
            self._open()
        data = np.ascontiguousarray(values, dtype="<f8")
        if self._kind == ".npy":
            self._fh.write(data.tobytes())
        else:
            flat = data.reshape(len(data), -1)
            idx = index if len(index) == len(flat) else np.arange(self.rows - len(flat), self.rows)
            lines = [f"{i}," + ",".join(repr(float(v)) for v in row) for i, row in zip(idx, flat)]
            self._fh.write(("\n".join(lines) + "\n").encode())

    def finish(self) -> Summary:
        if self._tmp is not None and self._fh is None and not self._done:
            self._open()  # no values at all: the file is still written (empty)
        self._done = True
        if self._fh is not None:
            if self._kind == ".npy":
                self._fh.seek(0)
                self._fh.write(_npy_header((self.rows,) + (self.row_shape or ())))
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)
        return self.summary()

    def abort(self) -> None:
        """Drop the temporary file, however far its writing got (an interrupt may land mid-open)."""
        self._done = True
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()
        if self._tmp and os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def summary(self) -> Summary:
        scores = np.concatenate(self.scores) if self.scores else np.empty(0)
        index = np.concatenate(self.indices) if self.indices else np.empty(0, dtype=np.int64)
        if scores.size == 0:
            nan = float("nan")
            return Summary(0, nan, nan, nan, nan, nan, nan, [])
        finite = scores[np.isfinite(scores)]
        stats = finite if finite.size else scores
        k = min(self.worst, scores.size)
        order_key = np.where(np.isnan(scores), np.inf, scores)  # NaN counts as worst
        top = np.argpartition(-order_key, k - 1)[:k] if k else np.empty(0, dtype=np.int64)
        top = top[np.argsort(-order_key[top], kind="stable")]
        with np.errstate(all="ignore"):
            return Summary(
                count=int(scores.size), mean=float(np.mean(stats)), std=float(np.std(stats)),
                min=float(np.min(stats)), p50=float(np.percentile(stats, 50)),
                p95=float(np.percentile(stats, 95)), max=float(np.max(stats)),
                worst=[(int(index[i]), float(scores[i])) for i in top],
            )
