"""Write access to a run directory: whole epochs atomically, metrics atomically (see ``modules.rundir.run_dir``).

On object storage (see ``modules.rundir.store``) each group file is one object written whole (one PUT
is atomic there) and the manifest, written last, is what makes an epoch exist: a writer killed
mid-epoch leaves objects no manifest lists, which readers ignore and ``RunDir.clean`` removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from modules.atomic import fsync_path, pid_alive, temp_name
from modules.errors import RunDirError
from modules.rundir.manifest import (
    EpochRecord,
    FileEntry,
    GroupEntry,
    Manifest,
    TensorEntry,
    load_manifest,
)
from modules.rundir.names import (
    EPOCHS_DIR,
    FORMAT_VERSION,
    MANIFEST_NAME,
    METRIC_COLUMNS,
    METRICS_NAME,
    PARTIAL_PREFIX,
    PARTIAL_RE,
    SPEC_NAME,
    TensorInfo,
    read_metrics,
)
from modules.rundir.safetensors_stream import encode_tensors, save_tensors
from modules.rundir.store import RunLocation, RunStore, run_store

if TYPE_CHECKING:  # imported where used: reading a run (the search's checkpoint pool) needs neither
    import pandas as pd
    import torch


class RunWriter:
    """Write access to a run directory: whole epochs atomically, metrics atomically."""

    def __init__(self, path: RunLocation) -> None:
        self.store = run_store(path)
        self._manifest: Manifest = load_manifest(
            self.store.where(MANIFEST_NAME),
            fix="record the run into a new folder",
            read=lambda: self.store.read_bytes(MANIFEST_NAME),
        )
        self._infos: dict[str, dict[str, TensorInfo] | None] = {
            group: (
                {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in entry.keys.items() if v is not None}
                if entry.complete
                else None
            )
            for group, entry in self._manifest.groups.items()
        }
        self._group_keys = {group: list(entry.keys) for group, entry in self._manifest.groups.items()}

    @classmethod
    def create(
        cls,
        path: RunLocation,
        spec_name: str,
        group_keys: Mapping[str, list[str]],
        created_by: str = "",
        exist_ok: bool = False,
        index: str = "epoch",
    ) -> RunWriter:
        """Start a new run directory with the given groups (shapes are fixed by the first epoch).

        ``index`` says what the run's numbers count: ``"epoch"`` or ``"step"`` (a run saved every N steps)."""
        if index not in ("epoch", "step"):
            raise RunDirError(f"index {index!r} is not one a run counts by; pass 'epoch' or 'step'")
        store = run_store(path)
        if store.exists(MANIFEST_NAME):
            if exist_ok:
                return cls(store)
            raise RunDirError(f"{store.where()} already holds a run; choose another --out or delete it first")
        if store.list():
            raise RunDirError(f"{store.where()} exists and is not empty; choose an empty or new folder for the run")
        store.make_dirs(EPOCHS_DIR)
        if not created_by:
            from modules import __version__

            created_by = f"sweetspot {__version__}"
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            spec_name=spec_name,
            created_by=created_by,
            index=index,
            groups={g: GroupEntry(keys={k: None for k in keys}, complete=False) for g, keys in group_keys.items()},
            epochs=[],
        )
        store.write_atomic(MANIFEST_NAME, _manifest_bytes(manifest))
        return cls(store)

    @property
    def path(self) -> Path:
        """The run's local folder; a run on object storage has none (use ``store.location``)."""
        if self.store.local_path is None:
            raise RunDirError(f"{self.store.location} is not on this machine's disk, so it has no local path")
        return self.store.local_path

    @property
    def epochs(self) -> list[int]:
        return sorted(record.epoch for record in self._manifest.epochs)

    @property
    def index(self) -> str:
        """What the run's numbers count: ``"epoch"`` or ``"step"``."""
        return self._manifest.index

    def write_epoch(
        self, epoch: int, states: Mapping[str, Mapping[str, torch.Tensor]], source: str = "", durable: bool = True
    ) -> None:
        """Store every group's tensors for ``epoch``; visible only once all groups are on disk.

        With ``durable=False`` nothing is fsynced: for a caller that writes the whole run in a
        folder nobody reads yet and calls ``sync_tree`` once before making it visible (the importer).
        On any error the epoch's temporary folder is removed; leftovers of a killed writer of the
        same epoch are removed before writing.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise RunDirError(f"epoch must be a non-negative integer, got {epoch!r}")
        if epoch in self.epochs:
            raise RunDirError(f"{self.store.where()}: epoch {epoch} is already recorded; epochs are written once")
        missing_groups = [g for g in self._group_keys if g not in states]
        extra_groups = [g for g in states if g not in self._group_keys]
        if missing_groups or extra_groups:
            raise RunDirError(
                f"epoch {epoch}: groups missing {missing_groups}, unknown {extra_groups}; every epoch must"
                f" hold exactly the run's groups {list(self._group_keys)}"
            )
        for group, tensors in states.items():
            self._check_group(epoch, group, tensors)
        if self.store.local_path is not None:
            files = self._write_local_epoch(epoch, states, durable)
        else:  # object storage: each group one object; the manifest written below makes the epoch exist
            self.store.remove(f"{EPOCHS_DIR}/{epoch}")  # objects of a writer killed before its manifest write
            files = self._write_objects(epoch, states)
        for group, tensors in states.items():
            if self._infos[group] is None:
                infos = {k: TensorInfo.of(t) for k, t in tensors.items()}
                self._infos[group] = infos
                self._manifest.groups[group] = GroupEntry(
                    keys={k: TensorEntry(shape=list(i.shape), dtype=i.dtype) for k, i in infos.items()}, complete=True
                )
        self._manifest.epochs.append(EpochRecord(epoch=epoch, source=source, files=files))
        self._manifest.epochs.sort(key=lambda record: record.epoch)
        if durable or self.store.local_path is None:
            self.store.write_atomic(MANIFEST_NAME, _manifest_bytes(self._manifest))
        else:
            tmp = self.path / temp_name(MANIFEST_NAME)
            tmp.write_text(json.dumps(self._manifest.to_json(), indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self.path / MANIFEST_NAME)

    def _write_local_epoch(
        self, epoch: int, states: Mapping[str, Mapping[str, torch.Tensor]], durable: bool
    ) -> dict[str, FileEntry]:
        """Write the groups into ``.partial-<epoch>-<pid>`` and rename it to ``epochs/<epoch>``."""
        epochs_dir = self.path / EPOCHS_DIR
        final = epochs_dir / str(epoch)
        self._remove_stale(epoch, final)
        partial = epochs_dir / f"{PARTIAL_PREFIX}{epoch}-{os.getpid()}"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        try:
            files = self._write_groups(partial, epoch, states, durable)
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if durable:
            fsync_path(epochs_dir)
        return files

    def _write_objects(self, epoch: int, states: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, FileEntry]:
        def put(group: str, tensors: Mapping[str, torch.Tensor]) -> FileEntry:
            data = encode_tensors(tensors, {"group": group, "epoch": str(epoch)})
            rel = f"{EPOCHS_DIR}/{epoch}/{group}.safetensors"
            self.store.write_atomic(rel, data)
            return FileEntry(path=rel, sha256=hashlib.sha256(data).hexdigest(), nbytes=len(data))

        workers = max(1, min(len(states), 4))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {group: pool.submit(put, group, tensors) for group, tensors in states.items()}
            return {group: future.result() for group, future in futures.items()}

    def _remove_stale(self, epoch: int, final: Path) -> None:
        """Remove what a killed writer of ``epoch`` left: its ``.partial-<epoch>-<pid>`` folders and an
        epoch folder renamed into place whose manifest entry was never written."""
        epochs_dir = final.parent
        for child in epochs_dir.glob(f"{PARTIAL_PREFIX}{epoch}-*"):
            match = PARTIAL_RE.match(child.name)
            if match and int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
                shutil.rmtree(child, ignore_errors=True)
        if final.exists():  # not in the manifest (checked above): the rename happened, the manifest write did not
            shutil.rmtree(final)

    def _write_groups(
        self, partial: Path, epoch: int, states: Mapping[str, Mapping[str, torch.Tensor]], durable: bool
    ) -> dict[str, FileEntry]:
        # Groups are written in parallel: copying, sha256, write and fsync release the GIL, so one
        # group's hashing overlaps another's writing.
        files = {}
        workers = max(1, min(len(states), os.cpu_count() or 1, 4))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                group: pool.submit(
                    save_tensors, partial / f"{group}.safetensors", tensors, {"group": group, "epoch": str(epoch)}, durable
                )
                for group, tensors in states.items()
            }
            for group, future in futures.items():
                digest, nbytes = future.result()
                files[group] = FileEntry(path=f"{EPOCHS_DIR}/{epoch}/{group}.safetensors", sha256=digest, nbytes=nbytes)
        if durable:
            fsync_path(partial)
        return files

    def _check_group(self, epoch: int, group: str, tensors: Mapping[str, torch.Tensor]) -> None:
        expected = self._group_keys[group]
        missing = [k for k in expected if k not in tensors]
        extra = [k for k in tensors if k not in expected]
        if missing or extra:
            raise RunDirError(
                f"epoch {epoch}, group {group!r}: keys missing {missing[:10]}, unexpected {extra[:10]};"
                " every epoch must hold the same keys"
            )
        infos = self._infos[group]
        if infos is None:
            return
        for key, tensor in tensors.items():
            now = TensorInfo.of(tensor)
            if now != infos[key]:
                raise RunDirError(
                    f"epoch {epoch}, key {key!r}: shape {list(now.shape)} dtype {now.dtype} differs from the"
                    f" run's {list(infos[key].shape)} {infos[key].dtype}; every epoch must keep shapes and dtypes"
                )

    def write_metrics(self, frame: pd.DataFrame) -> None:
        """Replace metrics.parquet atomically with ``frame`` (long form)."""
        frame = frame[METRIC_COLUMNS].astype({"epoch": "int64", "group": "string", "metric": "string", "value": "float64"})
        frame = frame.sort_values(["epoch", "group", "metric"], kind="stable").reset_index(drop=True)
        self.store.write_atomic(METRICS_NAME, frame.to_parquet(index=False))

    def add_metrics(self, rows: Iterable[tuple[int, str, str, float]]) -> None:
        """Add ``(epoch, group, metric, value)`` rows; a later value replaces an earlier one."""
        import pandas as pd

        new = pd.DataFrame(list(rows), columns=METRIC_COLUMNS)
        if new.empty:
            return
        old = read_run_metrics(self.store)
        merged = pd.concat([old, new.astype(old.dtypes.to_dict())], ignore_index=True)
        merged = merged.drop_duplicates(["epoch", "group", "metric"], keep="last")
        self.write_metrics(merged)

    def write_spec_text(self, text: str) -> None:
        """Store the spec the run was recorded with beside the manifest."""
        self.store.write_atomic(SPEC_NAME, text.encode("utf-8"))


def read_run_metrics(store: RunStore) -> pd.DataFrame:
    """The run's metrics.parquet in long form, read through its store."""
    return read_metrics(store.where(METRICS_NAME), lambda: store.read_optional(METRICS_NAME))


def _manifest_bytes(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n").encode("utf-8")


def sync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``root`` (and ``root``), making a tree written without fsync durable."""
    root = Path(root)
    paths = [root]
    for folder, dirnames, filenames in os.walk(root):
        paths.extend(Path(folder, name) for name in dirnames + filenames)
    # Files first, then folders deepest first, so each folder's entries are on disk before it.
    files = [p for p in paths if p.is_file()]
    folders = sorted((p for p in paths if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    workers = max(1, min(len(files), 8))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fsync_path, files))
    for folder in folders:
        fsync_path(folder)
