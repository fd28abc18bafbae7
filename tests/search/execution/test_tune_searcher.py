"""The Tune searcher in process (driver side, no trials): a proposal of a selection that a live
trial is scoring waits on the driver and is told that trial's result; if that trial does not
finish, the duplicate runs as a trial of its own."""

from __future__ import annotations

from search.algorithms import Algorithm, Proposal
from search.algorithms.space import CrossoverSpace
from search.execution.tune_searcher import CrossoverSearcher
from tests.search.algorithms.test_conformance import _space


class Scripted(Algorithm):
    """Proposes a fixed list (with a duplicate) and records what it is told."""

    name = "scripted"

    def setup(self) -> None:
        same = self.space.same_epoch(2)
        self.todo = [Proposal(same, "x"), Proposal(dict(same), "x"), Proposal(self.space.same_epoch(4), "x")]
        self.told: list[tuple[dict, float | None, str]] = []

    def ask(self) -> Proposal | None:
        return self.todo.pop(0) if self.todo else None

    def tell(self, proposal: Proposal, value: float | None, state: str) -> None:
        self.told.append((proposal.epochs, value, state))

    @property
    def finished(self) -> bool:
        return not self.todo


def _searcher(space: CrossoverSpace) -> tuple[CrossoverSearcher, Scripted]:
    algorithm = Scripted(space, "min", 0)
    return CrossoverSearcher(algorithm, "min", "test", budget=10), algorithm


def test_a_duplicate_of_a_live_selection_waits_on_the_driver_and_gets_its_result() -> None:
    space = _space()
    searcher, algorithm = _searcher(space)
    first = searcher.suggest("t1")
    second = searcher.suggest("t2")  # the duplicate is held; the next distinct selection runs
    assert first["key"] != second["key"] and second["epochs"] == space.same_epoch(4)
    assert len(searcher.live) == 2  # two trials, not three: no worker waits on the duplicate
    searcher.on_trial_complete("t1", {"objective": 0.5, "complete": True})
    assert [(v, s) for e, v, s in algorithm.told if e == space.same_epoch(2)] == [(0.5, "complete"), (0.5, "complete")]


def test_a_duplicate_runs_as_its_own_trial_when_the_live_one_did_not_finish() -> None:
    space = _space()
    searcher, algorithm = _searcher(space)
    searcher.suggest("t1")
    searcher.suggest("t2")
    searcher.on_trial_complete("t1", {"objective": 0.9, "complete": False})  # stopped early by ASHA
    again = searcher.suggest("t3")
    assert again["epochs"] == space.same_epoch(2)
    assert [(v, s) for e, v, s in algorithm.told] == [(None, "pruned")]
