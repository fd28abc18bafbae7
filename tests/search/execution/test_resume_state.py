"""--resume refuses a search folder whose Tune state names classes from before the move, and one
started with another run, spec or settings, each with what to do instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.errors import SearchError
from search.execution.search_state import CODE_LAYOUT, check_resume

NOW = {"code_layout": CODE_LAYOUT, "search_id": "x", "run": "runs/a", "spec": "s", "settings": {"seed": 0}}


def test_a_folder_from_before_the_move_is_refused_with_what_to_do(tmp_path: Path) -> None:
    before = {k: v for k, v in NOW.items() if k != "code_layout"}
    with pytest.raises(SearchError, match=r"written by an earlier sweetspot.*another --output"):
        check_resume(before, NOW, tmp_path)
    with pytest.raises(SearchError, match=r"layout 2, this one continues layout 3"):  # before standby trials
        check_resume({**NOW, "code_layout": 2}, NOW, tmp_path)
    check_resume(dict(NOW), NOW, tmp_path)  # the same layout resumes
    with pytest.raises(SearchError, match="started with other run"):
        check_resume({**NOW, "run": "runs/b"}, NOW, tmp_path)
