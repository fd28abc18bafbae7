"""``calibrate``: fit the analysis's five thresholds so that it picks what the search picked.

An Optuna study (no Ray) proposes thresholds; each study trial analyses every run's recorded
metrics with them (the pure path) and measures, in order, the mean validation-objective gap
between the analysis's selection and the search's pick (how much worse, relative; a selection
as good or better counts 0) and the share of groups whose choice differs. Several runs are
fitted jointly, which is how thresholds generalise. The defaults are the study's first trial,
so calibration never ends worse than them on the runs it was given.

The plateau thresholds keep their scale (each run's own [0, 1] goodness curve with an outlier
fence, analysis.thresholds): thresholds files stay interchangeable between analyze and auto.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.thresholds import MIN_WINDOW, Thresholds, save_thresholds
from modules.atomic import check_output_file
from modules.errors import SweetspotWarning
from modules.rundir.run_dir import RunDir
from modules.rundir.run_spec import SpecLike, as_run
from modules.spec.schema import Spec, load_spec
from search.calibration.calibration_file import CALIBRATION_NAME
from search.calibration.cases import CalibrationCase, CalibrationError, read_search
from search.calibration.outcomes import CalibrationResult, CaseOutcome
from search.calibration.transfer_fit import (
    build_calibration,
    fit_case,
    transfer_outcomes,
)

if TYPE_CHECKING:
    import optuna

#: Tie-break weight of the mismatch share: far below any gap that matters, so gaps come first.
TIE_BREAK = 1e-6
#: Widest stability window the study tries (checkpoints); a run's length bounds it too.
MAX_WINDOW = 12
VARIANCE_RANGE = (1e-5, 0.25)
RATE_RANGE = (1e-5, 0.5)


class CalibrationWarning(SweetspotWarning):
    """Calibration found nothing better than the default thresholds (they are written instead)."""


def _round(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def suggest_thresholds(trial: optuna.Trial, max_window: int) -> Thresholds:
    """Thresholds from the study's proposal; the four MCDA weights are normalised to sum to 1."""
    raw = [trial.suggest_float(f"w_{k}", 0.0, 1.0) for k in ("loss", "task", "stability", "gradient")]
    total = sum(raw)
    weights = [round(v / total, 4) for v in raw] if total > 0 else [0.25] * 4
    top = max(range(4), key=lambda i: weights[i])
    weights[top] = round(weights[top] + 1.0 - sum(weights), 4)
    return Thresholds.model_validate(
        {
            "plateau_variance": _round(trial.suggest_float("plateau_variance", *VARIANCE_RANGE, log=True)),
            "improvement_rate": _round(trial.suggest_float("improvement_rate", *RATE_RANGE, log=True)),
            "stability_window": trial.suggest_int("stability_window", MIN_WINDOW, max_window),
            "mcda_weights": dict(zip(("loss", "task", "stability", "gradient"), weights)),
            "voting_confidence": _round(trial.suggest_float("voting_confidence", 0.0, 1.0)),
        }
    )


def default_params(max_window: int) -> dict[str, Any]:
    """The default thresholds as study parameters (enqueued as the first trial)."""
    d = Thresholds()
    w = d.mcda_weights
    return {
        "w_loss": w.loss, "w_task": w.task, "w_stability": w.stability, "w_gradient": w.gradient,
        "plateau_variance": d.plateau_variance, "improvement_rate": d.improvement_rate,
        "stability_window": min(d.stability_window, max_window), "voting_confidence": d.voting_confidence,
    }


def outcome(case: CalibrationCase, thresholds: Thresholds) -> CaseOutcome:
    analysis = case.analyse(thresholds)
    selection = case.selection_of(analysis)
    value = case.val_score(selection)
    return CaseOutcome(case.label, selection, value, case.gap(value), case.mismatches(selection))


def _rank(row: dict[str, Any]) -> tuple[float, float, int]:
    """Study trials in order of merit: gap, then mismatched share, then the earlier trial."""
    return (row["gap"], row["mismatch_share"], row["trial"])


def _specs(spec: SpecLike | Sequence[SpecLike] | None, runs: list[RunDir], trust_run_spec: bool) -> list[Spec]:
    """One spec per run: the one given (for all, or one each), or each run's stored one when trusted."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != len(runs):
            raise CalibrationError(f"{len(spec)} specs for {len(runs)} runs; pass one spec, or one per run in the same order")
        return [s if isinstance(s, Spec) else load_spec(s) for s in spec]
    if spec is not None:
        one = spec if isinstance(spec, Spec) else load_spec(spec)
        return [one] * len(runs)
    out = []
    for run in runs:
        stored = run.spec_path()
        if stored is None:
            raise CalibrationError(f"run {run.label} stores no spec; pass your sweetspot.yaml (--spec)")
        if not trust_run_spec:
            raise CalibrationError(
                "calibration scores selections with the spec's model, data and evaluate code; a run directory"
                f" may come from elsewhere ({run.label}). Pass your own spec (--spec sweetspot.yaml), or"
                " --trust-run-spec (trust_run_spec=True) if you trust the runs' stored specs"
            )
        out.append(load_spec(stored))
    return out


def _searched_run(search: str | os.PathLike[str]) -> str | None:
    """The run directory a search folder's summary names (None when it names none)."""
    try:
        summary = json.loads((Path(search) / "search_summary.json").read_text(encoding="utf-8"))
        return str(summary["run_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def calibrate(
    runs: Sequence[RunDir | str | os.PathLike[str]],
    searches: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    spec: SpecLike | Sequence[SpecLike] | None = None,
    *,
    trust_run_spec: bool = False,
    trials: int = 300,
    seed: int = 0,
    report: bool = True,
    progress: bool = False,
    optuna_storage: str | os.PathLike[str] | None = None,
) -> CalibrationResult:
    """Fit thresholds on ``runs`` (each with the search folder of it, same order); write them to
    ``output`` (thresholds.json form) with calibration_report.md and its plot beside it.

    With ``optuna_storage`` (e.g. ``sqlite:///search.db``) the study is kept there as
    ``sweetspot-calibrate-<id>`` (``result.study_name``), for optuna-dashboard."""
    started = time.perf_counter()
    runs = [runs] if isinstance(runs, (str, os.PathLike, RunDir)) else list(runs)
    searches = [searches] if isinstance(searches, (str, os.PathLike)) else list(searches)
    if not runs:
        raise CalibrationError("no run given; pass at least one run directory with the search of it")
    if len(runs) != len(searches):
        raise CalibrationError(
            f"{len(runs)} run(s) but {len(searches)} search folder(s); pass one --search per --checkpoint-dir, in the same order"
        )
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise CalibrationError(f"is {trials!r}; the study needs at least 1 trial (e.g. 300)", param="trials")
    output = check_output_file(output)
    if output.suffix != ".json":
        raise CalibrationError(f"{output} is not a .json file; name the thresholds file e.g. calibrated_thresholds.json", param="output")
    records = [read_search(s) for s in searches]  # cheap checks before any spec code runs
    runs = [as_run(r) for r in runs]
    for run, search in zip(runs, searches):
        if run.is_local and run.path.resolve() in output.resolve().parents:
            raise CalibrationError(
                f"{output} is inside the run directory {run.path}; the run is input only, write elsewhere",
                param="output",
            )
        searched = _searched_run(search)
        if searched is not None and (Path(searched).is_dir() or not run.is_local) and not run.same_run(searched):
            raise CalibrationError(
                f"search folder {search} searched the run {searched}, not {run.label}; pass each run with"
                " the search of that run, in the same order"
            )
    storage = None
    if optuna_storage is not None:
        from search.errors import SearchError
        from search.tracking.optuna_storage import open_storage

        try:
            storage = open_storage(optuna_storage)
        except SearchError as error:
            raise CalibrationError(error.detail, param="optuna_storage") from None
    specs = _specs(spec, runs, trust_run_spec)
    cases = [CalibrationCase(run, record, s) for run, record, s in zip(runs, records, specs)]
    max_window = min(MAX_WINDOW, *(len(c.epochs) for c in cases))
    if max_window < MIN_WINDOW:
        raise CalibrationError(f"a run has only {max_window} checkpoints; the analysis needs at least {MIN_WINDOW}")

    history: list[dict[str, Any]] = []
    reached: list[set[str]] = [set() for _ in cases]

    def objective(trial: optuna.Trial) -> float:
        thresholds = suggest_thresholds(trial, max_window)
        outcomes = [outcome(case, thresholds) for case in cases]
        for seen, o, case in zip(reached, outcomes, cases):
            seen.update(g for g in case.groups if g not in o.mismatched)
        gap = sum(max(0.0, o.val_gap) for o in outcomes) / len(outcomes)
        share = sum(len(o.mismatched) / len(c.groups) for o, c in zip(outcomes, cases)) / len(cases)
        history.append(
            {"trial": trial.number, "gap": gap, "mismatch_share": share, "thresholds": thresholds,
             "mismatched": sum(len(o.mismatched) for o in outcomes)}
        )
        return gap + TIE_BREAK * share

    import optuna  # not on `import sweetspot`

    study_started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_name = None
    if storage is not None:
        from search.tracking.optuna_storage import calibrate_study_name

        study_name = calibrate_study_name(uuid.uuid4().hex[:12])
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed), storage=storage, study_name=study_name
    )
    study.enqueue_trial(default_params(max_window))
    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    study_seconds = time.perf_counter() - study_started
    study_scoring = sum(c.scoring_seconds for c in cases)

    best = min(history, key=_rank)
    first = history[0]
    improved = _rank(best)[:2] < _rank(first)[:2]
    chosen = best["thresholds"] if improved else first["thresholds"]
    notes: list[str] = []
    defaults_exact = first["gap"] == 0 and first["mismatched"] == 0
    if not improved and not defaults_exact:
        message = (
            f"calibration found no thresholds better than the defaults in {trials} trials (mean gap"
            f" {100 * first['gap']:.3g}%, {first['mismatched']} group choice(s) differ); the defaults are"
            f" written to {output}. Try more --trials, or search the runs with more trials"
        )
        warnings.warn(message, CalibrationWarning, stacklevel=2)
        notes.append(message)
    defaults = [_full_outcome(case, first["thresholds"]) for case in cases]
    calibrated = [_full_outcome(case, chosen) for case in cases]
    reproduced = all(not o.mismatched for o in calibrated)
    transfer_started = time.perf_counter()
    fits = [fit_case(case) for case in cases]
    transferable = build_calibration(cases, fits, chosen)
    transfer = transfer_outcomes(cases, fits, transferable)
    transfer_seconds = time.perf_counter() - transfer_started
    save_thresholds(chosen, output)
    result = CalibrationResult(
        chosen, defaults, calibrated, [c.search.pick for c in cases], history,
        time.perf_counter() - started, study_seconds, study_scoring, reproduced, improved, output, notes, reached,
        calibration=transferable, transfer=transfer, transfer_seconds=transfer_seconds,
        search_seconds=[float(c.search.seconds) for c in cases if c.search.seconds is not None],
    )
    result.study_name = study_name
    if study_name is not None:
        notes.append(f"the Optuna study is kept in {optuna_storage} as {study_name}")
    result.written["thresholds"] = output
    result.written["calibration"] = transferable.write(output.parent / CALIBRATION_NAME)
    if report:
        from search.calibration.report import write_calibration_report

        result.written.update(write_calibration_report(result, cases))
    result.seconds = time.perf_counter() - started
    return result


def _full_outcome(case: CalibrationCase, thresholds: Thresholds) -> CaseOutcome:
    """The outcome with test scores too (the test split is read only here, never by the study)."""
    out = outcome(case, thresholds)
    out.test = case.test_score(out.selection)
    out.test_gap = case.test_gap(out.test)
    if not math.isfinite(out.test):
        out.test_gap = None
    return out


__all__ = ["CalibrationError", "CalibrationResult", "CalibrationWarning", "CaseOutcome", "calibrate"]
