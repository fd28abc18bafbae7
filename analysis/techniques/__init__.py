"""The registry of sweet-spot techniques: every technique the pipeline runs, in one place.

The pipeline runs ``TECHNIQUES`` in order, voting techniques first; the last technique that does
not vote (the ensemble) makes each group's pick. To add a technique, subclass
``analysis.techniques.base.Technique`` and add an instance here (or pass your own mapping to
``analysis.pipeline.analyze_group``).
"""

from __future__ import annotations

from analysis.errors import AnalysisError
from analysis.techniques.base import GroupContext, Recommendation, Technique
from analysis.techniques.ensemble import EnsembleTechnique
from analysis.techniques.gradient_health import GradientHealthTechnique
from analysis.techniques.mcda import McdaTechnique
from analysis.techniques.plateau import PlateauTechnique
from analysis.techniques.task_metrics import TaskMetricsTechnique

#: Registered techniques by name, in the order the pipeline runs them (the ensemble last).
TECHNIQUES: dict[str, Technique] = {
    technique.name: technique
    for technique in (
        PlateauTechnique(),
        TaskMetricsTechnique(),
        McdaTechnique(),
        GradientHealthTechnique(),
        EnsembleTechnique(),
    )
}


def get_technique(name: str) -> Technique:
    """The registered technique called ``name``."""
    if name not in TECHNIQUES:
        raise AnalysisError(f"unknown technique {name!r}; registered techniques: {list(TECHNIQUES)}")
    return TECHNIQUES[name]


__all__ = ["TECHNIQUES", "GroupContext", "Recommendation", "Technique", "get_technique"]
