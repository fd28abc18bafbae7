"""Chains (``--algo sweeps+tpe``): each member runs after the one before, learning all scored before it."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from search.algorithms import SINGLE, Chain, CoordinateSweeps, ModuleSoup, build
from search.algorithms.space import selection_key
from search.errors import SearchError
from search.execution.config import SearchConfig
from search.execution.search_run import build_algorithm
from tests.search.algorithms.test_conformance import _space, drive, objective


def _tpe_study(chain: Chain):
    return chain.members[-1].searcher._ot_study


@pytest.mark.parametrize("first", ["sweeps", "module-soup"])
def test_the_sampler_after_a_finite_member_learns_every_selection_scored_before_it(first: str) -> None:
    space = _space()
    staged, _ = build_algorithm(space, SearchConfig(algo=f"{first}+tpe"), "min", [], [])
    chain = staged.phases[-1] if isinstance(staged.phases[-1], Chain) else staged.phases[-1].sampler
    scored: dict[str, float] = {}
    before_tpe: dict[str, float] = {}
    open_ = []
    while len(scored) < 60:
        while len(open_) < 2 and (proposal := staged.ask()) is not None:
            if proposal.origin == "tpe" and not before_tpe:
                before_tpe = {k: v for k, v in scored.items()}
            open_.append(proposal)
        if not open_:
            break
        proposal = open_.pop(0)
        value = objective(proposal.epochs)
        staged.tell(proposal, value, "complete")
        scored[selection_key(proposal.epochs)] = value
    assert before_tpe, "the sampler never started"
    assert len(before_tpe) > len(space.recorded)  # the baselines and the first member ran first
    # Every selection the space can express that was scored before TPE's first proposal is in its study,
    # with its value: the module soup's result and the sweeps' best among them.
    study = _tpe_study(chain)
    told = {}
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            told[selection_key(space.decode(trial.params))] = trial.value
    expected = {k: v for k, v in before_tpe.items() if space.encode(_decode_key(k)) is not None}
    assert expected and all(told.get(k) == pytest.approx(v) for k, v in expected.items())
    best_before = min(expected.values())
    assert min(told.values()) <= best_before


def _decode_key(key: str):
    import json

    return {g: list(v) for g, v in json.loads(key).items()}


def test_sweeps_walk_each_unit_from_the_best_selection_so_far() -> None:
    space = _space()
    sweeps = CoordinateSweeps(space, "min", 0, passes=1)
    from search.algorithms import Scored

    sweeps.warm_start([Scored(space.same_epoch(e), objective(space.same_epoch(e)), SINGLE) for e in (1, 6)])
    seen = drive(sweeps, space, budget=100, in_flight=1)
    assert sweeps.finished
    # One pass: per unit, every candidate not yet scored, the others at the incumbent; the
    # incumbent after each unit is the best so far (computed here from the objective alone).
    incumbent = min((space.same_epoch(e) for e in (1, 6)), key=objective)
    expected = []
    known = {selection_key(space.same_epoch(e)) for e in (1, 6)}
    for unit in space.units:
        variants = []
        for epoch in unit.candidates:
            epochs = {g: list(v) for g, v in incumbent.items()}
            for group in unit.groups:
                epochs[group] = [epoch]
            if selection_key(epochs) not in known:
                known.add(selection_key(epochs))
                variants.append(epochs)
        expected += variants
        incumbent = min([incumbent, *variants], key=objective)
    assert [selection_key(e) for e, _ in seen] == [selection_key(e) for e in expected]


def test_bad_chains_are_refused_with_the_fix() -> None:
    with pytest.raises(SearchError, match=r"--algo tpe\+sweeps: tpe never ends by itself"):
        build("tpe+sweeps", {})
    with pytest.raises(ValueError, match=r"unknown algorithm 'nope'; choose one of .* or chain them with '\+'"):
        SearchConfig(algo="sweeps+nope")
    with pytest.raises(SearchError, match=r"--algo grid\+tpe: grid cannot be chained"):
        build("grid+tpe", {})
    # a setting goes to every member that has it
    chain = build("module-soup+tpe", {"sweeps": 1, "startup_trials": 3})
    assert isinstance(chain.members[0], ModuleSoup) and chain.members[0].params.sweeps == 1
    assert chain.members[1].params.startup_trials == 3


def test_a_member_that_starts_from_the_greedy_soup_comes_first_or_not_at_all() -> None:
    with pytest.raises(SearchError, match=r"--algo sweeps\+module-soup: module-soup starts from the greedy soup, so it can only come first"):
        build("sweeps+module-soup", {})
    with pytest.raises(SearchError, match=r"unknown algorithm 'sweeps\+'"):
        build("sweeps+", {})


def test_sweeps_start_inside_the_space_when_nothing_it_can_express_was_scored() -> None:
    space = _space()
    sweeps = CoordinateSweeps(space, "min", 0)
    first = sweeps.ask()
    assert first is not None and space.encode(first.epochs) is not None and first.params == space.encode(first.epochs)
    sweeps.tell(first, objective(first.epochs), "complete")
    assert sweeps.ask() is not None  # the sweep goes on from there
