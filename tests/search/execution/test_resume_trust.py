"""--resume unpickles a search folder's Tune and searcher state, so it resumes only a folder this
user's own search wrote (recorded in their state folder), or one they say they trust. The records
themselves; the refusal and the trusted resume of a real search folder are in test_search.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.errors import SweetspotWarning
from search.errors import SearchError
from search.execution.resume_trust import (
    STATE_DIR_ENV,
    check_resume_trusted,
    record_search,
    state_folder,
)


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


def test_a_state_folder_that_cannot_be_written_warns_and_does_not_stop_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")  # the state folder would have to be below a file
    monkeypatch.setenv(STATE_DIR_ENV, str(blocked / "state"))
    with pytest.warns(SweetspotWarning, match=r"cannot record in .* a --resume of it will need --trust-resume"):
        record_search(tmp_path / "out", "abc")
    with pytest.raises(SearchError, match="was not written by you"):
        check_resume_trusted(tmp_path / "out", "abc")
