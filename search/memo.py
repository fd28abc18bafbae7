"""The memo: a selection is evaluated once per search; repeats (Optuna suggests duplicates, seeded
points recur) are answered from here, and a repeat of a selection still being scored waits for it."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from search.pool import NAMESPACE


@ray.remote(num_cpus=0)
class SelectionMemo:
    """selection key -> full-split result; claims keep two trials from scoring the same selection."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, asyncio.Event] = {}
        self.answered = 0

    async def claim(self, key: str) -> tuple[str, dict[str, Any] | None]:
        """("hit", result), ("mine", None) to score it, after waiting out another trial's claim."""
        while True:
            if key in self.results:
                self.answered += 1
                return "hit", self.results[key]
            event = self.pending.get(key)
            if event is None:
                self.pending[key] = asyncio.Event()
                return "mine", None
            await event.wait()

    async def put(self, key: str, result: dict[str, Any]) -> None:
        self.results[key] = result
        self._release(key)

    async def release(self, key: str) -> None:
        """The claiming trial stopped before a full score (early stop, error): others may claim."""
        self._release(key)

    def _release(self, key: str) -> None:
        event = self.pending.pop(key, None)
        if event is not None:
            event.set()

    async def stats(self) -> dict[str, int]:
        return {"scored": len(self.results), "answered": self.answered}


def memo_actor(search_id: str) -> Any:
    return SelectionMemo.options(
        name=f"memo-{search_id}", namespace=NAMESPACE, get_if_exists=True, max_concurrency=1000
    ).remote()
