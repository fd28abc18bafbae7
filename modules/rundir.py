"""The run directory (format version 1): per-group safetensors per epoch, a manifest, metrics.

Layout::

    RUN/manifest.json                     format version, groups (keys, shapes, dtypes), epochs
    RUN/epochs/<epoch>/<group>.safetensors one file per group per recorded epoch
    RUN/metrics.parquet                    long form: epoch, group, metric, value
    RUN/sweetspot.yaml                     optional copy of the spec the run was recorded with

Every write goes to a temporary name first and is renamed into place, so a crash leaves either
the old state or the new one; a leftover temporary epoch folder is reported, never used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save_file as safetensors_save_file

from modules.atomic import write_bytes_atomic, write_json_atomic
from modules.errors import RunDirError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
METRICS_NAME = "metrics.parquet"
SPEC_NAME = "sweetspot.yaml"
EPOCHS_DIR = "epochs"
PARTIAL_PREFIX = ".partial-"
METRIC_COLUMNS = ["epoch", "group", "metric", "value"]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one stored tensor."""

    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorInfo:
        return cls(tuple(tensor.shape), dtype_name(tensor.dtype))

    @property
    def nbytes(self) -> int:
        numel = 1
        for size in self.shape:
            numel *= size
        return numel * getattr(torch, self.dtype).itemsize


@dataclass(frozen=True)
class GroupFile:
    """One stored group file: its path relative to the run, sha256 and size."""

    path: str
    sha256: str
    nbytes: int


@dataclass(frozen=True)
class EpochEntry:
    """One recorded epoch: where it came from and its group files."""

    epoch: int
    source: str
    files: dict[str, GroupFile]


def _empty_metrics() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": pd.Series(dtype="int64"),
            "group": pd.Series(dtype="string"),
            "metric": pd.Series(dtype="string"),
            "value": pd.Series(dtype="float64"),
        }
    )


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
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise RunDirError(f"{manifest_path} is unreadable ({error}); re-import or re-record the run") from None
        self._parse_manifest(raw, manifest_path)
        self.incomplete = self._find_incomplete()
        if self.incomplete:
            warnings.warn(
                f"{self.path}: ignoring incomplete epoch folders {self.incomplete} (a write was"
                " interrupted); delete them or re-record those epochs",
                stacklevel=2,
            )

    def _parse_manifest(self, raw: Any, manifest_path: Path) -> None:
        version = raw.get("format_version") if isinstance(raw, dict) else None
        if version != FORMAT_VERSION:
            raise RunDirError(
                f"{manifest_path} has format_version {version!r}; this sweetspot reads version"
                f" {FORMAT_VERSION}. Upgrade sweetspot or re-import the run"
            )
        try:
            self.spec_name: str = raw["spec_name"]
            self._group_infos: dict[str, dict[str, TensorInfo]] = {
                group: {key: TensorInfo(tuple(v["shape"]), v["dtype"]) for key, v in entry["keys"].items()}
                for group, entry in raw["groups"].items()
            }
            self._epochs: dict[int, EpochEntry] = {}
            for entry in raw["epochs"]:
                files = {g: GroupFile(f["path"], f["sha256"], int(f["bytes"])) for g, f in entry["files"].items()}
                self._epochs[int(entry["epoch"])] = EpochEntry(int(entry["epoch"]), entry.get("source", ""), files)
            self.created_by: str = raw.get("created_by", "")
        except (KeyError, TypeError, ValueError) as error:
            raise RunDirError(f"{manifest_path} is malformed (missing or bad field {error}); re-import the run") from None

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


def read_metrics(path: Path) -> pd.DataFrame:
    """A run's ``metrics.parquet`` in long form; empty (with the columns) when there is none."""
    if not path.exists():
        return _empty_metrics()
    try:
        frame = pd.read_parquet(path)
    except Exception as error:
        raise RunDirError(f"{path} is unreadable ({error}); re-record or re-import the metrics") from None
    missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path} lacks columns {missing}; expected {METRIC_COLUMNS}")
    return frame[METRIC_COLUMNS].astype({"epoch": "int64", "value": "float64"})


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage are cloned (safetensors refuses them)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if ident in seen or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        seen.add(ident)
        out[key] = tensor
    return out


#: torch dtype -> safetensors dtype name, for the dtypes written by ``_write_safetensors``.
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
#: safetensors' Dtype enum order, which its writer sorts tensors by (descending).
_SAFETENSORS_DTYPE_RANK = {
    name: rank
    for rank, name in enumerate(
        ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"]
    )
}
#: Bytes copied, hashed and written at a time; a multiple of the O_DIRECT alignment.
_WRITE_CHUNK = 1 << 23
_DIRECT_ALIGN = 4096


class _DirectUnsupported(Exception):
    """The file system refused an O_DIRECT write; the file is written through the page cache instead."""


def _safetensors_header(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[bytes, list[str]]:
    """The safetensors header (length prefix included) and the order the tensors' bytes follow it."""
    # The order safetensors itself uses (its Dtype enum descending, then by name), so the files are
    # byte-identical to its own writer's; the order also keeps every tensor aligned.
    order = sorted(tensors, key=lambda k: (-_SAFETENSORS_DTYPE_RANK[_SAFETENSORS_DTYPES[tensors[k].dtype]], k))
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    offset = 0
    for key in order:
        tensor = tensors[key]
        end = offset + tensor.nbytes
        header[key] = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, order


def _open_for_write(path: Path, direct: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    if direct:
        flags |= os.O_DIRECT
    try:
        return os.open(path, flags, 0o666)
    except OSError as error:
        if direct and error.errno == errno.EINVAL:  # tmpfs and others refuse O_DIRECT at open
            raise _DirectUnsupported from None
        raise


def _write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], direct: bool) -> tuple[str, int]:
    """Write a safetensors file, hashing the bytes as they go out; return (sha256, size).

    The bytes pass through one reused, page-aligned buffer: with ``direct`` the file is opened
    with O_DIRECT, so a large write goes straight to the device instead of filling the page cache
    (the last block is padded and the file truncated back to its size).
    """
    header, order = _safetensors_header(tensors, metadata)
    sources = [memoryview(header)]
    for key in order:
        tensor = tensors[key]
        if tensor.nbytes:
            sources.append(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    size = sum(source.nbytes for source in sources)
    digest = hashlib.sha256()
    fd = _open_for_write(path, direct)
    try:
        with mmap.mmap(-1, _WRITE_CHUNK) as buffer:
            view = memoryview(buffer)
            filled = 0

            def flush(nbytes: int) -> None:
                chunk = view[:nbytes]
                digest.update(chunk)
                if direct and nbytes % _DIRECT_ALIGN:
                    padded = nbytes + (-nbytes % _DIRECT_ALIGN)
                    view[nbytes:padded] = bytes(padded - nbytes)
                    chunk = view[:padded]
                written = 0
                while written < len(chunk):
                    try:
                        written += os.write(fd, chunk[written:])
                    except OSError as error:
                        if direct and error.errno == errno.EINVAL:
                            raise _DirectUnsupported from None
                        raise

            for source in sources:
                start = 0
                while start < source.nbytes:
                    take = min(_WRITE_CHUNK - filled, source.nbytes - start)
                    view[filled : filled + take] = source[start : start + take]
                    filled += take
                    start += take
                    if filled == _WRITE_CHUNK:
                        flush(filled)
                        filled = 0
            if filled:
                flush(filled)
            view.release()
        if direct and size % _DIRECT_ALIGN:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def _write_group_file(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str], durable: bool = True
) -> tuple[str, int]:
    """Write one group's safetensors file (fsynced when ``durable``); return its sha256 and size."""
    tensors = _unshared(tensors)
    if all(t.dtype in _SAFETENSORS_DTYPES for t in tensors.values()):
        try:
            result = _write_safetensors(path, tensors, metadata, direct=_USE_DIRECT)
        except _DirectUnsupported:
            result = _write_safetensors(path, tensors, metadata, direct=False)
        if durable:
            _fsync_path(path)
        return result
    safetensors_save_file(tensors, path, metadata=metadata)  # rarer dtypes: safetensors' own writer
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if durable:
            os.fsync(handle.fileno())
        size = os.fstat(handle.fileno()).st_size
        if size:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                digest.update(view)
    return digest.hexdigest(), size


#: O_DIRECT exists on Linux (and a few others); elsewhere every write goes through the page cache.
_USE_DIRECT = hasattr(os, "O_DIRECT")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        list(pool.map(_fsync_path, files))
    for folder in folders:
        _fsync_path(folder)


class RunWriter:
    """Write access to a run directory: whole epochs atomically, metrics atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_NAME
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise RunDirError(f"{manifest_path} is unreadable ({error}); record the run into a new folder") from None
        self._manifest = manifest
        self._infos: dict[str, dict[str, TensorInfo] | None] = {
            group: (
                {k: TensorInfo(tuple(v["shape"]), v["dtype"]) for k, v in entry["keys"].items()}
                if entry.get("complete")
                else None
            )
            for group, entry in manifest["groups"].items()
        }
        self._group_keys = {group: list(entry["keys"]) for group, entry in manifest["groups"].items()}

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        spec_name: str,
        group_keys: Mapping[str, list[str]],
        created_by: str = "",
        exist_ok: bool = False,
    ) -> RunWriter:
        """Start a new run directory with the given groups (shapes are fixed by the first epoch)."""
        path = Path(path)
        if (path / MANIFEST_NAME).exists():
            if exist_ok:
                return cls(path)
            raise RunDirError(f"{path} already holds a run; choose another --out or delete it first")
        if path.exists() and any(path.iterdir()):
            raise RunDirError(f"{path} exists and is not empty; choose an empty or new folder for the run")
        (path / EPOCHS_DIR).mkdir(parents=True, exist_ok=True)
        if not created_by:
            from modules import __version__

            created_by = f"sweetspot {__version__}"
        manifest = {
            "format_version": FORMAT_VERSION,
            "spec_name": spec_name,
            "created_by": created_by,
            "groups": {g: {"keys": {k: None for k in keys}, "complete": False} for g, keys in group_keys.items()},
            "epochs": [],
        }
        write_json_atomic(path / MANIFEST_NAME, manifest)
        return cls(path)

    @property
    def epochs(self) -> list[int]:
        return sorted(int(e["epoch"]) for e in self._manifest["epochs"])

    def write_epoch(
        self, epoch: int, states: Mapping[str, Mapping[str, torch.Tensor]], source: str = "", durable: bool = True
    ) -> None:
        """Store every group's tensors for ``epoch``; visible only once all groups are on disk.

        With ``durable=False`` nothing is fsynced: for a caller that writes the whole run in a
        folder nobody reads yet and calls ``sync_tree`` once before making it visible (the importer).
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise RunDirError(f"epoch must be a non-negative integer, got {epoch!r}")
        if epoch in self.epochs:
            raise RunDirError(f"{self.path}: epoch {epoch} is already recorded; epochs are written once")
        missing_groups = [g for g in self._group_keys if g not in states]
        extra_groups = [g for g in states if g not in self._group_keys]
        if missing_groups or extra_groups:
            raise RunDirError(
                f"epoch {epoch}: groups missing {missing_groups}, unknown {extra_groups}; every epoch must"
                f" hold exactly the run's groups {list(self._group_keys)}"
            )
        for group, tensors in states.items():
            self._check_group(epoch, group, tensors)
        epochs_dir = self.path / EPOCHS_DIR
        partial = epochs_dir / f"{PARTIAL_PREFIX}{epoch}-{os.getpid()}"
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        files = {}
        # Groups are written in parallel: copying, sha256, write and fsync release the GIL, so one
        # group's hashing overlaps another's writing.
        workers = max(1, min(len(states), os.cpu_count() or 1, 4))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                group: pool.submit(
                    _write_group_file,
                    partial / f"{group}.safetensors",
                    tensors,
                    {"group": group, "epoch": str(epoch)},
                    durable,
                )
                for group, tensors in states.items()
            }
            for group, future in futures.items():
                digest, nbytes = future.result()
                files[group] = {"path": f"{EPOCHS_DIR}/{epoch}/{group}.safetensors", "sha256": digest, "bytes": nbytes}
        os.replace(partial, epochs_dir / str(epoch))
        for group, tensors in states.items():
            if self._infos[group] is None:
                self._infos[group] = {k: TensorInfo.of(t) for k, t in tensors.items()}
                self._manifest["groups"][group] = {
                    "keys": {k: {"shape": list(i.shape), "dtype": i.dtype} for k, i in self._infos[group].items()},
                    "complete": True,
                }
        self._manifest["epochs"].append({"epoch": epoch, "source": source, "files": files})
        self._manifest["epochs"].sort(key=lambda e: int(e["epoch"]))
        if durable:
            write_json_atomic(self.path / MANIFEST_NAME, self._manifest)
        else:
            tmp = self.path / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(self._manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
            os.replace(tmp, self.path / MANIFEST_NAME)

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
        write_bytes_atomic(self.path / METRICS_NAME, frame.to_parquet(index=False))

    def add_metrics(self, rows: Iterable[tuple[int, str, str, float]]) -> None:
        """Add ``(epoch, group, metric, value)`` rows; a later value replaces an earlier one."""
        new = pd.DataFrame(list(rows), columns=METRIC_COLUMNS)
        if new.empty:
            return
        old = read_metrics(self.path / METRICS_NAME)
        merged = pd.concat([old, new.astype(old.dtypes.to_dict())], ignore_index=True)
        merged = merged.drop_duplicates(["epoch", "group", "metric"], keep="last")
        self.write_metrics(merged)

    def write_spec_text(self, text: str) -> None:
        """Store the spec the run was recorded with beside the manifest."""
        write_bytes_atomic(self.path / SPEC_NAME, text.encode("utf-8"))
