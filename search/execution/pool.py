"""The checkpoint pool: one Ray actor per node holds group-epochs in the shared object store.

Each (group, epoch) is read from the run directory once per node and ``ray.put`` as numpy
arrays; trials on that node ``ray.get`` them zero-copy. The pool is bounded: beyond
``capacity_bytes`` the least recently used group-epochs are dropped (their memory is freed once
no trial holds them) and loaded again on demand; the counters say how often that happened.
The actor is threaded: a trial whose group-epoch is held never waits behind another's disk read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from modules.rundir.run_dir import RunDir
from search.execution.memo import NAMESPACE


class GroupEpochCache:
    """Least recently used group-epochs, bounded in bytes, safe to call from many threads: a hit
    never waits behind another key's read, and concurrent misses of one key read it once (the
    first reads, the others wait for its result). ``read(group, epoch)`` loads the arrays and
    ``store(arrays)`` keeps them (``ray.put`` in the pool actor)."""

    def __init__(self, read: Callable[[str, int], Any], store: Callable[[Any], Any], capacity_bytes: int) -> None:
        self.read, self.store = read, store
        self.capacity = int(capacity_bytes)
        self.refs: OrderedDict[tuple[str, int], tuple[Any, int]] = OrderedDict()
        self.held_bytes = 0
        self.loads: dict[str, int] = {}
        self.hits = 0
        self.waits = 0
        self.evictions = 0
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Event] = {}

    def get(self, group: str, epoch: int) -> Any:
        key = (group, int(epoch))
        while True:
            with self._lock:
                if key in self.refs:
                    self.hits += 1
                    self.refs.move_to_end(key)
                    return self.refs[key][0]
                loading = self._loading.get(key)
                if loading is None:
                    self._loading[key] = threading.Event()
                else:
                    self.waits += 1
            if loading is None:
                break
            loading.wait()  # another thread reads this key: its result (or, if it failed, a new try)
        try:
            arrays = self.read(group, int(epoch))
            size = sum(a[0].nbytes if isinstance(a, tuple) else getattr(a, "nbytes", 0) for a in arrays.values())
            ref = self.store(arrays)
            with self._lock:
                while self.refs and self.held_bytes + size > self.capacity:
                    _, (_, dropped) = self.refs.popitem(last=False)
                    self.held_bytes -= dropped
                    self.evictions += 1
                self.refs[key] = (ref, size)
                self.held_bytes += size
                name = f"{group}@{int(epoch)}"
                self.loads[name] = self.loads.get(name, 0) + 1
            return ref
        finally:
            with self._lock:
                self._loading.pop(key).set()


#: Threads of a pool actor: hits are served while other threads read from disk.
POOL_THREADS = 16


@ray.remote(num_cpus=0, max_restarts=2, max_concurrency=POOL_THREADS)
class CheckpointPool:
    """Group-epochs of one run on one node, as object references, least recently used first out."""

    def __init__(self, run_path: str, capacity_bytes: int) -> None:
        run = RunDir(run_path)
        # read as numpy arrays: this process never imports torch (seconds of a start per search)
        self.cache = GroupEpochCache(lambda g, e: run.read_group_arrays(e, g), ray.put, capacity_bytes)
        self.node_id = ray.get_runtime_context().get_node_id()

    def get(self, group: str, epoch: int) -> list[Any]:
        """``[ObjectRef]`` of the group-epoch's arrays (a list, so Ray hands back the reference)."""
        return [self.cache.get(group, epoch)]

    def get_many(self, keys: list[tuple[str, int]]) -> list[Any]:
        """``[ObjectRef]`` of each (group, epoch), in order: a trial's changed groups in one call."""
        return [self.cache.get(group, epoch) for group, epoch in keys]

    def stats(self) -> dict[str, Any]:
        c = self.cache
        with c._lock:
            return {
                "node": self.node_id,
                "loads": sum(c.loads.values()),
                "distinct": len(c.loads),
                "reloads": sum(n - 1 for n in c.loads.values()),
                "hits": c.hits,
                "waits": c.waits,
                "evictions": c.evictions,
                "held_bytes": c.held_bytes,
                "capacity_bytes": c.capacity,
                "loads_by_group_epoch": dict(c.loads),
            }


def pool_name(search_id: str, node_id: str) -> str:
    return f"pool-{search_id}-{node_id}"


def pool_on_this_node(search_id: str, run_path: str, capacity_bytes: int) -> Any:
    """This node's pool actor, created pinned to the node on first use (hard node affinity)."""
    node_id = ray.get_runtime_context().get_node_id()
    return CheckpointPool.options(
        name=pool_name(search_id, node_id),
        namespace=NAMESPACE,
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(run_path, capacity_bytes)


def pool_stats(search_id: str) -> list[dict[str, Any]]:
    """Counters of every live pool of this search (one per node that ran trials)."""
    prefix = f"pool-{search_id}-"
    out = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor.get("namespace") == NAMESPACE and actor["name"].startswith(prefix):
            try:
                handle = ray.get_actor(actor["name"], namespace=NAMESPACE)
                out.append(ray.get(handle.stats.remote(), timeout=30))
            except Exception:  # noqa: BLE001 - a pool on a lost node has no counters to give
                continue
    return out


def kill_pools(search_id: str) -> None:
    """Free every pool of this search (and with them the object-store memory they hold)."""
    prefix = f"pool-{search_id}-"
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor.get("namespace") == NAMESPACE and actor["name"].startswith(prefix):
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=NAMESPACE))
            except Exception:  # noqa: BLE001 - already gone
                continue
