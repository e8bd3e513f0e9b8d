"""Reading a text file the user named (task, rules, scoring, baseline): every failure is one UsageError."""

from __future__ import annotations

import os
from pathlib import Path

from lossctl.errors import UsageError


#: a task, rules, scoring or baseline file larger than this is refused before it is read
MAX_TEXT_BYTES = 64 * 1024 * 1024
_STDIN_LIKE = ("-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")


def read_text(path: str | Path, label: str, kind: str, missing: str | None = None) -> str:
    """The UTF-8 text of ``path``. ``label`` names it in messages (``task file 'x.yaml'``), ``kind``
    says what it should be (``a YAML file``), ``missing`` replaces the message for a missing file."""
    import stat

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode) and str(path) not in _STDIN_LIKE:
            raise UsageError(f"{label} is not a regular file (a FIFO, device or socket); give {kind}")
        if stat.S_ISREG(st.st_mode) and st.st_size > MAX_TEXT_BYTES:
            raise UsageError(f"{label} is too large ({st.st_size} bytes; at most {MAX_TEXT_BYTES}); give {kind}")
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(missing or f"{label} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{label} is a directory, not {kind}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{label} is not UTF-8 text; give {kind}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {label}: {exc.strerror or exc}") from None


def is_stream(path: str) -> bool:
    """Whether ``path`` exists and is not a regular file (``/dev/stdout``, a terminal, a FIFO): such a
    file is written in place, never replaced by a renamed temporary file."""
    import stat

    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


#: names that are written in place however they are set up: the process's own streams, the bit
#: bucket, a terminal, and descriptors it inherited (``--output >(gzip > r.json.gz)`` is /dev/fd/63)
_STDOUT_LIKE = ("/dev/stdout", "/dev/stderr", "/dev/null", "/dev/tty")


def is_stdout_like(path: str) -> bool:
    """Whether ``path`` is a stream the user means to write into (not a file to replace)."""
    import re
    import sys

    for name in (path, os.path.realpath(path)):
        if name in _STDOUT_LIKE or re.fullmatch(r"/(?:dev|proc/self)/fd/\d+", name):
            return True
    try:
        there = os.stat(path)
    except (OSError, ValueError):
        return False
    for stream in (sys.stdout, sys.stderr):
        try:
            here = os.fstat(stream.fileno())
        except (OSError, ValueError, AttributeError):
            continue
        if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
            return True
    return False


def check_output(path: str, label: str, streams: bool = True) -> None:
    """Refuse (UsageError) an output ``path`` that cannot be written, before any work is done: a
    directory, a device or FIFO that is not stdout-like (``streams``: such a stream is allowed and
    written in place), or a directory where no file can be made (read-only, no permission), tried
    with a real temporary file that is removed at once."""
    import stat

    try:
        st: os.stat_result | None = os.stat(path)  # (through a symlink: its target is what is written)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{label}: cannot use this path: {getattr(exc, 'strerror', None) or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{label}: is a directory; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        if streams and is_stdout_like(path):
            return
        raise UsageError(f"{label}: is not a regular file (a device, FIFO or socket); give a file name"
                         + (", or /dev/stdout" if streams else ""))
    target = replace_target(path)
    directory = os.path.dirname(os.path.abspath(target))
    existing = directory
    while not os.path.exists(existing):  # missing parents are created when the file is written
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise UsageError(f"{label}: {existing} is not a directory")
    probe = target if existing == directory else os.path.join(existing, "x")
    try:
        fd, tmp = temp_beside(probe)
    except OSError as exc:
        raise UsageError(f"{label}: cannot write in {existing}: {exc.strerror or exc}") from None
    try:
        os.close(fd)
    finally:
        try:
            os.unlink(tmp)
        except OSError:  # pragma: no cover
            pass


def temp_beside(path: str) -> tuple[int, str]:
    """A new temporary file (descriptor, name) in the directory of ``path``, for an atomic write
    that ends with ``os.replace(tmp, path)``; its name is unique, so concurrent runs never share it.
    Its permissions are those a plain ``open(path, "w")`` would give (an existing file's, else
    0666 minus the umask)."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".lossctl-tmp")
    try:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        try:
            os.fchmod(fd, mode)
        except (AttributeError, OSError):  # pragma: no cover - Windows
            pass
    except BaseException:  # an interrupt right here: the file is not left behind
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def replace_target(path: str) -> str:
    """The file an atomic write of ``path`` replaces: a symlink's target (the link itself stays)."""
    return os.path.realpath(path) if os.path.islink(path) else path


def write_atomic(path: str, text: str | bytes, label: str) -> None:
    """Write ``text`` (UTF-8; ``bytes`` as they are) to ``path`` so that a reader sees the old file or the whole new one:
    a unique temporary file in the same directory, renamed over ``path``; missing parent
    directories are created. A device, FIFO or terminal (``/dev/stdout``) is written in place, and a
    symlink keeps pointing where it did. ``label`` names the file in errors (``--output x``)."""
    if os.path.isdir(path):
        raise UsageError(f"{label}: is a directory; give a file name")
    try:
        if is_stream(path):
            if not is_stdout_like(path):
                raise UsageError(f"{label}: is not a regular file (a device, FIFO or socket); give a file "
                                 "name, or /dev/stdout")
            with (open(path, "wb") if isinstance(text, bytes) else open(path, "w", encoding="utf-8")) as fh:
                fh.write(text)
            return
        target = replace_target(path)
        directory = os.path.dirname(os.path.abspath(target))
        try:
            os.makedirs(directory, exist_ok=True)  # like pytest --junitxml: CI report dirs need not exist
        except OSError as exc:
            raise UsageError(f"{label}: cannot create directory {directory}: {exc.strerror or exc}") from None
        fd, tmp = temp_beside(target)
        try:
            with (os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as fh:
                fh.write(text)
            os.replace(tmp, target)
        except BaseException:  # an error or Ctrl-C: no temporary file left behind
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise UsageError(f"{label}: cannot write: {exc.strerror or exc}") from None
