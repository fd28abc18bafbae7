"""What went into a combined file: stored in its safetensors header, or beside a ``.pt`` file."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from modules import __version__
from modules.combine.plan import CombinePlan
from modules.errors import CombineError
from modules.rundir.names import sha256_file
from modules.rundir.safetensors_stream import read_header

PROVENANCE_KEY = "sweetspot_provenance"
SIDECAR_SUFFIX = ".provenance.json"


def provenance_of(plan: CombinePlan, fmt: str | None, update_bn: bool) -> dict[str, Any]:
    """The choice, each source file's sha256 and the version; ``fmt`` None for a model kept in memory."""
    return {
        "sweetspot_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(plan.run_dir) if plan.run_dir else None,
        "selection": plan.choices,
        "sources": {
            g.group: [{"path": str(s.path), "epoch": s.epoch, "sha256": s.sha256} for s in g.sources]
            for g in plan.groups
        },
        "update_bn": update_bn,
        "format": fmt,
    }


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """Where a ``.pt`` output's provenance lives."""
    return Path(f"{output}{SIDECAR_SUFFIX}")


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 a ``.pt`` output's sidecar records, to tell its own file from a later one."""
    return sha256_file(path)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Provenance of a combined file (safetensors header or ``.pt`` sidecar); None when absent.

    A sidecar that records another file's sha256 (the ``.pt`` was replaced after it was written,
    e.g. a combine killed between the two writes) is stale: an error says so.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        _, metadata, _ = read_header(path)
        text = metadata.get(PROVENANCE_KEY)
    else:
        sidecar = sidecar_path(path)
        text = sidecar.read_text(encoding="utf-8") if sidecar.is_file() else None
    if text is None:
        return None
    try:
        provenance = json.loads(text)
    except json.JSONDecodeError:
        raise CombineError(f"{path}: its provenance is not valid JSON; re-create the combined file") from None
    recorded = provenance.get("sha256") if isinstance(provenance, dict) else None
    if path.suffix != ".safetensors" and (recorded is None or recorded != sha256_file(path)):
        why = "records no sha256 (written by an older sweetspot)" if recorded is None else "records another file's sha256"
        raise CombineError(
            f"{sidecar_path(path)} is stale provenance: it {why}, so it may describe an earlier {path.name}"
            " (e.g. a combine killed between writing the model and its provenance). Re-create the combined"
            f" file with `sweetspot combine`, or delete {sidecar_path(path).name} to use {path.name} without provenance"
        )
    return provenance
