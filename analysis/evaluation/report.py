"""Write evaluation.json and evaluation_report.md: who wins on test, by how much, with the interval."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from analysis.evaluation.evaluate import Evaluated, EvaluationResult
from modules import __version__
from modules.atomic import write_json_atomic, write_text_atomic
from modules.spec.schema import loss_sign

JSON_NAME = "evaluation.json"
REPORT_NAME = "evaluation_report.md"
PLOT_NAME = "evaluation.png"
GREEDY_SELECTION_NAME = "greedy_selection.json"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def overfitting_gap(item: Evaluated, metric: str) -> float:
    """Validation minus training objective."""
    return item.metrics["val"][metric] - item.metrics["train"][metric]


def winner_on_test(result: EvaluationResult) -> Evaluated:
    """The candidate with the best test objective."""
    sign = loss_sign(result.objective_mode)
    return min(result.evaluated, key=lambda e: sign * e.metrics["test"][result.objective_metric])


def best_baseline(result: EvaluationResult) -> Evaluated:
    """The baseline (not the combination) with the best test objective."""
    sign = loss_sign(result.objective_mode)
    return min(result.evaluated[1:], key=lambda e: sign * e.metrics["test"][result.objective_metric])


def best_baseline_on_val(result: EvaluationResult) -> Evaluated:
    """The baseline a user would have picked: best validation objective."""
    sign = loss_sign(result.objective_mode)
    return min(result.evaluated[1:], key=lambda e: sign * e.metrics["val"][result.objective_metric])


def shrinkage(result: EvaluationResult) -> dict[str, Any]:
    """The combination's advantage over the best-on-validation baseline, on validation and on test.

    Both were chosen on validation, so the validation difference is optimistic; the test figure is the honest one.
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
        "shrinkage": shrinkage(result) if result.comparisons else None,
        "greedy_soup": None
        if result.greedy is None
        else {
            "epochs": result.greedy.epochs,
            "val_objective": result.greedy.objective,
            "steps": [{"epoch": e, "val_objective": v, "kept": k} for e, v, k in result.greedy.steps],
            "selection": result.greedy_selection,
        },
        "notes": result.notes,
    }


def _num(value: float) -> str:
    """4 significant digits, trailing zeros kept (2.600, 0.09397, -1.650), so columns read alike."""
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:#.4g}"
    mantissa, e, exponent = text.partition("e")
    return mantissa.rstrip(".") + (e + exponent if e else "")


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2f}%"


def _interval(low: float, high: float) -> str:
    return f"[{_num(low)}, {_num(high)}]"


def headline(result: EvaluationResult, markdown: bool = True) -> str:
    """Two sentences: the test winner, and the combination against the best baseline with its interval.

    ``markdown=False`` gives the same text without ``**`` emphasis (for a terminal).
    """

    def bold(text: str) -> str:
        return f"**{text}**" if markdown else text

    metric = result.objective_metric
    winner = winner_on_test(result)
    if not result.comparisons:
        return (
            f"{'Lowest' if result.objective_mode == 'min' else 'Highest'} test {metric}:"
            f" {bold(winner.candidate.name)} ({_num(winner.metrics['test'][metric])}). Every baseline is the"
            " same weights as the combination, so there is nothing to compare."
        )
    best = best_baseline(result)
    comparison = next(c for c in result.comparisons if c.baseline == best.candidate.name)
    i = comparison.test_interval
    pct = comparison.percent["test"][metric]
    interval = f"95% interval of the {_per_example(result, markdown)} difference {_interval(i.low, i.high)}"
    if comparison.verdict == "no significant difference":
        judged = f"{bold('no significant difference')} ({_pct(pct)} {metric}; {interval} contains 0)"
    elif comparison.verdict == "combination better":
        judged = f"{bold('the combination is better')} by {_pct(pct)} {metric} ({interval})"
    else:
        judged = f"{bold('the baseline is better')}: the combination differs by {_pct(pct)} {metric} ({interval})"
    lead = (
        f"{'Lowest' if result.objective_mode == 'min' else 'Highest'} test {metric}:"
        f" {bold(winner.candidate.name)} ({_num(winner.metrics['test'][metric])})."
    )
    kept = shrinkage(result)
    honest = (
        f" Against {kept['baseline']} (the best baseline on validation) the combination's difference was"
        f" {_pct(_nan(kept['val_percent']))} {metric} on validation and {_pct(_nan(kept['test_percent']))}"
        " on test. Both were chosen on validation, so the validation difference is optimistic; the test"
        " figure is the honest one."
    )
    return f"{lead} Combination vs the best baseline on test, {best.candidate.name}: {judged}.{honest}"


def _per_example(result: EvaluationResult, markdown: bool = True) -> str:
    """How the report names the bootstrapped per-example values."""
    name = result.per_example_name
    if name == "per_example_losses":
        return "per-example loss"
    return f"`{name}`" if markdown else name


# -- what each candidate is ---------------------------------------------------------------------


def _checkpoints(count: int) -> str:
    return f"{count} checkpoint{'s' if count != 1 else ''}"


def _group_epochs(epochs: list[int]) -> str:
    """``10`` for a pick, ``average of 20–24 (3 checkpoints)`` for a window."""
    epochs = sorted(epochs)
    if len(epochs) == 1:
        return str(epochs[0])
    return f"average of {epochs[0]}–{epochs[-1]} ({_checkpoints(len(epochs))})"


def _per_group(epochs: dict[str, list[int]]) -> str:
    return ", ".join(f"{group} {_group_epochs(list(e))}" for group, e in epochs.items())


def _common_epochs(epochs: dict[str, list[int]] | None) -> list[int] | None:
    """The epochs when every group uses the same ones (a whole-model candidate), else None."""
    if not epochs:
        return None
    lists = {tuple(sorted(e)) for e in epochs.values()}
    return list(lists.pop()) if len(lists) == 1 else None


def _epoch_span(epochs: list[int]) -> str:
    epochs = sorted(epochs)
    if len(epochs) <= 6:
        return ", ".join(map(str, epochs))
    return f"{epochs[0]}–{epochs[-1]}"


def _combination_text(item: Evaluated) -> str:
    candidate = item.candidate
    bn = " BatchNorm statistics recomputed on the train split." if candidate.recompute_bn else ""
    if candidate.model_path is None:
        return f"built here from the selection: {_per_group(candidate.epochs or {})}.{bn}"
    provenance = candidate.provenance
    if not provenance:
        return (
            f"model file `{candidate.model_path}`; it records no provenance, so which epochs it holds is"
            f" unknown.{bn}"
        )
    groups = []
    for group, sources in (provenance.get("sources") or {}).items():
        epochs = [s.get("epoch") for s in sources]
        if sources and all(isinstance(e, int) for e in epochs):
            groups.append(f"{group} {_group_epochs(epochs)}")
        else:
            names = [Path(str(s.get("path"))).name for s in sources]
            groups.append(f"{group} {names[0]}" if len(names) == 1 else f"{group} average of {', '.join(names)}")
    origin = f" from run `{provenance['run_dir']}`" if provenance.get("run_dir") else " from checkpoint files"
    recomputed = provenance.get("batchnorm_recomputed")
    if recomputed:
        bn = f" BatchNorm statistics recomputed at combine time for {', '.join(recomputed)}." + (
            " Recomputed again here." if candidate.recompute_bn else ""
        )
    listed = ("; " if any("," in g for g in groups) else ", ").join(groups)
    return f"model file `{candidate.model_path}`, combined{origin}: {listed}.{bn}"


def describe_candidate(item: Evaluated, result: EvaluationResult) -> str:
    """One sentence saying which checkpoints a candidate is (and what the number in its name counts)."""
    candidate, metric = item.candidate, result.objective_metric
    kind = candidate.kind
    if kind == "combination":
        return _combination_text(item)
    common = _common_epochs(candidate.epochs)
    if kind == "plateau":
        return (
            "each group averaged over the plateau window the analysis found for it (a group without one"
            f" takes its pick): {_per_group(candidate.epochs or {})}."
        )
    if common is None:  # not one of the known whole-model candidates
        return f"per group: {_per_group(candidate.epochs or {})}."
    if kind == "single":
        return f"the checkpoint of epoch {common[0]}, every group."
    if kind == "best_single":
        return f"the single checkpoint with the best validation {metric}: epoch {common[0]}."
    if kind == "last":
        return f"the last recorded checkpoint, epoch {common[0]}."
    if kind == "uniform":
        return f"all {len(common)} recorded checkpoints averaged with equal weight (epochs {_epoch_span(common)})."
    if kind == "lawa":
        return f"latest weight averaging: the last {_checkpoints(len(common))} averaged (epochs {_epoch_span(common)})."
    if kind == "greedy":
        return (
            f"{_checkpoints(len(common))} averaged: starting from the best checkpoint on validation, each next"
            f" best was added only if the average's validation {metric} improved; kept epochs"
            f" {', '.join(map(str, common))}."
        )
    return f"epochs {_epoch_span(common)}, every group."


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
            f" {_interval(i.low, i.high)} | {comp.verdict} |"
        )
    lines += ["", "## Candidates", ""]
    lines += [f"- **{item.candidate.name}**: {describe_candidate(item, result)}" for item in result.evaluated]
    task_metrics = [m for m in combination.metrics["test"] if m != metric]
    if task_metrics:
        lines += ["", "## Task metrics on test", "", "| candidate | " + " | ".join(task_metrics) + " |",
                  "| --- |" + " ---: |" * len(task_metrics)]
        for item in result.evaluated:
            values = " | ".join(_num(item.metrics["test"].get(m, math.nan)) for m in task_metrics)
            lines.append(f"| {item.candidate.name} | {values} |")
    if result.greedy is not None:
        lines += ["", f"Greedy soup kept epochs {result.greedy.epochs} (validation {metric} {_num(result.greedy.objective)})."]
        if result.greedy_selection is not None:
            greedy = next((e.candidate for e in result.evaluated if e.candidate.kind == "greedy"), None)
            bn = " --update-bn" if greedy is not None and greedy.recompute_bn else ""
            lines.append(
                f"Its selection is in `{GREEDY_SELECTION_NAME}`; build it with `sweetspot combine --checkpoint-dir RUN"
                f" --selection {GREEDY_SELECTION_NAME} --output greedy_soup.safetensors{bn}`."
            )
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def write_report(result: EvaluationResult, output: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write evaluation.json, evaluation_report.md, the PNG and greedy_selection.json into ``output``; return their paths."""
    from analysis.evaluation.plots import plot_evaluation

    output = Path(output)
    paths = {"json": output / JSON_NAME, "report": output / REPORT_NAME, "plot": output / PLOT_NAME}
    write_json_atomic(paths["json"], evaluation_json(result, extra))
    if result.greedy_selection is not None:
        paths["greedy_selection"] = output / GREEDY_SELECTION_NAME
        about = "the greedy soup of `sweetspot evaluate`; build it with `sweetspot combine --selection` this file"
        write_json_atomic(paths["greedy_selection"], {"_about": about, **result.greedy_selection})
    write_text_atomic(paths["report"], report_markdown(result))
    plot_evaluation(result, paths["plot"])
    return paths
