"""Calibration on the tiny real run: a search whose pick a known thresholds setting reproduces is
recovered from the defaults, the thresholds written load in analyze, bad input is refused."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from analysis.analyze import analyze
from analysis.errors import AnalysisError
from analysis.thresholds import Thresholds, load_thresholds
from modules.rundir.run_dir import RunDir
from search.calibration.calibrate import CalibrationWarning, calibrate
from search.calibration.cases import CalibrationError
from search.execution.api import search
from tests.modules import _tiny

#: Thresholds under which the analysis of the tiny run picks encoder 2, middle 5, head 5; the
#: defaults pick epoch 2 for every group.
KNOWN = {
    "plateau_variance": 0.00111,
    "improvement_rate": 0.0000251,
    "stability_window": 3,
    "mcda_weights": {"loss": 0.174, "task": 0.322, "stability": 0.096, "gradient": 0.408},
    "voting_confidence": 0.897,
}


def _epochs(run: RunDir, thresholds: Thresholds | None) -> dict[str, list[int]]:
    selection = analyze(run, spec=_tiny.spec(), thresholds=thresholds).selection
    return {g: selection.epochs_for(g, run.epochs) for g in run.groups}


@pytest.fixture(scope="module")
def known_search(ray_local: None, tiny_run_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A real search that scored only the known thresholds' selection: its pick is that selection."""
    run = RunDir(tiny_run_path)
    target = _epochs(run, Thresholds.model_validate(KNOWN))
    assert target != _epochs(run, None)  # the defaults do not reproduce it
    out = tmp_path_factory.mktemp("calib") / "search"
    search(run, out, _tiny.spec(), selections=[target], shards=1, confirm_fraction=0.0, progress=False, evaluate=False)
    return out, target


def test_calibration_recovers_thresholds_that_reproduce_the_search(
    known_search: tuple[Path, dict], tiny_run_path: Path, tmp_path: Path
) -> None:
    folder, target = known_search
    result = calibrate([tiny_run_path], [folder], tmp_path / "cal" / "thresholds.json", _tiny.spec(), trials=60, seed=0)
    assert result.reproduced and result.improved
    assert result.calibrated[0].selection == target and not result.calibrated[0].mismatched
    assert result.calibrated[0].val_gap == pytest.approx(0.0, abs=1e-12)
    assert result.defaults[0].mismatched  # the defaults' pick differed ...
    # ... and was scored on the search's basis (not in trials.parquet): the test split scores too
    assert result.defaults[0].test is not None and result.calibrated[0].test_gap == pytest.approx(0.0, abs=1e-12)
    # the written file is a valid thresholds file that makes analyze pick the search's selection
    loaded = load_thresholds(tmp_path / "cal" / "thresholds.json")
    assert set(json.loads((tmp_path / "cal" / "thresholds.json").read_text())) == set(KNOWN)
    assert _epochs(RunDir(tiny_run_path), loaded) == target
    report = (tmp_path / "cal" / "calibration_report.md").read_text()
    assert "**Thresholds: reproduced**" in report and "| encoder |" in report
    assert (tmp_path / "cal" / "calibration_history.png").stat().st_size > 1000
    assert len(result.history) == 60


def test_nothing_better_than_the_defaults_writes_them_with_a_warning(
    known_search: tuple[Path, dict], tiny_run_path: Path, tmp_path: Path
) -> None:
    folder, _ = known_search
    with pytest.warns(CalibrationWarning, match="no thresholds better than the defaults"):
        result = calibrate([tiny_run_path], [folder], tmp_path / "t.json", _tiny.spec(), trials=1)
    assert not result.improved and result.thresholds == Thresholds()
    assert load_thresholds(tmp_path / "t.json") == Thresholds()
    report = (tmp_path / "calibration_report.md").read_text()
    assert "nothing beat the default thresholds" in report and "**Thresholds: not reproduced**" in report
    assert "No thresholds tried selected the search's choice for middle, head" in report


def test_bad_input_is_refused_before_any_work(
    known_search: tuple[Path, dict], tiny_run_path: Path, tmp_path: Path
) -> None:
    folder, _ = known_search
    out = tmp_path / "t.json"
    with pytest.raises(CalibrationError, match="one --search per --checkpoint-dir"):
        calibrate([tiny_run_path, tiny_run_path], [folder], out, _tiny.spec())
    with pytest.raises(CalibrationError, match="at least 1 trial"):
        calibrate([tiny_run_path], [folder], out, _tiny.spec(), trials=0)
    broken = tmp_path / "broken_search"
    shutil.copytree(folder, broken, ignore=shutil.ignore_patterns("tune"))
    (broken / "trials.parquet").unlink()
    with pytest.raises(CalibrationError, match=r"broken_search has no trials.parquet"):
        calibrate([tiny_run_path], [broken], out, _tiny.spec())
    other = tmp_path / "other_groups"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("tune"))
    summary = json.loads((other / "search_summary.json").read_text())
    summary["pick"]["epochs"]["extra"] = summary["pick"]["epochs"].pop("head")
    (other / "search_summary.json").write_text(json.dumps(summary))
    with pytest.raises(CalibrationError, match=r"has groups .* but its search .* chose groups"):
        calibrate([tiny_run_path], [other], out, _tiny.spec())
    with pytest.raises(CalibrationError, match="--trust-run-spec"):
        calibrate([tiny_run_path], [folder], out)
    assert not out.exists()


def test_analyze_refuses_a_broken_thresholds_file(tiny_run_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**KNOWN, "stability_window": 2}))
    with warnings.catch_warnings(), pytest.raises(AnalysisError, match="stability_window is 2"):
        analyze(tiny_run_path, spec=_tiny.spec(), thresholds=path)


def test_calibration_json_drives_auto_on_another_run_within_its_budget(
    known_search: tuple[Path, dict], tiny_run_path: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from safetensors.torch import load_file

    from search.calibration.auto import AutoError, auto
    from search.calibration.calibration_file import load_calibration

    folder, target = known_search
    result = calibrate([tiny_run_path], [folder], tmp_path / "cal" / "thresholds.json", _tiny.spec(), trials=5)
    calibration = load_calibration(tmp_path / "cal" / "calibration.json")
    assert calibration.groups == RunDir(tiny_run_path).groups and calibration.thresholds == result.thresholds
    fitted = result.transfer[0]
    assert fitted.kind == "fitted" and fitted.val_gap <= 0.005 and fitted.evaluations <= 3 * 6
    assert "## The automatic selection" in (tmp_path / "cal" / "calibration_report.md").read_text()

    other = _tiny.record_run(tmp_path_factory.mktemp("cal_other") / "other", seed=1)
    out = tmp_path / "auto"
    done = auto([other], None, out, _tiny.spec(), calibration=tmp_path / "cal" / "calibration.json", progress=False)
    record = done.runs[0].record
    assert done.runs[0].status == "done", done.runs[0].error
    assert record["budget"]["evaluations"] <= record["budget"]["budget"] == 18
    assert record["auto_val"] <= record["greedy_soup_val"] + 1e-12  # the guard: never worse on validation
    chosen = record["selection"]
    combined = load_file(out / "other" / "combined.safetensors")
    for group, choice in chosen.items():
        if isinstance(choice, int):
            stored = load_file(other / "epochs" / str(choice) / f"{group}.safetensors")
            assert all((combined[k] == v).all() for k, v in stored.items())

    renamed = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    renamed["groups"] = [g.replace("head", "decoder") for g in renamed["groups"]]
    renamed["priors"]["decoder"] = renamed["priors"].pop("head")
    (tmp_path / "foreign.json").write_text(json.dumps(renamed))
    with pytest.raises(Exception, match="calibration was fitted on a model with groups"):
        auto([other], None, tmp_path / "never", _tiny.spec(), calibration=tmp_path / "foreign.json", progress=False)
    with pytest.raises(AutoError, match="at least 1 evaluation per checkpoint"):
        auto([other], None, tmp_path / "never", _tiny.spec(), calibration=tmp_path / "cal" / "calibration.json",
             evaluations_per_checkpoint=0.5)
    assert not (tmp_path / "never" / "other").exists()


def test_no_warning_when_the_defaults_already_reproduce_the_search(
    ray_local: None, tiny_run_path: Path, tmp_path: Path
) -> None:
    run = RunDir(tiny_run_path)
    folder = tmp_path / "search"
    search(run, folder, _tiny.spec(), selections=[_epochs(run, None)], shards=1, confirm_fraction=0.0, progress=False, evaluate=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        result = calibrate([tiny_run_path], [folder], tmp_path / "t.json", _tiny.spec(), trials=2)
    assert result.reproduced and not result.improved and not result.notes
