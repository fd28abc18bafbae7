"""The algorithm protocol: ask for a selection to score, tell its validation objective.

An algorithm knows nothing of Ray Tune; ``search.execution.tune_searcher`` runs any registered one as a
Tune searcher, so trials start as workers free up and no evaluation waits for a generation.

Its settings are typed: a nested ``Params`` model (pydantic), validated where they are given. An
algorithm is built on its space, ``TPE(space, "min", 0, startup_trials=20)``, or built unbound and
bound later, as Optuna takes a sampler: ``search(..., algorithm=TPE(startup_trials=20))``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from modules.spec.schema import is_better
from search.algorithms.space import CrossoverSpace, EpochSet
from search.errors import SearchError

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


class NoParams(BaseModel):
    """An algorithm without settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_params(algorithm: type[Algorithm], params: dict[str, Any]) -> BaseModel:
    """``params`` as ``algorithm``'s typed settings; an unknown or bad one names the setting and the fix."""
    try:
        return algorithm.Params(**params)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in error.errors()
        )
        known = sorted(algorithm.Params.model_fields) or "none"
        raise SearchError(f"--algo {algorithm.name} settings: {problems} (its settings: {known})") from None


class Algorithm(ABC):
    """Proposes selections from ``space``; ``mode`` says whether lower or higher objectives win."""

    #: The name ``--algo`` takes.
    name: ClassVar[str] = ""
    #: Its settings (``--algo-param NAME=VALUE``; ``self.params`` holds them, validated).
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Whether ASHA may stop this algorithm's trials early (a soup needs every full score).
    early_stopping: ClassVar[bool] = False
    #: Whether the search scores the single epochs and the greedy soup before it (a grid needs none).
    takes_baselines: ClassVar[bool] = True
    #: Whether it starts from the greedy soup's result (then it follows the soup instead of running beside it).
    follows_soup: ClassVar[bool] = False
    #: Whether it ends by itself (then another may follow it in a chain, ``--algo sweeps+tpe``).
    finite: ClassVar[bool] = False

    def __init__(self, space: CrossoverSpace | None = None, mode: str = "min", seed: int = 0, **params: Any) -> None:
        self.params = check_params(type(self), params)
        self.space: CrossoverSpace = space  # type: ignore[assignment]
        self.mode = mode
        self.seed = seed
        if space is not None:
            self.setup()

    def bind(self, space: CrossoverSpace, mode: str, seed: int) -> Algorithm:
        """Put an algorithm built without a space on the search's space; returns it."""
        self.space, self.mode, self.seed = space, mode, seed
        self.setup()
        return self

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Prepare what needs the space (called once it is known)."""

    def better(self, a: float, b: float) -> bool:
        return is_better(a, b, self.mode)

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
