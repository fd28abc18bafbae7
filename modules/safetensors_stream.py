"""Read and write safetensors files one tensor at a time (plain file I/O, no memory map).

Reading with ``pread`` keeps only the tensor asked for in memory; writing lays out the header from
known shapes first, then appends each tensor, so a whole model is never held at once.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from modules.errors import CheckpointImportError

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
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}
CODE_DTYPES = {code: name for name, code in DTYPE_CODES.items()}


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    numel = 1
    for size in shape:
        numel *= size
    return numel * getattr(torch, dtype).itemsize


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict], dict[str, str], int]:
    """``(tensor entries, __metadata__, data start offset)`` of a safetensors file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as error:
        raise CheckpointImportError(f"{path} is not a readable safetensors file ({error})") from None
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + length


class SafetensorsReader:
    """Random access to the tensors of one safetensors file, each read with one ``pread``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.entries, self.metadata, self._data_start = read_header(self.path)
        self._fd = os.open(self.path, os.O_RDONLY)

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, key: str) -> torch.Tensor:
        """The tensor stored under ``key`` (a fresh, writable tensor)."""
        if key not in self.entries:
            raise CheckpointImportError(f"{self.path} has no tensor {key!r}; its keys include {self.keys()[:10]}")
        entry = self.entries[key]
        dtype = CODE_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointImportError(f"{self.path}: tensor {key!r} has unsupported dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if end - start != _nbytes(shape, dtype):
            raise CheckpointImportError(f"{self.path}: tensor {key!r} has inconsistent offsets; the file is corrupt")
        out = torch.empty(shape, dtype=getattr(torch, dtype))
        if end > start:
            view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
            got = os.preadv(self._fd, [view], self._data_start + start)
            if got != end - start:
                raise CheckpointImportError(f"{self.path}: tensor {key!r} is truncated; restore the file")
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def header_bytes(layout: Mapping[str, tuple[tuple[int, ...], str]], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and JSON header for tensors laid out in ``layout`` order."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for key, (shape, dtype) in layout.items():
        size = _nbytes(shape, dtype)
        header[key] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_streaming(
    path: str | os.PathLike[str],
    layout: Mapping[str, tuple[tuple[int, ...], str]],
    tensors: Iterator[tuple[str, torch.Tensor]],
    metadata: Mapping[str, str],
) -> None:
    """Write ``tensors`` (yielded in ``layout`` order, matching its shapes/dtypes) to ``path``."""
    expected = iter(layout.items())
    with open(path, "wb") as handle:
        handle.write(header_bytes(layout, metadata))
        for key, tensor in tensors:
            want_key, (shape, dtype) = next(expected, (None, ((), "")))
            if key != want_key or tuple(tensor.shape) != tuple(shape) or str(tensor.dtype) != f"torch.{dtype}":
                raise ValueError(f"tensor {key!r} {tuple(tensor.shape)} {tensor.dtype} does not match layout entry {want_key!r}")
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            if flat.numel():
                handle.write(memoryview(flat.view(torch.uint8).numpy()))
        leftover = next(expected, None)
        if leftover is not None:
            raise ValueError(f"tensor {leftover[0]!r} was laid out but not written")
        handle.flush()
        os.fsync(handle.fileno())
