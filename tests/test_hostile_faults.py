"""Faults while lossctl runs (issue 10): a CSV typed past its first chunk, CR line ends read
without a copy, an input cut while it is read, a full or read-only file system under the output,
and many runs writing one report at once. Each is the right number or exit 2 with one ``error:``
line, never a signal death, a temporary file left behind or a half-written report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lossctl.readers import ReadOptions, open_input

ROOT = Path(__file__).resolve().parent.parent
FIRST_CHUNK = 262_144  # rows in the CSV reader's first chunk (CSV_CHUNK_ROWS)


def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lossctl", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL, cwd=cwd)


def assert_one_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr


def mse_of(p: str, t: str) -> tuple[float, int]:
    proc = run("evaluate", p, t, "--loss", "mse", "-f", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)["results"][0]
    return result["value"], result["samples"]


# ------------------------------------------------------------------------- CSV typed past the first chunk


def test_pandas_path_int_column_gets_a_float_after_the_first_chunk(tmp_path: Path) -> None:
    """A quoted header sends the file to pandas; the float 1.5 on the last of > 262,144 integer
    rows makes the column float64 (pandas.read_csv of the whole file does), not exit 2."""
    import pandas as pd

    rows = FIRST_CHUNK + 50
    path = tmp_path / "x.csv"
    path.write_bytes(b'"p","t"\n' + b"1,1\n" * (rows - 1) + b"1.5,1\n")
    frame = pd.read_csv(path)
    assert frame["p"].dtype == np.float64
    arr = open_input(f"{path}:p")
    assert arr.dtype == np.float64
    np.testing.assert_array_equal(arr.read_all(), frame["p"].to_numpy())
    value, n = mse_of(f"{path}:p", f"{path}:t")
    expected = float(np.mean((frame["p"] - frame["t"]) ** 2))
    assert n == rows and value == pytest.approx(expected, rel=1e-12)


def test_c_parser_gives_up_after_a_late_float(tmp_path: Path) -> None:
    """The C parser types the first 8 MB block as integers, the late float is in its second block, and
    a quoted field after it makes it hand the file to pandas: still float64, the right value."""
    rows = 2_200_000  # "1,1\n" is 4 bytes: past the C parser's first 8 MB block
    assert rows * 4 > 1 << 23
    path = tmp_path / "x.csv"
    path.write_bytes(b"p,t\n" + b"1,1\n" * rows + b"1.5,1\n" + b'"2",2\n')
    arr = open_input(f"{path}:p")
    assert arr.dtype == np.float64 and arr.shape == (rows + 2,)
    value, n = mse_of(f"{path}:p", f"{path}:t")
    assert n == rows + 2 and value == pytest.approx(0.25 / (rows + 2), rel=1e-12)


# ------------------------------------------------------------------------- CR line ends


def test_cr_file_is_read_without_a_copy(tmp_path: Path, monkeypatch) -> None:
    """A CR-only CSV is read in place: nothing is written to the temporary directory."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = tmp_path / "x.csv"
    path.write_bytes(b"p,t\r" + b"".join(b"%d,%d\r" % (i % 5, i % 3) for i in range(1000)))
    got = open_input(f"{path}:p").read_all()
    np.testing.assert_array_equal(got, np.arange(1000) % 5)
    assert os.listdir(scratch) == []


def test_cr_inside_a_quoted_field_stays_a_cr(tmp_path: Path) -> None:
    """Line ends outside quotes are CR (and CRLF, LF): one rule for the file; a CR inside a quoted
    label is part of the label, as pandas reads it."""
    import pandas as pd

    path = tmp_path / "x.csv"
    labels = ["a\rb", "c", "a\rb", "c\nd", "c"]
    body = b"y,v\r" + b"".join(b'"%s",%d' % (lab.encode(), i) + (b"\r\n" if i == 2 else b"\r")
                               for i, lab in enumerate(labels))
    path.write_bytes(body)
    frame = pd.read_csv(path)
    assert list(frame["y"]) == labels  # (what pandas reads)
    classes = ("a\rb", "c", "c\nd")
    got = open_input(f"{path}:y", "targets", ReadOptions(classes=classes)).read_all()
    np.testing.assert_array_equal(got, [classes.index(lab) for lab in frame["y"]])
    np.testing.assert_array_equal(open_input(f"{path}:v").read_all(), frame["v"].to_numpy())


def test_cr_only_quoted_csv_over_the_first_chunk_as_pandas(tmp_path: Path) -> None:
    """A CR-only file the C parser declines (quoted fields), over one chunk: pandas' rows and values."""
    import pandas as pd

    rows = FIRST_CHUNK + 1000
    path = tmp_path / "x.csv"
    path.write_bytes(b'"p","t"\r' + b"".join(b'%d,"%d"\r' % (i % 7, i % 5) for i in range(rows)))
    frame = pd.read_csv(path)
    assert len(frame) == rows
    value, n = mse_of(f"{path}:p", f"{path}:t")
    assert n == rows and value == pytest.approx(float(np.mean((frame["p"] - frame["t"]) ** 2)), rel=1e-12)


# ------------------------------------------------------------------------- an input cut while it is read

_CUT_SCRIPT = """
import os, sys
from lossctl import filearray
from lossctl.cli import main
calls = []
def cutting(orig):
    def wrapper(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        if not calls:  # the first window was handed out: the file loses its tail now
            os.truncate(self.path, 4096)
        calls.append(1)
        return out
    return wrapper
filearray.FileArray._view = cutting(filearray.FileArray._view)
filearray.FileArray._read = cutting(filearray.FileArray._read)
sys.argv = ["lossctl", "evaluate", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("loss,kind", [("mse", "npy"), ("huber(delta=0.5)", "npy"), ("mse", "npz")])
def test_npy_cut_in_the_middle_of_a_run_is_exit_2_not_sigbus(tmp_path: Path, loss: str, kind: str) -> None:
    """The file (an .npy, or an .npz of stored members) is truncated right after the engine got its
    first window (the window is then used): exit 2 naming the truncation, no SIGBUS (rc -7/135)
    and no exit 4."""
    n = 1 << 23  # several windows on two threads
    p, t = np.full(n, 0.5, dtype=np.float32), np.zeros(n, dtype=np.float32)
    if kind == "npy":
        np.save(tmp_path / "p.npy", p)
        np.save(tmp_path / "t.npy", t)
        specs = [str(tmp_path / "p.npy"), str(tmp_path / "t.npy")]
    else:
        np.savez(tmp_path / "pt.npz", p=p, t=t)  # stored: read in place like an .npy
        specs = [f"{tmp_path / 'pt.npz'}:p", f"{tmp_path / 'pt.npz'}:t"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), LOSSCTL_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", _CUT_SCRIPT, *specs, "--loss", loss, "--hash", "none"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert_one_error(proc, "truncated")


# ------------------------------------------------------------------------- full and read-only file systems


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A 64 kB tmpfs mounted in tmp_path (root only): a real full disk, and remounted read-only."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "lossctl-test", str(mnt)],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> None:
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def _arrays(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(4)
    np.save(tmp_path / "p.npy", rng.normal(size=5000))
    np.save(tmp_path / "t.npy", rng.normal(size=5000))
    return [str(tmp_path / "p.npy"), str(tmp_path / "t.npy")]


@pytest.mark.parametrize("opt,name", [("--output", "r.json"), ("--per-sample", "ps.npy")])
def test_full_disk_keeps_the_old_file(tmp_path: Path, tiny_fs: Path, opt: str, name: str) -> None:
    """A real ENOSPC under --output / --per-sample: exit 2, one error line, the previous file's
    content unchanged, no temporary file left."""
    target = tiny_fs / name
    target.write_bytes(b"previous content")
    _fill(tiny_fs)
    proc = run("evaluate", *_arrays(tmp_path), "--loss", "mse", opt, str(target))
    assert_one_error(proc, "No space left")
    assert target.read_bytes() == b"previous content"
    assert sorted(os.listdir(tiny_fs)) == sorted(["filler", name])


@pytest.mark.parametrize("opt,name", [("--output", "r.json"), ("--per-sample", "ps.npy")])
def test_read_only_file_system_is_refused_before_computing(tmp_path: Path, tiny_fs: Path, opt: str,
                                                            name: str) -> None:
    target = tiny_fs / name
    target.write_bytes(b"previous content")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    proc = run("evaluate", *_arrays(tmp_path), "--loss", "mse", opt, str(target))
    assert_one_error(proc, "Read-only file system")
    assert target.read_bytes() == b"previous content"
    assert os.listdir(tiny_fs) == [name]


# ------------------------------------------------------------------------- concurrent writers


def test_concurrent_runs_writing_one_report(tmp_path: Path) -> None:
    """24 runs (each a different loss) write the same --output at once: all exit 0, the report is
    one whole JSON report of one of them, and no temporary file is left."""
    arrays = _arrays(tmp_path)
    losses = ["mse", "mae", "huber", "log_cosh", "smooth_l1", "huber(delta=0.5)"] * 4
    out = tmp_path / "reports" / "r.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-m", "lossctl", "evaluate", *arrays, "--loss", loss, "--hash",
                               "none", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env) for loss in losses]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(losses), errors
    report = json.loads(out.read_text())
    assert report["results"][0]["loss"] in losses and report["passed"] is True
    assert os.listdir(out.parent) == ["r.json"]


# ------------------------------------------------------------------------- claims of the issue, held


def test_short_differential_fuzz_of_the_csv_reader():
    """A short seeded run of tests/fuzz_csv.py's CSV target: random tables (LF/CRLF/CR in any mix,
    blank lines, quotes, text, NA spellings, separators, byte mutations) read by lossctl (C parser
    or pandas fallback) give pandas.read_csv's numbers and row count, or a clean LossctlError.
    The long run: nice python tests/fuzz_csv.py SEED SECONDS_PER_TARGET."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import fuzz_csv
    finally:
        sys.path.pop(0)
    stats = fuzz_csv.run(seed=10, seconds=15, targets=["csv"], cases=600)["csv"]
    assert stats["cases"] > 200
    assert not stats["internal"] and not stats["hangs"], list(stats["examples"].values())[:3]
    assert not stats["disagreements"], (stats["disagreements"], list(stats["examples"].values())[:3])


@pytest.mark.parametrize("name", ["p.csv", "p.csv.gz", "p.npz"])
def test_dev_zero_as_an_input_is_exit_2_quickly(tmp_path: Path, name: str) -> None:
    (tmp_path / name).symlink_to("/dev/zero")
    np.save(tmp_path / "t.npy", np.zeros(3))
    assert_one_error(run("evaluate", str(tmp_path / name), str(tmp_path / "t.npy"), "--loss", "mse", timeout=20),
                     "not a regular file")


def test_wide_csv_with_8_million_blank_lines_in_bounded_memory(tmp_path: Path) -> None:
    """8 MB: 2,000 columns, 8 million blank lines between two rows; the run's peak RSS (wait4)
    stays far below what one dense block of the file's columns would take (was a MemoryError)."""
    cols = 2000
    header = ",".join(f"c{i}" for i in range(cols)).encode() + b"\n"
    row = ",".join(["2"] * cols).encode() + b"\n"
    path = tmp_path / "x.csv"
    path.write_bytes(header + row + b"\n" * 8_000_000 + row.replace(b"2", b"3", 1))
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no /proc (the peak is read from VmHWM)")
    hwm = tmp_path / "hwm"
    # VmHWM of the run's own address space (ru_maxrss would keep the forking pytest's pages)
    script = ("import atexit, sys\n"
              f"atexit.register(lambda: open({str(hwm)!r}, 'w').write("
              "[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]))\n"
              "from lossctl.cli import main\n"
              "sys.argv = ['lossctl', 'evaluate', *sys.argv[1:]]\nmain()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script, f"{path}:c0", f"{path}:c1", "--loss", "mse", "-f", "json"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)["results"][0]
    assert (result["value"], result["samples"]) == (0.5, 2)
    peak_kb = int(hwm.read_text().split()[1])
    assert peak_kb < 400_000, peak_kb


def test_line_end_translation_across_block_boundaries(tmp_path: Path, monkeypatch) -> None:
    """The streaming CR→LF translation in 7-byte blocks (a CRLF and a quoted field cut at every
    offset): the same text pandas reads from the file, CRs inside quotes kept."""
    import pandas as pd

    from lossctl.readers import csv as csv_reader

    monkeypatch.setattr(csv_reader, "_SCAN_BYTES", 7)
    body = b'y,v\r"a\r\nb",1\r\n"x""\ry",2\r\r\n"c",3\r"d\re",4\n"f",5\r'
    path = tmp_path / "x.csv"
    path.write_bytes(body)
    with csv_reader.open_lf(str(path)) as fh:
        text = fh.read()
    assert text == b'y,v\n"a\r\nb",1\n"x""\ry",2\n\n"c",3\n"d\re",4\n"f",5\n'
    frame = pd.read_csv(path)
    classes = tuple(dict.fromkeys(frame["y"]))
    got = open_input(f"{path}:y", "targets", ReadOptions(classes=classes)).read_all()
    np.testing.assert_array_equal(got, np.arange(len(frame)))
    np.testing.assert_array_equal(open_input(f"{path}:v").read_all(), frame["v"].to_numpy())


def test_cr_blank_line_then_quoted_empty_field_reads_as_its_lf_text(tmp_path: Path) -> None:
    """Found by tests/fuzz_csv.py: pandas 3.1 reads ``,"",-0.25`` after a blank CR-only line with a
    field lost (-0.25 under b); the same text with LF line ends reads b=NaN, c=-0.25. lossctl has
    one line-ending rule: it reads the LF text's values, never a value shifted to another column."""
    import io

    import pandas as pd

    body = b'a,b,c\r\r,"",-0.25\r1,2,3\r'
    path = tmp_path / "x.csv"
    path.write_bytes(body)
    lf = pd.read_csv(io.BytesIO(body.replace(b"\r", b"\n")))
    for col in "abc":
        np.testing.assert_array_equal(open_input(f"{path}:{col}").read_all(), lf[col].to_numpy())
