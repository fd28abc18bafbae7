"""The protocol every checkpoint layout implements, and what a layout hands the importer.

A layout recognises a folder by its names alone (``detect``, cheap: no checkpoint is opened) and
then plans the import (``plan``): the checkpoints in index order, each with a reader that loads
its weights without running code, the metrics in long form, and notes for the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import pandas as pd

from modules.importing.checkpoint_io import LoadedCheckpoint
from modules.importing.report import ImportReport
from modules.spec.schema import Spec

#: What a run's index counts: epochs (the default) or optimizer steps (a run saved every N steps).
Index = Literal["epoch", "step"]


@dataclass(frozen=True)
class LayoutOptions:
    """What the user said about the source beyond the folder: file-name patterns (the pattern
    layout) and types allowed in pickled extras."""

    pattern: str | tuple[str, ...] | None = None
    allow_globals: tuple[str, ...] = ()


@dataclass
class CheckpointEntry:
    """One checkpoint of the source: its index, a name for messages and how to read its weights."""

    index: int
    path: Path  # the file, or the folder of a checkpoint stored as several files
    read: Callable[[], LoadedCheckpoint]
    nbytes: int
    #: Whether ``read`` maps the file lazily (safetensors, zip .pt): its tensors cost no memory to keep.
    memory_mapped: bool = False


@dataclass
class ImportPlan:
    """What a layout found: checkpoints in index order, how to read the metrics, notes for the report."""

    layout: str
    index: Index
    checkpoints: list[CheckpointEntry]
    #: ``metrics(spec, report)`` -> long-form frame (``epoch, group, metric, value``) or None.
    metrics: Callable[[Spec, ImportReport], pd.DataFrame | None]
    notes: list[str] = field(default_factory=list)


class Layout(Protocol):
    """One layout of checkpoints on disk (one file per layout under ``modules/layouts/``)."""

    #: The name ``--layout`` and ``layout=`` use.
    name: ClassVar[str]
    #: What the layout looks for, for the message of a folder that matches none.
    looks_for: ClassVar[str]

    def detect(self, source: Path) -> str | None:
        """What in ``source`` looks like this layout (a short phrase), or None; reads names only."""
        ...

    def plan(self, source: Path, options: LayoutOptions) -> ImportPlan:
        """The import of ``source``; a ``CheckpointImportError`` naming the file and the fix if it
        cannot be read as this layout."""
        ...


def list_names(paths: Iterable[Path], limit: int = 6) -> str:
    """A few names of ``paths`` for a message: ``['a', 'b', ...] and 3 more``."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in paths)
    shown = repr(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def steps_text(steps: list[int], limit: int = 10) -> str:
    """``[1, 2, 3]`` or ``[1, 2, ..., 9] (12 in all)`` for messages."""
    if len(steps) <= limit:
        return str(steps)
    return f"[{', '.join(map(str, steps[: limit - 1]))}, ..., {steps[-1]}] ({len(steps)} in all)"
