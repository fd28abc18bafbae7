"""Safe reading of checkpoints in other layouts: never unpickles code.

A ``torch.save`` file is read with torch's weights-only loader; when that refuses a file for its
non-tensor extras (hyper-parameters, numpy scalars, dataclasses), it is re-read with
``modules.importing.safe_unpickle``, where those extras become inert placeholders that are reported, never run.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from modules.errors import CheckpointImportError, UnsafeCheckpointError
from modules.importing.safe_unpickle import Skipped, UnsafeGlobal, load_with_placeholders

#: The advice on unreadable files that only ``sweetspot import`` can follow; see ``without_skip_advice``.
SKIP_BAD_ADVICE = ", or pass --skip-bad to import without it"

#: Keys under which training scripts commonly wrap the model's state dict.
WRAPPER_KEYS = ("model_state_dict", "state_dict", "model")


@dataclass
class LoadedCheckpoint:
    """A checkpoint's model state dict and the globals of its extras that were left unloaded."""

    state: dict[str, torch.Tensor]
    skipped_globals: list[str] = field(default_factory=list)


def load_state_dict(path: str | os.PathLike[str], allow_globals: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Read a model state dict from ``.safetensors`` or a ``torch.save`` file, without running code.

    ``.pt`` files are read with ``weights_only=True``; a state dict wrapped under one of
    ``WRAPPER_KEYS`` is unwrapped and other entries (optimizer state, epoch, ...) are ignored.
    """
    return read_checkpoint(path, allow_globals).state


def read_checkpoint(path: str | os.PathLike[str], allow_globals: Iterable[str] = ()) -> LoadedCheckpoint:
    """``load_state_dict`` that also says which globals of the file's extras were skipped.

    ``allow_globals`` (``"module.name"``) are imported and used for real: only for names you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointImportError(f"checkpoint {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        try:
            return LoadedCheckpoint(load_file(path))
        except Exception as error:
            raise CheckpointImportError(f"{path} is not a readable safetensors file ({error})") from None
    skipped: list[str] = []
    try:
        obj = _torch_load_weights_only(path)
    except UnsafeCheckpointError as refused:
        obj, skipped = _load_with_placeholders(path, allow_globals, refused)
    return LoadedCheckpoint(unwrap_state_dict(obj, path), skipped)


def _load_with_placeholders(
    path: Path, allow_globals: Iterable[str], refused: UnsafeCheckpointError
) -> tuple[object, list[str]]:
    try:
        return load_with_placeholders(path, allow_globals, mmap=is_zip_file(path))
    except UnsafeGlobal as error:
        raise UnsafeCheckpointError(
            f"{path} needs arbitrary unpickling to load (it references {error.qualname}, which can only"
            " be there to run code); it was refused and nothing in it was executed. Re-save it as a plain"
            f" state dict (torch.save(model.state_dict(), ...)) or as safetensors. Detail: GLOBAL {error.qualname}"
        ) from None
    except Exception:
        raise refused from None


#: Messages of torch's weights-only unpickler that mean malformed bytes, not a refused object.
_CORRUPT_PICKLE_SIGNS = ("Unsupported operand", "String is too long", "persistent id")


def _torch_load_weights_only(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip_file(path))
    except pickle.UnpicklingError as error:
        if any(sign in str(error) for sign in _CORRUPT_PICKLE_SIGNS):
            raise CheckpointImportError(
                f"{path} is truncated or corrupt and cannot be read (its pickle is malformed);"
                f" restore it from a backup{SKIP_BAD_ADVICE}"
            ) from None
        raise UnsafeCheckpointError(
            f"{path} needs arbitrary unpickling to load (it stores objects other than tensors and plain"
            " containers), which could run code; it was refused and nothing in it was executed. Re-save"
            " it as a plain state dict (torch.save(model.state_dict(), ...)) or as safetensors."
            f" Detail: {_refused_what(str(error))}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, zipfile.BadZipFile) as error:
        detail = (str(error).splitlines() or [type(error).__name__])[0]
        raise CheckpointImportError(
            f"{path} is truncated or corrupt and cannot be read ({detail});"
            f" restore it from a backup{SKIP_BAD_ADVICE}"
        ) from None


def without_skip_advice(message: str) -> str:
    """``message`` without the --skip-bad advice: for listings of skipped files and for commands
    (combine, evaluate) that have no --skip-bad option."""
    return message.replace(SKIP_BAD_ADVICE, "")


def _refused_what(message: str) -> str:
    """The global the unpickler refused (e.g. ``GLOBAL builtins.open``), else the first line."""
    found = re.search(r"GLOBAL \S+", message)
    return found.group(0) if found else (message.splitlines() or [""])[0]


def is_zip_file(path: Path) -> bool:
    """Whether ``path`` is a zip-format ``torch.save`` file (the format torch can memory-map)."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Return the tensor mapping held in ``obj`` (plain, or under a wrapper key)."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    if isinstance(obj, Skipped):
        raise UnsafeCheckpointError(
            f"{path} holds a {obj.qualname} object instead of a state dict; it was not loaded (loading it"
            " would run its code). Re-save the model with torch.save(model.state_dict(), ...)"
        )
    found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointImportError(
        f"{path} holds no model state dict: expected a mapping of names to tensors, or one under"
        f" {list(WRAPPER_KEYS)}; found {found}. Save the model with torch.save(model.state_dict(), ...)"
    )
