"""Train the codec with Adam and record it into a run directory (the benchmarks' second family)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm import tqdm

from modules.codec.data import load_splits
from modules.codec.evaluate import evaluate, example_losses
from modules.codec.model import build_model
from modules.codec.spec import codec_spec, codec_spec_yaml
from modules.demo.train import check_out, torch_threads
from modules.errors import RunDirError
from modules.recorder import Recorder
from modules.rundir.run_dir import SPEC_NAME, RunDir

BATCH_SIZE = 128
LEARNING_RATE = 3e-3


def _complete(out: Path, seed: int, width: int, epochs: int, every: int) -> bool:
    try:
        if (out / SPEC_NAME).read_text(encoding="utf-8") != codec_spec_yaml(width=width, seed=seed):
            return False
        return RunDir(out).epochs == list(range(every, epochs + 1, every))
    except (OSError, RunDirError):
        return False


def train_codec(
    out: str | os.PathLike[str], seed: int = 0, width: int = 64, epochs: int = 60, every: int = 2,
    progress: bool = True, reuse: bool = False,
) -> Path:
    """Train the codec for ``epochs`` epochs on CPU, saving every ``every``; returns the run directory.
    With ``reuse``, a complete run of the same settings in ``out`` is returned as it is."""
    out = Path(out)
    if reuse and _complete(out, seed, width, epochs, every):
        return out
    if reuse and out.exists():
        import shutil

        shutil.rmtree(out)
    check_out(out)
    spec = codec_spec(width=width, seed=seed)
    splits = load_splits()
    train = splits["train"]
    model = build_model(width=width, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    recorder = Recorder(out, spec, model, optimizer, every=every, evaluate=evaluate, val_split=splits["val"])
    generator = torch.Generator().manual_seed(seed + 101)
    n = len(train["y"])
    with torch_threads(1):
        model.train()
        for epoch in tqdm(range(1, epochs + 1), desc="train-codec", unit="epoch", disable=not progress):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n - BATCH_SIZE + 1, BATCH_SIZE):
                index = order[start : start + BATCH_SIZE]
                batch = {k: v[index] for k, v in train.items()}
                optimizer.zero_grad(set_to_none=True)
                losses = example_losses(model(batch["x"]), batch)
                loss = (losses["ce"] + losses["reconstruction"]).mean()
                loss.backward()
                recorder.after_backward()
                optimizer.step()
                recorder.add_train_loss(loss.item(), len(index))
            recorder.end_epoch(epoch)
    return out
