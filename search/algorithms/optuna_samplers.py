"""TPE, CMA-ES, GP and random search: Optuna samplers driven through Ray Tune's ``OptunaSearch``."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from search.algorithms.base import Algorithm, Proposal, Scored, TrialState
from search.algorithms.space import CrossoverSpace

METRIC = "objective"


def make_sampler(name: str, seed: int, startup: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True, n_startup_trials=startup
        )
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=startup, warn_independent_sampling=False
        )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"no Optuna sampler named {name!r}")


class OptunaAlgorithm(Algorithm):
    """Integer parameters per unit (see ``search.algorithms.space``); the sampler is Optuna's, the searcher
    Ray Tune's ``OptunaSearch`` with metric and mode given to it directly (TuneConfig's are ignored
    when a space is passed), baselines told to it as evaluated points."""

    sampler_name = "tpe"
    early_stopping = True

    def __init__(
        self, space: CrossoverSpace, mode: str, seed: int, startup_trials: int = 10,
        storage: optuna.storages.BaseStorage | None = None, study_name: str | None = None,
    ) -> None:
        super().__init__(space, mode, seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = make_sampler(self.sampler_name, seed, startup_trials)
        self.searcher = OptunaSearch(
            space=space.distributions(), metric=METRIC, mode=mode, sampler=sampler, seed=None,
            storage=storage, study_name=study_name,  # a stored study is loaded if it exists
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
    name = sampler_name = "tpe"


class CmaEs(OptunaAlgorithm):
    name = sampler_name = "cmaes"


class GaussianProcess(OptunaAlgorithm):
    name = sampler_name = "gp"


class Random(OptunaAlgorithm):
    name = sampler_name = "random"
