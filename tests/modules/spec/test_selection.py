"""selection.json: epochs or averaging windows per group; a bad entry names the group and the fix."""

from __future__ import annotations

import json

import pytest

from modules.spec.selection import (
    AverageWindow,
    SelectionError,
    load_selection,
    parse_selection,
    save_selection,
)


def test_round_trip(tmp_path) -> None:
    path = tmp_path / "selection.json"
    save_selection(parse_selection({"backbone": 44, "heads": {"average": [40, 48]}}), path)
    assert json.loads(path.read_text()) == {"backbone": 44, "heads": {"average": [40, 48]}}
    loaded = load_selection(path)
    assert loaded.root["backbone"] == 44 and loaded.root["heads"] == AverageWindow(average=(40, 48))


def test_epochs_for_resolves_windows_to_recorded_epochs() -> None:
    selection = parse_selection({"a": {"average": [5, 11]}, "b": 8})
    assert selection.epochs_for("a", [2, 4, 6, 8, 10, 12]) == [6, 8, 10]
    with pytest.raises(SelectionError, match=r"epoch 8 was not recorded; recorded epochs: \[2, 4, 6\]"):
        selection.epochs_for("b", [2, 4, 6])
    with pytest.raises(SelectionError, match=r"window \[5, 11\] holds no recorded epoch"):
        selection.epochs_for("a", [2, 4, 12])


def test_a_typo_names_the_group_and_the_two_allowed_forms() -> None:
    with pytest.raises(SelectionError, match="it is neither an epoch") as caught:
        parse_selection({"backbone": "avg", "heads": 4, "wrap": {"avg": [1, 2]}}, "sel.json")
    message = str(caught.value)
    assert "sel.json" in message
    assert "group 'backbone': \"avg\": it is neither an epoch" in message
    assert "group 'wrap': {\"avg\": [1, 2]}" in message
    assert "'heads'" not in message  # a good entry is not reported


def test_a_reversed_window_says_first_must_not_exceed_last() -> None:
    with pytest.raises(SelectionError, match=r"group 'a'.*\[8, 4\] must have first <= last"):
        parse_selection({"a": {"average": [8, 4]}})


def test_not_a_mapping() -> None:
    with pytest.raises(SelectionError, match="must be a JSON object"):
        parse_selection([44, 40], "sel.json")


def test_coupling_violations_compare_centres_with_the_allowed_gap() -> None:
    from modules.spec.schema import Coupling
    from modules.spec.selection import coupling_violations

    couplings = [Coupling(name="A", groups=["backbone", "heads"], max_epoch_gap=4), Coupling(groups=["solo"])]
    assert coupling_violations({"backbone": [44], "heads": [40], "solo": [2]}, couplings) == []
    problems = coupling_violations({"backbone": [44], "heads": [36, 38]}, couplings)  # centre 37: 7 apart
    assert problems == [
        "coupling A allows 4 epochs between its groups, but the selection puts backbone at 44, heads at 37"
        " (7 apart; an averaged window counts at its midpoint)"
    ]


def test_a_selection_of_a_step_indexed_run_says_its_numbers_are_steps(tmp_path) -> None:
    import json

    from modules.spec.selection import Selection, load_selection, save_selection

    selection = Selection.model_validate({"encoder": 570, "head": {"average": [380, 456]}})
    save_selection(selection, tmp_path / "steps.json", index="step")
    assert json.loads((tmp_path / "steps.json").read_text())["_index"] == "step"
    assert load_selection(tmp_path / "steps.json") == selection  # the annotation is not a group
    save_selection(selection, tmp_path / "epochs.json")
    assert "_index" not in json.loads((tmp_path / "epochs.json").read_text())
