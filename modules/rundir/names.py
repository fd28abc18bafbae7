"""Names and small types shared by the run directory's reader and writer (see ``modules.rundir.run_dir``)."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modules.errors import RunDirError
from modules.rundir.manifest import FORMAT_VERSION, MANIFEST_NAME
from modules.rundir.safetensors_stream import dtype_name, nbytes_of

if TYPE_CHECKING:  # imported where used: reading a run (the search's checkpoint pool) needs neither
    import pandas as pd
    import torch

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME"]

METRICS_NAME = "metrics.parquet"
SPEC_NAME = "sweetspot.yaml"
EPOCHS_DIR = "epochs"
PARTIAL_PREFIX = ".partial-"
#: ``.partial-<epoch>-<pid>``: an epoch folder being written by process ``pid``.
PARTIAL_RE = re.compile(r"^\.partial-(?P<epoch>\d+)-(?P<pid>\d+)$")
METRIC_COLUMNS = ["epoch", "group", "metric", "value"]


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
        return nbytes_of(self.shape, self.dtype)


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
    import pandas as pd

    return pd.DataFrame(
        {
            "epoch": pd.Series(dtype="int64"),
            "group": pd.Series(dtype="string"),
            "metric": pd.Series(dtype="string"),
            "value": pd.Series(dtype="float64"),
        }
    )


def read_metrics(path: Path | str, read: Callable[[], bytes] | None = None) -> pd.DataFrame:
    """A run's ``metrics.parquet`` in long form; empty (with the columns) when there is none.

    With ``read`` the file's bytes come from there (a run on object storage), None when it is missing.
    """
    import pandas as pd

    data = read() if read is not None else None
    if (read is None and not Path(path).exists()) or (read is not None and data is None):
        return _empty_metrics()
    try:
        frame = pd.read_parquet(path if data is None else io.BytesIO(data))
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




