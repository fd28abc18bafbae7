"""Which torch device a step runs on: ``auto`` takes a GPU when there is one."""

from __future__ import annotations

import torch

from modules.errors import SweetspotError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an unavailable GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SweetspotError(f"{name!r} is not a torch device; use auto, cpu, cuda or cuda:N", param="device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SweetspotError(f"{name} asked for a GPU but torch sees none; use cpu or auto", param="device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SweetspotError(
                f"{name}: this machine has {torch.cuda.device_count()} GPU(s); use cuda:0 .."
                f" cuda:{torch.cuda.device_count() - 1}",
                param="device",
            )
    return device
