"""The run directory (format version 1): per-group safetensors per epoch, a manifest, metrics.

Layout::

    RUN/manifest.json                     format version, groups (keys, shapes, dtypes), epochs
    RUN/epochs/<epoch>/<group>.safetensors one file per group per recorded epoch
    RUN/metrics.parquet                    long form: epoch, group, metric, value
    RUN/sweetspot.yaml                     optional copy of the spec the run was recorded with

Every write goes to a temporary name first and is renamed into place, so a crash leaves either
the old state or the new one; a leftover temporary is reported, never used, removed by the next
write of the same epoch (once its writer is gone) or by ``RunDir.clean()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from modules.atomic import pid_alive, stale_temporaries
from modules.errors import RunDirError
from modules.manifest import load_manifest
from modules.run_layout import (
    EPOCHS_DIR,
    FORMAT_VERSION,
    MANIFEST_NAME,
    METRIC_COLUMNS,
    METRICS_NAME,
    PARTIAL_PREFIX,
    PARTIAL_RE,
    SPEC_NAME,
    EpochEntry,
    GroupFile,
    TensorInfo,
    read_metrics,
    sha256_file,
)
from modules.run_writer import RunWriter, sync_tree

__all__ = [
    "EPOCHS_DIR", "FORMAT_VERSION", "MANIFEST_NAME", "METRICS_NAME", "METRIC_COLUMNS", "SPEC_NAME",
    "EpochEntry", "GroupFile", "RunCheck", "RunDir", "RunWriter", "TensorInfo", "read_metrics", "sha256_file", "sync_tree",
]


@dataclass
class RunCheck:
    """What ``RunDir.check`` found: files that fail the manifest, leftovers of interrupted writes,
    and the leftovers it removed (with ``clean=True``)."""

    path: str
    problems: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every listed file matches its sha256 (leftovers do not make a run wrong)."""
        return not self.problems

    def summary(self) -> str:
        """Lines for people."""
        lines = [f"{self.path}: {'all files match the manifest' if self.ok else f'{len(self.problems)} problems'}"]
        lines.extend(f"problem: {p}" for p in self.problems)
        lines.extend(f"removed leftover {p}" for p in self.removed)
        kept = [p for p in self.leftovers if p not in self.removed]
        lines.extend(f"leftover of an interrupted write: {p} (remove with clean)" for p in kept)
        return "\n".join(lines)


def _writer_alive(name: str) -> bool:
    """Whether the process named in a ``.partial-<epoch>-<pid>`` folder name still runs."""
    match = PARTIAL_RE.match(name)
    return bool(match) and pid_alive(int(match["pid"]))


class RunDir:
    """Read access to a run directory; reading one group at one epoch touches nothing else."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_NAME
        if not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} does not exist; record a run or import one first")
        if not manifest_path.is_file():
            raise RunDirError(
                f"{self.path} has no {MANIFEST_NAME}, so it is not a sweetspot run directory; create one"
                " with the Recorder or `sweetspot import --from DIR --spec sweetspot.yaml --out RUN`"
            )
        manifest = load_manifest(manifest_path)
        self.spec_name: str = manifest.spec_name
        self.created_by: str = manifest.created_by
        self._group_infos: dict[str, dict[str, TensorInfo]] = {}
        for group, entry in manifest.groups.items():
            if any(info is None for info in entry.keys.values()):
                raise RunDirError(
                    f"{manifest_path}: group {group!r} has no shapes yet (no epoch was recorded); record an epoch first"
                )
            self._group_infos[group] = {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in entry.keys.items() if v}
        self._epochs: dict[int, EpochEntry] = {
            record.epoch: EpochEntry(
                record.epoch, record.source, {g: GroupFile(f.path, f.sha256, f.nbytes) for g, f in record.files.items()}
            )
            for record in manifest.epochs
        }
        self.incomplete = self._find_incomplete()
        if self.incomplete:
            warnings.warn(
                f"{self.path}: ignoring incomplete epoch folders {self.incomplete} (a write was"
                " interrupted); delete them or run RunDir(...).clean()",
                stacklevel=2,
            )

    def _find_incomplete(self) -> list[str]:
        epochs_dir = self.path / EPOCHS_DIR
        if not epochs_dir.is_dir():
            return []
        found = []
        for child in sorted(epochs_dir.iterdir()):
            if child.name.startswith(PARTIAL_PREFIX):
                found.append(str(child))
            elif child.is_dir() and (not child.name.isdigit() or int(child.name) not in self._epochs):
                found.append(str(child))
        return found
    # -- structure -------------------------------------------------------------------------

    @property
    def epochs(self) -> list[int]:
        """Recorded epochs, ascending."""
        return sorted(self._epochs)

    @property
    def groups(self) -> list[str]:
        """Group names in spec order."""
        return list(self._group_infos)

    def group_keys(self, group: str) -> list[str]:
        """Parameter and buffer names of ``group``."""
        return list(self._infos(group))

    def tensor_infos(self, group: str) -> dict[str, TensorInfo]:
        """Shapes and dtypes of ``group``'s tensors."""
        return dict(self._infos(group))

    def group_nbytes(self, group: str) -> int:
        """Bytes of ``group``'s tensors at one epoch."""
        return sum(info.nbytes for info in self._infos(group).values())

    def epoch_entry(self, epoch: int) -> EpochEntry:
        """Manifest entry of ``epoch``."""
        if epoch not in self._epochs:
            raise RunDirError(f"epoch {epoch} is not recorded in {self.path}; recorded epochs: {self.epochs}")
        return self._epochs[epoch]

    def group_path(self, epoch: int, group: str) -> Path:
        """Absolute path of one group's file at one epoch, checked against the manifest's size."""
        self._infos(group)
        entry = self.epoch_entry(epoch)
        if group not in entry.files:
            raise RunDirError(f"{self.path}: epoch {epoch} has no file for group {group!r}; re-record that epoch")
        record = entry.files[group]
        path = self.path / record.path
        root = self.path.resolve()
        if not path.resolve().is_relative_to(root):
            raise RunDirError(
                f"{path} (listed in {self.path / MANIFEST_NAME}) resolves to {path.resolve()}, outside the run"
                f" directory {root}; a run reads only its own files. Replace the link by the file or re-import the run"
            )
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise RunDirError(
                f"{path} is listed in {self.path / MANIFEST_NAME} but missing; restore it or re-import the run"
            ) from None
        if size != record.nbytes:
            raise RunDirError(
                f"{path} has {size} bytes but the manifest records {record.nbytes}; the file is truncated"
                " or was changed. Restore it or re-import the run"
            )
        return path

    def _infos(self, group: str) -> dict[str, TensorInfo]:
        if group not in self._group_infos:
            raise RunDirError(f"{self.path} has no group {group!r}; its groups are {self.groups}")
        return self._group_infos[group]

    # -- data ------------------------------------------------------------------------------

    def read_group(self, epoch: int, group: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """One group's tensors at one epoch (memory-mapped safetensors; nothing else is read)."""
        path = self.group_path(epoch, group)
        try:
            return load_file(path, device=str(device))
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise RunDirError(f"{path} is not a readable safetensors file ({error}); re-import the run") from None

    def read_tensor(self, epoch: int, group: str, key: str) -> torch.Tensor:
        """One tensor of one group at one epoch."""
        path = self.group_path(epoch, group)
        with safe_open(path, framework="pt") as handle:
            return handle.get_tensor(key)

    def state_dict(self, epoch: int) -> dict[str, torch.Tensor]:
        """The whole model at ``epoch`` (all groups); prefer ``read_group`` for large models."""
        state: dict[str, torch.Tensor] = {}
        for group in self.groups:
            state.update(self.read_group(epoch, group))
        return state

    def metrics(self) -> pd.DataFrame:
        """Recorded metrics in long form (``epoch, group, metric, value``)."""
        return read_metrics(self.path / METRICS_NAME)

    def spec_path(self) -> Path | None:
        """The copy of the spec stored with the run, if any."""
        path = self.path / SPEC_NAME
        return path if path.is_file() else None

    def verify(self, epochs: Iterable[int] | None = None) -> list[str]:
        """Check every listed file's sha256; return the problems found (empty when all is well)."""
        problems = []
        for epoch in self.epochs if epochs is None else epochs:
            for group, record in self.epoch_entry(epoch).files.items():
                try:
                    path = self.group_path(epoch, group)
                except RunDirError as error:
                    problems.append(str(error))
                    continue
                if sha256_file(path) != record.sha256:
                    problems.append(f"{path}: sha256 differs from the manifest; the file was changed or corrupted")
        return problems

    def leftovers(self) -> list[Path]:
        """Leftovers of interrupted writes whose writer is gone: ``epochs/.partial-*`` folders,
        epoch folders the manifest does not list, and our hidden ``.<name>.<pid>-<token>.tmp`` files."""
        found = [Path(p) for p in self.incomplete if not _writer_alive(Path(p).name)]
        for folder in (self.path, self.path / EPOCHS_DIR):
            found.extend(stale_temporaries(folder))
        return sorted(set(found))

    def clean(self) -> list[Path]:
        """Remove ``leftovers()``; return what was removed. Listed files are never touched."""
        removed = []
        for path in self.leftovers():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            if not path.exists():
                removed.append(path)
        self.incomplete = self._find_incomplete()
        return removed

    def check(self, clean: bool = False) -> RunCheck:
        """``verify()`` plus the leftovers of interrupted writes (removed with ``clean=True``)."""
        result = RunCheck(str(self.path), problems=self.verify(), leftovers=[str(p) for p in self.leftovers()])
        if clean:
            result.removed = [str(p) for p in self.clean()]
        return result


