"""Auto over three runs on a real local Ray: two real tiny runs complete in parallel, a broken one
is reported without stopping them, a rerun skips the finished runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from analysis.analyze import analyze
from analysis.thresholds import Thresholds, save_thresholds
from modules.spec.schema import dump_spec
from rayjobs.auto_sweetspot import main
from search.calibration.auto import AutoError, auto, is_complete, run_identity
from tests.modules import _tiny

THRESHOLDS = {
    "plateau_variance": 0.00111,
    "improvement_rate": 0.0000251,
    "stability_window": 3,
    "mcda_weights": {"loss": 0.174, "task": 0.322, "stability": 0.096, "gradient": 0.408},
    "voting_confidence": 0.897,
}


@pytest.fixture(scope="module")
def runs(tiny_run_path: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    second = _tiny.record_run(tmp_path_factory.mktemp("auto") / "second", seed=1)
    broken = tmp_path_factory.mktemp("auto") / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    return [tiny_run_path, broken, second]


def test_auto_runs_in_parallel_reports_the_broken_run_and_skips_finished_runs_on_rerun(
    ray_local: None, runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thresholds = tmp_path / "calibrated.json"
    save_thresholds(Thresholds.model_validate(THRESHOLDS), thresholds)
    out = tmp_path / "auto"
    result = auto(runs, thresholds, out, _tiny.spec(), evaluate=True, progress=False)
    assert [r.status for r in result.runs] == ["done", "failed", "done"]
    assert "broken" in result.runs[1].error and result.failed == [result.runs[1]]
    assert (out / "broken" / "auto_error.txt").is_file()
    for run in (runs[0], runs[2]):
        folder = out / run.name
        expected = analyze(run, spec=_tiny.spec(), thresholds=Thresholds.model_validate(THRESHOLDS)).selection
        assert json.loads((folder / "analysis" / "selection.json").read_text()) == expected.to_json()
        combined = load_file(folder / "combined.safetensors")
        for group, choice in expected.to_json().items():
            if isinstance(choice, int):  # a single epoch's tensors, exactly as stored
                stored = load_file(run / "epochs" / str(choice) / f"{group}.safetensors")
                assert all((combined[k] == v).all() for k, v in stored.items())
        assert (folder / "evaluation" / "evaluation.json").is_file()
    summary = pd.read_parquet(out / "auto_summary.parquet")
    assert list(summary["status"]) == ["done", "failed", "done"]
    done = summary[summary["status"] == "done"]
    assert done["test_objective"].notna().all() and done["greedy_soup_test_gain_pct"].notna().all()
    assert (done["best_single_test_difference_low"] <= done["best_single_test_difference_high"]).all()
    markdown = (out / "auto_summary.md").read_text()
    assert "2 done, 0 skipped (complete from an earlier call), 1 failed" in markdown and "## Failed runs" in markdown

    mtime = (out / runs[0].name / "combined.safetensors").stat().st_mtime_ns
    spec_file = tmp_path / "sweetspot.yaml"
    spec_file.write_text(dump_spec(_tiny.spec()))
    argv = ["--checkpoint-dir", *map(str, runs), "--thresholds", str(thresholds), "--output", str(out),
            "--spec", str(spec_file), "--evaluate"]
    assert main(argv) == 1  # the exit status says a run failed ...
    printed = capsys.readouterr()
    assert "3 run(s): 0 done, 2 skipped (complete), 1 failed" in printed.out and "run " + str(runs[1]) in printed.err
    again = pd.read_parquet(out / "auto_summary.parquet")  # ... and the finished runs were skipped
    assert list(again["status"]) == ["skipped", "failed", "skipped"]
    assert (out / runs[0].name / "combined.safetensors").stat().st_mtime_ns == mtime
    assert again["test_objective"][0] == result.runs[0].record["test"]


def test_auto_refuses_to_run_stored_specs_unless_trusted(runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(AutoError, match="--trust-run-spec"):
        auto(runs, Thresholds(), tmp_path / "out")
    with pytest.raises(AutoError, match="no run given"):
        auto([], Thresholds(), tmp_path / "out", trust_run_spec=True)


def test_a_run_is_complete_only_for_the_same_run_contents_spec_and_settings(tiny_run_path: Path, tmp_path: Path) -> None:
    calibrated = Thresholds.model_validate(THRESHOLDS)
    settings = {"thresholds": calibrated.to_json(), "evaluate": True, "update_bn": False}
    identity = run_identity(str(tiny_run_path), _tiny.spec())
    assert identity is not None and identity["location"] == str(tiny_run_path.resolve())
    (tmp_path / "combined.safetensors").write_bytes(b"x")
    (tmp_path / "auto_result.json").write_text(json.dumps({"settings": settings, "identity": identity, "selection": {}}))
    assert is_complete(tmp_path, settings, identity) is not None
    assert is_complete(tmp_path, {**settings, "evaluate": False}, identity) is not None  # evaluated already
    assert is_complete(tmp_path, {**settings, "thresholds": Thresholds().to_json()}, identity) is None
    assert is_complete(tmp_path, {**settings, "update_bn": True}, identity) is None
    assert is_complete(tmp_path, settings, {**identity, "location": "/elsewhere/run"}) is None  # another run, same name
    assert is_complete(tmp_path, settings, {**identity, "manifest": "retrained"}) is None
    other_spec = _tiny.spec().model_copy(update={"name": "changed"})
    assert is_complete(tmp_path, settings, run_identity(str(tiny_run_path), other_spec)) is None
    assert is_complete(tmp_path, settings, None) is None  # a run that cannot be opened is done again
    (tmp_path / "combined.safetensors").unlink()
    assert is_complete(tmp_path, settings, identity) is None


def test_another_run_written_to_the_same_output_name_is_not_taken_as_complete(
    ray_local: None, runs: list[Path], tmp_path: Path
) -> None:
    first, second = tmp_path / "a" / "run", tmp_path / "b" / "run"
    shutil.copytree(runs[0], first)
    shutil.copytree(runs[2], second)
    out = tmp_path / "auto"
    together = auto([first, second], Thresholds.model_validate(THRESHOLDS), out, _tiny.spec(), progress=False)
    assert [r.name for r in together.runs] == ["run", "run-2"]
    alone = auto([second], Thresholds.model_validate(THRESHOLDS), out, _tiny.spec(), progress=False)
    assert alone.runs[0].status == "done"  # "run" held the first run's result: not this run's
    record = json.loads((out / "run" / "auto_result.json").read_text())
    assert record["identity"]["location"] == str(second.resolve())
