"""ASHA over the search shards, for the sampler's trials only: baselines and soups always see
every shard, because their full scores decide what the soups keep and what the report compares."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search.algorithms import ALGORITHMS
from search.execution.tune_searcher import FAILED, is_standby

#: Origins ASHA may stop early: the trials of samplers (not baselines, soups or the grid).
STOPPABLE = frozenset(name for name, algorithm in ALGORITHMS.items() if algorithm.early_stopping)


class SamplerASHA(ASHAScheduler):
    """ASHA that lets every rung see baseline and soup scores but stops only sampler trials."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if is_standby(trial.config) or result.get(FAILED):  # a failed trial's result has no score
            return TrialScheduler.CONTINUE
        decision = super().on_trial_result(tune_controller, trial, result)
        if trial.config.get("origin") not in STOPPABLE:
            return TrialScheduler.CONTINUE
        return decision
