"""--mlflow and --optuna-storage against a real local MLflow store and a real sqlite Optuna storage,
read back with MlflowClient and optuna.load_study and checked against trials.parquet."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest

from modules.rundir.run_dir import RunDir
from search.algorithms.space import CrossoverSpace
from search.calibration.calibrate import calibrate
from search.errors import SearchError
from search.execution.api import search
from search.tracking.mlflow_runs import mlflow_run
from search.tracking.optuna_storage import search_study_name
from tests.modules import _tiny


@pytest.fixture(scope="module")
def tracked(ray_local: None, tiny_run_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small TPE search inside an outer MLflow run (as the pipeline opens), both stores sqlite."""
    root = tmp_path_factory.mktemp("tracked")
    uri, storage = f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}"
    with mlflow_run(uri, "outer", "pipeline") as outer:
        result = search(
            tiny_run_path, root / "search", _tiny.spec(), algo="tpe", num_samples=8, shards=1, confirm_fraction=0.0,
            baselines=False, progress=False, mlflow=uri, optuna_storage=storage, max_concurrent=1,  # one worker to start
        )
    return {"root": root, "uri": uri, "storage": storage, "result": result, "outer": outer.run_id, "run": tiny_run_path}


def test_mlflow_has_a_run_per_command_a_child_per_trial_and_the_reports(tracked: dict) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracked["uri"])
    runs = client.search_runs([client.get_experiment_by_name("sweetspot").experiment_id], max_results=1000)
    by_parent: dict[str | None, list] = {}
    for run in runs:
        by_parent.setdefault(run.data.tags.get("mlflow.parentRunId"), []).append(run)
    (command,) = by_parent[tracked["outer"]]  # the search, nested in the outer run
    assert command.data.tags["sweetspot.kind"] == "search" and command.info.status == "FINISHED"
    trials = pd.read_parquet(tracked["root"] / "search" / "trials.parquet")
    children = by_parent[command.info.run_id]
    assert len(children) == len(trials) == 8 + 2  # --num-samples, then the analysis pick and the last epoch
    rows = trials.set_index("trial_id")
    recorded = [c for c in trials.columns if c.startswith("val/")]
    assert recorded
    for child in children:
        row = rows.loc[child.data.params["trial_id"]]
        for group in ("encoder", "middle", "head"):  # the selection as params ...
            assert child.data.params[group] == str(json.loads(row[f"choice/{group}"])[0])
        assert child.data.metrics["objective"] == pytest.approx(row["objective"])
        for column in recorded:  # ... and every validation metric
            assert child.data.metrics[column] == pytest.approx(row[column])
    pick = tracked["result"].pick
    assert command.data.metrics["pick.test"] == pytest.approx(pick.test_score)
    assert {command.data.params[f"pick.{g}"] for g in pick.epochs} == {str(e[0]) for e in pick.epochs.values()}
    artifacts = {a.path for a in client.list_artifacts(command.info.run_id)}
    assert {"search_report.md", "trials.parquet", "evaluation_report.md", "visualizations"} <= artifacts
    plots = {a.path for a in client.list_artifacts(command.info.run_id, "visualizations")}
    assert "visualizations/convergence.png" in plots
    # the artifacts live beside the database, not in ./mlruns of wherever the command ran
    assert client.get_experiment_by_name("sweetspot").artifact_location.startswith(Path(tracked["uri"].removeprefix("sqlite:///")).parent.as_uri())
    assert not (Path.cwd() / "mlruns").exists()


def test_the_optuna_study_is_stored_under_its_documented_name_with_the_trials(tracked: dict) -> None:
    result = tracked["result"]
    name = result.settings["optuna_study"]
    state = json.loads((tracked["root"] / "search" / "search_state.json").read_text())
    assert name == search_study_name(state["search_id"]) and state["optuna_storage"] == tracked["storage"]
    study = optuna.load_study(study_name=name, storage=tracked["storage"])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    trials = pd.read_parquet(tracked["root"] / "search" / "trials.parquet")
    run = RunDir(tracked["run"])
    space = CrossoverSpace.build(_tiny.spec(), run.groups, run.epochs, None, 0)
    scored = {}
    for row in trials[trials["status"] == "finished"].itertuples():
        params = space.encode(json.loads(row.selection))
        scored[tuple(sorted(params.items()))] = row.objective
    # the sampler's trials (the two seeds are told to it as evaluated points, then its own six)
    assert len(complete) >= 6
    for trial in complete:
        assert trial.value == pytest.approx(scored[tuple(sorted(trial.params.items()))])


def test_calibrate_keeps_its_study_and_bad_storage_is_refused(tracked: dict, tiny_run_path: Path, tmp_path: Path) -> None:
    result = calibrate(
        [tiny_run_path], [tracked["root"] / "search"], tmp_path / "t.json", _tiny.spec(), trials=4,
        optuna_storage=tracked["storage"],
    )
    assert result.study_name.startswith("sweetspot-calibrate-")
    study = optuna.load_study(study_name=result.study_name, storage=tracked["storage"])
    assert len(study.trials) == len(result.history) == 4
    assert study.trials[0].params == {k: pytest.approx(v) for k, v in study.trials[0].params.items()}
    assert result.study_name in (tmp_path / "calibration_report.md").read_text()
    with pytest.raises(SearchError, match="optuna_storage .*--algo grid runs no Optuna sampler"):
        search(tiny_run_path, tmp_path / "grid", _tiny.spec(), algo="grid", optuna_storage=tracked["storage"])
    with pytest.raises(SearchError, match="folder .* does not exist"):
        search(tiny_run_path, tmp_path / "s", _tiny.spec(), num_samples=3, optuna_storage=f"sqlite:///{tmp_path}/no/x.db")


def test_auto_logs_a_run_with_a_child_per_run(tracked: dict, tiny_run_path: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from analysis.thresholds import Thresholds
    from search.calibration.auto import auto

    done = auto([tiny_run_path], Thresholds(), tmp_path / "auto", _tiny.spec(), progress=False, mlflow=tracked["uri"])
    client = MlflowClient(tracking_uri=tracked["uri"])
    experiment = client.get_experiment_by_name("sweetspot").experiment_id
    (command,) = client.search_runs([experiment], "tags.`sweetspot.kind` = 'auto'")
    (child,) = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{command.info.run_id}'")
    record = done.runs[0].record
    assert child.data.params["status"] == "done" and child.info.run_name == done.runs[0].name
    assert {k.removeprefix("selection.") for k in child.data.params if k.startswith("selection.")} == set(record["selection"])
    assert "auto_summary.md" in {a.path for a in client.list_artifacts(command.info.run_id)}


def test_search_outputs_are_refused_before_ray_starts_naming_the_option(
    tiny_run_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import search.execution.api as api

    def no_ray(*args: object) -> None:
        raise AssertionError("Ray was started before the outputs were checked")

    monkeypatch.setattr(api, "start_ray_for_search", no_ray)
    with pytest.raises(SearchError, match="inside the run directory") as inside:
        search(tiny_run_path, tiny_run_path / "out", _tiny.spec(), num_samples=3)
    assert inside.value.named("--output").startswith(f"--output {tiny_run_path / 'out'}")
    taken = tmp_path / "taken"
    (taken / "tune").mkdir(parents=True)
    (taken / "search_state.json").write_text("{}")
    with pytest.raises(SearchError, match="already holds a search; pass --resume"):
        search(tiny_run_path, taken, _tiny.spec(), num_samples=3)
