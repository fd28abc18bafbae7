"""The technique protocol and its input: a group's series, the thresholds and earlier picks.

A technique subclasses ``Technique``: a ``name``, a pydantic ``Params`` model of its own settings
(defaults reproduce the seed), a ``marker`` for the plots, and ``recommend``. ``run`` is what the
pipeline calls: it abstains (confidence 0, the last epoch) on a series the statistics cannot
judge, too short or not finite, so that no technique has to repeat those checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from analysis.errors import AnalysisError
from analysis.results import Recommendation, fmt_window
from analysis.series import MIN_CHECKPOINTS, GroupSeries
from analysis.thresholds import Thresholds

__all__ = ["GroupContext", "NoParams", "Recommendation", "Technique", "fmt_window", "plateau_window"]


@dataclass
class GroupContext:
    """What a technique sees: one group's series, the thresholds and earlier techniques' picks."""

    series: GroupSeries
    thresholds: Thresholds
    recommendations: dict[str, Recommendation] = field(default_factory=dict)
    #: Names of the techniques whose picks count in a vote; None: every earlier one.
    voting: frozenset[str] | None = None

    @property
    def epochs(self) -> np.ndarray:
        return self.series.epochs

    @property
    def window(self) -> int:
        """``stability_window`` bounded by the group's number of analysed epochs."""
        return min(self.thresholds.stability_window, len(self.series.epochs))


def plateau_window(recommendations: dict[str, Recommendation]) -> tuple[int, int] | None:
    """The first plateau window (``details["plateau_window"]``) any recommendation reports."""
    for rec in recommendations.values():
        window = rec.details.get("plateau_window")
        if window:
            return int(window[0]), int(window[1])
    return None


class NoParams(BaseModel):
    """A technique without settings of its own (the thresholds drive it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Technique(ABC):
    """A way to recommend an epoch for a group; ``votes`` says whether the ensemble counts it."""

    name: ClassVar[str]
    votes: ClassVar[bool] = True
    #: Matplotlib marker of this technique's pick in the group plots.
    marker: ClassVar[str] = "o"
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, **params: Any) -> None:
        self.params = self.Params(**params)

    @abstractmethod
    def recommend(self, context: GroupContext) -> Recommendation:
        """Recommend an epoch (one of ``context.epochs``) for ``context.series.group``."""

    def run(self, context: GroupContext) -> Recommendation:
        """``recommend``, or an abstention when the group's series cannot be judged."""
        epochs = context.epochs
        if len(epochs) == 0:
            raise AnalysisError(f"group {context.series.group!r} has no analysed epoch; {self.name} cannot run")
        why = None
        if len(epochs) < MIN_CHECKPOINTS:
            why = f"{len(epochs)} analysed checkpoints, fewer than the {MIN_CHECKPOINTS} the statistics need"
        elif not np.isfinite(context.series.composite).all():
            why = "the judging metrics are not finite at every analysed epoch"
        if why is None:
            return self.recommend(context)
        return Recommendation(int(epochs[-1]), 0.0, [f"{self.name} abstains: {why}"], {"abstained": why})
