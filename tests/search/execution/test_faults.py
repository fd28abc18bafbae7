"""Faults for real: a node lost mid-search (a cluster in a process of its own), a driver killed
mid-search and the search resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import ray

from modules.rundir.run_dir import RunDir
from search.algorithms.space import CrossoverSpace
from tests.conftest import DEFAULT_RAY_POINTER
from tests.search import _faulty
from tests.search._drive import (
    NODE_LOSS_SAMPLES,
    SEEDS,
    SLOW_SAMPLES,
    finished_trials,
    slow_search,
)

ROOT = Path(__file__).resolve().parents[3]


def _drive(*args: str, timeout: float = 480) -> dict:
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.search._drive", *args], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = driver.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # whatever of the Ray it started is left
        except ProcessLookupError:
            pass
        driver.wait()
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert driver.returncode == 0 and lines, stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_a_node_lost_mid_search_costs_no_trial(tiny_run_path: Path, tmp_path: Path) -> None:
    summary = _drive("node-loss", str(tiny_run_path), str(tmp_path / "out"))
    assert summary["removed"]
    assert summary["trials"] >= NODE_LOSS_SAMPLES  # every trial accounted for ...
    # ... those on the lost node ran again elsewhere: by Tune's retry, or (a trial whose node died
    # while it was starting, which Tune does not retry) as a new trial of the same selection
    assert summary["unfinished_selections"] == [], summary
    assert summary["nodes"] == 2
    # The cluster named itself in the suite's own Ray temp folder, not where a user's plain
    # `ray.init()` looks: once it is gone, that would name a dead cluster.
    assert (Path(os.environ["RAY_TMPDIR"]) / "ray" / "ray_current_cluster").read_text().strip() == summary["address"]
    assert not DEFAULT_RAY_POINTER.is_file() or DEFAULT_RAY_POINTER.read_text().strip() != summary["address"]


def _logged(out: Path) -> int:
    """Trials finished so far, as the search logs them (fsync'd as each finishes)."""
    try:
        return len((out / "finished.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _result_files(out: Path) -> dict[str, str]:
    """trial id -> its result.json text, for trials that finished (scored on every shard)."""
    found = {}
    for path in (out / "tune" / "crossover").glob("*/result.json"):
        text = path.read_text()
        if '"complete": true' in text:
            found[json.loads(text.splitlines()[0])["trial_id"]] = text
    return found


def test_resume_after_the_driver_is_killed_reruns_no_finished_trial(
    ray_local: None, tiny_run_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    driver = subprocess.Popen(  # a driver on the session's Ray, as a user's on a cluster
        [sys.executable, "-m", "tests.search._drive", "slow", str(tiny_run_path), str(out), ray.get_runtime_context().gcs_address],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and (not (out / "tune").exists() or finished_trials(out) < 5):
        time.sleep(0.2)
    # Tune writes the trials' result files when it saves its experiment state (every 2 s here):
    # wait until that save is on disk too, so that the resume has those trials in Tune's state (the
    # memo answers any it lacks), but kill it well before the search ends (finished.jsonl counts
    # the trials as they finish), however slowly a busy machine saves.
    flushed = max(p.stat().st_mtime for p in (out / "tune" / "crossover").glob("*/result.json"))
    while time.time() < deadline and _logged(out) < SLOW_SAMPLES - 4 and not any(
        p.stat().st_mtime >= flushed for p in (out / "tune" / "crossover").glob("experiment_state-*.json")
    ):
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver; Ray ends its job's trial workers, pool and memo
    driver.wait()
    before = _result_files(out)
    assert 5 <= len(before) < SLOW_SAMPLES
    # resumed by a new driver (this process), as a user reruns the command
    capsys.readouterr()
    summary = slow_search(str(tiny_run_path), out, resume=True, progress=True)
    total = SLOW_SAMPLES + SEEDS
    assert summary["trials"] == total and set(summary["statuses"]) == {"finished"}, summary
    # the rate counts the trials this run ran, and the progress line goes on from those done before
    # (Tune's saved state may lag the result files by a save on a busy machine: at least one trial)
    assert 1 <= summary["earlier"] <= len(before) + 1, summary
    report = (out / "search_report.md").read_text()
    assert f"{total} trials: {summary['earlier']} before --resume, {total - summary['earlier']} after it" in report
    assert f"search: {total}/{total} trials" in capsys.readouterr().err
    # the Optuna study of the first run went on: its finished trials are those of trials.parquet
    study = optuna.load_study(study_name=summary["study"], storage=f"sqlite:///{tmp_path / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    space = CrossoverSpace.build(_faulty.spec(), RunDir(tiny_run_path).groups, RunDir(tiny_run_path).epochs, None, 0)
    parquet = pd.read_parquet(out / "trials.parquet")
    scored = {json.dumps(space.encode(json.loads(k)), sort_keys=True): v for k, v in zip(parquet.selection, parquet.objective)}
    assert len(complete) >= len(before)
    for trial in complete:
        assert trial.value == pytest.approx(scored[json.dumps(trial.params, sort_keys=True)])
    after = _result_files(out)
    trials = pd.read_parquet(out / "trials.parquet").set_index("trial_id")
    for trial, text in before.items():
        # Kept as it was, or (finished after Tune's last state save) answered from the memo:
        # either way its selection was not evaluated again.
        assert after[trial] == text or bool(trials.loc[trial, "from_memo"]), trial
    assert trials["selection"][~trials["from_memo"]].is_unique
