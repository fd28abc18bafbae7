"""The demo data: latent factors -> features + a 1-D signal -> four task labels, from a seed.

Tasks differ on purpose so that module groups peak at different epochs through real training:
emotion has few training labels and heavy label noise (overfits early), Bentham is labelled on
every training example with little noise (keeps improving late), SURD (read from the signal) and
regret (an interaction of features and signal) sit in between.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from modules.demo.model import INPUT_DIM, SIGNAL_LENGTH
from modules.errors import SpecError

TASKS = ("emotion", "bentham", "surd", "regret")
LATENT_DIM = 8
#: Training examples that carry each task's label (the rest are unlabelled for that task).
TRAIN_LABELLED = {"emotion": 400, "bentham": 4000, "surd": 2500, "regret": 3000}
#: Fraction of labels replaced by a random class (classification) in every split.
LABEL_NOISE = {"emotion": 0.4, "surd": 0.1, "regret": 0.05}
BENTHAM_NOISE_STD = 0.1


@dataclass
class DemoSplit:
    """One split: inputs, all four task labels, and per-task label masks (all True outside train)."""

    x: torch.Tensor
    signal: torch.Tensor
    labels: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: str | torch.device) -> DemoSplit:
        """The split with every tensor on ``device``."""
        return DemoSplit(
            self.x.to(device),
            self.signal.to(device),
            {k: v.to(device) for k, v in self.labels.items()},
            {k: v.to(device) for k, v in self.masks.items()},
        )

    def subset(self, index: torch.Tensor) -> DemoSplit:
        """The examples at ``index`` (labels and masks follow)."""
        return DemoSplit(
            self.x[index],
            self.signal[index],
            {k: v[index] for k, v in self.labels.items()},
            {k: v[index] for k, v in self.masks.items()},
        )


def _flip(labels: torch.Tensor, classes: int, rate: float, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(labels.shape, generator=gen) < rate
    random_labels = torch.randint(0, classes, labels.shape, generator=gen)
    return torch.where(flip, random_labels, labels)


def _generate(n: int, gen: torch.Generator, mixing: dict[str, torch.Tensor]) -> DemoSplit:
    z = torch.randn(n, LATENT_DIM, generator=gen)
    x = torch.tanh(z[:, :6] @ mixing["x"]) + 0.1 * torch.randn(n, INPUT_DIM, generator=gen)
    amplitude = torch.exp(0.5 * z[:, 6:7])
    frequency = 3.0 + 1.5 * torch.tanh(z[:, 7:8])
    phase = 2 * math.pi * torch.rand(n, 1, generator=gen)
    t = torch.arange(SIGNAL_LENGTH, dtype=torch.float32)
    signal = amplitude * torch.sin(2 * math.pi * frequency * t / SIGNAL_LENGTH + phase)
    signal = signal + 0.3 * torch.randn(n, SIGNAL_LENGTH, generator=gen)

    emotion_logits = z[:, :6] @ mixing["emotion"] + 0.8 * z[:, 0:1] * z[:, 1:2]
    emotion = _flip(emotion_logits.argmax(1), 6, LABEL_NOISE["emotion"], gen)
    bentham = (
        torch.sin(1.5 * z[:, 0])
        + 0.6 * z[:, 1] * z[:, 2]
        + 0.3 * z[:, 3] ** 2
        - 0.5 * z[:, 4]
        + 0.4 * torch.tanh(z[:, 5] * z[:, 0])
    )
    bentham = (bentham - 0.3) / 1.2 + BENTHAM_NOISE_STD * torch.randn(n, generator=gen)
    surd = _flip(2 * (z[:, 6] > 0).long() + (z[:, 7] > 0).long(), 4, LABEL_NOISE["surd"], gen)
    regret_score = z[:, 0] * z[:, 6] + 0.7 * z[:, 1] - 0.7 * z[:, 7]
    regret = _flip((regret_score > 0).long(), 2, LABEL_NOISE["regret"], gen).float()
    labels = {"emotion": emotion, "bentham": bentham, "surd": surd, "regret": regret}
    masks = {task: torch.ones(n, dtype=torch.bool) for task in TASKS}
    return DemoSplit(x, signal, labels, masks)


def load_splits(
    seed: int = 0,
    n_train: int = 4000,
    n_val: int = 2000,
    n_test: int = 2000,
    train_labelled: dict[str, int] | None = None,
) -> dict[str, DemoSplit]:
    """Deterministic ``train``/``val``/``test`` splits; train masks keep ``train_labelled`` labels per task."""
    labelled = dict(TRAIN_LABELLED if train_labelled is None else train_labelled)
    for task, count in labelled.items():
        if task not in TASKS or not isinstance(count, int) or not 0 < count:
            raise SpecError(
                f"data_args train_labelled[{task!r}] = {count!r} is invalid; use tasks {list(TASKS)}"
                " with positive integer counts"
            )
    gen = torch.Generator().manual_seed(1_000_003 * int(seed) + 17)
    mixing = {
        "x": torch.randn(6, INPUT_DIM, generator=gen) / math.sqrt(3.0),
        "emotion": torch.randn(6, 6, generator=gen),
    }
    splits = {
        "train": _generate(n_train, gen, mixing),
        "val": _generate(n_val, gen, mixing),
        "test": _generate(n_test, gen, mixing),
    }
    train = splits["train"]
    for task in TASKS:
        keep = torch.randperm(n_train, generator=gen)[: min(labelled.get(task, n_train), n_train)]
        mask = torch.zeros(n_train, dtype=torch.bool)
        mask[keep] = True
        train.masks[task] = mask
    return splits


def batches(split: DemoSplit, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Model inputs ``(x, signal)`` in split order (used to recompute BatchNorm statistics)."""
    for start in range(0, len(split), batch_size):
        yield split.x[start : start + batch_size], split.signal[start : start + batch_size]
