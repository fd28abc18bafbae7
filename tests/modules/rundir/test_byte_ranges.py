"""Copying a file's byte range into another file: in the kernel, or through a buffer where the
kernel cannot (another file system, no copy_file_range), with the same bytes either way."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from modules.errors import CheckpointImportError
from modules.rundir import byte_ranges
from modules.rundir.byte_ranges import FileRange, copy_range


def _refuse(*args: object) -> int:
    raise OSError(errno.EXDEV, "Invalid cross-device link")


@pytest.mark.parametrize("kernel", ["copy_file_range", "refused", "copies nothing", "absent"])
def test_copy_range_copies_the_range_at_the_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    monkeypatch.setattr(byte_ranges, "WRITE_PIECE", 1000)  # several pieces through the buffer
    if kernel == "refused":
        monkeypatch.setattr(os, "copy_file_range", _refuse)
    elif kernel == "copies nothing":  # as some kernels do for files whose size they do not know
        monkeypatch.setattr(os, "copy_file_range", lambda *args: 0)
    elif kernel == "absent":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    data = os.urandom(10_000)
    (tmp_path / "src").write_bytes(data)
    fd_in = os.open(tmp_path / "src", os.O_RDONLY)
    fd_out = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT)
    try:
        os.pwrite(fd_out, b"head", 0)
        copy_range(FileRange(fd_in, 123, 7_000, (7_000,), "uint8", "src"), fd_out, 4)
        with pytest.raises(CheckpointImportError, match=r"src ends at byte 10000, inside a tensor .* truncated, restore it"):
            copy_range(FileRange(fd_in, 9_000, 2_000, (2_000,), "uint8", "src"), fd_out, 8_000)
    finally:
        os.close(fd_in)
        os.close(fd_out)
    assert (tmp_path / "dst").read_bytes()[:7_004] == b"head" + data[123:7_123]


def test_copy_range_passes_on_real_write_errors(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"x" * 100)
    fd_in = os.open(tmp_path / "src", os.O_RDONLY)
    fd_out = os.open(tmp_path / "src", os.O_RDONLY)  # not open for writing
    try:
        with pytest.raises(OSError):
            copy_range(FileRange(fd_in, 0, 100, (100,), "uint8", "src"), fd_out, 0)
    finally:
        os.close(fd_in)
        os.close(fd_out)
