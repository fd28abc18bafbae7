"""What ``calibrate`` returns: how the thresholds and the defaults do per run, and the transfer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.thresholds import Thresholds
from search.calibration.calibration_file import Calibration
from search.calibration.cases import EpochSet
from search.calibration.transfer_fit import TransferOutcome


@dataclass
class CaseOutcome:
    """One run under one thresholds setting: its selection, the gaps and the groups that differ."""

    run: str
    selection: EpochSet
    val: float
    val_gap: float
    mismatched: list[str]
    test: float | None = None
    test_gap: float | None = None


@dataclass
class CalibrationResult:
    """The thresholds written, how they and the defaults do per run, and the study's history."""

    thresholds: Thresholds
    defaults: list[CaseOutcome]
    calibrated: list[CaseOutcome]
    search_picks: list[EpochSet]
    history: list[dict[str, Any]]
    seconds: float
    study_seconds: float
    #: Of ``study_seconds``, the time spent scoring selections the searches had not scored.
    scoring_seconds: float
    reproduced: bool
    improved: bool
    output: Path
    notes: list[str] = field(default_factory=list)
    #: Per run, the groups whose search choice some trial's thresholds selected (alone, at least).
    reached: list[set[str]] = field(default_factory=list)
    written: dict[str, Path] = field(default_factory=dict)
    #: The transferable calibration (thresholds and per-group priors), written as calibration.json.
    calibration: Calibration | None = None
    #: Auto with the calibration on each fitted run, and on each run left out of the fit.
    transfer: list[TransferOutcome] = field(default_factory=list)
    transfer_seconds: float = 0.0
    #: Wall time of each search calibrated to (from its summary), for comparison.
    search_seconds: list[float] = field(default_factory=list)
    #: The study's name in ``optuna_storage`` (``sweetspot-calibrate-<id>``), when one was given.
    study_name: str | None = None

    @property
    def mean_val_gap(self) -> float:
        return sum(c.val_gap for c in self.calibrated) / len(self.calibrated)
