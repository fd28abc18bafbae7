"""Short, stable digests: of a JSON-able value, and of a run's contents (its manifest's file hashes)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from modules.rundir.run_dir import RunDir


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_key(run: RunDir) -> str:
    """What a run's results depend on: every listed file's sha256 (the manifest's own record)."""
    return digest({e: {g: f.sha256 for g, f in run.epoch_entry(e).files.items()} for e in run.epochs})
