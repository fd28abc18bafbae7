"""--resume unpickles a search folder's Tune and searcher state, so it resumes only a folder this
user's own search wrote (recorded in their state folder), or one they say they trust."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rayjobs import cli
from search.errors import SearchError
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


def test_a_folder_from_elsewhere_is_refused_until_trusted_and_a_swapped_one_too(
    ray_local: None, tiny_run_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    first = _search(tiny_run_path, mine)
    assert list(first["status"]) == ["finished"]
    # The same folder, as it comes from another user or machine: a copy at a path no search of this
    # user wrote (a moved folder looks the same).
    theirs = tmp_path / "theirs"
    shutil.copytree(mine, theirs)
    with pytest.raises(SearchError, match=rf"--resume: {theirs} was not written by you: no search of yours was recorded"
                       r".*unpickles the Tune and searcher state.*pass --trust-resume \(trust_resume=True"):
        _search(tiny_run_path, theirs, resume=True)
    code = cli.main(["search", "--checkpoint-dir", str(tiny_run_path), "--output", str(theirs), "--trust-run-spec",
                     "--resume", "--shards", "1", "--confirm-fraction", "0", "--no-progress", "--no-evaluate"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --resume: {theirs} was not written by you") and "--trust-resume" in err

    # A folder this user's search wrote (as record_search notes when a search starts), whose
    # contents were then swapped for another search's.
    swapped = tmp_path / "swapped"
    record_search(swapped, "0123456789ab")
    shutil.copytree(mine, swapped)
    state = json.loads((mine / "search_state.json").read_text())
    with pytest.raises(SearchError, match=rf"{swapped} was not written by you: it now holds search '{state['search_id']}',"
                       " not the search '0123456789ab' you started there"):
        _search(tiny_run_path, swapped, resume=True)

    # Trusted: resumed (Tune's finished trial kept, not scored again), and recorded as this user's.
    resumed = _search(tiny_run_path, theirs, resume=True, trust_resume=True)
    assert list(resumed["trial_id"]) == list(first["trial_id"]) and list(resumed["status"]) == ["finished"]
    check_resume_trusted(theirs, json.loads((theirs / "search_state.json").read_text())["search_id"])
