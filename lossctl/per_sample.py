"""Per-sample values streamed to ``--per-sample FILE`` (.npy or .csv); their statistics live in the
state (:class:`lossctl.accumulators.SampleStats`).

The file is written to a temporary name next to the target and renamed into place only when the
evaluation succeeded, so a failed run never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from lossctl.errors import UsageError, option
from lossctl.userfiles import check_output, replace_target

_NPY_HEADER_BYTES = 256


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for float64 C-order data, padded to a fixed size."""
    text = repr({"descr": "<f8", "fortran_order": False, "shape": tuple(shape)})
    body_len = _NPY_HEADER_BYTES - 10
    text = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


def csv_header(row_shape: tuple[int, ...]) -> str:
    """The CSV header for rows of that shape: ``index,value`` for one value per sample, else one
    column per value, ``index,value_0,...,value_{C-1}`` (``value_i_j`` for (C, D) rows, C order)."""
    if not row_shape:
        return "index,value"
    return "index," + ",".join("value_" + "_".join(map(str, ix)) for ix in np.ndindex(*row_shape))


class PerSampleSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self.rows = 0
        self.row_shape: tuple[int, ...] | None = None
        self._fh: Any = None
        self._done = False
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".npy", ".csv"):
            raise UsageError(f"{option('per_sample', path)}: use a .npy or .csv file name")
        self._kind = ext
        directory = os.path.dirname(os.path.abspath(replace_target(path)))
        if not os.path.isdir(directory):
            raise UsageError(f"{option('per_sample', path)}: directory {directory} does not exist")
        check_output(path, option("per_sample", path), streams=False)  # before any value is computed
        self._label = option("per_sample", path)
        self._tmp: str | None = None  # a unique name beside path, from the first values on; renamed by finish()

    def _open(self) -> None:
        """Start the temporary file (on the first values, inside the evaluation's clean-up scope)."""
        from lossctl.userfiles import temp_beside

        fd, self._tmp = temp_beside(self.path)
        self._fh = os.fdopen(fd, "wb")
        if self._kind == ".npy":
            self._fh.write(b"\0" * _NPY_HEADER_BYTES)
        else:
            self._fh.write((csv_header(self.row_shape or ()) + "\n").encode())

    def write(self, values: np.ndarray, index: np.ndarray) -> None:
        """Append one chunk of per-sample values (``index``: their sample indices, for CSV rows)."""
        try:
            self._write(values, index)
        except OSError as exc:  # a full disk, a file system gone read-only: the temporary file goes
            self.abort()
            raise UsageError(f"{self._label}: cannot write: {exc.strerror or exc}") from None

    def _write(self, values: np.ndarray, index: np.ndarray) -> None:
        if self.row_shape is None:
            self.row_shape = tuple(values.shape[1:])
        self.rows += len(values)
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

    def finish(self) -> None:
        """Complete the file and rename it into place (a symlink's target, the link stays)."""
        try:
            self._finish()
        except OSError as exc:
            self.abort()
            raise UsageError(f"{self._label}: cannot write: {exc.strerror or exc}") from None

    def _finish(self) -> None:
        if self._fh is None and not self._done:
            self._open()  # no values at all: the file is still written (empty)
        self._done = True
        if self._fh is not None:
            if self._kind == ".npy":
                self._fh.seek(0)
                self._fh.write(_npy_header((self.rows,) + (self.row_shape or ())))
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, replace_target(self.path))  # type: ignore[arg-type]
            self._tmp = None

    def abort(self) -> None:
        """Drop the temporary file, however far its writing got (an interrupt may land mid-open)."""
        self._done = True
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:  # (a full disk fails the close's flush too)
                pass
        tmp, self._tmp = self._tmp, None
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
