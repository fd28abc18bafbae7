"""Numbers out of what evaluate callables return: Python and numpy numbers, one-element tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_scalar(value: Any) -> float | None:
    """A float for numbers and one-element tensors/arrays; None for anything else."""
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.item())
    return None
