"""Safe reading of checkpoints in other layouts: never unpickles code."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from modules.errors import CheckpointImportError, UnsafeCheckpointError

#: The advice on unreadable files that only ``sweetspot import`` can follow; see ``without_skip_advice``.
SKIP_BAD_ADVICE = ", or pass --skip-bad to import without it"

#: Keys under which training scripts commonly wrap the model's state dict.
WRAPPER_KEYS = ("model_state_dict", "state_dict", "model")


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a model state dict from ``.safetensors`` or a ``torch.save`` file, without running code.

    ``.pt`` files are read with ``weights_only=True``; a state dict wrapped under one of
    ``WRAPPER_KEYS`` is unwrapped and other entries (optimizer state, epoch, ...) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointImportError(f"checkpoint {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception as error:
            raise CheckpointImportError(f"{path} is not a readable safetensors file ({error})") from None
    obj = _torch_load_weights_only(path)
    return unwrap_state_dict(obj, path)


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
    found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointImportError(
        f"{path} holds no model state dict: expected a mapping of names to tensors, or one under"
        f" {list(WRAPPER_KEYS)}; found {found}. Save the model with torch.save(model.state_dict(), ...)"
    )
