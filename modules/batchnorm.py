"""Recompute BatchNorm running statistics for combined weights (as torch.optim.swa_utils.update_bn)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from modules.errors import CombineError


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def has_batchnorm(model: nn.Module) -> bool:
    """True when the model has BatchNorm layers with running statistics."""
    return bool(batchnorm_layers(model))


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(*inputs)`` for tuples/lists, ``model(**inputs)`` for dicts, ``model(inputs)`` otherwise."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


@torch.no_grad()
def update_bn(model: nn.Module, batches: Iterable[Any], source: str = "the training split") -> int:
    """Reset BatchNorm statistics and recompute them as an exact average over ``batches``.

    Returns the number of batches seen (0 when the model has no BatchNorm); the model's
    train/eval modes and the layers' momenta are restored afterwards.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = {layer: layer.momentum for layer in layers}
    modes = {m: m.training for m in model.modules()}
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    seen = 0
    try:
        for inputs in batches:
            call_model(model, inputs)
            seen += 1
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        for module, mode in modes.items():
            module.training = mode
    if seen == 0:
        raise CombineError(f"{source} yielded no batches, so BatchNorm statistics cannot be recomputed")
    return seen
