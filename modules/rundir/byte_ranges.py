"""Moving bytes between files without holding them: a tensor taken unchanged from a source file is
copied into the output by the kernel (``copy_file_range``), and bulk writes go out in pieces.

A crossover takes most tensors verbatim from one source file, so writing it can run at the speed
of a plain copy: nothing is read into Python and nothing beyond the page cache is touched.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from modules.errors import CheckpointImportError

#: Bytes per write. The kernel backs one write with page-cache folios as large as the write; from
#: 8 MiB on these are the highest-order free blocks, which a VM with free page reporting has given
#: back to its host, and each then costs a host fault: 16 MiB writes measured 5x slower than 1 MiB.
WRITE_PIECE = 1 << 20
#: copy_file_range errors meaning "not between these files": copy through a buffer instead.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


@dataclass(frozen=True)
class FileRange:
    """One stored tensor: ``nbytes`` bytes at ``start`` of the open file ``fd``.

    It stays valid only while its reader is open (for a combine: until the next tensor is drawn).
    """

    fd: int
    start: int
    nbytes: int
    shape: tuple[int, ...]
    #: torch dtype name, e.g. ``"float32"``.
    dtype: str
    #: The file, for messages.
    path: str


def write_at(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` (bytes) to ``fd`` at ``offset``, ``WRITE_PIECE`` at a time."""
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done : done + WRITE_PIECE], offset + done)


def copy_range(source: FileRange, fd: int, offset: int) -> None:
    """Copy ``source``'s bytes into ``fd`` at ``offset``: in the kernel where the two files allow it,
    else through one small buffer."""
    done = 0
    if hasattr(os, "copy_file_range"):
        try:
            while done < source.nbytes:
                got = os.copy_file_range(source.fd, fd, source.nbytes - done, source.start + done, offset + done)
                if got == 0:  # the file's end, or a file system that copies nothing: the buffered copy tells
                    break
                done += got
        except OSError as error:
            if error.errno not in _NO_KERNEL_COPY:
                raise
    if done == source.nbytes:
        return
    buffer = memoryview(bytearray(min(WRITE_PIECE, source.nbytes - done)))
    while done < source.nbytes:
        piece = buffer[: min(buffer.nbytes, source.nbytes - done)]
        got = os.preadv(source.fd, [piece], source.start + done)
        if got == 0:
            _truncated(source, done)
        write_at(fd, piece[:got], offset + done)
        done += got


def _truncated(source: FileRange, done: int) -> None:
    raise CheckpointImportError(
        f"{source.path} ends at byte {source.start + done}, inside a tensor that reaches byte"
        f" {source.start + source.nbytes}; the file is truncated, restore it"
    )
