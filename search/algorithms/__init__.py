"""Search algorithms by the name ``--algo`` takes: one explicit registry.

A new algorithm is one file: a subclass of ``Algorithm`` (ask / tell, optional warm_start), added
to ``ALGORITHMS`` below; ``tests/search/algorithms/test_conformance.py`` runs over all of them.
``--algo a+b`` chains registered ones (``search.algorithms.chain``).
"""

from __future__ import annotations

from typing import Any

from search.algorithms.base import Algorithm, Proposal, Scored, TrialState, check_params
from search.algorithms.chain import Chain, members_of, split_params
from search.algorithms.grid import Grid
from search.algorithms.optuna_samplers import TPE, CmaEs, GaussianProcess, Random
from search.algorithms.soups import GREEDY, SINGLE, GreedySoupSearch, ModuleSoup, greedy_soup_of
from search.algorithms.staged import Points, Staged, Together
from search.algorithms.sweeps import CoordinateSweeps

ALGORITHMS: dict[str, type[Algorithm]] = {
    algorithm.name: algorithm
    for algorithm in (TPE, CmaEs, GaussianProcess, Random, Grid, ModuleSoup, CoordinateSweeps)
}


def check_algo(name: str, params: dict[str, Any]) -> None:
    """Refuse an unknown algorithm, a bad chain or a bad setting, naming the fix."""
    classes = members_of(name, ALGORITHMS)
    if len(classes) == 1:
        check_params(classes[0], params)
    else:
        split_params(classes, params, name)


def build(name: str, params: dict[str, Any]) -> Algorithm:
    """The algorithm ``--algo name`` with ``--algo-param`` settings ``params``, not yet bound."""
    classes = members_of(name, ALGORITHMS)
    if len(classes) == 1:
        return classes[0](**params)
    settings = split_params(classes, params, name)
    return Chain([c(**s.model_dump()) for c, s in zip(classes, settings)])

__all__ = [
    "ALGORITHMS",
    "GREEDY",
    "SINGLE",
    "Algorithm",
    "Chain",
    "CoordinateSweeps",
    "build",
    "check_algo",
    "GreedySoupSearch",
    "check_params",
    "greedy_soup_of",
    "ModuleSoup",
    "Points",
    "Proposal",
    "Scored",
    "Staged",
    "Together",
    "TrialState",
]
