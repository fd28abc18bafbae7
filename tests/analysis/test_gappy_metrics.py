"""Gaps in the metrics (NaN, blank, inf) neither pull picks to the run's start nor hide."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from analysis.errors import AnalysisWarning
from analysis.pipeline import analyze_metrics
from modules.spec.couplings import coupling_allows
from modules.spec.schema import parse_spec
from tests.analysis._synthetic import frame

EPOCHS = list(range(1, 13))
# val_loss: low 0.30 at epoch 6; NaN at 3-5, blank at 7, inf at 8 (the behaviour seen in issue 8)
LOSS = [0.50, 0.42, np.nan, np.nan, np.nan, 0.30, 0.5, np.inf, 0.36, 0.42, 0.50, 0.60]


# a steeper rise after the low: a window truncated at the start made epoch 1 the task-metrics pick
STEEP = [0.35, 0.33, np.nan, np.nan, np.nan, 0.30, 0.5, np.inf, 0.50, 0.55, 0.60, 0.65]


def gappy_metrics(loss=LOSS):
    metrics = frame(EPOCHS, {"val_loss": loss, "val_f1": [0.5 + 0.02 * e for e in EPOCHS]})
    return metrics[~((metrics["epoch"] == 7) & (metrics["metric"] == "val_loss"))]


def spec(gap: int | None = None):
    data = {
        "name": "gappy",
        "model": "tests.modules._tiny:build_model",
        "data": "tests.modules._tiny:load_data",
        "evaluate": "tests.modules._tiny:evaluate",
        "groups": {"encoder": ["encoder."], "head": ["head."]},
        "group_metrics": {"head": [{"metric": "val_f1", "mode": "max"}]},
    }
    if gap is not None:
        data["couplings"] = [{"name": "A", "groups": ["encoder", "head"], "max_epoch_gap": gap}]
    return parse_spec(data)


@pytest.mark.parametrize("loss", [LOSS, STEEP], ids=["gentle", "steep"])
def test_a_gap_after_the_start_does_not_pull_the_pick_to_the_first_checkpoints(loss) -> None:
    # Before the fix, task_metrics picked epoch 2 (gentle) or epoch 1 (steep): a window truncated at
    # the start averaged epoch 6's low over fewer points, while its own reason said the low is at 6;
    # MCDA's stability criterion (local spread over the same truncated windows) favoured epoch 1 too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        encoder = analyze_metrics(gappy_metrics(loss), EPOCHS, ["encoder", "head"], spec()).groups["encoder"]
    task = encoder.recommendations["task_metrics"]
    assert "task val_loss low 0.300 at epoch 6" in task.reasons
    assert task.epoch == 6 and encoder.pick == 6


def test_infinite_values_are_flagged_like_nan() -> None:
    with pytest.warns(AnalysisWarning) as seen:
        analysis = analyze_metrics(gappy_metrics(), EPOCHS, ["encoder", "head"], spec())
    message = "metric 'val_loss' is missing or NaN at epochs [3, 4, 5, 7], infinite at epochs [8]"
    assert any(message in str(w.message) for w in seen)
    assert analysis.groups["encoder"].series.epochs.tolist() == [1, 2, 6, 9, 10, 11, 12]
    # head is judged by val_f1 (complete): its MCDA loss criterion says which val_loss epochs it skips
    assert any("'val_loss' is missing or NaN at epochs [3, 4, 5, 7], infinite at epochs [8]" in n for n in analysis.groups["head"].series.notes)
    assert np.isfinite(analysis.groups["head"].recommendations["mcda"].confidence)


def test_a_coupling_never_moves_a_pick_onto_an_epoch_the_group_skipped() -> None:
    # head (complete f1, rising) leads at a late epoch; encoder must follow within 2 epochs but its
    # val_loss is missing at 3-5, 7 and 8: it may only land on an analysed epoch.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        for gap in (0, 1, 2, 3):
            analysis = analyze_metrics(gappy_metrics(), EPOCHS, ["encoder", "head"], spec(gap))
            encoder = analysis.groups["encoder"]
            assert encoder.pick in encoder.series.epochs.tolist(), (gap, encoder.pick)
            if encoder.coupling_note and encoder.coupling_note.startswith("kept at"):
                continue  # nothing analysed within the gap: kept, and the note says the coupling breaks
            assert coupling_allows(spec(gap).couplings[0], analysis.picks), (gap, analysis.picks)
