from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.errors import AnalysisError
from analysis.pipeline import analyze_run
from analysis.report import write_outputs
from analysis.thresholds import Thresholds
from modules.rundir.run_dir import RunDir
from modules.spec.selection import AverageWindow
from tests.analysis._synthetic import EPOCHS, frame, make_spec, write_run

E = np.array(EPOCHS, dtype=float)


def imported_like_weights() -> dict[int, dict[str, dict[str, torch.Tensor]]]:
    """Group 'a' keeps moving; group 'b' has half its 8 rows collapse to zero from epoch 42."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(8, 4, generator=generator) + 2.0
    weights, current = {}, base.clone()
    for epoch in EPOCHS:
        current = current + 0.01 * torch.randn(8, 4, generator=generator)
        b = current.clone()
        if epoch >= 42:
            b[:4] = 0.0
        weights[epoch] = {"a": {"a.weight": current.clone()}, "b": {"b.weight": b}}
    return weights


def test_run_without_gradients_uses_weight_proxies(tmp_path) -> None:
    # b: 4 of 8 rows collapse at epoch 42 -> dead proxy 0.5 (a rise of 0.5 > 0.10) -> last healthy 40
    spec = make_spec({"a": [("val_loss", "min")], "b": [("val_loss", "min")]})
    metrics = frame(EPOCHS, {"val_loss": (E - 30) ** 2 / 900})
    run = RunDir(write_run(tmp_path / "run", spec, metrics, EPOCHS, imported_like_weights()))
    analysis = analyze_run(run)
    b = analysis.groups["b"]
    assert b.series.health_source == "weights"
    assert b.series.health["dead_fraction"][EPOCHS.index(42)] == 0.5
    assert b.recommendations["gradient_health"].epoch == 40
    assert "computed from the weights" in b.recommendations["gradient_health"].reasons[0]
    assert analysis.groups["a"].recommendations["gradient_health"].details["degradation_epoch"] is None
    assert any("no recorded gradients" in note for note in analysis.notes)
    assert analysis.groups["a"].plateau_window == (24, 36)


def test_selection_and_json_carry_the_picks(tmp_path) -> None:
    spec = make_spec({"a": [("val_loss", "min")], "b": [("val_loss", "min")]})
    metrics = frame(EPOCHS, {"val_loss": (E - 30) ** 2 / 900})
    run = RunDir(write_run(tmp_path / "run", spec, metrics, EPOCHS, imported_like_weights()))
    # voting_confidence 1.0 forces the plateau fallback unless every voter agrees
    analysis = analyze_run(run, thresholds=Thresholds(voting_confidence=1.0))
    data = analysis.to_json()
    for group, result in analysis.groups.items():
        entry = data["groups"][group]
        assert entry["plateau_window"] == [24, 36]
        choice = analysis.selection.root[group]
        if isinstance(result.pick, tuple):
            assert entry["pick"] == {"average": [24, 36]} and choice == AverageWindow(average=(24, 36))
        else:
            assert entry["pick"] == result.pick == choice
    assert data["groups"]["b"]["pick"] == {"average": [24, 36]}  # b's health vote (40) breaks unanimity
    assert set(data["groups"]["a"]["techniques"]) == {"plateau", "task_metrics", "mcda", "gradient_health", "ensemble"}


def test_missing_spec_and_too_few_checkpoints(tmp_path) -> None:
    spec = make_spec({"g": [("val_loss", "min")]})
    path = write_run(tmp_path / "short", spec, frame([2, 4, 6], {"val_loss": [3, 2, 1]}), [2, 4, 6])
    with pytest.raises(AnalysisError, match="the statistics need at least 5"):
        analyze_run(RunDir(path))
    (path / "sweetspot.yaml").unlink()
    with pytest.raises(AnalysisError, match="stores no sweetspot.yaml; pass the spec"):
        analyze_run(RunDir(path))


def test_spec_naming_unknown_groups_is_refused(tmp_path) -> None:
    spec = make_spec({"g": [("val_loss", "min")]})
    path = write_run(tmp_path / "run", spec, frame(EPOCHS, {"val_loss": E}), EPOCHS)
    other = make_spec({"other": [("val_loss", "min")]})
    with pytest.raises(AnalysisError, match=r"names groups \['other'\] that run"):
        analyze_run(RunDir(path), other)


def test_demo_run_end_to_end(demo_run, demo_spec, tmp_path) -> None:
    run = RunDir(demo_run)
    analysis = analyze_run(run)
    assert list(analysis.groups) == list(demo_spec.groups)
    picks = {g: (r.pick if isinstance(r.pick, int) else tuple(r.pick)) for g, r in analysis.groups.items()}
    assert len(set(picks.values())) >= 2, picks
    analysis.selection.check(run.groups, run.epochs)
    for result in analysis.groups.values():
        assert result.series.health_source == "recorded"
        assert set(result.recommendations) == {"plateau", "task_metrics", "mcda", "gradient_health", "ensemble"}
        for rec in result.recommendations.values():
            assert rec.epoch in run.epochs and 0.0 <= rec.confidence <= 1.0 and rec.reasons
    written = write_outputs(analysis, tmp_path / "analysis_results")
    assert written["report"].read_text().count("[Module: ") == len(demo_spec.groups)
    assert len(list(written["visualizations"].glob("*.png"))) == len(demo_spec.groups) + 1


def test_source_names_the_run_in_messages_and_results(tmp_path) -> None:
    # a caller that imported the user's folder into a temporary run passes the folder the user gave
    spec = make_spec({"g": [("val_loss", "min")]})
    short = write_run(tmp_path / "tmp-import" / "run", spec, frame([2, 4, 6, 8], {"val_loss": [4, 3, 2, 1]}), [2, 4, 6, 8])
    with pytest.raises(AnalysisError, match=r"^my_checkpoints has 4 checkpoint\(s\) \(epochs \[2, 4, 6, 8\]\)") as caught:
        analyze_run(RunDir(short), source="my_checkpoints")
    assert "tmp-import" not in str(caught.value)
    path = write_run(tmp_path / "tmp-import" / "full", spec, frame(EPOCHS, {"val_loss": (E - 30) ** 2}), EPOCHS)
    assert analyze_run(RunDir(path), source="my_checkpoints").source == "my_checkpoints"
    assert analyze_run(RunDir(path)).source == str(path)


def test_a_typo_in_the_stored_spec_names_the_stored_spec_file(tmp_path) -> None:
    spec = make_spec({"heads": [("val_f1_macro", "max")]})
    path = write_run(tmp_path / "run", spec, frame(EPOCHS, {"val_loss": E, "val_f1": E}), EPOCHS)
    with pytest.raises(AnalysisError, match=r"names metric 'val_f1_macro', which is recorded at no checkpoint epoch") as caught:
        analyze_run(RunDir(path))
    message = str(caught.value)
    assert message.startswith(f"{path / 'sweetspot.yaml'}: group_metrics for group 'heads'")
    assert "did you mean 'val_f1'?" in message and "['val_f1', 'val_loss']" in message
