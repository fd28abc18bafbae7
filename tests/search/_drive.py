"""Searches run as their own process, for fault tests: ``python -m tests.search._drive MODE RUN OUT``.

MODE ``node-loss``: a cluster (``ray.cluster_utils.Cluster``) of a one-CPU head and a one-CPU
worker node; once five trials have finished, one of them on the worker node, it is removed. MODE ``slow`` (``RUN OUT
[ADDRESS]``): slow trials on the Ray at ADDRESS, else a local Ray (the test kills the driver); ``slow_search(..., resume=True)`` resumes that search. Each
mode prints one JSON line with what the test checks.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray

from search.execution.api import search
from tests.search import _faulty

#: Trials of the node-loss search: five before the node goes, the rest after.
NODE_LOSS_SAMPLES = 12
#: Trials of the ``slow`` search: enough that the test's kill lands mid-search.
SLOW_SAMPLES = 16
#: Trials on top of --num-samples without the other baselines: the analysis pick and the last epoch.
SEEDS = 2


def finished_trials(out: Path) -> int:
    return sum(1 for p in (out / "tune" / "crossover").glob("*/result.json") if '"complete": true' in p.read_text())


def finished_on(out: Path, node_id: str) -> int:
    """Trials finished so far on the node ``node_id`` (each trial reports its node)."""
    return sum(
        1 for p in (out / "tune" / "crossover").glob("*/result.json")
        if '"complete": true' in (text := p.read_text()) and f'"node": "{node_id}"' in text
    )


def node_loss(run: str, out: Path) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, namespace="sweetspot", log_to_driver=False)
    removed: list[float] = []

    def remove_when_five_finished() -> None:
        # ... and one of them on the node to lose (on a busy machine its workers start late)
        while finished_trials(out) < 5 or not finished_on(out, worker.node_id):
            time.sleep(0.1)
        cluster.remove_node(worker)
        removed.append(time.time())

    threading.Thread(target=remove_when_five_finished, daemon=True).start()
    result = search(
        run, out, _faulty.spec(delay=0.4), algo="random", num_samples=NODE_LOSS_SAMPLES, shards=1, confirm_fraction=0.0,
        baselines=False, evaluate=False, progress=False, max_failures=5,
    )
    trials = result.trials
    return {
        "address": cluster.address,
        "removed": bool(removed),
        "trials": len(trials),
        "statuses": trials["status"].value_counts().to_dict(),
        "nodes": int(trials["node"].dropna().nunique()),
        "errors": trials["error"].dropna().tolist(),
        "unfinished_selections": sorted(
            set(trials.loc[trials["status"] != "finished", "selection"]) - set(trials.loc[trials["status"] == "finished", "selection"])
        ),
    }


def slow_search(run: str, out: Path, resume: bool, progress: bool = False, address: str | None = None) -> dict[str, Any]:
    """The slow search (one trial at a time), or its resume: the same settings either way; its
    Optuna study kept in ``study.db`` beside ``out``; on the Ray at ``address`` (default: this process's)."""
    result = search(
        run, out, _faulty.spec(delay=0.3), algo="random", num_samples=SLOW_SAMPLES, shards=1, confirm_fraction=0.0,
        baselines=False, evaluate=False, progress=progress, max_concurrent=1, resume=resume,
        optuna_storage=f"sqlite:///{out.parent / 'study.db'}", address=address,
    )
    return {
        "trials": len(result.trials), "statuses": result.trials["status"].value_counts().to_dict(),
        "earlier": result.earlier_trials, "study": result.settings["optuna_study"],
    }


if __name__ == "__main__":
    mode, run_path, out_path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if mode == "node-loss":
        summary = node_loss(run_path, out_path)
    else:
        summary = slow_search(run_path, out_path, resume=False, address=sys.argv[4] if len(sys.argv) > 4 else None)
    print("RESULT " + json.dumps(summary), flush=True)
    sys.stderr.flush()
    # No ray.shutdown(): after a node loss it can wait many seconds on the removed node. The
    # Ray processes this driver started die with it (and the test kills its process group too).
    os._exit(0)
