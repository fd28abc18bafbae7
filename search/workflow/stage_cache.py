"""Stages that are skipped when complete: each records, after its outputs are written, a key of
what it was computed from (its inputs, and which making of the earlier stages' outputs it read)
in a state file; a rerun skips a stage whose key is the same and whose outputs exist, redoes the
stages after one that was redone, and tells a stage that was interrupted (killed) that it may go on."""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.atomic import write_json_atomic
from modules.rundir.digest import digest


@dataclass
class Stage:
    """One stage's outcome: ``done`` now or ``skipped`` (complete from an earlier call)."""

    name: str
    status: str
    seconds: float


class Stages:
    """Runs stages in order, skipping complete ones; prints one line per stage."""

    def __init__(self, path: Path, total: int, force: bool, progress: bool) -> None:
        self.path = path
        self.total, self.force, self.progress = total, force, progress
        try:
            self.state: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.state = {}
        self.done: list[Stage] = []

    def recorded(self, name: str) -> dict[str, Any] | None:
        return self.state.get("stages", {}).get(name)

    def run(self, name: str, inputs: dict[str, Any], outputs: Sequence[Path], action: Callable[[bool], None]) -> str:
        """Run ``action(fresh)`` unless ``name`` is complete for ``inputs``; what its outputs are.

        ``fresh`` is False when an earlier call of the same inputs was interrupted in this stage.
        The value returned names these inputs and this making of the outputs: a stage that takes it
        among its inputs is redone whenever this one was (forced, resumed or changed)."""
        key = digest(inputs)
        record = self.recorded(name)
        running = self.state.get("running") or {}
        # A stage an earlier call was killed in may have half-replaced its outputs: never complete.
        complete = (
            record is not None and record.get("key") == key and running.get("stage") != name
            and all(Path(p).exists() for p in outputs)
        )
        step = f"[{len(self.done) + 1}/{self.total}] {name}"
        if complete and not self.force:
            self._say(f"{step}: complete from an earlier run, skipped (--force redoes it)")
            self.done.append(Stage(name, "skipped", 0.0))
            return f"{key}-{record.get('made', '')}"
        interrupted = running == {"stage": name, "key": key}
        self._say(f"{step}: {'resuming' if interrupted and not self.force else 'running'}")
        self._save(running={"stage": name, "key": key})
        started = time.perf_counter()
        action(self.force or not interrupted)
        seconds = time.perf_counter() - started
        made = uuid.uuid4().hex[:12]
        self.state.setdefault("stages", {})[name] = {"key": key, "made": made, "seconds": round(seconds, 2), "outputs": [str(p) for p in outputs]}
        self._save(running=None)
        self._say(f"{step}: done in {seconds:.1f} s")
        self.done.append(Stage(name, "done", seconds))
        return f"{key}-{made}"

    def _save(self, running: dict[str, Any] | None) -> None:
        self.state["running"] = running
        write_json_atomic(self.path, self.state)

    def _say(self, line: str) -> None:
        if self.progress:
            print(f"sweetspot pipeline {line}", file=sys.stderr, flush=True)


def fresh_folder(folder: Path, fresh: bool) -> None:
    """A stage folder of the pipeline's own, emptied when the stage starts over."""
    if fresh and folder.exists():
        shutil.rmtree(folder)
