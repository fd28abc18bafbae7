"""``pipeline``: the whole chain as one call.

On one run: analyse, combine the analysis pick, search, calibrate thresholds to the search, then
auto (with those thresholds) on each new run; with given thresholds: auto over many runs. Last,
one evaluation per run of every pick against that run's baselines, and ``summary.md``.

Each stage records in ``pipeline_state.json`` (written after the stage's outputs) a key of what it
was computed from; a rerun skips a stage whose key is the same and whose outputs exist, so a killed
pipeline goes on where it stopped (a killed search resumes) and a changed input redoes the stages
after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.analyze import analyze
from analysis.evaluation.baselines import read_analysis_dir
from analysis.evaluation.report import write_report
from analysis.thresholds import Thresholds, load_thresholds
from modules.atomic import check_output_folder, write_json_atomic
from modules.combine import combine
from modules.combine_plan import selection_epochs
from modules.errors import SweetspotError
from modules.run_spec import SpecLike, spec_for_run
from modules.rundir import RunDir
from modules.selection import Selection, load_selection
from modules.spec import dump_spec
from search.auto import auto, run_names
from search.calibrate import calibrate
from search.config import SearchConfig
from search.report import REPORT_NAME as SEARCH_REPORT
from search.report import SELECTION_NAME as SEARCH_SELECTION
from search.report import SUMMARY_NAME as SEARCH_SUMMARY
from search.summary import SummaryRow, evaluate_run_rows, write_summary

STATE_NAME = "pipeline_state.json"


class PipelineError(SweetspotError, ValueError):
    """The pipeline cannot start as asked."""


@dataclass
class Stage:
    """One stage's outcome: ``done`` now or ``skipped`` (complete from an earlier call)."""

    name: str
    status: str
    seconds: float


@dataclass
class PipelineResult:
    output: Path
    stages: list[Stage]
    rows: list[SummaryRow]
    written: dict[str, Path] = field(default_factory=dict)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_key(run: RunDir) -> str:
    """What a run's results depend on: every listed file's sha256 (the manifest's own record)."""
    return _digest({e: {g: f.sha256 for g, f in run.epoch_entry(e).files.items()} for e in run.epochs})


class _Stages:
    """Runs stages in order, skipping complete ones; prints one line per stage."""

    def __init__(self, output: Path, total: int, force: bool, progress: bool) -> None:
        self.path = output / STATE_NAME
        self.total, self.force, self.progress = total, force, progress
        try:
            self.state: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.state = {}
        self.done: list[Stage] = []

    def recorded(self, name: str) -> dict[str, Any] | None:
        return self.state.get("stages", {}).get(name)

    def run(self, name: str, inputs: dict[str, Any], outputs: Sequence[Path], action: Callable[[bool], None]) -> str:
        """Run ``action(fresh)`` unless ``name`` is complete for ``inputs``; the stage's key.

        ``fresh`` is False when an earlier call of the same inputs was interrupted in this stage."""
        key = _digest(inputs)
        record = self.recorded(name)
        complete = record is not None and record.get("key") == key and all(Path(p).exists() for p in outputs)
        step = f"[{len(self.done) + 1}/{self.total}] {name}"
        if complete and not self.force:
            self._say(f"{step}: complete from an earlier run, skipped (--force redoes it)")
            self.done.append(Stage(name, "skipped", 0.0))
            return key
        interrupted = self.state.get("running") == {"stage": name, "key": key}
        self._say(f"{step}: {'resuming' if interrupted and not self.force else 'running'}")
        self._save(running={"stage": name, "key": key})
        started = time.perf_counter()
        action(self.force or not interrupted)
        seconds = time.perf_counter() - started
        self.state.setdefault("stages", {})[name] = {"key": key, "seconds": round(seconds, 2), "outputs": [str(p) for p in outputs]}
        self._save(running=None)
        self._say(f"{step}: done in {seconds:.1f} s")
        self.done.append(Stage(name, "done", seconds))
        return key

    def _save(self, running: dict[str, Any] | None) -> None:
        self.state["running"] = running
        write_json_atomic(self.path, self.state)

    def _say(self, line: str) -> None:
        if self.progress:
            print(f"sweetspot pipeline {line}", file=sys.stderr, flush=True)


def _fresh_folder(folder: Path, fresh: bool) -> None:
    """A stage folder of the pipeline's own, emptied when the stage starts over."""
    if fresh and folder.exists():
        shutil.rmtree(folder)


def pipeline(
    runs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    spec: SpecLike | None = None,
    *,
    auto_runs: Sequence[str | os.PathLike[str]] = (),
    thresholds: Thresholds | str | os.PathLike[str] | None = None,
    trust_run_spec: bool = False,
    config: SearchConfig | None = None,
    calibration_trials: int = 300,
    address: str | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
) -> PipelineResult:
    """Run the chain into ``output`` (see the module's docstring); return the stages and summary rows.

    Without ``thresholds``: ``runs`` is one run, searched with ``config`` (a ``SearchConfig``) and
    calibrated with ``calibration_trials``; ``auto_runs`` then get the calibrated thresholds. With
    ``thresholds``: auto over ``runs`` and ``auto_runs``, no search. ``spec`` serves every run;
    without it each run's stored spec is used, only with ``trust_run_spec``.
    """
    runs = [str(runs)] if isinstance(runs, (str, os.PathLike)) else [str(r) for r in runs]
    auto_list = [str(r) for r in auto_runs]
    if not runs:
        raise PipelineError("no run given; pass a run directory (--checkpoint-dir)")
    if thresholds is None and len(runs) != 1:
        raise PipelineError(
            f"{len(runs)} runs given without thresholds: the whole chain searches one run. Pass one run"
            " (and the new ones as --auto-runs), or --thresholds to analyse and auto-select many runs"
        )
    if isinstance(calibration_trials, bool) or not isinstance(calibration_trials, int) or calibration_trials < 1:
        raise PipelineError(f"is {calibration_trials!r}; calibrating needs at least 1 trial", param="calibration_trials")
    output = check_output_folder(output)
    given_thresholds = load_thresholds(thresholds) if isinstance(thresholds, (str, os.PathLike)) else thresholds
    config = config or SearchConfig()
    all_runs = runs + [r for r in auto_list if r not in runs]
    names = dict(zip(all_runs, run_names(all_runs), strict=True))
    opened = {r: RunDir(r) for r in all_runs}
    specs = {r: spec_for_run(spec, opened[r], trust_run_spec=trust_run_spec, purpose="the pipeline")[0] for r in all_runs}
    output.mkdir(parents=True, exist_ok=True)
    chain = given_thresholds is None
    stages = _Stages(output, (4 if chain else 0) + (1 if auto_list or not chain else 0) + 1, force, progress)
    keys = {r: {"run": run_key(opened[r]), "spec": _digest(dump_spec(specs[r]))} for r in all_runs}
    picks: dict[str, dict[str, Any]] = {}
    selected: dict[str, list[tuple[str, dict[str, list[int]]]]] = {}
    analyses: dict[str, Path] = {}
    links: dict[str, Path] = {}
    upstream: dict[str, str] = {}
    threshold_file: Path | None = None
    if chain:
        run = runs[0]
        name, run_dir, run_spec = names[run], opened[run], specs[run]
        analysis_dir = output / "analysis" / name
        combined = output / "combined" / f"{name}.safetensors"
        search_dir = output / "search" / name
        threshold_file = output / "calibration" / "thresholds.json"

        def analyse_step(fresh: bool) -> None:
            _fresh_folder(analysis_dir, fresh)
            analyze(run_dir, spec=run_spec, output=analysis_dir, progress=progress)

        upstream["analyze"] = stages.run("analyse " + name, keys[run], [analysis_dir / "selection.json"], analyse_step)
        analysis_pick = load_selection(analysis_dir / "selection.json")

        def combine_step(fresh: bool) -> None:
            combined.parent.mkdir(parents=True, exist_ok=True)
            combine(run_dir, analysis_pick, combined, spec=run_spec, update_bn=run_spec.batches is not None)

        upstream["combine"] = stages.run("combine " + name, {"analysis": upstream["analyze"]}, [combined], combine_step)

        def search_step(fresh: bool) -> None:
            from search.api import search

            _fresh_folder(search_dir, fresh)
            resume = not fresh and (search_dir / "search_state.json").is_file()
            search(run_dir, search_dir, run_spec, config=config, analysis=analysis_dir, address=address,
                   resume=resume, device=device, progress=progress)

        upstream["search"] = stages.run(
            "search " + name, {**keys[run], "analysis": upstream["analyze"], "config": config.model_dump(mode="json")},
            [search_dir / SEARCH_SELECTION, search_dir / SEARCH_SUMMARY], search_step,
        )
        upstream["calibrate"] = stages.run(
            "calibrate on " + name, {"search": upstream["search"], "trials": calibration_trials}, [threshold_file],
            lambda fresh: calibrate([run_dir], [search_dir], threshold_file, run_spec, trials=calibration_trials, progress=progress),
        )
        picks[f"analysis ({name})"] = _choices(analysis_pick, run_dir)
        search_pick = load_selection(search_dir / SEARCH_SELECTION)
        picks[f"search ({name})"] = _choices(search_pick, run_dir)
        selected[run] = [("search pick", selection_epochs(search_pick, run_dir)), ("analysis pick", selection_epochs(analysis_pick, run_dir))]
        analyses[run] = analysis_dir
        links.update({
            f"analysis of {name}": analysis_dir / "analysis_report.md",
            f"search of {name}": search_dir / SEARCH_REPORT,
            "calibration": threshold_file.parent / "calibration_report.md",
        })
        auto_targets = [r for r in auto_list if r != run]
    else:
        auto_targets = all_runs
    if auto_targets:
        auto_dir = output / "auto"
        chosen = threshold_file if threshold_file is not None else given_thresholds
        update_bn = {names[r]: specs[r].batches is not None for r in auto_targets}
        upstream["auto"] = stages.run(
            "auto on " + ", ".join(names[r] for r in auto_targets),
            {"runs": [keys[r] for r in auto_targets], "thresholds": upstream.get("calibrate") or given_thresholds.to_json()},
            [auto_dir / names[r] / "auto_result.json" for r in auto_targets],
            lambda fresh: _auto(auto_targets, chosen, auto_dir, spec, trust_run_spec, all(update_bn.values()), address, progress, fresh),
        )
        for r in auto_targets:
            pick = load_selection(auto_dir / names[r] / "analysis" / "selection.json")
            picks[f"auto ({names[r]})"] = _choices(pick, opened[r])
            selected[r] = [("auto pick", selection_epochs(pick, opened[r]))]
            analyses[r] = auto_dir / names[r] / "analysis"
        links["auto"] = auto_dir / "auto_summary.md"
    rows: list[SummaryRow] = []
    evaluation_dirs = {r: output / "evaluation" / names[r] for r in selected}
    written: dict[str, Path] = {}

    def evaluate_step(fresh: bool) -> None:
        per_example, objective = "", ("", "")
        for r in auto_targets:  # what auto's thresholds are for: to beat the default thresholds' pick
            default = analyze(opened[r], spec=specs[r]).selection
            picks[f"default analysis ({names[r]})"] = _choices(default, opened[r])
            selected[r].append(("default analysis pick", selection_epochs(default, opened[r])))
        for r, chosen_epochs in selected.items():
            result, run_rows = evaluate_run_rows(
                names[r], opened[r], specs[r], read_analysis_dir(analyses[r]), chosen_epochs,
                update_bn=specs[r].batches is not None, device=device, progress=progress,
            )
            write_report(result, evaluation_dirs[r], {"run_dir": r, "combination": chosen_epochs[0][0]})
            rows.extend(run_rows)
            per_example, objective = result.per_example_name, (result.objective_metric, result.objective_mode)
        links.update({f"evaluation of {names[r]}": evaluation_dirs[r] / "evaluation_report.md" for r in selected})
        groups = list(dict.fromkeys(g for r in selected for g in opened[r].groups))
        written.update(write_summary(output, rows, picks, groups, objective, per_example, links))

    stages.run(
        "evaluate and summarise", {"upstream": upstream, "runs": {names[r]: keys[r] for r in selected}},
        [output / "summary.md", output / "summary.json", *(d / "evaluation.json" for d in evaluation_dirs.values())],
        evaluate_step,
    )
    if not rows:  # skipped: the rows of the earlier call
        summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
        rows = [SummaryRow(**{**row, "test_difference": tuple(row["test_difference"])}) for row in summary["rows"]]
        written = {"md": output / "summary.md", "json": output / "summary.json", "plot": output / "summary.png"}
    return PipelineResult(output, stages.done, rows, written)


def _choices(selection: Selection, run: RunDir) -> dict[str, Any]:
    return {g: c for g, c in selection.to_json().items() if g in run.groups}


def _auto(runs: list[str], thresholds: Any, folder: Path, spec: SpecLike | None, trust: bool, update_bn: bool,
          address: str | None, progress: bool, fresh: bool) -> None:
    """Auto over ``runs``; an interrupted stage keeps the runs auto finished before the kill."""
    result = auto(runs, thresholds, folder, spec, trust_run_spec=trust, update_bn=update_bn, plots=True,
                  address=address, progress=progress, redo=fresh)
    if result.failed:
        raise PipelineError(
            "auto failed on " + "; ".join(f"{r.run}: {r.error}" for r in result.failed)
            + f" (details in {folder}/<run>/auto_error.txt); fix them and run the pipeline again"
        )


__all__ = ["PipelineError", "PipelineResult", "Stage", "pipeline", "run_key"]

