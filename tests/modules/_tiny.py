"""A tiny real model (MLP with BatchNorm, three groups), data, evaluate and a recorded run for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from modules.rundir.run_dir import RunWriter
from modules.spec.schema import Spec, dump_spec, parse_spec

SPEC = {
    "name": "tiny",
    "model": "tests.modules._tiny:build_model",
    "data": "tests.modules._tiny:load_data",
    "evaluate": "tests.modules._tiny:evaluate",
    "batches": "tests.modules._tiny:batches",
    "objective": {"metric": "loss", "mode": "min"},
    "groups": {"encoder": ["encoder."], "middle": ["middle."], "head": ["head."]},
}


class Tiny(nn.Module):
    """encoder (Linear + BatchNorm1d) -> middle (Linear) -> head (Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.middle = nn.Sequential(nn.Linear(16, 8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.middle(self.encoder(x))).squeeze(1)


def build_model(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def load_data(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """y = sin(x0) + x1 * x2 - 0.5 x3 + noise; 256 train, 128 val, 128 test examples."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 4, generator=gen)
    y = torch.sin(x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] + 0.1 * torch.randn(512, generator=gen)
    return {"train": (x[:256], y[:256]), "val": (x[256:384], y[256:384]), "test": (x[384:], y[384:])}


def batches(split: tuple[torch.Tensor, torch.Tensor], size: int = 64):
    """Model inputs of ``split`` in batches of ``size`` (a one-element tuple, as a loader yields)."""
    x, _ = split
    for start in range(0, len(x), size):
        yield (x[start : start + size],)


@torch.no_grad()
def evaluate(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Mean squared error (the objective), mean absolute error, per-example squared errors."""
    model.eval()
    x, y = split
    errors = model(x) - y
    squared = errors.pow(2)
    return {"loss": float(squared.mean()), "mae": float(errors.abs().mean()), "per_example_losses": squared}


def spec() -> Spec:
    return parse_spec(SPEC, "tiny spec")


def record_run(path: Path | str | tuple, epochs: int = 6, seed: int = 0) -> Path:
    """Train Tiny for real with SGD and store every epoch's groups and val loss in a run directory
    (a local folder, or a URI / (FileSystem, root) pair of a run on object storage)."""
    the_spec = spec()
    model = build_model(seed)
    data = load_data(seed)
    keys = the_spec.assign_groups(model.state_dict())
    writer = RunWriter.create(path, the_spec.name, keys)
    writer.write_spec_text(dump_spec(the_spec))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = data["train"]
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 32):
            idx = order[start : start + 32]
            loss = (model(x[idx]) - y[idx]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        state = model.state_dict()
        writer.write_epoch(epoch, {g: {k: state[k] for k in ks} for g, ks in keys.items()})
        rows.append((epoch, "model", "val_loss", evaluate(model, data["val"])["loss"]))
    writer.add_metrics(rows)
    return Path(path) if writer.store.local_path is not None else path
