"""``pipeline``: the whole chain as one call.

On one run: analyse, combine the analysis pick, search, calibrate thresholds to the search, then
auto (with those thresholds) on each new run; with given thresholds: auto over many runs. Last,
one evaluation per run of every pick against that run's baselines, and ``summary.md``.

Each stage records in ``pipeline_state.json`` (written after the stage's outputs) a key of what it
was computed from (``search.workflow.stage_cache``); a rerun skips a stage whose key is the same and whose outputs
exist, so a killed pipeline goes on where it stopped (a killed search resumes) and a changed input
redoes the stages after it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.analyze import analyze
from analysis.evaluation.baselines import read_analysis_dir
from analysis.evaluation.evaluate import evaluating_once
from analysis.evaluation.report import write_report
from analysis.thresholds import Thresholds, load_thresholds
from modules.atomic import check_output_folder
from modules.combine.combine import combine
from modules.combine.plan import selection_epochs
from modules.errors import SweetspotError
from modules.rundir.digest import digest, run_key
from modules.rundir.run_dir import RunDir
from modules.rundir.run_spec import SpecLike, spec_for_run
from modules.spec.schema import Spec, dump_spec, loss_sign
from modules.spec.selection import Selection, load_selection, parse_selection
from search.calibration.auto import auto, run_names
from search.calibration.calibrate import calibrate
from search.calibration.calibration_file import CALIBRATION_NAME
from search.execution.config import SearchConfig
from search.execution.search_report import REPORT_NAME as SEARCH_REPORT
from search.execution.search_report import SELECTION_NAME as SEARCH_SELECTION
from search.execution.search_report import SUMMARY_NAME as SEARCH_SUMMARY
from search.tracking.mlflow_runs import mlflow_run
from search.workflow.pipeline_summary import (
    SUMMARY_JSON,
    SUMMARY_MD,
    SUMMARY_PNG,
    SummaryRow,
    evaluate_run_rows,
    summary_notes,
    write_summary,
)
from search.workflow.stage_cache import Stage, Stages, fresh_folder

STATE_NAME = "pipeline_state.json"
Epochs = dict[str, list[int]]


class PipelineError(SweetspotError, ValueError):
    """The pipeline cannot start as asked."""


@dataclass
class PipelineResult:
    """The stages (each ``done`` now or ``skipped``), the summary's rows and the files written."""

    output: Path
    stages: list[Stage]
    rows: list[SummaryRow]
    written: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Run:
    """A run of the pipeline: where it is, its folder name in the outputs, the spec that serves it."""

    location: str
    name: str
    run: RunDir
    spec: Spec
    key: dict[str, str]


class _Pipeline:
    """The stages of one call, and what they hand to the summary."""

    def __init__(self, output: Path, stages: Stages, config: SearchConfig, address: str | None,
                 device: str, progress: bool, mlflow: str | None = None, trust_resume: bool = False) -> None:
        self.output, self.stages, self.config = output, stages, config
        self.mlflow, self.trust_resume = mlflow, trust_resume
        self.address, self.device, self.progress = address, device, progress
        self.upstream: dict[str, str] = {}
        self.picks: dict[str, dict[str, Any]] = {}
        #: Per run, the picks to evaluate (label, epochs per group); the first is its evaluation's combination.
        self.selected: dict[str, list[tuple[str, Epochs]]] = {}
        self.runs: dict[str, _Run] = {}
        self.analyses: dict[str, Path] = {}
        self.links: dict[str, Path] = {}
        self.notes: list[str] = []

    def chain(self, r: _Run, calibration_trials: int) -> Path:
        """Analyse, combine, search and calibrate on ``r``; the thresholds file."""
        analysis_dir = self.output / "analysis" / r.name
        combined = self.output / "combined" / f"{r.name}.safetensors"
        search_dir = self.output / "search" / r.name
        thresholds = self.output / "calibration" / "thresholds.json"

        def analyse_step(fresh: bool) -> None:
            fresh_folder(analysis_dir, fresh)
            analyze(r.run, spec=r.spec, output=analysis_dir, progress=self.progress)

        self.upstream["analyse"] = self.stages.run(f"analyse {r.name}", r.key, [analysis_dir / "selection.json"], analyse_step)
        analysis_pick = load_selection(analysis_dir / "selection.json")

        def combine_step(fresh: bool) -> None:
            combined.parent.mkdir(parents=True, exist_ok=True)
            combine(r.run, analysis_pick, combined, spec=r.spec, update_bn=r.spec.batches is not None)

        self.upstream["combine"] = self.stages.run(f"combine {r.name}", {"analysis": self.upstream["analyse"]}, [combined], combine_step)

        def search_step(fresh: bool) -> None:
            from search.execution.api import search

            fresh_folder(search_dir, fresh)
            # Killed mid-search: go on. The search recorded its folder as this user's when it began,
            # so this resume needs no trust_resume unless the output came from elsewhere.
            resume = not fresh and (search_dir / "search_state.json").is_file()
            search(r.run, search_dir, r.spec, config=self.config, analysis=analysis_dir, address=self.address,
                   resume=resume, trust_resume=self.trust_resume, device=self.device, progress=self.progress, mlflow=self.mlflow)

        self.upstream["search"] = self.stages.run(
            f"search {r.name}", {**r.key, "analysis": self.upstream["analyse"], "config": self.config.model_dump(mode="json")},
            [search_dir / SEARCH_SELECTION, search_dir / SEARCH_SUMMARY], search_step,
        )
        self.upstream["calibrate"] = self.stages.run(
            f"calibrate on {r.name}", {"search": self.upstream["search"], "trials": calibration_trials},
            [thresholds, thresholds.parent / CALIBRATION_NAME],
            lambda fresh: calibrate([r.run], [search_dir], thresholds, r.spec, trials=calibration_trials, progress=self.progress),
        )
        search_pick = load_selection(search_dir / SEARCH_SELECTION)
        self.picks[f"analysis ({r.name})"] = _choices(analysis_pick, r.run)
        self.picks[f"search ({r.name})"] = _choices(search_pick, r.run)
        self.selected[r.location] = [("search pick", selection_epochs(search_pick, r.run)), ("analysis pick", selection_epochs(analysis_pick, r.run))]
        self.runs[r.location], self.analyses[r.location] = r, analysis_dir
        self.links.update({
            f"analysis of {r.name}": analysis_dir / "analysis_report.md",
            f"search of {r.name}": search_dir / SEARCH_REPORT,
            "calibration": thresholds.parent / "calibration_report.md",
        })
        return thresholds

    def auto(self, targets: list[_Run], thresholds: Path | Thresholds, spec: SpecLike | None, trust_run_spec: bool) -> None:
        """Auto on ``targets`` with ``thresholds`` (a file the chain wrote, or given)."""
        folder = self.output / "auto"
        update_bn = all(t.spec.batches is not None for t in targets)
        made_by = self.upstream["calibrate"] if isinstance(thresholds, Path) else digest(thresholds.to_json())
        # The chain's calibration carries the search over; thresholds given alone go through the guard.
        calibration = thresholds.parent / CALIBRATION_NAME if isinstance(thresholds, Path) else None

        def auto_step(fresh: bool) -> None:
            result = auto([t.location for t in targets], thresholds, folder, spec, trust_run_spec=trust_run_spec,
                          update_bn=update_bn, plots=True, address=self.address, progress=self.progress,
                          redo=fresh,  # an interrupted stage keeps the runs auto finished before the kill
                          guard=True, calibration=calibration, mlflow=self.mlflow)
            if result.failed:
                raise PipelineError(
                    "auto failed on " + "; ".join(f"{f.run}: {f.error} (details in {f.folder / 'auto_error.txt'})" for f in result.failed)
                    + "; fix them and run the pipeline again"
                )

        self.upstream["auto"] = self.stages.run(
            "auto on " + ", ".join(t.name for t in targets),
            {"runs": [t.key for t in targets], "thresholds": made_by, "guard": True, "calibration": calibration is not None},
            [folder / t.name / "auto_result.json" for t in targets], auto_step,
        )
        for t in targets:
            record = json.loads((folder / t.name / "auto_result.json").read_text(encoding="utf-8"))
            pick = parse_selection(record["selection"], str(folder / t.name / "auto_result.json"))
            self.notes.append(_guard_note(t.name, record["guard"], record["objective"]["mode"]))
            self.picks[f"auto ({t.name})"] = _choices(pick, t.run)
            self.selected[t.location] = [("auto pick", selection_epochs(pick, t.run))]
            self.runs[t.location], self.analyses[t.location] = t, folder / t.name / "analysis"
        self.links["auto selections per run (evaluated in the table above)"] = folder / "auto_summary.md"

    def evaluate(self, auto_targets: list[_Run]) -> tuple[list[SummaryRow], dict[str, Path]]:
        """Each run's picks against its baselines, written per run and into the summary."""
        folders = {loc: self.output / "evaluation" / self.runs[loc].name for loc in self.selected}
        rows: list[SummaryRow] = []

        def evaluate_step(fresh: bool) -> None:
            for t in auto_targets:  # what calibrated thresholds are for: to beat the default thresholds' pick
                default = analyze(t.run, spec=t.spec).selection
                self.picks[f"default analysis ({t.name})"] = _choices(default, t.run)
                self.selected[t.location].append(("default analysis pick", selection_epochs(default, t.run)))
            per_example, objective = "", ("", "")
            for location, chosen in self.selected.items():
                r = self.runs[location]
                result, run_rows = evaluate_run_rows(
                    r.name, r.run, r.spec, read_analysis_dir(self.analyses[location]), chosen,
                    update_bn=r.spec.batches is not None, device=self.device, progress=self.progress,
                )
                write_report(result, folders[location], {"run_dir": r.run.location, "combination": chosen[0][0]})
                rows.extend(run_rows)
                per_example, objective = result.per_example_name, (result.objective_metric, result.objective_mode)
            self.links.update({f"evaluation of {self.runs[loc].name}": f / "evaluation_report.md" for loc, f in folders.items()})
            groups = list(dict.fromkeys(g for loc in self.selected for g in self.runs[loc].run.groups))
            write_summary(self.output, rows, self.picks, groups, objective, per_example, self.links, [*self.notes, *summary_notes(rows)])

        summary = [self.output / SUMMARY_MD, self.output / SUMMARY_JSON]
        self.stages.run(
            "evaluate and summarise", {"upstream": self.upstream, "runs": {self.runs[loc].name: self.runs[loc].key for loc in self.selected}},
            [*summary, *(f / "evaluation.json" for f in folders.values())], evaluate_step,
        )
        if not rows:  # skipped: the rows of the earlier call
            earlier = json.loads(summary[1].read_text(encoding="utf-8"))["rows"]
            rows = [SummaryRow(**{**row, "test_difference": tuple(row["test_difference"])}) for row in earlier]
        return rows, {"md": summary[0], "json": summary[1], "plot": self.output / SUMMARY_PNG}


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
    mlflow: str | os.PathLike[str] | None = None,
    trust_resume: bool = False,
) -> PipelineResult:
    """Run the chain into ``output`` (see the module's docstring); return the stages and summary rows.

    Without ``thresholds``: ``runs`` is one run, searched with ``config`` (a ``SearchConfig``) and
    calibrated with ``calibration_trials``; ``auto_runs`` then get the calibrated thresholds. With
    ``thresholds``: auto over ``runs`` and ``auto_runs``, no search. ``spec`` serves every run;
    without it each run's stored spec is used, only with ``trust_run_spec``. Runs may be local
    folders or URIs (``s3://...``); outputs are local. ``mlflow`` (a tracking URI or a folder)
    logs the pipeline as an MLflow run, its search and auto stages as runs nested in it.
    A search stage that was interrupted is resumed when this user's search wrote it;
    ``trust_resume`` resumes one from elsewhere too (resuming unpickles its Tune and searcher state).
    """
    runs = [str(runs)] if isinstance(runs, (str, os.PathLike)) else [str(r) for r in runs]
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
    given = load_thresholds(thresholds) if isinstance(thresholds, (str, os.PathLike)) else thresholds
    locations = runs + [r for r in map(str, auto_runs) if r not in runs]
    opened = []
    for location, name in zip(locations, run_names(locations), strict=True):
        run = RunDir(location)
        run_spec = spec_for_run(spec, run, trust_run_spec=trust_run_spec, purpose="the pipeline")[0]
        if set(run_spec.groups) != set(run.groups):  # before any stage: a later stage would find it too late
            raise PipelineError(
                f"spec {run_spec.name!r} names groups {list(run_spec.groups)} but run {run.label} has groups"
                f" {run.groups}; pass the spec the run was recorded with (--spec), or --trust-run-spec to use"
                " each run's own stored spec"
            )
        opened.append(_Run(location, name, run, run_spec, {"run": run_key(run), "spec": digest(dump_spec(run_spec))}))
    output.mkdir(parents=True, exist_ok=True)
    targets = opened[1:] if given is None else opened
    total = (4 if given is None else 0) + (1 if targets else 0) + 1
    stages = Stages(output / STATE_NAME, total, force, progress)
    steps = _Pipeline(output, stages, config or SearchConfig(), address, device, progress, mlflow, trust_resume)
    # The searched run's pick and baselines are scored by the search and again by the evaluate step,
    # a new run's greedy soup by auto's guard and the evaluate step: each once.
    with mlflow_run(mlflow, f"pipeline {opened[0].name}", "pipeline") as tracker, evaluating_once():
        chosen = steps.chain(opened[0], calibration_trials) if given is None else given
        if targets:
            steps.auto(targets, chosen, spec, trust_run_spec)
        rows, written = steps.evaluate(targets)
        if tracker is not None:
            tracker.params({"runs": [r.location for r in opened], "stages": [s.name for s in stages.done]})
            tracker.artifacts(output, only=[SUMMARY_MD, SUMMARY_JSON, SUMMARY_PNG, "calibration", "evaluation"])
    return PipelineResult(output, stages.done, rows, written)


def _guard_note(name: str, guard: dict[str, Any], mode: str) -> str:
    ranked = sorted(guard["val"].items(), key=lambda item: loss_sign(mode) * item[1])
    scores = ", ".join(f"{n} {v:.5g}" for n, v in ranked)
    return f"auto on {name} kept {guard['chosen']}: the best on {name}'s validation split of {scores}."


def _choices(selection: Selection, run: RunDir) -> dict[str, Any]:
    return {g: c for g, c in selection.to_json().items() if g in run.groups}


__all__ = ["PipelineError", "PipelineResult", "Stage", "pipeline"]
