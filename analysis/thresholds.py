"""``thresholds.json``: the automatic selector's five settings (the seed's phase 4.2 shape).

Scales: ``plateau_variance`` and ``improvement_rate`` apply to a group's *goodness* curve, the
mean of its judging metrics each min-max normalised to [0, 1] over the run (1 = best; a
warm-up value beyond Tukey's far-out fence scores 0 and does not set the scale), so they are
unit-free. ``improvement_rate`` is per epoch (not per checkpoint); ``stability_window``
counts recorded checkpoints.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from analysis.errors import AnalysisError
from modules.atomic import write_json_atomic

WEIGHT_KEYS = ("loss", "task", "stability", "gradient")
THRESHOLD_KEYS = (
    "plateau_variance",
    "improvement_rate",
    "stability_window",
    "mcda_weights",
    "voting_confidence",
)
#: Mann-Kendall needs at least 3 points; with 5 a perfect trend reaches p < 0.05.
MIN_WINDOW = 3
WEIGHT_TOLERANCE = 1e-6


class McdaWeights(BaseModel):
    """Weights of the MCDA criteria; the seed's phase 2 defaults 0.30 / 0.40 / 0.15 / 0.15."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    loss: float = Field(default=0.30, ge=0)
    task: float = Field(default=0.40, ge=0)
    stability: float = Field(default=0.15, ge=0)
    gradient: float = Field(default=0.15, ge=0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> McdaWeights:
        total = self.loss + self.task + self.stability + self.gradient
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"mcda_weights sum to {total:.6g}; they must sum to 1 (within 1e-6)")
        return self


class Thresholds(BaseModel):
    """Settings of the automatic sweet-spot selector (see the module docstring for scales)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Variance of the normalised goodness inside a plateau window: 0.01 is a standard
    # deviation of 10% of the run's range, loose enough for validation noise, tight enough
    # to reject a window that still climbs (the seed's calibrated example uses 0.012).
    plateau_variance: float = Field(default=0.01, ge=0)
    # |Sen's slope| of the goodness per epoch: 0.01 means under 1% of the run's range per
    # epoch, i.e. under 8% across a 5-checkpoint window spaced 2 epochs (seed example 0.008).
    improvement_rate: float = Field(default=0.01, ge=0)
    # Checkpoints per window: 5 is the seed's value and the smallest window in which a
    # Mann-Kendall test can find a trend at p < 0.05.
    stability_window: int = Field(default=5, ge=MIN_WINDOW)
    mcda_weights: McdaWeights = Field(default_factory=McdaWeights)
    # Winning share of the confidence-weighted vote below which the ensemble averages the
    # plateau instead: 0.5 = a confidence-weighted majority (the seed's calibrated example 0.75).
    voting_confidence: float = Field(default=0.5, ge=0, le=1)

    def check_run(self, n_checkpoints: int, source: str = "thresholds") -> None:
        """Raise when ``stability_window`` is larger than the run's number of checkpoints."""
        if self.stability_window > n_checkpoints:
            raise AnalysisError(
                f"{source}: stability_window {self.stability_window} is larger than the run"
                f" ({n_checkpoints} checkpoints); set it to at most {n_checkpoints}"
            )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def threshold_problems(data: Any, n_checkpoints: int | None = None) -> list[str]:
    """Every problem with a thresholds mapping, one sentence each (empty when it is valid)."""
    if not isinstance(data, dict):
        return [f"the top level must be a JSON object with keys {list(THRESHOLD_KEYS)}, got {type(data).__name__}"]
    problems = [f"unknown key {k!r}; allowed keys are {list(THRESHOLD_KEYS)}" for k in data if k not in THRESHOLD_KEYS]
    problems += [f"missing key {k!r}" for k in THRESHOLD_KEYS if k not in data]
    for key in ("plateau_variance", "improvement_rate", "voting_confidence"):
        if key in data:
            problems += _number_problems(key, data[key])
    if "voting_confidence" in data and _is_number(data["voting_confidence"]) and data["voting_confidence"] > 1:
        problems.append(f"voting_confidence is {data['voting_confidence']}; it is a share, set it within [0, 1]")
    if "stability_window" in data:
        window = data["stability_window"]
        if isinstance(window, bool) or not isinstance(window, int):
            problems.append(f"stability_window is {window!r}; it must be a whole number of checkpoints")
        elif window < MIN_WINDOW:
            problems.append(
                f"stability_window is {window}; it must be at least {MIN_WINDOW} checkpoints"
                " (a trend test needs 3 points)"
            )
        elif n_checkpoints is not None and window > n_checkpoints:
            problems.append(
                f"stability_window {window} is larger than the run ({n_checkpoints} checkpoints);"
                f" set it to at most {n_checkpoints}"
            )
    if "mcda_weights" in data:
        problems += _weight_problems(data["mcda_weights"])
    return problems


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _number_problems(key: str, value: Any) -> list[str]:
    if not _is_number(value) or not math.isfinite(value):
        return [f"{key} is {value!r}; it must be a finite number"]
    if value < 0:
        return [f"{key} is {value}; it must not be negative"]
    return []


def _weight_problems(weights: Any) -> list[str]:
    if not isinstance(weights, dict):
        return [f"mcda_weights must be an object with keys {list(WEIGHT_KEYS)}, got {weights!r}"]
    problems = [
        f"unknown key 'mcda_weights.{k}'; allowed keys are {list(WEIGHT_KEYS)}" for k in weights if k not in WEIGHT_KEYS
    ]
    problems += [f"missing key 'mcda_weights.{k}'" for k in WEIGHT_KEYS if k not in weights]
    numbers_ok = True
    for key in WEIGHT_KEYS:
        if key in weights:
            found = _number_problems(f"mcda_weights.{key}", weights[key])
            numbers_ok = numbers_ok and not found
            problems += found
    if numbers_ok and all(k in weights for k in WEIGHT_KEYS):
        total = sum(float(weights[k]) for k in WEIGHT_KEYS)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            problems.append(f"mcda_weights sum to {total:.6g}; make them sum to 1 (within 1e-6)")
    return problems


def parse_thresholds(data: Any, source: str = "<thresholds>", n_checkpoints: int | None = None) -> Thresholds:
    """Validate a thresholds mapping; every problem is listed in one AnalysisError naming ``source``."""
    problems = threshold_problems(data, n_checkpoints)
    if problems:
        raise AnalysisError(
            f"{source} is not a valid thresholds file ({len(problems)} problem"
            f"{'s' if len(problems) > 1 else ''}):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return Thresholds.model_validate(data)


def load_thresholds(path: str | os.PathLike[str], n_checkpoints: int | None = None) -> Thresholds:
    """Read and validate ``thresholds.json``; ``n_checkpoints`` also bounds ``stability_window``."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"{path} does not exist; pass an existing thresholds file or none", param="thresholds")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise AnalysisError(f"{path} is not readable JSON ({error}); fix the file or pass none", param="thresholds") from None
    return parse_thresholds(data, str(path), n_checkpoints)


def save_thresholds(thresholds: Thresholds, path: str | os.PathLike[str]) -> None:
    """Write ``thresholds.json`` atomically."""
    write_json_atomic(path, thresholds.to_json())
