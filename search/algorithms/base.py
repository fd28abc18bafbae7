"""The algorithm protocol: ask for a selection to score, tell its validation objective.

An algorithm knows nothing of Ray Tune; ``search.execution.tune_searcher`` runs any registered one as a
Tune searcher, so trials start as workers free up and no evaluation waits for a generation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from search.algorithms.space import CrossoverSpace, EpochSet

TrialState = Literal["complete", "pruned", "failed"]


@dataclass
class Proposal:
    """A selection to score: its epoch set, the space's parameters when it has them, and who asked."""

    epochs: EpochSet
    origin: str
    params: dict[str, int] | None = None
    token: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scored:
    """A selection scored before the algorithm began (the baselines), for a warm start."""

    epochs: EpochSet
    value: float
    origin: str


class Algorithm(ABC):
    """Proposes selections from ``space``; ``mode`` says whether lower or higher objectives win."""

    #: The name ``--algo`` takes.
    name: str = ""
    #: Whether ASHA may stop this algorithm's trials early (a soup needs every full score).
    early_stopping: bool = False

    def __init__(self, space: CrossoverSpace, mode: str, seed: int) -> None:
        self.space = space
        self.mode = mode
        self.seed = seed

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def warm_start(self, scored: list[Scored]) -> None:  # noqa: B027 - optional hook
        """Selections scored before this algorithm began (single epochs, greedy soup, analysis pick)."""

    @abstractmethod
    def ask(self) -> Proposal | None:
        """The next selection, or None while waiting for results of earlier ones."""

    @abstractmethod
    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        """The result of a proposal (value None unless complete)."""

    def late_result(self, proposal: Proposal, value: float) -> None:  # noqa: B027 - optional hook
        """A result that arrived after the proposal was told as failed (a trial re-run after resume)."""

    @property
    def finished(self) -> bool:
        """True when the algorithm has nothing more to propose (enumerations, soups)."""
        return False
