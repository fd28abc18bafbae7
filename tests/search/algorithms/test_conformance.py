"""One suite over every registered algorithm, driven as Tune would drive it (ask, tell)."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.trial import TrialState

from modules.spec.schema import parse_spec
from search.algorithms import (
    ALGORITHMS,
    SINGLE,
    GreedySoupSearch,
    Proposal,
    Staged,
    build,
)
from search.algorithms.space import CrossoverSpace, EpochSet, selection_key
from search.execution.config import SearchConfig
from search.execution.search_run import build_algorithm

RECORDED = [1, 2, 3, 4, 5, 6]
GROUPS = ["enc", "head", "aux"]
BEST = {"enc": 4, "head": 4, "aux": 2}
#: Trials per algorithm: GP's suggestions take about a second each here, so it gets fewer.
BUDGET = {"gp": 15}
#: Every registered algorithm, and the chains the README names.
NAMES = sorted(ALGORITHMS) + ["sweeps+tpe", "module-soup+tpe"]


def _space() -> CrossoverSpace:
    spec = parse_spec(
        {
            "name": "s", "model": "m:f", "data": "m:f", "evaluate": "m:f",
            "groups": {g: [f"{g}."] for g in GROUPS},
            "couplings": [{"groups": ["enc", "head"], "max_epoch_gap": 0}],
        },
        "spec",
    )
    return CrossoverSpace.build(spec, GROUPS, RECORDED, max_half_width=1)


def objective(epochs: EpochSet) -> float:
    """A bowl around BEST, with averaging slightly rewarded (as soups often are)."""
    total = 0.0
    for group, chosen in epochs.items():
        centre = sum(chosen) / len(chosen)
        total += (centre - BEST[group]) ** 2 - 0.05 * (len(chosen) - 1)
    return total


def drive(algorithm, space: CrossoverSpace, budget: int, in_flight: int = 3) -> list[tuple[EpochSet, float]]:
    """Up to ``in_flight`` proposals open at once, told in the order they were asked."""
    seen: list[tuple[EpochSet, float]] = []
    open_: list[Proposal] = []
    while len(seen) < budget:
        while len(open_) < in_flight and len(seen) + len(open_) < budget:
            proposal = algorithm.ask()
            if proposal is None:
                break
            open_.append(proposal)
        if not open_:
            break
        proposal = open_.pop(0)
        value = objective(proposal.epochs)
        algorithm.tell(proposal, value, "complete")
        seen.append((proposal.epochs, value))
    return seen


def _staged(name: str, space: CrossoverSpace, seed: int = 0, algorithm=None) -> Staged:
    """As the search stages them (``build_algorithm``): single epochs, then the greedy soup (before
    a module soup, beside any other algorithm)."""
    config = SearchConfig.with_algorithm(algorithm, seed=seed) if algorithm is not None else SearchConfig(algo=name, seed=seed)
    return build_algorithm(space, config, "min", [], [])[0]


def _bound(name: str, space: CrossoverSpace, seed: int = 0):
    return build(name, {}).bind(space, "min", seed)


@pytest.mark.parametrize("name", NAMES)
def test_every_algorithm_proposes_valid_selections_and_improves_on_the_baselines(name: str) -> None:
    space = _space()
    budget = BUDGET.get(name, 80)
    seen = drive(_staged(name, space), space, budget=budget)
    assert len(seen) >= min(budget, 20)
    for epochs, _ in seen:
        assert set(epochs) == set(GROUPS)
        assert epochs["enc"] == epochs["head"]  # the coupling holds in every proposal
        assert all(e in RECORDED for chosen in epochs.values() for e in chosen)
    singles_best = min(objective(space.same_epoch(e)) for e in RECORDED)
    assert min(v for _, v in seen) < singles_best


@pytest.mark.parametrize("name", NAMES)
def test_every_algorithm_is_deterministic_for_a_seed(name: str) -> None:
    space = _space()
    budget = BUDGET.get(name, 40)
    first = [selection_key(e) for e, _ in drive(_staged(name, space, seed=3), space, budget=budget)]
    again = [selection_key(e) for e, _ in drive(_staged(name, space, seed=3), space, budget=budget)]
    assert first == again


def optuna_study(algorithm) -> optuna.Study | None:
    """The Optuna study behind an algorithm that has one (Ray Tune's ``OptunaSearch`` keeps it)."""
    study = getattr(algorithm, "study", None)
    if study is None:
        study = getattr(getattr(algorithm, "searcher", None), "_ot_study", None)
    return study


@pytest.mark.parametrize("name", NAMES)
def test_pruned_and_failed_trials_do_not_stop_an_algorithm(name: str) -> None:
    space = _space()
    algorithm = _bound(name, space)
    from search.algorithms import Scored

    # warm-started with the single epochs, as the search starts it
    algorithm.warm_start([Scored(space.same_epoch(e), objective(space.same_epoch(e)), SINGLE) for e in RECORDED])
    study = optuna_study(algorithm)
    warm = len(study.trials) if study is not None else 0
    outcomes = []
    for index in range(4):  # fewer than a module soup's candidates: each is a rejection to it
        proposal = algorithm.ask()
        if proposal is None:
            break
        outcomes.append("pruned" if index % 2 else "failed")
        algorithm.tell(proposal, None, outcomes[-1])
    # It goes on proposing valid selections, and learns from the results that do come.
    seen = drive(algorithm, space, budget=BUDGET.get(name, 30))
    assert len(seen) >= 5
    for epochs, _ in seen:
        assert set(epochs) == set(GROUPS) and epochs["enc"] == epochs["head"]
        assert all(e in RECORDED for chosen in epochs.values() for e in chosen)
    if study is not None:  # an Optuna sampler: its study holds each outcome as told, no partial score
        told = study.trials[warm:]
        expected = {"pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
        assert [t.state for t in told[: len(outcomes)]] == [expected[o] for o in outcomes]
        assert all(t.value is None for t in told[: len(outcomes)])
        assert [t.state for t in told[len(outcomes):]] == [TrialState.COMPLETE] * len(seen)
        assert sorted(t.value for t in told[len(outcomes):]) == pytest.approx(sorted(v for _, v in seen))


def test_the_greedy_soup_keeps_only_checkpoints_that_improve() -> None:
    space = _space()
    soup = GreedySoupSearch(space, "min", 0)
    from search.algorithms import Scored

    soup.warm_start([Scored(space.same_epoch(e), objective(space.same_epoch(e)), SINGLE) for e in RECORDED])
    proposals = drive(soup, space, budget=10, in_flight=1)
    ranked = sorted(RECORDED, key=lambda e: objective(space.same_epoch(e)))
    kept, best = [ranked[0]], objective(space.same_epoch(ranked[0]))
    for epoch in ranked[1:]:  # Wortsman et al.'s recipe, written out independently
        value = objective({g: sorted(kept + [epoch]) for g in GROUPS})
        if value < best:
            kept, best = kept + [epoch], value
    assert soup.result()["enc"] == sorted(kept)
    assert len(proposals) == len(RECORDED) - 1


def test_module_soup_starts_from_the_best_single_epoch_when_averaging_hurts() -> None:
    # Every average is worse than its best member here, so the greedy soup kept one checkpoint and
    # each of its trials is a rejected soup: the sweeps must start from that single epoch.
    from search.algorithms import GREEDY, ModuleSoup, Scored

    def hurt(epochs: EpochSet) -> float:
        return sum((sum(c) / len(c) - BEST[g]) ** 2 + 3.0 * (len(c) - 1) for g, c in epochs.items())

    space = _space()
    singles = [Scored(space.same_epoch(e), hurt(space.same_epoch(e)), SINGLE) for e in RECORDED]
    best = min(singles, key=lambda s: s.value)
    others = [e for e in RECORDED if e != best.epochs["enc"][0]]
    pairs = [{g: sorted([best.epochs["enc"][0], e]) for g in GROUPS} for e in others]
    soups = [Scored(epochs, hurt(epochs), GREEDY) for epochs in pairs]
    assert all(s.value > best.value for s in soups)
    algorithm = ModuleSoup(space, "min", 0)
    algorithm.warm_start(singles + soups)
    proposal = algorithm.ask()
    assert proposal is not None
    swept = set(space.units[0].groups)
    assert {g: v for g, v in proposal.epochs.items() if g not in swept} == {
        g: v for g, v in best.epochs.items() if g not in swept
    }


def test_proposals_still_running_when_their_phase_runs_out_are_told_to_that_phase() -> None:
    # With many trials in flight the grid proposes its last selection long before it is scored, and
    # the staged search moves past it once the greedy soup beside it ends; each result must still
    # reach the phase that asked. The soup's results come back first here, the grid's last.
    space = _space()
    algorithm = _staged("grid", space)
    open_: list[Proposal] = []
    told: set[str] = set()
    while True:
        while (proposal := algorithm.ask()) is not None:
            open_.append(proposal)
        if not open_:
            break
        proposal = next((p for p in open_ if p.extra.get("lead")), open_[0])
        open_.remove(proposal)
        algorithm.tell(proposal, objective(proposal.epochs), "complete")
        told.add(selection_key(proposal.epochs))
    assert algorithm.finished
    assert {selection_key(e) for e in space.enumerate()} <= told


@pytest.mark.parametrize("name", NAMES)
def test_every_algorithm_has_typed_settings_that_refuse_an_unknown_one(name: str) -> None:
    from search.errors import SearchError

    assert build(name, {}).name == name  # defaults build
    if name in ALGORITHMS:
        assert ALGORITHMS[name].Params().model_dump() is not None
        message = rf"--algo {name} settings: no_such_setting: Extra inputs are not permitted"
    else:
        message = rf"--algo {re.escape(name)} settings: 'no_such_setting' is a setting of no member"
    with pytest.raises(SearchError, match=message):
        build(name, {"no_such_setting": 1})


@pytest.mark.parametrize("name", NAMES)
def test_an_algorithm_built_unbound_and_bound_later_proposes_as_one_built_on_the_space(name: str) -> None:
    # As Optuna takes a sampler instance: search(..., algorithm=TPE(startup_trials=5)).
    space = _space()
    budget = BUDGET.get(name, 30)
    later = [selection_key(e) for e, _ in drive(_staged(name, space, 3, build(name, {})), space, budget=budget)]
    now = [selection_key(e) for e, _ in drive(_staged(name, space, 3), space, budget=budget)]
    assert later == now and len(later) > len(RECORDED)


def test_settings_reach_the_algorithm() -> None:
    from search.algorithms import TPE, ModuleSoup

    assert ModuleSoup(_space(), "min", 0, sweeps=1).max_sweeps == 1
    sampler = TPE(_space(), "min", 0, startup_trials=3, multivariate=False).searcher._sampler
    assert sampler._n_startup_trials == 3 and sampler._multivariate is False


def test_a_search_config_takes_an_algorithm_instance_and_records_its_name_and_settings() -> None:
    from search.algorithms import TPE, ModuleSoup
    from search.execution.config import SearchConfig

    config = SearchConfig.with_algorithm(ModuleSoup(sweeps=2), num_samples=80)
    assert config.algo == "module-soup" and config.algo_params == {"sweeps": 2}
    assert "algorithm" not in config.model_dump(mode="json")  # the state file records name and settings
    assert SearchConfig(algo="tpe", algo_params={"startup_trials": 4}).algo_params == {"startup_trials": 4}
    with pytest.raises(ValueError, match="pass an instance of an Algorithm subclass"):
        SearchConfig(algorithm="tpe")
    with pytest.raises(ValueError, match=r"--algo tpe settings: startup_trials: Input should be greater than or equal to 0"):
        SearchConfig(algo="tpe", algo_params={"startup_trials": -1})
    assert isinstance(SearchConfig.with_algorithm(TPE()).algorithm, TPE)
