"""--resume unpickles a search folder's Tune and searcher state, so it resumes only a folder this
user's own search wrote (recorded in their state folder), or one they say they trust."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from search.execution.api import search
from search.execution.resume_trust import (
    STATE_DIR_ENV,
    check_resume_trusted,
    record_search,
    state_folder,
)
from tests.search import _faulty

#: One selection, scored as a trial: the smallest search that leaves Tune's state in its folder.
ONE = [{"encoder": [1], "middle": [2], "head": [3]}]


def _search(run: Path, out: Path, **kwargs) -> pd.DataFrame:
    result = search(run, out, _faulty.spec(), selections=ONE, shards=1, confirm_fraction=0.0, evaluate=False,
                    progress=False, **kwargs)
    return result.trials


def test_the_state_folder_is_the_users_own_and_can_be_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STATE_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_folder() == tmp_path / "home" / ".sweetspot"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_folder() == tmp_path / "xdg" / "sweetspot"
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "mine"))
    assert state_folder() == tmp_path / "mine"
    record_search(tmp_path / "out", "abc")
    check_resume_trusted(tmp_path / "out", "abc")  # recorded: resumed without asking
    assert list((tmp_path / "mine" / "searches").glob("*.json"))  # the record is in the user's folder ...
    assert not (tmp_path / "out").exists()  # ... not in the search folder
