"""Write evaluation.json and evaluation_report.md: who wins on test, by how much, with the interval."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from analysis.evaluation.evaluate import Evaluated, EvaluationResult
from modules import __version__
from modules.atomic import write_json_atomic, write_text_atomic

JSON_NAME = "evaluation.json"
REPORT_NAME = "evaluation_report.md"
PLOT_NAME = "evaluation.png"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def overfitting_gap(item: Evaluated, metric: str) -> float:
    """Validation minus training objective."""
    return item.metrics["val"][metric] - item.metrics["train"][metric]


def winner_on_test(result: EvaluationResult) -> Evaluated:
    """The candidate with the best test objective."""
    sign = 1.0 if result.objective_mode == "min" else -1.0
    return min(result.evaluated, key=lambda e: sign * e.metrics["test"][result.objective_metric])


def best_baseline(result: EvaluationResult) -> Evaluated:
    """The baseline (not the combination) with the best test objective."""
    sign = 1.0 if result.objective_mode == "min" else -1.0
    return min(result.evaluated[1:], key=lambda e: sign * e.metrics["test"][result.objective_metric])


def best_baseline_on_val(result: EvaluationResult) -> Evaluated:
    """The baseline a user would have picked: best validation objective."""
    sign = 1.0 if result.objective_mode == "min" else -1.0
    return min(result.evaluated[1:], key=lambda e: sign * e.metrics["val"][result.objective_metric])


def shrinkage(result: EvaluationResult) -> dict[str, Any]:
    """The combination's advantage over the best-on-validation baseline, on validation and on test.

    Picks made on validation look better there than they are; the test figure is what survives.
    """
    metric = result.objective_metric
    baseline = best_baseline_on_val(result)
    comparison = next(c for c in result.comparisons if c.baseline == baseline.candidate.name)
    return {
        "baseline": baseline.candidate.name,
        "val_percent": _finite(comparison.percent["val"][metric]),
        "test_percent": _finite(comparison.percent["test"][metric]),
    }


def evaluation_json(result: EvaluationResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of evaluation.json."""
    metric = result.objective_metric
    return {
        "sweetspot_version": __version__,
        "objective": {"metric": metric, "mode": result.objective_mode},
        **(extra or {}),
        "test_examples": int(result.evaluated[0].test_losses.size),
        "candidates": [
            {
                **item.candidate.to_json(),
                "metrics": item.metrics,
                "overfitting_gap": overfitting_gap(item, metric),
            }
            for item in result.evaluated
        ],
        "comparisons": [
            {
                "baseline": c.baseline,
                "percent_difference": {s: {m: _finite(v) for m, v in d.items()} for s, d in c.percent.items()},
                "test_loss_difference": c.test_interval.to_json(),
                "verdict": c.verdict,
            }
            for c in result.comparisons
        ],
        "test_winner": winner_on_test(result).candidate.name,
        "shrinkage": shrinkage(result),
        "greedy_soup": None
        if result.greedy is None
        else {
            "epochs": result.greedy.epochs,
            "val_objective": result.greedy.objective,
            "steps": [{"epoch": e, "val_objective": v, "kept": k} for e, v, k in result.greedy.steps],
        },
        "notes": result.notes,
    }


def _num(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4g}"


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2f}%"


def headline(result: EvaluationResult) -> str:
    """Two sentences: the test winner, and the combination against the best baseline with its interval."""
    metric = result.objective_metric
    winner = winner_on_test(result)
    best = best_baseline(result)
    comparison = next(c for c in result.comparisons if c.baseline == best.candidate.name)
    i = comparison.test_interval
    pct = comparison.percent["test"][metric]
    interval = f"95% interval of the {_per_example(result)} difference [{_num(i.low)}, {_num(i.high)}]"
    if comparison.verdict == "no significant difference":
        judged = f"**no significant difference** ({_pct(pct)} {metric}; {interval} contains 0)"
    elif comparison.verdict == "combination better":
        judged = f"**the combination is better** by {_pct(pct)} {metric} ({interval})"
    else:
        judged = f"**the baseline is better**: the combination differs by {_pct(pct)} {metric} ({interval})"
    lead = (
        f"Lowest test {metric}: **{winner.candidate.name}** ({_num(winner.metrics['test'][metric])})."
        if result.objective_mode == "min"
        else f"Highest test {metric}: **{winner.candidate.name}** ({_num(winner.metrics['test'][metric])})."
    )
    kept = shrinkage(result)
    survived = (
        f" Against {kept['baseline']} (the best baseline on validation) the combination's difference was"
        f" {_pct(_nan(kept['val_percent']))} {metric} on validation and {_pct(_nan(kept['test_percent']))}"
        " on test: the test figure is what survives selection."
    )
    return f"{lead} Combination vs the best baseline on test, {best.candidate.name}: {judged}.{survived}"


def _per_example(result: EvaluationResult) -> str:
    """How the report names the bootstrapped per-example values."""
    name = result.per_example_name
    return "per-example loss" if name == "per_example_losses" else f"`{name}`"


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def report_markdown(result: EvaluationResult) -> str:
    """evaluation_report.md: headline, the comparison table, task metrics, notes."""
    metric = result.objective_metric
    direction = "lower is better" if result.objective_mode == "min" else "higher is better"
    n = result.evaluated[0].test_losses.size
    resamples = result.comparisons[0].test_interval.resamples if result.comparisons else 0
    lines = [
        "# Evaluation: combination vs baselines",
        "",
        headline(result),
        "",
        f"Objective `{metric}` ({direction}); chosen on validation, reported on the held-out test split."
        f" Intervals: 95% paired bootstrap over {n} test examples ({resamples} resamples) of the"
        f" combination's {_per_example(result)} minus the baseline's; below 0 favours the combination.",
        "",
        f"| candidate | test {metric} | val {metric} | gap (val − train) | combination vs it, test | 95% interval | verdict |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    combination = result.evaluated[0]
    lines.append(
        f"| **{combination.candidate.name}** | **{_num(combination.metrics['test'][metric])}** |"
        f" {_num(combination.metrics['val'][metric])} | {_num(overfitting_gap(combination, metric))} | — | — | — |"
    )
    for item, comp in zip(result.evaluated[1:], result.comparisons):
        i = comp.test_interval
        lines.append(
            f"| {item.candidate.name} | {_num(item.metrics['test'][metric])} | {_num(item.metrics['val'][metric])} |"
            f" {_num(overfitting_gap(item, metric))} | {_pct(comp.percent['test'][metric])} |"
            f" [{_num(i.low)}, {_num(i.high)}] | {comp.verdict} |"
        )
    task_metrics = [m for m in combination.metrics["test"] if m != metric]
    if task_metrics:
        lines += ["", "## Task metrics on test", "", "| candidate | " + " | ".join(task_metrics) + " |",
                  "| --- |" + " ---: |" * len(task_metrics)]
        for item in result.evaluated:
            values = " | ".join(_num(item.metrics["test"].get(m, math.nan)) for m in task_metrics)
            lines.append(f"| {item.candidate.name} | {values} |")
    if result.greedy is not None:
        lines += ["", f"Greedy soup kept epochs {result.greedy.epochs} (validation {metric} {_num(result.greedy.objective)})."]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def write_report(result: EvaluationResult, output: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write evaluation.json, evaluation_report.md and the PNG into ``output``; return their paths."""
    from analysis.evaluation.plots import plot_evaluation

    output = Path(output)
    paths = {"json": output / JSON_NAME, "report": output / REPORT_NAME, "plot": output / PLOT_NAME}
    write_json_atomic(paths["json"], evaluation_json(result, extra))
    write_text_atomic(paths["report"], report_markdown(result))
    plot_evaluation(result, paths["plot"])
    return paths
