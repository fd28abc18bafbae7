"""The search folder's logs after a kill: a line cut short is skipped, and the next entry is whole."""

from __future__ import annotations

from search.execution.jsonl_log import append_entry, read_entries


def test_an_entry_appended_after_a_line_a_kill_cut_short_is_read_back_whole(tmp_path) -> None:
    path = tmp_path / "finished.jsonl"
    append_entry(path, {"key": "a", "n": 1}, durable=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"key": "b", "n"')  # the process was killed mid-write
    append_entry(path, {"key": "c", "n": 3}, durable=False)
    assert read_entries(path) == [{"key": "a", "n": 1}, {"key": "c", "n": 3}]
    assert read_entries(tmp_path / "missing.jsonl") == []
