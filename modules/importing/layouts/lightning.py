"""PyTorch Lightning's layout: ``lightning_logs/version_<n>/checkpoints/epoch=<e>-step=<s>.ckpt``.

The source is the checkpoints folder or any folder above it (``version_<n>``, ``lightning_logs``,
the ``default_root_dir``). ``last.ckpt`` is skipped (it repeats the newest epoch). The weights sit
under the checkpoint's ``state_dict``, named by the LightningModule's attributes (``model.``
prefixes; ``--strip-prefix model.`` removes one). Epochs keep Lightning's numbering (``epoch=0``
is the first), as in its file names and in the CSVLogger's ``metrics.csv`` beside the checkpoints
folder, which gives each checkpoint the last value of every logged column up to it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import ClassVar

import pandas as pd

from modules.errors import CheckpointImportError
from modules.importing.checkpoint_io import is_zip_file, read_checkpoint
from modules.importing.layouts.base import CheckpointEntry, ImportPlan, LayoutOptions
from modules.importing.layouts.logged_metrics import metrics_at_checkpoints
from modules.importing.report import ImportReport
from modules.spec.schema import Spec

#: ``epoch=3-step=400.ckpt``, also with ModelCheckpoint's extra fields (``-val_loss=0.32``) or ``-v1``.
NAME_RE = re.compile(r"epoch=(?P<epoch>\d+)(?:-step=(?P<step>\d+))?(?:-[^/]*)?\.ckpt")
METRICS_NAME = "metrics.csv"
#: How deep below the source a checkpoints folder is looked for (root/lightning_logs/version_0/checkpoints).
MAX_DEPTH = 3


def _has_checkpoints(folder: Path) -> bool:
    return any(NAME_RE.fullmatch(p.name) for p in folder.iterdir() if p.is_file())


def checkpoint_folders(source: Path) -> list[Path]:
    """Folders at or below ``source`` (at most ``MAX_DEPTH`` levels) holding ``epoch=<e>...ckpt`` files."""
    found, level = [], [source]
    for _ in range(MAX_DEPTH + 1):
        below = []
        for folder in level:
            if _has_checkpoints(folder):
                found.append(folder)
            below.extend(sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
        level = below
    return found


class LightningLayout:
    """``epoch=<e>-step=<s>.ckpt`` files of Lightning's ``ModelCheckpoint`` and its CSVLogger metrics."""

    name: ClassVar[str] = "lightning"
    looks_for: ClassVar[str] = (
        "epoch=<e>-step=<s>.ckpt files in the folder or in lightning_logs/version_<n>/checkpoints/ below it"
        " (last.ckpt skipped), metrics from the CSVLogger's metrics.csv"
    )

    def detect(self, source: Path) -> str | None:
        folders = checkpoint_folders(source)
        if not folders:
            return None
        where = ", ".join(str(f.relative_to(source)) or "." for f in folders[:3])
        return f"epoch=<e>-step=<s>.ckpt files in {where}"

    def plan(self, source: Path, options: LayoutOptions) -> ImportPlan:
        folders = checkpoint_folders(source)
        if not folders:
            raise CheckpointImportError(
                f"{source} holds no epoch=<e>-step=<s>.ckpt files, nor a lightning_logs/version_<n>/checkpoints/"
                " folder below it; pass the folder of the Lightning run"
            )
        if len(folders) > 1:
            raise CheckpointImportError(
                f"{source} holds {len(folders)} Lightning checkpoint folders {[str(f) for f in folders[:5]]}"
                " (one per run version); import one at a time: pass one of them as --from"
            )
        folder = folders[0]
        files = {}
        for path in folder.iterdir():
            match = NAME_RE.fullmatch(path.name)
            if match and path.is_file():
                step = int(match["step"]) if match["step"] is not None else None
                files[path] = (int(match["epoch"]), step)
        epochs = [epoch for epoch, _ in files.values()]
        if len(set(epochs)) == len(epochs):
            index = "epoch"
            by_index = {epoch: (path, epoch) for path, (epoch, _) in files.items()}
        elif all(step is not None for _, step in files.values()):
            index = "step"
            by_index = {step: (path, step) for path, (_, step) in files.items()}
        else:
            repeated = sorted({e for e in epochs if epochs.count(e) > 1})
            raise CheckpointImportError(
                f"{folder} holds several checkpoints for epochs {repeated} and their names give no step;"
                " keep one per epoch, or name them with {epoch}-{step} and import again"
            )
        entries = [
            CheckpointEntry(
                index=idx, path=path, read=lambda path=path: read_checkpoint(path, options.allow_globals),
                nbytes=path.stat().st_size, memory_mapped=is_zip_file(path),
            )
            for idx, (path, _) in sorted(by_index.items())
        ]
        csv = next((p / METRICS_NAME for p in (folder.parent, folder) if (p / METRICS_NAME).is_file()), None)
        positions = {idx: float(at) for idx, (_, at) in by_index.items()}

        def metrics(spec: Spec, report: ImportReport) -> pd.DataFrame | None:
            return None if csv is None else _read_metrics(csv, index, positions, spec, report)

        notes = [] if csv is not None else [
            f"metrics: none; no {METRICS_NAME} beside {folder} (Lightning's CSVLogger writes one): imported the weights"
            " without metrics; train with CSVLogger, or record with sweetspot.integrations.lightning.SweetspotCallback"
        ]
        return ImportPlan(self.name, index, entries, metrics, notes)


def _read_metrics(
    csv: Path, index: str, positions: dict[int, float], spec: Spec, report: ImportReport
) -> pd.DataFrame:
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CheckpointImportError(f"{csv} is not a readable CSV ({str(error).splitlines()[0]}); fix or remove it") from None
    where = "epoch" if index == "epoch" else "step"
    if where not in frame.columns:
        raise CheckpointImportError(
            f"{csv} has no {where!r} column (columns: {list(frame.columns)[:10]}); it is not a CSVLogger"
            " metrics file of this run: remove it or log with Lightning's CSVLogger"
        )
    entries = []
    for number, row in enumerate(frame.to_dict("records"), start=2):
        try:
            at = float(row[where])
        except ValueError:
            at = math.nan
        if not math.isfinite(at):
            raise CheckpointImportError(f"{csv} line {number}: {where} {row[where]!r} is not a number; fix the file")
        # A step's values are logged before the optimizer step that makes the checkpoint's step.
        entries.append((at if index == "epoch" else at + 1, row))
    return metrics_at_checkpoints(entries, positions, spec, str(csv), report, skip=("epoch", "step"))
