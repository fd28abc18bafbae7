"""What ``auto`` returns: every run's outcome and the summary files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class AutoRun:
    """One run's outcome: ``done``, ``skipped`` (complete from an earlier call) or ``failed``."""

    run: str
    name: str
    status: str
    folder: Path
    record: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class AutoResult:
    """Every run's outcome and the summary files."""

    runs: list[AutoRun]
    output: Path
    seconds: float
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[AutoRun]:
        return [r for r in self.runs if not r.ok]
