"""The run directory (format version 2): per-group safetensors per epoch, a manifest, metrics.

Layout::

    RUN/manifest.json                     format version, index (epoch or step), groups (keys, shapes, dtypes), epochs
    RUN/epochs/<epoch>/<group>.safetensors one file per group per recorded epoch
    RUN/metrics.parquet                    long form: epoch, group, metric, value
    RUN/sweetspot.yaml                     optional copy of the spec the run was recorded with

Every write goes to a temporary name first and is renamed into place, so a crash leaves either
the old state or the new one; a leftover temporary is reported, never used, removed by the next
write of the same epoch (once its writer is gone) or by ``RunDir.clean()``.

A run may also live on object storage or HDFS (``RunDir("s3://bucket/runs/a")``, see
``modules.rundir.store``): each group file is one object, and an epoch exists once the manifest lists it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.atomic import TEMP_RE, pid_alive
from modules.errors import CheckpointImportError, RunDirError
from modules.rundir.manifest import load_manifest
from modules.rundir.names import (
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
from modules.rundir.safetensors_stream import SafetensorsReader, arrays_from_bytes
from modules.rundir.store import RunLocation, RunStore, run_store
from modules.rundir.writer import RunWriter, read_run_metrics, sync_tree

if TYPE_CHECKING:  # imported where used: the search's checkpoint pool reads runs without either
    import pandas as pd
    import torch

__all__ = [
    "EPOCHS_DIR", "FORMAT_VERSION", "MANIFEST_NAME", "METRICS_NAME", "METRIC_COLUMNS", "SPEC_NAME",
    "EpochEntry", "GroupFile", "RunCheck", "RunDir", "RunLocation", "RunStore", "RunWriter", "TensorInfo", "read_metrics",
    "run_store", "sha256_file", "sync_tree",
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


#: (file location, manifest sha256) of every group file this process has checked: each is hashed
#: the first time the process reads it, so a corrupted file of the same size is never used silently.
_VERIFIED: set[tuple[str, str]] = set()
_VERIFIED_LOCK = threading.Lock()


class RunDir:
    """Read access to a run directory; reading one group at one epoch touches nothing else.

    ``path`` is a local folder, a URI (``s3://bucket/runs/a``, ``gs://...``, ``hdfs://...``) or a
    ``(pyarrow FileSystem, root)`` pair; see ``modules.rundir.store``.
    """

    def __init__(self, path: RunLocation) -> None:
        self.store: RunStore = run_store(path)
        where = self.label
        if not self.store.is_dir():
            raise RunDirError(f"run directory {where} does not exist; record a run or import one first")
        if self.store.size(MANIFEST_NAME) is None:
            raise RunDirError(
                f"{where} has no {MANIFEST_NAME}, so it is not a sweetspot run directory; create one"
                " with the Recorder or `sweetspot import --from DIR --spec sweetspot.yaml --out RUN`"
            )
        manifest_path = self.store.where(MANIFEST_NAME)
        manifest = load_manifest(manifest_path, read=lambda: self.store.read_bytes(MANIFEST_NAME))
        self.spec_name: str = manifest.spec_name
        self.created_by: str = manifest.created_by
        #: What the run's epoch numbers count: "epoch", or "step" for a run saved every N steps.
        self.index: str = manifest.index
        self._spec_copy: Path | None = None
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
                f"{where}: ignoring incomplete epoch folders {self.incomplete} (a write was"
                " interrupted); delete them or run RunDir(...).clean()",
                stacklevel=2,
            )

    @property
    def path(self) -> Path:
        """The run's local folder; a run on object storage has none (use ``location``)."""
        if self.store.local_path is None:
            raise RunDirError(
                f"{self.location} is not on this machine's disk, so it has no local path; read it through"
                " RunDir (read_group, open_group, metrics) and name it by RunDir.location"
            )
        return self.store.local_path

    @property
    def location(self) -> str:
        """Where the run lives, for results and provenance: the resolved local folder or the URI."""
        return self.store.location

    @property
    def address(self) -> str:
        """What ``RunDir(...)`` reopens this run from in another process (a Ray worker): the resolved
        local folder, or the URI with its options."""
        if self.store.address is None:
            raise RunDirError(
                f"{self.location} was given as a (FileSystem, root) pair, which another process cannot"
                " reopen; pass the run as a URI (s3://bucket/run?endpoint_override=...) instead"
            )
        return self.store.address

    @property
    def label(self) -> str:
        """How messages name the run: the local folder as given, or the URI."""
        return str(self.store.where())

    @property
    def local_path(self) -> Path | None:
        """The run's local folder, or None for a run on object storage."""
        return self.store.local_path

    @property
    def is_local(self) -> bool:
        return self.store.local_path is not None

    def same_run(self, other: str | os.PathLike[str]) -> bool:
        """Whether ``other`` (a path or URI, e.g. a provenance's ``run_dir``) names this run."""
        if not self.is_local:
            return str(other).rstrip("/") == self.location
        return Path(other).resolve() == self.path.resolve()

    def _find_incomplete(self) -> list[str]:
        self._incomplete = [
            f"{EPOCHS_DIR}/{child.name}"
            for child in self.store.list(EPOCHS_DIR)
            if child.name.startswith(PARTIAL_PREFIX)
            or (child.is_dir and (not child.name.isdigit() or int(child.name) not in self._epochs))
        ]
        return [str(self.store.where(rel)) for rel in self._incomplete]

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
            raise RunDirError(f"epoch {epoch} is not recorded in {self.label}; recorded epochs: {self.epochs}")
        return self._epochs[epoch]

    def group_file(self, epoch: int, group: str) -> str:
        """The run-relative name of one group's file at one epoch, checked against the manifest's size."""
        self._infos(group)
        entry = self.epoch_entry(epoch)
        if group not in entry.files:
            raise RunDirError(f"{self.label}: epoch {epoch} has no file for group {group!r}; re-record that epoch")
        record = entry.files[group]
        where = self.store.where(record.path)
        if self.is_local:  # object stores have no links; a local folder may hold one that points out
            path, root = self.path / record.path, self.path.resolve()
            if not path.resolve().is_relative_to(root):
                raise RunDirError(
                    f"{path} (listed in {self.path / MANIFEST_NAME}) resolves to {path.resolve()}, outside the run"
                    f" directory {root}; a run reads only its own files. Replace the link by the file or re-import the run"
                )
        size = self.store.size(record.path)
        if size is None:
            raise RunDirError(
                f"{where} is listed in {self.store.where(MANIFEST_NAME)} but missing; restore it or re-import the run"
            )
        if size != record.nbytes:
            raise RunDirError(
                f"{where} has {size} bytes but the manifest records {record.nbytes}; the file is truncated"
                " or was changed. Restore it or re-import the run"
            )
        return record.path

    def group_path(self, epoch: int, group: str) -> Path:
        """Absolute path of one group's file at one epoch (a local run only; see ``open_group``)."""
        rel = self.group_file(epoch, group)
        return self.path / rel

    def group_location(self, epoch: int, group: str) -> str:
        """One group's file at one epoch as results name it: a local path or a URI."""
        return str(self.store.where(self.group_file(epoch, group)))

    def _infos(self, group: str) -> dict[str, TensorInfo]:
        if group not in self._group_infos:
            raise RunDirError(f"{self.label} has no group {group!r}; its groups are {self.groups}")
        return self._group_infos[group]

    # -- data ------------------------------------------------------------------------------

    def _check_once(self, epoch: int, group: str, rel: str, data: bytes | None = None) -> None:
        """The group file's sha256 (of ``data`` when its bytes were read already) against the
        manifest, the first time this process reads it."""
        expected = self.epoch_entry(epoch).files[group].sha256
        key = (str(self.store.where(rel)), expected)
        with _VERIFIED_LOCK:
            if key in _VERIFIED:
                return
        actual = hashlib.sha256(data).hexdigest() if data is not None else self.store.sha256(rel)
        if actual != expected:
            raise RunDirError(
                f"{self.store.where(rel)}: sha256 differs from the manifest; the file was changed or corrupted."
                f" Restore it or re-import the run (`sweetspot verify {self.label}` lists every bad file)"
            )
        with _VERIFIED_LOCK:
            _VERIFIED.add(key)

    def read_group(self, epoch: int, group: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """One group's tensors at one epoch (memory-mapped locally, one object read remotely; nothing
        else is read), its file checked against the manifest's sha256 the first time this process reads it."""
        from safetensors.torch import load as load_bytes
        from safetensors.torch import load_file

        rel = self.group_file(epoch, group)
        where = self.store.where(rel)
        if self.is_local:
            self._check_once(epoch, group, rel)
        else:
            data = self.store.read_bytes(rel)  # one read: hashed and loaded from the same bytes
            self._check_once(epoch, group, rel, data)
        try:
            if self.is_local:
                return load_file(where, device=str(device))
            return {k: t.to(device) for k, t in load_bytes(data).items()}
        except RunDirError:
            raise
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise RunDirError(f"{where} is not a readable safetensors file ({error}); re-import the run") from None

    def read_group_arrays(self, epoch: int, group: str) -> dict[str, Any]:
        """``read_group`` as numpy arrays, without torch (bfloat16 as ``(int16 array, "bfloat16")``):
        a local file memory-mapped (the arrays are views of it, in the page cache), a remote one read
        once; hashed and parsed from the same bytes."""
        rel = self.group_file(epoch, group)
        if self.is_local:
            with open(self.path / rel, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        else:
            data = self.store.read_bytes(rel)
        self._check_once(epoch, group, rel, data)
        try:
            return arrays_from_bytes(data, self.store.where(rel))
        except CheckpointImportError as error:
            raise RunDirError(f"{error}; re-import the run") from None

    def open_group(self, epoch: int, group: str) -> SafetensorsReader:
        """One group's file at one epoch for reading tensor by tensor (``get(key)``; close it after)."""
        rel = self.group_file(epoch, group)
        self._check_once(epoch, group, rel)
        if self.is_local:
            return SafetensorsReader(self.path / rel)
        return SafetensorsReader(self.store.where(rel), handle=self.store.open_random(rel))

    def read_tensor(self, epoch: int, group: str, key: str) -> torch.Tensor:
        """One tensor of one group at one epoch."""
        self._check_once(epoch, group, self.group_file(epoch, group))
        if not self.is_local:
            with self.open_group(epoch, group) as reader:
                return reader.get(key)
        from safetensors import safe_open

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
        return read_run_metrics(self.store)

    def spec_path(self) -> Path | None:
        """The copy of the spec stored with the run, if any (of a run on object storage: a local copy)."""
        if self.is_local:
            path = self.path / SPEC_NAME
            return path if path.is_file() else None
        if self._spec_copy is None:
            data = self.store.read_optional(SPEC_NAME)
            if data is None:
                return None
            folder = tempfile.mkdtemp(prefix="sweetspot-spec-")
            weakref.finalize(self, _remove_copy, folder)
            self._spec_copy = Path(folder) / SPEC_NAME
            self._spec_copy.write_bytes(data)
        return self._spec_copy

    def verify(self, epochs: Iterable[int] | None = None) -> list[str]:
        """Check every listed file's sha256; return the problems found (empty when all is well)."""
        problems = []
        for epoch in self.epochs if epochs is None else epochs:
            for group, record in self.epoch_entry(epoch).files.items():
                try:
                    rel = self.group_file(epoch, group)
                except RunDirError as error:
                    problems.append(str(error))
                    continue
                if self.store.sha256(rel) != record.sha256:
                    problems.append(
                        f"{self.store.where(rel)}: sha256 differs from the manifest; the file was changed or corrupted"
                    )
        return problems

    def _leftover_files(self) -> list[str]:
        rels = [rel for rel in self._incomplete if not _writer_alive(rel.rsplit("/", 1)[-1])]
        for folder in ("", EPOCHS_DIR):
            for child in self.store.list(folder):
                match = TEMP_RE.match(child.name)
                if match and not pid_alive(int(match["pid"])):
                    rels.append(f"{folder}/{child.name}" if folder else child.name)
        return sorted(set(rels), key=lambda rel: str(self.store.where(rel)))

    def leftovers(self) -> list[Path | str]:
        """Leftovers of interrupted writes whose writer is gone: ``epochs/.partial-*`` folders,
        epoch folders the manifest does not list, and our hidden ``.<name>.<pid>-<token>.tmp`` files."""
        return [self.store.where(rel) for rel in self._leftover_files()]

    def clean(self) -> list[Path | str]:
        """Remove ``leftovers()``; return what was removed. Listed files are never touched.

        On object storage an epoch being written has no writer to ask about: clean while no one records.
        """
        removed = []
        for rel in self._leftover_files():
            self.store.remove(rel)
            if not self.store.exists(rel):
                removed.append(self.store.where(rel))
        self.incomplete = self._find_incomplete()
        return removed

    def check(self, clean: bool = False) -> RunCheck:
        """``verify()`` plus the leftovers of interrupted writes (removed with ``clean=True``)."""
        result = RunCheck(self.label, problems=self.verify(), leftovers=[str(p) for p in self.leftovers()])
        if clean:
            result.removed = [str(p) for p in self.clean()]
        return result


def _remove_copy(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
