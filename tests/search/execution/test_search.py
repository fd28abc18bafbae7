"""The search on a real local Ray with real Optuna: it finds the enumerated optimum, loads each
group-epoch once per node, answers repeats from the memo, keeps couplings, survives a dying worker."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from optuna.trial import TrialState

from modules.combine.model_fit import load_into_model
from modules.combine.plan import plan_from_run
from modules.combine.sources import iter_plan
from modules.errors import UserCodeError
from modules.rundir.run_dir import RunDir
from modules.spec.selection import load_selection
from search.execution.api import search
from search.execution.config import SearchConfig
from search.execution.search_run import SearchError
from tests.modules import _tiny
from tests.search import _faulty

COUPLED = [{"groups": ["encoder", "middle"], "max_epoch_gap": 0}]


def brute_force_optimum(run: RunDir) -> tuple[dict[str, list[int]], float]:
    """Every selection of the coupled space scored with combine's own loader, independently."""
    data = _tiny.load_data()
    model = _tiny.build_model()
    best: tuple[dict[str, list[int]], float] | None = None
    for shared, head in itertools.product(run.epochs, run.epochs):
        epochs = {"encoder": [shared], "middle": [shared], "head": [head]}
        load_into_model(model, iter_plan(plan_from_run(run, epochs)), "run")
        value = _tiny.evaluate(model, data["val"])["loss"]
        if best is None or value < best[1]:
            best = (epochs, value)
    assert best is not None
    return best


def test_grid_search_reaches_the_enumerated_optimum_once_per_selection(
    ray_local: None, tiny_run_path: Path, tmp_path: Path
) -> None:
    run = RunDir(tiny_run_path)
    optimum, value = brute_force_optimum(run)
    result = search(
        run, tmp_path / "out", _faulty.spec(COUPLED), algo="grid", num_samples=100, shards=1,
        confirm_fraction=0.0, progress=False,
    )
    assert result.pick.epochs == optimum
    assert result.pick.search_score == pytest.approx(value, rel=1e-12)
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    seeds = trials["origin"].isin(["last epoch", "analysis pick"]).sum()
    assert seeds == 2 and set(trials["status"]) == {"finished"}
    assert len(trials) == 36 + seeds  # the seeds come back in the grid: answered from the memo
    assert trials["from_memo"].sum() == seeds
    assert trials.loc[~trials["from_memo"], "selection"].is_unique
    (pool,) = result.pool  # one node: every group-epoch read from disk exactly once
    assert pool["loads"] == pool["distinct"] == 3 * len(run.epochs) and pool["reloads"] == 0
    selection = load_selection(tmp_path / "out" / "best_selection.json")
    assert {g: selection.epochs_for(g, run.epochs) for g in run.groups} == optimum
    assert json.loads((tmp_path / "out" / "best_selection.json").read_text())["_test_objective"] is not None
    for name in ("search_report.md", "evaluation.json", "visualizations/convergence.png", "visualizations/per_group.png"):
        assert (tmp_path / "out" / name).is_file(), name
    # the same Evaluation type sweetspot.evaluate returns, headline included
    assert "test" in result.evaluation.headline() and result.evaluation.result.comparisons


def test_tpe_on_fractional_gpus_keeps_couplings_and_retries_a_dead_worker(
    ray_local: None, tiny_run_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "crashed"
    gap = [{"groups": ["middle", "head"], "max_epoch_gap": 1}]
    result = search(
        tiny_run_path, tmp_path / "out", _faulty.spec(gap, crash_marker=str(marker)), algo="tpe",
        num_samples=12, shards=2, confirm_fraction=0.25, include_averages=True, gpus_per_trial=0.5,
        progress=False, evaluate=False,
    )
    assert marker.is_file()  # a worker died mid-trial ...
    trials = result.trials
    # 12 sampler trials on top of the baselines: 2 seeds, 6 single epochs, 5 greedy-soup candidates
    assert len(trials) == 12 + 2 + 6 + 5 and "failed" not in set(trials["status"])  # ... and its trial was retried
    # (in about one run of four the soup makes 4 candidates, not 5, and the sampler has the trial
    # left over: the total stays; the cause is not found yet)
    assert (trials["origin"] == "tpe").sum() >= 12 and (trials["origin"] == "greedy soup candidate").sum() <= 5
    scored = trials[~trials["from_memo"]]
    assert (scored["gpu_ids"].str.len() > 0).all()  # every trial ran on a (fake) GPU share
    for _, row in trials.iterrows():
        middle, head = json.loads(row["choice/middle"]), json.loads(row["choice/head"])
        assert min(middle) - 1 <= min(head) and max(head) <= max(middle) + 1
    assert {"single epoch", "greedy soup candidate", "tpe"} <= set(trials["origin"])
    # the kept soup is the baseline "greedy soup"; a soup trial is only ever a candidate
    soup = result.baselines["greedy soup"]
    assert soup.origin in ("greedy soup", "single epoch") and "greedy soup" not in {t.origin for t in result.top}
    # Tune hands a trial to the first worker to finish and stops the one it was starting for it, and
    # stops an idle worker unless a trial waits for one. So without the wait for the dead worker's
    # replacement every later trial ran in one process, and without standby trials the sampler's
    # trials did, after the single epochs' phase left a worker nothing to do for a moment.
    pids: dict[str, set[int]] = {}
    for path in (tmp_path / "out" / "tune" / "crossover").glob("*/result.json"):
        last = json.loads(path.read_text().splitlines()[-1])
        pids.setdefault(last.get("origin") or "standby", set()).add(last["pid"])
    assert len(set().union(*pids.values())) == 2, pids  # the survivor and the replacement
    assert len(pids["tpe"]) == 2, pids


def test_bad_settings_are_refused_before_any_trial(ray_local: None, tiny_run_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown algorithm"):
        SearchConfig(algo="hyperband")
    with pytest.raises(ValueError, match=r"num_samples\n  Input should be greater than or equal to 1"):
        SearchConfig(num_samples=0)
    with pytest.raises(ValueError, match=r"confirm_fraction\n  Input should be less than 0.9"):
        SearchConfig(confirm_fraction=0.9)
    spec = _faulty.spec()
    with pytest.raises(SearchError, match="no search to resume"):
        search(tiny_run_path, tmp_path / "nothing", spec, resume=True, progress=False)
    with pytest.raises(SearchError, match="inside the run directory"):
        search(tiny_run_path, tiny_run_path / "out", spec, progress=False)
    with pytest.raises(SearchError, match="no node of the cluster has more than 2"):
        search(tiny_run_path, tmp_path / "gpus", spec, gpus_per_trial=4, progress=False)
    with pytest.raises(Exception, match="trust-run-spec"):
        search(tiny_run_path, tmp_path / "trust", progress=False)


def test_an_unreachable_cluster_and_a_one_epoch_run_are_refused_quickly(tmp_path: Path) -> None:
    from modules.rundir.run_dir import RunWriter
    from search.execution.cluster import check_reachable
    from search.execution.search_state import check_inputs

    with pytest.raises(SearchError, match="no Ray cluster answers"):
        check_reachable("127.0.0.1:1")
    model = _tiny.build_model()
    keys = _tiny.spec().assign_groups(model.state_dict())
    writer = RunWriter.create(tmp_path / "one", "tiny", keys)
    state = model.state_dict()
    writer.write_epoch(1, {g: {k: state[k] for k in ks} for g, ks in keys.items()})
    with pytest.raises(SearchError, match="at least two"):
        check_inputs(RunDir(tmp_path / "one"), tmp_path / "out", SearchConfig())


def test_a_spec_whose_trials_all_fail_stops_early_with_the_reason(
    ray_local: None, tiny_run_path: Path, tmp_path: Path
) -> None:
    data = dict(_tiny.SPEC, evaluate="tests.search._faulty:evaluate_without_objective")
    from modules.spec.schema import parse_spec

    with pytest.raises(SearchError, match="without the objective 'loss'"):
        search(tiny_run_path, tmp_path / "out", parse_spec(data, "spec"), num_samples=40, shards=1,
               confirm_fraction=0.0, baselines=False, max_failures=0, evaluate=False, progress=False,
               max_concurrent=1)
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet") if (tmp_path / "out" / "trials.parquet").exists() else None
    assert trials is None  # nothing scored, nothing written as a result
    with pytest.raises(SearchError, match="not submodules"):
        search(tiny_run_path, tmp_path / "out2", _faulty.spec(), prefix_modules=("backbone",), progress=False)


def test_a_trial_whose_evaluation_raises_fails_alone_and_its_worker_scores_the_next(
    ray_local: None, tiny_run_path: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.log"
    result = search(tiny_run_path, tmp_path / "out", _faulty.spec(calls_log=str(calls), failures=2), num_samples=5,
                    shards=1, confirm_fraction=0.0, baselines=False, max_failures=0, evaluate=False, progress=False,
                    max_concurrent=1)
    trials = result.trials
    failed = trials[trials["status"] == "failed"]
    assert list(failed["error"]) == ["ValueError: planted failure"] * 2
    assert (trials["status"] == "finished").sum() == len(trials) - 2 >= 5  # failed trials do not count
    assert len(set(calls.read_text().split())) == 1  # one worker process scored them all: none was replaced
    results = [json.loads(line) for p in (tmp_path / "out").rglob("result.json") for line in p.read_text().splitlines()]
    tracebacks = [r["traceback"] for r in results if r.get("failed")]
    assert len(tracebacks) == 2 and all('raise ValueError("planted' in t for t in tracebacks)
    # The model built again after each failure scores as the run's own weights do.
    run, model, data = RunDir(tiny_run_path), _tiny.build_model(), _tiny.load_data()
    for row in trials[trials["status"] == "finished"].itertuples():
        load_into_model(model, iter_plan(plan_from_run(run, json.loads(row.selection))), "run")
        assert row.objective == pytest.approx(_tiny.evaluate(model, data["val"])["loss"], rel=1e-6)


def test_a_final_evaluation_that_raises_says_the_search_finished_where_and_what_failed(
    ray_local: None, tiny_run_path: Path, tmp_path: Path
) -> None:
    pattern = (
        r"the search finished and wrote its results to .*out \(search_report.md\), but its final evaluation failed:"
        r" evaluate callable 'tests.search._faulty:evaluate' raised ValueError: planted failure in this process on the"
        r" val split with the epochs \{.*\} of run"
    )
    with pytest.raises(UserCodeError, match=pattern) as caught:
        search(tiny_run_path, tmp_path / "out", _faulty.spec(fail_in_process=os.getpid()), num_samples=3, shards=1,
               confirm_fraction=0.0, baselines=False, progress=False, max_concurrent=1)
    assert 'raise ValueError("planted failure in this process")' in caught.value.user_traceback
    assert (tmp_path / "out" / "search_report.md").is_file() and (tmp_path / "out" / "trials.parquet").is_file()


def test_cpus_per_trial_no_node_has_are_refused(ray_local: None, tiny_run_path: Path, tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="cpus per trial is 4 but no node of the cluster has more than 2"):
        search(tiny_run_path, tmp_path / "cpus", _faulty.spec(), cpus_per_trial=4, progress=False)


def test_a_bad_setting_in_python_is_a_sweetspot_error_naming_the_argument(tmp_path: Path) -> None:
    import sweetspot

    with pytest.raises(sweetspot.SweetspotError, match="unknown algorithm 'tpee'") as caught:
        sweetspot.search(tmp_path / "run", tmp_path / "out", algo="tpee")
    assert caught.value.param == "algo"


@pytest.fixture(scope="module")
def asha_search(ray_local: None, tiny_run_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random search over two shards, one trial at a time (so ASHA sees them in a known order),
    without the single-epoch baselines: its output folder."""
    out = tmp_path_factory.mktemp("asha") / "out"
    search(tiny_run_path, out, _faulty.spec(), algo="random", num_samples=8, shards=2, confirm_fraction=0.0,
           baselines=False, max_concurrent=1, evaluate=False, progress=False)
    return out


def _reports(out: Path) -> list[tuple[str, str, list[float]]]:
    """Each trial's (id, origin, objective after each shard) from Tune's own result files, in the
    order Tune created the trials."""
    trials = []
    for path in (out / "tune" / "crossover").glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        order = int(re.match(r"crossover_trial_[0-9a-f]+_(\d+)_", path.parent.name).group(1))
        trials.append((order, lines[0]["trial_id"], lines[0]["origin"], [line["objective"] for line in lines]))
    return [t[1:] for t in sorted(trials)]


def test_asha_stops_sampler_trials_that_trail_after_one_shard_and_never_a_baseline(asha_search: Path) -> None:
    trials = pd.read_parquet(asha_search / "trials.parquet").set_index("trial_id")
    stopped = trials[trials["status"] == "stopped early"]
    assert len(stopped) >= 1 and (stopped["shards_seen"] == 1).all() and stopped["objective"].isna().all()
    finished = trials[trials["status"] == "finished"]
    assert (finished["shards_seen"] == 2).all()
    # ASHA's rule (grace period 1, reduction factor 2), replayed from the scores Tune recorded:
    # after its first shard a trial goes on only if it is not worse than the median of the
    # first-shard scores before it; the baselines (here the last epoch and the analysis pick) always go on.
    seen: list[float] = []
    for trial_id, origin, scores in _reports(asha_search):
        trailing = bool(seen) and scores[0] > float(np.percentile(seen, 50))
        expected = "stopped early" if trailing and origin == "random" else "finished"
        assert trials.loc[trial_id, "status"] == expected, (trial_id, origin, scores, seen)
        seen.append(scores[0])
    assert set(trials.loc[trials["origin"] != "random", "status"]) == {"finished"}
    # a trial stopped early never becomes the pick: its half-scored objective is not comparable
    summary = json.loads((asha_search / "search_summary.json").read_text())
    assert json.dumps(summary["pick"]["epochs"], sort_keys=True) not in set(stopped["selection"])


def test_a_trial_stopped_early_reaches_optunas_study_as_pruned_without_its_partial_score(ray_local: None) -> None:
    from search.algorithms import ALGORITHMS
    from search.algorithms.space import CrossoverSpace
    from search.execution.tune_searcher import CrossoverSearcher
    from tests.search.algorithms.test_conformance import optuna_study

    spec = _faulty.spec()
    space = CrossoverSpace.build(spec, list(spec.groups), [1, 2, 3, 4])
    tpe = ALGORITHMS["tpe"](space, "min", 0)
    searcher = CrossoverSearcher(tpe, "min", "no-such-search", budget=3)
    for trial_id in ("a", "b", "c"):
        assert searcher.suggest(trial_id) is not None
    # As Tune reports them: a trial ASHA stopped after shard 1 of 2, a finished one, an errored one.
    searcher.on_trial_complete("a", {"objective": 0.25, "shard": 1, "complete": False})
    searcher.on_trial_complete("b", {"objective": 0.5, "shard": 2, "complete": True})
    searcher.on_trial_complete("c", None, error=True)
    study = optuna_study(tpe)
    assert [(t.state, t.value) for t in study.trials] == [
        (TrialState.PRUNED, None), (TrialState.COMPLETE, 0.5), (TrialState.FAIL, None)
    ]


def test_resume_refuses_a_folder_this_user_did_not_write_until_trusted(
    asha_search: Path, tiny_run_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rayjobs import cli
    from search.execution.resume_trust import check_resume_trusted, record_search

    settings = dict(algo="random", num_samples=8, shards=2, confirm_fraction=0.0, baselines=False, max_concurrent=1,
                    evaluate=False, progress=False)
    # The folder as it comes from another user or machine: at a path no search of this user wrote
    # (a folder moved or copied looks the same).
    theirs = tmp_path / "theirs"
    shutil.copytree(asha_search, theirs)
    with pytest.raises(SearchError, match=rf"--resume: {theirs} was not written by you: no search of yours was recorded"
                       r".*unpickles the Tune and searcher state.*pass --trust-resume \(trust_resume=True"):
        search(tiny_run_path, theirs, _faulty.spec(), resume=True, **settings)
    code = cli.main(["search", "--checkpoint-dir", str(tiny_run_path), "--output", str(theirs), "--trust-run-spec",
                     "--resume", "--no-progress", "--no-evaluate"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --resume: {theirs} was not written by you") and "--trust-resume" in err

    # A folder this user's search wrote (as a search notes when it starts), whose contents were then
    # swapped for another search's.
    swapped = tmp_path / "swapped"
    record_search(swapped, "0123456789ab")
    shutil.copytree(asha_search, swapped)
    theirs_id = json.loads((theirs / "search_state.json").read_text())["search_id"]
    with pytest.raises(SearchError, match=rf"{swapped} was not written by you: it now holds search '{theirs_id}',"
                       " not the search '0123456789ab' you started there"):
        search(tiny_run_path, swapped, _faulty.spec(), resume=True, **settings)

    # Trusted: resumed (Tune's trials kept, none run again), and recorded as this user's.
    before = pd.read_parquet(asha_search / "trials.parquet")
    resumed = search(tiny_run_path, theirs, _faulty.spec(), resume=True, trust_resume=True, **settings)
    assert sorted(resumed.trials["trial_id"]) == sorted(before["trial_id"])
    check_resume_trusted(theirs, theirs_id)
