"""Atomic file writes: write to a temporary name in the same folder, fsync, rename, fsync the folder.

Temporary names carry the writer's process id (``.<name>.<pid>-<token>.tmp``), so a later write of
the same target removes the leftovers of a writer that was killed, and never those of a live one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modules.errors import SweetspotError

#: ``.<name>.<pid>-<token>.tmp``: the hidden temporaries this module (and nothing else) creates.
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


class OutputPathError(SweetspotError, ValueError):
    """An output path that cannot be written as asked (a file where a folder is needed, or back)."""


def fsync_path(path: str | os.PathLike[str], missing_ok: bool = False) -> None:
    """fsync one file or folder (a folder's fsync makes a rename inside it durable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if Path(path).is_file():
            raise  # some file systems refuse fsync on folders; a file's failed fsync is a lost write
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(target_name: str) -> str:
    """A fresh hidden temporary name for ``target_name``, owned by this process."""
    return f".{target_name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def stale_temporaries(folder: str | os.PathLike[str], target_name: str | None = None) -> list[Path]:
    """Our temporaries in ``folder`` (for ``target_name``, or all) whose writing process is gone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = TEMP_RE.match(child.name)
        if match and (target_name is None or match["name"] == target_name) and not pid_alive(int(match["pid"])):
            found.append(child)
    return sorted(found)


def remove_stale_temporaries(folder: str | os.PathLike[str], target_name: str | None = None) -> list[Path]:
    """Delete the temporaries ``stale_temporaries`` finds; return what was removed."""
    removed = []
    for path in stale_temporaries(folder, target_name):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Leftovers of an earlier writer of ``target`` that was killed are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    tmp = target.parent / temp_name(target.name)
    # O_CREAT with 0o666 lets the kernel apply the umask, as a plain open() would, without reading
    # the umask (os.umask is process-wide and would race with writer threads).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def check_output_folder(path: str | os.PathLike[str], param: str = "output") -> Path:
    """An output folder: new or an existing folder, never an existing file (checked before any work)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{path} is an existing file; pass a folder for the results (new or existing)", param=param)
    return path


def check_output_file(path: str | os.PathLike[str], param: str = "output") -> Path:
    """An output file: new or an existing file, never a folder; its parent folder is created if missing."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder; pass a file name, e.g. {path / 'combined.safetensors'}", param=param)
    if path.name in ("", ".", ".."):
        raise OutputPathError(f"{path} names no file; pass a file name such as combined.safetensors", param=param)
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputPathError(f"{path.parent} is a file, not a folder; pass a path in a folder", param=param)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
