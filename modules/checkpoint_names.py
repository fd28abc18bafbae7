"""The seed's checkpoint file names: ``checkpoint_epoch_<N>.pt`` (.pth, .safetensors)."""

from __future__ import annotations

import os
import re
from pathlib import Path

CHECKPOINT_RE = re.compile(r"^checkpoint_epoch_(\d+)\.(pt|pth|safetensors)$")


def epoch_of_file(path: str | os.PathLike[str]) -> int | None:
    """The epoch in a ``checkpoint_epoch_<N>.pt`` (.pth, .safetensors) file name; None for other names."""
    match = CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None
