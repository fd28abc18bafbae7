"""TPE, CMA-ES, GP and random search: Optuna samplers driven through Ray Tune's ``OptunaSearch``."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any, ClassVar

import optuna
from pydantic import BaseModel, ConfigDict, Field

from search.algorithms.base import Algorithm, NoParams, Proposal, Scored, TrialState

METRIC = "objective"


class StartupParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Trials sampled at random before the model takes over (the baselines told to it count).
    startup_trials: int = Field(10, ge=0)


class TPEParams(StartupParams):
    multivariate: bool = True
    #: Trials still running count as their worst, so parallel workers do not propose the same.
    constant_liar: bool = True


class OptunaAlgorithm(Algorithm):
    """Integer parameters per unit (see ``search.algorithms.space``); the sampler is Optuna's, the searcher
    Ray Tune's ``OptunaSearch`` with metric and mode given to it directly (TuneConfig's are ignored
    when a space is passed), baselines told to it as evaluated points."""

    Params: ClassVar[type[BaseModel]] = StartupParams
    early_stopping = True
    #: Where the study is kept (``--optuna-storage``) and under which name; None: in memory.
    storage: optuna.storages.BaseStorage | None = None
    study_name: str | None = None

    def keep_study(self, storage: optuna.storages.BaseStorage, study_name: str) -> OptunaAlgorithm:
        """Keep the sampler's study in ``storage`` (before it is bound to a space); returns it."""
        self.storage, self.study_name = storage, study_name
        return self

    @abstractmethod
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The Optuna sampler, from ``self.params`` and ``self.seed``."""

    def setup(self) -> None:
        # Imported here: Ray Tune takes most of a second to import, and choosing or checking an
        # algorithm (`SearchConfig`, before a search starts Ray) needs none of it.
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = self.sampler()
        self.searcher = OptunaSearch(
            space=self.space.distributions(), metric=METRIC, mode=self.mode, sampler=sampler, seed=None,
            storage=self.storage, study_name=self.study_name,  # a stored study is loaded if it exists
        )
        self._asked = 0

    def warm_start(self, scored: list[Scored]) -> None:
        for item in scored:
            params = self.space.encode(item.epochs)
            if params is not None:
                self.searcher.add_evaluated_point(params, item.value)

    def ask(self) -> Proposal | None:
        token = f"{self.name}-{self._asked}"
        self._asked += 1
        params: dict[str, Any] = self.searcher.suggest(token)
        params = {k: int(v) for k, v in params.items()}
        return Proposal(self.space.decode(params), self.name, params, token)

    def late_result(self, proposal: Proposal, value: float) -> None:
        if proposal.params is not None:
            self.searcher.add_evaluated_point(proposal.params, value)

    def tell(self, proposal: Proposal, value: float | None, state: TrialState) -> None:
        if state == "complete" and value is not None:
            self.searcher.on_trial_complete(proposal.token, {METRIC: value})
        else:
            # A trial stopped early reaches the study as PRUNED, never with its partial score.
            self.searcher.on_trial_complete(proposal.token, None, error=state == "failed")


class TPE(OptunaAlgorithm):
    name = "tpe"
    Params = TPEParams

    def sampler(self) -> optuna.samplers.BaseSampler:
        p = self.params
        return optuna.samplers.TPESampler(
            seed=self.seed, multivariate=p.multivariate, constant_liar=p.constant_liar, n_startup_trials=p.startup_trials
        )


class CmaEs(OptunaAlgorithm):
    name = "cmaes"

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.CmaEsSampler(
            seed=self.seed, n_startup_trials=self.params.startup_trials, warn_independent_sampling=False
        )


class GaussianProcess(OptunaAlgorithm):
    name = "gp"

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=self.params.startup_trials)


class Random(OptunaAlgorithm):
    name = "random"
    Params = NoParams

    def sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)
