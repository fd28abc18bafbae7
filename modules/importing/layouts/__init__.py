"""The registry of checkpoint layouts the importer reads: every layout in one place.

A folder is matched against every registered layout by its names alone; exactly one must match
(``--layout NAME`` / ``layout=`` says which when several do). To add a layout, write one file
with a class that follows ``modules.importing.layouts.base.Layout`` and add an instance here; the
conformance suite (``tests/modules/layouts/``) runs over every entry.
"""

from __future__ import annotations

from pathlib import Path

from modules.errors import CheckpointImportError
from modules.importing.layouts.base import (
    CheckpointEntry,
    ImportPlan,
    Index,
    Layout,
    LayoutOptions,
    list_names,
)
from modules.importing.layouts.dcp import DcpLayout
from modules.importing.layouts.hf_trainer import OUT_OF_SCOPE, HfTrainerLayout
from modules.importing.layouts.lightning import LightningLayout
from modules.importing.layouts.pattern import PatternLayout
from modules.importing.layouts.seed import SeedLayout

#: Registered layouts by name, in the order a folder is described to the user.
LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (SeedLayout(), HfTrainerLayout(), LightningLayout(), DcpLayout(), PatternLayout())
}


def get_layout(name: str) -> Layout:
    """The registered layout called ``name``."""
    if name not in LAYOUTS:
        raise CheckpointImportError(f"--layout {name!r} is not a layout sweetspot reads; choose one of {list(LAYOUTS)}")
    return LAYOUTS[name]


def detect_layouts(source: Path) -> dict[str, str]:
    """Layout name -> what in ``source`` matched it, for every layout that matches."""
    found = {}
    for name, layout in LAYOUTS.items():
        what = layout.detect(source)
        if what is not None:
            found[name] = what
    return found


def choose_layout(source: Path, layout: str | None, pattern: object = None) -> Layout:
    """The layout to read ``source`` with: the one named, the pattern layout when a pattern is
    given, else the one layout that matches the folder (none or several is an error saying what
    was looked for and what was found)."""
    if layout is not None:
        return get_layout(layout)
    if pattern is not None:
        return LAYOUTS[PatternLayout.name]
    found = detect_layouts(source)
    if len(found) == 1:
        return LAYOUTS[next(iter(found))]
    if found:
        listed = "; ".join(f"{name}: {what}" for name, what in found.items())
        raise CheckpointImportError(
            f"{source} mixes checkpoint layouts ({listed}); keep one run per folder, or say which to read"
            f" with --layout ({' or '.join(found)}; layout= in the API)"
        )
    raise CheckpointImportError(no_layout_message(source))


def no_layout_message(source: Path) -> str:
    """What each layout looks for and what ``source`` holds, for a folder that matches none."""
    entries = list(source.iterdir())
    files = [p for p in entries if p.is_file()]
    folders = [p for p in entries if p.is_dir()]
    held = []
    if files:
        held.append(f"files {list_names(files)}")
    if folders:
        held.append(f"folders {list_names(folders)}")
    looked = "\n".join(f"  {name}: {layout.looks_for}" for name, layout in LAYOUTS.items())
    return (
        f"{source} holds no checkpoints in a layout sweetspot reads. It looked for:\n{looked}\n"
        f"It found {' and '.join(held) if held else 'an empty folder'}. For other file names pass --pattern"
        " (pattern= in the API), e.g. 'epoch_{epoch}.pt'. " + OUT_OF_SCOPE
    )


__all__ = [
    "LAYOUTS", "CheckpointEntry", "ImportPlan", "Index", "Layout", "LayoutOptions", "choose_layout", "detect_layouts",
    "get_layout", "no_layout_message",
]
