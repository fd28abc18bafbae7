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


def test_an_answered_duplicate_is_a_row_of_trials_parquet_under_its_own_origin(tmp_path) -> None:
    # A single epoch held behind the analysis pick of the same selection must still count as a single
    # epoch: the best single epoch baseline reads the rows of that origin.
    import pandas as pd

    from search.execution.results import with_answered
    from search.execution.tune_searcher import read_answered

    space = _space()
    algorithm = Scripted(space, "min", 0)
    algorithm.todo = [Proposal(space.same_epoch(2), "analysis pick"), Proposal(space.same_epoch(2), "single epoch")]
    searcher = CrossoverSearcher(algorithm, "min", "test", budget=10, output=tmp_path)
    searcher.suggest("t1")
    assert searcher.suggest("t2") is None  # held on the driver, no trial
    searcher.on_trial_complete("t1", {"objective": 0.5, "complete": True})
    assert read_answered(tmp_path) == [{"trial_id": "t1", "index": 0, "origin": "single epoch"}]
    # A resumed searcher (restored from a state saved before t1 ended) answers it again: one row still.
    again = CrossoverSearcher(algorithm, "min", "test", budget=10, output=tmp_path)
    again.live, again.held = {"t1": searcher.ended["t1"]}, {searcher._config(searcher.ended["t1"])["key"]: [Proposal(space.same_epoch(2), "single epoch")]}
    again.on_trial_complete("t1", {"objective": 0.5, "complete": True})
    assert len(read_answered(tmp_path)) == 1
    rows = pd.DataFrame([{"trial_id": "t1", "origin": "analysis pick", "objective": 0.5, "from_memo": False,
                          "seconds": 1.5, "finished_at": 10, "status": "finished"}])
    frame = with_answered(rows, read_answered(tmp_path))
    assert list(frame["origin"]) == ["analysis pick", "single epoch"]
    answered = frame[frame["origin"] == "single epoch"].iloc[0]
    assert answered["objective"] == 0.5 and answered["from_memo"] and answered["seconds"] == 0.0
    assert answered["trial_id"] != "t1" and answered["status"] == "finished"


def test_a_trial_that_never_started_still_has_its_selection_in_its_row(tmp_path) -> None:
    # A trial whose node died while it started has no config in Tune's results and no params.json:
    # its row takes the config the searcher gave it, so its selection is never lost.
    from types import SimpleNamespace

    from search.execution.results import trial_rows
    from search.execution.tune_searcher import read_proposals

    space = _space()
    algorithm = Scripted(space, "min", 0)
    searcher = CrossoverSearcher(algorithm, "min", "test", budget=10, output=tmp_path)
    given = searcher.suggest("abcd1234")
    assert read_proposals(tmp_path) == {"abcd1234": given}
    folder = tmp_path / "crossover_trial_abcd1234_3_2026-12-06_21-00-00"
    folder.mkdir()
    lost = SimpleNamespace(metrics={}, config={}, path=str(folder), error=RuntimeError("node died"))
    (row,) = trial_rows([lost], list(space.groups), read_proposals(tmp_path)).to_dict("records")
    assert row["selection"] == given["key"] and row["origin"] == "x" and row["status"] == "failed"
    assert row["choice/enc"] == "[2]"
