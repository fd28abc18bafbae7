"""The memo's start gate: a new worker's first trial waits until the cluster's worker slots have
started (Tune would otherwise stop a starting worker and give its trial to an idle one), and goes
on at once when the search cannot fill them."""

from __future__ import annotations

import uuid

import ray

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
