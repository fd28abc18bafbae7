"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modules.errors import SweetspotError


class OutputPathError(SweetspotError, ValueError):
    """An output path that cannot be written as asked (a file where a folder is needed, or back)."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
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
    return path
