"""Safe reading of checkpoints in other layouts: never unpickles code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from modules.errors import CheckpointImportError, UnsafeCheckpointError

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


def _torch_load_weights_only(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"{path} needs arbitrary unpickling to load (it stores objects other than tensors and plain"
            " containers), which could run code; it was refused and nothing in it was executed. Re-save"
            " it as a plain state dict (torch.save(model.state_dict(), ...)) or as safetensors."
            f" Detail: {str(error).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointImportError(
            f"{path} is truncated or corrupt and cannot be read ({str(error).splitlines()[0]});"
            " restore it from a backup, or pass --skip-bad to import without it"
        ) from None


def _is_zip(path: Path) -> bool:
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
