"""Any registered algorithm as a Ray Tune searcher: each config carries its epoch set."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import ray
from ray.tune import Callback
from ray.tune.search import Searcher

from search.algorithms import Algorithm, Proposal
from search.algorithms.space import selection_key
from search.execution.cluster import alive_nodes
from search.execution.jsonl_log import append_entry, read_entries
from search.execution.memo import NAMESPACE

METRIC = "objective"
#: The result field of a trial whose scoring raised in a worker that goes on: the error, one line.
FAILED = "failed"
#: The search stops when this many trials failed (each after its retries) and none finished.
GIVE_UP_AFTER = 3
#: Duplicates of live selections set aside in one ``suggest`` before it waits for a trial to end.
MAX_HELD_PER_ASK = 8
#: Duplicates answered on the driver from the trial that scored their selection (``answered``).
ANSWERED_NAME = "answered.jsonl"
#: Each trial's config as the searcher gave it: a trial whose node died before it started has none
#: in Tune's results.
PROPOSALS_NAME = "proposals.jsonl"
#: The longest a standby trial holds its worker before Tune asks the searcher again: a safety net,
#: since a trial's end, a new proposal and a trial Tune restarts each wake the standbys.
STANDBY_SECONDS = 120.0


def is_standby(config: dict[str, Any] | None) -> bool:
    """Whether a trial's config (or its result) is a standby's (``CrossoverSearcher``): no selection, no row."""
    return bool(config and config.get("standby"))


def read_answered(output: Path) -> list[dict[str, Any]]:
    """The duplicates a search answered on the driver: the scoring trial's id, the duplicate's
    place among those it answered and its origin; each once (a resume may answer them again)."""
    entries = {(e.get("trial_id"), e.get("index")): e for e in read_entries(output / ANSWERED_NAME)}
    return list(entries.values())


def read_proposals(output: Path) -> dict[str, dict[str, Any]]:
    """trial id -> the config the searcher gave it."""
    return {entry["trial_id"]: entry["config"] for entry in read_entries(output / PROPOSALS_NAME) if "config" in entry}


class CrossoverSearcher(Searcher):
    """Asks the algorithm for selections as Tune frees workers; tells it each trial's outcome.

    A trial ASHA stopped is told as pruned (its partial score never reaches the sampler); a trial
    re-run after ``Tuner.restore`` still reaches it (as a late result). A proposal of a selection a
    live trial is scoring waits here, on the driver, and is told that trial's result.

    A worker slot the algorithm has nothing for (a phase waits for its last trials, the greedy
    soup adds one candidate at a time) gets a standby trial, which holds its worker until a trial
    ends (``SelectionMemo.standby``). Tune keeps an idle worker only while a trial is waiting for
    one, and with every slot busy it keeps none: without standbys, each wait of the algorithm
    stopped the idle workers, and since Tune hands the next trial to the worker that frees first
    and stops the one it was starting for it, trials shorter than a worker's start then ran on one
    worker for the rest of the search.
    """

    #: Class defaults for a searcher pickled before these existed (``--resume`` of an older folder).
    output: Path | None = None
    gate_open = False
    slots = 1
    wakes = 0
    nodes: int | None = None
    #: The searcher of each search running in this process (search id -> searcher), for Tune's
    #: callbacks, which are pickled with the experiment and so hold only the id.
    running: ClassVar[dict[str, CrossoverSearcher]] = {}

    def __init__(
        self,
        algorithm: Algorithm,
        mode: str,
        search_id: str,
        budget: int,
        max_live: int | None = None,
        retries: int = 0,
        output: Path | None = None,
        slots: int = 1,
    ) -> None:
        super().__init__(metric=METRIC, mode=mode)
        self.algorithm = algorithm
        self.search_id = search_id
        # The concurrency limit lives here, not in Tune's ConcurrencyLimiter: that wrapper drops the
        # completion of a trial re-run after Tuner.restore, which must still reach the algorithm.
        self.max_live = max_live
        self.live: dict[str, Proposal] = {}
        self.ended: dict[str, Proposal] = {}
        # Tune retries a trial that fails while running, not one whose node died while it started:
        # such a proposal is asked again as a new trial, up to ``retries`` times.
        self.retries = retries
        self.again: list[Proposal] = []
        self.attempts: dict[str, int] = {}
        #: Fresh selections to ask the algorithm for (re-asked ones come on top, so Tune's own
        #: num_samples is set higher and this is the search's real budget).
        self.budget = budget
        self.asked = 0
        #: Trials that failed for good before any finished: a spec or setting error, not bad luck.
        self.failed_before_any = 0
        self.completed = 0
        #: Proposals of a selection that a live trial is scoring: answered on the driver when it
        #: ends (or asked again as trials if it did not finish), never waiting in a worker slot.
        self.held: dict[str, list[Proposal]] = {}
        #: Where answered duplicates are logged, so each appears in trials.parquet (None: nowhere).
        self.output = output
        #: Trials the cluster runs at once: fewer live than this and nothing to propose opens the
        #: memo's start gate, so no new worker waits for workers that will not come.
        self.slots = slots
        #: Live standby trials (trial id -> the wake count they wait past); ``wakes``: wakes sent.
        self.standing: dict[str, int] = {}
        self.wakes = 0
        #: Set when ``_next`` stopped at ``MAX_HELD_PER_ASK`` duplicates: the algorithm has more.
        self.capped = False
        #: Alive Ray nodes when last looked (None without Ray): fewer at a restart means a lost node.
        self.nodes: int | None = len(alive_nodes()) if ray.is_initialized() else None
        CrossoverSearcher.running[search_id] = self

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self.live:
            return self._config(self.live[trial_id])
        if trial_id in self.standing:
            return self._standby_config(self.standing[trial_id])
        if self.max_live is not None and len(self.live) >= self.max_live:
            return None
        if self.completed == 0 and self.failed_before_any >= GIVE_UP_AFTER:
            return Searcher.FINISHED if not self.live else None
        proposal = self._next()
        if proposal is None:
            if len(self.live) < self.slots:
                self._open_gate()
            done = self.algorithm.finished or self.asked >= self.budget
            if done and not self.live and not self.again and not self.held:
                return Searcher.FINISHED
            # a standby only beside a live trial, whose end wakes it; not when duplicates capped the ask
            if self.live and not done and not self.capped and len(self.live) + len(self.standing) < self.slots:
                if self._memo() is not None:
                    self.standing[trial_id] = self.wakes
                    config = self._standby_config(self.wakes)
                    self._append(PROPOSALS_NAME, {"trial_id": trial_id, "config": config}, durable=False)
                    return config
            return None
        self.live[trial_id] = proposal
        config = self._config(proposal)
        self._append(PROPOSALS_NAME, {"trial_id": trial_id, "config": config}, durable=False)
        if self.standing:  # a standby may hold the worker this trial needs
            self._wake()
        return config

    def _next(self) -> Proposal | None:
        """The next proposal to run as a trial; duplicates of live selections are held back."""
        live_keys = {selection_key(p.epochs) for p in self.live.values()}
        self.capped = False
        for _ in range(MAX_HELD_PER_ASK):
            if self.again:
                proposal: Proposal | None = self.again.pop(0)
            elif self.asked < self.budget:
                proposal = self.algorithm.ask()
                self.asked += proposal is not None
            else:
                return None
            if proposal is None:
                return None
            key = selection_key(proposal.epochs)
            if key not in live_keys:
                return proposal
            self.held.setdefault(key, []).append(proposal)
        self.capped = True
        return None

    @staticmethod
    def _standby_config(since: int) -> dict[str, Any]:
        return {"standby": True, "since": since, "origin": "standby", "epochs": {}, "params": {}, "key": ""}

    @staticmethod
    def _config(proposal: Proposal) -> dict[str, Any]:
        return {
            "epochs": {g: list(v) for g, v in proposal.epochs.items()},
            "origin": proposal.origin,
            "params": dict(proposal.params or {}),
            "key": selection_key(proposal.epochs),
        }

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if self.standing.pop(trial_id, None) is not None or is_standby(result):
            return
        if self.standing:  # the algorithm may have work now: the standby trials end
            self._wake()
        error = error or bool(result and result.get(FAILED))  # failed in a worker that went on
        complete = bool(result and result.get("complete")) and not error
        value = float(result[METRIC]) if complete and result is not None else None
        proposal = self.live.pop(trial_id, None)
        if proposal is None:
            late = self.ended.get(trial_id)
            if late is not None and value is not None:
                self.algorithm.late_result(late, value)
            return
        self.ended[trial_id] = proposal
        self.completed += complete
        self.failed_before_any += error and not self.completed
        key = selection_key(proposal.epochs)
        if error and self.attempts.get(key, 0) < self.retries:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            self.again.append(proposal)
            self._release(key, trial_id)
            return
        state = "complete" if complete else ("failed" if error else "pruned")
        self.algorithm.tell(proposal, value, state)
        held = self.held.pop(key, [])
        if complete:
            for index, duplicate in enumerate(held):  # the same selection, scored once
                self.algorithm.tell(duplicate, value, "complete")
                self._log_answered(trial_id, index, duplicate)
        else:
            self.again.extend(held)  # not finished: the duplicates run as trials of their own
            self._release(key, trial_id)

    def _log_answered(self, trial_id: str, index: int, duplicate: Proposal) -> None:
        # (trial, index) is the same when a resumed searcher answers the same held duplicates again
        entry = {"trial_id": trial_id, "index": index, "origin": duplicate.origin}
        self._append(ANSWERED_NAME, entry, durable=True)

    def _open_gate(self) -> None:
        """Nothing more runs until a trial ends: workers still waiting for others to start go on."""
        memo = None if self.gate_open else self._memo()
        if memo is not None:
            self.gate_open = True
            memo.open_gate.remote()

    def trial_restarted(self) -> None:
        """Tune restarts a trial after a failure (its own retry) on a new worker: the other workers'
        trials wait for it to start (``SelectionMemo.expect_replacement``), and so do the standbys,
        which end now, in case the cluster has no room for it and the trial needs their worker.
        After a node loss nobody waits: the worker's room went with the node."""
        memo = self._memo()
        nodes = len(alive_nodes()) if ray.is_initialized() else 0
        lost_a_node = self.nodes is not None and nodes < self.nodes
        self.nodes = nodes
        if memo is not None and self.slots > 1 and not lost_a_node:
            memo.expect_replacement.remote()
        if self.standing:
            self._wake()

    def _wake(self) -> None:
        memo = self._memo()
        if memo is not None:
            self.wakes += 1
            memo.wake.remote(self.wakes)

    def _append(self, name: str, entry: dict[str, Any], durable: bool) -> None:
        if self.output is not None:
            append_entry(self.output / name, entry, durable)

    def _release(self, key: str, trial_id: str) -> None:
        """Let a waiting duplicate score the selection this trial did not finish."""
        memo = self._memo()
        if memo is not None:
            memo.release.remote(key, trial_id)

    def _memo(self) -> Any:
        """The search's memo, or None when no search runs (the searcher driven on its own); looked
        up once (a round trip to Ray's control store), and not saved with the searcher."""
        handle = self.__dict__.get("_memo_handle")
        if handle is None and ray.is_initialized():
            try:
                handle = self._memo_handle = ray.get_actor(f"memo-{self.search_id}", namespace=NAMESPACE)
            except ValueError:
                return None
        return handle

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({k: v for k, v in self.__dict__.items() if k != "_memo_handle"}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))
        self.__dict__.setdefault("standing", {})
        self.__dict__.setdefault("capped", False)
        CrossoverSearcher.running[self.search_id] = self


class WakeOnRestart(Callback):
    """Tune restarts a failed trial without asking the searcher: wake the standbys for it."""

    def __init__(self, search_id: str) -> None:
        self.search_id = search_id

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        searcher = CrossoverSearcher.running.get(self.search_id)
        if searcher is not None:
            searcher.trial_restarted()
