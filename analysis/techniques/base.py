"""The technique protocol, its inputs and outputs, and the registry of techniques by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from analysis.errors import AnalysisError
from analysis.series import GroupSeries
from analysis.thresholds import Thresholds


@dataclass
class Recommendation:
    """One technique's pick for one group: an epoch (or an average window), confidence, reasons."""

    epoch: int
    confidence: float
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    average: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.confidence = float(min(1.0, max(0.0, self.confidence)))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": int(self.epoch), "confidence": round(self.confidence, 4)}
        if self.average is not None:
            out["average"] = [int(self.average[0]), int(self.average[1])]
        out["reasons"] = list(self.reasons)
        out["details"] = self.details
        return out


@dataclass
class GroupContext:
    """What a technique sees: one group's series, the thresholds and earlier techniques' picks."""

    series: GroupSeries
    thresholds: Thresholds
    recommendations: dict[str, Recommendation] = field(default_factory=dict)

    @property
    def epochs(self) -> np.ndarray:
        return self.series.epochs

    @property
    def window(self) -> int:
        """``stability_window`` bounded by the group's number of analysed epochs."""
        return min(self.thresholds.stability_window, len(self.series.epochs))


class Technique(ABC):
    """A way to recommend an epoch for a group; ``votes`` says whether the ensemble counts it."""

    name: ClassVar[str]
    votes: ClassVar[bool] = True

    @abstractmethod
    def recommend(self, context: GroupContext) -> Recommendation:
        """Recommend an epoch (one of ``context.epochs``) for ``context.series.group``."""


#: Registered techniques by name, in the order the pipeline runs them (the ensemble last).
TECHNIQUES: dict[str, Technique] = {}


def register(technique: Technique) -> Technique:
    """Add ``technique`` to TECHNIQUES; a second technique with the same name is refused."""
    if technique.name in TECHNIQUES:
        raise AnalysisError(f"a technique named {technique.name!r} is already registered; choose another name")
    TECHNIQUES[technique.name] = technique
    return technique


def get_technique(name: str) -> Technique:
    """The registered technique called ``name``."""
    if name not in TECHNIQUES:
        raise AnalysisError(f"unknown technique {name!r}; registered techniques: {list(TECHNIQUES)}")
    return TECHNIQUES[name]


def fmt_window(window: tuple[int, int] | list[int] | None) -> str:
    """``(42, 48)`` -> ``"42-48"``."""
    return "none" if window is None else f"{int(window[0])}-{int(window[1])}"
