"""URLs (``s3://``, ``gs://``, ``az://``, ``https://``, ``file://``) through fsspec (extra ``remote``:
fsspec + s3fs; ``gcsfs`` for ``gs://`` and ``adlfs`` for ``az://`` are the user's to install).

``storage_options`` (``--storage-option KEY=VALUE``, ``storage_options:`` in a scoring file,
``storage_options=`` in :func:`lossctl.evaluate`) go to ``fsspec.core.url_to_fs``; dotted keys
nest (``client_kwargs.endpoint_url=http://127.0.0.1:9000``). Credentials come from the usual chain
of each file system (environment, config files, instance roles).

An ``.npy`` is read by byte ranges (``cat_file(start, end)``) per chunk, never downloaded whole;
a Parquet/Feather/Arrow file by row group through a seekable fsspec file. Provenance digests of
remote inputs are not hashes of the bytes (that would be a second download): they are the
object's ETag and size as the store reports them (``etag:…``; see :mod:`lossctl.provenance`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, input_label, no_release, reading
from lossctl.filearray import check_npy_header, read_npy_header
from lossctl.errors import InputError

INSTALL = "pip install 'lossctl[remote]'"
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PROTOCOL_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                      "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp"}


def is_url(spec: str) -> bool:
    return bool(_URL.match(spec))


def split_url(spec: str) -> tuple[str, str | None]:
    """``s3://b/p.parquet:COL`` → (URL, COL); a ``:`` before the last ``/`` (a port) is the URL's."""
    head = _URL.match(spec)
    rest = spec[head.end():] if head else spec
    colon, slash = rest.rfind(":"), rest.rfind("/")
    if colon > slash:
        return spec[: len(spec) - len(rest) + colon], rest[colon + 1:]
    return spec, None


def filesystem(url: str, storage_options: dict[str, Any] | None, label: str) -> tuple[Any, str]:
    """(the fsspec file system of ``url``, the path within it)."""
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{label}: reading URLs needs fsspec: {INSTALL}") from None
    protocol = url.split("://", 1)[0].lower()
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError:
        package = _PROTOCOL_PACKAGES.get(protocol, f"the fsspec implementation for {protocol}://")
        raise InputError(f"{label}: reading {protocol}:// URLs needs {package}: pip install {package} "
                         f"(s3:// comes with {INSTALL})") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{label}: cannot open {url} with these storage options ({exc}); check "
                         f"--storage-option KEY=VALUE") from None


def describe_object(fs: Any, path: str) -> dict[str, Any]:
    """What the provenance records for a remote object: its URL, ETag (when the store has one) and size."""
    info = fs.info(path)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("content_md5")
    return {"url": fs.unstrip_protocol(path), "etag": str(etag).strip('"') if etag else None,
            "size": info.get("size")}


def remote_problem(label: str, exc: BaseException) -> InputError:
    """A file system error (missing object, no access, no connection) as one error line."""
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{label}: no such object")
    if isinstance(exc, PermissionError):
        return InputError(f"{label}: access denied (check the credentials and --storage-option)")
    text = " ".join(str(exc).split())[:200] or type(exc).__name__
    return InputError(f"{label}: cannot read it ({text})")


def open_remote_npy(fs: Any, path: str, url: str, name: str) -> RemoteNpyArray:
    """The ``.npy`` at ``url``: its header read (one small ranged read), its data not."""
    label = input_label(name, url)
    with fs.open(path, "rb", block_size=1 << 16) as fh:
        try:
            shape, fortran, dtype, offset = read_npy_header(fh)
        except ValueError as exc:
            raise InputError(f"{label}: not a valid .npy file ({exc}); write it with numpy.save") from None
    check_npy_header(shape, dtype, label)
    if fortran and len(shape) > 1:
        raise InputError(f"{label}: a Fortran-ordered array cannot be read by ranges; save it C-ordered "
                         f"(numpy.ascontiguousarray)")
    meta = describe_object(fs, path)
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if meta["size"] is not None and meta["size"] < needed:
        raise InputError(f"{label}: file is truncated ({meta['size']} bytes, shape {tuple(shape)} needs {needed}); "
                         f"re-save it with numpy.save")
    return RemoteNpyArray(path=url, shape=tuple(shape), dtype=dtype, name=name, fs=fs, fs_path=path,
                          offset=offset, meta=meta)


@dataclass
class RemoteNpyArray(LazyArray):
    """An ``.npy`` object read by byte ranges: each chunk is one ranged GET."""

    fs: Any = field(default=None, repr=False)
    fs_path: str = ""
    offset: int = 0
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        if axis != 0:
            return self.read_across(start, stop, axis)
        stop = max(start, min(stop, self.shape[0] if self.shape else 1))
        row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        first = self.offset + start * row
        with reading(self.label):
            try:
                data = self.fs.cat_file(self.fs_path, start=first, end=first + (stop - start) * row) \
                    if stop > start else b""
            except OSError as exc:
                raise remote_problem(self.label, exc) from None
        if len(data) != (stop - start) * row:
            raise InputError(f"{self.label}: the object ends early (changed while being read?); re-upload it")
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start,) + tuple(self.shape[1:]))

    def can_view(self) -> bool:
        return bool(self.shape)

    def view(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        return self.read(start, stop), no_release

    def identity(self) -> Any:
        return ("remote-npy", self.path)

    def content(self) -> Any:
        return self.meta


def parse_option(item: str, flag: str = "--storage-option") -> tuple[str, Any]:
    """``KEY=VALUE`` → (KEY, VALUE); ``true``/``false`` are booleans and integers are ints (fsspec's
    options are typed: ``anon=true``, ``default_block_size=1048576``)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise InputError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} anon=true")
    return key.strip(), typed(value)


def typed(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def nest_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted keys as nested mappings: ``{"client_kwargs.endpoint_url": u}`` → ``{"client_kwargs": {"endpoint_url": u}}``."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        where = out
        *parents, last = str(key).split(".")
        for p in parents:
            where = where.setdefault(p, {})
            if not isinstance(where, dict):
                raise InputError(f"storage option {key!r}: {p!r} is both a value and a group of options")
        where[last] = nest_options(value) if isinstance(value, dict) else value
    return out
