"""A run directory's ``manifest.json``, parsed and validated once (format version 2; version 1,
which has no ``index`` field and counts epochs, is still read).

Every file path it lists must stay inside the run directory: relative, without ``..``; the
reader also checks that the resolved path (symlinks followed) is inside the folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modules.errors import RunDirError
from modules.rundir.safetensors_stream import DTYPE_CODES

FORMAT_VERSION = 2
#: Versions this sweetspot reads: 2 added ``index`` (what the run's epoch numbers count).
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class TensorEntry(_Model):
    shape: list[int]
    dtype: str

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, dtype: str) -> str:
        if dtype not in DTYPE_CODES:
            raise ValueError(f"dtype {dtype!r} is not one sweetspot stores; known: {sorted(DTYPE_CODES)}")
        return dtype


class GroupEntry(_Model):
    #: Key -> shape and dtype; None until the first epoch fixes them (``complete`` False).
    keys: dict[str, TensorEntry | None]
    complete: bool = True


class FileEntry(_Model):
    path: str
    sha256: str
    nbytes: int = Field(alias="bytes", ge=0)

    @field_validator("path")
    @classmethod
    def _inside_run(cls, path: str) -> str:
        pure = PurePosixPath(path)
        if not path or pure.is_absolute() or "\\" in path or ".." in pure.parts:
            raise ValueError(
                f"file path {path!r} leaves the run directory; a manifest lists files inside the run only"
                " (epochs/<epoch>/<group>.safetensors). The manifest was altered: re-import the run"
            )
        return path


class EpochRecord(_Model):
    epoch: int = Field(ge=0, strict=True)
    source: str = ""
    files: dict[str, FileEntry]


class Manifest(_Model):
    format_version: int = Field(strict=True)
    spec_name: str
    created_by: str = ""
    #: What the numbers under ``epochs`` count: epochs, or optimizer steps for a run saved every N steps.
    index: Literal["epoch", "step"] = "epoch"
    groups: dict[str, GroupEntry]
    epochs: list[EpochRecord]

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to disk."""
        return self.model_dump(mode="json", by_alias=True)


def parse_manifest(raw: Any, source: Path | str) -> Manifest:
    """Validate a manifest read from ``source``; any problem is a ``RunDirError`` naming the file and field."""
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise RunDirError(
            f"{source} has format_version {version}, written by a newer sweetspot; this sweetspot reads"
            f" version {FORMAT_VERSION}. Upgrade sweetspot to read this run"
        )
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise RunDirError(
            f"{source} has format_version {version!r}; this sweetspot reads versions {list(READABLE_VERSIONS)}."
            " Upgrade sweetspot or re-import the run"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'manifest'}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()[:5]
        )
        raise RunDirError(f"{source} is malformed ({problems}); re-import or re-record the run") from None


def load_manifest(
    path: Path | str, fix: str = "re-import or re-record the run", read: Callable[[], bytes] | None = None
) -> Manifest:
    """Read and validate ``path`` (with ``read``, its bytes come from there: a run on object storage)."""
    try:
        raw = json.loads((read() if read is not None else Path(path).read_bytes()).decode("utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path} is unreadable ({error}); {fix}") from None
    return parse_manifest(raw, path)
