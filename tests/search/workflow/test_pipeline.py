"""`make demo`'s pipeline at a tiny size: two real demo runs trained by `train-demo --reuse`, then
`sweetspot pipeline` (analyse, combine, search, calibrate on A, auto on B, evaluate, summary) on the
session's local Ray, killed with SIGKILL in its search and run again, once per module (the
``demo_pipeline`` fixture); each test reads that output, or a copy of it it may change. Figures in
the summary are checked against the models evaluated here directly."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
from safetensors.torch import load_file

from modules.demo.spec import demo_spec
from modules.rundir.run_dir import RunDir
from rayjobs import cli
from search.workflow.pipeline import PipelineError, pipeline

REPO = Path(__file__).resolve().parents[3]
WIDTH, EPOCHS = 64, 16  # the demo overfits by epoch ~10: the baselines differ
STAGES = ["analyse demo-a", "combine demo-a", "search demo-a", "calibrate on demo-a", "auto on demo-b", "evaluate and summarise"]


def _train(root: Path) -> list[Path]:
    runs = []
    for name, seed in (("demo-a", 0), ("demo-b", 1)):
        args = ["train-demo", "--out", str(root / name), "--seed", str(seed), "--width", str(WIDTH), "--epochs", str(EPOCHS), "--reuse", "--no-progress"]
        assert cli.main(args) == 0
        runs.append(root / name)
    return runs


def _pipeline(root: Path, *extra: str, runs: Path | None = None) -> int:
    """`make demo`'s pipeline into ``root``, on the runs in ``runs`` (default: in ``root`` too)."""
    runs = root if runs is None else runs
    return cli.main([
        "pipeline", "--checkpoint-dir", str(runs / "demo-a"), "--auto-runs", str(runs / "demo-b"), "--trust-run-spec",
        "--output", str(root), "--num-samples", "10", "--no-baselines", "--shards", "1", "--calibration-trials", "6",
        "--max-concurrent", "1", *extra,
    ])


def _objective(state: dict[str, torch.Tensor], seed: int) -> dict[str, float]:
    """Val and test loss of weights in the demo model, with the demo's own evaluate (no sweetspot code)."""
    spec = demo_spec(width=WIDTH, seed=seed)
    model, splits, evaluate = spec.build_model(), spec.load_data(), spec.evaluator()
    model.load_state_dict(state)
    return {split: float(evaluate(model, splits[split])["loss"]) for split in ("val", "test")}


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the two trained demo runs (the pipeline's output goes beside them)."""
    root = tmp_path_factory.mktemp("demo")
    _train(root)
    return root


@dataclass
class Resumed:
    """The pipeline's output folder after a kill mid-search and a second call, and what that call said."""

    root: Path
    code: int
    out: str
    err: str
    killed_after: int


@pytest.fixture(scope="module")
def demo_pipeline(ray_local: None, demo_runs: Path) -> Resumed:
    """The pipeline killed in its search, then run again in this process: once per module."""
    root = demo_runs
    killed_after = _killed_in_the_search(root)
    assert (root / "analysis" / "demo-a" / "selection.json").is_file() and not (root / "summary.md").exists()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _pipeline(root)
    return Resumed(root, code, out.getvalue(), err.getvalue(), killed_after)


def _finished(search: Path) -> int:
    """Trials the search has fully scored so far (its fsync'd log of finished selections)."""
    try:
        return len((search / "finished.jsonl").read_text(encoding="utf-8").splitlines())
    except OSError:
        return 0


def _killed_in_the_search(root: Path, trials: int = 2) -> int:
    """The pipeline in a process of its own (on the session's Ray), killed with SIGKILL once its
    search has finished ``trials`` trials; how many it had finished."""
    command = [
        sys.executable, "-m", "rayjobs.pipeline", "--checkpoint-dir", str(root / "demo-a"), "--auto-runs", str(root / "demo-b"),
        "--trust-run-spec", "--output", str(root), "--num-samples", "10", "--no-baselines", "--shards", "1", "--calibration-trials", "6",
        "--max-concurrent", "1",
        "--address", ray.get_runtime_context().gcs_address, "--no-progress",
    ]
    search = root / "search" / "demo-a"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline = time.monotonic() + 300
            while _finished(search) < trials and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            log.seek(0)
            assert process.poll() is None, f"the pipeline ended before its search was killed: {log.read()[-3000:]}"
            assert _finished(search) >= trials, f"the search finished {_finished(search)} trials in 300 s"
        finally:
            process.kill()
            process.wait()
    return _finished(search)


def test_the_demo_pipeline_killed_mid_search_goes_on_and_writes_every_artefact_and_a_complete_summary(demo_pipeline: Resumed) -> None:
    root = demo_pipeline.root
    assert demo_pipeline.code == 0, demo_pipeline.err[-3000:]
    assert 2 <= demo_pipeline.killed_after < 10  # killed mid-search
    for stage in STAGES[:2]:
        assert f"{stage}: complete from an earlier run, skipped" in demo_pipeline.err
    assert "search demo-a: resuming" in demo_pipeline.err
    for stage in STAGES[2:]:
        assert f"{stage}: done" in demo_pipeline.err
    assert "# sweetspot pipeline summary" in demo_pipeline.out
    trials = pd.read_parquet(root / "search" / "demo-a" / "trials.parquet")
    # the trials finished before the kill were not scored again (Tune kept them, or the memo answered)
    assert trials["selection"][~trials["from_memo"]].is_unique
    for path in [
        "analysis/demo-a/analysis_report.md", "analysis/demo-a/selection.json", "combined/demo-a.safetensors",
        "search/demo-a/search_report.md", "search/demo-a/best_selection.json", "search/demo-a/trials.parquet",
        "calibration/thresholds.json", "calibration/calibration_report.md", "auto/demo-b/combined.safetensors",
        "auto/auto_summary.md", "evaluation/demo-a/evaluation.json", "evaluation/demo-b/evaluation.json",
        "summary.md", "summary.json", "summary.png",
    ]:
        assert (root / path).is_file(), path
    summary = json.loads((root / "summary.json").read_text())
    groups = RunDir(root / "demo-a").groups
    assert set(summary["picks"]) == {"analysis (demo-a)", "search (demo-a)", "auto (demo-b)", "default analysis (demo-b)"}
    assert all(set(picks) == set(groups) for picks in summary["picks"].values())
    rows = {(r["run"], r["label"]): r for r in summary["rows"]}
    baselines = ["best single epoch", "last epoch", "plateau average", "greedy soup"]
    assert set(rows) == {("demo-a", b) for b in [*baselines, "search pick", "analysis pick"]} | {("demo-b", b) for b in [*baselines, "auto pick", "default analysis pick"]}
    for row in rows.values():
        low, high = row["test_difference"]
        assert math.isfinite(row["val"]) and math.isfinite(row["test"]) and low <= high
    markdown = (root / "summary.md").read_text()
    for link in summary["links"].values():
        assert f"]({link})" in markdown and (root / link).is_file(), link

    # The best single epoch: chosen on validation among every checkpoint, evaluated here directly.
    run_a = RunDir(root / "demo-a")
    singles = {e: _objective(run_a.state_dict(e), seed=0) for e in run_a.epochs}
    best = min(singles, key=lambda e: (singles[e]["val"], e))
    assert rows[("demo-a", "best single epoch")]["val"] == pytest.approx(singles[best]["val"], rel=1e-6)
    assert rows[("demo-a", "best single epoch")]["test"] == pytest.approx(singles[best]["test"], rel=1e-6)
    assert rows[("demo-a", "last epoch")]["test"] == pytest.approx(singles[run_a.epochs[-1]]["test"], rel=1e-6)
    assert best != run_a.epochs[-1] and rows[("demo-a", "last epoch")]["val_gain_pct"] < 0
    # The auto pick on B is the model auto combined; its figures are that file's.
    auto_b = _objective(load_file(root / "auto" / "demo-b" / "combined.safetensors"), seed=1)
    assert rows[("demo-b", "auto pick")]["val"] == pytest.approx(auto_b["val"], rel=1e-5)
    assert rows[("demo-b", "auto pick")]["test"] == pytest.approx(auto_b["test"], rel=1e-5)
    assert rows[("demo-a", "best single epoch")]["verdict"] == "the best single epoch's results"
    # Auto with A's calibration kept the best it scored on B's validation, within its budget.
    record = json.loads((root / "auto" / "demo-b" / "auto_result.json").read_text())
    guard = record["guard"]
    assert guard["val"][guard["chosen"]] == min(guard["val"].values()) <= guard["val"]["the greedy soup"]
    assert record["budget"]["evaluations"] <= record["budget"]["budget"] == 3 * len(run_a.epochs)
    assert any(note.startswith(f"auto on demo-b kept {guard['chosen']}") for note in summary["notes"])


def test_a_rerun_skips_complete_stages_and_a_changed_setting_redoes_only_what_follows(
    demo_pipeline: Resumed, tmp_path: Path, capsys
) -> None:
    runs = demo_pipeline.root
    root = tmp_path / "demo"  # a copy of the module's output (the runs stay where they are), for this test to change
    shutil.copytree(runs, root, ignore=lambda folder, names: ["demo-a", "demo-b"] if Path(folder) == runs else [])
    summary_before = (root / "summary.json").read_text()
    manifests = {name: (runs / name / "manifest.json").read_bytes() for name in ("demo-a", "demo-b")}
    _train(runs)  # --reuse: the complete runs are kept as they are
    assert {name: (runs / name / "manifest.json").read_bytes() for name in manifests} == manifests
    assert _pipeline(root, runs=runs) == 0
    err = capsys.readouterr().err
    assert all(f"{stage}: complete from an earlier run, skipped" in err for stage in STAGES), err
    assert (root / "summary.json").read_text() == summary_before

    assert _pipeline(root, "--calibration-trials", "7", runs=runs) == 0
    err = capsys.readouterr().err
    for stage in STAGES[:3]:
        assert f"{stage}: complete from an earlier run, skipped" in err
    for stage in STAGES[3:]:
        assert f"{stage}: done" in err


def test_bad_invocations_say_what_to_do(demo_runs: Path, tmp_path: Path, capsys) -> None:
    root = demo_runs
    with pytest.raises(PipelineError, match="without thresholds: the whole chain searches one run"):
        pipeline([root / "demo-a", root / "demo-b"], tmp_path / "out", trust_run_spec=True)
    code = cli.main(["pipeline", "--checkpoint-dir", str(root / "demo-a"), "--output", str(tmp_path / "out")])
    assert code == 2 and "--trust-run-spec" in capsys.readouterr().err


def test_with_thresholds_it_auto_selects_many_runs_without_a_search(demo_pipeline: Resumed, tmp_path: Path, capsys) -> None:
    root = demo_pipeline.root  # read only: its runs and the thresholds its calibration wrote
    out = tmp_path / "many"
    code = cli.main([  # one run as a file:// URI, read through pyarrow's file system as on object storage
        "pipeline", "--checkpoint-dir", str(root / "demo-a"), (root / "demo-b").as_uri(), "--thresholds",
        str(root / "calibration" / "thresholds.json"), "--trust-run-spec", "--output", str(out), "--no-progress",
    ])
    assert code == 0, capsys.readouterr().err
    assert not (out / "search").exists() and not (out / "calibration").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["run"], r["label"]) for r in summary["rows"] if "pick" in r["label"]} == {
        (run, label) for run in ("demo-a", "demo-b") for label in ("auto pick", "default analysis pick")
    }
    # Thresholds alone (no calibration.json): the guard's three candidates, no refinement, no budget.
    record = json.loads((out / "auto" / "demo-b" / "auto_result.json").read_text())
    assert set(record["guard"]["val"]) == {"the thresholds' pick", "the default thresholds' pick", "the greedy soup"}
    assert "budget" not in record


def test_a_spec_that_does_not_fit_a_new_run_is_refused_before_any_stage(demo_runs: Path, tiny_run_path: Path, tmp_path: Path) -> None:
    root = demo_runs
    spec = root / "demo-a" / "sweetspot.yaml"
    with pytest.raises(PipelineError, match=rf"names groups .* but run {tiny_run_path} has groups \['encoder'"):
        pipeline(root / "demo-a", tmp_path / "out", spec, auto_runs=[tiny_run_path])
    assert not (tmp_path / "out").exists()
