"""``torch.distributed.checkpoint`` runs: one DCP folder (``.metadata`` + ``*.distcp``) per checkpoint,
named by its number (``step-100/``, ``epoch_3/``, ``checkpoint-100/``, ``100/``), read in one
process without a process group (see ``modules.importing.dcp_read``). A folder named ``epoch...`` indexes
the run by epoch, any other by step. Keys are DCP's flattened names (``model.layer.weight`` for
``dcp.save({"model": model.state_dict(), ...})``): ``--strip-prefix model.`` keeps the model's.
DCP stores no metrics: a ``metrics.csv`` / ``metrics.jsonl`` beside the folders (one row per
checkpoint, an ``epoch`` or ``step`` column) is read as in the seed layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from modules.errors import CheckpointImportError
from modules.importing.dcp_read import DATA_SUFFIX, METADATA_NAME, is_dcp_folder, read_dcp
from modules.importing.layouts.base import CheckpointEntry, ImportPlan, LayoutOptions
from modules.importing.wide_metrics import read_wide_metrics

NAME_RE = re.compile(r"(?:(?P<word>[A-Za-z]+)[-_=]?)?(?P<number>\d+)")


def dcp_folders(source: Path) -> dict[Path, re.Match[str] | None]:
    """DCP checkpoint folders directly in ``source`` -> the match of their name (None: no number)."""
    return {
        path: NAME_RE.fullmatch(path.name)
        for path in sorted(source.iterdir())
        if path.is_dir() and not path.name.startswith(".") and is_dcp_folder(path)
    }


class DcpLayout:
    """A folder of ``torch.distributed.checkpoint`` checkpoints, one subfolder each."""

    name: ClassVar[str] = "dcp"
    looks_for: ClassVar[str] = (
        "one subfolder per checkpoint (step-<N>/, epoch_<N>/, <N>/) holding torch.distributed.checkpoint's"
        f" {METADATA_NAME} and *{DATA_SUFFIX} files"
    )

    def detect(self, source: Path) -> str | None:
        if (source / METADATA_NAME).is_file():
            return f"a single DCP checkpoint ({METADATA_NAME} in the folder itself)"
        count = len(dcp_folders(source))
        return f"{count} folders with *{DATA_SUFFIX} files" if count else None

    def plan(self, source: Path, options: LayoutOptions) -> ImportPlan:
        folders = dcp_folders(source)
        if not folders:
            if (source / METADATA_NAME).is_file():
                raise CheckpointImportError(
                    f"{source} is one DCP checkpoint; a run is several: pass the folder that holds one"
                    " subfolder per checkpoint (step-<N>/ or epoch_<N>/)"
                )
            raise CheckpointImportError(
                f"{source} holds no subfolder with {METADATA_NAME} and *{DATA_SUFFIX} files; pass the folder"
                " that holds one DCP checkpoint folder per step or epoch"
            )
        unnamed = [p.name for p, match in folders.items() if match is None]
        if unnamed:
            raise CheckpointImportError(
                f"{source}: DCP folders {unnamed[:5]} have no number in their names; name each by its step or"
                " epoch (step-100/, epoch_3/) and import again"
            )
        words = {(match["word"] or "").lower() for match in folders.values() if match is not None}
        index = "epoch" if words == {"epoch"} else "step"
        if "epoch" in words and len(words) > 1:
            raise CheckpointImportError(
                f"{source} mixes folders named by epoch and by step ({sorted(p.name for p in folders)[:6]});"
                " keep one kind of checkpoint in the folder"
            )
        by_index: dict[int, list[Path]] = {}
        for path, match in folders.items():
            by_index.setdefault(int(match["number"]), []).append(path)  # type: ignore[index]
        repeated = {n: [p.name for p in paths] for n, paths in by_index.items() if len(paths) > 1}
        if repeated:
            raise CheckpointImportError(
                f"{source} holds more than one DCP folder for the same {index} ({repeated}); keep one each"
            )
        entries = [
            CheckpointEntry(
                index=number, path=paths[0], read=lambda folder=paths[0]: read_dcp(folder),
                nbytes=sum(p.stat().st_size for p in paths[0].iterdir() if p.is_file()),
            )
            for number, paths in sorted(by_index.items())
        ]
        return ImportPlan(
            self.name, index, entries, metrics=lambda spec, report: read_wide_metrics(source, spec, report)
        )
