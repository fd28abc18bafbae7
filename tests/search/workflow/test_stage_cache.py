"""Stages skipped when complete: a rerun skips them, a changed input or a redone earlier stage
redoes them, and a stage interrupted in an earlier call is told it may go on."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.workflow.stage_cache import Stages


class Killed(Exception):
    pass


def _chain(state: Path, folder: Path, force: bool = False, kill_in: str | None = None, x: int = 1) -> list[tuple[str, bool]]:
    """Stages a -> b; each writes its file. Returns (stage, fresh) of the stages that ran."""
    ran: list[tuple[str, bool]] = []
    stages = Stages(state, 2, force, progress=False)

    def step(name: str):
        def action(fresh: bool) -> None:
            ran.append((name, fresh))
            if name == kill_in:
                raise Killed(f"killed in {name}")  # as a kill -9 mid-stage: the stage's record is never written
            (folder / name).write_text(f"{name} {len(ran)}")
        return action

    made_a = stages.run("a", {"x": x}, [folder / "a"], step("a"))
    stages.run("b", {"a": made_a}, [folder / "b"], step("b"))
    return ran


def test_a_rerun_skips_complete_stages_and_redoes_those_after_a_changed_input(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert _chain(state, tmp_path) == [("a", True), ("b", True)]
    assert _chain(state, tmp_path) == []
    assert _chain(state, tmp_path, x=2) == [("a", True), ("b", True)]
    (tmp_path / "b").unlink()  # an output gone: that stage is redone
    assert _chain(state, tmp_path, x=2) == [("b", True)]


def test_a_forced_call_killed_mid_stage_is_resumed_and_the_stages_after_it_are_redone(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    _chain(state, tmp_path)
    with pytest.raises(Killed, match="^killed in a$"):
        _chain(state, tmp_path, force=True, kill_in="a")
    # a goes on where it stopped (fresh=False); b read a's old outputs, so it is redone too
    assert _chain(state, tmp_path) == [("a", False), ("b", True)]
    assert _chain(state, tmp_path) == []
