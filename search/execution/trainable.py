"""The Tune trainable: score one selection with the worker's resident model, shard by shard.

With ``reuse_actors=True`` a Tune worker keeps its process between trials, so the model, the
evaluation data (on the device) and the scorer's state live in ``_WORKERS`` across trials.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray import tune

from modules.errors import one_line
from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec
from search.algorithms.space import EpochSet
from search.execution.memo import NAMESPACE
from search.execution.pool import pool_on_this_node
from search.execution.tune_searcher import FAILED, STANDBY_SECONDS, is_standby
from search.scoring.scorer import SelectionScorer
from search.scoring.validation_cut import SearchSplits, weighted_mean


@dataclass
class TrialContext:
    """What every trial needs; small, so Tune hands it over per trial without cost. The data
    itself is one object in the store (``data_ref``), fetched once per worker."""

    search_id: str
    run_path: str
    spec: Spec
    data_ref: list[Any]
    objective: str
    mode: str
    update_bn: bool
    prefix_modules: list[str]
    prefix_cache_bytes: int
    pool_bytes: int
    cpus_per_trial: int
    #: Trials the cluster runs at once (``search.execution.cluster.worker_slots``).
    worker_slots: int = 1


#: Result fields that describe the trial that scored a selection, not the selection's score.
_PER_TRIAL = frozenset({"groups_copied", "bn_recomputed", "bn_reused", "prefix_hits", "eval_seconds", "node", "gpu_ids"})
#: The result field holding what the memo stored for the selection (None before the last shard).
MEMO_RECORD = "memo_record"


class _Worker:
    """One per Tune worker process and search: the model on its device, the data, the scorer."""

    #: Seconds this worker waits for others to start (set once it has started).
    patience = 5.0

    def __init__(self, context: TrialContext) -> None:
        gpu_ids = ray.get_gpu_ids()
        self.device = torch.device("cuda") if gpu_ids and torch.cuda.is_available() else torch.device("cpu")
        torch.set_num_threads(max(1, context.cpus_per_trial))
        splits: SearchSplits = ray.get(context.data_ref[0])
        self.splits = _to_device(splits, self.device)
        run = RunDir(context.run_path)
        key_groups = {key: group for group in run.groups for key in run.group_keys(group)}
        pool = pool_on_this_node(context.search_id, context.run_path, context.pool_bytes)
        self.node = ray.get_runtime_context().get_node_id()

        def fetch(group: str, epoch: int) -> Any:
            (ref,) = ray.get(pool.get.remote(group, epoch))
            return ray.get(ref)

        def fetch_many(keys: list[tuple[str, int]]) -> list[Any]:
            return ray.get(ray.get(pool.get_many.remote(keys)))

        spec = context.spec
        batches = spec.batch_iterator() if spec.batches else None
        train = self.splits.train
        model = spec.build_model().to(self.device)
        self.scorer = SelectionScorer(
            model,
            key_groups,
            fetch,
            spec.evaluator(),
            context.objective,
            (lambda: batches(train)) if batches is not None else None,
            context.update_bn,
            context.prefix_modules,
            context.prefix_cache_bytes,
            fetch_many=fetch_many,
        )


def _to_device(splits: SearchSplits, device: torch.device) -> SearchSplits:
    if device.type == "cpu":
        return splits

    def move(value: Any) -> Any:
        return value.to(device) if hasattr(value, "to") else value

    return SearchSplits(
        move(splits.search), [move(s) for s in splits.shards], splits.shard_sizes,
        move(splits.confirm) if splits.confirm is not None else None, move(splits.train),
        splits.search_size, splits.confirm_size,
    )


_WORKERS: dict[str, _Worker] = {}
_MEMOS: dict[str, Any] = {}


def _run_key(context: TrialContext) -> str:
    # This run of the search (its data's object id), not only the search's id: a resumed search
    # has the same id, and a process Ray reuses from the earlier run holds a worker whose
    # checkpoint pool and memo were killed when that run ended.
    return f"{context.search_id}-{context.data_ref[0].hex()}"


def worker_for(context: TrialContext, gather: bool = False) -> _Worker:
    """This process's worker for the search; ``gather``: a new one waits for the others to start."""
    key = _run_key(context)
    worker = _WORKERS.get(key)
    if worker is None:
        _WORKERS.clear()  # a new search in a reused process frees the previous model
        started = time.perf_counter()
        worker = _WORKERS[key] = _Worker(context)
        # How long to wait for other workers to start: 5 s plus three times this one's own start
        # (they start alike), at most a minute.
        worker.patience = min(60.0, 5.0 + 3 * (time.perf_counter() - started))
        if gather and context.worker_slots > 1:
            ray.get(_memo(context).gather.remote(f"{os.getpid()}-{key}", context.worker_slots, worker.patience))
    return worker


def _memo(context: TrialContext) -> Any:
    key = _run_key(context)
    if key not in _MEMOS:
        _MEMOS.clear()
        _MEMOS[key] = ray.get_actor(f"memo-{context.search_id}", namespace=NAMESPACE)
    return _MEMOS[key]


def crossover_trial(config: dict[str, Any], context: TrialContext) -> None:
    """Score ``config["epochs"]`` on the search shards, reporting after each; memo first."""
    started = time.perf_counter()
    memo = _memo(context)
    if is_standby(config):  # start this worker if new, then hold it until the driver has work
        worker = worker_for(context, gather=True)
        ray.get(memo.standby.remote(config["since"], STANDBY_SECONDS))
        ray.get(memo.await_replacement.remote(worker.patience))
        tune.report({"standby": True, "complete": False, "shard": 0, "objective": float("nan")})
        return
    key = config["key"]
    status, result = ray.get(memo.claim.remote(key, tune.get_context().get_trial_id() or ""))
    base = {"selection": key, "origin": config["origin"], "host": socket.gethostname()}
    if status == "hit":
        tune.report({**result, **base, "from_memo": True, "groups_copied": 0, "trial_seconds": time.perf_counter() - started})
        return
    worker = worker_for(context, gather=True)
    try:
        _score_shards(worker, context, memo, config["epochs"], key, base, started)
        return
    except Exception as error:
        if not survives(error, worker.device):
            raise
        failure = one_line(error)  # as Tune's error_text gives a trial's error
        trace = traceback.format_exc()
    # A Python error of the evaluate code or the model: this trial failed, the process goes on. Tune
    # would stop the worker (a new process: imports, the model, the data on the device). The
    # traceback goes into the trial's result.json: with reused workers Tune's context names the
    # first trial's folder, where an error.txt would land.
    tune.report({**base, FAILED: failure, "traceback": trace, "complete": False, "shard": 0, "objective": float("nan"),
                 "trial_seconds": time.perf_counter() - started})
    patience = worker.patience
    del worker  # the old model goes before the new one is built
    _rebuild(context, patience)


def _rebuild(context: TrialContext, patience: float) -> None:
    """A new model and scorer for this process's worker (the failed trial may have left the old one
    half loaded); without the start gate, which is for workers starting."""
    _WORKERS.clear()
    worker = _WORKERS[_run_key(context)] = _Worker(context)
    worker.patience = patience


def survives(error: BaseException, device: torch.device) -> bool:
    """Whether a worker goes on after ``error`` in a trial: a Python error of the user's code does;
    Ray's errors (a lost pool, a lost node), running out of memory, and on a GPU any RuntimeError
    (a CUDA error can leave the device unusable) end the worker, and Tune retries the trial."""
    if isinstance(error, (ray.exceptions.RayError, MemoryError)):
        return False
    return device.type == "cpu" or not isinstance(error, RuntimeError)


def _score_shards(
    worker: _Worker, context: TrialContext, memo: Any, epochs: EpochSet, key: str, base: dict[str, Any], started: float
) -> None:
    scorer = worker.scorer
    before = scorer.stats.snapshot()
    changed = scorer.load(epochs)
    splits = worker.splits
    per_shard: list[dict[str, float]] = []
    total = len(splits.shards)
    for index, shard in enumerate(splits.shards):
        per_shard.append(scorer.score(shard, f"search:{index}"))
        metrics = weighted_mean(per_shard, splits.shard_sizes[: index + 1]) if total > 1 else per_shard[0]
        after = scorer.stats.snapshot()
        row = {
            **{f"val/{k}": v for k, v in metrics.items()},
            "objective": metrics[context.objective],
            "shard": index + 1,
            "shards": total,
            "complete": index + 1 == total,
            "from_memo": False,
            "groups_copied": len(changed),
            "bn_recomputed": after["bn_recomputes"] - before["bn_recomputes"],
            "bn_reused": after["bn_hits"] - before["bn_hits"],
            "prefix_hits": after["prefix_hits"] - before["prefix_hits"],
            "eval_seconds": (after["seconds_scoring"] - before["seconds_scoring"])
            + (after["seconds_loading"] - before["seconds_loading"]),
            "node": worker.node,
            "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()),
        }
        record = None
        if index + 1 == total:
            record = {k: v for k, v in row.items() if k not in _PER_TRIAL}
            ray.get(memo.put.remote(key, record, worker.patience))
        tune.report({**row, **base, "trial_seconds": time.perf_counter() - started, MEMO_RECORD: record})


def rescore_selections(context: TrialContext, selections: list[EpochSet]) -> list[tuple[float, float | None]]:
    """Whole search split and confirm split scores of ``selections`` (the top candidates)."""
    worker = worker_for(context)
    out = []
    for epochs in selections:
        worker.scorer.load(epochs)
        search = worker.scorer.score(worker.splits.search, "search")[context.objective]
        confirm = None
        if worker.splits.confirm is not None:
            confirm = worker.scorer.score(worker.splits.confirm, "confirm")[context.objective]
        out.append((search, confirm))
    return out


#: ``rescore_selections`` as a Ray task, for trials that need a GPU the driver may not have.
rescore = ray.remote(rescore_selections)


def rescore_here(context: TrialContext, selections: list[EpochSet]) -> list[tuple[float, float | None]]:
    """``rescore_selections`` in this process (the driver), which keeps its torch threads and lets
    go of the model afterwards: a task would start a process and import torch for seconds."""
    threads = torch.get_num_threads()
    try:
        return rescore_selections(context, selections)
    finally:
        _WORKERS.pop(_run_key(context), None)
        torch.set_num_threads(threads)
