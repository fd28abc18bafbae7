"""The memo's start gate: a new worker's first trial waits until the cluster's worker slots have
started (Tune would otherwise stop a starting worker and give its trial to an idle one), and goes
on at once when the search cannot fill them."""

from __future__ import annotations

import uuid

import ray

from search.algorithms import Algorithm, Proposal
from search.execution.memo import memo_actor


def _memo():
    return memo_actor(f"gate-{uuid.uuid4().hex[:8]}")


def test_the_first_workers_wait_for_the_last_slot_to_start(ray_local: None) -> None:
    memo = _memo()
    first = memo.gather.remote("w1", 2, 120.0)
    ready, _ = ray.wait([first], timeout=1.0)
    assert not ready  # waiting for the second worker
    assert ray.get(memo.gather.remote("w2", 2, 120.0), timeout=30) == 2
    assert ray.get(first, timeout=30) == 2


def test_the_driver_opens_the_gate_when_no_more_trials_can_run(ray_local: None) -> None:
    memo = _memo()
    waiting = memo.gather.remote("w1", 4, 120.0)
    ready, _ = ray.wait([waiting], timeout=1.0)
    assert not ready
    memo.open_gate.remote()
    assert ray.get(waiting, timeout=30) == 1
    assert ray.get(memo.gather.remote("w2", 4, 120.0), timeout=30) == 2  # a later worker does not wait


def _searcher(search_id: str, proposals: int):
    from search.algorithms import Proposal
    from search.execution.tune_searcher import CrossoverSearcher
    from tests.search.algorithms.test_conformance import _space
    from tests.search.execution.test_tune_searcher import Scripted

    space = _space()
    algorithm = Scripted(space, "min", 0)
    algorithm.todo = [Proposal(space.same_epoch(e), "x") for e in range(1, proposals + 1)]
    return CrossoverSearcher(algorithm, "min", search_id, budget=10, slots=2)


def test_a_search_that_cannot_fill_the_slots_opens_the_gate_and_one_that_can_does_not(ray_local: None) -> None:
    for proposals, opens in ((1, True), (3, False)):
        search_id = f"gate-{uuid.uuid4().hex[:8]}"
        memo = memo_actor(search_id)
        waiting = memo.gather.remote("w1", 2, 120.0)
        searcher = _searcher(search_id, proposals)
        given = [searcher.suggest(f"t{i}") for i in range(proposals + 1)]
        assert given[-1] is None and all(given[:-1])  # every proposal given, then nothing to give
        ready, _ = ray.wait([waiting], timeout=3.0)
        assert bool(ready) == opens, (proposals, ready)
        memo.open_gate.remote()  # let the other one go


class OneAtATime(Algorithm):
    """Proposes the next selection only once told the last one's score (as the greedy soup adds
    candidates), ``left`` selections in all."""

    name = "one-at-a-time"
    left = 2

    def setup(self) -> None:
        self.waiting = False
        self.told: list[str] = []

    def ask(self) -> Proposal | None:
        if self.waiting or not self.left:
            return None
        self.waiting, self.left = True, self.left - 1
        return Proposal(self.space.same_epoch(1 + self.left % 3), "x")

    def tell(self, proposal: Proposal, value: float | None, state: str) -> None:
        self.waiting = False
        self.told.append(state)

    @property
    def finished(self) -> bool:
        return not self.left and not self.waiting


def test_a_slot_the_algorithm_has_nothing_for_holds_its_worker_until_a_trial_ends(ray_local: None) -> None:
    """Tune stops an idle worker unless a trial waits for one; a standby trial keeps it, and ends
    when the algorithm may have work again (a wake, not a timeout), without reaching the algorithm."""
    from search.execution.tune_searcher import STANDBY_SECONDS, CrossoverSearcher, is_standby
    from tests.search.algorithms.test_conformance import _space

    search_id = f"standby-{uuid.uuid4().hex[:8]}"
    memo = memo_actor(search_id)
    algorithm = OneAtATime(_space(), "min", 0)
    searcher = CrossoverSearcher(algorithm, "min", search_id, budget=10, slots=2)
    first = searcher.suggest("t1")
    standby = searcher.suggest("t2")
    assert not is_standby(first) and is_standby(standby)
    assert searcher.suggest("t3") is None  # both slots taken
    held = memo.standby.remote(standby["since"], STANDBY_SECONDS)
    ready, _ = ray.wait([held], timeout=1.0)
    assert not ready  # holds its worker while nothing is to be done

    searcher.on_trial_complete("t1", {"complete": True, "objective": 0.5})
    ray.get(held, timeout=STANDBY_SECONDS / 3)  # woken by the trial's end, long before its timeout
    searcher.on_trial_complete("t2", {"standby": True, "complete": False, "objective": float("nan")})
    assert algorithm.told == ["complete"]  # the standby's end told the algorithm nothing

    second = searcher.suggest("t4")
    assert not is_standby(second)
    assert is_standby(searcher.suggest("t5"))
    searcher.on_trial_complete("t4", {"complete": True, "objective": 0.4})
    searcher.on_trial_complete("t5", {"standby": True, "complete": False})
    assert searcher.suggest("t6") == CrossoverSearcher.FINISHED  # no standby once the algorithm is done
    # a standby asked for after a wake it missed does not wait at all
    ray.get(memo.standby.remote(0, STANDBY_SECONDS), timeout=STANDBY_SECONDS / 3)
    ray.kill(memo)


def test_a_standby_ends_for_a_new_trial_or_a_restarted_one_and_never_waits_beside_no_trial(ray_local: None) -> None:
    from search.execution.tune_searcher import STANDBY_SECONDS, CrossoverSearcher, is_standby
    from tests.search.algorithms.test_conformance import _space

    search_id = f"standby-{uuid.uuid4().hex[:8]}"
    memo = memo_actor(search_id)
    algorithm = OneAtATime(_space(), "min", 0)
    searcher = CrossoverSearcher(algorithm, "min", search_id, budget=10, slots=3)
    assert not is_standby(searcher.suggest("t1"))
    standby = searcher.suggest("t2")
    held = memo.standby.remote(standby["since"], STANDBY_SECONDS)
    searcher.trial_restarted()  # Tune restarts a failed trial, which needs a worker
    ray.get(held, timeout=STANDBY_SECONDS / 3)
    searcher.on_trial_complete("t2", {"standby": True})
    standby = searcher.suggest("t3")
    held = memo.standby.remote(standby["since"], STANDBY_SECONDS)
    algorithm.waiting = False  # the algorithm has a proposal again (as after a late result)
    assert not is_standby(searcher.suggest("t4"))  # a real trial, which may need the standby's worker
    ray.get(held, timeout=STANDBY_SECONDS / 3)
    searcher.on_trial_complete("t3", {"standby": True})
    for trial in ("t1", "t4"):
        searcher.on_trial_complete(trial, {"complete": True, "objective": 0.5})
    algorithm.left, algorithm.waiting = 1, True  # nothing live, nothing proposed: no standby to wait forever
    assert searcher.suggest("t5") is None
    ray.kill(memo)


def test_while_a_dead_worker_is_replaced_the_others_finish_their_trial_only_once_it_has_started(ray_local: None) -> None:
    """Tune would hand the dead worker's trial to the first worker to finish and stop the new one
    while it starts; the others' trials wait at their end until it has (or until their patience ends)."""
    memo = _memo()
    ray.get(memo.open_gate.remote())  # the search's start is over (an async actor keeps no call order)
    ray.get(memo.expect_replacement.remote())
    finishing = memo.put.remote("a", {"objective": 1.0}, 120.0)
    ready, _ = ray.wait([finishing], timeout=1.0)
    assert not ready  # the survivor's trial holds its worker ...
    assert ray.get(memo.claim.remote("a", "t2"), timeout=30) == ("hit", {"objective": 1.0})  # ... its result is kept
    ray.get(memo.gather.remote("w3", 2, 120.0), timeout=30)  # the replacement has started
    ray.get(finishing, timeout=30)
    ray.get(memo.put.remote("b", {"objective": 2.0}, 120.0), timeout=30)  # nobody is being replaced: no wait
    ray.get(memo.expect_replacement.remote())  # a replacement that never comes (no room left for it) ...
    ray.get(memo.await_replacement.remote(0.5), timeout=30)  # ... is waited for only as long as asked
    ray.get(memo.await_replacement.remote(120.0), timeout=30)  # and then not at all
    ray.kill(memo)


def test_after_a_node_loss_nobody_waits_for_a_replacement(ray_local: None) -> None:
    """A trial restarted after its node died has no room to come back to: no worker waits for it."""
    from search.execution.tune_searcher import CrossoverSearcher
    from tests.search.algorithms.test_conformance import _space

    search_id = f"standby-{uuid.uuid4().hex[:8]}"
    memo = memo_actor(search_id)
    searcher = CrossoverSearcher(OneAtATime(_space(), "min", 0), "min", search_id, budget=10, slots=2)
    assert searcher.nodes == 1
    searcher.nodes = 2  # as if the search had started on two nodes
    searcher.trial_restarted()
    assert searcher.nodes == 1
    ray.get(memo.stats.remote())  # (the searcher's calls to the memo are on their way)
    ray.get(memo.await_replacement.remote(120.0), timeout=30)  # not expecting one: no wait
    ray.kill(memo)
