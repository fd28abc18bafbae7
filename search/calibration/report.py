"""``calibration_report.md`` and ``calibration_history.png`` beside the calibrated thresholds file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from modules.atomic import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from search.calibration.cases import CalibrationCase
    from search.calibration.outcomes import CalibrationResult, CaseOutcome

REPORT_NAME = "calibration_report.md"
PLOT_NAME = "calibration_history.png"
HISTORY_NAME = "calibration_trials.parquet"


def _choice(epochs: list[int]) -> str:
    epochs = sorted(epochs)
    return str(epochs[0]) if len(epochs) == 1 else f"avg {epochs[0]}-{epochs[-1]}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.3f}%"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.5g}"


def _mark(same: bool) -> str:
    return " ✓" if same else ""


def _verdict(result: CalibrationResult) -> list[str]:
    n_groups = sum(len(p) for p in result.search_picks)
    matched = n_groups - sum(len(o.mismatched) for o in result.calibrated)
    default_matched = n_groups - sum(len(o.mismatched) for o in result.defaults)
    gap = result.mean_val_gap
    if result.reproduced:
        lead = (
            f"**Thresholds: reproduced**: with the calibrated thresholds the analysis selects the search's pick in every"
            f" group of every run ({matched} of {n_groups} groups; the defaults matched {default_matched})."
        )
    else:
        lead = (
            f"**Thresholds: not reproduced**: no thresholds tried make the analysis select the search's pick everywhere."
            f" The best came within {_pct(max(gap, 0.0))} of the pick's validation objective (mean over runs)"
            f" and matched {matched} of {n_groups} group choices (the defaults: {default_matched}). The rest may be"
            " out of reach of the five techniques (a choice no technique recommends, or an average the"
            " plateau does not cover)."
        )
    lines = [lead]
    if not result.improved:
        lines += ["", "**Warning**: nothing beat the default thresholds, so the defaults were written."]
    return lines


def _thresholds_table(result: CalibrationResult) -> list[str]:
    from analysis.thresholds import Thresholds

    default, chosen = Thresholds().to_json(), result.thresholds.to_json()
    lines = ["| threshold | default | calibrated |", "| --- | --- | --- |"]
    for key, value in default.items():
        if key == "mcda_weights":
            for weight, w in value.items():
                lines.append(f"| mcda_weights.{weight} | {w:g} | {chosen[key][weight]:g} |")
        else:
            lines.append(f"| {key} | {value:g} | {chosen[key]:g} |")
    return lines


def _run_section(
    index: int, case: CalibrationCase, default: CaseOutcome, calibrated: CaseOutcome, reached: set[str]
) -> list[str]:
    search = case.search
    lines = [
        f"## Run {index + 1}: {case.label}",
        "",
        f"Search: {search.folder}. Objective {search.metric} ({'lower' if search.mode == 'min' else 'higher'} is"
        " better); validation = the search part of validation the search scored on; gaps are relative to the"
        " search's pick (positive = worse than the pick).",
        "",
        "| group | search's choice | default thresholds | calibrated |",
        "| --- | --- | --- | --- |",
    ]
    for group in case.groups:
        wanted = sorted(search.pick[group])
        d, c = default.selection[group], calibrated.selection[group]
        lines.append(
            f"| {group} | {_choice(wanted)} | {_choice(d)}{_mark(sorted(d) == wanted)} |"
            f" {_choice(c)}{_mark(sorted(c) == wanted)} |"
        )
    never = [g for g in calibrated.mismatched if g not in reached]
    if never:
        lines += [
            "",
            f"No thresholds tried selected the search's choice for {', '.join(never)}: out of reach of the"
            " techniques on this run's recorded metrics (e.g. its judging metrics peak elsewhere than the"
            " objective, or the epoch was not analysed).",
        ]
    apart = [g for g in calibrated.mismatched if g in reached]
    if apart:
        lines += [
            "",
            f"Some thresholds selected the search's choice for {', '.join(apart)}, but not together with"
            " the choices that keep the gap smallest.",
        ]
    pick_test = case.test_score(search.pick)
    lines += [
        "",
        "| selection | validation | gap (validation) | test | gap (test) |",
        "| --- | --- | --- | --- | --- |",
        f"| search's pick | {_num(search.pick_search)} | — | {_num(pick_test)} | — |",
        f"| default thresholds | {_num(default.val)} | {_pct(default.val_gap)} | {_num(default.test)} | {_pct(default.test_gap)} |",
        f"| calibrated | {_num(calibrated.val)} | {_pct(calibrated.val_gap)} | {_num(calibrated.test)} | {_pct(calibrated.test_gap)} |",
    ]
    soup = search.baselines.get("greedy soup")
    if soup and soup.get("search") is not None and soup.get("epochs"):
        soup_val = float(soup["search"])
        soup_test = case.test_score({g: list(v) for g, v in soup["epochs"].items()})
        lines.append(
            f"| greedy soup (the search's) | {_num(soup_val)} | {_pct(case.gap(soup_val))} | {_num(soup_test)} |"
            f" {_pct(case.test_gap(soup_test))} |"
        )
    lines += [
        "",
        f"{case.scored} selection(s) the search had not scored were scored here, on the same basis"
        f" (confirm fraction {search.settings.get('confirm_fraction')}, shards {search.settings.get('shards')},"
        f" seed {search.settings.get('seed')}, BatchNorm {'recomputed' if search.settings.get('update_bn') else 'as stored'}).",
        "",
    ]
    return lines


def _transfer_section(result: CalibrationResult, cases: list[CalibrationCase]) -> list[str]:
    """How close ``sweetspot auto`` with calibration.json comes to the search, fitted and left out."""
    if result.calibration is None:
        return []
    by_label = {c.label: c for c in cases}
    searched = sum(result.search_seconds)
    timing = (
        f" Fitting took {result.transfer_seconds:.1f} s with these measurements; the search(es) took {searched:.1f} s."
        if result.search_seconds else f" Fitting took {result.transfer_seconds:.1f} s with these measurements."
    )
    lines = [
        "## The automatic selection (calibration.json)",
        "",
        "Thresholds alone read each epoch's own metrics; the best crossover depends on how groups from"
        " different epochs work together. So `calibration.json` also holds, per group, where its good"
        " choices lie in the course of training, how much the objective cares about it and whether"
        " averaging helps, measured around the search's pick; `sweetspot auto --calibration` turns that into"
        " a short validation-guided refinement with a counted budget (the greedy soup included as its floor)."
        + timing,
        "",
        "| group | prior (on the first run's epochs) |",
        "| --- | --- |",
    ]
    from search.calibration.calibration_file import describe_prior

    first = cases[0]
    for group, prior in result.calibration.priors.items():
        lines.append(f"| {group} | {describe_prior(prior, first.epochs)} |")
    lines += [
        "",
        "Auto run on each run (budget: 3 evaluations per checkpoint; scored on the search part of validation,"
        " gaps relative to the search's pick, positive = worse). *fitted*: the run is one the calibration was"
        " fitted on; *left out*: fitted on the other runs only, the honest figure for a new training.",
        "",
        "| run | calibration | auto's selection | from | val gap | greedy soup val gap | test gap | auto test | soup test | evaluations |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in result.transfer:
        choice = ", ".join(f"{g} {_choice(v)}" for g, v in o.selection.items())
        lines.append(
            f"| {o.run} | {o.kind} | {choice} | {o.source} | {_pct(o.val_gap)} | {_pct(o.soup_val_gap)} |"
            f" {_pct(o.test_gap)} | {_num(o.test)} | {_num(o.soup_test)} | {o.evaluations} of {o.budget} |"
        )
    worst = max((o.val_gap for o in result.transfer if o.kind == "fitted"), default=None)
    if worst is not None:
        verdict = "within" if worst <= 0.005 else "not within"
        lines += ["", f"On the fitted run(s), auto comes {verdict} 0.5% of the search's pick on validation (worst {_pct(worst)})."]
    if len(by_label) == 1:
        lines += ["", "One run was calibrated: calibrate on two or more searched runs for the left-out figures."]
    return lines + [""]


def report_markdown(result: CalibrationResult, cases: list[CalibrationCase]) -> str:
    trials = len(result.history)
    analysing = result.study_seconds - result.scoring_seconds
    scored = sum(c.scored for c in cases)
    lines = ["# Calibration", "", *_verdict(result), ""]
    lines += [
        f"Study: {trials} Optuna trials (TPE; the defaults first) over {len(cases)} run(s) in"
        f" {result.study_seconds:.1f} s: {analysing:.1f} s analysing ({1000 * analysing / max(trials, 1):.1f} ms per"
        " trial, every run analysed from its recorded metrics, no weights read) and"
        f" {result.scoring_seconds:.1f} s scoring {scored} selection(s) the searches had not scored (once each)."
        " The objective, in order: the mean gap of the"
        " analysis's selection to the search's pick on validation (a selection as good or better counts 0),"
        " then the share of groups whose choice differs.",
        "",
        f"Written: `{result.output.name}` (the seed's thresholds shape; `sweetspot analyze --thresholds` and"
        " `sweetspot auto --thresholds` read it). The plateau thresholds keep the analysis's scale: each"
        " run's own [0, 1] goodness curve.",
        "",
        *_thresholds_table(result),
        "",
    ]
    lines += _transfer_section(result, cases)
    reached = result.reached or [set(c.groups) for c in cases]
    for index, (case, default, calibrated) in enumerate(zip(cases, result.defaults, result.calibrated)):
        lines += _run_section(index, case, default, calibrated, reached[index])
    if result.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in result.notes], ""]
    lines += ["## Study history", "", f"![study history]({PLOT_NAME})", "", f"Every trial: `{HISTORY_NAME}`.", ""]
    return "\n".join(lines)


def plot_history(result: CalibrationResult, path: Path) -> None:
    from matplotlib.figure import Figure

    trials = [row["trial"] for row in result.history]
    gaps = [100 * row["gap"] for row in result.history]
    best, running = [], float("inf")
    for row in result.history:
        running = min(running, 100 * row["gap"])
        best.append(running)
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    ax.scatter(trials, gaps, s=10, alpha=0.5, label="trial")
    ax.step(trials, best, where="post", color="C3", label="best so far")
    ax.axhline(gaps[0], color="grey", linestyle=":", label="default thresholds")
    ax.set_xlabel("study trial")
    ax.set_ylabel("mean validation gap to the search's pick (%)")
    ax.set_title("Threshold calibration")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def history_frame(result: CalibrationResult) -> pd.DataFrame:
    """A row per study trial: its thresholds (flattened), mean gap and mismatched groups."""
    rows = []
    for row in result.history:
        flat = row["thresholds"].to_json()
        weights = flat.pop("mcda_weights")
        rows.append(
            {"trial": row["trial"], "gap": row["gap"], "mismatched_groups": row["mismatched"],
             "mismatch_share": row["mismatch_share"], **flat, **{f"mcda_weights.{k}": v for k, v in weights.items()}}
        )
    return pd.DataFrame(rows)


def write_calibration_report(result: CalibrationResult, cases: list[CalibrationCase]) -> dict[str, Path]:
    """calibration_report.md, calibration_history.png and calibration_trials.parquet beside the thresholds."""
    folder = result.output.parent
    paths = {"report": folder / REPORT_NAME, "history_plot": folder / PLOT_NAME, "history": folder / HISTORY_NAME}
    plot_history(result, paths["history_plot"])
    with atomic_path(paths["history"]) as tmp:
        history_frame(result).to_parquet(tmp, index=False)
    write_text_atomic(paths["report"], report_markdown(result, cases))
    return paths
