"""A durable log of finished selections, so a resumed search never evaluates one again.

Tune saves its experiment state every few seconds; a trial that finished after the last save is
run again by ``Tuner.restore``. Each full score is appended here (fsync'd) as it arrives, and a
resumed search loads them into its memo first: such a re-run is answered without evaluating.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from search.execution.jsonl_log import append_entry, read_entries
from search.execution.trainable import MEMO_RECORD

LOG_NAME = "finished.jsonl"


def read_finished(output: Path) -> dict[str, dict[str, Any]]:
    """selection key -> its full-split result, from an earlier run of the same search."""
    return {entry["key"]: entry["result"] for entry in read_entries(output / LOG_NAME)}


class FinishedLog(tune.Callback):
    """Appends each finished (fully scored, not memo-answered) selection to ``finished.jsonl``."""

    def __init__(self, output: Path) -> None:
        self.path = output / LOG_NAME

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        record = result.get(MEMO_RECORD)
        if not record or result.get("from_memo"):
            return
        append_entry(self.path, {"key": result["selection"], "result": record}, durable=True)

