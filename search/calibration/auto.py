"""``auto``: select, combine (and evaluate) many runs on Ray, with a calibration or thresholds.

Each run is an independent Ray task with its own resources, so runs spread over a cluster. With a
calibration (``calibration.json`` from ``sweetspot calibrate``) a run's selection is the
validation-guided refinement of ``search.calibration.refine`` within a counted budget of evaluations, the
greedy soup as its floor; with thresholds only, the analysis's pick (``guard``: the best on
validation of that pick, the default thresholds' pick and the greedy soup). A run that fails is
reported with its error and the others go on; a rerun skips the runs whose outputs are complete
(``auto_result.json``, written last) for the same run contents, spec and settings.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from analysis.thresholds import Thresholds, load_thresholds
from modules.atomic import check_output_folder, write_json_atomic, write_text_atomic
from modules.errors import RunDirError, SweetspotError
from modules.rundir.digest import digest, run_key
from modules.rundir.run_spec import SpecLike
from modules.rundir.store import is_uri
from modules.spec.schema import Spec, dump_spec, load_spec, loss_sign
from search.calibration.auto_results import AutoResult, AutoRun
from search.calibration.calibration_file import Calibration, load_calibration
from search.calibration.transfer_fit import DEFAULT_EVALUATIONS_PER_CHECKPOINT
from search.tracking.mlflow_runs import log_auto, mlflow_run

RESULT_NAME = "auto_result.json"
ERROR_NAME = "auto_error.txt"
#: The key of a task's answer holding the validation scores it computed (not written to the record).
SCORES = "validation_scores"
MODEL_NAME = "combined.safetensors"


class AutoError(SweetspotError, ValueError):
    """Auto cannot start as asked (the per-run failures are reported, not raised)."""


def run_names(runs: Sequence[str]) -> list[str]:
    """A folder name per run: the run's own name, numbered when two runs share one."""
    names: list[str] = []
    for path in runs:
        base = (PurePosixPath(urlsplit(path).path).name if is_uri(path) else Path(path).resolve().name) or "run"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _settings(
    thresholds: Thresholds, evaluate: bool, update_bn: bool, guard: bool, calibration: Calibration | None = None,
    per_checkpoint: float = DEFAULT_EVALUATIONS_PER_CHECKPOINT,
) -> dict[str, Any]:
    settings: dict[str, Any] = {"thresholds": thresholds.to_json(), "evaluate": evaluate, "update_bn": update_bn, "guard": guard}
    if calibration is not None:
        settings.update(calibration=calibration.digest(), evaluations_per_checkpoint=per_checkpoint)
    return settings


def run_identity(run_path: str, spec: Spec | None) -> dict[str, str] | None:
    """What a run's result depends on besides the settings: where the run is, the digest of its
    manifest's files and of the spec (the given one, else the run's stored one); None when the
    run cannot be opened (it is then done again, and fails as that run's failure)."""
    from modules.rundir.run_dir import RunDir

    try:
        run = RunDir(run_path)
        if spec is None:
            stored = run.spec_path()
            spec_text = stored.read_text(encoding="utf-8") if stored is not None else ""
        else:
            spec_text = dump_spec(spec)
        location = run.location if is_uri(run_path) else str(Path(run_path).resolve())
        return {"location": location, "manifest": run_key(run), "spec": digest(spec_text)}
    except (RunDirError, OSError, ValueError):
        return None


def is_complete(folder: Path, settings: dict[str, Any], identity: dict[str, str] | None) -> dict[str, Any] | None:
    """The earlier record of a finished run with the same run contents, spec and settings
    (evaluated if asked); a different run written to the same output name is not complete."""
    if identity is None:
        return None
    path = folder / RESULT_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    earlier = record.get("settings", {})
    keys = [k for k in settings if k != "evaluate"]
    same = record.get("identity") == identity and all(earlier.get(k) == settings[k] for k in keys)
    if not same or (settings["evaluate"] and not earlier.get("evaluate")) or not (folder / MODEL_NAME).is_file():
        return None
    return record


def _spec_for(run: Any, run_path: str, spec: Spec | None, trust_run_spec: bool) -> Spec:
    if spec is not None:
        return spec
    stored = run.spec_path()  # of a run on object storage, a local copy that lives as long as ``run``
    if stored is None:
        raise AutoError(f"run {run_path} stores no spec; pass your sweetspot.yaml (--spec)")
    if not trust_run_spec:
        raise AutoError(
            f"combining and evaluating run the spec's code, and run {run_path} may come from elsewhere; pass your"
            " own spec (--spec sweetspot.yaml) or --trust-run-spec if you trust the runs' stored specs"
        )
    return load_spec(stored)


def auto_one(
    run_path: str, folder: str, thresholds_json: dict[str, Any], spec: Spec | None, trust_run_spec: bool,
    evaluate: bool, update_bn: bool, plots: bool, device: str = "cpu", guard: bool = False,
    calibration_json: dict[str, Any] | None = None, per_checkpoint: float = DEFAULT_EVALUATIONS_PER_CHECKPOINT,
    identity: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Analyse, select, combine and (optionally) evaluate one run into ``folder``; the record written.

    With a calibration, the selection is ``calibrated_selection``'s (guard included); else with
    ``guard``, the best on the run's validation split of the thresholds' pick, the default
    thresholds' pick and the greedy soup (``validation_guard``)."""
    from analysis.analyze import analyze
    from analysis.evaluation.evaluate_run import evaluate as evaluate_run
    from modules.combine.combine import combine
    from modules.rundir.run_dir import RunDir

    started = time.perf_counter()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (RESULT_NAME, ERROR_NAME):  # a run redone is complete only once its new record is written
        (out / stale).unlink(missing_ok=True)
    thresholds = Thresholds.model_validate(thresholds_json)
    settings = _settings(
        thresholds, evaluate, update_bn, guard,
        None if calibration_json is None else Calibration.model_validate(calibration_json), per_checkpoint,
    )
    run = RunDir(run_path)
    spec = _spec_for(run, run_path, spec, trust_run_spec)
    analysis = analyze(run, spec=spec, thresholds=thresholds, output=out / "analysis", plots=plots)
    selection = analysis.selection
    guarded = None
    refined = None
    if calibration_json is not None:
        from search.calibration.auto_selection import calibrated_selection

        calibration = Calibration.model_validate(calibration_json)
        refined = calibrated_selection(run, spec, calibration, selection, analyze(run, spec=spec).selection, update_bn, per_checkpoint, device)
        selection = refined.selection
        update_bn = refined.update_bn
    elif guard:
        from analysis.evaluation.validation_guard import best_on_validation

        default = analyze(run, spec=spec).selection
        guarded = best_on_validation(run, spec, {"the thresholds' pick": selection, "the default thresholds' pick": default}, update_bn, device)
        selection = guarded.selection
    combine(run, selection, out / MODEL_NAME, spec=spec, update_bn=update_bn)
    record: dict[str, Any] = {
        "run": run_path,
        "identity": identity,
        "settings": settings,
        "selection": selection.to_json(),
        "objective": {"metric": spec.objective.metric, "mode": spec.objective.mode},
    }
    if guarded is not None:
        record["guard"] = {"chosen": guarded.name, "val": guarded.val}
    if refined is not None:
        record.update(refined.record())
    if evaluate:
        evaluation = evaluate_run(
            run, out / MODEL_NAME, spec=spec, analysis=analysis, update_bn=update_bn, output=out / "evaluation",
            device=device,
        )
        record.update(evaluation_figures(evaluation.result))
    record["seconds"] = time.perf_counter() - started
    write_json_atomic(out / RESULT_NAME, record)
    return record


def evaluation_figures(result: Any) -> dict[str, Any]:
    """Val and test objective of the combination; its gain over the best single epoch and the
    greedy soup (percent, positive = better) with the test interval of the per-example difference."""
    from analysis.evaluation.evaluate import evaluated_by_kind

    metric, sign = result.objective_metric, -loss_sign(result.objective_mode)
    combination = result.evaluated[0]
    out: dict[str, Any] = {
        "val": combination.metrics["val"][metric],
        "test": combination.metrics["test"][metric],
        "per_example": result.per_example_name,
    }
    by_kind = evaluated_by_kind(result)
    for kind, key in (("best_single", "best_single"), ("greedy", "greedy_soup")):
        baseline = by_kind.get(kind)
        if baseline is combination:  # the combination is that baseline's weights
            out[key] = {"name": combination.candidate.name, "val_gain_pct": 0.0, "test_gain_pct": 0.0,
                        "test_difference": [0.0, 0.0], "verdict": "same weights"}
            continue
        comparison = next((c for c in result.comparisons if baseline is not None and c.baseline == baseline.candidate.name), None)
        if comparison is None:
            continue
        interval = comparison.test_interval
        out[key] = {
            "name": comparison.baseline,
            "val_gain_pct": sign * comparison.percent["val"].get(metric, float("nan")),
            "test_gain_pct": sign * comparison.percent["test"].get(metric, float("nan")),
            "test_difference": [interval.low, interval.high],
            "verdict": comparison.verdict,
        }
    return out


def _task(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The Ray task: a run's failure comes back as a record (its message), never as an exception."""
    from analysis.evaluation.evaluate import evaluating_once, validation_scores

    try:
        with evaluating_once() as memos:  # the guard's greedy soup is the evaluation's too
            record = auto_one(*args, **kwargs)
            # ... and a pipeline's evaluate step's, when this task ran in another process
            return {"status": "done", **record, SCORES: validation_scores(memos)}
    except Exception as error:  # noqa: BLE001 - any failure of one run is that run's, reported
        folder = Path(args[1])
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / ERROR_NAME, traceback.format_exc())
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"}


def auto(
    runs: Sequence[str | os.PathLike[str]],
    thresholds: Thresholds | str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    spec: SpecLike | None = None,
    *,
    trust_run_spec: bool = False,
    evaluate: bool = False,
    update_bn: bool = False,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    plots: bool = False,
    redo: bool = False,
    progress: bool = True,
    guard: bool = False,
    calibration: Calibration | str | os.PathLike[str] | None = None,
    evaluations_per_checkpoint: float = DEFAULT_EVALUATIONS_PER_CHECKPOINT,
    mlflow: str | os.PathLike[str] | None = None,
) -> AutoResult:
    """Pick and build the combination of each run, one Ray task per run (a single run on CPU, with
    no cluster named or joined, runs in this process), into ``output/<run name>/``; ``auto_summary.md`` and ``.parquet`` summarise every run.

    With ``calibration`` (calibration.json from ``calibrate``; its thresholds are used unless
    ``thresholds`` is given), each run's selection is refined on its validation split within
    ``evaluations_per_checkpoint`` x its checkpoints evaluations, never worse there than its
    greedy soup. Otherwise the thresholds' pick; with ``guard``, the best on validation of that
    pick, the default thresholds' pick and the greedy soup (the record says which and why).
    ``mlflow`` (a tracking URI or a folder) logs the call as an MLflow run, a child run per run."""
    started = time.perf_counter()
    runs = [str(r) for r in ([runs] if isinstance(runs, (str, os.PathLike)) else runs)]
    if not runs:
        raise AutoError("no run given; pass at least one run directory (--checkpoint-dir)")
    output = check_output_folder(output)
    missing = [run for run in runs if not is_uri(run) and not Path(run).exists()]
    if missing:  # a typo is refused before Ray starts; a broken run is reported as that run's failure
        raise AutoError(f"run directory {', '.join(missing)} does not exist; pass existing runs (--checkpoint-dir)")
    for run in (r for r in runs if not is_uri(r)):  # a run on object storage cannot hold a local output
        root = Path(getattr(run, "path", run)).resolve()
        if root == output.resolve() or root in output.resolve().parents:
            raise AutoError(
                f"{output} is inside the run directory {root}; runs are input only, write elsewhere",
                param="output",
            )
    if isinstance(evaluations_per_checkpoint, bool) or not evaluations_per_checkpoint >= 1:
        raise AutoError(
            f"is {evaluations_per_checkpoint!r}; the budget must allow at least 1 evaluation per checkpoint (every"
            " checkpoint is scored once for the greedy soup), e.g. 3", param="evaluations_per_checkpoint",
        )
    if calibration is not None and not isinstance(calibration, Calibration):
        calibration = load_calibration(calibration)
    if thresholds is None:
        if calibration is None:
            raise AutoError("pass a calibration (--calibration calibration.json) or thresholds (--thresholds)")
        thresholds = calibration.thresholds
    elif not isinstance(thresholds, Thresholds):
        thresholds = load_thresholds(thresholds)
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise AutoError(f"cpus per run {cpus_per_run} and gpus per run {gpus_per_run}: give CPUs > 0 and GPUs >= 0")
    spec_obj = None if spec is None else (spec if isinstance(spec, Spec) else load_spec(spec))
    if spec_obj is None and not trust_run_spec:
        raise AutoError(
            "auto combines and evaluates with the spec's code; pass your own spec (--spec sweetspot.yaml), or"
            " --trust-run-spec (trust_run_spec=True) if you trust the runs' stored specs"
        )
    if calibration is not None:
        _check_calibration_fits(calibration, runs, spec_obj)
    settings = _settings(thresholds, evaluate, update_bn, guard, calibration, evaluations_per_checkpoint)
    outcomes: dict[str, AutoRun] = {}
    todo = []
    for run, name in zip(runs, run_names(runs)):
        folder = output / name
        identity = run_identity(run, spec_obj)
        record = None if redo else is_complete(folder, settings, identity)
        if record is not None:
            outcomes[name] = AutoRun(run, name, "skipped", folder, record)
        else:
            todo.append((run, name, folder, identity))
    with mlflow_run(mlflow, f"auto {len(runs)} run(s)", "auto") as tracker:
        result = _auto_runs(todo, outcomes, runs, output, started, thresholds, spec_obj, trust_run_spec, evaluate,
                            update_bn, plots, guard, calibration, evaluations_per_checkpoint, address, cpus_per_run,
                            gpus_per_run, progress)
        log_auto(tracker, result)
    return result


def _auto_runs(todo, outcomes, runs, output, started, thresholds, spec_obj, trust_run_spec, evaluate,  # noqa: ANN001, ANN202
               update_bn, plots, guard, calibration, evaluations_per_checkpoint, address, cpus_per_run,
               gpus_per_run, progress):
    if todo:
        options = {
            "thresholds_json": thresholds.to_json(), "spec": spec_obj, "trust_run_spec": trust_run_spec,
            "evaluate": evaluate, "update_bn": update_bn, "plots": plots, "guard": guard,
            "calibration_json": None if calibration is None else calibration.model_dump(mode="json"),
            "per_checkpoint": evaluations_per_checkpoint,
        }
        _run_tasks(todo, outcomes, options, address, cpus_per_run, gpus_per_run, progress)
    ordered = [outcomes[name] for name in run_names(runs)]
    result = AutoResult(ordered, output, time.perf_counter() - started)
    from search.calibration.auto_report import write_summary

    result.written = write_summary(result)
    return result


def _check_calibration_fits(calibration: Calibration, runs: list[str], spec: Spec | None) -> None:
    """Refuse, before any task starts, a calibration of another model's groups or objective."""
    from modules.rundir.run_dir import RunDir

    if spec is not None:
        calibration.check_groups(list(spec.groups), "the spec")
        wanted = {"metric": spec.objective.metric, "mode": spec.objective.mode}
        if calibration.objective != wanted:
            raise AutoError(
                f"the calibration was fitted to the objective {calibration.objective} but the spec optimises {wanted};"
                " calibrate with this spec's objective"
            )
    for run in runs:
        try:
            groups = RunDir(run).groups
        except (RunDirError, OSError):
            continue  # a broken run fails as that run's failure
        calibration.check_groups(groups, f"run {run}")


def _run_tasks(
    todo: list[tuple[str, str, Path, dict[str, str] | None]], outcomes: dict[str, AutoRun], options: dict[str, Any],
    address: str | None, cpus_per_run: float, gpus_per_run: float, progress: bool,
) -> None:
    import ray  # only once a run is to be done

    from search.execution.cluster import check_resources, only_this_machine, start_ray

    if len(todo) == 1 and gpus_per_run == 0 and cpus_per_run <= (os.cpu_count() or 1) and only_this_machine(address):
        _run_here(todo[0], outcomes, options, cpus_per_run, progress)
        return

    start_ray(address)
    check_resources(cpus_per_run, gpus_per_run, "per run")
    device = "auto" if gpus_per_run > 0 else "cpu"  # a task without GPUs must not grab one
    task = ray.remote(_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
    pending = {
        task.remote(run, str(folder), device=device, identity=identity, **options): (run, name, folder)
        for run, name, folder, identity in todo
    }
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        run, name, folder = pending.pop(done[0])
        try:
            record = ray.get(done[0])
        except ray.exceptions.RayError as error:  # the worker died (out of memory, node lost)
            record = {"status": "failed", "error": str(error).strip().splitlines()[-1][:500]}
        _record(outcomes, run, name, folder, record, len(pending), progress)


def _run_here(
    job: tuple[str, str, Path, dict[str, str] | None], outcomes: dict[str, AutoRun], options: dict[str, Any],
    cpus_per_run: float, progress: bool,
) -> None:
    """One run on CPU with no cluster named: in this process, with the threads a task would have.
    A task would start Ray and a process that imports torch, and one run has nothing to run beside."""
    import torch

    run, name, folder, identity = job
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus_per_run)))
    try:
        record = _task(run, str(folder), device="cpu", identity=identity, **options)
    finally:
        torch.set_num_threads(threads)
    _record(outcomes, run, name, folder, record, 0, progress)


def _record(
    outcomes: dict[str, AutoRun], run: str, name: str, folder: Path, record: dict[str, Any], left: int, progress: bool
) -> None:
    status = record.pop("status")
    scores = record.pop(SCORES, None)
    evaluation = sys.modules.get("analysis.evaluation.evaluate")  # imported where a caller is evaluating_once
    if scores and evaluation is not None:
        evaluation.add_validation_scores(scores)
    outcome = AutoRun(run, name, status, folder, record, record.pop("error", None))
    outcomes[name] = outcome
    if progress:
        what = f"failed: {outcome.error}" if status == "failed" else f"done in {record.get('seconds', 0):.1f} s"
        print(f"[{len(outcomes)}/{len(outcomes) + left}] {name}: {what}", flush=True)


__all__ = ["AutoError", "AutoResult", "AutoRun", "auto"]
