"""The codec model: ``encoder`` -> latent code -> ``classifier`` (class logits) and ``decoder``
(reconstruction of the clean input). Parameter-name prefixes are the groups."""

from __future__ import annotations

import torch
from torch import nn

INPUT_DIM = 32
CODE_DIM = 12
CLASSES = 8


class Codec(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(INPUT_DIM, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, CODE_DIM)
        )
        self.classifier = nn.Sequential(nn.Linear(CODE_DIM, width), nn.GELU(), nn.Linear(width, CLASSES))
        self.decoder = nn.Sequential(nn.Linear(CODE_DIM, width), nn.GELU(), nn.Linear(width, INPUT_DIM))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        code = self.encoder(x)
        return {"logits": self.classifier(code), "reconstruction": self.decoder(code)}


def build_model(width: int = 64, seed: int = 0) -> Codec:
    """The model with seeded initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Codec(width)
