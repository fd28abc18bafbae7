"""The search on a real local Ray with real Optuna: it finds the enumerated optimum, loads each
group-epoch once per node, answers repeats from the memo, keeps couplings, survives a dying worker."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from modules.combine.model_fit import load_into_model
from modules.combine.plan import plan_from_run
from modules.combine.sources import iter_plan
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
        num_samples=22, shards=2, confirm_fraction=0.25, include_averages=True, gpus_per_trial=0.5,
        progress=False, evaluate=False,
    )
    assert marker.is_file()  # a worker died mid-trial ...
    trials = result.trials
    # 22 sampler trials on top of the baselines: 2 seeds, 6 single epochs, 5 greedy-soup candidates
    assert len(trials) == 22 + 2 + 6 + 5 and "failed" not in set(trials["status"])  # ... and its trial was retried
    assert (trials["origin"] == "tpe").sum() == 22
    scored = trials[~trials["from_memo"]]
    assert (scored["gpu_ids"].str.len() > 0).all()  # every trial ran on a (fake) GPU share
    for _, row in trials.iterrows():
        middle, head = json.loads(row["choice/middle"]), json.loads(row["choice/head"])
        assert min(middle) - 1 <= min(head) and max(head) <= max(middle) + 1
    assert {"single epoch", "greedy soup candidate", "tpe"} <= set(trials["origin"])
    # the kept soup is the baseline "greedy soup"; a soup trial is only ever a candidate
    soup = result.baselines["greedy soup"]
    assert soup.origin in ("greedy soup", "single epoch") and "greedy soup" not in {t.origin for t in result.top}


def test_bad_settings_are_refused_before_any_trial(ray_local: None, tiny_run_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown algorithm"):
        SearchConfig(algo="hyperband")
    with pytest.raises(ValueError):
        SearchConfig(num_samples=0)
    with pytest.raises(ValueError):
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
    from search.execution.search_run import check_inputs

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
               confirm_fraction=0.0, baselines=False, max_failures=0, evaluate=False, progress=False)
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet") if (tmp_path / "out" / "trials.parquet").exists() else None
    assert trials is None  # nothing scored, nothing written as a result
    with pytest.raises(SearchError, match="not submodules"):
        search(tiny_run_path, tmp_path / "out2", _faulty.spec(), prefix_modules=("backbone",), progress=False)


def test_cpus_per_trial_no_node_has_are_refused(ray_local: None, tiny_run_path: Path, tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="cpus per trial is 4 but no node of the cluster has more than 2"):
        search(tiny_run_path, tmp_path / "cpus", _faulty.spec(), cpus_per_trial=4, progress=False)


def test_a_bad_setting_in_python_is_a_sweetspot_error_naming_the_argument(tmp_path: Path) -> None:
    import sweetspot

    with pytest.raises(sweetspot.SweetspotError, match="unknown algorithm 'tpee'") as caught:
        sweetspot.search(tmp_path / "run", tmp_path / "out", algo="tpee")
    assert caught.value.param == "algo"
