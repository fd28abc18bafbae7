"""``search``: Ray Tune + Optuna over crossover selections of one run, confirmed and evaluated.

The search split (part of validation, in shards) scores every trial; a held-back confirm part
picks among the top candidates; the test split is used once, by the evaluate step, at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from modules.atomic import write_json_atomic
from modules.combine.batchnorm import has_batchnorm
from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec, is_better, loss_sign
from modules.spec.selection import SelectionError, parse_selection
from search.algorithms import (
    ALGORITHMS,
    SINGLE,
    Chain,
    GreedySoupSearch,
    Points,
    Proposal,
    Staged,
    Together,
    build,
)
from search.algorithms.chain import members_of
from search.algorithms.space import CrossoverSpace, EpochSet, SpaceError, selection_key
from search.errors import SearchError
from search.execution.cluster import (
    create_pools,
    only_this_machine,
    start_ray_for_search,
    worker_slots,
)
from search.execution.config import SearchConfig
from search.execution.early_stop import SamplerASHA
from search.execution.finished_log import FinishedLog, read_finished
from search.execution.memo import memo_actor
from search.execution.pool import kill_pools, pool_stats
from search.execution.progress import ProgressLine
from search.execution.results import (
    ScoredSelection,
    SearchResult,
    baselines_from,
    trial_rows,
    with_answered,
)
from search.execution.resume_trust import record_search
from search.execution.search_state import STATE_NAME, TUNE_DIR, check_outputs, search_state
from search.execution.trainable import TrialContext, crossover_trial, rescore, rescore_here
from search.execution.tune_searcher import (
    GIVE_UP_AFTER,
    METRIC,
    CrossoverSearcher,
    WakeOnRestart,
    read_answered,
    read_proposals,
)
from search.scoring.validation_cut import cut_validation


def _check_storage(
    url: Any, config: SearchConfig, selections: list[EpochSet] | None, state: dict[str, Any] | None
) -> str | None:
    """Refuse ``--optuna-storage`` where no Optuna study runs, or a resume with another storage."""
    if url is None:
        if state is not None and state.get("optuna_storage"):
            return f"the Optuna study goes on in {state['optuna_storage']}, where the search began"
        return None
    from search.algorithms.optuna_samplers import OptunaAlgorithm

    algorithm = config.algorithm.members[-1] if isinstance(config.algorithm, Chain) else config.algorithm
    kind = type(algorithm) if algorithm is not None else members_of(config.algo, ALGORITHMS)[-1]
    if selections is not None or not issubclass(kind, OptunaAlgorithm):
        what = "given selections" if selections is not None else f"--algo {config.algo}"
        raise SearchError(
            f"{url}: {what} runs no Optuna sampler, so there is no study to keep; use --algo tpe, cmaes,"
            " gp or random (or a chain ending in one, e.g. sweeps+tpe), or leave --optuna-storage out",
            param="optuna_storage",
        )
    if state is not None and "optuna_storage" not in state:
        raise SearchError(
            f"{url}: the search began without --optuna-storage, so its study is not stored; resume without it",
            param="optuna_storage",
        )
    if state is not None and state["optuna_storage"] != str(url):
        raise SearchError(
            f"{url}: the search began with its study in {state['optuna_storage']}; resume it with that storage",
            param="optuna_storage",
        )
    return None


def _analysis_candidates(analysis: Any, run: RunDir) -> dict[str, list[int]]:
    """Each group's plateau window and its two neighbouring checkpoints on each side, plus its pick."""
    out: dict[str, list[int]] = {}
    recorded = run.epochs
    for group in run.groups:
        window = analysis.plateau_windows.get(group)
        pick = analysis.picks.epochs_for(group, recorded) if group in analysis.picks.root else []
        lo, hi = (window if window else (min(pick or recorded), max(pick or recorded)))
        inside = [i for i, e in enumerate(recorded) if lo <= e <= hi] or [0]
        first, last = max(0, inside[0] - 2), min(len(recorded) - 1, inside[-1] + 2)
        out[group] = sorted(set(recorded[first : last + 1]) | set(pick))
    return out


def build_algorithm(
    space: CrossoverSpace, config: SearchConfig, mode: str, seeds: list[Proposal], notes: list[str],
    study: dict[str, Any] | None = None,
) -> tuple[Staged, int]:
    """Baselines first (the analysis pick, each single epoch, the greedy soup), then the algorithm:
    ``config.algorithm`` (an instance the caller built) or ``config.algo`` with ``config.algo_params``;
    ``study`` (``storage``, ``study_name``) keeps an Optuna sampler's study in that storage."""
    n = len(space.recorded)
    algorithm = config.algorithm if config.algorithm is not None else build(config.algo, config.algo_params)
    if study is not None:  # the sampler's study: the last member of a chain holds it
        (algorithm.members[-1] if isinstance(algorithm, Chain) else algorithm).keep_study(**study)
    algorithm.bind(space, mode, config.seed)
    phases: list[Any] = []
    points = list(seeds)
    with_soup = config.baselines and algorithm.takes_baselines
    if with_soup:
        points += [Proposal(space.same_epoch(e), SINGLE) for e in space.recorded]
    if points:
        phases.append(Points(space, mode, config.seed, points))
    if algorithm.follows_soup:
        if not with_soup:
            raise SearchError(f"--algo {algorithm.name} starts from the greedy soup: drop --no-baselines")
        phases += [GreedySoupSearch(space, mode, config.seed), algorithm]
    elif with_soup:  # the greedy soup adds one checkpoint at a time: the sampler fills the other workers
        phases.append(Together(space, mode, config.seed, GreedySoupSearch(space, mode, config.seed), algorithm))
    else:
        phases.append(algorithm)
    # The baselines are told to the sampler but counted apart from --num-samples: measured on exhaustive
    # truth (benchmarks/bench_search_quality.py), counting them cost the sampler most of its quality.
    baselines = len(points) + (n - 1 if with_soup else 0)
    return Staged(space, mode, config.seed, phases), baselines


def _as_epoch_set(chosen: Mapping[str, Any], run: RunDir, index: int) -> EpochSet:
    """group -> epochs averaged, from lists of epochs or the selection.json forms (an epoch,
    {"average": [first, last]}, {"epochs": [...]})."""
    if not isinstance(chosen, Mapping):
        raise SearchError(f"selections[{index}] is {type(chosen).__name__}; give a mapping of group -> epochs")
    out: EpochSet = {}
    for group, value in chosen.items():
        if isinstance(value, (list, tuple)):
            out[group] = sorted(int(e) for e in value)
            continue
        try:
            out[group] = parse_selection({group: value}, f"selections[{index}]").epochs_for(group, run.epochs)
        except SelectionError as error:
            raise SearchError(str(error)) from None
    return out


def _check_selections(selections: list[EpochSet], run: RunDir) -> None:
    if not selections:
        raise SearchError("selections is empty; give at least one group -> epochs mapping")
    for index, chosen in enumerate(selections):
        if set(chosen) != set(run.groups) or any(not v or set(v) - set(run.epochs) for v in chosen.values()):
            raise SearchError(
                f"selections[{index}] must map every group of the run {run.groups} to recorded epochs"
                f" {run.epochs}; got {dict(chosen)}"
            )


@dataclass
class _Plan:
    """What the search will do, decided before Ray starts."""

    cut: Any
    update_bn: bool
    space: CrossoverSpace
    algorithm: Staged
    analysis_pick: EpochSet | None
    num_samples: int
    notes: list[str]


def _plan(
    run: RunDir, spec: Spec, config: SearchConfig, analysis: Any, data: Mapping[str, Any], selections: list[EpochSet] | None,
    study: dict[str, Any] | None = None,
) -> _Plan:
    notes: list[str] = []
    cut = cut_validation(data["val"], data["train"], config.confirm_fraction, config.shards, config.seed)
    skeleton = _skeleton(spec)
    with_bn = has_batchnorm(skeleton)
    modules = dict(skeleton.named_modules())
    unknown = [m for m in config.prefix_modules if m not in modules]
    if unknown:
        raise SearchError(
            f"prefix module(s) {unknown} are not submodules of the spec's model; name one of"
            f" {[n for n, _ in skeleton.named_children()][:8]}"
        )
    update_bn = config.update_bn
    if update_bn is None:
        update_bn = with_bn and spec.batches is not None
    elif update_bn and spec.batches is None and with_bn:
        raise SearchError("--update-bn needs the spec's batches callable (it feeds the train split to BatchNorm)")
    candidates = None
    if config.candidates == "analysis":
        if analysis is None:
            raise SearchError("--candidates analysis needs the analysis: pass --analysis DIR (from sweetspot analyze)")
        candidates = _analysis_candidates(analysis, run)
    half = config.max_half_width if config.include_averages else 0
    try:
        space = CrossoverSpace.build(spec, run.groups, run.epochs, candidates, half)
    except SpaceError as error:
        raise SearchError(str(error)) from None
    seeds = []
    analysis_pick = None
    if analysis is not None:
        analysis_pick = {g: analysis.picks.epochs_for(g, run.epochs) for g in run.groups if g in analysis.picks.root}
        if set(analysis_pick) == set(run.groups):
            seeds.append(Proposal(analysis_pick, "analysis pick"))
    seeds.append(Proposal(space.same_epoch(run.epochs[-1]), "last epoch"))
    mode = spec.objective.mode
    num_samples = config.num_samples
    if selections is not None:
        selections = [_as_epoch_set(chosen, run, index) for index, chosen in enumerate(selections)]
        _check_selections(selections, run)
        points = [Proposal(chosen, "given") for chosen in selections]
        algorithm = Staged(space, mode, config.seed, [Points(space, mode, config.seed, points)])
        num_samples = len(points)
    else:
        algorithm, baselines = build_algorithm(space, config, mode, seeds, notes, study)
        num_samples = config.num_samples + baselines
        grid_size = len(space.enumerate()) if config.algo == "grid" else 0
        if grid_size and config.num_samples < grid_size:
            notes.append(
                f"the grid holds {grid_size} selections but --num-samples is {config.num_samples}:"
                " it was not searched to the end"
            )
    return _Plan(cut, update_bn, space, algorithm, analysis_pick, num_samples, notes)


def _skeleton(spec: Spec) -> torch.nn.Module:
    """The spec's model built without memory on the meta device when the factory allows it (a
    730M model need not be built on the driver to see its structure)."""
    try:
        with torch.device("meta"):
            return spec.build_model()
    except Exception:  # noqa: BLE001 - a factory that cannot build on meta is built for real
        return spec.build_model()


def run_search(
    run: RunDir,
    spec: Spec,
    output: Path,
    config: SearchConfig,
    analysis: Any = None,
    splits: Mapping[str, Any] | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    selections: list[EpochSet] | None = None,
    optuna_storage: str | os.PathLike[str] | None = None,
    trust_resume: bool = False,
) -> SearchResult:
    """Search ``run``'s crossover selections; ``analysis`` (picks and plateau windows) seeds it.

    With ``selections`` (group -> epochs averaged), exactly those are scored, as trials, and the
    best of them is confirmed: no baselines, no algorithm. With ``optuna_storage`` (an RDB URL),
    the Optuna sampler's study is kept there as ``sweetspot-search-<search id>``. ``resume`` continues the search in
    ``output`` only when this user's records say they wrote it, or with ``trust_resume``
    (``search.execution.resume_trust``): resuming unpickles the folder's state.
    """
    started, started_at = time.perf_counter(), time.time()
    output = Path(output).resolve()
    state = check_outputs(run, spec, output, config, resume, trust_resume)
    storage_note = _check_storage(optuna_storage, config, selections, state if resume else None)
    data = dict(splits) if splits is not None else spec.load_data()
    search_id = state["search_id"] if state else uuid.uuid4().hex[:12]
    study = None
    if optuna_storage is not None:
        from search.tracking.optuna_storage import open_storage, search_study_name

        study = {"storage": open_storage(optuna_storage), "study_name": search_study_name(search_id)}
    plan = _plan(run, spec, config, analysis, data, selections, study)
    if study is not None:
        plan.notes.append(f"the Optuna study is kept in {optuna_storage} as {study['study_name']}")
    if storage_note:
        plan.notes.append(storage_note)
    mode = spec.objective.mode
    start_ray_for_search(address, config)
    output.mkdir(parents=True, exist_ok=True)
    stored = {"optuna_storage": str(optuna_storage), "optuna_study": study["study_name"]} if study else {}
    if resume and state is not None and "optuna_storage" in state and not stored:
        stored = {k: state[k] for k in ("optuna_storage", "optuna_study") if k in state}
    write_json_atomic(output / STATE_NAME, {**search_state(run, spec, config, search_id), **stored})
    record_search(output, search_id)  # this user wrote it: a later --resume need not ask
    memo = memo_actor(search_id)
    pools = create_pools(search_id, run.address, config.pool_memory)
    try:
        context = TrialContext(
            search_id, run.address, spec, [ray.put(plan.cut)], spec.objective.metric, mode,
            plan.update_bn, list(config.prefix_modules), config.prefix_cache_memory, config.pool_memory,
            max(1, int(config.cpus_per_trial)),
            worker_slots(config.cpus_per_trial, config.gpus_per_trial, min(config.max_concurrent or plan.num_samples, plan.num_samples)),
        )
        if resume:
            finished = read_finished(output)
            ray.get([memo.put.remote(key, result) for key, result in finished.items()])
        results = _run_tune(context, plan, config, mode, output, resume, progress)
        trials = with_answered(trial_rows(results, run.groups, read_proposals(output)), read_answered(output))
        # a resumed search's rows include the trials of the run before it: not of this run's seconds
        earlier = int((trials["finished_at"] < int(started_at)).sum()) if resume and not trials.empty else 0
        finished = trials[trials["status"] == "finished"] if not trials.empty else trials
        if finished.empty:
            errors = trials["error"].dropna().unique().tolist()[:3] if not trials.empty else []
            raise SearchError(
                f"no trial finished (the search stops after {GIVE_UP_AFTER} trials fail with none"
                f" finished); the trials' errors: {errors}"
            )
        sign = loss_sign(mode)
        # stable: of a selection's rows the first (the trial that scored it, not a duplicate it answered)
        best_rows = finished.sort_values("objective", key=lambda s: sign * s, kind="stable").drop_duplicates("selection")
        top = [
            ScoredSelection(json.loads(r.selection), float(r.objective), origin=str(r.origin))
            for r in best_rows.head(config.top_k).itertuples()
        ]
        baselines = baselines_from(finished, sign)
        if plan.cut.confirm is not None or config.shards > 1:
            _rescore_all(context, config, [*top, *baselines.values()], address)
        # else the trials already scored the whole search part: nothing to rescore
        pick = top[0]
        for candidate in top[1:]:
            if is_better(_judged(candidate), _judged(pick), mode):
                pick = candidate
        pool = pool_stats(search_id)
        memo_stats = ray.get(memo.stats.remote())
    finally:
        kill_pools(search_id)
        del pools
        ray.kill(memo)
        _wait_until_released(search_id)
    notes = plan.notes
    if resume:
        notes.append("resumed: Tune keeps the first run's trial budget, so a new --num-samples does not extend it")
    if plan.cut.confirm is None:
        notes.append("--confirm-fraction 0: the pick is the best on the search split itself, with no held-back check")
    settings = {
        **config.model_dump(mode="json"), "update_bn": plan.update_bn, "search_examples": plan.cut.search_size,
        "confirm_examples": plan.cut.confirm_size, "space_size": plan.space.size(),
        "units": [u.name for u in plan.space.units],
        "optuna_study": study["study_name"] if study else (state or {}).get("optuna_study"),
    }
    return SearchResult(
        spec.objective.metric, mode, trials, pick, top, baselines, plan.analysis_pick,
        time.perf_counter() - started, pool, memo_stats, settings, notes, earlier_trials=earlier,
    )


def _wait_until_released(search_id: str, seconds: float = 30.0) -> None:
    """Wait (briefly) until Ray has let go of the names of this search's killed memo and pools: a
    resume of the same search in the same Ray session (``get_if_exists``) would get the dying actor."""
    names = (f"memo-{search_id}", f"pool-{search_id}-")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        live = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(names)]
        if not live:
            return
        time.sleep(0.05)


def _judged(candidate: ScoredSelection) -> float:
    """The score the pick is chosen by: the held-back confirm part, else the whole search part."""
    return candidate.confirm_score if candidate.confirm_score is not None else candidate.search_score


def _rescore_all(
    context: TrialContext, config: SearchConfig, candidates: list[ScoredSelection], address: str | None
) -> None:
    """Score the top candidates and the baselines on the whole search part and the confirm part,
    so all of them are compared on the same numbers (not on shard-weighted trial scores)."""
    unique = {selection_key(c.epochs): c.epochs for c in candidates}
    if config.gpus_per_trial == 0 and only_this_machine(address):  # no process to start for a few evaluations
        scores = rescore_here(context, list(unique.values()))
    else:
        task = rescore.options(num_cpus=config.cpus_per_trial, num_gpus=config.gpus_per_trial)
        scores = ray.get(task.remote(context, list(unique.values())))
    by_key = dict(zip(unique, scores))
    for candidate in candidates:
        candidate.search_score, candidate.confirm_score = by_key[selection_key(candidate.epochs)]


def _run_tune(
    context: TrialContext, plan: _Plan, config: SearchConfig, mode: str, output: Path, resume: bool, progress: bool
) -> Any:
    trainable = tune.with_resources(
        tune.with_parameters(crossover_trial, context=context),
        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
    )
    scheduler = None
    if config.shards > 1:
        scheduler = SamplerASHA(
            time_attr="shard", metric=METRIC, mode=mode, max_t=config.shards, grace_period=1, reduction_factor=2
        )
    tune_path = str(output / TUNE_DIR)
    progress_line = ProgressLine(plan.num_samples, mode, enabled=progress)
    ProgressLine.shown = progress  # a restored line (pickled by the first run) follows this run's choice
    experiment = os.path.join(tune_path, "crossover")
    # Tune saves its experiment state every 10 s by default; a trial finished after the last save
    # is run again on resume (answered from the memo then; saving often keeps that rare). Tune's
    # own output would interleave its tables with our progress line. Tune keeps one trial pending
    # for a searcher of its own, so its workers start one after another (seconds each) and a
    # worker started for a trial another took is waited for at the end: as many as the slots.
    # Of Tune's own loggers only the JSON one (each trial's params.json and result.json): a trial is
    # one or a few results, the CSV copy and a TensorBoard event file per trial are files and driver
    # seconds (about 8 ms a trial, while the workers wait for their next trial) nobody reads.
    pending = str(max(1, context.worker_slots))
    with _environment(
        TUNE_GLOBAL_CHECKPOINT_S="2", RAY_AIR_NEW_OUTPUT="0", TUNE_MAX_PENDING_TRIALS_PG=pending,
        TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
    ):
        if resume and tune.Tuner.can_restore(experiment):
            tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, restart_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=CrossoverSearcher(
                        plan.algorithm, mode, context.search_id, plan.num_samples, config.max_concurrent,
                        config.max_failures, output, context.worker_slots,
                    ),
                    scheduler=scheduler,
                    # the searcher keeps to plan.num_samples and ends the search (it also runs
                    # standby trials and re-asks failed ones, which Tune would count)
                    num_samples=-1,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name="crossover", storage_path=tune_path, verbose=0,
                    callbacks=[progress_line, FinishedLog(output), WakeOnRestart(context.search_id), JsonLoggerCallback()],
                    failure_config=tune.FailureConfig(max_failures=config.max_failures),
                ),
            )
        try:
            results = tuner.fit()
        finally:
            CrossoverSearcher.running.pop(context.search_id, None)
    ProgressLine.close_active()
    return results


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables the user has not set, for the block only."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


__all__ = ["ScoredSelection", "SearchConfig", "SearchError", "SearchResult", "run_search"]
