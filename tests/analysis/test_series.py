from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import AnalysisError, AnalysisWarning
from analysis.pipeline import analyze_metrics
from analysis.series import build_run_series
from tests.analysis._synthetic import EPOCHS, frame, make_spec

E = np.array(EPOCHS, dtype=float)


def test_fewer_than_five_checkpoints_is_refused() -> None:
    spec = make_spec({"g": [("val_loss", "min")]})
    epochs = [2, 4, 6, 8]
    with pytest.raises(AnalysisError, match=r"has 4 checkpoint\(s\) \(epochs \[2, 4, 6, 8\]\); the statistics need at least 5"):
        build_run_series(frame(epochs, {"val_loss": [1, 0.9, 0.8, 0.7]}), epochs, ["g"], spec)


def test_nan_values_are_skipped_with_a_warning() -> None:
    f1 = 0.9 - ((E - 30) / 40) ** 2
    f1[[4, 5]] = np.nan  # epochs 10 and 12
    spec = make_spec({"g": [("val_f1", "max")]})
    with pytest.warns(AnalysisWarning, match=r"group 'g': metric 'val_f1' is missing or NaN at epochs \[10, 12\]"):
        series = build_run_series(frame(EPOCHS, {"val_loss": 1 - f1, "val_f1": f1}), EPOCHS, ["g"], spec).groups["g"]
    assert 10 not in series.epochs and 12 not in series.epochs and len(series.epochs) == 28


def test_uneven_spacing_is_handled_and_reported() -> None:
    epochs = [2, 4, 6, 8, 12, 16, 20, 22, 24, 26]
    loss = [(e - 16) ** 2 / 200 for e in epochs]
    spec = make_spec({"g": [("val_loss", "min")]})
    with pytest.warns(AnalysisWarning, match=r"not evenly spaced \(gaps: 2 epochs x6, 4 epochs x3\)"):
        analysis = analyze_metrics(frame(epochs, {"val_loss": loss}), epochs, ["g"], spec)
    assert any("not evenly spaced" in note for note in analysis.notes)
    assert analysis.groups["g"].recommendations["task_metrics"].epoch == 16


def test_group_without_judging_metric_falls_back_to_validation_loss() -> None:
    spec = make_spec({"judged": [("val_f1", "max")]}, groups=["judged", "plain"])
    f1 = 0.9 - ((E - 30) / 40) ** 2
    loss = 0.2 + ((E - 40) / 40) ** 2
    analysis = analyze_metrics(frame(EPOCHS, {"val_loss": loss, "val_f1": f1}), EPOCHS, ["judged", "plain"], spec)
    plain = analysis.groups["plain"].series
    assert plain.judged_by_fallback and [j.metric for j in plain.judging] == ["val_loss"]
    assert any("judged by validation loss 'val_loss'" in note for note in analysis.notes)
    assert analysis.groups["plain"].recommendations["task_metrics"].epoch == 40
    assert analysis.groups["judged"].recommendations["task_metrics"].epoch == 30


def test_a_judging_metric_recorded_at_no_epoch_is_an_error_naming_the_fix() -> None:
    # a typo in group_metrics: judging 'heads' by val_loss instead would answer another question
    spec = make_spec({"heads": [("val_regret_cf_acc", "max")]})
    metrics = frame(EPOCHS, {"val_loss": E / 60, "val_regret_cf_accuracy": E / 60, "val_emotion_f1": E / 60})
    with pytest.raises(AnalysisError, match=r"^my/sweetspot.yaml: group_metrics for group 'heads' names metric 'val_regret_cf_acc'") as caught:
        build_run_series(metrics, EPOCHS, ["heads"], spec, source="runs/r1", spec_file="my/sweetspot.yaml")
    assert str(caught.value) == (
        "my/sweetspot.yaml: group_metrics for group 'heads' names metric 'val_regret_cf_acc', which is recorded"
        " at no checkpoint epoch of runs/r1; did you mean 'val_regret_cf_accuracy'? the run's recorded"
        " whole-model metrics are ['val_emotion_f1', 'val_loss', 'val_regret_cf_accuracy']. Fix the metric"
        " name in the spec's group_metrics for 'heads' (or remove it to judge the group by the others)"
    )


def test_a_judging_metric_nan_at_every_epoch_is_an_error_and_the_spec_is_named_without_a_file() -> None:
    spec = make_spec({"g": [("val_f1", "max")]})
    metrics = frame(EPOCHS, {"val_loss": E / 60, "val_f1": np.full(len(E), np.nan)})
    with pytest.raises(AnalysisError, match=r"^spec 'synthetic': group_metrics for group 'g' names metric 'val_f1',"
                       r" which is NaN at every checkpoint epoch of run; the run's recorded whole-model metrics"
                       r" are \['val_loss'\]"):
        build_run_series(metrics, EPOCHS, ["g"], spec)


def test_warnings_point_at_the_caller_not_inside_the_analysis() -> None:
    f1 = 0.9 - ((E - 30) / 40) ** 2
    f1[3] = np.nan  # epoch 8
    spec = make_spec({"g": [("val_f1", "max")]})
    with pytest.warns(AnalysisWarning) as records:
        analyze_metrics(frame(EPOCHS, {"val_loss": 1 - f1, "val_f1": f1}), EPOCHS, ["g"], spec)
    assert [str(r.message) for r in records] == [
        "group 'g': metric 'val_f1' is missing or NaN at epochs [8]; those epochs are skipped for this group"
    ]
    assert records[0].filename == __file__


def test_no_model_metrics_is_an_error() -> None:
    spec = make_spec({"g": [("val_loss", "min")]})
    metrics = frame(EPOCHS, {}, {"g": {"grad_norm": E}})
    with pytest.raises(AnalysisError, match="no whole-model metrics"):
        build_run_series(metrics, EPOCHS, ["g"], spec)


def test_too_many_nans_leave_too_few_epochs() -> None:
    loss = np.full(len(E), np.nan)
    loss[:4] = [1, 0.9, 0.8, 0.7]
    spec = make_spec({"g": [("val_loss", "min")]})
    with pytest.warns(AnalysisWarning), pytest.raises(AnalysisError, match="only 4 epochs with every judging metric"):
        build_run_series(frame(EPOCHS, {"val_loss": loss}), EPOCHS, ["g"], spec)
