"""The memo: a selection is evaluated once per search; repeats (Optuna suggests duplicates, seeded
points recur) are answered from here, and a repeat of a selection still being scored waits for it."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

#: The Ray namespace of the search's named actors (memo, pools). Kept here, in a module that imports
#: neither torch nor the run directory: the memo actor's process starts in a fraction of the time.
NAMESPACE = "sweetspot"


@ray.remote(num_cpus=0)
class SelectionMemo:
    """selection key -> full-split result; claims keep two trials from scoring the same selection."""

    def __init__(self, wait_seconds: float = 600.0) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, tuple[str, asyncio.Event]] = {}
        self.answered = 0
        self.wait_seconds = wait_seconds
        self.workers: set[str] = set()
        self.all_in = asyncio.Event()
        #: How often the driver said there may be work (``wake``); a standby trial waits for the next.
        self.wakes = 0
        self.woken = asyncio.Event()
        #: Workers Tune is starting in place of ones that died (``expect_replacement``), and the
        #: event set once they have all started.
        self.replacing = 0
        self.replaced = asyncio.Event()
        self.replaced.set()

    async def claim(self, key: str, owner: str) -> tuple[str, dict[str, Any] | None]:
        """("hit", result), or ("mine", None) to score it, after waiting out another trial's claim.

        A trial retried after its worker died claims again under the same ``owner`` and gets it
        back; a claim nobody finishes within ``wait_seconds`` passes to the waiting trial.
        """
        while True:
            if key in self.results:
                self.answered += 1
                return "hit", self.results[key]
            held = self.pending.get(key)
            if held is None or held[0] == owner:
                self.pending[key] = (owner, held[1] if held else asyncio.Event())
                return "mine", None
            try:
                await asyncio.wait_for(held[1].wait(), self.wait_seconds)
            except asyncio.TimeoutError:
                self.pending[key] = (owner, held[1])
                return "mine", None

    async def put(self, key: str, result: dict[str, Any], wait: float = 0.0) -> None:
        """Keep ``result``; then, while a replacement worker starts, wait for it (``await_replacement``)."""
        self.results[key] = result
        self._release(key)
        await self.await_replacement(wait)

    async def expect_replacement(self) -> None:
        """A trial's worker is gone and Tune starts another for it. Tune would hand that trial to the
        first worker to finish and stop the new one while it starts, so until it has started
        (``gather``) the other workers' trials wait at their end (``await_replacement``)."""
        self.replacing += 1
        self.replaced.clear()

    async def await_replacement(self, timeout: float) -> None:
        """Return once the workers being replaced have started, or after ``timeout`` seconds (then
        nobody waits for them any more: the cluster may have no room for them)."""
        if self.replaced.is_set() or timeout <= 0:
            return
        try:
            await asyncio.wait_for(self.replaced.wait(), timeout)
        except asyncio.TimeoutError:
            self._replaced()

    def _replaced(self) -> None:
        self.replacing = 0
        self.replaced.set()

    async def release(self, key: str, owner: str) -> None:
        """The claiming trial stopped before a full score (early stop, error): others may claim."""
        held = self.pending.get(key)
        if held is not None and held[0] == owner:
            self._release(key)

    def _release(self, key: str) -> None:
        held = self.pending.pop(key, None)
        if held is not None:
            held[1].set()

    async def gather(self, worker: str, expected: int, timeout: float) -> int:
        """Wait until ``expected`` trial workers have started (or ``timeout``); how many have.

        Tune hands a pending trial to a worker that just went idle and stops the worker it was
        starting for it: with trials shorter than a worker's start (imports, model, data), one
        worker would score every trial. A new worker's first trial waits here until the others are
        up, so every worker slot starts and stays busy.
        """
        self.workers.add(worker)
        if self.replacing:
            self.replacing -= 1
            if not self.replacing:
                self.replaced.set()
        if len(self.workers) >= expected:
            self.all_in.set()
        else:
            try:
                await asyncio.wait_for(self.all_in.wait(), timeout)
            except asyncio.TimeoutError:
                self.all_in.set()  # a barrier at the start only: later workers do not wait
        return len(self.workers)

    async def open_gate(self) -> None:
        """The search cannot fill every slot now (a phase of fewer trials): nobody waits for them."""
        self.all_in.set()
        self._replaced()

    async def wake(self, wakes: int) -> None:
        """The driver's ``wakes``-th call: the algorithm may have work, standby trials end."""
        if wakes > self.wakes:
            self.wakes = wakes
            self.woken.set()
            self.woken = asyncio.Event()

    async def standby(self, since: int, timeout: float) -> None:
        """Return once the driver wakes after its ``since``-th call (at once if it has), or after
        ``timeout`` seconds."""
        if self.wakes > since:
            return
        try:
            await asyncio.wait_for(self.woken.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def stats(self) -> dict[str, int]:
        return {"scored": len(self.results), "answered": self.answered}


def memo_actor(search_id: str) -> Any:
    """The search's memo, pinned to the driver's node: losing a worker node must not lose it."""
    here = ray.get_runtime_context().get_node_id()
    return SelectionMemo.options(
        name=f"memo-{search_id}", namespace=NAMESPACE, get_if_exists=True, max_concurrency=1000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote()
