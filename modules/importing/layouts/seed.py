"""The seed's layout: one ``checkpoint_epoch_<N>.pt`` (.pth, .safetensors) file per epoch in one
folder, full state dicts (plain or under a wrapper key), and an optional wide ``metrics.csv`` /
``metrics.jsonl`` beside them (one row per epoch)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from modules.errors import CheckpointImportError
from modules.importing.checkpoint_io import is_zip_file, read_checkpoint
from modules.importing.checkpoint_names import compile_patterns, epoch_of_file
from modules.importing.layouts.base import CheckpointEntry, ImportPlan, LayoutOptions
from modules.importing.wide_metrics import read_wide_metrics

SEED_PATTERN = r"checkpoint_epoch_(?P<epoch>\d+)\.(?:pt|pth|safetensors)"


def find_checkpoint_files(source: Path, patterns: list[re.Pattern[str]]) -> dict[int, Path]:
    """Epoch -> file of the files in ``source`` whose names match ``patterns``; two files for one
    epoch is an error."""
    by_epoch: dict[int, list[Path]] = {}
    for path in source.iterdir():
        epoch = epoch_of_file(path, patterns)
        if epoch is not None and path.is_file():
            by_epoch.setdefault(epoch, []).append(path)
    duplicates = {e: sorted(p.name for p in paths) for e, paths in by_epoch.items() if len(paths) > 1}
    if duplicates:
        listed = "; ".join(f"epoch {e}: {names}" for e, names in sorted(duplicates.items()))
        raise CheckpointImportError(
            f"{source} holds more than one checkpoint for the same epoch ({listed}); keep one file"
            " per epoch (move the others out of the folder) and import again"
        )
    return {epoch: paths[0] for epoch, paths in sorted(by_epoch.items())}


def file_entries(files: dict[int, Path], options: LayoutOptions) -> list[CheckpointEntry]:
    """One entry per checkpoint file, read with ``read_checkpoint`` (weights only, no code run)."""
    return [
        CheckpointEntry(
            index=epoch,
            path=path,
            read=lambda path=path: read_checkpoint(path, options.allow_globals),
            nbytes=path.stat().st_size,
            memory_mapped=path.suffix == ".safetensors" or is_zip_file(path),
        )
        for epoch, path in files.items()
    ]


class SeedLayout:
    """``checkpoint_epoch_<N>.pt`` files in one folder (the seed's training script)."""

    name: ClassVar[str] = "seed"
    looks_for: ClassVar[str] = (
        "checkpoint_epoch_<N>.pt (.pth, .safetensors) files in the folder, with an optional metrics.csv"
        " or metrics.jsonl (one row per epoch)"
    )

    def detect(self, source: Path) -> str | None:
        patterns = compile_patterns(SEED_PATTERN)
        count = sum(1 for p in source.iterdir() if epoch_of_file(p, patterns) is not None)
        return f"{count} checkpoint_epoch_<N> files" if count else None

    def plan(self, source: Path, options: LayoutOptions) -> ImportPlan:
        files = find_checkpoint_files(source, compile_patterns(SEED_PATTERN))
        if not files:
            raise CheckpointImportError(
                f"{source} holds no checkpoints named checkpoint_epoch_<N>.pt (.pth, .safetensors); pass the"
                " folder that holds them"
            )
        return ImportPlan(
            self.name, "epoch", file_entries(files, options),
            metrics=lambda spec, report: read_wide_metrics(source, spec, report),
        )
