"""The search folder's append-only logs (``finished.jsonl``, ``proposals.jsonl``, ``answered.jsonl``):
one JSON object per line, appended as trials end, read back whole on resume and at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_entry(path: Path, entry: dict[str, Any], durable: bool) -> None:
    """Append ``entry`` as a line; ``durable``: fsync'd before returning (a resume relies on it)."""
    line = json.dumps(entry).encode("utf-8") + b"\n"
    with open(path, "a+b") as handle:
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":  # a line a kill cut short stays a line of its own
                line = b"\n" + line
        handle.write(line)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every whole entry of the log at ``path`` (none when it does not exist)."""
    entries = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
    return entries
