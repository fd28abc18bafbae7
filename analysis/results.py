"""The analysis' result types and their JSON form; imports nothing else from ``analysis``.

Techniques produce ``Recommendation``s, the pipeline gathers them into a ``GroupAnalysis`` per
group and a ``RunAnalysis`` per run, and the report and plots read them: keeping the types here
lets each of those modules import them without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modules.spec.couplings import Pick
from modules.spec.selection import AverageWindow, Selection

if TYPE_CHECKING:
    from analysis.series import GroupSeries
    from analysis.thresholds import Thresholds

#: Version of ``module_metrics.json`` (documented in analysis.report).
FORMAT_VERSION = 1


def fmt_window(window: tuple[int, int] | list[int] | None) -> str:
    """``(42, 48)`` -> ``"42-48"``."""
    return "none" if window is None else f"{int(window[0])}-{int(window[1])}"


def pick_label(pick: Pick) -> str:
    """``44`` -> ``"44"``, ``(42, 48)`` -> ``"average 42-48"``."""
    return str(pick) if isinstance(pick, int) else f"average {fmt_window(pick)}"


def pick_text(pick: Pick) -> str:
    """``44`` -> ``"epoch 44"``, ``(42, 48)`` -> ``"average 42-48"``."""
    return f"epoch {pick}" if isinstance(pick, int) else f"average {pick[0]}-{pick[1]}"


@dataclass
class Recommendation:
    """One technique's pick for one group: an epoch (or an average window), confidence, reasons."""

    epoch: int
    confidence: float
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    average: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        confidence = float(self.confidence)
        self.confidence = float(min(1.0, max(0.0, confidence))) if math.isfinite(confidence) else 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": int(self.epoch), "confidence": round(self.confidence, 4)}
        if self.average is not None:
            out["average"] = [int(self.average[0]), int(self.average[1])]
        out["reasons"] = list(self.reasons)
        out["details"] = self.details
        return out


@dataclass
class GroupAnalysis:
    """One group's series, every technique's recommendation, the final pick and the plateau."""

    series: GroupSeries
    recommendations: dict[str, Recommendation]
    pick: Pick
    plateau_window: tuple[int, int] | None
    #: Why the pick differs from the final technique's (a coupling moved it), else None.
    coupling_note: str | None = None
    #: The couplings that moved the pick away from the final technique's, in the order they did.
    moved_by: list[str] = field(default_factory=list)
    #: The technique whose recommendation is the group's pick (the ensemble vote by default).
    final_technique: str = "ensemble"

    @property
    def final(self) -> Recommendation:
        """The final technique's recommendation (its pick, confidence and reasons)."""
        return self.recommendations[self.final_technique]

    @property
    def ensemble_pick(self) -> Pick:
        """The final technique's own pick, before any coupling moved it."""
        return self.final.average if self.final.average is not None else int(self.final.epoch)

    @property
    def moved(self) -> bool:
        """Whether a coupling moved the pick: then ``final.confidence`` is the ensemble pick's, not this one's."""
        return self.pick != self.ensemble_pick

    def pick_json(self) -> int | dict[str, list[int]]:
        return self.pick if isinstance(self.pick, int) else {"average": list(self.pick)}


@dataclass
class RunAnalysis:
    """The analysis of one run: per-group results, the thresholds used and notes."""

    source: str
    spec_name: str
    epochs: list[int]
    thresholds: Thresholds
    groups: dict[str, GroupAnalysis]
    model_metrics: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    #: What the run's numbers count: "epoch", or "step" for a run saved every N steps (an HF Trainer run).
    index: str = "epoch"
    #: The files ``analyze(output=...)`` wrote, by kind (metrics, report, selection, visualizations).
    written: dict[str, Path] = field(default_factory=dict)

    @property
    def selection(self) -> Selection:
        """group -> ensemble epoch, or group -> average window."""
        return Selection(
            {
                g: (a.pick if isinstance(a.pick, int) else AverageWindow(average=a.pick))
                for g, a in self.groups.items()
            }
        )

    @property
    def picks(self) -> dict[str, Pick]:
        """group -> epoch or (first, last) window, the form ``modules.spec.couplings`` checks."""
        return {g: a.pick for g, a in self.groups.items()}

    def pick_lines(self) -> list[str]:
        """A line per group: its pick and how sure the analysis is of it."""
        return [pick_summary(group, result) for group, result in self.groups.items()]

    def to_json(self) -> dict[str, Any]:
        """The content of ``module_metrics.json`` (see analysis.report for the format)."""
        return module_metrics_json(self)


def pick_summary(group: str, result: GroupAnalysis) -> str:
    """One line per group: ``"backbone: 10 (89%)"`` or ``"heads: 10 (moved by coupling A from 18, which had 52%)"``."""
    return f"{group}: {pick_label(result.pick)} ({confidence_text(result)})"


def confidence_text(result: GroupAnalysis) -> str:
    """``"89%"``, or for a pick a coupling moved, whose confidence that percentage was:
    ``"moved by coupling A from 18, which had 52%"`` (the ensemble rated its own pick, not this one)."""
    if not result.moved:
        return f"{result.final.confidence:.0%}"
    couplings = ", ".join(result.moved_by) or "a coupling"
    word = "couplings" if len(result.moved_by) > 1 else "coupling"
    return f"moved by {word} {couplings} from {pick_label(result.ensemble_pick)}, which had {result.final.confidence:.0%}"


def json_values(values: np.ndarray) -> list[float | None]:
    """Floats with NaN/inf as None."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float).tolist()]


def json_clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to null."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _group_json(result: GroupAnalysis) -> dict[str, Any]:
    series = result.series
    return {
        "judging_metrics": [j.model_dump() for j in series.judging],
        "judged_by_fallback": series.judged_by_fallback,
        "health_source": series.health_source,
        "analysed_epochs": series.epochs.tolist(),
        "metrics": {m: json_values(v) for m, v in series.recorded.items()},
        "judging_values": {m: json_values(v) for m, v in series.values.items()},
        "health": {m: json_values(v) for m, v in series.health.items()},
        "techniques": {name: rec.to_json() for name, rec in result.recommendations.items()},
        "pick": result.pick_json(),
        "confidence": round(result.final.confidence, 4),
        "plateau_window": list(result.plateau_window) if result.plateau_window else None,
        "coupling_note": result.coupling_note,
        "notes": list(series.notes),
    }


def module_metrics_json(analysis: RunAnalysis) -> dict[str, Any]:
    """The content of ``module_metrics.json``."""
    names = next(iter(analysis.groups.values())).recommendations if analysis.groups else {}
    return json_clean(
        {
            "format_version": FORMAT_VERSION,
            "source": analysis.source,
            "spec": analysis.spec_name,
            "epochs": analysis.epochs,
            "index": analysis.index,
            "thresholds": analysis.thresholds.to_json(),
            "techniques": list(names),
            "notes": analysis.notes,
            "model_metrics": {m: json_values(v) for m, v in analysis.model_metrics.items()},
            "groups": {g: _group_json(r) for g, r in analysis.groups.items()},
        }
    )
