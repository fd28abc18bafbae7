"""Train the demo model with Adam and record it into a run directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from modules.demo.data import TASKS, DemoSplit, load_splits
from modules.demo.evaluate import evaluate, task_losses
from modules.demo.model import build_model
from modules.demo.spec import demo_spec, demo_spec_yaml
from modules.devices import resolve_device
from modules.errors import RunDirError, SpecError
from modules.recorder import Recorder
from modules.rundir.run_dir import SPEC_NAME, RunDir

BATCH_SIZE = 256
LEARNING_RATE = 1e-3
#: Up to this width the demo trains on one CPU thread: its ops are too small to gain from more,
#: and on a busy machine extra threads waiting for each other make it many times slower.
SINGLE_THREAD_MAX_WIDTH = 128


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads (None: leave the setting alone)."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def masked_objective(outputs: dict[str, torch.Tensor], batch: DemoSplit) -> torch.Tensor:
    """Sum over tasks of the mean loss over the batch's examples labelled for that task."""
    losses = task_losses(outputs, batch.labels)
    total = outputs["bentham"].new_zeros(())
    for task in TASKS:
        mask = batch.masks[task]
        if bool(mask.any()):
            total = total + losses[task][mask].mean()
    return total


def demo_run_state(out: Path, seed: int, width: int, epochs: int, every: int) -> str:
    """``complete`` (every checkpoint of these settings recorded), ``incomplete`` (a demo run of
    these settings that stopped early) or ``other`` (missing, or not this demo run)."""
    try:
        same = (out / SPEC_NAME).read_text(encoding="utf-8") == demo_spec_yaml(width=width, seed=seed)
    except OSError:
        return "other"
    if not same:
        return "other"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # leftovers of the killed write: the run is trained again
            recorded = RunDir(out).epochs
    except RunDirError:
        return "incomplete"
    return "complete" if recorded == list(range(every, epochs + 1, every)) else "incomplete"


def check_out(out: Path) -> None:
    """Refuse an existing non-empty output folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(
            f"--out {out} already exists and is not empty; choose another path or delete it first"
        )


def train_demo(
    out: str | os.PathLike[str],
    seed: int = 0,
    width: int = 64,
    epochs: int = 60,
    every: int = 2,
    progress: bool = True,
    device: str | torch.device = "cpu",
    reuse: bool = False,
) -> Path:
    """Train the demo for ``epochs`` epochs, saving every ``every``; returns the run directory.
    ``device`` is a torch device or its name (``auto``: a GPU when available).

    With ``reuse``, a complete demo run of the same settings in ``out`` is returned as it is, and
    one that a killed training left incomplete is removed and trained again."""
    out = Path(out)
    for name, value in {"epochs": epochs, "every": every, "width": width}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(f"train-demo --{name} must be a positive integer, got {value!r}")
    if reuse:
        state = demo_run_state(out, seed, width, epochs, every)
        if state == "complete":
            return out
        if state == "incomplete":
            shutil.rmtree(out)
    check_out(out)
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    one_thread = device.type == "cpu" and width <= SINGLE_THREAD_MAX_WIDTH
    with torch_threads(1 if one_thread else None):
        _train(out, seed, width, epochs, every, progress, device)
    if not (out / SPEC_NAME).is_file():
        raise RunDirError(f"{out / SPEC_NAME} was not written; re-run train-demo into an empty folder")
    return out


def _train(out: Path, seed: int, width: int, epochs: int, every: int, progress: bool, device: torch.device) -> None:
    spec = demo_spec(width=width, seed=seed)
    splits = load_splits(seed=seed)
    train, val = splits["train"].to(device), splits["val"]
    model = build_model(width=width, seed=seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    recorder = Recorder(out, spec, model, optimizer, every=every, evaluate=evaluate, val_split=val)
    generator = torch.Generator().manual_seed(seed + 101)
    model.train()
    for epoch in tqdm(range(1, epochs + 1), desc="train-demo", unit="epoch", disable=not progress):
        order = torch.randperm(len(train), generator=generator).to(device)
        for start in range(0, len(train) - BATCH_SIZE + 1, BATCH_SIZE):
            batch = train.subset(order[start : start + BATCH_SIZE])
            optimizer.zero_grad(set_to_none=True)
            loss = masked_objective(model(batch.x, batch.signal), batch)
            loss.backward()
            recorder.after_backward()
            optimizer.step()
            recorder.add_train_loss(loss.item(), len(batch))
        recorder.end_epoch(epoch)
