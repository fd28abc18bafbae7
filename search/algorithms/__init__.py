"""Search algorithms by the name ``--algo`` takes: one explicit registry.

A new algorithm is one file: a subclass of ``Algorithm`` (ask / tell, optional warm_start), added
to ``ALGORITHMS`` below; ``tests/search/algorithms/test_conformance.py`` runs over all of them.
"""

from __future__ import annotations

from search.algorithms.base import Algorithm, Proposal, Scored, TrialState, check_params
from search.algorithms.grid import Grid
from search.algorithms.optuna_samplers import TPE, CmaEs, GaussianProcess, Random
from search.algorithms.soups import GREEDY, SINGLE, GreedySoupSearch, ModuleSoup, greedy_soup_of
from search.algorithms.staged import Points, Staged, Together

ALGORITHMS: dict[str, type[Algorithm]] = {
    algorithm.name: algorithm for algorithm in (TPE, CmaEs, GaussianProcess, Random, Grid, ModuleSoup)
}

__all__ = [
    "ALGORITHMS",
    "GREEDY",
    "SINGLE",
    "Algorithm",
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
