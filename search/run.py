"""``search``: Ray Tune + Optuna over crossover selections of one run, confirmed and evaluated.

The search split (part of validation, in shards) scores every trial; a held-back confirm part
picks among the top candidates; the test split is used once, by the evaluate step, at the end.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

from modules.batchnorm import has_batchnorm
from modules.rundir import RunDir
from modules.spec import Spec
from search.algorithms import ALGORITHMS, SINGLE, GreedySoup, Points, Proposal, Staged
from search.cluster import create_pools, start_ray
from search.config import SearchConfig
from search.early_stop import SamplerASHA
from search.errors import SearchError
from search.finished_log import FinishedLog, read_finished
from search.memo import memo_actor
from search.pool import kill_pools, pool_stats
from search.progress import ProgressLine
from search.results import Candidate, SearchResult, baselines_from, trial_rows
from search.space import CrossoverSpace, EpochSet, SpaceError
from search.splits import cut_validation
from search.trainable import TrialContext, crossover_trial, worker_for
from search.tune_searcher import METRIC, CrossoverSearcher

STATE_NAME = "search_state.json"
TUNE_DIR = "tune"


def _better(mode: str, a: float, b: float) -> bool:
    return a < b if mode == "min" else a > b


def check_inputs(run: RunDir, output: Path, config: SearchConfig) -> None:
    resolved = output.resolve()
    run_root = run.path.resolve()
    if resolved == run_root or run_root in resolved.parents:
        raise SearchError(f"output {output} is inside the run directory {run.path}; the run is input only, write elsewhere")
    if len(run.epochs) < 2:
        raise SearchError(f"run {run.path} has {len(run.epochs)} recorded epoch(s); a search needs at least two")


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
    space: CrossoverSpace, config: SearchConfig, mode: str, seeds: list[Proposal], notes: list[str]
) -> Staged:
    """Baselines first (the analysis pick, each single epoch, the greedy soup), then ``config.algo``."""
    n = len(space.recorded)
    phases: list[Any] = []
    points = list(seeds)
    with_soup = config.baselines and config.algo != "grid" and config.num_samples >= 2 * n + 10
    if config.baselines and not with_soup and config.algo != "grid":
        notes.append(
            f"single epochs and the greedy soup were not searched first: they take {2 * n - 1} of the"
            f" {config.num_samples} trials; raise --num-samples to at least {2 * n + 10} to include them"
        )
    if with_soup:
        points += [Proposal(space.same_epoch(e), SINGLE) for e in space.recorded]
    if points:
        phases.append(Points(space, mode, config.seed, points))
    if with_soup:
        phases.append(GreedySoup(space, mode, config.seed))
    algorithm_class = ALGORITHMS[config.algo]
    if config.algo == "module-soup":
        if not with_soup:
            raise SearchError(f"--algo module-soup starts from the greedy soup: it needs --num-samples >= {2 * n + 10}")
        phases.append(algorithm_class(space, mode, config.seed, sweeps=config.module_soup_sweeps))  # type: ignore[call-arg]
    else:
        phases.append(algorithm_class(space, mode, config.seed))
    return Staged(space, mode, config.seed, phases)


@ray.remote
def _rescore(context: TrialContext, selections: list[EpochSet]) -> list[tuple[float, float | None]]:
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


def _check_selections(selections: list[EpochSet], run: RunDir) -> None:
    if not selections:
        raise SearchError("selections is empty; give at least one group -> epochs mapping")
    for index, chosen in enumerate(selections):
        if set(chosen) != set(run.groups) or any(not v or set(v) - set(run.epochs) for v in chosen.values()):
            raise SearchError(
                f"selections[{index}] must map every group of the run {run.groups} to recorded epochs"
                f" {run.epochs}; got {dict(chosen)}"
            )


def _read_state(output: Path) -> dict[str, Any] | None:
    path = output / STATE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


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
) -> SearchResult:
    """Search ``run``'s crossover selections; ``analysis`` (picks and plateau windows) seeds it.

    With ``selections`` (group -> epochs averaged), exactly those are scored, as trials, and the
    best of them is confirmed: no baselines, no algorithm.
    """
    started = time.perf_counter()
    output = Path(output)
    check_inputs(run, output, config)
    state = _read_state(output)
    if resume and state is None:
        raise SearchError(f"--resume: {output} holds no search to resume ({STATE_NAME} is missing); run without --resume")
    if not resume and state is not None and (output / TUNE_DIR).exists():
        raise SearchError(
            f"{output} already holds a search; pass --resume to continue it or choose another --output"
        )
    notes: list[str] = []
    data = dict(splits) if splits is not None else spec.load_data()
    cut = cut_validation(data["val"], data["train"], config.confirm_fraction, config.shards, config.seed)
    model = spec.build_model()
    update_bn = config.update_bn
    if update_bn is None:
        update_bn = has_batchnorm(model) and spec.batches is not None
    elif update_bn and spec.batches is None and has_batchnorm(model):
        raise SearchError("--update-bn needs the spec's batches callable (it feeds the train split to BatchNorm)")
    del model
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
    if selections is not None:
        _check_selections(selections, run)
        points = [Proposal({g: sorted(int(e) for e in v) for g, v in chosen.items()}, "given") for chosen in selections]
        algorithm = Staged(space, mode, config.seed, [Points(space, mode, config.seed, points)])
    else:
        algorithm = build_algorithm(space, config, mode, seeds, notes)

    start_ray(address, config)
    output.mkdir(parents=True, exist_ok=True)
    search_id = state["search_id"] if state else uuid.uuid4().hex[:12]
    (output / STATE_NAME).write_text(json.dumps({"search_id": search_id, "run": str(run.path)}), encoding="utf-8")
    memo = memo_actor(search_id)
    pools = create_pools(search_id, str(run.path.resolve()), config.pool_memory)
    context = TrialContext(
        search_id, str(run.path.resolve()), spec, [ray.put(cut)], spec.objective.metric, mode, update_bn,
        list(config.prefix_modules), config.prefix_cache_memory, config.pool_memory,
        max(1, int(config.cpus_per_trial)),
    )
    trainable = tune.with_resources(
        tune.with_parameters(crossover_trial, context=context),
        {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
    )
    scheduler = None
    if config.shards > 1:
        scheduler = SamplerASHA(
            time_attr="shard", metric=METRIC, mode=mode, max_t=config.shards, grace_period=1, reduction_factor=2
        )
    tune_path = str((output / TUNE_DIR).resolve())
    progress_line = ProgressLine(config.num_samples, mode, enabled=progress)
    if resume:
        finished = read_finished(output)
        ray.get([memo.put.remote(key, result) for key, result in finished.items()])
    # Tune saves its experiment state every 10 s by default; a trial finished after the last save
    # is run again on resume (answered from the memo then, but saving often keeps that rare).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    run_config = tune.RunConfig(
        name="crossover", storage_path=tune_path, verbose=0, callbacks=[progress_line, FinishedLog(output)],
        failure_config=tune.FailureConfig(max_failures=config.max_failures),
    )
    experiment = os.path.join(tune_path, "crossover")
    if resume and tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=CrossoverSearcher(algorithm, mode, search_id),
                scheduler=scheduler,
                num_samples=config.num_samples,
                max_concurrent_trials=config.max_concurrent,
                reuse_actors=True,
            ),
            run_config=run_config,
        )
    # Tune's own output would interleave its tables with our one progress line.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    results = tuner.fit()
    progress_line.close()
    trials = trial_rows(results, run.groups)
    finished = trials[trials["status"] == "finished"] if not trials.empty else trials
    if finished.empty:
        errors = trials["error"].dropna().unique().tolist()[:3] if not trials.empty else []
        raise SearchError(f"no trial finished; first errors: {errors}")

    sign = 1.0 if mode == "min" else -1.0
    best_rows = finished.sort_values("objective", key=lambda s: sign * s).drop_duplicates("selection")
    top_rows = best_rows.head(config.top_k)
    top = [
        Candidate(json.loads(r.selection), float(r.objective), origin=str(r.origin))
        for r in top_rows.itertuples()
    ]
    baselines = baselines_from(finished, sign)
    rescored = ray.get(
        _rescore.options(num_cpus=config.cpus_per_trial, num_gpus=config.gpus_per_trial).remote(
            context, [c.epochs for c in top]
        )
    )
    for candidate, (search_score, confirm_score) in zip(top, rescored):
        candidate.search_score = search_score
        candidate.confirm_score = confirm_score
    judge = (lambda c: c.confirm_score) if cut.confirm is not None else (lambda c: c.search_score)
    pick = top[0]
    for candidate in top[1:]:
        if _better(mode, judge(candidate), judge(pick)):
            pick = candidate
    pool = pool_stats(search_id)
    memo_stats = ray.get(memo.stats.remote())
    kill_pools(search_id)
    del pools
    ray.kill(memo)
    if cut.confirm is None:
        notes.append("--confirm-fraction 0: the pick is the best on the search split itself, with no held-back check")
    settings = {
        **config.model_dump(mode="json"), "update_bn": update_bn, "search_examples": cut.search_size,
        "confirm_examples": cut.confirm_size, "space_size": space.size(), "units": [u.name for u in space.units],
    }
    return SearchResult(
        spec.objective.metric, mode, trials, pick, top, baselines, analysis_pick,
        time.perf_counter() - started, pool, memo_stats, settings, notes,
    )


__all__ = ["Candidate", "SearchConfig", "SearchError", "SearchResult", "run_search", "start_ray"]
