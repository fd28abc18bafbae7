"""Evaluate the codec: the objective ``loss`` is cross-entropy plus reconstruction error, per example."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

RECONSTRUCTION_WEIGHT = 4.0


def example_losses(outputs: dict[str, torch.Tensor], split: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "ce": F.cross_entropy(outputs["logits"], split["y"], reduction="none"),
        "reconstruction": RECONSTRUCTION_WEIGHT * (outputs["reconstruction"] - split["clean"]).pow(2).mean(1),
    }


@torch.no_grad()
def evaluate(model: nn.Module, split: dict[str, torch.Tensor]) -> dict[str, Any]:
    device = next(model.parameters()).device
    outputs = model(split["x"].to(device))
    outputs = {k: v.cpu() for k, v in outputs.items()}
    losses = example_losses(outputs, split)
    per_example = losses["ce"] + losses["reconstruction"]
    return {
        "loss": float(per_example.mean()),
        "ce": float(losses["ce"].mean()),
        "reconstruction": float(losses["reconstruction"].mean()),
        "accuracy": float((outputs["logits"].argmax(1) == split["y"]).float().mean()),
        "per_example_losses": per_example,
    }
