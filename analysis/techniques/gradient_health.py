"""Gradient-flow health: the last healthy epoch before degradation (scores: analysis.health).

Degradation is the first sustained unhealthy stretch (two checkpoints in a row, or the last
one) after a healthy checkpoint; the last healthy epoch before it is recommended. When nothing
degrades, health does not single out an epoch: the technique abstains (confidence 0) rather
than vote for the last checkpoint, and its reasons still say the gradients are stable.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from analysis.health import HealthScores, degradation_start, health_scores
from analysis.series import GroupSeries
from analysis.techniques.base import GroupContext, Recommendation, Technique


class GradientHealthParams(BaseModel):
    """Settings of the gradient-health technique: confidence = base + health_weight x health at the pick."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    base_confidence: float = Field(default=0.5, ge=0, le=1)
    health_weight: float = Field(default=0.4, ge=0, le=1)


class GradientHealthTechnique(Technique):
    """Recommends the last healthy epoch before gradient flow degrades."""

    name = "gradient_health"
    marker = "v"
    Params = GradientHealthParams

    def recommend(self, context: GroupContext) -> Recommendation:
        series = context.series
        epochs = series.epochs
        scores = health_scores(series, context.window)
        details = {
            "source": series.health_source,
            "signals": sorted(scores.signals),
            "medians": scores.medians,
            "unhealthy_epochs": [int(e) for e in epochs[scores.unhealthy]],
        }
        source_text = {
            "recorded": "from recorded gradients",
            "weights": "computed from the weights of consecutive checkpoints (no recorded gradients)",
            "none": "no gradient data",
        }[series.health_source]
        if not scores.signals:
            return Recommendation(int(epochs[-1]), 0.0, [f"gradient health: {source_text}; no vote"], details)
        start = degradation_start(scores.unhealthy)
        if start is None:
            healthy = np.flatnonzero(~scores.unhealthy)
            index = int(healthy[-1]) if len(healthy) else int(np.argmax(scores.combined))
            reasons = [
                f"gradient flow healthy at every checkpoint ({', '.join(sorted(scores.signals))}"
                f" {source_text}); no degradation to stop before, so no vote",
                *self._stability_reasons(series, scores, index),
            ]
            details["degradation_epoch"] = None
            return Recommendation(int(epochs[index]), 0.0, reasons, details)
        before = np.flatnonzero(~scores.unhealthy[:start])
        index = int(before[-1])
        culprits = [name for name, values in scores.signals.items() if values[start] <= 0]
        details["degradation_epoch"] = int(epochs[start])
        reasons = [
            f"gradient flow degrades from epoch {int(epochs[start])} ({self._describe(series, scores, culprits, start)});"
            f" last healthy epoch {int(epochs[index])} (signals {source_text})",
            *self._stability_reasons(series, scores, index),
        ]
        return Recommendation(int(epochs[index]), self.params.base_confidence + self.params.health_weight * float(scores.combined[index]), reasons, details)

    @staticmethod
    def _describe(series: GroupSeries, scores: HealthScores, culprits: list[str], index: int) -> str:
        parts = []
        for name in culprits:
            value = float(series.health[name][index])
            if name == "dead_fraction":
                parts.append(f"dead fraction {value:.2f} vs early {scores.baseline_dead:.2f}")
            else:
                parts.append(f"{name} {value:.3g} = {value / scores.medians[name]:.1f}x its median")
        return ", ".join(parts)

    @staticmethod
    def _stability_reasons(series: GroupSeries, scores: HealthScores, index: int) -> list[str]:
        reasons = []
        for name in ("grad_norm_ratio", "grad_norm"):
            if name in scores.signals:
                values = series.health[name][: index + 1]
                spread = np.nanmax(values) / max(np.nanmin(values), 1e-300)
                word = "stable" if spread < 10 else "unsteady"
                reasons.append(f"gradient norm ratio {word} ({name} within {spread:.1f}x up to epoch {int(series.epochs[index])})")
                break
        if "update_ratio" in scores.signals:
            reasons.append(f"update/parameter ratio {float(series.health['update_ratio'][index]):.2e} at epoch {int(series.epochs[index])}")
        return reasons

