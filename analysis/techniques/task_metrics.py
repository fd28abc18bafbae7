"""Task-specific metrics: the epoch that best balances the group's judging metrics.

Each judging metric is normalised by its direction (1 = best over the run), smoothed by a
centred moving average over ``stability_window`` checkpoints (kept whole at the run's ends), and
the mean of the smoothed metrics is maximised; points that share the best end window are told
apart by their own unsmoothed balance, so a gap near the start cannot hand the pick to the first
checkpoint.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from analysis.stats import best_smoothed, centred_mean
from analysis.techniques.base import GroupContext, Recommendation, Technique


class TaskMetricsParams(BaseModel):
    """Settings of the task-metrics technique."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Share of the confidence that depends on the metrics' peaks agreeing with the pick.
    agreement_weight: float = Field(default=0.5, ge=0, le=1)


class TaskMetricsTechnique(Technique):
    """Recommends the epoch with the best smoothed balance of the group's task metrics."""

    name = "task_metrics"
    marker = "D"
    Params = TaskMetricsParams

    def recommend(self, context: GroupContext) -> Recommendation:
        series, window = context.series, context.window
        epochs = series.epochs
        smoothed = {metric: centred_mean(good, window) for metric, good in series.goodness.items()}
        balance = np.mean(np.vstack(list(smoothed.values())), axis=0)
        raw_balance = np.mean(np.vstack(list(series.goodness.values())), axis=0)
        index = best_smoothed(balance, raw_balance)
        peaks = {metric: best_smoothed(curve, series.goodness[metric]) for metric, curve in smoothed.items()}
        agreeing = [m for m, peak in peaks.items() if abs(peak - index) <= window // 2]
        agreement = len(agreeing) / len(peaks)
        reasons = []
        if series.judged_by_fallback:
            reasons.append(f"no task metric for this group; judged by {series.loss_metric}")
        for judging in series.judging:
            raw = series.values[judging.metric]
            best = int(np.nanargmin(raw) if judging.mode == "min" else np.nanargmax(raw))
            word = "low" if judging.mode == "min" else "peak"
            reasons.append(f"task {judging.metric} {word} {raw[best]:.3f} at epoch {int(epochs[best])}")
        at_pick = ", ".join(f"{m} {series.values[m][index]:.3f}" for m in series.values)
        balanced = (
            f"balanced score {balance[index]:.3f} at epoch {int(epochs[index])} ({at_pick}; smoothed over {window}"
            f" checkpoints, {len(agreeing)}/{len(peaks)} metrics peak within {window // 2} checkpoints)"
        )
        # with several metrics the balance is the headline; with one, its peak is
        if len(peaks) > 1:
            reasons.insert(0, balanced)
        else:
            reasons.append(balanced)
        weight = self.params.agreement_weight
        details = {
            "balanced_score": float(balance[index]),
            "metric_peaks": {m: int(epochs[i]) for m, i in peaks.items()},
            "values_at_pick": {m: float(series.values[m][index]) for m in series.values},
            "agreement": agreement,
        }
        return Recommendation(int(epochs[index]), float(balance[index]) * (1 - weight + weight * agreement), reasons, details)

