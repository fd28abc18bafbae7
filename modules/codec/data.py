"""The codec data: 8 classes on a curved 6-d manifold in 32-d, noisy inputs and noisy labels.

Training labels are noisy (25% flipped), so the classifier overfits after its early peak, while
reconstructing the clean input keeps improving late: the groups peak at different epochs.
"""

from __future__ import annotations

import torch

from modules.codec.model import CLASSES, INPUT_DIM

SIZES = {"train": 3000, "val": 1500, "test": 1500}
LABEL_NOISE = 0.25
INPUT_NOISE = 0.3
#: The data's own seed stays fixed across trainings: two trainings differ only in their weights and order.
DATA_SEED = 1234

Split = dict[str, torch.Tensor]


def _generate(n: int, gen: torch.Generator, mixing: torch.Tensor, centres: torch.Tensor, noisy_labels: bool) -> Split:
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    z = centres[y] + 0.9 * torch.randn(n, 6, generator=gen)
    clean = torch.tanh(z @ mixing) + 0.2 * torch.sin(2 * z[:, :1] * z[:, 1:2])
    x = clean + INPUT_NOISE * torch.randn(n, INPUT_DIM, generator=gen)
    if noisy_labels:
        flip = torch.rand(n, generator=gen) < LABEL_NOISE
        y = torch.where(flip, torch.randint(0, CLASSES, (n,), generator=gen), y)
    return {"x": x, "clean": clean, "y": y}


def load_splits(seed: int = DATA_SEED) -> dict[str, Split]:
    """Train (noisy labels), val and test splits as mappings of tensors."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(6, INPUT_DIM, generator=gen) / 2.0
    centres = 1.2 * torch.randn(CLASSES, 6, generator=gen)
    return {
        name: _generate(n, gen, mixing, centres, noisy_labels=name == "train") for name, n in SIZES.items()
    }
