"""What a search returns: its candidates, every trial as a row, the baselines as scored."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from search.algorithms import GREEDY, SINGLE, Scored, greedy_soup_of
from search.algorithms.space import EpochSet
from search.execution.tune_searcher import FAILED, METRIC, is_standby

#: Significant digits the search prints an objective with (its plots draw no difference below them).
DIGITS = 5


@dataclass
class ScoredSelection:
    """One of the top selections: its scores on the search and confirm parts of validation."""

    epochs: EpochSet
    search_score: float
    confirm_score: float | None = None
    test_score: float | None = None
    origin: str = ""


@dataclass
class SearchResult:
    """What a search found; ``trials`` has a row per trial (finished, stopped early or failed)."""

    objective: str
    mode: str
    trials: pd.DataFrame
    pick: ScoredSelection
    top: list[ScoredSelection]
    baselines: dict[str, ScoredSelection]
    analysis_pick: EpochSet | None
    seconds: float
    pool: list[dict[str, Any]]
    memo: dict[str, int]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    evaluation: Any = None
    #: Trials a resumed search had finished before it was resumed (not run in ``seconds``).
    earlier_trials: int = 0

    @property
    def trials_run(self) -> int:
        """Trials run in ``seconds`` (after ``--resume``: those of the resumed part)."""
        return len(self.trials) - self.earlier_trials

    @property
    def trials_per_second(self) -> float:
        return self.trials_run / self.seconds if self.seconds > 0 else math.nan


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_text(error: BaseException) -> str:
    """What went wrong in a trial, in one line: the last line of Ray's remote traceback (the
    exception's own message), colour codes removed."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


def _trial_id(path: object) -> str:
    """The trial id in a Tune trial folder's name (``crossover_trial_<id>_<n>_...``)."""
    parts = Path(str(path)).name.split("_")
    return parts[2] if len(parts) >= 3 else ""


def _params(path: object) -> dict[str, Any]:
    """A trial's config from the params.json Tune wrote when it started (an errored trial's
    result may carry none)."""
    try:
        return json.loads((Path(str(path)) / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return {}


def trial_rows(results: Any, groups: list[str], proposals: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """A row per Tune trial; ``proposals`` (trial id -> config, from the searcher) fill the config of
    a trial that has none in Tune's results (its node died before it started)."""
    rows = []
    for result in results:
        metrics = dict(result.metrics or {})
        config = dict(result.config or {}) or _params(result.path) or (proposals or {}).get(_trial_id(result.path), {})
        if is_standby(config):
            continue
        epochs = config.get("epochs", {})
        complete = bool(metrics.get("complete"))
        failure = error_text(result.error) if result.error else metrics.get(FAILED)
        status = "failed" if failure else ("finished" if complete else "stopped early")
        row: dict[str, Any] = {
            "trial_id": metrics.get("trial_id") or Path(str(result.path)).name,
            "status": status,
            "origin": config.get("origin"),
            "selection": config.get("key"),
            **{f"choice/{g}": json.dumps(epochs.get(g)) for g in groups},
            "objective": metrics.get(METRIC) if complete else None,
            "partial_objective": metrics.get(METRIC),
            "shards_seen": metrics.get("shard", 0),
            "from_memo": bool(metrics.get("from_memo", False)),
            "groups_copied": metrics.get("groups_copied"),
            "bn_recomputed": metrics.get("bn_recomputed"),
            "bn_reused": metrics.get("bn_reused"),
            "prefix_hits": metrics.get("prefix_hits"),
            "node": metrics.get("node"),
            "gpu_ids": metrics.get("gpu_ids"),
            "seconds": metrics.get("trial_seconds"),
            "eval_seconds": metrics.get("eval_seconds"),
            "finished_at": metrics.get("timestamp"),
            "error": failure or None,
        }
        row.update({k: v for k, v in metrics.items() if k.startswith("val/")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["finished_at", "trial_id"], na_position="last").reset_index(drop=True)
    return frame


def with_answered(trials: pd.DataFrame, answered: list[dict[str, str]]) -> pd.DataFrame:
    """``trials`` plus a row per duplicate answered on the driver: the scoring trial's scores, its
    own origin, from the memo (so a single epoch held behind the analysis pick is still a single epoch)."""
    if trials.empty or not answered:
        return trials
    by_id = trials.set_index("trial_id", drop=False)
    rows = []
    for index, entry in enumerate(answered):
        if entry.get("trial_id") not in by_id.index:
            continue
        row = by_id.loc[entry["trial_id"]].to_dict()
        row.update(trial_id=f"{entry['trial_id']}-answered-{index}", origin=entry.get("origin"), from_memo=True,
                   groups_copied=0, bn_recomputed=0, bn_reused=0, prefix_hits=0, seconds=0.0, eval_seconds=0.0)
        rows.append(row)
    if not rows:
        return trials
    frame = pd.concat([trials, pd.DataFrame(rows)], ignore_index=True)
    return frame.sort_values(["finished_at", "trial_id"], na_position="last").reset_index(drop=True)


def baselines_from(finished: pd.DataFrame, sign: float) -> dict[str, ScoredSelection]:
    """Best single epoch, last epoch, greedy soup and analysis pick, as the search scored them."""
    out: dict[str, ScoredSelection] = {}
    singles = finished[finished["origin"] == SINGLE]
    if not singles.empty:
        best = singles.sort_values("objective", key=lambda s: sign * s).iloc[0]
        out["best single epoch"] = ScoredSelection(json.loads(best.selection), float(best.objective), origin=SINGLE)
    for origin, name in (("last epoch", "last epoch"), ("analysis pick", "analysis pick")):
        rows = finished[finished["origin"] == origin]
        if not rows.empty:
            out[name] = ScoredSelection(json.loads(rows.iloc[0].selection), float(rows.iloc[0].objective), origin=origin)
    scored = [
        Scored(json.loads(row.selection), float(row.objective), str(row.origin))
        for row in finished[finished["origin"].isin([SINGLE, GREEDY])].itertuples()
    ]
    soup = greedy_soup_of(scored, "min" if sign > 0 else "max")
    if soup is not None and finished["origin"].eq(GREEDY).any():
        kept_none = soup.origin == SINGLE and "best single epoch" in out  # the soup is that single epoch
        out["greedy soup"] = out["best single epoch"] if kept_none else ScoredSelection(soup.epochs, soup.value, origin="greedy soup")
    return out
