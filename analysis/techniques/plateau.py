"""Statistical plateau detection: sliding Mann-Kendall, Sen's slope and CUSUM change points.

A window of ``stability_window`` checkpoints of the group's goodness curve (judging metrics
normalised to [0, 1], 1 = best) is flat when Mann-Kendall finds no trend (p >= 0.05), its
variance is <= ``plateau_variance``, |Sen's slope| per epoch is <= ``improvement_rate`` and it
does not straddle a CUSUM change point. Runs of flat windows are plateaus; the best one (highest
mean goodness) is recommended at its centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymannkendall
from pydantic import BaseModel, ConfigDict, Field

from analysis.stats import (
    TREND_ALPHA,
    best_smoothed,
    centred_mean,
    cusum_change_points,
    sliding_mann_kendall,
    sliding_sen_slope,
    sliding_variance,
    snap_to_epoch,
)
from analysis.techniques.base import GroupContext, Recommendation, Technique, fmt_window
from analysis.thresholds import Thresholds


class PlateauParams(BaseModel):
    """Settings of the plateau technique (the thresholds set what counts as flat)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Confidence of the fallback pick when no window is flat.
    no_plateau_confidence: float = Field(default=0.15, ge=0, le=1)


@dataclass
class PlateauScan:
    """Per-window statistics, change points and the chosen plateau (indices into the epochs)."""

    flat: np.ndarray
    p_values: np.ndarray
    slopes: np.ndarray
    variances: np.ndarray
    change_points: list[int]
    plateau: tuple[int, int] | None


def scan_plateaus(goodness: np.ndarray, epochs: np.ndarray, thresholds: Thresholds, window: int) -> PlateauScan:
    """Flat windows and the best plateau of ``goodness`` (first and last checkpoint index)."""
    _, _, p_values = sliding_mann_kendall(goodness, window)
    slopes = sliding_sen_slope(goodness, epochs, window)
    variances = sliding_variance(goodness, window)
    change_points = cusum_change_points(goodness, sigma_floor=float(np.sqrt(thresholds.plateau_variance)))
    starts = np.arange(len(p_values))
    straddles = np.zeros(len(p_values), dtype=bool)
    for point in change_points:
        straddles |= (starts < point) & (point <= starts + window - 1)
    flat = (
        (p_values >= TREND_ALPHA)
        & (variances <= thresholds.plateau_variance + 1e-12)
        & (np.abs(slopes) <= thresholds.improvement_rate + 1e-12)
        & ~straddles
    )
    best, best_level = None, -np.inf
    for first_window, last_window in _runs(flat):
        first, last = first_window, last_window + window - 1
        level = float(goodness[first : last + 1].mean())
        if level > best_level + 1e-12:
            best, best_level = (first, last), level
    return PlateauScan(flat, p_values, slopes, variances, change_points, best)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True in ``mask``."""
    runs, start = [], None
    for index, value in enumerate(mask.tolist() + [False]):
        if value and start is None:
            start = index
        elif not value and start is not None:
            runs.append((start, index - 1))
            start = None
    return runs


class PlateauTechnique(Technique):
    """Recommends the centre of the best plateau of the group's goodness curve."""

    name = "plateau"
    marker = "s"
    Params = PlateauParams

    def recommend(self, context: GroupContext) -> Recommendation:
        series, thresholds, window = context.series, context.thresholds, context.window
        epochs, goodness = series.epochs, series.composite
        scan = scan_plateaus(goodness, epochs, thresholds, window)
        change_epochs = [int(epochs[i]) for i in scan.change_points]
        details = {
            "window_checkpoints": window,
            "flat_windows": int(scan.flat.sum()),
            "windows": int(len(scan.flat)),
            "change_points": change_epochs,
            "scale": "goodness: judging metrics min-max normalised to [0, 1] over the run, 1 = best,"
            " far-out warm-up values clipped to 0",
        }
        change_text = f"CUSUM change points at epochs {change_epochs}" if change_epochs else "no CUSUM change point"
        if scan.plateau is None:
            index = best_smoothed(centred_mean(goodness, window), goodness)
            details["plateau_window"] = None
            return Recommendation(
                int(epochs[index]),
                self.params.no_plateau_confidence,
                [
                    f"no plateau: no {window}-checkpoint window without a significant trend, with variance"
                    f" <= {thresholds.plateau_variance:g} and |slope| <= {thresholds.improvement_rate:g}/epoch",
                    f"best smoothed goodness at epoch {int(epochs[index])}",
                    change_text,
                ],
                details,
            )
        first, last = scan.plateau
        plateau_epochs = (int(epochs[first]), int(epochs[last]))
        centre = snap_to_epoch((plateau_epochs[0] + plateau_epochs[1]) / 2, epochs)
        inside = slice(first, last - window + 2)
        variance = float(scan.variances[inside].max())
        slope = float(np.abs(scan.slopes[inside]).max())
        segment = goodness[first : last + 1]
        trend = pymannkendall.original_test(segment, alpha=TREND_ALPHA)
        level = float(segment.mean())
        flatness = 1.0 - 0.5 * _share(variance, thresholds.plateau_variance) - 0.5 * _share(slope, thresholds.improvement_rate)
        details.update(
            plateau_window=list(plateau_epochs),
            centre=centre,
            max_window_variance=variance,
            max_window_abs_slope_per_epoch=slope,
            plateau_mann_kendall_p=float(trend.p),
            plateau_mean_goodness=level,
        )
        return Recommendation(
            centre,
            max(0.0, flatness) * level,
            [
                f"plateau {fmt_window(plateau_epochs)}, centre {centre}",
                f"variance <= {variance:.4f}, |Sen's slope| <= {slope:.4f}/epoch in every window,"
                f" Mann-Kendall p = {trend.p:.2f} over the plateau",
                change_text,
            ],
            details,
        )


def _share(value: float, limit: float) -> float:
    if limit <= 0:
        return 0.0 if value <= 0 else 1.0
    return min(1.0, value / limit)

