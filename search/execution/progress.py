"""One updating line on stderr: trials done, trials per second, best so far and its selection."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ray import tune

from modules.spec.schema import is_better
from search.execution.tune_searcher import is_standby


class ProgressLine(tune.Callback):
    """Tune callback that rewrites one status line as trials end.

    After ``Tuner.restore`` Tune calls the line it pickled at the first start, not a new one:
    ``setup`` (called at every start) resets the clock and counts the trials already done from
    Tune's own list, so the bar goes on from there and the rate is this run's.
    """

    #: Whether the current run shows the line (set by the driver before ``fit``).
    shown: bool | None = None
    #: The line Tune is feeding in this process.
    active: ProgressLine | None = None

    def __init__(self, total: int, mode: str, enabled: bool = True) -> None:
        self.total = total
        self.mode = mode
        self.enabled = enabled and sys.stderr is not None
        self.done = 0
        self.best: float | None = None
        self.best_selection = ""
        self.started = time.perf_counter()
        self.before = 0
        self._tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self._last_print = 0.0
        self._counted = False

    def setup(self, **info: Any) -> None:
        if ProgressLine.shown is not None:
            self.enabled = ProgressLine.shown and sys.stderr is not None
        self.started = time.perf_counter()
        self._tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self._last_print = 0.0
        self._counted = False
        self.before = self.done = 0
        ProgressLine.active = self

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._counted:  # the trials a resumed search had finished
            self._counted = True
            self.done = self.before = sum(
                1 for t in trials if t.status in ("TERMINATED", "ERROR") and not is_standby(t.config)
            )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_standby(trial.config):
            self._count(trial.last_result or {})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not is_standby(trial.config):
            self._count({})

    def _count(self, result: dict[str, Any]) -> None:
        self._counted = True
        self.done += 1
        value = result.get("objective") if result.get("complete") else None
        if value is not None and (self.best is None or is_better(value, self.best, self.mode)):
            self.best = float(value)
            self.best_selection = _short(result.get("selection", ""))
        self._print()

    def _print(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not (final or self._tty or now - self._last_print > 5):
            return
        self._last_print = now
        rate = (self.done - self.before) / max(now - self.started, 1e-9)
        best = f"best {self.best:.5g} {self.best_selection}" if self.best is not None else "no trial finished yet"
        line = f"search: {self.done}/{self.total} trials, {rate:.2f} trials/s, {best}"
        end = "\n" if final or not self._tty else ""
        sys.stderr.write(("\r\x1b[2K" if self._tty else "") + line[:200] + end)
        sys.stderr.flush()

    def close(self) -> None:
        if self.done:
            self._print(final=True)

    @classmethod
    def close_active(cls) -> None:
        """End the line Tune fed (after ``Tuner.restore``, the restored one)."""
        if cls.active is not None:
            cls.active.close()
            cls.active = None


def _short(key: str) -> str:
    """``{"backbone":[44],"heads":[40,42]}`` as ``backbone=44 heads=40-42``."""
    try:
        epochs = json.loads(key)
    except (TypeError, ValueError):
        return ""
    parts = []
    for group, chosen in epochs.items():
        parts.append(f"{group}={chosen[0]}" if len(chosen) == 1 else f"{group}={chosen[0]}..{chosen[-1]}({len(chosen)})")
    return " ".join(parts)
