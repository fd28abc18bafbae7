"""The checkpoint pool's cache, in process with real threads and event gates (no timing): a hit is
served while another key's read is held open, and concurrent misses of one key read it once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from search.execution.pool import GroupEpochCache


def test_a_hit_is_served_while_another_keys_read_is_held_open() -> None:
    gate, reading = threading.Event(), threading.Event()
    reads: list[tuple[str, int]] = []

    def read(group: str, epoch: int) -> dict:
        reads.append((group, epoch))
        if (group, epoch) == ("slow", 2):
            reading.set()
            assert gate.wait(30), "the gate was never opened"
        return {"w": np.zeros(4)}

    cache = GroupEpochCache(read, lambda arrays: arrays, capacity_bytes=1 << 20)
    cache.get("fast", 1)  # now held
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(cache.get, "slow", 2)
        assert reading.wait(30)
        hit = pool.submit(cache.get, "fast", 1)
        assert hit.result(timeout=30)["w"].shape == (4,)  # returned while the slow read is still open
        assert not slow.done()
        gate.set()
        assert slow.result(timeout=30)["w"].shape == (4,)
    assert reads == [("fast", 1), ("slow", 2)] and cache.hits == 1


def test_concurrent_misses_of_one_key_read_it_once() -> None:
    gate, reading = threading.Event(), threading.Event()
    count = {"reads": 0}

    def read(group: str, epoch: int) -> dict:
        count["reads"] += 1
        reading.set()
        assert gate.wait(30)
        return {"w": np.ones(8)}

    cache = GroupEpochCache(read, lambda arrays: arrays, capacity_bytes=1 << 20)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(cache.get, "g", 4)
        assert reading.wait(30)
        others = [pool.submit(cache.get, "g", 4) for _ in range(5)]
        while cache.waits < 5:  # every other caller is waiting on the one read (no sleep: a spin on the counter)
            threading.Event().wait(0.001)
        gate.set()
        results = [f.result(timeout=30) for f in [first, *others]]
    assert count["reads"] == 1 and all(r is results[0] for r in results)
    assert cache.loads == {"g@4": 1}


def test_a_failed_read_passes_the_key_to_the_next_caller() -> None:
    calls = {"n": 0}

    def read(group: str, epoch: int) -> dict:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk hiccup")
        return {"w": np.ones(2)}

    cache = GroupEpochCache(read, lambda arrays: arrays, capacity_bytes=1 << 20)
    try:
        cache.get("g", 1)
    except OSError:
        pass
    assert cache.get("g", 1)["w"].sum() == 2 and calls["n"] == 2


def test_the_cache_stays_within_its_bytes_and_drops_the_least_recently_used() -> None:
    cache = GroupEpochCache(lambda g, e: {"w": np.zeros(100, dtype=np.uint8)}, lambda a: a, capacity_bytes=250)
    for epoch in (1, 2, 1, 3):
        cache.get("g", epoch)
    assert cache.held_bytes <= 250 and set(k for k, _ in cache.refs) == {"g"}
    assert [e for _, e in cache.refs] == [1, 3] and cache.evictions == 1
