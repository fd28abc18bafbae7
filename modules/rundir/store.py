"""Where a run lives: a local folder, or a folder on object storage (S3, GCS), HDFS or any other file
system pyarrow reaches (``pyarrow.fs.FileSystem.from_uri``).

``run_store(where)`` takes a local path, a URI (``s3://bucket/runs/a``, ``gs://...``, ``hdfs://...``,
``file:///...``; S3 options such as ``?endpoint_override=host:port&scheme=http`` ride in the query)
or a ``(pyarrow FileSystem, root)`` pair. Paths inside a run are relative POSIX names
(``epochs/4/head.safetensors``). Local folders keep their own code (fsync, temp + rename, memory
maps); a store reads each object on its own, so reading one group never downloads the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

from modules.atomic import write_bytes_atomic
from modules.errors import RunDirError
from modules.rundir.names import sha256_file

#: ``scheme://``: a URI, not a local path (a Windows drive letter has no ``//``).
URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: File systems whose rename is atomic: a write there goes to a temporary name first.
_RENAMING = ("local", "hdfs", "mock")
_READ_CHUNK = 1 << 24
CREDENTIALS_ADVICE = (
    "for S3 set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), for GCS"
    " GOOGLE_APPLICATION_CREDENTIALS; another S3 endpoint goes in the URI query, e.g."
    " s3://bucket/run?endpoint_override=host:9000&scheme=http"
)


def _public(uri: str) -> str:
    """``uri`` without user:password@ and without the query (options such as endpoint_override)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", "")).rstrip("/")


def is_uri(where: object) -> bool:
    """Whether ``where`` is a URI string (``s3://...``) rather than a local path."""
    return isinstance(where, str) and bool(URI_RE.match(where))


@dataclass(frozen=True, order=True)
class Entry:
    """One name in a listed folder."""

    name: str
    is_dir: bool


class RunStore:
    """A run's folder on a pyarrow file system; ``LocalStore`` is the local-folder form."""

    def __init__(self, fs: pafs.FileSystem, root: str, uri: str | None = None) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        #: The URI as given, options and all (None for a store given as a file system object).
        self.uri = uri
        #: How results, provenance and messages name the run: the URI without credentials or
        #: options (or the file system's type and the root).
        self.location = _public(uri) if uri else f"{fs.type_name}://{self.root}"

    @property
    def address(self) -> str | None:
        """What ``run_store`` reopens this run from in another process (None: it cannot be)."""
        return self.uri

    @property
    def local_path(self) -> Path | None:
        """The run's folder on this machine's disk; None for a run on object storage."""
        return None

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def where(self, rel: str = "") -> Path | str:
        """A file of the run as messages name it (a Path for a local run, else a URI)."""
        return f"{self.location}/{rel}" if rel else self.location

    def _guard(self, rel: str, action: str) -> Any:
        return _StoreErrors(self.where(rel), action)

    def size(self, rel: str) -> int | None:
        """The size of a file, or None when there is no such file."""
        with self._guard(rel, "read"):
            info = self.fs.get_file_info(self._full(rel))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, rel: str = "") -> bool:
        with self._guard(rel, "read"):
            return self.fs.get_file_info(self._full(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        with self._guard(rel, "read"), self.fs.open_input_stream(self._full(rel)) as handle:
            return handle.read()

    def read_optional(self, rel: str) -> bytes | None:
        """A file's bytes, or None when there is no such file."""
        try:
            with self._guard(rel, "read"), self.fs.open_input_stream(self._full(rel)) as handle:
                return handle.read()
        except RunDirError:
            if self.size(rel) is None:
                return None
            raise

    def open_random(self, rel: str) -> Any:
        """A random-access handle (``read_at(nbytes, offset)``, ``size()``, ``close()``) on one file."""
        with self._guard(rel, "read"):
            return self.fs.open_input_file(self._full(rel))

    def sha256(self, rel: str) -> str:
        digest = hashlib.sha256()
        with self._guard(rel, "read"), self.fs.open_input_stream(self._full(rel)) as handle:
            while chunk := handle.read(_READ_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def list(self, rel: str = "") -> list[Entry]:
        """The names directly inside folder ``rel`` (empty when it does not exist), sorted."""
        selector = pafs.FileSelector(self._full(rel), allow_not_found=True, recursive=False)
        with self._guard(rel, "list"):
            infos = self.fs.get_file_info(selector)
        return sorted(Entry(i.base_name, i.type == pafs.FileType.Directory) for i in infos)

    def is_dir(self, rel: str = "") -> bool:
        with self._guard(rel, "read"):
            return self.fs.get_file_info(self._full(rel)).type == pafs.FileType.Directory

    def make_dirs(self, rel: str = "") -> None:
        with self._guard(rel, "write"):
            self.fs.create_dir(self._full(rel), recursive=True)

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Write one file whole: one PUT on object storage (atomic there), else a temporary name
        renamed into place, so readers see the old file or the new one, never part of one."""
        target = self._full(rel)
        with self._guard(rel, "write"):
            if self.fs.type_name not in _RENAMING:
                with self.fs.open_output_stream(target) as handle:
                    handle.write(data)
                return
            folder, _, name = target.rpartition("/")
            self.fs.create_dir(folder, recursive=True)
            tmp = f"{folder}/.{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
            try:
                with self.fs.open_output_stream(tmp) as handle:
                    handle.write(data)
                self.fs.move(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(tmp)

    def remove(self, rel: str) -> None:
        """Delete a file or a folder with everything in it; a missing one is no error."""
        full = self._full(rel)
        with self._guard(rel, "delete"):
            kind = self.fs.get_file_info(full).type
            if kind == pafs.FileType.Directory:
                self.fs.delete_dir(full)
            elif kind == pafs.FileType.File:
                self.fs.delete_file(full)


class LocalStore(RunStore):
    """A run in a folder on this machine: plain file calls, fsync, temp + rename."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.fs = pafs.LocalFileSystem()
        self.location = str(self.path.resolve())
        self.root = self.location

    @property
    def local_path(self) -> Path:
        return self.path

    @property
    def address(self) -> str:
        return self.location

    def where(self, rel: str = "") -> Path:
        return self.path / rel if rel else self.path

    def size(self, rel: str) -> int | None:
        try:
            return (self.path / rel).stat().st_size
        except FileNotFoundError:
            return None

    def exists(self, rel: str = "") -> bool:
        return self.where(rel).exists()

    def read_bytes(self, rel: str) -> bytes:
        return (self.path / rel).read_bytes()

    def read_optional(self, rel: str) -> bytes | None:
        try:
            return (self.path / rel).read_bytes()
        except FileNotFoundError:
            return None

    def open_random(self, rel: str) -> BinaryIO:
        return open(self.path / rel, "rb")  # noqa: SIM115 - the caller closes it

    def list(self, rel: str = "") -> list[Entry]:
        folder = self.where(rel)
        if not folder.is_dir():
            return []
        return sorted(Entry(child.name, child.is_dir()) for child in folder.iterdir())

    def is_dir(self, rel: str = "") -> bool:
        return self.where(rel).is_dir()

    def make_dirs(self, rel: str = "") -> None:
        self.where(rel).mkdir(parents=True, exist_ok=True)

    def sha256(self, rel: str) -> str:
        return sha256_file(self.path / rel)

    def write_atomic(self, rel: str, data: bytes) -> None:
        write_bytes_atomic(self.path / rel, data)

    def remove(self, rel: str) -> None:
        path = self.where(rel)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


class _StoreErrors(contextlib.AbstractContextManager):
    """Turns pyarrow's errors into ``RunDirError``s that name the file and what to do."""

    def __init__(self, where: Path | str, action: str) -> None:
        self.where, self.action = where, action

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> bool:
        if error is None or isinstance(error, RunDirError) or not isinstance(error, Exception):
            return False
        if isinstance(error, FileNotFoundError):
            raise RunDirError(f"{self.where} does not exist (or its bucket does not); check the URI") from None
        if isinstance(error, PermissionError) or "ACCESS_DENIED" in str(error).upper() or "credentials" in str(error).lower():
            raise RunDirError(f"cannot {self.action} {self.where}: access denied ({error}); {CREDENTIALS_ADVICE}") from None
        if isinstance(error, OSError):
            raise RunDirError(f"cannot {self.action} {self.where} ({error}); {CREDENTIALS_ADVICE}") from None
        return False


#: What names a run: a store, a local path, a URI or a ``(pyarrow FileSystem, root)`` pair.
RunLocation = Union[RunStore, str, "os.PathLike[str]", tuple[pafs.FileSystem, str]]


def run_store(where: RunLocation) -> RunStore:
    """The store of a run given as a store, a local path, a URI or a ``(FileSystem, root)`` pair."""
    if isinstance(where, RunStore):
        return where
    if isinstance(where, tuple) and len(where) == 2 and isinstance(where[0], pafs.FileSystem):
        return RunStore(where[0], str(where[1]))
    if not is_uri(where):
        if not isinstance(where, (str, os.PathLike)):
            raise TypeError(
                f"a run is a path, a URI (s3://bucket/run) or a (pyarrow FileSystem, root) pair, not {type(where).__name__}"
            )
        return LocalStore(where)
    assert isinstance(where, str)
    try:
        fs, root = pafs.FileSystem.from_uri(where)
    except (ValueError, NotImplementedError, ImportError) as error:
        scheme = where.split("://", 1)[0]
        raise RunDirError(
            f"cannot open {where}: {error}. pyarrow reads s3://, gs://, hdfs://, abfs:// and file:// URIs"
            f" (scheme {scheme!r} given); for another store pass a (pyarrow FileSystem, root) pair, or install"
            " a pyarrow built with that file system (`pip install pyarrow` from PyPI has S3 and GCS)"
        ) from None
    except OSError as error:
        raise RunDirError(f"cannot open {where} ({error}); {CREDENTIALS_ADVICE}") from None
    return RunStore(fs, root, uri=where)
