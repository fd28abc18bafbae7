"""Coupled groups stay within their coupling's epoch gap of the coupling's most confident pick."""

from __future__ import annotations

import numpy as np

from analysis.couplings import move_within_gap
from analysis.pipeline import analyze_metrics
from analysis.report import group_block
from modules.spec import parse_spec
from tests.analysis._synthetic import EPOCHS, frame

E = np.array(EPOCHS, dtype=float)


def test_follower_is_moved_to_the_nearest_recorded_epoch_within_the_gap() -> None:
    assert move_within_gap(18, 10, 0, EPOCHS) == 10
    assert move_within_gap(18, 10, 4, EPOCHS) == 14  # allowed 6..14, nearest to 18
    assert move_within_gap(12, 10, 4, EPOCHS) == 12  # already within the gap
    assert move_within_gap(4, 10, 4, EPOCHS) == 6
    assert move_within_gap((20, 30), 10, 4, EPOCHS) == 14  # window centre 25 -> nearest allowed
    assert move_within_gap((8, 12), 10, 4, EPOCHS) == (8, 12)


def test_a_window_lead_drags_an_out_of_range_follower_onto_its_window() -> None:
    assert move_within_gap(30, (40, 48), 0, EPOCHS) == (40, 48)
    assert move_within_gap(44, (40, 48), 0, EPOCHS) == 44
    assert move_within_gap(36, (40, 48), 4, EPOCHS) == 36


def coupled_spec(gap: int):
    return parse_spec(
        {
            "name": "coupled",
            "model": "tests.nothing:model",
            "data": "tests.nothing:data",
            "evaluate": "tests.nothing:evaluate",
            "groups": {"backbone": ["backbone."], "heads": ["heads."]},
            "couplings": [{"name": "A", "groups": ["backbone", "heads"], "max_epoch_gap": gap}],
            "group_metrics": {
                "backbone": [{"metric": "val_loss", "mode": "min"}],
                "heads": [{"metric": "val_f1", "mode": "max"}],
            },
        }
    )


def test_coupled_picks_end_within_the_gap_and_the_report_says_why() -> None:
    loss = (E - 12) ** 2 / 900  # sharp minimum at epoch 12
    f1 = 1 - (E - 40) ** 2 / 900  # peak at epoch 40
    metrics = frame(EPOCHS, {"val_loss": loss, "val_f1": f1})
    free = analyze_metrics(metrics, EPOCHS, ["backbone", "heads"], coupled_spec(100))
    assert abs(free.groups["backbone"].pick - free.groups["heads"].pick) > 4  # uncoupled they differ
    assert free.groups["heads"].coupling_note is None

    coupled = analyze_metrics(metrics, EPOCHS, ["backbone", "heads"], coupled_spec(4))
    backbone, heads = coupled.groups["backbone"], coupled.groups["heads"]
    assert abs(backbone.pick - heads.pick) <= 4
    moved = heads if heads.coupling_note else backbone
    assert moved.coupling_note and "coupling A" in moved.coupling_note
    assert coupled.selection.root["heads"] == heads.pick
    name = "heads" if moved is heads else "backbone"
    assert "1. moved from" in group_block(name, moved)
    assert any("coupling A" in note for note in coupled.notes)
