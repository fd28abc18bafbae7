"""The one safetensors module: dtype table, header encoder, a one-tensor-at-a-time reader, and
writers that never need a whole model (or a second copy of a group) in memory.

Reading with ``pread`` keeps only the tensor asked for in memory; ``range`` only says where a tensor
lies, to copy it unread. ``write_streaming`` lays out the header from known shapes first, then
writes each tensor (or copies each range) as it is produced. ``save_tensors`` writes
a mapping of tensors byte-identical to safetensors' own ``save_file``, hashing while it writes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy

if TYPE_CHECKING:
    import torch

from modules.atomic import fsync_path
from modules.errors import CheckpointImportError
from modules.rundir.byte_ranges import FileRange, copy_range, write_at

#: torch dtype name -> safetensors dtype code.
DTYPE_CODES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}
CODE_DTYPES = {code: name for name, code in DTYPE_CODES.items()}
#: dtype name -> bytes per element (torch is not imported to read a file: the pool's process has none).
ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
}
#: safetensors' Dtype enum order; its writer lays tensors out by this rank (descending), then name.
_DTYPE_RANK = {
    code: rank
    for rank, code in enumerate(
        ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]
    )
}
#: Bytes copied, hashed and written at a time; a multiple of the O_DIRECT alignment.
_WRITE_CHUNK = 1 << 23
_DIRECT_ALIGN = 4096
#: Write group files with O_DIRECT where the OS has it (see benchmarks/bench_store.py for why).
USE_DIRECT = hasattr(os, "O_DIRECT")

Layout = Mapping[str, tuple[tuple[int, ...], str]]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def nbytes_of(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of a tensor of ``shape`` and dtype name ``dtype``."""
    numel = 1
    for size in shape:
        numel *= size
    if dtype in ITEMSIZE:
        return numel * ITEMSIZE[dtype]
    import torch  # a dtype outside safetensors' table (a .pt checkpoint's): torch knows its size

    return numel * getattr(torch, dtype).itemsize


def library_order(layout: Layout) -> list[str]:
    """The order safetensors' own writer lays tensors out in: dtype rank descending, then name
    (which also keeps every tensor aligned to its item size)."""
    return sorted(layout, key=lambda k: (-_DTYPE_RANK[DTYPE_CODES[layout[k][1]]], k))


def encode_header(layout: Layout, metadata: Mapping[str, str] | None) -> bytes:
    """The length prefix and JSON header for tensors laid out in ``layout`` order (key -> shape, dtype name).

    ``metadata`` None leaves ``__metadata__`` out, as safetensors does; the header is padded with
    spaces to a multiple of 8 bytes so every tensor stays aligned.
    """
    header: dict[str, object] = {} if metadata is None else {"__metadata__": dict(metadata)}
    offset = 0
    for key, (shape, dtype) in layout.items():
        size = nbytes_of(shape, dtype)
        header[key] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict], dict[str, str], int]:
    """``(tensor entries, __metadata__, data start offset)`` of a safetensors file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _parse_header(lambda n, offset: os.pread(handle.fileno(), n, offset), path)
    except OSError as error:
        raise CheckpointImportError(f"{path} is not a readable safetensors file ({error})") from None


def _parse_header(read_at: Callable[[int, int], Any], name: object) -> tuple[dict[str, dict], dict[str, str], int]:
    try:
        (length,) = struct.unpack("<Q", bytes(read_at(8, 0)))
        if length > 100_000_000:
            raise ValueError(f"header length {length} is implausible")
        header = json.loads(bytes(read_at(length, 8)))
    except (OSError, ValueError, struct.error) as error:
        raise CheckpointImportError(f"{name} is not a readable safetensors file ({error})") from None
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + length


#: dtypes numpy lacks, held as their bits in an integer array of the same size and tagged with the name.
_BITS_AS = {"bfloat16": "<i2", "float8_e4m3fn": "u1", "float8_e5m2": "u1"}


def arrays_from_bytes(data: bytes | memoryview | mmap.mmap, name: object) -> dict[str, Any]:
    """The tensors of a safetensors file's bytes as numpy arrays (views of ``data``), without torch;
    a dtype numpy lacks as ``(bits array, dtype name)``, e.g. ``(int16 array, "bfloat16")`` (what the
    search's checkpoint pool holds)."""
    view = memoryview(data)
    entries, _, start = _parse_header(lambda n, offset: view[offset : offset + n], name)
    out: dict[str, Any] = {}
    for key, entry in entries.items():
        try:
            dtype = CODE_DTYPES.get(entry["dtype"])
            begin, end = (int(v) for v in entry["data_offsets"])
            shape = tuple(int(v) for v in entry["shape"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointImportError(f"{name}: the header entry of {key!r} is malformed; the file is corrupt") from None
        if dtype is None:
            raise CheckpointImportError(f"{name}: tensor {key!r} has unsupported dtype {entry['dtype']}")
        if min((0, begin, *shape)) < 0 or end - begin != nbytes_of(shape, dtype) or start + end > len(view):
            raise CheckpointImportError(f"{name}: tensor {key!r} has inconsistent offsets; the file is corrupt")
        stored = numpy.dtype(_BITS_AS.get(dtype, dtype)).newbyteorder("<")  # safetensors is little-endian
        array = numpy.frombuffer(view, dtype=stored, count=(end - begin) // stored.itemsize, offset=start + begin)
        out[key] = (array.reshape(shape), dtype) if dtype in _BITS_AS else array.reshape(shape)
    return out


class SafetensorsReader:
    """Random access to the tensors of one safetensors file, each read with one ``pread``.

    With ``handle`` (an open pyarrow file with ``read_at``, e.g. an object in a bucket) each tensor
    is one ranged read of that handle instead, and ``path`` only names the file in messages.
    """

    def __init__(self, path: str | os.PathLike[str], handle: Any = None) -> None:
        self.path: Path | str = Path(path) if handle is None else str(path)
        self._handle = handle
        self._fd = -1
        self._size: int | None = None
        if handle is not None:
            self.entries, self.metadata, self._data_start = _parse_header(handle.read_at, self.path)
            return
        self.entries, self.metadata, self._data_start = read_header(self.path)
        self._fd = os.open(self.path, os.O_RDONLY)

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, key: str) -> torch.Tensor:
        """The tensor stored under ``key`` (a fresh, writable tensor)."""
        import torch

        shape, dtype, start, end = self._locate(key)
        out = torch.empty(shape, dtype=getattr(torch, dtype))
        if end > start and self._handle is not None:
            data = self._handle.read_at(end - start, self._data_start + start)
            if len(data) != end - start:
                raise CheckpointImportError(f"{self.path}: tensor {key!r} is truncated; restore the file")
            out.reshape(-1).view(torch.uint8).numpy()[:] = numpy.frombuffer(data, dtype=numpy.uint8)
        elif end > start:
            view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
            got = os.preadv(self._fd, [view], self._data_start + start)
            if got != end - start:
                raise CheckpointImportError(f"{self.path}: tensor {key!r} is truncated; restore the file")
        return out

    def range(self, key: str) -> FileRange | None:
        """Where the tensor under ``key`` lies in this (local) file, to copy it without reading it;
        None for a file read through a handle."""
        if self._handle is not None:
            return None
        shape, dtype, start, end = self._locate(key)
        if self._size is None:
            self._size = os.fstat(self._fd).st_size
        if self._data_start + end > self._size:
            raise CheckpointImportError(f"{self.path}: tensor {key!r} is truncated; restore the file")
        return FileRange(self._fd, self._data_start + start, end - start, shape, dtype, str(self.path))

    def _locate(self, key: str) -> tuple[tuple[int, ...], str, int, int]:
        """Shape, dtype name and data offsets of ``key``, checked against each other."""
        if key not in self.entries:
            raise CheckpointImportError(f"{self.path} has no tensor {key!r}; its keys include {self.keys()[:10]}")
        entry = self.entries[key]
        dtype = CODE_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointImportError(f"{self.path}: tensor {key!r} has unsupported dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if end - start != nbytes_of(shape, dtype):
            raise CheckpointImportError(f"{self.path}: tensor {key!r} has inconsistent offsets; the file is corrupt")
        return shape, dtype, start, end

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_streaming(
    path: str | os.PathLike[str],
    layout: Layout,
    tensors: Iterator[tuple[str, torch.Tensor | FileRange]],
    metadata: Mapping[str, str],
) -> None:
    """Write ``tensors`` (each key of ``layout`` once, in any order, matching its shape and dtype) to
    ``path``, fsynced, holding one tensor in memory at a time; a ``FileRange`` (a tensor stored
    verbatim in a source file) is copied file to file without being read.

    The file is laid out as safetensors' own writer lays it out (see ``library_order``), each
    tensor written at its offset as it arrives, so with at most one metadata key the bytes equal
    ``safetensors.torch.save_file``'s (it orders several keys by a randomised hash map; here sorted).
    """
    import torch

    ordered = {key: layout[key] for key in library_order(layout)}
    header = encode_header(ordered, dict(sorted(metadata.items())))
    offsets, position = {}, len(header)
    for key, (shape, dtype) in ordered.items():
        offsets[key] = position
        position += nbytes_of(tuple(shape), dtype)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.pwrite(fd, header, 0)
        os.ftruncate(fd, position)
        for key, tensor in tensors:
            shape, dtype = layout.get(key, (None, ""))
            got = tensor.dtype if isinstance(tensor, FileRange) else dtype_name(tensor.dtype)
            if key not in offsets or tuple(tensor.shape) != tuple(shape) or got != dtype:
                raise ValueError(f"tensor {key!r} {tuple(tensor.shape)} {got} does not match the layout ({shape} {dtype})")
            start = offsets.pop(key)
            if isinstance(tensor, FileRange):
                copy_range(tensor, fd, start)
                continue
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            if flat.numel():
                write_at(fd, memoryview(flat.view(torch.uint8).numpy()), start)
        if offsets:
            raise ValueError(f"tensors {list(offsets)[:5]} were laid out but not written")
    finally:
        os.close(fd)
    fsync_path(path)


# -- whole-mapping writer (run directory group files) ---------------------------------------------


class _DirectUnsupported(Exception):
    """The file system refused an O_DIRECT write; the file is written through the page cache instead."""


def _unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage are cloned (safetensors refuses them)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if ident in seen or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        seen.add(ident)
        out[key] = tensor
    return out


def _library_layout(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``tensors``' layout in the order safetensors' own writer uses."""
    layout = {k: (tuple(t.shape), dtype_name(t.dtype)) for k, t in tensors.items()}
    return {k: layout[k] for k in library_order(layout)}


def _open_for_write(path: Path, direct: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    if direct:
        flags |= os.O_DIRECT
    try:
        return os.open(path, flags, 0o666)
    except OSError as error:
        if direct and error.errno == errno.EINVAL:  # tmpfs and others refuse O_DIRECT at open
            raise _DirectUnsupported from None
        raise


def _write_hashed(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], direct: bool) -> tuple[str, int]:
    """Write a safetensors file, hashing the bytes as they go out; return (sha256, size).

    The bytes pass through one reused, page-aligned buffer: with ``direct`` the file is opened
    with O_DIRECT, so a large write goes straight to the device instead of filling the page cache
    (the last block is padded and the file truncated back to its size).
    """
    import torch

    layout = _library_layout(tensors)
    header = encode_header(layout, dict(sorted(metadata.items())) if metadata else None)
    sources = [memoryview(header)]
    for key in layout:
        tensor = tensors[key]
        if tensor.nbytes:
            sources.append(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    size = sum(source.nbytes for source in sources)
    digest = hashlib.sha256()
    fd = _open_for_write(path, direct)
    try:
        with mmap.mmap(-1, _WRITE_CHUNK) as buffer:
            view = memoryview(buffer)
            filled = 0

            def flush(nbytes: int) -> None:
                chunk = view[:nbytes]
                digest.update(chunk)
                if direct and nbytes % _DIRECT_ALIGN:
                    padded = nbytes + (-nbytes % _DIRECT_ALIGN)
                    view[nbytes:padded] = bytes(padded - nbytes)
                    chunk = view[:padded]
                written = 0
                while written < len(chunk):
                    try:
                        written += os.write(fd, chunk[written:])
                    except OSError as error:
                        if direct and error.errno == errno.EINVAL:
                            raise _DirectUnsupported from None
                        raise

            for source in sources:
                start = 0
                while start < source.nbytes:
                    take = min(_WRITE_CHUNK - filled, source.nbytes - start)
                    view[filled : filled + take] = source[start : start + take]
                    filled += take
                    start += take
                    if filled == _WRITE_CHUNK:
                        flush(filled)
                        filled = 0
            if filled:
                flush(filled)
            view.release()
        if direct and size % _DIRECT_ALIGN:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def encode_tensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes | bytearray:
    """The bytes ``save_tensors`` would write for ``tensors``: one object to upload whole."""
    import torch
    from safetensors.torch import save as library_save

    tensors = _unshared(tensors)
    if not all(dtype_name(t.dtype) in DTYPE_CODES for t in tensors.values()):
        return library_save(tensors, metadata=dict(metadata))
    layout = _library_layout(tensors)
    header = encode_header(layout, dict(sorted(metadata.items())) if metadata else None)
    out = bytearray(len(header) + sum(t.nbytes for t in tensors.values()))
    out[: len(header)] = header
    position = len(header)
    for key in layout:
        if tensors[key].nbytes:
            data = tensors[key].reshape(-1).view(torch.uint8).numpy()
            out[position : position + data.nbytes] = memoryview(data)
            position += data.nbytes
    return out


def save_tensors(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], durable: bool = True
) -> tuple[str, int]:
    """Write ``tensors`` to ``path`` exactly as safetensors' ``save_file`` would (fsynced when
    ``durable``); return the file's sha256 and size."""
    path = Path(path)
    tensors = _unshared(tensors)
    if all(dtype_name(t.dtype) in DTYPE_CODES for t in tensors.values()):
        try:
            result = _write_hashed(path, tensors, metadata, direct=USE_DIRECT)
        except _DirectUnsupported:
            result = _write_hashed(path, tensors, metadata, direct=False)
        if durable:
            fsync_path(path)
        return result
    from safetensors.torch import save_file as library_save_file

    library_save_file(tensors, path, metadata=dict(metadata))  # dtypes outside the table: the library decides
    if durable:
        fsync_path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                digest.update(view)
    return digest.hexdigest(), size
