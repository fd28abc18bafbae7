"""Atomic writes: all or nothing, the permissions a plain open() gives, no process-wide umask
flip, a durable rename, and the temporaries of a killed writer removed by the next write."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import modules.atomic as atomic
from modules.atomic import atomic_path, stale_temporaries, write_bytes_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError, match="^crash$"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_permissions_follow_the_umask_without_changing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0o027)
    try:
        calls = []
        monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or 0o027)
        write_bytes_atomic(tmp_path / "a.bin", b"x")
        (tmp_path / "plain.bin").write_bytes(b"x")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert calls == []  # os.umask is process-wide: flipping it races with other threads' file creation
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o640


def test_the_folder_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    real = atomic.fsync_path
    monkeypatch.setattr(atomic, "fsync_path", lambda path, **kw: synced.append(Path(path)) or real(path, **kw))
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    assert synced[-1] == tmp_path and (tmp_path / "a.bin").read_bytes() == b"x"


def test_concurrent_writers_in_threads_each_land_whole(tmp_path: Path) -> None:
    def write(index: int) -> None:
        for round_ in range(20):
            write_bytes_atomic(tmp_path / f"f{index}.bin", bytes([index]) * (1000 + round_))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{i}.bin" for i in range(6)]
    assert all((tmp_path / f"f{i}.bin").read_bytes() == bytes([i]) * 1019 for i in range(6))


_KILLED = """
import sys, time
from modules.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 1_000_000)
    print("writing", flush=True)
    time.sleep(60)
"""


def test_after_kill_9_the_next_write_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "combined.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED, str(target)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    leftover = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftover) == 1 and leftover[0].name.startswith(f".combined.safetensors.{child.pid}-")
    assert stale_temporaries(tmp_path) == leftover
    write_bytes_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["combined.safetensors"]


def test_a_live_writers_temporary_is_left_alone(tmp_path: Path) -> None:
    live = tmp_path / f".out.bin.{os.getppid()}-0123abcd.tmp"
    dead = tmp_path / f".out.bin.{_dead_pid()}-0123abcd.tmp"
    other = tmp_path / ".notes.txt.tmp"  # not our naming: never touched
    for path in (live, dead, other):
        path.write_bytes(b"x")
    write_bytes_atomic(tmp_path / "out.bin", b"y")
    assert live.exists() and other.exists() and not dead.exists()
