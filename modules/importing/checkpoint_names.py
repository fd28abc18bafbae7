"""The epoch a checkpoint's file name stands for: built-in name patterns and user patterns.

A pattern is a regular expression with a named group ``epoch`` (``r"model_e(?P<epoch>\\d+)\\.pt"``)
or a template with ``{epoch}`` in place of the number (``"epoch_{epoch}.pt"``). A pattern must
match the whole file name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from modules.errors import CheckpointImportError

#: Names recognised without a pattern: sweetspot's seed layout and PyTorch Lightning's default.
DEFAULT_PATTERNS = (
    r"checkpoint_epoch_(?P<epoch>\d+)\.(?:pt|pth|safetensors)",
    r"epoch=(?P<epoch>\d+)(?:-step=\d+)?\.ckpt",
)
#: How the default names are described in messages.
DEFAULT_NAMES = "checkpoint_epoch_<N>.pt (.pth, .safetensors) or Lightning's epoch=<N>-step=<M>.ckpt"


def compile_pattern(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    """A compiled pattern with an ``epoch`` group, from a regex or a ``{epoch}`` template."""
    if isinstance(pattern, re.Pattern):
        compiled = pattern
    elif "{epoch}" in pattern:
        before, _, after = pattern.partition("{epoch}")
        if "{epoch}" in after:
            raise CheckpointImportError(f"pattern {pattern!r} names {{epoch}} twice; name it once")
        compiled = re.compile(re.escape(before) + r"(?P<epoch>\d+)" + re.escape(after))
    else:
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise CheckpointImportError(
                f"pattern {pattern!r} is not a valid regular expression ({error}); fix it or use a"
                " template such as 'epoch_{epoch}.pt'"
            ) from None
    if "epoch" not in compiled.groupindex:
        raise CheckpointImportError(
            f"pattern {compiled.pattern!r} has no 'epoch' group; write (?P<epoch>\\d+) where the number"
            " is, or use a template such as 'epoch_{epoch}.pt'"
        )
    return compiled


def compile_patterns(patterns: str | Sequence[str] | None) -> list[re.Pattern[str]]:
    """The user's patterns compiled, or the defaults when none is given."""
    if patterns is None:
        patterns = DEFAULT_PATTERNS
    elif isinstance(patterns, (str, re.Pattern)):
        patterns = [patterns]
    return [compile_pattern(p) for p in patterns]


def epoch_of_file(
    path: str | os.PathLike[str], patterns: str | Sequence[str] | Sequence[re.Pattern[str]] | None = None
) -> int | None:
    """The epoch in a checkpoint file name matching one of ``patterns`` (default: ``DEFAULT_PATTERNS``);
    None for other names."""
    name = Path(path).name
    for compiled in compile_patterns(patterns):  # type: ignore[arg-type]
        match = compiled.fullmatch(name)
        if match:
            return int(match.group("epoch"))
    return None


def describe_patterns(patterns: str | Sequence[str] | None) -> str:
    """The accepted names, for messages."""
    if patterns is None:
        return DEFAULT_NAMES
    if isinstance(patterns, str):
        patterns = [patterns]
    return " or ".join(repr(p if isinstance(p, str) else p.pattern) for p in patterns)
