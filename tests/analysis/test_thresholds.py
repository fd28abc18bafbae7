from __future__ import annotations

import json

import pytest

from analysis.errors import AnalysisError
from analysis.thresholds import Thresholds, load_thresholds, parse_thresholds, save_thresholds

GOOD = {
    "plateau_variance": 0.012,
    "improvement_rate": 0.008,
    "stability_window": 5,
    "mcda_weights": {"loss": 0.35, "task": 0.45, "stability": 0.10, "gradient": 0.10},
    "voting_confidence": 0.75,
}


def test_defaults_are_the_seed_weights() -> None:
    defaults = Thresholds().to_json()
    assert defaults["mcda_weights"] == {"loss": 0.30, "task": 0.40, "stability": 0.15, "gradient": 0.15}
    assert set(defaults) == set(GOOD)


def test_seed_example_round_trips(tmp_path) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(GOOD))
    loaded = load_thresholds(path, n_checkpoints=30)
    assert loaded.mcda_weights.task == 0.45 and loaded.stability_window == 5
    save_thresholds(loaded, tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text()) == GOOD
    assert json.loads(path.read_text()) == GOOD  # input untouched


def test_every_problem_is_listed_in_one_message(tmp_path) -> None:
    bad = {
        "plateau_variance": -0.1,  # negative
        "stability_window": 40,  # larger than a 30-checkpoint run
        "mcda_weights": {"loss": 0.5, "task": 0.6, "stability": 0.1, "gradient": 0.1},  # sums to 1.3
        "voting_confidence": 0.75,
        "typo_key": 1,  # unknown
        # improvement_rate missing
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(AnalysisError, match="5 problems") as caught:
        load_thresholds(path, n_checkpoints=30)
    message = str(caught.value)
    assert str(path) in message
    assert "5 problems" in message
    assert "unknown key 'typo_key'" in message
    assert "missing key 'improvement_rate'" in message
    assert "plateau_variance is -0.1; it must not be negative" in message
    assert "sum to 1.3" in message
    assert "stability_window 40 is larger than the run (30 checkpoints)" in message


def test_nested_weight_keys_and_types_are_checked() -> None:
    bad = dict(GOOD, mcda_weights={"loss": 1.0, "tasks": 0.0}, stability_window=2.5, voting_confidence=1.5)
    with pytest.raises(AnalysisError, match=r"^t\.json is not a valid thresholds file \(6 problems\)") as caught:
        parse_thresholds(bad, "t.json")
    message = str(caught.value)
    for expected in (
        "unknown key 'mcda_weights.tasks'",
        "missing key 'mcda_weights.task'",
        "missing key 'mcda_weights.stability'",
        "stability_window is 2.5; it must be a whole number",
        "voting_confidence is 1.5",
    ):
        assert expected in message


def test_negative_weight_and_tiny_window() -> None:
    bad = dict(GOOD, mcda_weights={"loss": -0.2, "task": 0.8, "stability": 0.2, "gradient": 0.2}, stability_window=2)
    with pytest.raises(AnalysisError, match="mcda_weights.loss is -0.2; it must not be negative") as caught:
        parse_thresholds(bad)
    assert "stability_window is 2; it must be at least 3" in str(caught.value)


def test_weights_within_tolerance_are_accepted() -> None:
    ok = dict(GOOD, mcda_weights={"loss": 0.3, "task": 0.4, "stability": 0.15, "gradient": 0.15 + 5e-7})
    assert parse_thresholds(ok).mcda_weights.gradient == pytest.approx(0.15, abs=1e-6)
    off = dict(GOOD, mcda_weights={"loss": 0.3, "task": 0.4, "stability": 0.15, "gradient": 0.15 + 5e-6})
    with pytest.raises(AnalysisError, match="sum to"):
        parse_thresholds(off)


def test_missing_and_unreadable_files(tmp_path) -> None:
    with pytest.raises(AnalysisError, match="does not exist"):
        load_thresholds(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(AnalysisError, match="not readable JSON"):
        load_thresholds(broken)


def test_window_larger_than_run_is_refused_by_check_run() -> None:
    with pytest.raises(AnalysisError, match="stability_window 7 is larger than the run \\(6 checkpoints\\)"):
        Thresholds(stability_window=7).check_run(6)
