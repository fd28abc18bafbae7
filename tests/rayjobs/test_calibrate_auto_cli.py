"""The calibrate and auto commands refuse bad input with exit status 2 and a message naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayjobs.cli import main


def test_calibrate_needs_a_search_per_run_and_at_least_one_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "t.json")
    assert main(["calibrate", "--checkpoint-dir", "a", "b", "--search", "s", "--output", out]) == 2
    assert "2 run(s) but 1 search folder(s); pass one --search per --checkpoint-dir" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint-dir", "a", "--search", "s", "--output", out, "--trials", "0"]) == 2
    assert "--trials is 0; the study needs at least 1 trial" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint-dir", "a", "--search", str(tmp_path), "--output", out]) == 2
    assert f"search folder {tmp_path} has no trials.parquet" in capsys.readouterr().err
    assert not Path(out).exists()


def test_auto_refuses_a_broken_thresholds_file_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"plateau_variance": -1}))
    run = tmp_path / "run"  # exists, so the thresholds are what is refused
    run.mkdir()
    argv = ["auto", "--checkpoint-dir", str(run), "--thresholds", str(bad), "--output", str(tmp_path / "o"), "--trust-run-spec"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a valid thresholds file" in err and "plateau_variance is -1; it must not be negative" in err
    assert not (tmp_path / "o").exists()


def test_auto_refuses_a_missing_calibration_a_thresholds_file_in_its_place_and_a_budget_below_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    base = ["auto", "--checkpoint-dir", str(run), "--output", str(tmp_path / "o"), "--trust-run-spec"]
    assert main([*base, "--calibration", str(tmp_path / "missing.json")]) == 2
    assert "calibration file" in capsys.readouterr().err
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"plateau_variance": 0.01}))
    assert main([*base, "--calibration", str(thresholds)]) == 2
    assert "is not a sweetspot calibration file" in capsys.readouterr().err
    assert main([*base, "--thresholds", str(thresholds), "--evaluations-per-checkpoint", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--evaluations-per-checkpoint is 0.5; the budget must allow at least 1 evaluation per checkpoint" in err
    assert main(base) == 2
    assert "pass a calibration (--calibration calibration.json) or thresholds (--thresholds)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
