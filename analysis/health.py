"""Gradient-health scores per checkpoint: gradient-norm ratio, update/parameter ratio, dead units.

Each signal scores every checkpoint in [0, 1] (1 = healthy): the gradient-norm ratio by its
distance from the run's median on a log10 scale (10x off = 0), the update ratio by how far it
exceeds its median (10x = 0; a shrinking update under a decaying learning rate is healthy),
dead units by their rise over the early baseline (+DEAD_RISE = 0). A checkpoint is unhealthy
when any signal scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.series import GroupSeries

#: Rise of the dead-unit fraction over its early baseline that counts as degradation.
DEAD_RISE = 0.10
#: Factor off the median (log10 distance 1) at which a ratio counts as exploded or vanished.
RATIO_DECADES = 1.0


@dataclass
class HealthScores:
    """Per-signal and combined health scores over the group's epochs, and the unhealthy mask."""

    signals: dict[str, np.ndarray]
    combined: np.ndarray
    unhealthy: np.ndarray
    medians: dict[str, float]
    baseline_dead: float | None


def health_scores(series: GroupSeries, window: int) -> HealthScores:
    """Score every checkpoint of ``series`` on each available health signal."""
    n = len(series.epochs)
    signals: dict[str, np.ndarray] = {}
    medians: dict[str, float] = {}
    baseline = None
    ratio_metric = "grad_norm_ratio" if "grad_norm_ratio" in series.health else "grad_norm"
    if ratio_metric in series.health:
        values = series.health[ratio_metric]
        median = float(np.nanmedian(values))
        if median > 0:
            medians[ratio_metric] = median
            with np.errstate(divide="ignore"):
                distance = np.abs(np.log10(np.maximum(values, 0) / median))
            signals[ratio_metric] = _score(distance / RATIO_DECADES)
    if "update_ratio" in series.health:
        values = series.health["update_ratio"]
        median = float(np.nanmedian(values)) if np.isfinite(values).any() else 0.0
        if median > 0:
            medians["update_ratio"] = median
            with np.errstate(divide="ignore"):
                excess = np.maximum(np.log10(np.maximum(values, 1e-300) / median), 0.0)
            signals["update_ratio"] = _score(excess / RATIO_DECADES)
    if "dead_fraction" in series.health:
        values = series.health["dead_fraction"]
        early = values[:window]
        if np.isfinite(early).any():
            baseline = float(np.nanmin(early))
            signals["dead_fraction"] = _score((values - baseline) / DEAD_RISE)
    if not signals:
        ones = np.ones(n)
        return HealthScores({}, ones, np.zeros(n, dtype=bool), medians, baseline)
    stacked = np.vstack(list(signals.values()))
    return HealthScores(signals, stacked.mean(axis=0), (stacked <= 0).any(axis=0), medians, baseline)


def _score(badness: np.ndarray) -> np.ndarray:
    """1 - badness clipped to [0, 1]; NaN (not measured) counts as healthy."""
    return np.where(np.isnan(badness), 1.0, 1.0 - np.clip(badness, 0.0, 1.0))


def degradation_start(unhealthy: np.ndarray) -> int | None:
    """Index where the first sustained unhealthy stretch after a healthy checkpoint begins."""
    healthy = np.flatnonzero(~unhealthy)
    if len(healthy) == 0:
        return None
    n = len(unhealthy)
    for index in range(int(healthy[0]) + 1, n):
        if unhealthy[index] and (index == n - 1 or unhealthy[index + 1]):
            return index
    return None
