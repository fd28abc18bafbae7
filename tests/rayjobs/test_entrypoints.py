"""Every step's entrypoint, named as the seed names it, takes the CLI's flags and fails with its
`error:` line and a non-zero status on an input that does not exist."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.thresholds import Thresholds, save_thresholds

REPO = Path(__file__).resolve().parents[2]


def _args(name: str, missing: str, tmp_path: Path) -> list[str]:
    thresholds = tmp_path / "thresholds.json"
    save_thresholds(Thresholds(), thresholds)
    selection = tmp_path / "selection.json"
    selection.write_text('{"backbone": 2}')
    return {
        "analyze_sweetspots": ["--checkpoint-dir", missing, "--output", str(tmp_path / "a")],
        "combine_modules": ["--checkpoint-dir", missing, "--group", "backbone=2", "--output", str(tmp_path / "c.safetensors")],
        "evaluate_combined": ["--checkpoint-dir", missing, "--selection", str(selection), "--output", str(tmp_path / "e")],
        "search_crossover": ["--checkpoint-dir", missing, "--trust-run-spec", "--output", str(tmp_path / "s")],
        "calibrate_thresholds": ["--checkpoint-dir", missing, "--search", str(tmp_path / "no_such_search"), "--trust-run-spec", "--output", str(tmp_path / "t.json")],
        "auto_sweetspot": ["--checkpoint-dir", missing, "--thresholds", str(thresholds), "--trust-run-spec", "--output", str(tmp_path / "u")],
        "pipeline": ["--checkpoint-dir", missing, "--trust-run-spec", "--output", str(tmp_path / "p")],
    }[name]


@pytest.mark.parametrize(
    "name",
    ["analyze_sweetspots", "combine_modules", "evaluate_combined", "search_crossover", "calibrate_thresholds", "auto_sweetspot", "pipeline"],
)
def test_each_step_names_the_missing_run_and_exits_non_zero(name: str, tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "no_such_run")
    module = importlib.import_module(f"rayjobs.{name}")
    code = module.main(_args(name, missing, tmp_path))
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and "no_such_" in err, err


def test_python_dash_m_runs_the_pipeline_entrypoint(tmp_path: Path) -> None:
    missing = str(tmp_path / "no_such_run")
    done = subprocess.run([sys.executable, "-m", "rayjobs.pipeline", *_args("pipeline", missing, tmp_path)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "no_such_run" in done.stderr, done.stderr


def test_a_commands_process_ends_with_its_code_after_its_exit_handlers_and_threads(tmp_path: Path) -> None:
    """``exit_process`` (how every entrypoint's process ends) keeps what a normal exit does: exit
    handlers (MLflow, temporary folders) run, a running thread is waited for, the code is the command's."""
    record = tmp_path / "record"
    code = f"""
import atexit, gc, threading, time
from pathlib import Path
from rayjobs._entry import exit_process

record = Path({str(record)!r})
def late() -> None:
    time.sleep(0.3)
    record.write_text("thread done\\n")
threading.Thread(target=late).start()
atexit.register(lambda: record.write_text(record.read_text() + f"handler ran, frozen {{gc.get_freeze_count() > 0}}\\n"))
exit_process(3)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert record.read_text().splitlines() == ["thread done", "handler ran, frozen True"]
