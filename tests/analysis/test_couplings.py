"""Coupled groups stay within their coupling's epoch gap of the coupling's most confident pick."""

from __future__ import annotations

import numpy as np

from analysis.couplings import move_within_coupling
from analysis.pipeline import analyze_metrics
from analysis.report import group_block
from modules.spec.schema import Coupling, parse_spec
from tests.analysis._synthetic import EPOCHS, frame

E = np.array(EPOCHS, dtype=float)


def _coupling(gap: int) -> Coupling:
    return Coupling(name="A", groups=["lead", "g"], max_epoch_gap=gap)


def test_follower_is_moved_to_the_nearest_analysed_epoch_within_the_gap() -> None:
    def move(pick, lead, gap, epochs=EPOCHS):
        return move_within_coupling("g", pick, {"lead": lead}, _coupling(gap), "lead", epochs)

    assert move(18, 10, 0) == 10
    assert move(18, 10, 4) == 14  # allowed 6..14, nearest to 18
    assert move(12, 10, 4) == 12  # already within the gap
    assert move(4, 10, 4) == 6
    assert move((20, 30), 10, 4) == 14  # window centre 25 -> nearest allowed
    assert move((8, 12), 10, 4) == (8, 12)  # centre 10
    # never onto an epoch the group's metrics skipped: 10..14 are not analysed for it
    assert move(18, 10, 4, [2, 4, 6, 16, 18, 20]) == 6
    assert move(40, 10, 2, [2, 4, 16, 18]) is None  # nothing allowed: the caller keeps the pick and says so


def test_a_window_lead_drags_an_out_of_range_follower_onto_its_window() -> None:
    def move(pick, lead, gap):
        return move_within_coupling("g", pick, {"lead": lead}, _coupling(gap), "lead", EPOCHS)

    assert move(30, (40, 48), 0) == (40, 48)
    assert move(44, (40, 48), 0) == 44  # the window's centre
    assert move(40, (40, 48), 0) == (40, 48)  # centre 44 != 40
    assert move(36, (40, 48), 8) == 36


def coupled_spec(gap: int):
    return parse_spec(
        {
            "name": "coupled",
            "model": "tests.modules._tiny:build_model",
            "data": "tests.modules._tiny:load_data",
            "evaluate": "tests.modules._tiny:evaluate",
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


def test_a_moved_pick_does_not_borrow_the_old_picks_confidence(tmp_path) -> None:
    # backbone: loss minimum at 12, every voter on 12 -> 97%, the coupling's lead. heads: f1 peak at 40;
    # plateau 40 (0.848) and task_metrics 40 (0.994) back it, mcda 36 (0.907) votes elsewhere ->
    # ensemble 40 at (0.848 + 0.994) / 3 voters = 61%. Gap 4 moves heads to 16, nearest to 40 within 12 +- 4.
    from analysis.plots import group_figure
    from analysis.report import pick_summary, report_markdown

    loss = (E - 12) ** 2 / 900
    f1 = 1 - (E - 40) ** 2 / 900
    coupled = analyze_metrics(frame(EPOCHS, {"val_loss": loss, "val_f1": f1}), EPOCHS, ["backbone", "heads"], coupled_spec(4))
    backbone, heads = coupled.groups["backbone"], coupled.groups["heads"]
    assert (backbone.pick, heads.pick, heads.ensemble_pick, heads.moved_by) == (12, 16, 40, ["A"])
    assert not backbone.moved and heads.moved
    assert pick_summary("backbone", backbone) == "backbone: 12 (97%)"
    assert pick_summary("heads", heads) == "heads: 16 (moved by coupling A from 40, which had 61%)"
    block = group_block("heads", heads)
    assert block.splitlines()[1] == "- Recommended epoch: 16"
    assert block.endswith("\n- Confidence: not rated for 16 (moved by coupling A from 40, which had 61%)")
    assert "| heads | **16** (moved by coupling A from 40, which had 61%) |" in report_markdown(coupled)
    figure = group_figure("heads", heads)
    assert figure.axes[0].get_title().startswith("heads: epoch 16 (moved by coupling A from 40, which had 61%)")
    # module_metrics.json keeps the ensemble's confidence (of its own epoch 40), as documented
    entry = coupled.to_json()["groups"]["heads"]
    assert entry["pick"] == 16 and entry["techniques"]["ensemble"]["epoch"] == 40
    assert entry["confidence"] == round(heads.final.confidence, 4) and abs(entry["confidence"] - (0.848 + 0.994) / 3) < 1e-3
