"""Checkpoint files named by the user's pattern (``--pattern 'epoch_{epoch}.pt'`` or a regex with an
``epoch`` group), one per epoch in one folder, with the seed layout's optional wide metrics file."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from modules.errors import CheckpointImportError
from modules.importing.checkpoint_names import compile_patterns, describe_patterns
from modules.importing.layouts.base import ImportPlan, LayoutOptions, list_names
from modules.importing.layouts.seed import file_entries, find_checkpoint_files
from modules.importing.wide_metrics import read_wide_metrics


class PatternLayout:
    """Files whose names match ``--pattern``; used only when a pattern is given."""

    name: ClassVar[str] = "pattern"
    looks_for: ClassVar[str] = (
        "files matching --pattern (a template such as 'epoch_{epoch}.pt' or a regex with an epoch group"
        " such as 'model_e(?P<epoch>\\d+)\\.safetensors'); only with --pattern"
    )

    def detect(self, source: Path) -> str | None:
        return None  # a pattern is the user's word, never a guess from the folder

    def plan(self, source: Path, options: LayoutOptions) -> ImportPlan:
        if options.pattern is None:
            raise CheckpointImportError(
                "--layout pattern needs --pattern (pattern= in the API): a template such as 'epoch_{epoch}.pt'"
                " or a regex with an epoch group"
            )
        files = find_checkpoint_files(source, compile_patterns(options.pattern))
        if not files:
            found = [p for p in source.iterdir() if p.is_file()]
            shown = f"; its files include {list_names(found)}" if found else "; it holds no files"
            raise CheckpointImportError(
                f"{source} holds no checkpoints named {describe_patterns(options.pattern)}{shown}. The pattern"
                " must match the whole file name: a template such as 'epoch_{epoch}.pt' or a regex with an"
                " epoch group such as 'model_e(?P<epoch>\\d+)\\.safetensors'"
            )
        return ImportPlan(
            self.name, "epoch", file_entries(files, options),
            metrics=lambda spec, report: read_wide_metrics(source, spec, report),
        )
