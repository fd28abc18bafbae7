"""Multi-criteria decision analysis: a weighted score of loss, task, stability and gradient.

Criteria per epoch, each in [0, 1] with 1 = best: loss (``val_<objective>`` normalised over
the run), task (the group's judging metrics normalised and averaged), stability (1 minus the
min-max normalised local standard deviation of the task criterion over ``stability_window``
checkpoints) and gradient (the gradient-health score). A criterion that is NaN at an epoch is
skipped there and the remaining weights are renormalised.
"""

from __future__ import annotations

import numpy as np

from analysis.health import health_scores
from analysis.stats import centred_std, middle_of_best, normalise
from analysis.techniques.base import GroupContext, Recommendation, Technique


def mcda_criteria(context: GroupContext) -> dict[str, np.ndarray]:
    """The four criteria per epoch of ``context``'s group, keyed like ``mcda_weights``."""
    series = context.series
    local_std = centred_std(series.composite, context.window)
    return {
        "loss": series.loss_goodness,
        "task": series.composite,
        "stability": normalise(local_std, "min"),
        "gradient": health_scores(series, context.window).combined,
    }


def mcda_scores(criteria: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted mean of the criteria per epoch, skipping NaN criteria."""
    stacked = np.vstack([criteria[k] for k in weights])
    w = np.array([weights[k] for k in weights])[:, None] * np.isfinite(stacked)
    total = w.sum(axis=0)
    return np.where(total > 0, (np.nan_to_num(stacked) * w).sum(axis=0) / np.where(total > 0, total, 1), 0.0)


class McdaTechnique(Technique):
    """Recommends the epoch with the best weighted MCDA score."""

    name = "mcda"
    marker = "^"

    def recommend(self, context: GroupContext) -> Recommendation:
        weights = context.thresholds.mcda_weights.model_dump()
        criteria = mcda_criteria(context)
        scores = mcda_scores(criteria, weights)
        index = middle_of_best(scores)
        epoch = int(context.epochs[index])
        at_pick = {k: float(v[index]) for k, v in criteria.items()}
        breakdown = ", ".join(f"{k} {at_pick[k]:.2f} x {weights[k]:.2f}" for k in weights)
        runner_up = np.delete(scores, index).max() if len(scores) > 1 else 0.0
        return Recommendation(
            epoch,
            float(scores[index]),
            [f"MCDA score {scores[index]:.3f} at epoch {epoch} ({breakdown})", f"next best score {runner_up:.3f}"],
            {"score": float(scores[index]), "criteria_at_pick": at_pick, "weights": weights},
        )

