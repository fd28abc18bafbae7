"""Read one ``torch.distributed.checkpoint`` folder (``.metadata`` plus ``*.distcp`` files) in one
process, without a process group and without unpickling code.

``torch.distributed.checkpoint.load`` reads ``.metadata`` with plain ``pickle.load``: whoever wrote
the folder could run code on the reader. Here it goes through ``modules.importing.safe_unpickle``'s restricted
unpickler, which loads only DCP's own metadata classes (and torch's weights-only allow-list);
every tensor is then read from its byte range with ``torch.load(weights_only=True)``, and chunks
of a tensor saved by several ranks are put back together.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path, PurePosixPath

import torch

from modules.errors import CheckpointImportError, UnsafeCheckpointError
from modules.importing.checkpoint_io import LoadedCheckpoint
from modules.importing.safe_unpickle import Skipped, UnsafeGlobal, load_restricted

METADATA_NAME = ".metadata"
DATA_SUFFIX = ".distcp"
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
#: The classes a DCP ``.metadata`` pickle is made of: torch's own dataclasses, safe to construct.
DCP_GLOBALS = (
    *(
        f"{_METADATA_MODULE}.{name}"
        for name in (
            "Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata", "MetadataIndex",
            "BytesStorageMetadata", "StorageMeta", "_MEM_FORMAT_ENCODING",
        )
    ),
    "torch.distributed.checkpoint.filesystem._StorageInfo",
    # StorageMeta.checkpoint_id: a path object only, no file is touched
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
)


def is_dcp_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a DCP checkpoint (or what is left of one: ``*.distcp`` without ``.metadata``)."""
    return (folder / METADATA_NAME).is_file() or any(p.suffix == DATA_SUFFIX for p in folder.iterdir())


def read_metadata(folder: Path):
    """The folder's DCP ``Metadata``, unpickled by the restricted unpickler (nothing in it runs)."""
    path = folder / METADATA_NAME
    if not path.is_file():
        shards = sorted(p.name for p in folder.iterdir() if p.suffix == DATA_SUFFIX)
        raise CheckpointImportError(
            f"{folder} holds {shards[:3]} but no {METADATA_NAME}: DCP writes it last, so the save was"
            " interrupted or the file was lost. Restore it, or move the folder out of the run"
        )
    try:
        with open(path, "rb") as handle:
            metadata, skipped = load_restricted(handle, DCP_GLOBALS)
    except UnsafeGlobal as error:
        raise UnsafeCheckpointError(
            f"{path} references {error.qualname}, which can only be there to run code; it was refused and"
            " nothing in it was executed. Do not import checkpoints of unknown origin"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise CheckpointImportError(f"{path} is truncated or corrupt ({error}); restore it from the run") from None
    from torch.distributed.checkpoint.metadata import Metadata

    if not isinstance(metadata, Metadata) or not isinstance(metadata.storage_data, dict):
        what = metadata.qualname if isinstance(metadata, Skipped) else type(metadata).__name__
        raise CheckpointImportError(
            f"{path} holds a {what}, not DCP checkpoint metadata{f' (unloaded types: {skipped[:5]})' if skipped else ''};"
            " pass a folder written by torch.distributed.checkpoint.save"
        )
    return metadata


def _chunk_bytes(folder: Path, info, fqn: str, handles: dict[str, io.BufferedReader]) -> bytes:
    relative = str(info.relative_path)
    if PurePosixPath(relative).name != relative:
        raise CheckpointImportError(
            f"{folder / METADATA_NAME} places {fqn!r} in {relative!r}, outside the checkpoint folder; the"
            " metadata was altered: restore the checkpoint"
        )
    if getattr(info, "transform_descriptors", None):
        raise CheckpointImportError(
            f"{folder}: {fqn!r} is stored with transforms {list(info.transform_descriptors)} (compression);"
            " save the checkpoint without storage extensions to import it"
        )
    if relative not in handles:
        try:
            handles[relative] = open(folder / relative, "rb")
        except OSError:
            raise CheckpointImportError(
                f"{folder / relative} is missing but {METADATA_NAME} stores {fqn!r} there; restore it from the run"
            ) from None
    handle = handles[relative]
    handle.seek(info.offset)
    data = handle.read(info.length)
    if len(data) != info.length:
        raise CheckpointImportError(
            f"{folder / relative} is truncated: {fqn!r} needs bytes {info.offset}..{info.offset + info.length};"
            " restore it from the run"
        )
    return data


def read_dcp(folder: Path) -> LoadedCheckpoint:
    """Every tensor of the DCP checkpoint in ``folder`` under its flattened name (``model.layer.weight``);
    non-tensor entries (optimizer hyper-parameters, step counters saved as bytes) are left out."""
    from torch.distributed.checkpoint.metadata import MetadataIndex, TensorStorageMetadata

    metadata = read_metadata(folder)
    state: dict[str, torch.Tensor] = {}
    handles: dict[str, io.BufferedReader] = {}
    try:
        for fqn, item in metadata.state_dict_metadata.items():
            if not isinstance(item, TensorStorageMetadata):
                continue
            size = tuple(item.size)
            whole = None
            for chunk in item.chunks:
                info = metadata.storage_data.get(MetadataIndex(fqn, chunk.offsets))
                if info is None:
                    raise CheckpointImportError(
                        f"{folder / METADATA_NAME} lists no storage for {fqn!r} at offsets {list(chunk.offsets)};"
                        " restore the checkpoint"
                    )
                data = _chunk_bytes(folder, info, fqn, handles)
                try:
                    part = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                except Exception as error:
                    raise CheckpointImportError(
                        f"{folder / info.relative_path}: {fqn!r} is unreadable ({str(error).splitlines()[0]});"
                        " restore it from the run"
                    ) from None
                if tuple(chunk.sizes) == size and not any(chunk.offsets):
                    whole = part.contiguous()
                    break
                if whole is None:
                    whole = torch.empty(size, dtype=item.properties.dtype)
                target = whole
                for dim, (start, length) in enumerate(zip(chunk.offsets, chunk.sizes)):
                    target = target.narrow(dim, start, length)
                target.copy_(part)
            if whole is not None:
                state[fqn] = whole
    finally:
        for handle in handles.values():
            handle.close()
    if not state:
        raise CheckpointImportError(f"{folder} holds no tensors; pass a DCP checkpoint of a model")
    return LoadedCheckpoint(state)
