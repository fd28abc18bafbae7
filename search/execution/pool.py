"""The checkpoint pool: one Ray actor per node holds group-epochs in the shared object store.

Each (group, epoch) is read from the run directory once per node and ``ray.put`` as numpy
arrays; trials on that node ``ray.get`` them zero-copy. The pool is bounded: beyond
``capacity_bytes`` the least recently used group-epochs are dropped (their memory is freed once
no trial holds them) and loaded again on demand; the counters say how often that happened.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from modules.rundir.run_dir import RunDir
from search.scoring.scorer import tensors_to_arrays

NAMESPACE = "sweetspot"


@ray.remote(num_cpus=0, max_restarts=2)
class CheckpointPool:
    """Group-epochs of one run on one node, as object references, least recently used first out."""

    def __init__(self, run_path: str, capacity_bytes: int) -> None:
        self.run = RunDir(run_path)
        self.capacity = int(capacity_bytes)
        self.refs: OrderedDict[tuple[str, int], tuple[Any, int]] = OrderedDict()
        self.held_bytes = 0
        self.loads: dict[str, int] = {}
        self.hits = 0
        self.evictions = 0
        self.node_id = ray.get_runtime_context().get_node_id()

    def get(self, group: str, epoch: int) -> list[Any]:
        """``[ObjectRef]`` of the group-epoch's arrays (a list, so Ray hands back the reference)."""
        key = (group, int(epoch))
        if key in self.refs:
            self.hits += 1
            self.refs.move_to_end(key)
            return [self.refs[key][0]]
        arrays = tensors_to_arrays(self.run.read_group(int(epoch), group))
        size = sum(getattr(a, "nbytes", 0) if not isinstance(a, tuple) else a[0].nbytes for a in arrays.values())
        while self.refs and self.held_bytes + size > self.capacity:
            _, (_, dropped) = self.refs.popitem(last=False)
            self.held_bytes -= dropped
            self.evictions += 1
        ref = ray.put(arrays)
        self.refs[key] = (ref, size)
        self.held_bytes += size
        name = f"{group}@{int(epoch)}"
        self.loads[name] = self.loads.get(name, 0) + 1
        return [ref]

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "loads": sum(self.loads.values()),
            "distinct": len(self.loads),
            "reloads": sum(n - 1 for n in self.loads.values()),
            "hits": self.hits,
            "evictions": self.evictions,
            "held_bytes": self.held_bytes,
            "capacity_bytes": self.capacity,
            "loads_by_group_epoch": dict(self.loads),
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
