"""What calibration fits to: a run, the search of it, and scores of selections on the search's basis.

A ``CalibrationCase`` analyses its run's recorded metrics with any thresholds (the pure path: the
weights are read once, for runs without recorded gradients, never per study trial) and scores a
selection on the search part of validation exactly as the search did, answering from the
search's ``trials.parquet`` first and caching what it scores itself.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisWarning
from analysis.pipeline import RunAnalysis, analyze_metrics, groups_without_gradients
from analysis.thresholds import Thresholds
from analysis.weight_health import weight_health
from modules.errors import SweetspotError
from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec, loss_sign
from modules.spec.selection import EpochSet, selection_key
from search.scoring.scorer import SelectionScorer
from search.scoring.validation_cut import cut_validation

TRIALS_NAME = "trials.parquet"
SUMMARY_NAME = "search_summary.json"


class CalibrationError(SweetspotError, ValueError):
    """Calibration cannot run as asked: a search folder, a run or a setting does not fit."""


@dataclass
class SearchRecord:
    """What calibration reads from a search folder: the pick, its scores and every scored trial."""

    folder: Path
    metric: str
    mode: str
    pick: EpochSet
    pick_search: float
    pick_test: float | None
    settings: dict[str, Any]
    #: selection key -> objective on the search part of validation, for every finished trial.
    known: dict[str, float]
    baselines: dict[str, dict[str, Any]]
    #: The search's wall time (None in summaries that do not record it).
    seconds: float | None = None

    @property
    def groups(self) -> list[str]:
        return list(self.pick)


def read_search(folder: str | os.PathLike[str]) -> SearchRecord:
    """Read a ``sweetspot search`` output folder; errors name the missing file and the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"search folder {folder} does not exist; pass the --output folder of `sweetspot search`")
    trials_path, summary_path = folder / TRIALS_NAME, folder / SUMMARY_NAME
    for path in (trials_path, summary_path):
        if not path.is_file():
            raise CalibrationError(
                f"search folder {folder} has no {path.name}; pass the --output folder of a finished"
                " `sweetspot search` (re-run the search if it was interrupted)"
            )
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        trials = pd.read_parquet(trials_path)
        pick = {str(g): [int(e) for e in v] for g, v in summary["pick"]["epochs"].items()}
        metric, mode = summary["objective"]["metric"], summary["objective"]["mode"]
        pick_search = float(summary["pick"]["search"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CalibrationError(
            f"search folder {folder}: {SUMMARY_NAME} or {TRIALS_NAME} is unreadable ({type(error).__name__}: {error});"
            " re-run `sweetspot search` into a new folder"
        ) from None
    known: dict[str, float] = {}
    if not trials.empty and {"status", "selection", "objective"} <= set(trials.columns):
        finished = trials[(trials["status"] == "finished") & trials["objective"].notna()]
        for key, value in zip(finished["selection"], finished["objective"]):
            known.setdefault(str(key), float(value))
    known[selection_key(pick)] = pick_search  # rescored on the whole search part
    return SearchRecord(
        folder, metric, mode, pick, pick_search, summary["pick"].get("test"), dict(summary.get("settings", {})),
        known, dict(summary.get("baselines", {})), summary.get("seconds"),
    )


class CalibrationCase:
    """One run with its search: analyse with thresholds, score selections, measure gaps."""

    def __init__(self, run: RunDir, search: SearchRecord, spec: Spec, label: str | None = None) -> None:
        self.run, self.search, self.spec = run, search, spec
        self.label = label or run.label
        if set(run.groups) != set(search.groups):
            raise CalibrationError(
                f"run {self.label} has groups {run.groups} but its search {search.folder} chose groups"
                f" {search.groups}; pass each run with the search of that run (same order)"
            )
        if spec.objective.metric != search.metric or spec.objective.mode != search.mode:
            raise CalibrationError(
                f"the spec for {self.label} optimises {spec.objective.metric} ({spec.objective.mode}) but the search"
                f" {search.folder} optimised {search.metric} ({search.mode}); pass the spec the search used"
            )
        unknown = {g: v for g, v in search.pick.items() if set(v) - set(run.epochs)}
        if unknown:
            raise CalibrationError(
                f"the search {search.folder} picked epochs {unknown} that run {self.label} does not record"
                f" (its epochs: {run.epochs}); pass each run with the search of that run"
            )
        self.epochs = list(run.epochs)
        self.groups = list(run.groups)
        self.metrics = run.metrics()
        no_grads = groups_without_gradients(self.metrics, self.groups) if not self.metrics.empty else []
        self.proxies = weight_health(run, no_grads, self.epochs) if no_grads else None
        self.val_scores: dict[str, float] = dict(search.known)
        # Test scores all come from this scorer (not the search's evaluate step), so gaps compare like with like.
        self.test_scores: dict[str, float] = {}
        self.scored = 0  # selections this case scored itself (not found in trials.parquet)
        self.scoring_seconds = 0.0
        self._scorer: SelectionScorer | None = None
        self._splits: dict[str, Any] = {}

    # -- analysis ---------------------------------------------------------------------------

    def analyse(self, thresholds: Thresholds, quiet: bool = True) -> RunAnalysis:
        """The analysis with ``thresholds`` from the recorded metrics (no weights read)."""
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore", AnalysisWarning)
            return analyze_metrics(
                self.metrics, np.asarray(self.epochs), self.groups, self.spec, thresholds, self.proxies, self.label
            )

    def selection_of(self, analysis: RunAnalysis) -> EpochSet:
        """group -> recorded epochs averaged, the search's form of the analysis's selection."""
        selection = analysis.selection
        return {g: selection.epochs_for(g, self.epochs) for g in self.groups}

    def mismatches(self, epochs: EpochSet) -> list[str]:
        """Groups whose choice differs from the search's pick."""
        return [g for g in self.groups if sorted(epochs[g]) != sorted(self.search.pick[g])]

    # -- scores -----------------------------------------------------------------------------

    def val_score(self, epochs: EpochSet) -> float:
        """Objective on the search part of validation (from trials.parquet, else scored once)."""
        key = selection_key(epochs)
        if key not in self.val_scores:
            self.val_scores[key] = self._score(epochs, "search")
            self.scored += 1
        return self.val_scores[key]

    def test_score(self, epochs: EpochSet) -> float:
        """Objective on the test split (scored once per selection)."""
        key = selection_key(epochs)
        if key not in self.test_scores:
            self.test_scores[key] = self._score(epochs, "test")
        return self.test_scores[key]

    def gap(self, value: float) -> float:
        """How much worse ``value`` is than the search pick's, relative (0.01 = 1% worse; < 0 = better)."""
        sign = loss_sign(self.search.mode)
        reference = self.search.pick_search
        return sign * (value - reference) / (abs(reference) if reference != 0 else 1.0)

    def test_gap(self, value: float) -> float:
        reference = self.test_score(self.search.pick)
        sign = loss_sign(self.search.mode)
        return sign * (value - reference) / (abs(reference) if reference != 0 else 1.0)

    def _score(self, epochs: EpochSet, split: str) -> float:
        started = time.perf_counter()
        scorer = self._scorer or self._build_scorer()
        scorer.load(epochs)
        value = float(scorer.score(self._splits[split], split)[self.search.metric])
        self.scoring_seconds += time.perf_counter() - started
        return value

    def _build_scorer(self) -> SelectionScorer:
        """The search's scorer, on the same cut of validation, fed from the run directory."""
        settings = self.search.settings
        data = self.spec.load_data()
        for name in ("train", "val", "test"):
            if name not in data:
                raise CalibrationError(f"the data of spec {self.spec.name!r} has no {name!r} split; calibration scores on val and test")
        cut = cut_validation(
            data["val"], data["train"], float(settings.get("confirm_fraction", 0.3)),
            int(settings.get("shards", 4)), int(settings.get("seed", 0)),
        )
        self._splits = {"search": cut.search, "test": data["test"]}
        run = self.run
        batches = self.spec.batch_iterator() if self.spec.batches else None
        self._scorer = SelectionScorer(
            self.spec.build_model(),
            {key: group for group in run.groups for key in run.group_keys(group)},
            lambda group, epoch: run.read_group(epoch, group),
            self.spec.evaluator(),
            self.search.metric,
            (lambda: batches(data["train"])) if batches is not None else None,
            bool(settings.get("update_bn", False)),
            list(settings.get("prefix_modules", ())),
        )
        return self._scorer
