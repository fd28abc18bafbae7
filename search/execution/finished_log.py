"""A durable log of finished selections, so a resumed search never evaluates one again.

Tune saves its experiment state every few seconds; a trial that finished after the last save is
run again by ``Tuner.restore``. Each full score is appended here (fsync'd) as it arrives, and a
resumed search loads them into its memo first: such a re-run is answered without evaluating.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray import tune

from search.execution.trainable import MEMO_RECORD

LOG_NAME = "finished.jsonl"


def read_finished(output: Path) -> dict[str, dict[str, Any]]:
    """selection key -> its full-split result, from an earlier run of the same search."""
    path = output / LOG_NAME
    found: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        found[entry["key"]] = entry["result"]
    return found


class FinishedLog(tune.Callback):
    """Appends each finished (fully scored, not memo-answered) selection to ``finished.jsonl``."""

    def __init__(self, output: Path) -> None:
        self.path = output / LOG_NAME

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        record = result.get(MEMO_RECORD)
        if not record or result.get("from_memo"):
            return
        line = json.dumps({"key": result["selection"], "result": record}) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

