"""Hostile input files (issue 10): each is exit 2 with one ``error:`` line, no traceback and no
warning text, or reads the right numbers. The files are written here, small and fast; the CLI
runs in a subprocess with a timeout (a FIFO must not block, a cut file must not SIGBUS)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lossctl", "evaluate", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def assert_refused(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr


def mse_of(*args: str) -> float:
    proc = run(*args, "--loss", "mse", "-f", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    result = json.loads(proc.stdout)["results"][0]
    return result["value"], result["samples"]


def npy_header(shape: tuple, dtype: str = "<f8") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def stored_npz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- corpus

def _write(d: Path, name: str, body: bytes) -> Path:
    (d / name).write_bytes(body)
    return d / name


def _csv_bytes(body: bytes):
    return lambda d: _write(d, "x.csv", body)


def _non_utf8_header(d: Path) -> Path:
    return _write(d, "x.csv", b"a\xff\xfe,b\n1,2\n3,4\n")


def _npy_huge_shape(d: Path) -> Path:
    (d / "x.npy").write_bytes(npy_header((2 ** 40, 2 ** 40)) + b"\0" * 64)
    return d / "x.npy"


def _npz_lying_member(d: Path) -> Path:
    # "a" claims 10 float64 but holds 2: reading on would take "b"'s bytes (mse 3e16 on main)
    a = npy_header((10,)) + np.array([1.0, 2.0]).tobytes()
    b = npy_header((64,)) + np.full(64, 1e8).tobytes()
    (d / "x.npz").write_bytes(stored_npz({"a.npy": a, "b.npy": b}))
    return Path(f"{d / 'x.npz'}:a")


def _npz_truncated(d: Path) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.arange(5000.0))
    (d / "x.npz").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return d / "x.npz"


def _npz_cut_stored(d: Path) -> Path:
    data = stored_npz({"a.npy": npy_header((1000,)) + np.arange(1000.0).tobytes()})
    (d / "x.npz").write_bytes(data[:4000] + data[-200:])  # the central directory kept, the data cut
    return d / "x.npz"


def _npz_bomb(d: Path) -> Path:
    # the header says 10 values; the member inflates to 4 MB of zeros after them
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.npy", npy_header((10,)) + np.zeros(10).tobytes() + b"\0" * (4 << 20))
    (d / "x.npz").write_bytes(buf.getvalue())
    return d / "x.npz"


def _npz_huge_compressed_header(d: Path) -> Path:
    with zipfile.ZipFile(d / "x.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.npy", npy_header((2 ** 40, 2 ** 40)) + b"\0" * 64)
    return d / "x.npz"


def _npz_corrupt_deflate(d: Path) -> Path:
    np.savez_compressed(d / "x.npz", a=np.random.default_rng(0).random(20_000))
    data = bytearray((d / "x.npz").read_bytes())
    data[2000:6000] = bytes(4000)  # inside the member's deflate stream
    (d / "x.npz").write_bytes(bytes(data))
    return d / "x.npz"


HOSTILE = {
    "non-utf8 quoted header": _csv_bytes(b'"p\xff",t\n1,2\n'),
    "unterminated quote in the header": _csv_bytes(b'"a,b\n1,2\n'),
    "npz huge compressed header": _npz_huge_compressed_header,
    "npz corrupt deflate stream": _npz_corrupt_deflate,
    "non-utf8 header": _non_utf8_header,
    "binary garbage": _csv_bytes(bytes(range(256)) * 8),
    "unterminated quote": _csv_bytes(b'a,b\n1,"2\n3,4\n'),
    "bom only": _csv_bytes(b"\xef\xbb\xbf"),
    "bom and newline": _csv_bytes(b"\xef\xbb\xbf\n"),
    "nul bytes": _csv_bytes(b"a,b\n\0\0\0,1\n"),
    "npy huge shape": _npy_huge_shape,
    "npy negative shape": lambda d: _write(d, "x.npy", npy_header((-5,)) + b"\0" * 64),
    "npy cut": lambda d: _write(d, "x.npy", npy_header((100,)) + b"\0" * 80),
    "npy garbage header": lambda d: _write(d, "x.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': <<<}\n"),
    "npz lying member": _npz_lying_member,
    "npz truncated": _npz_truncated,
    "npz cut stored member": _npz_cut_stored,
    "npz member inflates past its header": _npz_bomb,
    "npz not a zip": lambda d: _write(d, "x.npz", b"PK\x03\x04" + b"\0" * 100),
}


@pytest.mark.parametrize("make", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_file_is_exit_2(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    assert isinstance(path, Path)
    other = tmp_path / "other.npy"
    np.save(other, np.zeros(10))
    assert_refused(run(str(path), str(other), "--loss", "mse"))


def test_index_column_csv_is_exit_2_or_read(tmp_path: Path) -> None:
    # rows with one field more than the header: pandas would infer an index
    (tmp_path / "x.csv").write_text("a,b\n0,1,2\n1,3,4\n")
    proc = run(str(tmp_path / "x.csv"), str(tmp_path / "x.csv"), "--loss", "mse")
    assert_refused(proc)


# ------------------------------------------------------------------------------ non-regular files

def test_fifo_input_is_exit_2_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "p.csv"
    os.mkfifo(fifo)
    np.save(tmp_path / "t.npy", np.zeros(3))
    assert_refused(run(str(fifo), str(tmp_path / "t.npy"), "--loss", "mse", timeout=30))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_device_input_is_exit_2(tmp_path: Path, device: str) -> None:
    link = tmp_path / "d.npy"
    link.symlink_to(device)
    np.save(tmp_path / "t.npy", np.zeros(3))
    assert_refused(run(str(link), str(tmp_path / "t.npy"), "--loss", "mse", timeout=30))


# ---------------------------------------------------------------------------- right numbers

def test_npz_lying_member_does_not_read_the_next_member(tmp_path: Path) -> None:
    spec = _npz_lying_member(tmp_path)
    np.save(tmp_path / "t.npy", np.zeros(10))
    assert_refused(run(str(spec), str(tmp_path / "t.npy"), "--loss", "mse"))


def test_compressed_npz_member_is_streamed(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "x.npz", a=np.arange(300_000.0), b=np.arange(300_000.0) + 1)
    value, n = mse_of(f"{tmp_path / 'x.npz'}:a", f"{tmp_path / 'x.npz'}:b")
    assert (value, n) == (1.0, 300_000)


def _lines(rows: int, end: bytes, start: int = 0) -> bytes:
    return b"".join(b"%d,%d" % (i % 7, (i % 7) + 1) + end for i in range(start, start + rows))


@pytest.mark.parametrize("end", [b"\r", b"\r\n", b"\n"])
def test_csv_line_endings_over_many_rows(tmp_path: Path, end: bytes) -> None:
    rows = 300_000  # over the 262,144 rows of the first chunk
    (tmp_path / "x.csv").write_bytes(b"p,t" + end + _lines(rows, end))
    value, n = mse_of(f"{tmp_path / 'x.csv'}:p", f"{tmp_path / 'x.csv'}:t")
    assert (value, n) == (1.0, rows)



def test_csv_line_endings_switch_past_the_first_block(tmp_path: Path) -> None:
    first = _lines(2_500_000, b"\n")  # past the C parser's 8 MB block
    assert len(first) > 1 << 23
    (tmp_path / "x.csv").write_bytes(b"p,t\n" + first + _lines(100_000, b"\r", 2_500_000))
    value, n = mse_of(f"{tmp_path / 'x.csv'}:p", f"{tmp_path / 'x.csv'}:t")
    assert (value, n) == (1.0, 2_600_000)



def test_mixed_line_endings_as_pandas_reads_them(tmp_path: Path) -> None:
    import pandas as pd

    body = b"p,t\r1,2\n3,5\r\n\r\r\n7,9\r4,4\n\n2,2"
    (tmp_path / "x.csv").write_bytes(body)
    frame = pd.read_csv(tmp_path / "x.csv")
    expected = float(np.mean((frame["p"] - frame["t"]) ** 2))
    value, n = mse_of(f"{tmp_path / 'x.csv'}:p", f"{tmp_path / 'x.csv'}:t")
    assert n == len(frame) and value == pytest.approx(expected)



def test_single_column_cr_only_csv(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_bytes(b"p\r1\r2\r3\r")
    (tmp_path / "t.csv").write_bytes(b"t\r1\r2\r5\r")
    value, n = mse_of(str(tmp_path / "p.csv"), str(tmp_path / "t.csv"))
    assert n == 3 and value == pytest.approx(4 / 3)




def test_integer_column_gets_a_float_after_the_first_chunk(tmp_path: Path) -> None:
    rows = 262_144 + 10
    body = b"p,t\n" + b"1,1\n" * (rows - 1) + b"1.5,1\n"
    (tmp_path / "x.csv").write_bytes(body)
    value, n = mse_of(f"{tmp_path / 'x.csv'}:p", f"{tmp_path / 'x.csv'}:t")
    assert n == rows and value == pytest.approx(0.25 / rows)


def test_wide_csv_with_millions_of_blank_lines(tmp_path: Path) -> None:
    cols = 2000
    header = ",".join(f"c{i}" for i in range(cols)).encode() + b"\n"
    row = ",".join(["1"] * cols).encode() + b"\n"
    (tmp_path / "x.csv").write_bytes(header + row + b"\n" * 3_000_000 + row)
    value, n = mse_of(f"{tmp_path / 'x.csv'}:c0", f"{tmp_path / 'x.csv'}:c1")
    assert (value, n) == (0.0, 2)


def test_npy_cut_while_read_is_exit_2_not_sigbus(tmp_path: Path) -> None:
    from lossctl.errors import InputError
    from lossctl.readers import open_input

    np.save(tmp_path / "x.npy", np.arange(1 << 20, dtype=np.float64))
    arr = open_input(str(tmp_path / "x.npy"))
    os.truncate(tmp_path / "x.npy", 4096)
    with pytest.raises(InputError, match="truncated"):
        arr.view(0, 1 << 20)
    with pytest.raises(InputError, match="truncated"):
        arr.read(0, 1 << 20)


def test_line_endings_differential_against_pandas(tmp_path: Path) -> None:
    """A short seeded differential fuzz: numeric CSVs with LF/CRLF/CR line ends in any mix and
    blank lines read the same numbers as pandas.read_csv (C parser and row count alike)."""
    import pandas as pd

    from lossctl.readers import open_input

    rng = np.random.default_rng(10)
    ends = [b"\n", b"\r\n", b"\r"]
    for case in range(40):
        ncols = int(rng.integers(1, 4))
        rows = int(rng.integers(1, 60))
        body = [",".join(f"c{i}" for i in range(ncols)).encode() + ends[int(rng.integers(3))]]
        for _ in range(rows):
            values = [f"{v:.3f}" if rng.random() < 0.5 else str(int(v)) for v in rng.normal(0, 50, ncols)]
            body.append(",".join(values).encode() + ends[int(rng.integers(3))])
            if rng.random() < 0.1:
                body.append(ends[int(rng.integers(3))])  # a blank line
        data = b"".join(body)
        if rng.random() < 0.3:
            data = data.rstrip(b"\r\n")
        path = tmp_path / f"f{case}.csv"
        path.write_bytes(data)
        frame = pd.read_csv(path)
        for col in frame.columns:
            got = open_input(f"{path}:{col}").read_all()
            np.testing.assert_allclose(got.astype(float), frame[col].to_numpy(float), err_msg=f"case {case}: {data!r}")
