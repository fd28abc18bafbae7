"""The pipeline's summary: per group what each selector picked, and every candidate of every run
on validation and test against that run's best single epoch, with paired bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.evaluation.baselines import DEFAULT_SINGLE_EPOCHS, AnalysisInfo, Candidate
from analysis.evaluation.evaluate import (
    CandidateEvaluator,
    EvaluationResult,
    compare,
    evaluated_by_kind,
    run_evaluation,
)
from modules.atomic import write_json_atomic, write_text_atomic
from modules.rundir.run_dir import RunDir
from modules.spec.schema import Spec, loss_sign

SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
SUMMARY_PNG = "summary.png"
#: Gains beyond this many percent are cut at the plot's edge, so the close candidates stay readable.
FAR_PCT = 25.0
VERDICTS = {
    "combination better": "better than the best single epoch",
    "baseline better": "worse than the best single epoch",
    "no significant difference": "no significant difference",
}
#: The baselines the summary shows, in this order, by their kind in the evaluation.
BASELINE_KINDS = (("best_single", "best single epoch"), ("last", "last epoch"), ("plateau", "plateau average"), ("greedy", "greedy soup"))


@dataclass
class SummaryRow:
    """One candidate of one run: objective on val and test, and its difference to the run's best
    single epoch (gain in percent, positive = better; the test interval is of the per-example
    difference, candidate minus best single, so below zero = the candidate is better)."""

    run: str
    label: str
    name: str
    val: float
    test: float
    val_gain_pct: float
    test_gain_pct: float
    test_difference: tuple[float, float]
    verdict: str
    #: Per rival label: the 95% paired-bootstrap interval of this row's per-example test
    #: difference to that rival's (below zero: this row is better), for the pairs in ``RIVALS``.
    versus: dict[str, list[float]] = field(default_factory=dict)


def evaluate_run_rows(
    run_label: str,
    run: RunDir,
    spec: Spec,
    analysis: AnalysisInfo | None,
    selected: Sequence[tuple[str, Mapping[str, list[int]]]],
    update_bn: bool,
    device: str = "cpu",
    progress: bool = True,
    resamples: int = 2000,
) -> tuple[EvaluationResult, list[SummaryRow]]:
    """Evaluate ``selected`` (label, epochs per group; the first is the evaluation's combination)
    and the baselines of ``run``; one row for each baseline kind shown and each selected."""
    evaluator = CandidateEvaluator(spec, run, device=device)

    def candidate(label: str, epochs: Mapping[str, list[int]]) -> Candidate:
        return Candidate(label, "combination", {g: list(v) for g, v in epochs.items()}, recompute_bn=evaluator.has_bn and update_bn)

    first_label, first_epochs = selected[0]
    result = run_evaluation(evaluator, candidate(first_label, first_epochs), list(DEFAULT_SINGLE_EPOCHS), analysis, resamples, 0, progress)
    by_kind = evaluated_by_kind(result)
    best = by_kind.get("best_single") or result.evaluated[0]
    shown = [(label, by_kind[kind]) for kind, label in BASELINE_KINDS if kind in by_kind]
    shown.append((first_label, result.evaluated[0]))
    shown.extend((label, evaluator.evaluate(candidate(label, epochs))) for label, epochs in selected[1:])
    metric, sign = result.objective_metric, -loss_sign(result.objective_mode)
    by_label = dict(shown)
    rows = []
    for label, evaluated in shown:
        versus = {}
        for pick, rival, _ in RIVALS:
            if label == pick and rival in by_label:
                interval = compare(evaluated, by_label[rival], resamples, seed=0).test_interval
                versus[rival] = [interval.low, interval.high]
        comparison = compare(evaluated, best, resamples, seed=0)
        same = np.array_equal(evaluated.test_losses, best.test_losses)
        rows.append(
            SummaryRow(
                run_label, label, evaluated.candidate.name,
                evaluated.metrics["val"][metric], evaluated.metrics["test"][metric],
                0.0 + sign * comparison.percent["val"].get(metric, math.nan),
                0.0 + sign * comparison.percent["test"].get(metric, math.nan),
                (comparison.test_interval.low, comparison.test_interval.high),
                "the best single epoch's results" if same else VERDICTS[comparison.verdict],
                versus,
            )
        )
    return result, rows


#: (pick, rival, who picked): what each pick is meant to beat, judged on test by the paired interval.
RIVALS = (
    ("search pick", "greedy soup", "the search"),
    ("search pick", "analysis pick", "the search"),
    ("auto pick", "default analysis pick", "auto"),
    ("auto pick", "greedy soup", "auto"),
)


def summary_notes(rows: Sequence[SummaryRow]) -> list[str]:
    """What the table says, in words: per run the best candidate on validation (what one would
    choose) and on test, and whether each pick beat what it is meant to beat: by the 95%
    paired-bootstrap interval of the per-example test difference, not by the point estimates."""
    notes = []
    for run in dict.fromkeys(r.run for r in rows):
        own = {r.label: r for r in rows if r.run == run}
        on_val = max(own.values(), key=lambda r: r.val_gain_pct)
        on_test = max(own.values(), key=lambda r: r.test_gain_pct)
        notes.append(f"{run}: best on validation {on_val.label} ({on_val.val_gain_pct:+.2f}%), best on test {on_test.label} ({on_test.test_gain_pct:+.2f}%).")
        for pick, rival, meaning in RIVALS:
            if pick not in own or rival not in own:
                continue
            a, b = own[pick], own[rival]
            interval = a.versus.get(rival)
            if a.test == b.test and a.val == b.val:
                verdict = "matched (the same results)"
            elif interval is None:
                verdict = "was not compared with"
            elif interval[1] < 0:
                verdict = "beat"
            elif interval[0] > 0:
                verdict = "was beaten by"
            else:
                verdict = "did not differ significantly from"
            what = "the greedy soup (built on the whole validation split)" if rival == "greedy soup" else f"the {rival}"
            bracket = f"; paired test difference [{interval[0]:+.4g}, {interval[1]:+.4g}]" if interval else ""
            notes.append(
                f"{run}: {meaning} {verdict} {what} on test ({pick} {a.test_gain_pct:+.2f}% vs {b.test_gain_pct:+.2f}%"
                f" over the best single epoch{bracket}; validation {a.val_gain_pct:+.2f}% vs {b.val_gain_pct:+.2f}%)."
            )
    return notes


def picks_table(picks: Mapping[str, Mapping[str, Any]], groups: Sequence[str]) -> list[str]:
    """Markdown table: a row per group, a column per selector (e.g. analysis on A, search on A, auto on B)."""
    columns = list(picks)
    lines = ["| group | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for group in groups:
        lines.append(f"| {group} | " + " | ".join(_choice(picks[c].get(group)) for c in columns) + " |")
    return lines


def _choice(choice: Any) -> str:
    if choice is None:
        return "-"
    if isinstance(choice, Mapping) and "average" in choice:
        first, last = choice["average"]
        return f"average {first}-{last}"
    if isinstance(choice, Mapping) and "epochs" in choice:
        return "average of " + ", ".join(str(e) for e in choice["epochs"])
    return str(choice)


def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}%"


def _per_example_text(name: str) -> str:
    """``per_example_losses`` -> "per-example loss"; ``-per_example_accuracy`` -> "per-example -accuracy"."""
    sign, _, what = name.rpartition("per_example_")
    return f"per-example {sign}{'loss' if what == 'losses' else what}"


def rows_table(rows: Sequence[SummaryRow], metric: str, per_example: str) -> list[str]:
    lines = [
        f"| run | candidate | val {metric} | val gain | test {metric} | test gain | test difference vs best single, 95% interval ({_per_example_text(per_example)}) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        low, high = r.test_difference
        lines.append(
            f"| {r.run} | {r.label} | {_fmt(r.val)} | {_pct(r.val_gain_pct)} | {_fmt(r.test)} | {_pct(r.test_gain_pct)}"
            f" | [{low:+.4f}, {high:+.4f}] | {r.verdict} |"
        )
    return lines


def write_summary(
    folder: Path,
    rows: Sequence[SummaryRow],
    picks: Mapping[str, Mapping[str, Any]],
    groups: Sequence[str],
    objective: tuple[str, str],
    per_example: str,
    links: Mapping[str, Path],
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """summary.md (tables, links to every report and plot), summary.json and summary.png."""
    metric, mode = objective
    paths = {"md": folder / SUMMARY_MD, "json": folder / SUMMARY_JSON, "plot": folder / SUMMARY_PNG}
    _plot(rows, metric, paths["plot"])
    lines = [
        "# sweetspot pipeline summary",
        "",
        f"Objective: {metric} ({mode}). Choices are made on validation; test is held out. Gain is against",
        "the same run's best single epoch on validation, in percent of its objective (positive = better); the",
        "interval is the paired bootstrap 95% interval of the per-example test difference (below zero = better).",
        "",
        "## Picks per group",
        "",
        *picks_table(picks, groups),
        "",
        "## Validation and test",
        "",
        *rows_table(rows, metric, per_example),
        "",
        f"![validation and test gains]({SUMMARY_PNG})",
        "",
        "## Reports",
        "",
        *(f"- {name}: [{_relative(path, folder)}]({_relative(path, folder)})" for name, path in links.items()),
    ]
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    write_text_atomic(paths["md"], "\n".join(lines) + "\n")
    write_json_atomic(
        paths["json"],
        {
            "objective": {"metric": metric, "mode": mode},
            "per_example": per_example,
            "picks": {k: dict(v) for k, v in picks.items()},
            "rows": [asdict(r) for r in rows],
            "links": {k: _relative(v, folder) for k, v in links.items()},
            "notes": list(notes),
        },
    )
    return paths


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


def _plot(rows: Sequence[SummaryRow], metric: str, path: Path) -> None:
    """Validation and test gains as bars; the axis spans the close candidates, and a far-off bar
    (often the last epoch) is cut at the edge with its value written there."""
    from analysis.plots import new_figure, save_figure

    figure = new_figure((8, 0.45 * len(rows) + 1.5))
    axis = figure.add_subplot()
    gains = [g for r in rows for g in (r.val_gain_pct, r.test_gain_pct) if math.isfinite(g)]
    near = [abs(g) for g in gains if abs(g) <= FAR_PCT]
    limit = 1.25 * max(near + [1.0])
    for offset, split, colour in ((-0.2, "val_gain_pct", "tab:blue"), (0.2, "test_gain_pct", "tab:orange")):
        values = [getattr(r, split) for r in rows]
        clipped = [max(-limit, min(limit, v)) if math.isfinite(v) else 0.0 for v in values]
        axis.barh([i + offset for i in range(len(rows))], clipped, height=0.4, color=colour,
                  label="validation" if split.startswith("val") else "test")
        for i, (value, shown) in enumerate(zip(values, clipped, strict=True)):
            if math.isfinite(value) and value != shown:
                axis.text(shown, i + offset, f" {value:+.0f}% ", va="center", ha="left" if shown < 0 else "right", fontsize=7, color="white")
    axis.set_xlim(-limit, limit)
    axis.set_yticks(list(range(len(rows))), [f"{r.run}: {r.label}" for r in rows])
    axis.invert_yaxis()
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_xlabel(f"gain over the run's best single epoch, % of {metric} (positive = better)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
